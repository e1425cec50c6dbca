//! The embedded relay's STUN server: a Binding request is answered with
//! the address it came from (RFC 5389 §7.3, XOR-MAPPED-ADDRESS §15.2), as
//! tailscale's netcheck expects (tailscale v1.96.4 `net/stun/stun.go`
//! 195-250). It lets netcheck pick the region at once instead of after its
//! STUN timeout.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The answer to a Binding request from `from`, if `req` is one.
pub fn answer(req: &[u8], from: std::net::SocketAddr) -> Option<Vec<u8>> {
    if req.len() < 20 || req[0..2] != [0x00, 0x01] || req[4..8] != MAGIC_COOKIE {
        return None;
    }
    let std::net::SocketAddr::V4(v4) = from else { return None };
    let mut attr = vec![0x00, 0x20, 0x00, 0x08, 0x00, 0x01];
    attr.extend_from_slice(&(v4.port() ^ 0x2112).to_be_bytes());
    for (b, c) in v4.ip().octets().iter().zip(MAGIC_COOKIE) {
        attr.push(b ^ c);
    }
    let mut out = vec![0x01, 0x01];
    out.extend_from_slice(&(attr.len() as u16).to_be_bytes());
    out.extend_from_slice(&MAGIC_COOKIE);
    out.extend_from_slice(&req[8..20]);
    out.extend_from_slice(&attr);
    Some(out)
}

pub async fn serve(udp: tokio::net::UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else { continue };
        if let Some(out) = answer(&buf[..n], from) {
            let _ = udp.send_to(&out, from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_binding_request_gets_its_own_address_back_xored() {
        let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        req.extend_from_slice(&[7; 12]);
        let from: std::net::SocketAddr = "127.0.0.1:41641".parse().unwrap();
        let a = super::answer(&req, from).unwrap();
        assert_eq!(&a[..2], &[0x01, 0x01]);
        assert_eq!(&a[8..20], &[7; 12]);
        let port = u16::from_be_bytes([a[26], a[27]]) ^ 0x2112;
        let ip: Vec<u8> = a[28..32].iter().zip([0x21, 0x12, 0xa4, 0x42]).map(|(b, c)| b ^ c).collect();
        assert_eq!((port, ip), (41641, vec![127, 0, 0, 1]));
        assert!(super::answer(&req[..19], from).is_none());
    }
}
