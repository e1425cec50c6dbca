//! The JSON reader the stub runs on `tailscale status --json` (the output of
//! a program on the target machine, so untrusted): never panics, whatever
//! the bytes; a string it reads comes back the same through our escaper.
#![no_main]
use libfuzzer_sys::fuzz_target;
use nxs_format::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(json::Value::Str(s)) = json::parse(text) {
            assert_eq!(json::parse(&json::s(&s)), Some(json::Value::Str(s)));
        }
    }
});
