//! The thread that writes staged files, so that the kernel's copy of
//! their bytes overlaps with hashing and decoding.

use super::*;
use std::sync::{mpsc, Mutex};

/// What the writer thread is asked to do.
pub(super) enum Msg {
    /// Append the first `usize` bytes of the buffer to the file.
    Data(Arc<fs::File>, Arc<std::path::PathBuf>, Vec<u8>, usize),
    /// All bytes sent: give the file its mode and start its writeback.
    Seal(Arc<fs::File>, Arc<std::path::PathBuf>, u32),
    /// Say when everything before this is written.
    Barrier(mpsc::SyncSender<()>),
}

/// Chunks in flight between the walk and the writer, at most, and their
/// size. Chunk buffers go back to a pool once written: musl's allocator
/// is slow when one thread frees what another allocated.
pub(super) const WRITE_BUFFERS: usize = 8;
pub(super) const WRITE_CHUNK: usize = 256 << 10;

/// A thread that writes extracted files. The walk hashes each chunk, then
/// hands it over; the first error is kept and reported at the next check.
pub(super) struct Writer {
    tx: Option<mpsc::SyncSender<Msg>>,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
    error: Arc<Mutex<Option<Error>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn new() -> Writer {
        let (tx, rx) = mpsc::sync_channel::<Msg>(WRITE_BUFFERS);
        let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
        let back = pool.clone();
        let error: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
        let err = error.clone();
        let thread = std::thread::spawn(move || {
            for msg in rx {
                let failed = err.lock().map(|e| e.is_some()).unwrap_or(true);
                let r = match msg {
                    Msg::Data(f, p, buf, n) => {
                        let r = if failed {
                            Ok(())
                        } else {
                            (&*f).write_all(&buf[..n]).map_err(|e| Error::io("cannot write", &p, e))
                        };
                        if let Ok(mut pool) = back.lock() {
                            pool.push(buf);
                        }
                        r
                    }
                    Msg::Seal(f, p, mode) if !failed => seal(&f, &p, mode),
                    Msg::Seal(..) => Ok(()),
                    Msg::Barrier(tx) => {
                        let _ = tx.send(());
                        Ok(())
                    }
                };
                if let Err(e) = r {
                    if let Ok(mut slot) = err.lock() {
                        slot.get_or_insert(e);
                    }
                }
            }
        });
        Writer { tx: Some(tx), pool, error, thread: Some(thread) }
    }

    /// The writer's first error, if it had one.
    pub(super) fn check(&self) -> Result<()> {
        match self.error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub(super) fn send(&self, msg: Msg) -> Result<()> {
        let stopped = || Error::new(crate::error::Class::Io, "the file writer stopped");
        self.tx.as_ref().ok_or_else(stopped)?.send(msg).map_err(|_| stopped())
    }

    /// A chunk buffer: one the writer is done with, or a new one.
    pub(super) fn buffer(&self) -> Vec<u8> {
        self.pool.lock().ok().and_then(|mut p| p.pop()).unwrap_or_else(|| vec![0u8; WRITE_CHUNK])
    }

    /// Closes the queue and waits for the thread to write what is left.
    pub(super) fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Waits until everything sent so far is written.
    pub(super) fn drain(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Msg::Barrier(tx))?;
        rx.recv().map_err(|_| Error::new(crate::error::Class::Io, "the file writer stopped"))?;
        self.check()
    }

    /// Waits for every write, and reports the first error.
    pub(super) fn finish(mut self) -> Result<()> {
        self.stop();
        self.check()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // On an early return, let the thread drain and end.
        self.stop();
    }
}
