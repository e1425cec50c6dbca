//! Just enough JSON for `--json` output and for reading `tailscale status
//! --json`, without a dependency: shared by the stub and `nxs-bundle`.

/// A JSON string literal.
pub fn s(v: &str) -> String {
    let mut o = String::with_capacity(v.len() + 2);
    o.push('"');
    for c in v.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A JSON string or null.
pub fn opt(v: Option<&str>) -> String {
    v.map(s).unwrap_or_else(|| "null".into())
}

/// A JSON object, built a field at a time in the order given: what every
/// `--json` report writes, in place of brace-escaped `format!` templates.
/// Keys are written as given (they are ours, never input); values are
/// escaped by the method that takes them.
#[derive(Default)]
pub struct Obj {
    text: String,
}

impl Obj {
    pub fn new() -> Obj {
        Obj::default()
    }

    /// A field whose value is JSON already (a number, `true`, an array).
    pub fn raw(mut self, key: &str, value: impl std::fmt::Display) -> Obj {
        use std::fmt::Write as _;
        let sep = if self.text.is_empty() { "" } else { "," };
        let _ = write!(self.text, "{sep}\"{key}\":{value}");
        self
    }

    /// A string field.
    pub fn str(self, key: &str, value: &str) -> Obj {
        self.raw(key, s(value))
    }

    /// A string field, or null.
    pub fn opt(self, key: &str, value: Option<&str>) -> Obj {
        self.raw(key, opt(value))
    }

    /// An array of values that are JSON already.
    pub fn array(self, key: &str, items: impl IntoIterator<Item = String>) -> Obj {
        let items: Vec<String> = items.into_iter().collect();
        self.raw(key, format!("[{}]", items.join(",")))
    }

    pub fn finish(self) -> String {
        format!("{{{}}}", self.text)
    }
}

/// A parsed JSON value: enough to read `tailscale status --json`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The number's text, unconverted.
    Num(String),
    Str(String),
    Arr(Vec<Value>),
    Obj(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object; `None` for anything else.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// Parses one JSON document (RFC 8259). Never panics; `None` on anything
/// malformed, too deep, or followed by more than whitespace.
pub fn parse(text: &str) -> Option<Value> {
    let mut p = Parser { b: text.as_bytes(), i: 0 };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.b.len()).then_some(v)
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &str) -> Option<()> {
        self.b[self.i..].starts_with(lit.as_bytes()).then(|| self.i += lit.len())
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.b.get(self.i)? {
            b'n' => self.eat("null").map(|_| Value::Null),
            b't' => self.eat("true").map(|_| Value::Bool(true)),
            b'f' => self.eat("false").map(|_| Value::Bool(false)),
            b'"' => self.string().map(Value::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat("]").is_some() {
                    return Some(Value::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match *self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(Value::Arr(items));
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut members = Vec::new();
                self.ws();
                if self.eat("}").is_some() {
                    return Some(Value::Obj(members));
                }
                loop {
                    self.ws();
                    if self.b.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let k = self.string()?;
                    self.ws();
                    self.eat(":")?;
                    let v = self.value(depth + 1)?;
                    members.push((k, v));
                    self.ws();
                    match *self.b.get(self.i)? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(Value::Obj(members));
                        }
                        _ => return None,
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, checked by hand:
    /// float parsing would cost the stub 10 KiB. The text is kept as it is.
    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        self.eat("-");
        if self.eat("0").is_none() && self.digits() == 0 {
            return None;
        }
        if self.eat(".").is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(Value::Num(std::str::from_utf8(&self.b[start..self.i]).ok()?.to_string()))
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - start
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        self.i += 4;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while self.i < self.b.len() && !matches!(self.b[self.i], b'"' | b'\\') && self.b[self.i] >= 0x20 {
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.b[start..self.i]).ok()?);
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.b.get(self.i)?;
                    self.i += 1;
                    out.push(match c {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi) {
                                self.eat("\\u")?;
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                hi
                            };
                            char::from_u32(cp)?
                        }
                        _ => return None,
                    });
                }
                _ => return None, // a control byte
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_built_in_order_and_escaped() {
        let o = Obj::new()
            .str("path", "a\"b")
            .raw("size", 3)
            .opt("hint", None)
            .array("items", ["1".to_string(), s("x")])
            .raw("inner", Obj::new().raw("ok", true).finish())
            .finish();
        assert_eq!(o, r#"{"path":"a\"b","size":3,"hint":null,"items":[1,"x"],"inner":{"ok":true}}"#);
        assert_eq!(parse(&o).and_then(|v| v.get("size").cloned()), Some(Value::Num("3".into())));
        assert_eq!(Obj::new().finish(), "{}");
    }

    #[test]
    fn reads_a_status_document() {
        let v = parse(r#" {"BackendState":"Running","Self":{"Online":true,"Tags":["tag:a"],"N":-1.5e3},"X":null,"S":"a\"\u00e9\ud83d\ude00"} "#)
            .unwrap();
        assert_eq!(v.get("BackendState").and_then(Value::as_str), Some("Running"));
        assert_eq!(v.get("Self").and_then(|s| s.get("Online")).and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("S").and_then(Value::as_str), Some("a\"é😀"));
        assert_eq!(v.get("X"), Some(&Value::Null));
    }

    #[test]
    fn refuses_malformed_and_too_deep() {
        for bad in ["", "{", "{\"a\":}", "[1,]", "\"\u{1}\"", "{} x", "tru", "01", "-", "1.", "1e", ".5", "\"\\ud800\""]
        {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(parse(&"[".repeat(100)), None);
        assert!(parse(&format!("{}{}", "[".repeat(60), "]".repeat(60))).is_some());
    }

    #[test]
    fn round_trips_our_escaper() {
        let text = "tab\t quote\" back\\ nl\n ctl\u{1}";
        assert_eq!(parse(&s(text)), Some(Value::Str(text.into())));
    }
}
