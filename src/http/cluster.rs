//! `/api/v1/cluster`: the cluster page of the admin API (what `chorus cluster` calls).

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chorus_raft::{node_down_key, Command, CommandResult};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{ApiError, ApiState};
use crate::cluster::membership::{self, JoinRefusal};
use crate::cluster::protocol::{ClusterRequest, ClusterResponse, NodeInfo};
use crate::cluster::CLUSTER_ENABLED_KEY;

/// How long `status` waits for each member's own report.
const MEMBER_INFO_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn status(State(state): State<ApiState>) -> Json<Value> {
    let cluster = &state.cluster;
    let me = cluster.info();
    let members = cluster.raft.members();
    let infos = futures::future::join_all(members.iter().map(|m| {
        let cluster = cluster.clone();
        let (id, addr) = (m.id, m.addr.clone());
        async move {
            if id == cluster.node_id() {
                return Some(cluster.info());
            }
            match cluster
                .call_within(&addr, id, &ClusterRequest::Info, MEMBER_INFO_TIMEOUT)
                .await
            {
                Ok(ClusterResponse::Info(info)) => Some(*info),
                _ => None,
            }
        }
    }))
    .await;
    let leader_applied = infos
        .iter()
        .flatten()
        .find(|i| Some(i.node_id) == me.leader)
        .and_then(|i| i.applied_index);
    let reader = cluster.raft.state();
    let rows: Vec<Value> = members
        .iter()
        .zip(infos)
        .map(|(m, info)| {
            // Unreadable: shown as not known to be down; the row's state says "unreachable"
            // or "up" from the node's own answer.
            let down = reader
                .setting(&node_down_key(m.id))
                .is_ok_and(|s| s.is_some());
            let state = match (&info, down) {
                (_, true) => "down",
                (None, false) => "unreachable",
                (Some(_), false) => "up",
            };
            let role = match &info {
                Some(i) if Some(m.id) == me.leader => "leader".to_string(),
                Some(i) => i.role.clone(),
                None if !m.voter => "learner".into(),
                None => "unknown".into(),
            };
            member_row(
                m.id,
                &m.addr,
                &role,
                m.voter,
                state,
                info.as_ref(),
                leader_applied,
            )
        })
        .collect();
    Json(json!({
        "cluster_name": cluster.settings.cluster.name,
        "cluster_id": cluster.cluster_id(),
        "enabled": cluster.enabled(),
        "node_id": me.node_id.to_string(),
        "leader": me.leader.map(|l| l.to_string()),
        "term": me.term,
        // openraft 0.9 reports no commit index; the leader applies each entry as soon as
        // it commits, so its applied index stands in for it.
        "commit_index": leader_applied.or(me.applied_index),
        "voters_target": cluster.settings.cluster.voters,
        "serving": cluster.serving(),
        "members": rows,
    }))
}

fn member_row(
    id: u64,
    addr: &str,
    role: &str,
    voter: bool,
    state: &str,
    info: Option<&NodeInfo>,
    leader_applied: Option<u64>,
) -> Value {
    let applied = info.and_then(|i| i.applied_index);
    json!({
        "id": id.to_string(),
        "addr": addr,
        "role": role,
        "voter": voter,
        "state": state,
        "applied_index": applied,
        "lag": match (leader_applied, applied) {
            (Some(l), Some(a)) => Some(l.saturating_sub(a)),
            _ => None,
        },
        "sessions": info.map(|i| i.sessions),
        "version": info.map(|i| i.version.clone()),
        "protocol": info.map(|i| i.protocol),
        "uptime_secs": info.map(|i| i.uptime_secs),
        "c2s": info.map(|i| i.c2s.clone()),
        "http": info.map(|i| i.http.clone()),
    })
}

#[derive(Deserialize)]
pub struct JoinBody {
    addr: String,
    #[serde(default)]
    wipe: bool,
}

pub async fn join(
    State(state): State<ApiState>,
    body: Result<Json<JoinBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    if body
        .addr
        .rsplit_once(':')
        .is_none_or(|(_, p)| p.parse::<u16>().is_err())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{}` is not a HOST:PORT cluster address", body.addr),
        ));
    }
    match membership::join_via(&state.cluster, &body.addr, body.wipe).await {
        Ok(message) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "joining",
                "message": message,
            })),
        )),
        Err(JoinRefusal::Unreachable(e)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("cannot reach {}: {e}", body.addr),
        )),
        Err(JoinRefusal::Conflict(e)) => Err(ApiError::new(StatusCode::CONFLICT, e)),
    }
}

pub async fn leave(State(state): State<ApiState>) -> Result<(StatusCode, Json<Value>), ApiError> {
    match membership::leave(&state.cluster).await {
        Ok(message) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "status": "leaving", "message": message })),
        )),
        Err(e) => Err(ApiError::new(StatusCode::CONFLICT, e)),
    }
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node: u64 = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a node id (a decimal number; see `chorus cluster status`)"),
        )
    })?;
    if state.cluster.raft.member_addr(node).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("node {node} is not a member of this cluster"),
        ));
    }
    match state.cluster.remove_member(node).await {
        ClusterResponse::Removed => Ok(Json(json!({
            "status": "removed",
            "node": node.to_string(),
            "message": format!("node {node} removed from the cluster"),
        }))),
        ClusterResponse::Refused(e) => Err(ApiError::new(StatusCode::CONFLICT, e)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
pub struct EnabledBody {
    enabled: bool,
}

pub async fn set_enabled(
    State(state): State<ApiState>,
    body: Result<Json<EnabledBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let command = Command::SetSetting {
        key: CLUSTER_ENABLED_KEY.into(),
        value: body.enabled.to_string(),
    };
    match state.cluster.raft.propose(command).await {
        Ok(CommandResult::Done) => Ok(Json(json!({
            "enabled": body.enabled,
            "message": if body.enabled {
                "clustering enabled: nodes may join, beacons are sent"
            } else {
                "clustering disabled: no node may join, no beacons are sent"
            },
        }))),
        Ok(other) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected result {other:?}"),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}
