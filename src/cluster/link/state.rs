//! What one side of a peer link owes and has taken, as a state machine with no sockets,
//! clocks or tasks: the link task (`super`) feeds it what happens (a message to send, a
//! hello, a numbered frame or an acknowledgement read, a connection lost, the peer
//! declared down) and writes the frames it hands back. The property tests below drive
//! two of them through random interleavings of those events.
//!
//! The promise it keeps: a message the link took is handed to one process run of the
//! peer at most once, in the order sent; every message the peer never acknowledged is
//! given back (to be routed anew) exactly once, when the peer comes back as a new
//! process or is declared down; nothing is both acknowledged and given back.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::super::protocol::{LinkFrame, PeerMessage, ResourceState};

/// A message the link took, with what the link must know of it without reading its XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub msg: PeerMessage,
    /// The full JID whose available presence this is, if it is one: sent late, after that
    /// stream ended, it would make contacts see a ghost, so a new connection drops it.
    pub available_presence_of: Option<String>,
    /// The sender's applied Raft index when the message was handed to the link (stamped
    /// by the link): the peer acts on it only once it has applied that much.
    pub after: u64,
}

impl Outgoing {
    pub fn new(msg: PeerMessage) -> Outgoing {
        Outgoing::carrying(msg, None)
    }

    /// A stanza, which is `available_presence_of` that full JID if it is one.
    pub fn carrying(msg: PeerMessage, available_presence_of: Option<&str>) -> Outgoing {
        Outgoing {
            msg,
            available_presence_of: available_presence_of.map(str::to_string),
            after: 0,
        }
    }

    /// Bytes it holds against the peer's budget.
    pub fn weight(&self) -> usize {
        self.msg.weight() + self.available_presence_of.as_ref().map_or(0, String::len)
    }

    fn stale(&self, live: &HashSet<String>) -> bool {
        self.available_presence_of
            .as_ref()
            .is_some_and(|f| !live.contains(f))
    }
}

/// The peer's hello: its process run, and the last number it took from our run `from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    pub incarnation: u64,
    pub from: u64,
    pub took: u64,
}

/// What a new connection starts with.
#[derive(Debug, Default)]
pub struct Greeting {
    /// To write first, in order: our resources, then what the peer did not take before,
    /// then what never left.
    pub first: Vec<LinkFrame>,
    /// What an earlier run of the peer never acknowledged: route it anew.
    pub given_back: Vec<PeerMessage>,
    /// How many of `first` are sent again.
    pub resent: usize,
}

/// One side of one peer link.
pub struct LinkState {
    incarnation: u64,
    last_seq: u64,
    unacked: VecDeque<(u64, Outgoing)>,
    /// Taken for a connection that ended before they were numbered.
    unsent: VecDeque<Outgoing>,
    /// The peer's run `unacked` was sent to (0: none yet).
    sent_to: u64,
    /// The last numbered message taken from the peer, and from which of its runs.
    took_from: u64,
    took_seq: u64,
    /// `took_seq` as last acknowledged to the peer.
    acked_out: u64,
    /// Bytes held for the peer, shared with whoever reserves them before a message is
    /// queued (`Links::send`): this side gives back what it drops, acks or returns.
    budget: Arc<AtomicUsize>,
}

impl LinkState {
    pub fn new(incarnation: u64, budget: Arc<AtomicUsize>) -> LinkState {
        LinkState {
            incarnation,
            last_seq: 0,
            unacked: VecDeque::new(),
            unsent: VecDeque::new(),
            sent_to: 0,
            took_from: 0,
            took_seq: 0,
            acked_out: 0,
            budget,
        }
    }

    pub fn hello(&self) -> LinkFrame {
        LinkFrame::Hello {
            incarnation: self.incarnation,
            from: self.took_from,
            took: self.took_seq,
        }
    }

