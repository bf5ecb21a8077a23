//! A buffered reader that holds no buffer while it waits.
//!
//! Most client connections are idle most of the time. tokio's `BufReader` keeps its
//! buffer for the life of the connection, 2 KiB per idle session here even at the
//! smallest size worth reading with (docs/benchmarks.md). This one reads into a buffer
//! on the stack and keeps on the heap only bytes read and not yet consumed; once the
//! parser has consumed them all the heap buffer is freed, so a connection waiting for
//! its next bytes holds none.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// Bytes read from the socket at a time: a larger stanza only takes more reads.
pub const READ_CHUNK: usize = 2 * 1024;

pub struct OnDemandBuf<R> {
    inner: R,
    /// Read and not yet consumed: `buf[pos..]`. Empty, with no allocation, when waiting.
    buf: Vec<u8>,
    pos: usize,
}

impl<R> OnDemandBuf<R> {
    pub fn new(inner: R) -> Self {
        OnDemandBuf {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Bytes read from the inner reader and not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The inner reader; bytes still buffered are dropped.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for OnDemandBuf<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            let mut chunk = [0u8; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            this.buf = read.filled().to_vec();
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.buf.len());
        if this.pos == this.buf.len() {
            this.buf = Vec::new();
            this.pos = 0;
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for OnDemandBuf<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos >= this.buf.len() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = out.remaining().min(this.buf.len() - this.pos);
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        Pin::new(this).consume(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn holds_nothing_once_everything_read_is_consumed() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = OnDemandBuf::new(server);
        client.write_all(b"<a/><b/>").await.unwrap();
        let got = reader.fill_buf().await.unwrap().to_vec();
        assert_eq!(got, b"<a/><b/>");
        Pin::new(&mut reader).consume(4);
        assert_eq!(reader.buffer(), b"<b/>");
        Pin::new(&mut reader).consume(4);
        assert!(reader.buffer().is_empty());
        assert_eq!(reader.buf.capacity(), 0, "no heap buffer while waiting");
    }

    #[tokio::test]
    async fn a_message_longer_than_a_chunk_arrives_whole_over_several_reads() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = OnDemandBuf::new(server);
        let sent: Vec<u8> = (0..READ_CHUNK * 3 + 7).map(|i| (i % 251) as u8).collect();
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        loop {
            let chunk = reader.fill_buf().await.unwrap();
            if chunk.is_empty() {
                break;
            }
            assert!(chunk.len() <= READ_CHUNK);
            let n = chunk.len();
            got.extend_from_slice(chunk);
            Pin::new(&mut reader).consume(n);
        }
        assert_eq!(got, sent);
    }
}
