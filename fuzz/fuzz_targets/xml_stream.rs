//! Arbitrary bytes into the XMPP stream reader.
//!
//! Each input is read twice: whole with the default limits, and a few bytes at a time
//! (the first byte picks the chunk size) with tight limits and a read that is `Pending`
//! every other poll, as a socket's is. Beyond "no panic", it checks that errors latch,
//! and that every stanza read serializes to XML that parses back to the same tree.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use chorus::xmpp::{Element, Limits, StreamEvent, StreamReader};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("current-thread runtime");
}

fuzz_target!(|data: &[u8]| {
    RUNTIME.with(|rt| rt.block_on(run(data)));
});

async fn run(data: &[u8]) {
    drive(StreamReader::new(data, Limits::default())).await;
    let (chunk, rest) = match data.split_first() {
        Some((first, rest)) => (usize::from(first % 16) + 1, rest),
        None => (1, data),
    };
    let tight = Limits {
        max_stanza_bytes: 1024,
        max_depth: 8,
        max_attrs: 8,
    };
    drive(StreamReader::new(Chunked::new(rest, chunk), tight)).await;
}

async fn drive<R: AsyncRead + Unpin>(mut reader: StreamReader<R>) {
    loop {
        match reader.next().await {
            Ok(StreamEvent::Header(_)) => {}
            Ok(StreamEvent::Stanza(stanza)) => round_trip(&stanza),
            Ok(StreamEvent::Closed) => {
                assert!(matches!(reader.next().await, Ok(StreamEvent::Closed)));
                return;
            }
            Err(first) => {
                let again = reader
                    .next()
                    .await
                    .expect_err("a failed reader stays failed");
                assert_eq!(again.to_string(), first.to_string());
                let _ = first.stream_error_xml();
                return;
            }
        }
    }
}

fn round_trip(stanza: &Element) {
    let xml = stanza.to_xml();
    match Element::from_xml(&xml) {
        Ok(back) => assert_eq!(&back, stanza, "{xml}"),
        Err(e) => panic!("serialized stanza does not parse back ({e}): {xml}"),
    }
}

/// `chunk` bytes per read, `Pending` every other poll.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
    stall: bool,
}

impl<'a> Chunked<'a> {
    fn new(data: &'a [u8], chunk: usize) -> Self {
        Chunked {
            data,
            chunk,
            stall: false,
        }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.stall = !this.stall;
        if this.stall {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let n = this.chunk.min(this.data.len()).min(buf.remaining());
        let (head, tail) = this.data.split_at(n);
        buf.put_slice(head);
        this.data = tail;
        Poll::Ready(Ok(()))
    }
}
