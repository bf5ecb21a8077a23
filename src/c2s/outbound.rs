//! A bound stream's outbound queue and the task that writes it to the socket.
//!
//! The queue is bounded twice: in stanzas (`c2s.outbound_queue`) and in bytes
//! (`c2s.outbound_queue_bytes`), because one stanza may be as large as
//! `c2s.max_stanza_bytes`. Both are counted with semaphores: a sender takes a slot and
//! as many permits as the stanza's bytes, the writer gives them back once they
//! are on the socket. A stanza larger than the whole byte bound takes every
//! permit, so it still passes, alone.
//!
//! The writer gives up when a write makes no progress for
//! `c2s.write_timeout_secs`; the session ends then, and aborting the writer
//! frees the socket and whatever was still queued at once.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Notify, Semaphore};

enum Item {
    /// A stanza, and who to tell once it is on the socket.
    Xml(String, Option<oneshot::Sender<()>>),
    /// Write this tail (a stream error and/or `</stream:stream>`) and close.
    Close(String),
}

/// What the session and the writer share. Not a tokio channel: that allocates 32 slots
/// up front, 1.8 KiB on every idle session; this queue holds memory only while stanzas
/// wait (docs/benchmarks.md).
struct Shared {
    items: Mutex<VecDeque<Item>>,
    /// Room for stanzas, and for their bytes: a sender takes permits, the writer gives
    /// them back once the stanza is on the socket. Closed when the writer ends.
    slots: Semaphore,
    bytes: Semaphore,
    /// Wakes the writer: something was queued, or the last sender went.
    wake: Notify,
    senders: AtomicUsize,
}

/// The session's end of the queue.
pub struct Outbox {
    shared: Arc<Shared>,
    capacity: u32,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
            capacity: self.capacity,
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
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
    let capacity = bytes.clamp(1, u32::MAX as u64) as u32;
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        slots: Semaphore::new(stanzas.clamp(1, Semaphore::MAX_PERMITS)),
        bytes: Semaphore::new(capacity as usize),
        wake: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        Outbox {
            shared: shared.clone(),
            capacity,
        },
        Inbox { shared },
    )
}

fn refused(e: tokio::sync::TryAcquireError) -> Refused {
    match e {
        tokio::sync::TryAcquireError::NoPermits => Refused::Full,
        tokio::sync::TryAcquireError::Closed => Refused::Closed,
    }
}

impl Outbox {
    fn cost(&self, xml: &str) -> u32 {
        (xml.len().min(u32::MAX as usize) as u32).clamp(1, self.capacity)
    }

    fn enqueue(&self, item: Item) {
        self.shared
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(item);
        self.shared.wake.notify_one();
    }

    /// Queue a stanza now or refuse it.
    pub fn try_push(&self, xml: String) -> Result<(), Refused> {
        let cost = self.cost(&xml);
        let slot = self.shared.slots.try_acquire().map_err(refused)?;
        let bytes = self.shared.bytes.try_acquire_many(cost).map_err(refused)?;
        slot.forget();
        bytes.forget();
        self.enqueue(Item::Xml(xml, None));
        Ok(())
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
        let closed = |_| Refused::Closed;
        let slot = self.shared.slots.acquire().await.map_err(closed)?;
        let bytes = self.shared.bytes.acquire_many(cost).await.map_err(closed)?;
        slot.forget();
        bytes.forget();
        self.enqueue(Item::Xml(xml, written));
        Ok(())
    }

    /// Ask the writer to write `tail` after what is queued, then close. A queue
    /// with no room for it is a client that stopped reading: nothing more is
    /// worth writing then.
    pub fn close(&self, tail: String) {
        if let Ok(slot) = self.shared.slots.try_acquire() {
            slot.forget();
            self.enqueue(Item::Close(tail));
        }
    }
}

/// The writer's end of the queue.
pub struct Inbox {
    shared: Arc<Shared>,
}

impl Inbox {
    /// What is queued, up to about `max` bytes; waits while nothing is. `None` once
    /// every sender is gone and nothing is left.
    async fn take(&self, max: usize) -> Option<Vec<Item>> {
        loop {
            {
                let mut items = self.shared.items.lock().unwrap_or_else(|p| p.into_inner());
                if !items.is_empty() {
                    let mut taken = Vec::new();
                    let mut size = 0;
                    while let Some(item) = items.pop_front() {
                        if let Item::Xml(xml, _) = &item {
                            size += xml.len();
                        }
                        let last = matches!(item, Item::Close(_));
                        taken.push(item);
                        if last || size >= max {
                            break;
                        }
                    }
                    if items.is_empty() {
                        // Nothing kept while idle.
                        *items = VecDeque::new();
                    }
                    return Some(taken);
                }
            }
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return None;
            }
            self.shared.wake.notified().await;
        }
    }
}

/// Drain the queue into `writer` until the close tail, a write that stalls for
/// `timeout`, or a failed connection.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    inbox: Inbox,
    timeout: Duration,
) -> WriterEnd {
    const BATCH_BYTES: usize = 64 * 1024;
    let end = loop {
        let Some(items) = inbox.take(BATCH_BYTES).await else {
            break WriterEnd::Closed;
        };
        let mut closing = false;
        let mut taken = 0usize;
        let slots = items.len();
        let mut receipts = Vec::new();
        // Everything already queued in one write: fewer syscalls and TLS records.
        let mut buf = String::new();
        for item in items {
            match item {
                Item::Xml(xml, written) => {
                    taken += xml.len().clamp(1, u32::MAX as usize);
                    if buf.is_empty() {
                        buf = xml;
                    } else {
                        buf.push_str(&xml);
                    }
                    receipts.extend(written);
                }
                Item::Close(tail) => {
                    buf.push_str(&tail);
                    closing = true;
                }
            }
        }
        if let Err(e) = write_with_progress(&mut writer, buf.as_bytes(), timeout).await {
            break if e.kind() == io::ErrorKind::TimedOut {
                WriterEnd::TimedOut
            } else {
                WriterEnd::Failed
            };
        }
        inbox.shared.slots.add_permits(slots);
        inbox
            .shared
            .bytes
            .add_permits(taken.min(Semaphore::MAX_PERMITS));
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
    end
}

impl Drop for Inbox {
    /// The writer ended or was aborted: senders waiting for room learn that none will
    /// come, and what is left goes.
    fn drop(&mut self) {
        self.shared.slots.close();
        self.shared.bytes.close();
        self.shared
            .items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
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
    async fn an_idle_queue_holds_no_memory_and_an_aborted_writer_refuses_senders() {
        let (out, inbox) = queue(10, 1 << 20);
        let shared = inbox.shared.clone();
        let (client, mut server) = tokio::io::duplex(1024);
        let writer = tokio::spawn(write_loop(client, inbox, Duration::from_secs(5)));
        for _ in 0..5 {
            out.try_push("<a/>".into()).unwrap();
        }
        let mut buf = [0u8; 20];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut buf)
            .await
            .unwrap();
        assert_eq!(
            shared.items.lock().unwrap().capacity(),
            0,
            "written and emptied: nothing kept"
        );
        writer.abort();
        let _ = writer.await;
        assert_eq!(out.push("<b/>".into()).await, Err(Refused::Closed));
        assert_eq!(out.try_push("<b/>".into()), Err(Refused::Closed));
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
