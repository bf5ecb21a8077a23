//! The admin API: JSON over HTTP under `/api/v1`, behind the admin token.
//!
//! Every answer is JSON; every refusal is a 4xx with `{"error": "..."}` that
//! says what to do. Account changes are Raft commands: a 2xx means committed.

use std::sync::Arc;

use actix::Addr;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chorus_raft::{Command, CommandResult, RaftError, RaftNode};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::bus::GetStats;
use crate::c2s::C2s;
use crate::config::Settings;

#[derive(Clone)]
pub struct ApiState {
    pub token: Arc<String>,
    pub settings: Arc<Settings>,
    pub raft: Arc<RaftNode>,
    pub router: Addr<crate::router::Router>,
    pub c2s: Arc<C2s>,
    pub cluster: Arc<crate::cluster::Cluster>,
}

pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError(status, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// The local replica could not be read: the request is answered with an error, never
/// with what an empty state would say.
impl From<chorus_raft::ReadError> for ApiError {
    fn from(e: chorus_raft::ReadError) -> ApiError {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        bad_request(format!("bad JSON body: {}", r.body_text()))
    }
}

pub fn routes(state: ApiState) -> Router {
    let api = Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/users", get(list_users).post(add_user))
        .route("/api/v1/users/{jid}", get(show_user).delete(delete_user))
        .route("/api/v1/users/{jid}/password", put(set_password))
        .route(
            "/api/v1/settings/{key}",
            get(super::settings::read).put(super::settings::write),
        )
        .route("/api/v1/settings/{key}/cas", post(super::settings::cas))
        .route("/api/v1/cluster", get(super::cluster::status))
        .route("/api/v1/cluster/join", post(super::cluster::join))
        .route("/api/v1/cluster/leave", post(super::cluster::leave))
        .route(
            "/api/v1/cluster/members/{id}",
            delete(super::cluster::remove),
        )
        .route("/api/v1/cluster/enabled", put(super::cluster::set_enabled))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    api.route("/metrics", get(super::metrics::scrape))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/api.md".into(),
            )
        })
        .with_state(state)
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), state.token.as_bytes()) {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token: send `Authorization: Bearer TOKEN` (the token is in DATA_DIR/admin.token)".into(),
        )
        .into_response();
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn status(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let stats = state.router.send(GetStats).await.unwrap_or_default();
    Ok(Json(json!({
        "domain": state.settings.domain,
        "node_id": state.raft.node_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "raft": state.raft.status(),
        "router": stats,
    })))
}

async fn list_users(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "users": state.raft.state().users()? })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub jid: String,
    pub password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

/// The account's bare JID, normalized, if it names an account of our domain.
fn account_jid(settings: &Settings, raw: &str) -> Result<String, ApiError> {
    let jid = jid::BareJid::new(raw)
        .map_err(|e| bad_request(format!("`{raw}` is not a valid JID: {e}")))?;
    if jid.node().is_none() {
        return Err(bad_request(format!(
            "`{raw}` has no user part; write it as user@{}",
            settings.domain
        )));
    }
    if jid.domain().as_str() != settings.domain {
        return Err(bad_request(format!(
            "`{raw}` is not in this server's domain `{}`",
            settings.domain
        )));
    }
    Ok(jid.to_string())
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if password.is_empty() {
        return Err(bad_request("the password is empty"));
    }
    if password.len() > 1024 {
        return Err(bad_request("the password is longer than 1024 bytes"));
    }
    Ok(())
}

/// SCRAM keys for a password, made on the hashing pool (a saturated pool is a 503).
async fn user_record(
    state: &ApiState,
    password: String,
) -> Result<chorus_raft::UserRecord, ApiError> {
    let iterations = state.settings.auth.scram_iterations as u32;
    crate::auth::pool::hash_password(&state.c2s.hashing, password, iterations)
        .await
        .map_err(|busy| ApiError(StatusCode::SERVICE_UNAVAILABLE, busy.to_string()))?
        .map_err(|e| bad_request(e.to_string()))
}

/// Commit errors: not committed for sure (no leader, no quorum) is 503; maybe committed
/// (timed out waiting) is 504, so a client can tell "failed" from "unknown".
pub fn commit_error(e: RaftError) -> ApiError {
    match e {
        RaftError::Timeout { .. } => ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "timed out waiting; the change may still commit, read it back before retrying: {e}"
            ),
        ),
        _ => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not committed, try again: {e}"),
        ),
    }
}

/// Commit an account command; any answer but `Done` becomes the API's refusal.
async fn commit_account(raft: &RaftNode, user: &str, cmd: Command) -> Result<(), ApiError> {
    let result = raft.propose(cmd).await.map_err(commit_error)?;
    match result {
        CommandResult::Done => Ok(()),
        CommandResult::UserExists => Err(ApiError(
            StatusCode::CONFLICT,
            format!("{user} already exists"),
        )),
        CommandResult::NoSuchUser => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{user} does not exist"),
        )),
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected result {other:?}"),
        )),
    }
}

/// One account's figures: what it keeps on the server, from the local replica.
async fn show_user(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = account_jid(&state.settings, &raw)?;
    let replica = state.raft.state();
    if replica.user(&user)?.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{user} does not exist"),
        ));
    }
    let roster = crate::im::roster::load(&replica, &user)?;
    let routes = replica.routes_of(&user)?;
    let online = routes
        .iter()
        .map(|(full, _)| full.clone())
        .collect::<Vec<_>>();
    let routes: Vec<Value> = routes
        .into_iter()
        .map(|(full, r)| json!({ "jid": full, "node": r.node.to_string(), "session": r.session }))
        .collect();
    Ok(Json(json!({
        "jid": user,
        "roster_items": roster.items.len(),
        "pending_subscription_requests": roster.pending_in.len(),
        "offline_messages": replica.queue_len(&user, crate::im::offline::QUEUE)?,
        "offline_bytes": replica
            .queue_meta(&user, crate::im::offline::QUEUE)?
            .map_or(0, |m| m.bytes),
        "resources": online,
        "routes": routes,
    })))
}

async fn add_user(
    State(state): State<ApiState>,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let user = account_jid(&state.settings, &body.jid)?;
    check_password(&body.password)?;
    let record = user_record(&state, body.password).await?;
    commit_account(
        &state.raft,
        &user,
        Command::CreateUser {
            user: user.clone(),
            record,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(json!({ "jid": user }))))
}

async fn delete_user(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = account_jid(&state.settings, &raw)?;
    commit_account(
        &state.raft,
        &user,
        Command::DeleteUser { user: user.clone() },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_password(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    body: Result<Json<NewPassword>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body?;
    let user = account_jid(&state.settings, &raw)?;
    check_password(&body.password)?;
    if state.raft.state().user(&user)?.is_none() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{user} does not exist"),
        ));
    }
    let record = user_record(&state, body.password).await?;
    commit_account(
        &state.raft,
        &user,
        // Every stream of the account may end: none of them asked for this.
        Command::ChangePassword {
            user: user.clone(),
            record,
            keep_session: None,
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
