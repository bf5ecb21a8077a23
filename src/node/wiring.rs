//! Where a node's delivery parts are put together: the router, the delivery hooks the
//! features register with it, and the spawner of user actors, each given what the others
//! need to reach it. Nothing below `node` names more than one of them.

use std::sync::Arc;

use actix::prelude::*;

use crate::bus::hooks::Hooks;
use crate::bus::RouterPort;
use crate::cluster::Cluster;
use crate::features;
use crate::im::offline::{self, OfflineHook};
use crate::router::Router;
use crate::user;

/// The running router, and what features get to reach it.
pub struct Delivery {
    pub router: Addr<Router>,
    pub port: RouterPort,
    pub hooks: Hooks,
}

/// Starts the node's offline writer, the router with every feature's hooks, and gives the
/// router its user-actor spawner. Must run inside the actix system.
pub fn start_delivery(cluster: &Arc<Cluster>, domain: &str, offline_messages: u64) -> Delivery {
    // The router's address exists before the router does: the hooks and user actors it
    // is built from send to it.
    let ctx = Context::<Router>::new();
    let addr = ctx.address();
    let port = Router::port(&addr);
    let raft = cluster.raft.clone();
    let writer = offline::spawn_writer(
        raft.clone(),
        port.route(),
        domain.to_string(),
        offline_messages,
        cluster.settings.limits.offline_bytes,
    );
    let hooks = features::delivery_hooks(
        raft.state(),
        OfflineHook {
            writer,
            router: port.route(),
        },
    );
    let spawn = user::spawner(
        cluster.clone(),
        port.route(),
        addr.clone().recipient(),
        hooks.clone(),
    );
    let router = Router::start_in(
        ctx,
        Router::new(cluster.clone(), domain.to_string(), hooks.clone(), spawn),
    );
    Delivery {
        router,
        port,
        hooks,
    }
}
