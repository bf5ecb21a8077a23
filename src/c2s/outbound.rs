//! A bound stream's outbound queue and the task that writes it to the socket.
//!
//! The queue is bounded twice: in stanzas (`c2s.outbound_queue`) and in bytes
//! (`c2s.outbound_queue_bytes`), because one stanza may be as large as
//! `c2s.max_stanza_bytes`. Bytes are counted with a semaphore: a sender takes
//! as many permits as the stanza's bytes, the writer gives them back once they
//! are on the socket. A stanza larger than the whole byte bound takes every
//! permit, so it still passes, alone.
//!
//! The writer gives up when a write makes no progress for
//! `c2s.write_timeout_secs`; the session ends then, and aborting the writer
//! frees the socket and whatever was still queued at once.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};

enum Item {
    /// A stanza, and who to tell once it is on the socket.
    Xml(String, Option<oneshot::Sender<()>>),
    /// Write this tail (a stream error and/or `</stream:stream>`) and close.
    Close(String),
}

/// The session's end of the queue.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Item>,
    bytes: Arc<Semaphore>,
    capacity: u32,
}

/// Why a stanza was not queued.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// The client let too many stanzas or bytes pile up.
    Full,
    /// The writer is gone (the connection failed or is closing).
    Closed,
}

/// How the writer ended.
#[derive(Debug, PartialEq)]
pub enum WriterEnd {
    /// The close tail was written (or the session let go of the queue).
    Closed,
    /// A write made no progress within the write timeout.
    TimedOut,
    /// The connection failed.
    Failed,
}

/// A queue bounded by `stanzas` and `bytes`, and its receiving end for [`write_loop`].
pub fn queue(stanzas: usize, bytes: u64) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(stanzas.max(1));
    let capacity = bytes.clamp(1, u32::MAX as u64) as u32;
    let bytes = Arc::new(Semaphore::new(capacity as usize));
    (
        Outbox {
            tx,
            bytes: bytes.clone(),
            capacity,
        },
        Inbox { rx, bytes },
    )
}

impl Outbox {
    fn cost(&self, xml: &str) -> u32 {
        (xml.len().min(u32::MAX as usize) as u32).clamp(1, self.capacity)
    }

    /// Queue a stanza now or refuse it.
    pub fn try_push(&self, xml: String) -> Result<(), Refused> {
        let cost = self.cost(&xml);
        let permit = match self.bytes.try_acquire_many(cost) {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::NoPermits) => return Err(Refused::Full),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(Refused::Closed),
        };
        match self.tx.try_send(Item::Xml(xml, None)) {
            Ok(()) => {
                permit.forget();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => Err(Refused::Full),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Refused::Closed),
        }
    }

    /// Queue a stanza, waiting for room: the client paces the sender.
    pub async fn push(&self, xml: String) -> Result<(), Refused> {
        self.push_item(xml, None).await
    }

    /// `push`, and learn when the stanza has been written to the socket (the
    /// receiver fails if the connection ends first).
    pub async fn push_until_written(&self, xml: String) -> Result<oneshot::Receiver<()>, Refused> {
        let (tx, rx) = oneshot::channel();
        self.push_item(xml, Some(tx)).await?;
        Ok(rx)
    }

    async fn push_item(
        &self,
        xml: String,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<(), Refused> {
        let cost = self.cost(&xml);
        let permit = self
            .bytes
            .acquire_many(cost)
            .await
            .map_err(|_| Refused::Closed)?;
        self.tx
            .send(Item::Xml(xml, written))
            .await
            .map_err(|_| Refused::Closed)?;
        permit.forget();
        Ok(())
    }

    /// Ask the writer to write `tail` after what is queued, then close. A queue
    /// with no room for it is a client that stopped reading: nothing more is
    /// worth writing then.
    pub fn close(&self, tail: String) {
        let _ = self.tx.try_send(Item::Close(tail));
    }
}

/// The writer's end of the queue.
pub struct Inbox {
    rx: mpsc::Receiver<Item>,
    bytes: Arc<Semaphore>,
}

