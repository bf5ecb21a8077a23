//! The RocksDB log store and state machine: openraft's own storage suite, and the state
//! machine checked against the in-memory reference.

mod common;

use std::io::Cursor;

use chorus_raft::codec;
use chorus_raft::machine::{apply_request, ClientRecord, MemState};
use chorus_raft::storage::{keys, LogStore, StateMachine, Storage};
use chorus_raft::{
    Command, CommandResult, Entry, QueueMeta, Request, Route, StateEvent, StateReader, TypeConfig,
    UserRecord, PROTOCOL_VERSION,
};
use common::{bind, create_user, data_write, push, put_data, record, remove};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;
use tokio::sync::broadcast;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::open_async(dir.path()).await.expect("open storage");
        let (events, _) = broadcast::channel(16);
        let sm = storage.state_machine(events).await.expect("state machine");
        Ok((dir, storage.log_store(), sm))
    }
}

// Not #[tokio::test]: the suite makes a runtime per case.
#[test]
fn rocksdb_storage_passes_the_openraft_suite() {
    common::init_tracing();
    Suite::test_all(RocksBuilder).unwrap();
}

fn entry(index: u64, req: Request) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(req),
    }
}

struct Opened {
    _dir: TempDir,
    sm: StateMachine,
    reader: StateReader,
    events: broadcast::Receiver<StateEvent>,
}

/// Kinds the tests' storage keeps in memory (`has_data`); "vcard" is read from RocksDB.
const MEMORY_KINDS: [&str; 2] = ["r", "roster"];
/// Kinds whose whole data the tests' storage caches (`DataCache`); "r" is not cached.
const CACHED_KINDS: [&str; 2] = ["roster", "vcard"];

async fn open_in(dir: &std::path::Path) -> Storage {
    Storage::open_async(dir).await.unwrap().keep_in_memory(
        MEMORY_KINDS.map(String::from),
        CACHED_KINDS.map(String::from),
        1 << 20,
    )
}

async fn open() -> Opened {
    open_at(tempfile::tempdir().unwrap()).await
}

async fn open_at(dir: TempDir) -> Opened {
    let storage = open_in(dir.path()).await;
    let (tx, events) = broadcast::channel(4096);
    let sm = storage.state_machine(tx).await.unwrap();
    Opened {
        reader: storage.reader(),
        _dir: dir,
        sm,
        events,
    }
}

impl Opened {
    /// The same database closed and opened again, as a node that restarts.
    async fn reopened(self) -> Opened {
        let Opened {
            _dir: dir,
            sm,
            reader,
            events,
        } = self;
        drop((sm, reader, events));
        open_at(dir).await
    }
}

fn drain(rx: &mut broadcast::Receiver<StateEvent>) -> Vec<StateEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn assert_same_state(reader: &StateReader, model: &MemState) {
    assert_eq!(
        reader.users().unwrap(),
        model.users.keys().cloned().collect::<Vec<_>>()
    );
    for (u, r) in &model.users {
        assert_eq!(reader.user(u).unwrap().as_ref(), Some(r));
    }
    let routes: Vec<(String, Route)> = model
        .routes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(reader.routes().unwrap(), routes);
    for node in 0..4 {
        let want: Vec<_> = routes
            .iter()
            .filter(|(_, r)| r.node == node)
            .cloned()
            .collect();
        assert_eq!(
            reader.routes_on_node(node).unwrap(),
            want,
            "routes on node {node}"
        );
    }
    for bare in BARE {
        let want: Vec<_> = routes
            .iter()
            .filter(|(k, _)| k.split('/').next() == Some(bare))
            .cloned()
            .collect();
        assert_eq!(reader.routes_of(bare).unwrap(), want, "routes of {bare}");
    }
    let settings: Vec<_> = model
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(reader.settings().unwrap(), settings);

    for user in BARE {
        let kinds: Vec<(String, u64)> = model
            .data_versions
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, k), v)| (k.clone(), *v))
            .collect();
        assert_eq!(reader.data_kinds(user).unwrap(), kinds, "kinds of {user}");
        for kind in KINDS {
            let want: Vec<(String, Vec<u8>)> = model
                .data
                .iter()
                .filter(|((u, k, _), _)| u == user && k == kind)
                .map(|((_, _, key), v)| (key.clone(), v.clone()))
                .collect();
            assert_eq!(
                reader.data_all(user, kind).unwrap(),
                want,
                "data of {user} {kind}"
            );
            let version = model
                .data_versions
                .get(&(user.to_owned(), kind.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(reader.data_version(user, kind).unwrap(), version);
            assert_eq!(
                reader.has_data(user, kind).unwrap(),
                !want.is_empty(),
                "has_data {user} {kind}"
            );
            for key in DATA_KEYS {
                assert_eq!(
                    reader.data(user, kind, key).unwrap(),
                    model
                        .data
                        .get(&(user.to_owned(), kind.to_owned(), key.to_owned()))
                        .cloned()
                );
            }
        }
        let queues: Vec<(String, QueueMeta)> = model
            .queue_metas
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|((_, q), m)| (q.clone(), *m))
            .collect();
        assert_eq!(reader.queues_of(user).unwrap(), queues, "queues of {user}");
        for queue in QUEUES {
            let want: Vec<(u64, Vec<u8>)> = model
                .queue_items
                .iter()
                .filter(|((u, q, _), _)| u == user && q == queue)
                .map(|((_, _, seq), v)| (*seq, v.clone()))
                .collect();
            assert_eq!(reader.queue(user, queue, 0, usize::MAX).unwrap(), want);
            assert_eq!(reader.queue_len(user, queue).unwrap(), want.len() as u64);
            if let Some((first, _)) = want.first() {
                // Paging from the middle starts after the given seq.
                assert_eq!(
                    reader.queue(user, queue, *first, 2).unwrap(),
                    want[1..].iter().take(2).cloned().collect::<Vec<_>>()
                );
            }
        }
    }
}

