//! The plain HTTP/1.1 side of the server: just enough to read one request
//! head (and skip its body) and to write a whole response. Everything past
//! an upgrade is another protocol, in `control` and `derp`.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head accepted.
const MAX_HEAD: usize = 16 << 10;

pub struct Request {
    pub method: String,
    /// The path with its query.
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// Bytes read past the head (the start of the body, or of the next
    /// protocol after an upgrade).
    pub rest: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    pub fn query(&self, name: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    }

    /// Whether the request asks to switch to `proto` (case-insensitive,
    /// as Go's servers compare it).
    pub fn upgrade_to(&self, proto: &str) -> bool {
        self.header("Upgrade").is_some_and(|u| u.eq_ignore_ascii_case(proto))
    }
}

/// Reads one request head; `Ok(None)` at a clean end of the stream.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Request>, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too long".into());
        }
        let n = r.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err("connection closed inside a request head".into()) };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).map_err(|_| "request head is not UTF-8".to_string())?;
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("malformed request line {first:?}"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not HTTP/1: {version:?}"));
    }
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l.split_once(':').ok_or_else(|| format!("malformed header line {l:?}"))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut req = Request { method: method.into(), target: target.into(), headers, rest };
    // A body is read and dropped: no route here takes one over HTTP/1.
    let len: usize = req.header("Content-Length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if len > MAX_HEAD {
        return Err("request body too long".into());
    }
    while req.rest.len() < len {
        let n = r.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed inside a request body".into());
        }
        req.rest.extend_from_slice(&chunk[..n]);
    }
    req.rest.drain(..len);
    Ok(Some(req))
}

/// Writes a complete response with a body.
pub async fn respond<W: AsyncWrite + Unpin>(
    w: &mut W,
    code: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nServer: headscale-double (TEST DOUBLE)\r\n\r\n",
        body.len()
    );
    w.write_all(head.as_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// Writes `101 Switching Protocols` with extra headers.
pub async fn switch<W: AsyncWrite + Unpin>(w: &mut W, proto: &str, extra: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: {proto}\r\nConnection: upgrade\r\n");
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}
