//! A secret held in memory (the Headscale auth key, a passphrase): never
//! printed, and wiped when dropped.

/// Bytes that must not leak. `Debug` shows no content; `Drop` zeroes them.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
    /// Appends, without leaving a copy behind in a reallocated buffer.
    pub fn extend(&mut self, more: &[u8]) {
        if self.0.capacity() - self.0.len() < more.len() {
            let mut bigger = Vec::with_capacity((self.0.len() + more.len()).max(64) * 2);
            bigger.extend_from_slice(&self.0);
            wipe(&mut self.0);
            self.0 = bigger;
        }
        self.0.extend_from_slice(more);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn wipe(v: &mut [u8]) {
    for b in v.iter_mut() {
        // SAFETY: a valid, exclusive reference to a byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

/// The environment variable that may name the auth key file. It names a
/// path, never the key; still, no child but the client is given it.
pub const KEY_FILE_ENV: &str = "NXS_AUTHKEY_FILE";
