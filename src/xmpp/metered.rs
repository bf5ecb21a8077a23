//! A reader that hands out at most a set number of bytes.
//!
//! quick-xml buffers a whole tag, text node or comment before it returns an event, so a
//! size check on events would come after a 100 MB text node had been read into memory.
//! The cap lives here instead, below the parser's buffer: the stream reader moves it
//! to "bytes consumed so far + max stanza size" at the start of each stanza, and once
//! the parser has pulled that many bytes it gets an error instead of more data.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

#[derive(Debug)]
pub(crate) struct Metered<R> {
    inner: R,
    /// Bytes handed out since creation.
    pulled: u64,
    /// `pulled` may not pass this.
    cap: u64,
    /// The cap was hit: the parser's next error is a size violation, not its own.
    tripped: bool,
    /// The inner reader reported end of file.
    eof: bool,
}

impl<R> Metered<R> {
    pub(crate) fn new(inner: R, cap: u64) -> Self {
        Metered {
            inner,
            pulled: 0,
            cap,
            tripped: false,
            eof: false,
        }
    }

    pub(crate) fn pulled(&self) -> u64 {
        self.pulled
    }

    pub(crate) fn set_cap(&mut self, cap: u64) {
        self.cap = cap;
    }

    pub(crate) fn tripped(&self) -> bool {
        self.tripped
    }

    pub(crate) fn eof(&self) -> bool {
        self.eof
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Metered<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let allowed = this.cap.saturating_sub(this.pulled);
        if allowed == 0 {
            this.tripped = true;
            return Poll::Ready(Err(io::Error::other("stanza size limit reached")));
        }
        let want = usize::try_from(allowed).map_or(buf.remaining(), |a| a.min(buf.remaining()));
        let mut window = ReadBuf::new(buf.initialize_unfilled_to(want));
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut window))?;
        let n = window.filled().len();
        buf.advance(n);
        this.pulled += n as u64;
        if n == 0 {
            this.eof = true;
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn hands_out_bytes_up_to_the_cap_then_fails() {
        let mut m = Metered::new(&b"0123456789"[..], 4);
        let mut buf = [0u8; 8];
        assert_eq!(m.read(&mut buf).await.unwrap(), 4);
        assert_eq!(&buf[..4], b"0123");
        assert!(m.read(&mut buf).await.is_err());
        assert!(m.tripped());
        m.set_cap(100);
        assert_eq!(m.read(&mut buf).await.unwrap(), 6);
        assert_eq!(m.read(&mut buf).await.unwrap(), 0);
        assert!(m.eof());
        assert_eq!(m.pulled(), 10);
    }
}
