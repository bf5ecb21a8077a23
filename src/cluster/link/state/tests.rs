use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::*;

fn route(id: usize) -> Outgoing {
    Outgoing::new(PeerMessage::Route {
        xml: format!("<message id='m{id}'/>"),
    })
}

fn id_of(msg: &PeerMessage) -> usize {
    match msg {
        PeerMessage::Route { xml } => xml
            .trim_start_matches("<message id='m")
            .trim_end_matches("'/>")
            .parse()
            .expect("a test message"),
        other => panic!("not a test message: {other:?}"),
    }
}

fn hello_of(frame: LinkFrame) -> Hello {
    match frame {
        LinkFrame::Hello {
            incarnation,
            from,
            took,
        } => Hello {
            incarnation,
            from,
            took,
        },
        other => panic!("not a hello: {other:?}"),
    }
}

/// What can happen to a link between node A (which sends) and node B (which takes and
/// acknowledges).
#[derive(Clone, Debug)]
enum Event {
    /// A stanza for B: written if the connection is up, else kept for the next one.
    Send,
    /// The next frame in flight from A arrives at B.
    ToB,
    /// B sends an acknowledgement of what it took.
    BAcks,
    /// The next frame in flight from B arrives at A.
    ToA,
    /// The connection fails; what was in flight is lost.
    Drop,
    /// A new connection: hellos both ways, then A's first frames go out.
    Connect,
    /// B's process dies and starts again: a new run that holds nothing.
    RestartB,
    /// A's process dies and starts again (what it held dies with it).
    RestartA,
    /// The cluster declared B down: A gives back what B did not acknowledge.
    NodeDown,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        6 => Just(Event::Send),
        6 => Just(Event::ToB),
        3 => Just(Event::BAcks),
        4 => Just(Event::ToA),
        1 => Just(Event::Drop),
        2 => Just(Event::Connect),
        1 => Just(Event::RestartB),
        1 => Just(Event::RestartA),
        1 => Just(Event::NodeDown),
    ]
}

struct Connection {
    to_b: VecDeque<LinkFrame>,
    to_a: VecDeque<LinkFrame>,
}

struct Sim {
    a: LinkState,
    a_budget: Arc<AtomicUsize>,
    a_run: u64,
    b: LinkState,
    b_run: u64,
    conn: Option<Connection>,
    next_id: usize,
    /// Ids A holds and what each weighs, mirrored to check the budget.
    weights: HashMap<usize, usize>,
    /// (B's run, id) for every message B took.
    taken: Vec<(u64, usize)>,
    given_back: Vec<usize>,
    /// Messages that died with a run of A.
    died_with_a: HashSet<usize>,
    declared_down: bool,
}

impl Sim {
    fn new() -> Sim {
        let a_budget = Arc::new(AtomicUsize::new(0));
        Sim {
            a: LinkState::new(11, a_budget.clone()),
            a_budget,
            a_run: 11,
            b: LinkState::new(21, Arc::new(AtomicUsize::new(0))),
            b_run: 21,
            conn: None,
            next_id: 0,
            weights: HashMap::new(),
            taken: Vec::new(),
            given_back: Vec::new(),
            died_with_a: HashSet::new(),
            declared_down: false,
        }
    }