const BARE: [&str; 4] = ["al@x", "al@xy", "al@x.y", "bo@x"];
/// "r" is a prefix of "roster": their data must stay apart.
const KINDS: [&str; 3] = ["r", "roster", "vcard"];
const DATA_KEYS: [&str; 3] = ["k0", "k1", "k10"];
const QUEUES: [&str; 2] = ["q", "q2"];

/// xorshift: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn random_command(rng: &mut Rng) -> Command {
    let bare = BARE[rng.next(4) as usize];
    let full = format!("{bare}/r{}", rng.next(3));
    let session = format!("s{}", rng.next(3));
    let kind = KINDS[rng.next(3) as usize];
    let queue = QUEUES[rng.next(2) as usize];
    let key = |rng: &mut Rng| DATA_KEYS[rng.next(3) as usize];
    match rng.next(20) {
        9 | 10 => {
            let expect = match rng.next(3) {
                0 => Some(rng.next(4)),
                _ => None,
            };
            let deletes: Vec<&str> = (0..rng.next(3)).map(|_| key(rng)).collect();
            let puts: Vec<(&str, Vec<u8>)> = (0..rng.next(4))
                .map(|_| (key(rng), vec![rng.next(256) as u8; rng.next(3) as usize]))
                .collect();
            let puts: Vec<(&str, &[u8])> = puts.iter().map(|(k, v)| (*k, &v[..])).collect();
            // Now and then a malformed kind, which must be refused the same way by both.
            let kind = if rng.next(20) == 0 { "bad\0kind" } else { kind };
            data_write(bare, kind, rng.next(4) == 0, &deletes, &puts, expect)
        }
        11..=13 => push(bare, queue, &[rng.next(256) as u8], 1 + rng.next(4)),
        14 => {
            let through = if rng.next(3) == 0 {
                u64::MAX
            } else {
                rng.next(40)
            };
            remove(bare, queue, through)
        }
        0 => create_user(bare),
        1 => Command::SetPassword {
            user: bare.into(),
            record: record(rng.next(200) as u8),
        },
        2 => Command::DeleteUser { user: bare.into() },
        3 | 4 => bind(&full, rng.next(4), &session),
        5 => Command::UnbindResource {
            full_jid: full,
            session,
        },
        6 => Command::DropNodeRoutes { node: rng.next(4) },
        7 => Command::SetSetting {
            key: format!("k{}", rng.next(3)),
            value: format!("v{}", rng.next(100)),
        },
        16 => Command::NodeDown { node: rng.next(4) },
        17 => Command::NodeUp { node: rng.next(4) },
        18 => Command::CasSetting {
            key: format!("k{}", rng.next(3)),
            expect: Some(format!("v{}", rng.next(100))).filter(|_| rng.next(2) == 0),
            value: format!("v{}", rng.next(100)),
        },
        19 => Command::RemoveSetting {
            key: format!("k{}", rng.next(3)),
        },
        _ => Command::Noop,
    }
}

