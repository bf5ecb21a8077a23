//! One node: group commit, events, dedup through Raft, snapshots and reopening.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chorus_raft::{Command, CommandResult, RaftNode, Request, Route, StateEvent, PROTOCOL_VERSION};
use common::{bind, create_user, dump, eventually, init_tracing, test_config};

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
    assert_eq!(node.state().users().len(), 1000);
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
    assert_eq!(node.state().route("al@x/a"), Some(new.clone()));

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
    assert!(node.state().routes_of("al@x").is_empty());
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
    let before = dump(&node.state());
    let status = node.status();
    assert!(status.last_log_index.unwrap() > snap);
    node.shutdown().await.unwrap();
    drop(node);

    let node = RaftNode::start(cfg).await.unwrap();
    let st = node.status();
    assert_eq!(st.snapshot_index, Some(snap));
    assert!(st.first_log_index > 0, "log stays purged: {st:?}");
    assert_eq!(dump(&node.state()), before);
    assert!(node.state().routes_on_node(2).is_empty());

    // A restarted node's proposals are new requests, not retries of the old ones.
    assert_eq!(
        node.propose(create_user("after@x")).await.unwrap(),
        CommandResult::Done
    );
    assert!(node.state().user("after@x").is_some());
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
    assert_eq!(node.state().setting("k"), None);
    node.shutdown().await.unwrap();
}

#[test]
fn node_and_reader_can_be_shared_across_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<RaftNode>();
    shared::<chorus_raft::StateReader>();
    shared::<chorus_raft::RaftError>();
}
