//! The RocksDB log store and state machine: openraft's own storage suite, and the state
//! machine checked against the in-memory reference.

mod common;

use std::io::Cursor;

use chorus_raft::machine::{apply_request, MemState};
use chorus_raft::storage::{LogStore, StateMachine, Storage};
use chorus_raft::{
    Command, Entry, Request, Route, StateEvent, StateReader, TypeConfig, PROTOCOL_VERSION,
};
use common::{bind, create_user, record};
use openraft::storage::RaftStateMachine;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};
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

async fn open() -> Opened {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open_async(dir.path()).await.unwrap();
    let (tx, events) = broadcast::channel(4096);
    let sm = storage.state_machine(tx).await.unwrap();
    Opened {
        reader: storage.reader(),
        _dir: dir,
        sm,
        events,
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
        reader.users(),
        model.users.keys().cloned().collect::<Vec<_>>()
    );
    for (u, r) in &model.users {
        assert_eq!(reader.user(u).as_ref(), Some(r));
    }
    let routes: Vec<(String, Route)> = model
        .routes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(reader.routes(), routes);
    for node in 0..4 {
        let want: Vec<_> = routes
            .iter()
            .filter(|(_, r)| r.node == node)
            .cloned()
            .collect();
        assert_eq!(reader.routes_on_node(node), want, "routes on node {node}");
    }
    for bare in BARE {
        let want: Vec<_> = routes
            .iter()
            .filter(|(k, _)| k.split('/').next() == Some(bare))
            .cloned()
            .collect();
        assert_eq!(reader.routes_of(bare), want, "routes of {bare}");
    }
    let settings: Vec<_> = model
        .settings
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(reader.settings(), settings);
}

const BARE: [&str; 4] = ["al@x", "al@xy", "al@x.y", "bo@x"];

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
    match rng.next(9) {
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
    for _round in 0..150 {
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
            want_responses.push(resp);
            want_events.append(&mut ev);
            entries.push(entry(index, req));
        }
        let got = o.sm.apply(entries).await.unwrap();
        assert_eq!(got, want_responses);
        assert_eq!(drain(&mut o.events), want_events);
        assert_same_state(&o.reader, &model);
    }
    let (applied, _) = o.sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(index));
    assert_eq!(o.reader.last_applied(), Some(index));
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
    assert!(o.reader.users().is_empty());
    assert_eq!(o.reader.last_applied(), None);
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
    assert_eq!(follower.reader.routes_on_node(1).len(), 1);
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
    assert!(follower.reader.user("new@x").is_none());
}
