//! `/api/v1/settings/{key}`: cluster-wide settings, read linearizably (through the leader's
//! read index), written and compared-and-set through Raft. The chaos suite's register
//! workload checks these against a linearizable register (docs/chaos.md).

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chorus_raft::{Command, CommandResult, SYSTEM_SETTING_PREFIX};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{commit_error, ApiError, ApiState};
use crate::cluster::protocol::{ClusterRequest, ClusterResponse};

const MAX_KEY_BYTES: usize = 256;
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Settings the cluster keeps for itself: written by the nodes, not through this API.
const RESERVED_PREFIXES: &[&str] = &[SYSTEM_SETTING_PREFIX, "cluster."];

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("a setting key is 1 to {MAX_KEY_BYTES} bytes without control characters"),
        ));
    }
    if let Some(p) = RESERVED_PREFIXES.iter().find(|p| key.starts_with(**p)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("keys starting with `{p}` are kept by the cluster itself"),
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a setting value is at most {MAX_VALUE_BYTES} bytes"),
        ));
    }
    Ok(())
}

pub async fn read(
    State(state): State<ApiState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_key(&key)?;
    match state
        .cluster
        .ask_leader(ClusterRequest::ReadSetting { key: key.clone() })
        .await
    {
        ClusterResponse::Setting(value) => Ok(Json(json!({ "key": key, "value": value }))),
        ClusterResponse::Refused(e) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    value: String,
}

pub async fn write(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    body: Result<Json<WriteBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_key(&key)?;
    let Json(body) = body?;
    check_value(&body.value)?;
    let command = Command::SetSetting {
        key: key.clone(),
        value: body.value.clone(),
    };
    match state.cluster.raft.propose(command).await {
        Ok(CommandResult::Done) => Ok(Json(json!({ "key": key, "value": body.value }))),
        Ok(other) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected result {other:?}"),
        )),
        Err(e) => Err(commit_error(e)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasBody {
    expect: Option<String>,
    value: String,
}

pub async fn cas(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    body: Result<Json<CasBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_key(&key)?;
    let Json(body) = body?;
    check_value(&body.value)?;
    let command = Command::CasSetting {
        key: key.clone(),
        expect: body.expect.clone(),
        value: body.value.clone(),
    };
    match state.cluster.raft.propose(command).await {
        Ok(CommandResult::Done) => Ok((
            StatusCode::OK,
            Json(json!({ "key": key, "value": body.value })),
        )),
        Ok(CommandResult::SettingMismatch { current }) => Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("{key} is not {:?}", body.expect),
                "current": current,
            })),
        )),
        Ok(other) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected result {other:?}"),
        )),
        Err(e) => Err(commit_error(e)),
    }
}