#[tokio::test]
async fn rocksdb_state_machine_matches_the_reference_model() {
    let mut o = open().await;
    let mut model = MemState::default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut index = 0;
    let mut serial = 0;
    // Which outcomes the run produced: the comparison means little for one it never hit.
    let mut seen = std::collections::BTreeSet::new();
    let mut partial_queue = false;
    for _round in 0..300 {
        // Several entries per apply call: they must see each other's writes.
        let mut entries = Vec::new();
        let mut want_responses = Vec::new();
        let mut want_events = Vec::new();
        for _ in 0..=rng.next(4) {
            index += 1;
            // Now and then a retry of the previous serial, which must not apply again.
            if serial == 0 || rng.next(8) != 0 {
                serial += 1;
            }
            let req = Request {
                version: PROTOCOL_VERSION,
                client: 5,
                serial,
                commands: (0..=rng.next(5))
                    .map(|_| random_command(&mut rng))
                    .collect(),
            };
            let (resp, mut ev, _) = apply_request(&mut model, &req).unwrap();
            for r in &resp.results {
                seen.insert(match r {
                    CommandResult::QueueRemoved { count: 0 } => "QueueRemoved 0".to_string(),
                    CommandResult::QueueRemoved { .. } => "QueueRemoved".to_string(),
                    other => format!("{other:?}")
                        .split([' ', '{', '('])
                        .next()
                        .unwrap()
                        .to_string(),
                });
            }
            want_responses.push(resp);
            want_events.append(&mut ev);
            entries.push(entry(index, req));
        }
        let got = o.sm.apply(entries).await.unwrap();
        assert_eq!(got, want_responses);
        assert_eq!(drain(&mut o.events), want_events);
        assert_same_state(&o.reader, &model);
        partial_queue |= model
            .queue_metas
            .values()
            .any(|m| m.last_seq > m.len && m.len > 0);
    }
    for outcome in [
        "DataWritten",
        "VersionMismatch",
        "Queued",
        "QueueFull",
        "QueueRemoved",
        "QueueRemoved 0",
        "Invalid",
        "NoSuchUser",
    ] {
        assert!(seen.contains(outcome), "{outcome} never happened: {seen:?}");
    }
    assert!(partial_queue, "no queue ever held items after a removal");
    let (applied, _) = o.sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(index));
    assert_eq!(o.reader.last_applied().unwrap(), Some(index));
}

#[tokio::test]
async fn entry_of_an_unknown_protocol_version_is_an_error_not_a_panic() {
    let mut o = open().await;
    let req = Request {
        version: PROTOCOL_VERSION + 1,
        client: 1,
        serial: 1,
        commands: vec![create_user("al@x")],
    };
    let err = o.sm.apply([entry(1, req)]).await.unwrap_err();
    assert!(err.to_string().contains("protocol version"), "{err}");
    // Nothing of the refused batch was written.
    assert!(o.reader.users().unwrap().is_empty());
    assert_eq!(o.reader.last_applied().unwrap(), None);
}

#[tokio::test]
async fn installed_snapshot_replaces_the_whole_state_machine() {
    let mut leader = open().await;
    let mut follower = open().await;
    let req = |serial, commands| Request {
        version: PROTOCOL_VERSION,
        client: 1,
        serial,
        commands,
    };
    leader
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    bind("al@x/a", 1, "s1"),
                    bind("bo@x/b", 2, "s2"),
                ],
            ),
        )])
        .await
        .unwrap();
    // The follower holds state the snapshot does not have; all of it must go.
    follower
        .sm
        .apply([entry(
            1,
            req(1, vec![create_user("zed@x"), bind("zed@x/z", 1, "sz")]),
        )])
        .await
        .unwrap();

    let snap = leader
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = follower.sm.begin_receiving_snapshot().await.unwrap();
    *data = Cursor::new(snap.snapshot.into_inner());
    follower
        .sm
        .install_snapshot(&snap.meta, data)
        .await
        .unwrap();

    assert_eq!(common::dump(&follower.reader), common::dump(&leader.reader));
    // The node index was rebuilt from the snapshot's routes.
    assert_eq!(follower.reader.routes_on_node(1).unwrap().len(), 1);
    assert!(
        drain(&mut follower.events).is_empty(),
        "no events on snapshot install"
    );
    let current = follower.sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);

    // The dedup table came with the snapshot: the leader's request 1 is a duplicate here.
    let resp = follower
        .sm
        .apply([entry(2, req(1, vec![create_user("new@x")]))])
        .await
        .unwrap();
    assert_eq!(resp[0].results.len(), 3, "remembered response of request 1");
    assert!(follower.reader.user("new@x").unwrap().is_none());
}