/// Drain the queue into `writer` until the close tail, a write that stalls for
/// `timeout`, or a failed connection.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut inbox: Inbox,
    timeout: Duration,
) -> WriterEnd {
    const BATCH_BYTES: usize = 64 * 1024;
    let mut buf = String::new();
    let end = 'outer: loop {
        let Some(item) = inbox.rx.recv().await else {
            break WriterEnd::Closed;
        };
        let mut closing = false;
        let mut taken = 0usize;
        let mut receipts = Vec::new();
        let mut next = Some(item);
        // Write everything already queued in one go: fewer syscalls and TLS records.
        while let Some(item) = next.take() {
            match item {
                Item::Xml(xml, written) => {
                    taken += xml.len().clamp(1, u32::MAX as usize);
                    buf.push_str(&xml);
                    receipts.extend(written);
                }
                Item::Close(tail) => {
                    buf.push_str(&tail);
                    closing = true;
                    break;
                }
            }
            if buf.len() < BATCH_BYTES {
                next = inbox.rx.try_recv().ok();
            }
        }
        if let Err(e) = write_with_progress(&mut writer, buf.as_bytes(), timeout).await {
            break 'outer if e.kind() == io::ErrorKind::TimedOut {
                WriterEnd::TimedOut
            } else {
                WriterEnd::Failed
            };
        }
        buf.clear();
        inbox.bytes.add_permits(taken.min(Semaphore::MAX_PERMITS));
        for receipt in receipts {
            let _ = receipt.send(());
        }
        if closing {
            break WriterEnd::Closed;
        }
    };
    if end == WriterEnd::Closed {
        let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
    }
    // Senders waiting for room learn that none will come.
    inbox.bytes.close();
    end
}

/// `write_all` and `flush`, failing with `TimedOut` when no byte is taken for
/// `timeout`: a client that reads slowly is served, one that stopped is not.
pub async fn write_with_progress<W: AsyncWrite + Unpin>(
    writer: &mut W,
    mut data: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    let stalled = || io::Error::new(io::ErrorKind::TimedOut, "the peer stopped reading");
    while !data.is_empty() {
        match tokio::time::timeout(timeout, writer.write(data)).await {
            Err(_) => return Err(stalled()),
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
        }
    }
    match tokio::time::timeout(timeout, writer.flush()).await {
        Err(_) => Err(stalled()),
        Ok(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_bound_refuses_before_the_stanza_bound() {
        let (out, _inbox) = queue(100, 10);
        assert_eq!(out.try_push("12345".into()), Ok(()));
        assert_eq!(out.try_push("12345".into()), Ok(()));
        assert_eq!(out.try_push("1".into()), Err(Refused::Full));
    }

    #[tokio::test]
    async fn stanza_bound_refuses_small_stanzas() {
        let (out, _inbox) = queue(2, 1 << 20);
        assert_eq!(out.try_push("a".into()), Ok(()));
        assert_eq!(out.try_push("b".into()), Ok(()));
        assert_eq!(out.try_push("c".into()), Err(Refused::Full));
    }

    #[tokio::test]
    async fn a_stanza_larger_than_the_bound_passes_alone() {
        let (out, inbox) = queue(10, 4);
        assert_eq!(out.try_push("0123456789".into()), Ok(()));
        assert_eq!(out.try_push("x".into()), Err(Refused::Full));
        let (client, mut server) = tokio::io::duplex(1024);
        out.close("</end>".into());
        let end = write_loop(client, inbox, Duration::from_secs(5)).await;
        assert_eq!(end, WriterEnd::Closed);
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut server, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "0123456789</end>");
    }

    #[tokio::test]
    async fn written_bytes_make_room_again() {
        let (out, inbox) = queue(10, 8);
        let (client, mut server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(write_loop(client, inbox, Duration::from_secs(5)));
        out.try_push("12345678".into()).unwrap();
        let mut buf = [0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        // The writer gives the permits back right after the write.
        out.push("abcdefgh".into()).await.unwrap();
        out.close(String::new());
        assert_eq!(writer.await.unwrap(), WriterEnd::Closed);
    }

    #[tokio::test]
    async fn a_receipt_comes_once_written_and_never_for_a_stalled_write() {
        let (out, inbox) = queue(10, 1 << 20);
        let (client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(write_loop(client, inbox, Duration::from_millis(300)));
        let small = out.push_until_written("hello".into()).await.unwrap();
        let mut buf = [0u8; 5];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        assert!(small.await.is_ok());
        // More than the peer's buffer, and the peer stops reading: no receipt.
        let big = out.push_until_written("x".repeat(1000)).await.unwrap();
        assert_eq!(writer.await.unwrap(), WriterEnd::TimedOut);
        assert!(big.await.is_err());
    }

    #[tokio::test]
    async fn a_reader_that_stops_times_the_writer_out() {
        let (out, inbox) = queue(10, 1 << 20);
        // The peer reads nothing and its buffer holds 16 bytes.
        let (client, _server) = tokio::io::duplex(16);
        out.try_push("x".repeat(1000)).unwrap();
        let end = write_loop(client, inbox, Duration::from_millis(200)).await;
        assert_eq!(end, WriterEnd::TimedOut);
        // Waiting senders are told the writer is gone.
        assert_eq!(out.push("y".into()).await, Err(Refused::Closed));
    }
}
