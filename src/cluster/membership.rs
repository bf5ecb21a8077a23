//! Membership changes, run on the leader: admitting a joining node (learner first, voter
//! while there are fewer voters than `cluster.voters`), removing a member, and the
//! periodic promotion of learners when voters are missing.

use std::collections::BTreeSet;

use chorus_raft::{node_down_key, Command, NodeId, PROTOCOL_VERSION};
use openraft::{BasicNode, ChangeMembers};

use super::protocol::{ClusterRequest, ClusterResponse};
use super::{Cluster, Stop};

const OLDEST_JOINABLE_PROTOCOL: u16 = 3;

/// Adds `node` as a learner, waits until it has caught up (by snapshot when the log was
/// purged), then makes it a voter if voters are missing.
pub async fn admit(
    cluster: &Cluster,
    node: NodeId,
    addr: &str,
    protocol: u16,
) -> Result<(), String> {
    if !cluster.enabled() {
        return Err(
            "clustering is disabled on this cluster: no node may join until \
                    `chorus cluster enable`"
                .into(),
        );
    }
    if !(OLDEST_JOINABLE_PROTOCOL..=PROTOCOL_VERSION).contains(&protocol) {
        return Err(format!(
            "protocol version {protocol} cannot join: this cluster speaks \
             {OLDEST_JOINABLE_PROTOCOL}..={PROTOCOL_VERSION}"
        ));
    }
    let raft = cluster.raft.raft();
    if let Some(known) = cluster.raft.member_addr(node) {
        if known != addr {
            return Err(format!(
                "node {node} is a member at {known}; remove it first (`chorus cluster remove {node}`) \
                 before it joins from {addr}"
            ));
        }
    }
    let add = raft.add_learner(node, BasicNode::new(addr), true);
    match tokio::time::timeout(cluster.task_timeout(), add).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("adding node {node} as a learner: {e}")),
        Err(_) => {
            // It is a learner already and keeps catching up; the leader promotes it later.
            tracing::warn!(node, timeout = ?cluster.task_timeout(),
                "node has not caught up within cluster.task.timeout; it goes on as a learner");
            return Ok(());
        }
    }
    // A node coming back under its old id must be able to bind again.
    let _ = cluster.raft.propose(Command::NodeUp { node }).await;
    tracing::info!(node, %addr, "node joined as a learner");
    promote(cluster).await;
    Ok(())
}

/// Promotes learners that are not marked down while there are fewer voters than wanted.
pub async fn promote(cluster: &Cluster) {
    let members = cluster.raft.members();
    let voters: BTreeSet<NodeId> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let want = cluster.settings.cluster.voters as usize;
    if voters.len() >= want {
        return;
    }
    let state = cluster.raft.state();
    let candidates: BTreeSet<NodeId> = members
        .iter()
        .filter(|m| {
            !m.voter
                && state
                    .setting(&node_down_key(m.id))
                    .is_ok_and(|s| s.is_none())
        })
        .map(|m| m.id)
        .take(want - voters.len())
        .collect();
    if candidates.is_empty() {
        return;
    }
    match cluster
        .raft
        .raft()
        .change_membership(ChangeMembers::AddVoterIds(candidates.clone()), false)
        .await
    {
        Ok(_) => tracing::info!(?candidates, "learners promoted to voters"),
        Err(e) => tracing::warn!(?candidates, error = %e, "promotion failed; will retry"),
    }
}

/// Takes `node` out of the membership and drops its routes (its users' contacts get
/// unavailable presence).
pub async fn remove(cluster: &Cluster, node: NodeId) -> Result<(), String> {
    let members = cluster.raft.members();
    let Some(member) = members.iter().find(|m| m.id == node) else {
        return Err(format!("node {node} is not a member of this cluster"));
    };
    let voters = members.iter().filter(|m| m.voter).count();
    if member.voter && voters == 1 {
        return Err(format!(
            "node {node} is the only voter; a cluster cannot remove its last voter"
        ));
    }
    let change = if member.voter {
        ChangeMembers::RemoveVoters(BTreeSet::from([node]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([node]))
    };
    cluster
        .raft
        .raft()
        .change_membership(change, false)
        .await
        .map_err(|e| format!("removing node {node}: {e}"))?;
    tracing::info!(node, "node removed from the cluster");
    if node != cluster.node_id() {
        let _ = cluster
            .call_within(
                &member.addr,
                node,
                &ClusterRequest::YouWereRemoved,
                std::time::Duration::from_secs(2),
            )
            .await;
    }
    // Routes of a removed node are as dead as a crashed node's; its down mark goes too.
    let _ = cluster.raft.propose(Command::DropNodeRoutes { node }).await;
    let _ = cluster
        .raft
        .propose(Command::RemoveSetting {
            key: node_down_key(node),
        })
        .await;
    promote(cluster).await;
    Ok(())
}

/// `chorus cluster leave` on this node: clients are told to reconnect elsewhere, routes
/// dropped, membership shrinks; then the node stops (its data wiped).
pub async fn leave(cluster: &Cluster) -> Result<String, String> {
    let me = cluster.node_id();
    let members = cluster.raft.members();
    if members.len() <= 1 {
        return Err("this is the only member; there is no cluster to leave".into());
    }
    cluster.stop_serving("this node is leaving the cluster; reconnect to another node");
    let _ = cluster
        .raft
        .propose(Command::DropNodeRoutes { node: me })
        .await;
    match cluster
        .ask_leader(ClusterRequest::Remove { node: me })
        .await
    {
        ClusterResponse::Removed => {}
        ClusterResponse::Refused(e) => return Err(e),
        other => return Err(format!("unexpected answer {other:?}")),
    }
    cluster.request_stop(Stop::Left);
    Ok(format!("node {me} left the cluster and stops now"))
}

/// `chorus cluster join ADDR` on this node: checks the target, then restarts into it.
pub async fn join_via(cluster: &Cluster, addr: &str, wipe: bool) -> Result<String, JoinRefusal> {
    let info = cluster
        .probe(addr)
        .await
        .map_err(JoinRefusal::Unreachable)?;
    if info.cluster_id.is_some() && info.cluster_id == cluster.cluster_id() {
        return Err(JoinRefusal::Conflict(format!(
            "this node is already a member of the cluster of {addr}"
        )));
    }
    if info.cluster_id.is_none() {
        return Err(JoinRefusal::Conflict(format!(
            "{addr} (node {}) is not a member of a formed cluster yet",
            info.node_id
        )));
    }
    let users = cluster
        .raft
        .state()
        .users()
        .map_err(|e| JoinRefusal::Conflict(format!("this node's state could not be read: {e}")))?
        .len();
    if users > 0 && !wipe {
        return Err(JoinRefusal::Conflict(format!(
            "this node holds data of another cluster ({users} accounts); rerun with --wipe \
             to discard it and join"
        )));
    }
    cluster.stop_serving("this node is joining another cluster; reconnect");
    cluster.request_stop(Stop::Rejoin {
        seed: addr.to_string(),
    });
    Ok(format!(
        "node {} restarts to join cluster {} through {addr} (node {})",
        cluster.node_id(),
        info.cluster_id.unwrap_or_default(),
        info.node_id
    ))
}

#[derive(Debug)]
pub enum JoinRefusal {
    Unreachable(String),
    Conflict(String),
}