/// The kinds kept in memory answer `has_data` like the database after writes, a clear,
/// the account's deletion, a snapshot install over other state, and a restart.
#[tokio::test]
async fn which_users_hold_a_kind_kept_in_memory_follows_every_change() {
    let mut leader = open().await;
    let mut follower = open().await;
    leader
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    create_user("bo@x"),
                    put_data("al@x", "roster", &[("b@x", b"item")]),
                    put_data("bo@x", "roster", &[("a@x", b"item")]),
                    data_write("bo@x", "roster", false, &["a@x"], &[], None),
                ],
            ),
        )])
        .await
        .unwrap();
    assert!(leader.reader.has_data("al@x", "roster").unwrap());
    assert!(
        !leader.reader.has_data("bo@x", "roster").unwrap(),
        "its one item deleted"
    );
    assert!(
        !leader.reader.has_data("al@x", "r").unwrap(),
        "another kind"
    );

    follower
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("zed@x"),
                    put_data("zed@x", "roster", &[("a@x", b"item")]),
                ],
            ),
        )])
        .await
        .unwrap();
    assert!(follower.reader.has_data("zed@x", "roster").unwrap());
    install_from(&mut leader, &mut follower).await;
    assert!(
        !follower.reader.has_data("zed@x", "roster").unwrap(),
        "replaced"
    );
    assert!(
        follower.reader.has_data("al@x", "roster").unwrap(),
        "installed"
    );

    leader
        .sm
        .apply([entry(
            2,
            req(
                2,
                vec![
                    put_data("bo@x", "roster", &[("c@x", b"item")]),
                    data_write("al@x", "roster", true, &[], &[], None),
                ],
            ),
        )])
        .await
        .unwrap();
    assert!(
        !leader.reader.has_data("al@x", "roster").unwrap(),
        "cleared"
    );
    assert!(leader.reader.has_data("bo@x", "roster").unwrap());
    leader
        .sm
        .apply([entry(
            3,
            req(
                3,
                vec![Command::DeleteUser {
                    user: "bo@x".into(),
                }],
            ),
        )])
        .await
        .unwrap();
    assert!(
        !leader.reader.has_data("bo@x", "roster").unwrap(),
        "account deleted"
    );
    leader
        .sm
        .apply([entry(
            4,
            req(
                4,
                vec![
                    create_user("bo@x"),
                    put_data("bo@x", "roster", &[("d@x", b"item")]),
                ],
            ),
        )])
        .await
        .unwrap();

    // Built again from the database when the node starts.
    let restarted = leader.reopened().await;
    let reader = &restarted.reader;
    assert!(reader.has_data("bo@x", "roster").unwrap());
    assert!(!reader.has_data("al@x", "roster").unwrap());
}

