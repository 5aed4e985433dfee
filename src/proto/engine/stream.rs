//! Streamed bodies: a request body taken from the caller's reader as the socket takes it, and a
//! response body handed to the caller's writer as it arrives, each through at most one buffer of
//! [`STREAM_BUFFER`] bytes, whatever the body's length.

use std::fmt;
use std::io::{self, Read, Write};

/// The most bytes of a streamed request body held at a time (one read from the caller's reader).
pub(crate) const STREAM_BUFFER: usize = 64 * 1024;

/// A request body read from the caller's reader, one buffer at a time.
pub(crate) struct BodySource {
    reader: Box<dyn Read + Send>,
    /// The announced length (`Content-Length`).
    len: u64,
    /// Bytes taken from the reader so far.
    pub(super) read: u64,
    /// The bytes read and not yet all written; `pos` of them are written.
    pub(super) buf: Vec<u8>,
    pub(super) pos: usize,
}

impl fmt::Debug for BodySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodySource")
            .field("len", &self.len)
            .field("read", &self.read)
            .field("buffered", &(self.buf.len() - self.pos))
            .finish()
    }
}

impl BodySource {
    pub(crate) fn new(reader: Box<dyn Read + Send>, len: u64) -> BodySource {
        BodySource { reader, len, read: 0, buf: Vec::new(), pos: 0 }
    }

    /// The announced length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Bytes of the body not yet handed to the socket.
    pub(super) fn unsent(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Every byte of the body was read and written.
    pub(super) fn done(&self) -> bool {
        self.read == self.len && self.pos == self.buf.len()
    }

    /// Whether a byte was taken from the reader: the body cannot be sent again.
    pub(super) fn started(&self) -> bool {
        self.read > 0
    }

    /// The buffer is written: reads the next part of the body into it (one `read`, at most
    /// [`STREAM_BUFFER`] bytes, never past the announced length). A reader that ends before
    /// the length, or gives more than it was asked for, is an error.
    pub(super) fn refill(&mut self) -> io::Result<()> {
        debug_assert_eq!(self.pos, self.buf.len());
        let want = (self.len - self.read).min(STREAM_BUFFER as u64) as usize;
        self.buf.clear();
        self.pos = 0;
        if want == 0 {
            return Ok(());
        }
        self.buf.resize(want, 0);
        let n = loop {
            match self.reader.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.clear();
                    return Err(e);
                }
            }
        };
        if n == 0 || n > want {
            self.buf.clear();
            let why = if n == 0 {
                format!("the body reader ended after {} of {} bytes", self.read, self.len)
            } else {
                format!("the body reader returned {n} bytes for a buffer of {want}")
            };
            let kind = if n == 0 { io::ErrorKind::UnexpectedEof } else { io::ErrorKind::InvalidData };
            return Err(io::Error::new(kind, why));
        }
        self.buf.truncate(n);
        self.read += n as u64;
        Ok(())
    }
}

/// The caller's writer of a response body.
pub(crate) struct BodySink(pub(crate) Box<dyn Write + Send>);

impl fmt::Debug for BodySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodySink")
    }
}
