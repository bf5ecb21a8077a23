//! One node: group commit, events, dedup through Raft, snapshots and reopening.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chorus_raft::{Command, CommandResult, RaftNode, Request, Route, StateEvent, PROTOCOL_VERSION};
use common::{
    bind, create_user, data_write, dump, eventually, init_tracing, push, put_data, remove,
    test_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_node_initialises_a_one_node_cluster_and_leads_it() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 7)).await.unwrap();
    let st = node.status();
    assert_eq!(st.node_id, 7);
    assert_eq!(st.state, "Leader");
    assert_eq!(st.current_leader, Some(7));
    assert_eq!(st.membership, vec![7]);
    assert_ne!(node.listen_addr().port(), 0);
    assert_eq!(
        node.propose(Command::Noop).await.unwrap(),
        CommandResult::Done
    );
    node.ensure_linearizable().await.unwrap();
    node.shutdown().await.unwrap();
    assert!(matches!(
        node.propose(Command::Noop).await,
        Err(chorus_raft::RaftError::ShutDown)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_proposals_share_few_log_entries() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(RaftNode::start(test_config(dir.path(), 1)).await.unwrap());
    let before = node.status();

    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(create_user(&format!("u{i:04}@x"))).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), CommandResult::Done);
    }

    let after = node.status();
    let entries = after.entries_proposed - before.entries_proposed;
    let commands = after.commands_proposed - before.commands_proposed;
    let log_growth = after.last_log_index.unwrap() - before.last_log_index.unwrap();
    assert_eq!(commands, 1000);
    assert!(
        entries < commands / 10,
        "{commands} commands took {entries} entries"
    );
    assert_eq!(log_growth, entries, "one log entry per proposed batch");
    assert_eq!(node.state().users().unwrap().len(), 1000);
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_changes_are_announced_after_they_are_readable() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 1)).await.unwrap();
    let mut events = node.subscribe();
    node.propose(create_user("al@x")).await.unwrap();
    node.propose(bind("al@x/a", 1, "s1")).await.unwrap();
    let r = node.propose(bind("al@x/a", 2, "s2")).await.unwrap();
    let old = Route {
        node: 1,
        session: "s1".into(),
    };
    let new = Route {
        node: 2,
        session: "s2".into(),
    };
    assert_eq!(
        r,
        CommandResult::Bound {
            replaced: Some(old.clone())
        }
    );
    let ev = events.recv().await.unwrap();
    assert_eq!(
        ev,
        StateEvent::RouteReplaced {
            full_jid: "al@x/a".into(),
            old,
            new: new.clone()
        }
    );
    assert_eq!(node.state().route("al@x/a").unwrap(), Some(new.clone()));

    node.propose(Command::DeleteUser {
        user: "al@x".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        StateEvent::RouteRemoved {
            full_jid: "al@x/a".into(),
            route: new
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        StateEvent::UserDeleted {
            user: "al@x".into()
        }
    );
    assert!(node.state().routes_of("al@x").unwrap().is_empty());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_request_through_raft_is_applied_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 1)).await.unwrap();
    let req = Request {
        version: PROTOCOL_VERSION,
        client: 42,
        serial: 1,
        commands: vec![create_user("al@x")],
    };
    let first = node.raft().client_write(req.clone()).await.unwrap();
    let retry = node.raft().client_write(req).await.unwrap();
    assert_eq!(first.data.results, vec![CommandResult::Done]);
    // Applied twice, CreateUser would say UserExists.
    assert_eq!(retry.data, first.data);
    assert!(
        retry.log_id.index > first.log_id.index,
        "the retry is its own entry"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_purges_the_log_and_reopening_restores_identical_state() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), 1);
    let node = RaftNode::start(cfg.clone()).await.unwrap();
    for i in 0..50 {
        node.propose(create_user(&format!("u{i}@x"))).await.unwrap();
        node.propose(bind(&format!("u{i}@x/r"), 1 + i % 3, &format!("s{i}")))
            .await
            .unwrap();
    }
    node.propose(Command::SetSetting {
        key: "motd".into(),
        value: "hi".into(),
    })
    .await
    .unwrap();
    for i in 0..10u8 {
        node.propose(put_data("u1@x", "roster", &[(&format!("c{i}@x"), &[i])]))
            .await
            .unwrap();
        node.propose(push("u1@x", "offline", &[i], 100))
            .await
            .unwrap();
    }
    node.propose(remove("u1@x", "offline", 4)).await.unwrap();
    node.snapshot_now().await.unwrap();
    let snap = node.status().snapshot_index.expect("snapshot built");
    eventually("log purged", Duration::from_secs(10), || {
        node.status().first_log_index > 0
    })
    .await;

    // Entries after the snapshot are only in the log.
    node.propose(Command::DropNodeRoutes { node: 2 })
        .await
        .unwrap();
    node.propose(Command::DeleteUser {
        user: "u0@x".into(),
    })
    .await
    .unwrap();
    node.propose(data_write(
        "u1@x",
        "roster",
        false,
        &["c0@x"],
        &[],
        Some(10),
    ))
    .await
    .unwrap();
    node.propose(push("u1@x", "offline", b"after", 100))
        .await
        .unwrap();
    let before = dump(&node.state());
    assert_eq!(before.data.len(), 1);
    assert_eq!(before.data[0].2, 11, "roster version");
    assert_eq!(before.queues[0].3.len(), 7, "offline items 5..=11");
    let status = node.status();
    assert!(status.last_log_index.unwrap() > snap);
    node.shutdown().await.unwrap();
    drop(node);

    let node = RaftNode::start(cfg).await.unwrap();
    let st = node.status();
    assert_eq!(st.snapshot_index, Some(snap));
    assert!(st.first_log_index > 0, "log stays purged: {st:?}");
    assert_eq!(dump(&node.state()), before);
    assert!(node.state().routes_on_node(2).unwrap().is_empty());

    // A restarted node's proposals are new requests, not retries of the old ones.
    assert_eq!(
        node.propose(create_user("after@x")).await.unwrap(),
        CommandResult::Done
    );
    assert!(node.state().user("after@x").unwrap().is_some());
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_follow_the_configured_threshold() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path(), 1);
    cfg.snapshot_threshold = 20;
    let node = RaftNode::start(cfg).await.unwrap();
    assert_eq!(node.status().snapshot_index, None);
    for i in 0..30 {
        node.propose(create_user(&format!("u{i}@x"))).await.unwrap();
    }
    eventually("automatic snapshot", Duration::from_secs(10), || {
        node.status().snapshot_index.is_some()
    })
    .await;
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_command_is_refused_before_it_is_proposed() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 1)).await.unwrap();
    let before = node.status().commands_proposed;
    let huge = Command::SetSetting {
        key: "k".into(),
        value: "x".repeat(2 * 1024 * 1024),
    };
    assert!(matches!(
        node.propose(huge).await,
        Err(chorus_raft::RaftError::CommandTooLarge { .. })
    ));
    assert_eq!(node.status().commands_proposed, before);
    assert_eq!(node.state().setting("k").unwrap(), None);
    node.shutdown().await.unwrap();
}