/// A cached kind read after a write, a clear, an account's deletion, a snapshot install
/// over other state, and a restart gives what the database holds, never the read before.
#[tokio::test]
async fn a_cached_kind_is_read_anew_after_every_change() {
    let mut leader = open().await;
    let mut follower = open().await;
    let whole = |r: &StateReader, user: &str| {
        (
            r.data_version(user, "roster").unwrap(),
            r.data_all(user, "roster")
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>(),
        )
    };
    leader
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    create_user("bo@x"),
                    put_data("al@x", "roster", &[("b@x", b"item")]),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(whole(&leader.reader, "al@x"), (1, vec!["b@x".to_string()]));
    assert_eq!(whole(&leader.reader, "bo@x"), (0, vec![]));
    let before = leader.reader.data_cache_stats();
    assert_eq!(whole(&leader.reader, "al@x"), (1, vec!["b@x".to_string()]));
    let after = leader.reader.data_cache_stats();
    assert!(after.hits > before.hits, "read again from memory");
    assert_eq!(after.misses, before.misses);

    // Read (and cached) before the install, replaced by it.
    follower
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    put_data("al@x", "roster", &[("zed@x", b"item")]),
                    put_data("al@x", "roster", &[("zod@x", b"item")]),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(
        whole(&follower.reader, "al@x"),
        (2, vec!["zed@x".to_string(), "zod@x".to_string()])
    );
    install_from(&mut leader, &mut follower).await;
    assert_eq!(
        whole(&follower.reader, "al@x"),
        (1, vec!["b@x".to_string()]),
        "the snapshot's, not the cached read"
    );

    leader
        .sm
        .apply([entry(
            2,
            req(
                2,
                vec![
                    put_data("bo@x", "roster", &[("c@x", b"item")]),
                    data_write("al@x", "roster", true, &[], &[], None),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(whole(&leader.reader, "al@x"), (2, vec![]), "cleared");
    assert_eq!(whole(&leader.reader, "bo@x"), (1, vec!["c@x".to_string()]));
    leader
        .sm
        .apply([entry(
            3,
            req(
                3,
                vec![Command::DeleteUser {
                    user: "bo@x".into(),
                }],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(
        whole(&leader.reader, "bo@x"),
        (0, vec![]),
        "account deleted"
    );
    leader
        .sm
        .apply([entry(
            4,
            req(
                4,
                vec![
                    create_user("bo@x"),
                    put_data("bo@x", "roster", &[("d@x", b"item")]),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(whole(&leader.reader, "bo@x"), (1, vec!["d@x".to_string()]));

    let restarted = leader.reopened().await;
    let reader = &restarted.reader;
    assert_eq!(whole(reader, "bo@x"), (1, vec!["d@x".to_string()]));
    assert_eq!(whole(reader, "al@x"), (2, vec![]));
}

fn req(serial: u64, commands: Vec<Command>) -> Request {
    Request {
        version: PROTOCOL_VERSION,
        client: 1,
        serial,
        commands,
    }
}

async fn install_from(from: &mut Opened, to: &mut Opened) -> SnapshotMeta<u64, BasicNode> {
    let snap = from
        .sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut data = to.sm.begin_receiving_snapshot().await.unwrap();
    *data = Cursor::new(snap.snapshot.into_inner());
    to.sm.install_snapshot(&snap.meta, data).await.unwrap();
    snap.meta
}

#[tokio::test]
async fn reader_keeps_users_kinds_and_queues_apart() {
    let mut o = open().await;
    let resp =
        o.sm.apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    create_user("al@x.y"),
                    create_user("al@xy"),
                    put_data("al@x", "r", &[("k", b"r"), ("k2", b"r2")]),
                    put_data("al@x", "roster", &[("k", b"roster")]),
                    put_data("al@x.y", "r", &[("k", b"al@x.y")]),
                    put_data("al@xy", "r", &[("k", b"al@xy")]),
                    push("al@x", "q", b"q", 10),
                    push("al@x", "q2", b"q2", 10),
                    push("al@x.y", "q", b"al@x.y", 10),
                ],
            ),
        )])
        .await
        .unwrap();
    assert!(resp[0]
        .results
        .iter()
        .all(|r| !matches!(r, CommandResult::Invalid { .. } | CommandResult::NoSuchUser)));
    let r = &o.reader;
    let v = |pairs: &[(&str, &[u8])]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    };
    assert_eq!(
        r.data_all("al@x", "r").unwrap(),
        v(&[("k", b"r"), ("k2", b"r2")])
    );
    assert_eq!(
        r.data_all("al@x", "roster").unwrap(),
        v(&[("k", b"roster")])
    );
    assert_eq!(r.data_all("al@x.y", "r").unwrap(), v(&[("k", b"al@x.y")]));
    assert_eq!(r.data_all("al@x", "ro").unwrap(), v(&[]));
    assert_eq!(r.data("al@x", "r", "k2").unwrap(), Some(b"r2".to_vec()));
    assert_eq!(r.data("al@x", "r", "k3").unwrap(), None);
    assert_eq!(
        r.data_kinds("al@x").unwrap(),
        vec![("r".to_string(), 1), ("roster".to_string(), 1)]
    );
    assert_eq!(
        r.queue("al@x", "q", 0, 10).unwrap(),
        vec![(1, b"q".to_vec())]
    );
    assert_eq!(
        r.queue("al@x", "q2", 0, 10).unwrap(),
        vec![(1, b"q2".to_vec())]
    );
    assert_eq!(r.queue_len("al@x", "q").unwrap(), 1);
    assert_eq!(r.queue_len("al@x", "nope").unwrap(), 0);
    assert_eq!(
        r.queues_of("al@x")
            .unwrap()
            .into_iter()
            .map(|(q, _)| q)
            .collect::<Vec<_>>(),
        vec!["q", "q2"]
    );
    // Names the state machine refuses are never found.
    assert_eq!(r.data_all("al@x", "").unwrap(), v(&[]));
    assert_eq!(r.queue("al@x", "q\0", 0, 10).unwrap(), vec![]);

    // Deleting "al@x" removes exactly its data and queues.
    o.sm.apply([entry(
        2,
        req(
            2,
            vec![Command::DeleteUser {
                user: "al@x".into(),
            }],
        ),
    )])
    .await
    .unwrap();
    assert!(r.data_kinds("al@x").unwrap().is_empty());
    assert!(r.queues_of("al@x").unwrap().is_empty());
    assert_eq!(r.data_version("al@x", "r").unwrap(), 0);
    assert_eq!(r.data_all("al@x.y", "r").unwrap(), v(&[("k", b"al@x.y")]));
    assert_eq!(r.data_all("al@xy", "r").unwrap(), v(&[("k", b"al@xy")]));
    assert_eq!(r.queue_len("al@x.y", "q").unwrap(), 1);
}

#[tokio::test]
async fn snapshot_carries_data_and_queues_and_replaces_the_followers() {
    let mut leader = open().await;
    let mut follower = open().await;
    let mut commands = vec![
        create_user("al@x"),
        create_user("bo@x"),
        put_data("al@x", "roster", &[("c@x", b"<item/>"), ("d@x", b"\0\xff")]),
        put_data("al@x", "roster", &[("e@x", b"3")]),
        put_data("bo@x", "vcard", &[]),
    ];
    for i in 0..5u8 {
        commands.push(push("al@x", "offline", &[i], 100));
    }
    // The snapshot must keep where the queue starts and where its seqs continue.
    commands.push(remove("al@x", "offline", 2));
    leader.sm.apply([entry(1, req(1, commands))]).await.unwrap();
    // State the snapshot does not have: all of it must go.
    follower
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    put_data("al@x", "roster", &[("zed@x", b"stale")]),
                    put_data("al@x", "private", &[("p", b"stale")]),
                    push("al@x", "offline", b"stale", 100),
                    push("al@x", "other", b"stale", 100),
                ],
            ),
        )])
        .await
        .unwrap();
    drain(&mut follower.events);

    install_from(&mut leader, &mut follower).await;
    let got = common::dump(&follower.reader);
    assert_eq!(got, common::dump(&leader.reader));
    assert_eq!(
        got.data,
        vec![
            (
                "al@x".into(),
                "roster".into(),
                2,
                vec![
                    ("c@x".into(), b"<item/>".to_vec()),
                    ("d@x".into(), b"\0\xff".to_vec()),
                    ("e@x".into(), b"3".to_vec()),
                ]
            ),
            ("bo@x".into(), "vcard".into(), 1, vec![]),
        ]
    );
    assert_eq!(
        follower.reader.queue("al@x", "offline", 0, 100).unwrap(),
        vec![(3, vec![2]), (4, vec![3]), (5, vec![4])]
    );
    assert_eq!(follower.reader.queues_of("al@x").unwrap().len(), 1);
    assert!(
        drain(&mut follower.events).is_empty(),
        "no events on snapshot install"
    );

    // Versions and seqs go on from the leader's, on the follower.
    let resp = follower
        .sm
        .apply([entry(
            2,
            req(
                2,
                vec![
                    put_data("al@x", "roster", &[]),
                    push("al@x", "offline", b"next", 100),
                    remove("al@x", "offline", 4),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(
        resp[0].results,
        vec![
            CommandResult::DataWritten { version: 3 },
            CommandResult::Queued { seq: 6 },
            CommandResult::QueueRemoved { count: 2 },
        ]
    );
}

/// The snapshot payload as a node of protocol version 1 wrote it (before data and queues).
#[derive(Serialize, Deserialize)]
struct SnapshotPayloadV1 {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    users: Vec<(String, UserRecord)>,
    routes: Vec<(String, Route)>,
    settings: Vec<(String, String)>,
    clients: Vec<(u64, ClientRecord)>,
}

/// `codec::encode` with the format version header of a version-1 node: the body encoding
/// did not change between the versions.
fn encode_v1<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = codec::encode(value).unwrap();
    bytes[..2].copy_from_slice(&1u16.to_be_bytes());
    bytes
}

#[tokio::test]
async fn snapshot_from_a_version_1_node_still_installs() {
    let mut follower = open().await;
    follower
        .sm
        .apply([entry(
            1,
            req(
                1,
                vec![
                    create_user("al@x"),
                    put_data("al@x", "roster", &[("zed@x", b"stale")]),
                    push("al@x", "offline", b"stale", 100),
                ],
            ),
        )])
        .await
        .unwrap();

    let last = LogId::new(CommittedLeaderId::new(3, 0), 7);
    let payload = SnapshotPayloadV1 {
        last_applied: Some(last),
        membership: StoredMembership::default(),
        users: vec![("al@x".into(), record(9)), ("bo@x".into(), record(8))],
        routes: vec![(
            "bo@x/r".into(),
            Route {
                node: 2,
                session: "s".into(),
            },
        )],
        settings: vec![("motd".into(), "hi".into())],
        clients: vec![],
    };
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::default(),
        snapshot_id: "v1".into(),
    };
    let mut data = follower.sm.begin_receiving_snapshot().await.unwrap();
    *data = Cursor::new(encode_v1(&payload));
    follower.sm.install_snapshot(&meta, data).await.unwrap();

    let got = common::dump(&follower.reader);
    assert_eq!(got.users, payload.users);
    assert_eq!(got.routes, payload.routes);
    assert_eq!(got.settings, payload.settings);
    assert!(got.data.is_empty() && got.queues.is_empty(), "{got:?}");
    assert_eq!(follower.reader.routes_on_node(2).unwrap().len(), 1);
    assert_eq!(follower.sm.applied_state().await.unwrap().0, Some(last));

    // The installed state takes the new commands.
    let resp = follower
        .sm
        .apply([entry(
            8,
            req(
                2,
                vec![
                    put_data("al@x", "roster", &[("a", b"1")]),
                    push("al@x", "offline", b"m", 10),
                ],
            ),
        )])
        .await
        .unwrap();
    assert_eq!(
        resp[0].results,
        vec![
            CommandResult::DataWritten { version: 1 },
            CommandResult::Queued { seq: 1 }
        ]
    );
}

/// The column families of a data directory made before per-user data and queues.
const VERSION_1_CFS: [&str; 8] = [
    "log",
    "raft_meta",
    "sm_users",
    "sm_routes",
    "sm_node_routes",
    "sm_settings",
    "sm_meta",
    "snapshot",
];

#[tokio::test]
async fn data_dir_from_before_data_and_queues_opens_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let last = LogId::new(CommittedLeaderId::new(2, 0), 41);
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&opts, dir.path(), VERSION_1_CFS).unwrap();
        let users = db.cf_handle("sm_users").unwrap();
        db.put_cf(users, "al@x", encode_v1(&record(3))).unwrap();
        let meta = db.cf_handle("sm_meta").unwrap();
        db.put_cf(meta, "last_applied", encode_v1(&last)).unwrap();
        db.flush_wal(true).unwrap();
    }
    let before = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert!(!before.iter().any(|c| c == keys::CF_DATA), "{before:?}");

    {
        let storage = Storage::open_async(dir.path()).await.unwrap();
        let (tx, _rx) = broadcast::channel(16);
        let mut sm = storage.state_machine(tx).await.unwrap();
        let reader = storage.reader();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(last));
        assert_eq!(reader.user("al@x").unwrap(), Some(record(3)));
        assert_eq!(reader.data_version("al@x", "roster").unwrap(), 0);
        assert_eq!(reader.queue_len("al@x", "offline").unwrap(), 0);

        let resp = sm
            .apply([entry(
                42,
                req(
                    1,
                    vec![
                        put_data("al@x", "roster", &[("b@x", b"item")]),
                        push("al@x", "offline", b"m", 10),
                    ],
                ),
            )])
            .await
            .unwrap();
        assert_eq!(
            resp[0].results,
            vec![
                CommandResult::DataWritten { version: 1 },
                CommandResult::Queued { seq: 1 }
            ]
        );
        assert_eq!(
            reader.data("al@x", "roster", "b@x").unwrap(),
            Some(b"item".to_vec())
        );
        // A snapshot of the upgraded state builds and reads back.
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(42));
    }
    let after = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    for name in keys::ALL_CFS {
        assert!(
            after.iter().any(|c| c == name),
            "{name} missing from {after:?}"
        );
    }
}
