//! The router of one in-process node, driven directly: orderings that real clients only
//! hit by chance under load (see docs/chaos.md).

use std::sync::Arc;

use actix::prelude::*;
use chorus::bus::{Deliver, DeliverBatch, GetStats, Kick, Register, SessionHandle};
use chorus::cluster::Cluster;
use chorus::config::Settings;
use chorus::node::wiring::start_delivery;
use chorus::xmpp::error::StreamErrorKind;
use chorus_raft::{Command, RaftConfig, RaftNode, Route, StartMode};
use tokio::sync::mpsc;

/// A stand-in for a client stream's session actor: it reports the kicks it gets.
struct FakeSession {
    kicks: mpsc::UnboundedSender<StreamErrorKind>,
}

impl Actor for FakeSession {
    type Context = Context<Self>;
}

impl Handler<Deliver> for FakeSession {
    type Result = ();
    fn handle(&mut self, _: Deliver, _: &mut Context<Self>) {}
}

impl Handler<DeliverBatch> for FakeSession {
    type Result = bool;
    fn handle(&mut self, _: DeliverBatch, _: &mut Context<Self>) -> bool {
        true
    }
}

impl Handler<Kick> for FakeSession {
    type Result = ();
    fn handle(&mut self, kick: Kick, _: &mut Context<Self>) {
        let _ = self.kicks.send(kick.condition);
    }
}

/// Found by the chaos suite: a bind elsewhere that replaced a route after its bind was
/// applied but before its session registered with the router found no session to end,
/// and the stream lived on without a route (two live streams of one full JID). The router
/// now checks the route when a session registers.
#[actix_rt::test]
async fn a_session_whose_route_was_replaced_before_it_registered_is_ended() {
    let dir = tempfile::tempdir().unwrap();
    let raft = RaftNode::start_with(
        RaftConfig {
            node_id: 1,
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            heartbeat_ms: 50,
            election_min_ms: 150,
            election_max_ms: 300,
            ..RaftConfig::default()
        },
        StartMode::InitIfFresh,
    )
    .await
    .unwrap();
    let raft = Arc::new(raft);
    let cluster = Cluster::new(raft.clone(), Arc::new(Settings::default()));
    let router = start_delivery(&cluster, "localhost", 100).router;

    let full_jid = "ann@localhost/phone";
    for session in ["first", "second"] {
        raft.propose(Command::BindResource {
            full_jid: full_jid.into(),
            route: Route {
                node: 1,
                session: session.into(),
            },
        })
        .await
        .unwrap();
    }
    // The router sees the second bind's event before the first session registers: the
    // order the race produced. (The first bind, a new route, makes no event.)
    loop {
        let stats = router.send(GetStats).await.unwrap();
        if stats.state_events >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let (kicks, mut kicked) = mpsc::unbounded_channel();
    let session = FakeSession { kicks }.start();
    router
        .send(Register(SessionHandle {
            full_jid: full_jid.into(),
            session_id: "first".into(),
            deliver: session.clone().recipient(),
            kick: session.clone().recipient(),
            batch: session.recipient(),
        }))
        .await
        .unwrap();
    let kick = tokio::time::timeout(std::time::Duration::from_secs(30), kicked.recv())
        .await
        .expect("the replaced session was never ended");
    assert_eq!(kick, Some(StreamErrorKind::Conflict));
}
