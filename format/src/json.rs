//! Just enough JSON output for `--json`, without a dependency: shared by
//! the stub and `nxs-bundle`.

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
