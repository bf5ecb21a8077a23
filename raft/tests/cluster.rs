//! Three in-process nodes over the real TCP transport.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_raft::network::frame::{read_frame, write_frame};
use chorus_raft::network::{
    Channel, ClusterIdentity, ConnectError, Hello, HelloReply, PeerConnection, ANY_NODE,
};
use chorus_raft::{codec, Command, RaftError, RaftNode, StartMode, PROTOCOL_VERSION};
use common::{bind, create_user, dump, eventually, identity, init_tracing, test_config};
use openraft::BasicNode;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::TryRecvError;

const WAIT: Duration = Duration::from_secs(20);

async fn wait_applied(node: &RaftNode, index: u64) {
    node.raft()
        .wait(Some(WAIT))
        .applied_index_at_least(Some(index), "replica caught up")
        .await
        .unwrap_or_else(|e| panic!("node {} did not apply {index}: {e}", node.node_id()));
}

/// Node 1 forms a cluster of itself; nodes 2 and 3 wait to be added.
async fn start_three(dirs: &[tempfile::TempDir]) -> (RaftNode, RaftNode, RaftNode) {
    let n1 = RaftNode::start(test_config(dirs[0].path(), 1))
        .await
        .unwrap();
    let join =
        |i: usize| RaftNode::start_with(test_config(dirs[i].path(), i as u64 + 1), StartMode::Join);
    (n1, join(1).await.unwrap(), join(2).await.unwrap())
}