    /// The peer's hello came: what to write first, and what to route anew. `resources` are
    /// this node's current resources (sent in full on every connection); `live` the full
    /// JIDs of this node's streams now.
    pub fn greeted(
        &mut self,
        theirs: Hello,
        resources: Vec<ResourceState>,
        live: &HashSet<String>,
    ) -> Greeting {
        if self.took_from != theirs.incarnation {
            // A new run of the peer numbers from 1 again.
            self.took_from = theirs.incarnation;
            self.took_seq = 0;
        }
        // Our hello told the peer what we took.
        self.acked_out = self.took_seq;
        let mut given_back = Vec::new();
        if self.sent_to != 0 && self.sent_to != theirs.incarnation {
            // That run is gone with whatever it took but did not acknowledge.
            given_back = self.drain_unacked();
        }
        self.sent_to = theirs.incarnation;
        if theirs.from == self.incarnation {
            self.acked(theirs.took);
        }
        let mut first: Vec<LinkFrame> = resources
            .into_iter()
            .map(|r| LinkFrame::Unnumbered(PeerMessage::Resource(r)))
            .collect();
        // Presence is state, not news: one whose stream has ended is not sent late. It
        // keeps its number (so that the peer's acknowledgements still line up) and is
        // released when a later one is acknowledged.
        let again: Vec<LinkFrame> = self
            .unacked
            .iter()
            .filter(|(_, out)| !out.stale(live))
            .map(|(seq, out)| LinkFrame::Numbered {
                seq: *seq,
                after: out.after,
                msg: out.msg.clone(),
            })
            .collect();
        let resent = again.len();
        first.extend(again);
        while let Some(out) = self.unsent.pop_front() {
            if out.stale(live) {
                self.release(out.weight());
            } else {
                first.push(self.number(out));
            }
        }
        Greeting {
            first,
            given_back,
            resent,
        }
    }

    /// A message to write on the live connection: numbered and kept until acknowledged,
    /// or, for resource state (which every connection sends in full), sent as it is.
    pub fn send(&mut self, out: Outgoing) -> LinkFrame {
        if !out.msg.numbered() {
            self.release(out.weight());
            return LinkFrame::Unnumbered(out.msg);
        }
        self.number(out)
    }

    /// A numbered message read from the peer: whether it is new (to be taken), or one the
    /// peer sent again that this side already took.
    pub fn take(&mut self, seq: u64) -> bool {
        let fresh = seq > self.took_seq;
        self.took_seq = self.took_seq.max(seq);
        fresh
    }

    /// The acknowledgement to send: everything taken so far.
    pub fn ack(&mut self) -> LinkFrame {
        self.acked_out = self.took_seq;
        LinkFrame::Ack { seq: self.took_seq }
    }

    /// `ack`, unless the peer was already told of everything taken.
    pub fn ack_if_new(&mut self) -> Option<LinkFrame> {
        (self.acked_out != self.took_seq).then(|| self.ack())
    }

    /// The peer took everything up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, out)) = self.unacked.pop_front() {
                self.release(out.weight());
            }
        }
    }

    /// The connection ended with these still queued for it: stanzas wait for the next
    /// connection, resource updates are dropped (the next one sends the state in full).
    pub fn disconnected(&mut self, queued: impl IntoIterator<Item = Outgoing>) {
        for out in queued {
            if out.msg.numbered() {
                self.unsent.push_back(out);
            } else {
                self.release(out.weight());
            }
        }
    }

    /// The peer was declared down: everything it did not acknowledge and everything not
    /// yet sent, to be routed anew (its routes are gone by then).
    pub fn give_back_all(&mut self) -> Vec<PeerMessage> {
        let mut all = self.drain_unacked();
        while let Some(out) = self.unsent.pop_front() {
            self.release(out.weight());
            all.push(out.msg);
        }
        all
    }

    /// Messages held: numbered and not acknowledged, or waiting for a connection.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.unacked.len() + self.unsent.len()
    }

    fn number(&mut self, out: Outgoing) -> LinkFrame {
        self.last_seq += 1;
        let (msg, after) = (out.msg.clone(), out.after);
        self.unacked.push_back((self.last_seq, out));
        LinkFrame::Numbered {
            seq: self.last_seq,
            after,
            msg,
        }
    }

    fn drain_unacked(&mut self) -> Vec<PeerMessage> {
        let taken: Vec<Outgoing> = self.unacked.drain(..).map(|(_, o)| o).collect();
        taken
            .into_iter()
            .map(|o| {
                self.release(o.weight());
                o.msg
            })
            .collect()
    }

    fn release(&self, weight: usize) {
        self.budget.fetch_sub(weight, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests;