    fn sent_ids(&self) -> impl Iterator<Item = usize> {
        0..self.next_id
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Send => {
                let id = self.next_id;
                self.next_id += 1;
                let out = route(id);
                // Links::send reserves the weight before the message is queued.
                self.a_budget.fetch_add(out.weight(), Ordering::AcqRel);
                self.weights.insert(id, out.weight());
                match &mut self.conn {
                    Some(c) => {
                        let frame = self.a.send(out);
                        c.to_b.push_back(frame);
                    }
                    None => self.a.disconnected([out]),
                }
            }
            Event::ToB => {
                let Some(frame) = self.conn.as_mut().and_then(|c| c.to_b.pop_front()) else {
                    return;
                };
                match frame {
                    LinkFrame::Numbered { seq, msg, .. } => {
                        if self.b.take(seq) {
                            self.taken.push((self.b_run, id_of(&msg)));
                        }
                    }
                    LinkFrame::Unnumbered(_) => {}
                    other => panic!("A wrote {other:?} after its hello"),
                }
            }
            Event::BAcks => {
                if let Some(c) = &mut self.conn {
                    // As the link does: an ack only when B took something since the last
                    // (the keepalive's unconditional ack is `ack`).
                    if let Some(ack) = self.b.ack_if_new() {
                        c.to_a.push_back(ack);
                    }
                }
            }
            Event::ToA => {
                let Some(frame) = self.conn.as_mut().and_then(|c| c.to_a.pop_front()) else {
                    return;
                };
                match frame {
                    LinkFrame::Ack { seq } => self.a.acked(seq),
                    other => panic!("B wrote {other:?}"),
                }
            }
            Event::Drop => self.conn = None,
            Event::Connect => {
                if self.conn.is_some() {
                    return;
                }
                let (ha, hb) = (hello_of(self.a.hello()), hello_of(self.b.hello()));
                let at_a = self.a.greeted(hb, Vec::new(), &HashSet::new());
                let at_b = self.b.greeted(ha, Vec::new(), &HashSet::new());
                assert!(at_b.first.is_empty() && at_b.given_back.is_empty());
                self.given_back.extend(at_a.given_back.iter().map(id_of));
                self.conn = Some(Connection {
                    to_b: at_a.first.into(),
                    to_a: VecDeque::new(),
                });
            }
            Event::RestartB => {
                self.b_run += 1;
                self.b = LinkState::new(self.b_run, Arc::new(AtomicUsize::new(0)));
                self.conn = None;
            }
            Event::RestartA => {
                let given: HashSet<usize> = self.given_back.iter().copied().collect();
                let acked_or_taken: HashSet<usize> = self.taken.iter().map(|(_, id)| *id).collect();
                for id in self.sent_ids() {
                    if !given.contains(&id) && !acked_or_taken.contains(&id) {
                        self.died_with_a.insert(id);
                    }
                }
                self.a_run += 1;
                self.a_budget = Arc::new(AtomicUsize::new(0));
                self.a = LinkState::new(self.a_run, self.a_budget.clone());
                self.weights.clear();
                self.conn = None;
            }
            Event::NodeDown => {
                self.declared_down = true;
                let back = self.a.give_back_all();
                self.given_back.extend(back.iter().map(id_of));
                // The link task drops the connection it gave back for.
                self.conn = None;
            }
        }
        self.check_budget();
    }

    /// A's budget holds exactly the bytes of the messages it still holds.
    fn check_budget(&self) {
        let held: usize = self
            .a
            .unacked
            .iter()
            .map(|(_, o)| o.weight())
            .chain(self.a.unsent.iter().map(Outgoing::weight))
            .sum();
        assert_eq!(self.a_budget.load(Ordering::Acquire), held);
    }

    /// A connection that stays up until everything is through and acknowledged.
    fn settle(&mut self) {
        self.step(Event::Connect);
        while self.conn.as_ref().is_some_and(|c| !c.to_b.is_empty()) {
            self.step(Event::ToB);
        }
        self.step(Event::BAcks);
        while self.conn.as_ref().is_some_and(|c| !c.to_a.is_empty()) {
            self.step(Event::ToA);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn each_stanza_reaches_the_peer_at_most_once_and_the_rest_is_given_back(
        events in proptest::collection::vec(event(), 0..120)
    ) {
        let mut sim = Sim::new();
        for e in events {
            sim.step(e);
        }
        sim.settle();

        // At most once to the peer, across all of its runs.
        let mut seen = HashSet::new();
        for (_, id) in &sim.taken {
            prop_assert!(seen.insert(*id), "message {} taken twice: {:?}", id, sim.taken);
        }
        // Given back at most once.
        let mut back = HashSet::new();
        for id in &sim.given_back {
            prop_assert!(back.insert(*id), "message {} given back twice", id);
        }
        // In order within one run of the peer (from one run of the sender).
        let mut last: HashMap<u64, usize> = HashMap::new();
        for (run, id) in &sim.taken {
            if let Some(prev) = last.insert(*run, *id) {
                prop_assert!(prev < *id, "run {} took {} after {}", run, id, prev);
            }
        }
        // Nothing is lost: every message A sent (and did not die with) reached the peer or
        // came back to be routed anew, and A holds nothing once the last connection is done.
        for id in sim.sent_ids() {
            prop_assert!(
                seen.contains(&id) || back.contains(&id) || sim.died_with_a.contains(&id),
                "message {} neither taken nor given back", id
            );
        }
        prop_assert_eq!(sim.a.held(), 0);
        prop_assert_eq!(sim.a_budget.load(Ordering::Acquire), 0);
        // Only a peer that died (or was declared down) has a message both taken and given
        // back: the one run that took it never acknowledged it.
        if !sim.declared_down {
            for (run, id) in &sim.taken {
                if back.contains(id) {
                    prop_assert!(*run != sim.b_run, "the live run took {} and it came back too", id);
                }
            }
        }
    }
}

#[test]
fn a_new_connection_resends_only_what_the_peer_did_not_take() {
    let budget = Arc::new(AtomicUsize::new(0));
    let mut a = LinkState::new(1, budget.clone());
    let mut b = LinkState::new(2, Arc::new(AtomicUsize::new(0)));
    a.greeted(hello_of(b.hello()), Vec::new(), &HashSet::new());
    b.greeted(hello_of(a.hello()), Vec::new(), &HashSet::new());
    for id in 0..3 {
        let mut out = route(id);
        // Stamped by the link with the sender's applied index; kept for a resend.
        out.after = 10 + id as u64;
        budget.fetch_add(out.weight(), Ordering::AcqRel);
        let LinkFrame::Numbered { seq, .. } = a.send(out) else {
            panic!("a stanza goes numbered")
        };
        if id < 2 {
            assert!(b.take(seq));
        }
    }
    // The connection fails before B's ack: the next hello says B took 2.
    let again = a.greeted(hello_of(b.hello()), Vec::new(), &HashSet::new());
    assert_eq!(again.resent, 1);
    assert!(again.given_back.is_empty());
    assert!(matches!(
        &again.first[..],
        [LinkFrame::Numbered {
            seq: 3,
            after: 12,
            ..
        }]
    ));
    assert_eq!(a.held(), 1);
}

#[test]
fn a_new_run_of_the_peer_gets_back_nothing_the_old_one_took() {
    let budget = Arc::new(AtomicUsize::new(0));
    let mut a = LinkState::new(1, budget.clone());
    a.greeted(
        Hello {
            incarnation: 7,
            from: 0,
            took: 0,
        },
        Vec::new(),
        &HashSet::new(),
    );
    let out = route(0);
    budget.fetch_add(out.weight(), Ordering::AcqRel);
    a.send(out);
    let next = a.greeted(
        Hello {
            incarnation: 8,
            from: 0,
            took: 0,
        },
        Vec::new(),
        &HashSet::new(),
    );
    assert!(next.first.is_empty());
    assert_eq!(next.given_back.len(), 1);
    assert_eq!(budget.load(Ordering::Acquire), 0);
}

#[test]
fn presence_of_a_stream_that_ended_is_not_sent_late() {
    let budget = Arc::new(AtomicUsize::new(0));
    let mut a = LinkState::new(1, budget.clone());
    let presence = Outgoing::carrying(
        PeerMessage::Route {
            xml: "<presence from='a@d/r'/>".into(),
        },
        Some("a@d/r"),
    );
    budget.fetch_add(presence.weight(), Ordering::AcqRel);
    a.disconnected([presence]);
    let hello = Hello {
        incarnation: 7,
        from: 0,
        took: 0,
    };
    let live: HashSet<String> = HashSet::new();
    let first = a.greeted(hello, Vec::new(), &live);
    assert!(first.first.is_empty());
    assert_eq!(a.held(), 0);
    assert_eq!(budget.load(Ordering::Acquire), 0);
}

#[test]
fn resource_updates_are_not_kept_for_the_next_connection() {
    let budget = Arc::new(AtomicUsize::new(0));
    let mut a = LinkState::new(1, budget.clone());
    let gone = Outgoing::new(PeerMessage::ResourceGone {
        full_jid: "a@d/r".into(),
        session: "s".into(),
    });
    budget.fetch_add(gone.weight(), Ordering::AcqRel);
    a.disconnected([gone]);
    assert_eq!(a.held(), 0);
    assert_eq!(budget.load(Ordering::Acquire), 0);
}

#[test]
fn an_ack_goes_out_once_for_what_was_taken() {
    let mut a = LinkState::new(1, Arc::new(AtomicUsize::new(0)));
    let mut b = LinkState::new(2, Arc::new(AtomicUsize::new(0)));
    a.greeted(hello_of(b.hello()), Vec::new(), &HashSet::new());
    b.greeted(hello_of(a.hello()), Vec::new(), &HashSet::new());
    assert!(b.ack_if_new().is_none(), "nothing taken yet");
    let LinkFrame::Numbered { seq, .. } = a.send(route(0)) else {
        panic!("a stanza goes numbered")
    };
    assert!(b.take(seq));
    assert!(matches!(b.ack_if_new(), Some(LinkFrame::Ack { seq: 1 })));
    assert!(b.ack_if_new().is_none(), "already told");
    assert!(
        matches!(b.ack(), LinkFrame::Ack { seq: 1 }),
        "a keepalive always goes"
    );
    // A new run of A numbers from 1 again; B's hello to it says what B took.
    let mut a2 = LinkState::new(3, Arc::new(AtomicUsize::new(0)));
    b.greeted(hello_of(a2.hello()), Vec::new(), &HashSet::new());
    a2.greeted(hello_of(b.hello()), Vec::new(), &HashSet::new());
    assert!(b.ack_if_new().is_none());
}