fn basic(node: &RaftNode) -> BasicNode {
    BasicNode::new(node.listen_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_added_after_the_log_was_purged_catches_up_by_snapshot() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (n1, n2, n3) = start_three(&dirs).await;

    // Node 2 joins early and follows by log replication.
    n1.raft().add_learner(2, basic(&n2), true).await.unwrap();
    for i in 0..40 {
        n1.propose(create_user(&format!("u{i}@x"))).await.unwrap();
        n1.propose(bind(&format!("u{i}@x/r"), 1 + i % 3, &format!("s{i}")))
            .await
            .unwrap();
    }
    n1.propose(Command::SetSetting {
        key: "motd".into(),
        value: "hello".into(),
    })
    .await
    .unwrap();
    n1.snapshot_now().await.unwrap();
    eventually("leader purged its log", WAIT, || {
        n1.status().first_log_index > 1
    })
    .await;
    let purged_below = n1.status().first_log_index;

    // Node 3 joins after the purge: the entries it lacks exist only in the snapshot.
    let mut n3_events = n3.subscribe();
    let added = n1.raft().add_learner(3, basic(&n3), true).await.unwrap();
    wait_applied(&n3, added.log_id.index).await;
    let st3 = n3.status();
    assert!(
        st3.snapshot_index.is_some(),
        "node 3 installed a snapshot: {st3:?}"
    );
    assert!(
        st3.first_log_index >= purged_below,
        "node 3 never received the purged entries: {st3:?}"
    );
    assert_eq!(
        n3_events.try_recv(),
        Err(TryRecvError::Empty),
        "installing a snapshot emits no events"
    );

    n1.raft()
        .change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    assert_eq!(n1.status().membership, vec![1, 2, 3]);

    // Writes after the membership change reach everyone.
    n1.propose(Command::DropNodeRoutes { node: 2 })
        .await
        .unwrap();
    n1.propose(Command::DeleteUser {
        user: "u1@x".into(),
    })
    .await
    .unwrap();
    let last = n1.status().last_applied.unwrap();
    for n in [&n2, &n3] {
        wait_applied(n, last).await;
        assert_eq!(dump(&n.state()), dump(&n1.state()), "node {}", n.node_id());
        assert_eq!(n.status().membership, vec![1, 2, 3]);
        assert_eq!(n.status().current_leader, Some(1));
    }
    assert!(n3.state().routes_on_node(2).unwrap().is_empty());
    assert_eq!(n3.state().users().unwrap().len(), 39);

    // A follower's proposal is forwarded to the leader and answered like a local one.
    let before = n1.status().last_applied.unwrap();
    assert_eq!(
        n2.propose(create_user("from-follower@x")).await.unwrap(),
        chorus_raft::CommandResult::Done
    );
    assert_eq!(
        n3.propose(create_user("from-follower@x")).await.unwrap(),
        chorus_raft::CommandResult::UserExists
    );
    assert!(n1.status().last_applied.unwrap() > before);
    // A leader-only proposal is never forwarded: a deposed leader's verdict must not be
    // committed later through its successor.
    assert!(matches!(
        n2.propose_as_leader(Command::Noop).await,
        Err(RaftError::NotLeader { leader: Some(1) })
    ));
    assert_eq!(
        n1.propose_as_leader(Command::Noop).await.unwrap(),
        chorus_raft::CommandResult::Done
    );
    // Read your writes: the follower's own replica holds the write when propose returns.
    assert!(n2.state().user("from-follower@x").unwrap().is_some());
    assert!(n3.state().user("from-follower@x").unwrap().is_some());
    // Linearizable reads are the leader's job too.
    n1.ensure_linearizable().await.unwrap();
    assert!(matches!(
        n3.ensure_linearizable().await,
        Err(RaftError::NotLeader { leader: Some(1) })
    ));

    for n in [&n3, &n2, &n1] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_naming_another_node_is_refused() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 5)).await.unwrap();
    let addr = node.listen_addr().to_string();

    let id = identity();
    // A caller that proved the secret is told why it was refused.
    match PeerConnection::connect(&addr, 9, 6, &id, Channel::Raft).await {
        Err(ConnectError::Refused { reason, .. }) => {
            assert!(
                reason.contains("node 5") && reason.contains("node 6"),
                "{reason}"
            )
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("a hello for node 6 was accepted by node 5"),
    }
    let conn = PeerConnection::connect(&addr, 9, 5, &id, Channel::Raft)
        .await
        .unwrap();
    assert_eq!(conn.peer(), 5);
    let conn = PeerConnection::connect(&addr, 9, ANY_NODE, &id, Channel::Raft)
        .await
        .unwrap();
    assert_eq!(
        conn.peer(),
        5,
        "a caller that names no node learns who answered"
    );

    // The wrong secret or another cluster's name is refused, and the refusal names
    // nothing of this node or its cluster: no oracle, no name.
    let wrong = ClusterIdentity::new("test", b"guess", id.tls.clone());
    let other = ClusterIdentity::new("other", b"test secret", id.tls.clone());
    for (who, stranger) in [("wrong secret", &wrong), ("other cluster", &other)] {
        match PeerConnection::connect(&addr, 9, 5, stranger, Channel::Raft).await {
            Err(ConnectError::Refused { reason, .. }) => {
                assert!(reason.contains("cluster.secret"), "{who}: {reason}");
                assert!(
                    !reason.contains("\"test\"") && !reason.contains('5'),
                    "{who}: the refusal says something of the node: {reason}"
                );
            }
            Err(e) => panic!("{who}: expected a refusal, got {e}"),
            Ok(_) => panic!("{who}: let in"),
        }
    }
    // Without TLS the node does not even answer a hello.
    let plain = ClusterIdentity::new("test", b"test secret", None);
    assert!(PeerConnection::connect(&addr, 9, 5, &plain, Channel::Raft)
        .await
        .is_err());

    // On the wire (inside TLS): the hello gets a bare nonce, a bad proof the refusal,
    // then the connection is closed.
    let tls = id.tls.clone().unwrap();
    let wire = || async {
        let tcp = TcpStream::connect(&addr).await.unwrap();
        tls.connect(&addr, tcp).await.unwrap()
    };
    let mut raw = wire().await;
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        from: 9,
        to: 6,
        cluster: "test".into(),
        nonce: vec![0; 16],
        channel: Channel::Raft,
    };
    write_frame(&mut raw, &codec::encode(&hello).unwrap())
        .await
        .unwrap();
    let reply: HelloReply = codec::decode(&read_frame(&mut raw, 1024).await.unwrap()).unwrap();
    assert!(matches!(reply, HelloReply::Challenge { .. }), "{reply:?}");
    let proof = chorus_raft::network::messages::Proof { proof: vec![0; 32] };
    write_frame(&mut raw, &codec::encode(&proof).unwrap())
        .await
        .unwrap();
    let reply: HelloReply = codec::decode(&read_frame(&mut raw, 1024).await.unwrap()).unwrap();
    assert!(matches!(reply, HelloReply::Refused { .. }), "{reply:?}");
    assert!(
        read_frame(&mut raw, 1024).await.is_err(),
        "connection closed after refusal"
    );

    // A protocol version this node does not speak is refused the same way.
    let mut raw = wire().await;
    let hello = Hello {
        protocol: PROTOCOL_VERSION + 1,
        from: 9,
        to: 5,
        cluster: "test".into(),
        nonce: vec![0; 16],
        channel: Channel::Raft,
    };
    write_frame(&mut raw, &codec::encode(&hello).unwrap())
        .await
        .unwrap();
    let reply: HelloReply = codec::decode(&read_frame(&mut raw, 1024).await.unwrap()).unwrap();
    assert!(
        matches!(&reply, HelloReply::Refused { reason }
            if reason.contains(&format!("protocol version {}", PROTOCOL_VERSION + 1))
                && reason.contains(&format!("3..={PROTOCOL_VERSION}"))),
        "{reply:?}"
    );

    // An oversized first frame is not even read.
    let mut raw = wire().await;
    write_frame(&mut raw, &vec![0u8; 4096]).await.unwrap();
    assert!(read_frame(&mut raw, 1024).await.is_err());

    node.shutdown().await.unwrap();
}

/// openraft gives an AppendEntries one heartbeat interval whatever its size. A burst of
/// large commands used to be packed into messages (entries of up to 8 MiB, 64 a message)
/// that no follower could take in time, retried forever: nothing committed and the leader
/// lost its followers. They now go in parts of at most `MAX_APPEND_BYTES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_commands_commits_and_replicates() {
    init_tracing();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (n1, n2, n3) = start_three(&dirs).await;
    let n1 = std::sync::Arc::new(n1);
    n1.raft().add_learner(2, basic(&n2), true).await.unwrap();
    n1.raft().add_learner(3, basic(&n3), true).await.unwrap();
    n1.raft()
        .change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    n1.propose(create_user("big@x")).await.unwrap();
    // 64 commands of 64 KiB at once (offline messages near the stanza limit, say).
    let mut writes = Vec::new();
    for i in 0..64 {
        let n1 = n1.clone();
        writes.push(tokio::spawn(async move {
            n1.propose(common::put_data(
                "big@x",
                "blob",
                &[(&format!("k{i}"), &vec![i as u8; 64 * 1024])],
            ))
            .await
        }));
    }
    for w in writes {
        w.await.unwrap().expect("committed");
    }
    let index = n1.status().last_applied.unwrap();
    wait_applied(&n2, index).await;
    wait_applied(&n3, index).await;
    assert_eq!(n3.state().data_all("big@x", "blob").unwrap().len(), 64);
}
