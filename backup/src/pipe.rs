//! Two halves of a stream on two threads, as a shell pipeline spreads
//! `age | zstd | tar` over processes: a backup encrypts and writes on one
//! core while it reads and hashes the state on another, and a restore
//! decrypts and decompresses while it parses, hashes and writes. Chunks of
//! up to 1 MiB travel in order through a channel of four, so memory stays
//! bounded; an error travels in its place, and either side stops when the
//! other is dropped.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// The reading end of [`reader`].
pub struct PipeReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

/// Reads `src` to its end on a thread of its own.
pub fn reader<R: Read + Send + 'static>(mut src: R) -> PipeReader {
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
    std::thread::spawn(move || loop {
        let mut buf = vec![0u8; CHUNK];
        match src.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                // An empty chunk is the end.
                if tx.send(Ok(buf)).is_err() || n == 0 {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    });
    PipeReader { rx, chunk: Vec::new(), at: 0, ended: false }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.ended = chunk.is_empty();
                    (self.chunk, self.at) = (chunk, 0);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("the reading thread stopped"));
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// The writing end of [`writer`].
pub struct PipeWriter<T> {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    buf: Vec<u8>,
    thread: Option<JoinHandle<io::Result<T>>>,
}

/// Writes what the returned end is given into `sink` on a thread of its
/// own; [`PipeWriter::finish`] hands `sink` to `done` there, and returns
/// what it returns.
pub fn writer<W, T, F>(mut sink: W, done: F) -> PipeWriter<T>
where
    W: Write + Send + 'static,
    T: Send + 'static,
    F: FnOnce(W) -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
    let thread = std::thread::spawn(move || {
        for chunk in rx {
            sink.write_all(&chunk)?;
        }
        done(sink)
    });
    PipeWriter { tx: Some(tx), buf: Vec::with_capacity(CHUNK), thread: Some(thread) }
}

impl<T> PipeWriter<T> {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match self.tx.as_ref().map(|tx| tx.send(chunk)) {
            Some(Ok(())) => Ok(()),
            // The thread stopped on an error: that error is the one to tell.
            _ => Err(self.stopped()),
        }
    }

    fn stopped(&mut self) -> io::Error {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            _ => io::Error::other("the writing thread stopped"),
        }
    }

    /// Sends what is left, waits for the thread, and returns what `done` made.
    pub fn finish(mut self) -> io::Result<T> {
        self.send()?;
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => Err(io::Error::other("the writing thread stopped")),
        }
    }
}

impl<T> Write for PipeWriter<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands on what is buffered; the thread writes it in its own time.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_in_order_and_errors_are_the_other_sides() {
        let data: Vec<u8> = (0..3 * CHUNK + 7).map(|i| (i * 31 % 251) as u8).collect();
        let mut got = Vec::new();
        reader(io::Cursor::new(data.clone())).read_to_end(&mut got).unwrap();
        assert_eq!(got, data);

        let mut w = writer(Vec::new(), Ok);
        for piece in data.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        assert_eq!(w.finish().unwrap(), data);

        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = writer(Full, |_| Ok(()));
        let e = (0..IN_FLIGHT + 3).try_for_each(|_| w.write_all(&data[..CHUNK])).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");

        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        let e = reader(Broken).read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }
}
