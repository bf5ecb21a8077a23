//! The Raft network client (openraft's `RaftNetwork`) against a peer that is slow to take
//! a new connection.

mod common;

use std::time::Duration;

use chorus_raft::network::Network;
use chorus_raft::RaftNode;
use common::{init_tracing, test_config};
use openraft::error::RPCError;
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, Vote};
use tokio::net::{TcpListener, TcpStream};

/// How long the proxy holds a new connection before it passes anything on: within the
/// client's own bound on a connection attempt (`config::CONNECT_TIMEOUT`, 2 s).
const HOLD: Duration = Duration::from_secs(1);
/// openraft's bound on each call (a heartbeat interval); our client gives the call three
/// quarters of it, far less than `HOLD`.
const RPC_TTL: Duration = Duration::from_millis(200);

/// A TCP proxy to `target` that waits `HOLD` before it connects a new client through.
async fn slow_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(HOLD).await;
                if let Ok(mut upstream) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    addr
}

/// Each call runs out of time while the handshake waits on the slow peer; the attempt goes
/// on after the call and a later call uses its connection. (Before, each call dropped its
/// own attempt at its deadline, so the peer was never reached: a loaded follower that
/// needed longer than a heartbeat for a TLS handshake was lost to its leader.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_takes_longer_than_one_call_is_made_and_used() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = RaftNode::start(test_config(dir.path(), 7)).await.unwrap();
    let proxy = slow_proxy(node.listen_addr()).await;
    let mut network = Network::new(1, common::identity(), Duration::from_millis(100));
    let mut client = network
        .new_client(7, &BasicNode::new(proxy.to_string()))
        .await;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ran_out = 0;
    loop {
        let vote = VoteRequest::new(Vote::new(1, 1), None);
        match client.vote(vote, RPCOption::new(RPC_TTL)).await {
            Ok(_) | Err(RPCError::RemoteError(_)) => break,
            Err(e) => {
                ran_out += 1;
                assert!(
                    tokio::time::Instant::now() < give_up,
                    "never reached the node through the slow proxy: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert!(
        ran_out > 0,
        "the first call cannot have finished before HOLD"
    );
    node.shutdown().await.unwrap();
}
