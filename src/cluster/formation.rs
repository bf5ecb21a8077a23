//! Start-up: a node that is already a member just starts; a fresh node looks for peers
//! (seeds and multicast beacons) and either joins the cluster it finds or, with
//! `bootstrap_expect` fresh peers found, lets exactly one of them — the smallest node id —
//! form a cluster of all of them. A node never forms a second cluster beside one it can see.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, Result};
use chorus_raft::{Command, NodeId, PROTOCOL_VERSION};
use openraft::BasicNode;

use super::discovery::Discovery;
use super::protocol::{ClusterRequest, ClusterResponse};
use super::{Cluster, CLUSTER_ID_KEY};

/// A node we heard of: its id, cluster address, and the cluster it belongs to, if any.
#[derive(Clone, Debug)]
struct Candidate {
    id: NodeId,
    addr: String,
    cluster_id: Option<String>,
}

pub struct Plan<'a> {
    pub seeds: Vec<String>,
    pub discovery: Option<&'a Discovery>,
    /// The secret was made up by this node: nobody else can know it, so there is no one
    /// to find.
    pub alone: bool,
}

/// Returns once this node is a member of a cluster.
pub async fn form(cluster: &Cluster, plan: Plan<'_>) -> Result<()> {
    let raft = cluster.raft.raft();
    if raft.is_initialized().await? {
        return Ok(());
    }
    let settings = &cluster.settings.cluster;
    let me = Candidate {
        id: cluster.node_id(),
        addr: cluster.raft.listen_addr().to_string(),
        cluster_id: None,
    };
    if plan.alone && plan.seeds.is_empty() {
        return initialise(cluster, &[me]).await;
    }
    tokio::time::sleep(Duration::from_secs(settings.startup.delay)).await;
    let retry = Duration::from_secs(settings.startup.retry.seconds);
    let mut failed_joins = 0u64;
    let mut waited_for_peers = std::time::Instant::now();
    loop {
        if raft.is_initialized().await? {
            tracing::info!("another node made this one a member");
            return Ok(());
        }
        let (found, refusals) = candidates(cluster, &plan).await;
        if !refusals.is_empty() && found.iter().all(|c| c.cluster_id.is_none()) {
            // A seed that refuses us is a configuration error, not an empty network:
            // forming a cluster of our own beside it would split the deployment.
            return Err(anyhow!("{}", refusals.join("; ")));
        }
        let members: Vec<&Candidate> = found.iter().filter(|c| c.cluster_id.is_some()).collect();
        if !members.is_empty() {
            let mut last_error = String::new();
            for m in &members {
                match join(cluster, &m.addr).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(addr = %m.addr, error = %e, "join attempt failed");
                        last_error = e;
                    }
                }
            }
            failed_joins += 1;
            if failed_joins > settings.startup.retry.count {
                return Err(anyhow!(
                    "could not join the cluster after {failed_joins} attempts: {last_error}"
                ));
            }
            tokio::time::sleep(retry).await;
            continue;
        }
        let mut fresh: Vec<Candidate> = found
            .into_iter()
            .filter(|c| c.cluster_id.is_none())
            .collect();
        fresh.push(me.clone());
        fresh.sort_by_key(|c| c.id);
        fresh.dedup_by_key(|c| c.id);
        if fresh.len() as u64 >= settings.bootstrap_expect {
            if fresh[0].id == me.id {
                // Beyond `cluster.voters`, the others join as learners once the cluster
                // exists (they see its id and ask to join).
                let voters = settings.bootstrap_expect.min(settings.voters).max(1) as usize;
                let chosen: Vec<Candidate> = fresh.into_iter().take(voters).collect();
                return initialise(cluster, &chosen).await;
            }
            // The smallest id forms the cluster and adds us; wait for it.
        } else if waited_for_peers.elapsed() >= retry {
            tracing::info!(
                found = fresh.len(),
                expect = settings.bootstrap_expect,
                "waiting for more fresh nodes before forming a cluster"
            );
            waited_for_peers = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Seeds asked directly, plus beacons heard: every other node we know of.
async fn candidates(cluster: &Cluster, plan: &Plan<'_>) -> (Vec<Candidate>, Vec<String>) {
    let mut out: BTreeMap<NodeId, Candidate> = BTreeMap::new();
    let mut refusals = Vec::new();
    if let Some(d) = plan.discovery {
        // A beacon is a hint: only a node that answers on the authenticated cluster port,
        // as the node the beacon names, is counted (a forged or replayed beacon must not
        // make this node form a cluster with a voter that is not there).
        let heard = d.peers(Duration::from_secs(5));
        let confirmed = futures::future::join_all(heard.into_iter().map(|p| async move {
            let a = p.announcement;
            let answer = cluster
                .call_within(
                    &a.cluster_addr,
                    a.node_id,
                    &ClusterRequest::Info,
                    Duration::from_secs(2),
                )
                .await;
            match answer {
                Ok(ClusterResponse::Info(info)) if info.node_id == a.node_id => Some(Candidate {
                    id: info.node_id,
                    addr: a.cluster_addr,
                    cluster_id: info.cluster_id,
                }),
                other => {
                    tracing::debug!(node = a.node_id, addr = %a.cluster_addr, ?other,
                        "a node heard by beacon did not answer as itself; not counted");
                    None
                }
            }
        }))
        .await;
        for c in confirmed.into_iter().flatten() {
            out.insert(c.id, c);
        }
    }
    for seed in &plan.seeds {
        match cluster
            .call_within(
                seed,
                chorus_raft::network::ANY_NODE,
                &ClusterRequest::Info,
                Duration::from_secs(2),
            )
            .await
        {
            Ok(ClusterResponse::Info(info)) if info.node_id != cluster.node_id() => {
                out.insert(
                    info.node_id,
                    Candidate {
                        id: info.node_id,
                        addr: info.cluster_addr,
                        cluster_id: info.cluster_id,
                    },
                );
            }
            Ok(_) => {}
            Err(e) if e.contains("refused the connection") || e.contains("secret") => {
                refusals.push(format!("seed {seed} refused this node: {e}"))
            }
            Err(e) => tracing::debug!(%seed, error = %e, "seed did not answer"),
        }
    }
    out.remove(&cluster.node_id());
    (out.into_values().collect(), refusals)
}

/// Asks the member at `addr` to add this node; returns once it is a member.
pub async fn join(cluster: &Cluster, addr: &str) -> Result<(), String> {
    let request = ClusterRequest::Join {
        node: cluster.node_id(),
        addr: cluster.raft.listen_addr().to_string(),
        protocol: PROTOCOL_VERSION,
    };
    match cluster
        .call(addr, chorus_raft::network::ANY_NODE, &request)
        .await?
    {
        ClusterResponse::Joined { cluster_id } => {
            tracing::info!(%addr, ?cluster_id, "joined the cluster");
            Ok(())
        }
        ClusterResponse::Refused(e) => Err(e),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

async fn initialise(cluster: &Cluster, members: &[Candidate]) -> Result<()> {
    let map: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|c| (c.id, BasicNode::new(&c.addr)))
        .collect();
    let ids: BTreeSet<NodeId> = map.keys().copied().collect();
    tracing::info!(?ids, "forming a new cluster");
    match cluster.raft.raft().initialize(map).await {
        Ok(()) => {}
        Err(e) => tracing::warn!(error = %e, "not initialising"),
    }
    // The cluster's id, written once: a node that holds another cluster's data is
    // recognised by it.
    let id = format!("{:016x}", rand::random::<u64>());
    for _ in 0..100 {
        match cluster
            .raft
            .propose(Command::CasSetting {
                key: CLUSTER_ID_KEY.into(),
                expect: None,
                value: id.clone(),
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "waiting to record the cluster id");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    Err(anyhow!("the new cluster did not elect a leader"))
}
