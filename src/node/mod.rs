//! A running node: its files, its Raft node, router, client listeners and
//! admin API, started in that order and stopped in the reverse one.

pub mod files;

use std::sync::Arc;

use anyhow::{Context, Result};
use chorus_raft::{Command, RaftConfig, RaftNode};
use tokio::net::TcpListener;

use crate::c2s::{self, C2s, StateCredentials};
use crate::config::Settings;
use crate::http;
use crate::router::messages::ShutdownSessions;
use crate::router::Router;

/// Run a node until SIGINT or SIGTERM. Must run inside an actix `System`.
pub async fn serve(settings: Settings) -> Result<()> {
    let settings = Arc::new(settings);
    let addrs = settings.addresses()?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    let node_id = files::node_id(&data_dir)?;
    let token = files::admin_token(&data_dir)?;
    let tls = c2s::tls::acceptor(&settings)?;

    // Bind every client-facing port before starting Raft, so that a port in
    // use fails start-up at once with a clear message.
    let c2s_listener = bind(addrs.c2s, "c2s.listen").await?;
    let c2s_tls_listener = bind(addrs.c2s_tls, "c2s.tls_listen").await?;
    let http_listener = bind(addrs.http, "http.listen").await?;

    let raft = RaftNode::start(RaftConfig {
        node_id,
        data_dir: data_dir.clone(),
        listen: addrs.cluster,
        snapshot_threshold: settings.cluster.snapshot_threshold,
        logs_to_keep: settings.cluster.logs_to_keep,
        max_batch: settings.cluster.max_batch as usize,
        heartbeat_ms: settings.cluster.heartbeat_ms,
        election_min_ms: settings.cluster.election_min_ms,
        election_max_ms: settings.cluster.election_max_ms,
    })
    .await
    .context("starting the Raft node (cluster.listen)")?;
    let raft = Arc::new(raft);

    // Streams this node served before it stopped are gone; so are their routes.
    raft.propose(Command::DropNodeRoutes { node: node_id })
        .await
        .context("clearing this node's routes from before the restart")?;

    let (limits, limits_before_auth) = C2s::limits_from(&settings);
    let router = Router::start_with(
        raft.clone(),
        settings.domain.clone(),
        settings.limits.offline_messages,
    );
    let c2s = Arc::new(C2s {
        settings: settings.clone(),
        node_id,
        raft: raft.clone(),
        router: router.clone(),
        tls,
        credentials: Arc::new(StateCredentials {
            state: raft.state(),
            domain: settings.domain.clone(),
            iterations: settings.auth.scram_iterations as u32,
            salt_key: unknown_user_salt_key(&token),
        }),
        limits,
        limits_before_auth,
        arbiter: actix::Arbiter::current(),
        stats: Default::default(),
        started: std::time::Instant::now(),
    });
    tokio::spawn(c2s::listener::accept_loop(c2s.clone(), c2s_listener, false));
    tokio::spawn(c2s::listener::accept_loop(
        c2s.clone(),
        c2s_tls_listener,
        true,
    ));

    let api = http::api::routes(http::api::ApiState {
        token: Arc::new(token),
        settings: settings.clone(),
        raft: raft.clone(),
        router: router.clone(),
        c2s: c2s.clone(),
    });
    let http_addr = http_listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, api).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    files::write_api_info(
        &data_dir,
        &files::ApiInfo {
            url: format!("http://{http_addr}"),
            pid: std::process::id(),
            node_id,
        },
    )?;
    tracing::info!(
        node_id,
        domain = %settings.domain,
        c2s = %addrs.c2s,
        c2s_tls = %addrs.c2s_tls,
        http = %http_addr,
        cluster = %raft.listen_addr(),
        "Chorus node ready"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = std::fs::remove_file(files::api_file(&data_dir));
    router.do_send(ShutdownSessions);
    // Give sessions a moment to write their stream errors.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    raft.shutdown().await.ok();
    Ok(())
}

/// A stable secret for unknown users' fake SCRAM salts, derived from the admin
/// token so that it survives restarts without another file to keep.
fn unknown_user_salt_key(token: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(b"chorus unknown-user salt key\0")
        .chain_update(token.as_bytes())
        .finalize()
        .into()
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({key}): is another server using it? Set {key} to a free address"))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