#[test]
fn node_and_reader_can_be_shared_across_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<RaftNode>();
    shared::<chorus_raft::StateReader>();
    shared::<chorus_raft::RaftError>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_queue_changes_are_announced_after_they_are_readable() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 1)).await.unwrap();
    node.propose(create_user("al@x")).await.unwrap();
    let mut events = node.subscribe();

    let r = node.propose(put_data("al@x", "vcard", &[])).await.unwrap();
    assert_eq!(r, CommandResult::DataWritten { version: 1 });
    node.propose(put_data("al@x", "vcard", &[("v", b"<vCard/>")]))
        .await
        .unwrap();
    assert_eq!(
        events.recv().await.unwrap(),
        StateEvent::DataChanged {
            user: "al@x".into(),
            kind: "vcard".into(),
            version: 1
        }
    );
    assert_eq!(
        events.recv().await.unwrap(),
        StateEvent::DataChanged {
            user: "al@x".into(),
            kind: "vcard".into(),
            version: 2
        }
    );
    assert_eq!(node.state().data_version("al@x", "vcard").unwrap(), 2);
    assert_eq!(
        node.state().data("al@x", "vcard", "v").unwrap(),
        Some(b"<vCard/>".to_vec())
    );

    // A refused write announces nothing.
    let r = node
        .propose(data_write("al@x", "vcard", true, &[], &[], Some(1)))
        .await
        .unwrap();
    assert_eq!(r, CommandResult::VersionMismatch { current: 2 });

    let r = node
        .propose(push("al@x", "offline", b"m", 10))
        .await
        .unwrap();
    assert_eq!(r, CommandResult::Queued { seq: 1 });
    assert_eq!(
        events.recv().await.unwrap(),
        StateEvent::Queued {
            user: "al@x".into(),
            queue: "offline".into(),
            seq: 1
        }
    );
    assert_eq!(
        node.state().queue("al@x", "offline", 0, 10).unwrap(),
        vec![(1, b"m".to_vec())]
    );
    assert!(events.try_recv().is_err(), "nothing else was announced");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_queued_items_page_back_in_order_and_remove_in_chunks() {
    const ITEMS: u32 = 10_000;
    const PAGE: usize = 500;
    const REMOVE_CHUNK: u64 = 1_000;
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(RaftNode::start(test_config(dir.path(), 1)).await.unwrap());
    node.propose(create_user("al@x")).await.unwrap();
    let before = node.status();

    // Concurrent, so that the proposer packs them into few entries.
    let tasks: Vec<_> = (0..ITEMS)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                let r = node
                    .propose(push("al@x", "offline", &i.to_be_bytes(), u64::from(ITEMS)))
                    .await;
                (i, r)
            })
        })
        .collect();
    // seq_of[value] = the seq its push was answered with.
    let mut seq_of = vec![0u64; ITEMS as usize];
    for t in tasks {
        let (i, r) = t.await.unwrap();
        match r.unwrap() {
            CommandResult::Queued { seq } => seq_of[i as usize] = seq,
            other => panic!("push {i}: {other:?}"),
        }
    }
    let entries = node.status().entries_proposed - before.entries_proposed;
    assert!(
        entries < u64::from(ITEMS) / 100,
        "{ITEMS} pushes took {entries} entries"
    );
    let mut answered = seq_of.clone();
    answered.sort_unstable();
    assert_eq!(
        answered,
        (1..=u64::from(ITEMS)).collect::<Vec<_>>(),
        "each seq answered once"
    );

    let state = node.state();
    assert_eq!(
        state.queue_len("al@x", "offline").unwrap(),
        u64::from(ITEMS)
    );
    // A full queue refuses one more.
    assert_eq!(
        node.propose(push("al@x", "offline", b"x", u64::from(ITEMS)))
            .await
            .unwrap(),
        CommandResult::QueueFull {
            len: u64::from(ITEMS)
        }
    );

    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = state.queue("al@x", "offline", after, PAGE).unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= PAGE);
        for (seq, value) in page {
            assert!(seq > after, "seq {seq} after {after}");
            after = seq;
            read.push((seq, value));
        }
    }
    assert_eq!(read.len(), ITEMS as usize, "none lost, none twice");
    for (seq, value) in &read {
        let i = u32::from_be_bytes(value.as_slice().try_into().unwrap());
        assert_eq!(
            seq_of[i as usize], *seq,
            "value {i} read at the seq its push got"
        );
    }

    let mut removed = 0;
    while removed < u64::from(ITEMS) {
        let through = removed + REMOVE_CHUNK;
        let r = node
            .propose(remove("al@x", "offline", through))
            .await
            .unwrap();
        assert_eq!(
            r,
            CommandResult::QueueRemoved {
                count: REMOVE_CHUNK
            }
        );
        removed = through;
        assert_eq!(
            state.queue_len("al@x", "offline").unwrap(),
            u64::from(ITEMS) - removed
        );
        let next = state.queue("al@x", "offline", 0, 1).unwrap();
        if removed < u64::from(ITEMS) {
            assert_eq!(next[0].0, removed + 1, "oldest remaining item");
        } else {
            assert!(next.is_empty());
        }
    }
    assert_eq!(
        node.propose(push("al@x", "offline", b"next", 1))
            .await
            .unwrap(),
        CommandResult::Queued {
            seq: u64::from(ITEMS) + 1
        },
        "seqs are not reused after the queue empties"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarts_on_a_data_dir_without_the_data_and_queue_column_families() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path(), 1);
    let node = RaftNode::start(cfg.clone()).await.unwrap();
    node.propose(create_user("al@x")).await.unwrap();
    node.propose(bind("al@x/a", 1, "s1")).await.unwrap();
    node.snapshot_now().await.unwrap();
    node.propose(create_user("bo@x")).await.unwrap();
    let before = dump(&node.state());
    node.shutdown().await.unwrap();
    drop(node);

    // What a node of the previous version left: the same database without the new column
    // families.
    let db_dir = dir.path().join("raft");
    {
        let opts = rocksdb::Options::default();
        let cfs = rocksdb::DB::list_cf(&opts, &db_dir).unwrap();
        let mut db = rocksdb::DB::open_cf(&opts, &db_dir, &cfs).unwrap();
        for name in ["sm_data", "sm_data_meta", "sm_queue", "sm_queue_meta"] {
            db.drop_cf(name).unwrap();
        }
    }
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_dir).unwrap();
    assert!(!cfs.iter().any(|c| c == "sm_queue"), "{cfs:?}");

    let node = RaftNode::start(cfg.clone()).await.unwrap();
    assert_eq!(dump(&node.state()), before);
    assert_eq!(
        node.propose(put_data("al@x", "roster", &[("bo@x", b"item")]))
            .await
            .unwrap(),
        CommandResult::DataWritten { version: 1 }
    );
    assert_eq!(
        node.propose(push("bo@x", "offline", b"m", 10))
            .await
            .unwrap(),
        CommandResult::Queued { seq: 1 }
    );
    node.snapshot_now().await.unwrap();
    let after = dump(&node.state());
    node.shutdown().await.unwrap();
    drop(node);

    let node = RaftNode::start(cfg).await.unwrap();
    assert_eq!(dump(&node.state()), after);
    node.shutdown().await.unwrap();
}
