//! A running node: its files, its Raft node, router, client listeners and
//! admin API, started in that order and stopped in the reverse one.

pub mod wiring;

use std::sync::Arc;

use anyhow::{Context, Result};
use chorus_raft::network::ClusterIdentity;
use chorus_raft::{Command, RaftConfig, RaftNode, StartMode};
use tokio::net::TcpListener;

use crate::bus::ShutdownSessions;
use crate::c2s::{self, C2s, StateCredentials};
use crate::cluster::discovery::{self, Discovery, DiscoveryConfig};
use crate::cluster::{self, Cluster, Stop};
use crate::config::Settings;
use crate::data_dir;
use crate::http;

/// Run a node until SIGINT or SIGTERM. Must run inside an actix `System`.
pub async fn serve(settings: Settings) -> Result<()> {
    let settings = Arc::new(settings);
    let addrs = settings.addresses()?;
    let data_dir = settings.data_dir.clone();
    data_dir::private_data_dir(&data_dir)?;
    let node_id = data_dir::node_id(&data_dir)?;
    let token = data_dir::admin_token(&data_dir)?;
    let tls = c2s::tls::acceptor(&settings)?;

    // Bind every client-facing port before starting Raft, so that a port in
    // use fails start-up at once with a clear message.
    let c2s_listener = bind(addrs.c2s, "c2s.listen").await?;
    let c2s_tls_listener = bind(addrs.c2s_tls, "c2s.tls_listen").await?;
    let http_listener = bind(addrs.http, "http.listen").await?;

    let (secret, made_up) = data_dir::cluster_secret(&data_dir, &settings.cluster.secret)?;
    let join_request = data_dir::take_join_request(&data_dir);
    if join_request.is_some() {
        // `cluster join` asked for this restart: the old cluster's data goes.
        data_dir::wipe_raft(&data_dir)?;
    }
    let raft = RaftNode::start_with(
        RaftConfig {
            node_id,
            data_dir: data_dir.clone(),
            listen: addrs.cluster,
            snapshot_threshold: settings.cluster.snapshot_threshold,
            logs_to_keep: settings.cluster.logs_to_keep,
            max_batch: settings.cluster.max_batch as usize,
            heartbeat_ms: settings.cluster.heartbeat_ms,
            election_min_ms: settings.cluster.election_min_ms,
            election_max_ms: settings.cluster.election_max_ms,
            identity: ClusterIdentity::new(
                &settings.cluster.name,
                &secret,
                cluster_tls(&settings)?,
            ),
            max_pending_per_address: settings.cluster.max_pending_per_address as usize,
            handshake_timeout: std::time::Duration::from_millis(
                settings.cluster.handshake_timeout_ms,
            ),
            memory_kinds: crate::features::memory_kinds(),
            cached_kinds: crate::features::cached_kinds(),
            data_cache_bytes: usize::try_from(settings.cluster.data_cache_bytes)
                .unwrap_or(usize::MAX),
        },
        StartMode::Join,
    )
    .await
    .context("starting the Raft node (cluster.listen)")?;
    let raft = Arc::new(raft);
    let cluster = Cluster::new(raft.clone(), settings.clone());
    // Beacons are signed with the key derived from the secret, never the secret itself.
    let discovery = start_discovery(&settings, &raft, raft.identity().key()).await;

    let mut seeds = settings.seeds();
    if let Some(seed) = &join_request {
        seeds = vec![seed.clone()];
    }
    cluster::formation::form(
        &cluster,
        cluster::formation::Plan {
            seeds,
            discovery: discovery.as_deref(),
            alone: made_up && join_request.is_none(),
        },
    )
    .await?;
    data_dir::clear_join_request(&data_dir);
    if let Some(d) = &discovery {
        cluster.set_discovery(d.clone());
        tokio::spawn(announce(cluster.clone(), d.clone()));
    }

    // Streams this node served before it stopped are gone; so are their routes. Until
    // that is committed the node serves no one.
    {
        let (raft, cluster) = (raft.clone(), cluster.clone());
        tokio::spawn(async move {
            loop {
                match raft
                    .propose(Command::DropNodeRoutes { node: node_id })
                    .await
                {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::info!(error = %e, "waiting to clear this node's routes from before the restart");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                }
            }
            cluster.set_ready();
        });
    }
    tokio::spawn(cluster::failure::run(cluster.clone()));

    let (limits, limits_before_auth) = C2s::limits_from(&settings);
    let delivery =
        wiring::start_delivery(&cluster, &settings.domain, settings.limits.offline_messages);
    let router = delivery.router.clone();
    cluster.links.connect_members();
    let c2s = Arc::new(C2s {
        settings: settings.clone(),
        node_id,
        raft: raft.clone(),
        router: router.clone(),
        port: delivery.port.clone(),
        hooks: delivery.hooks.clone(),
        tls,
        credentials: Arc::new(StateCredentials {
            state: raft.state(),
            domain: settings.domain.clone(),
            iterations: settings.auth.scram_iterations as u32,
            salt_key: unknown_user_salt_key(raft.identity().key()),
        }),
        limits,
        limits_before_auth,
        arbiter: actix::Arbiter::current(),
        stats: Default::default(),
        started: std::time::Instant::now(),
        cluster: cluster.clone(),
        admission: C2s::admission_from(&settings),
        rates: crate::rate::Rates::from_settings(&settings),
        hashing: crate::auth::pool::HashPool::new(
            settings.auth.hash_threads as usize,
            settings.auth.hash_queue as usize,
        ),
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
        cluster: cluster.clone(),
    });
    let http_addr = http_listener.local_addr()?;
    *cluster.c2s_addr.lock().unwrap_or_else(|p| p.into_inner()) = addrs.c2s.to_string();
    *cluster.http_addr.lock().unwrap_or_else(|p| p.into_inner()) = http_addr.to_string();
    tokio::spawn(http::server::serve(
        http_listener,
        api,
        std::time::Duration::from_secs(settings.http.header_read_timeout_secs),
        settings.http.max_connections as usize,
    ));
    // Tools wait for api.json: write it once the node serves clients (or, cut off,
    // after the task timeout, so that the API still answers `cluster status`).
    if !cluster.wait_serving(cluster.task_timeout()).await {
        tracing::warn!("not in contact with a cluster majority yet; not serving clients");
    }
    data_dir::write_api_info(
        &data_dir,
        &data_dir::ApiInfo {
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

    let mut stop = cluster.watch_stop();
    let why = tokio::select! {
        _ = wait_for_signal() => Stop::Running,
        s = stop.wait_for(|s| *s != Stop::Running) => s.map(|s| s.clone()).unwrap_or(Stop::Running),
    };
    tracing::info!(?why, "shutting down");
    let _ = std::fs::remove_file(data_dir::api_file(&data_dir));
    router.do_send(ShutdownSessions);
    // Give sessions a moment to write their stream errors, and an API caller its answer.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(discovery);
    raft.shutdown().await.ok();
    match why {
        Stop::Running => Ok(()),
        Stop::Left => {
            data_dir::wipe_raft(&data_dir)?;
            tracing::info!("left the cluster; Raft data wiped (a restart makes a fresh node)");
            Ok(())
        }
        Stop::Rejoin { seed } => {
            data_dir::write_join_request(&data_dir, &seed)?;
            restart_self()
        }
    }
}

/// Replaces this process with a fresh start of the same command line (same pid), for
/// `cluster join`: every actor, socket and the store start over cleanly.
fn restart_self() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding this executable")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let err = std::process::Command::new(exe).args(args).exec();
    Err(anyhow::anyhow!("restarting to join the cluster: {err}"))
}

async fn start_discovery(
    settings: &Settings,
    raft: &RaftNode,
    secret: &[u8],
) -> Option<Arc<Discovery>> {
    let m = &settings.cluster.multicast;
    if !m.enabled {
        return None;
    }
    let interface = if m.interface.is_empty() {
        match raft.listen_addr().ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
        }
    } else {
        m.interface
            .parse()
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let cfg = DiscoveryConfig {
        group: m.group.parse().unwrap_or(discovery::DEFAULT_GROUP),
        port: m.port as u16,
        interface,
        ttl: m.ttl as u32,
        interval: std::time::Duration::from_millis(500),
        cluster_name: settings.cluster.name.clone(),
        secret: secret.to_vec(),
        node_id: raft.node_id(),
    };
    // A fresh node announces itself too, so that fresh peers can count each other.
    let fresh = discovery::Announcement {
        cluster_name: settings.cluster.name.clone(),
        node_id: raft.node_id(),
        cluster_addr: raft.listen_addr().to_string(),
        protocol: chorus_raft::PROTOCOL_VERSION,
        cluster_id: None,
        sent_at_ms: 0,
        nonce: 0,
    };
    match Discovery::start(cfg, Some(fresh)).await {
        Ok(d) => Some(Arc::new(d)),
        Err(e) => {
            tracing::warn!(error = %e, "multicast discovery unavailable; use --seed");
            None
        }
    }
}

/// Keeps the beacon current: who we are and our cluster's id, and silence while the
/// cluster is disabled.
async fn announce(cluster: Arc<Cluster>, discovery: Arc<Discovery>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tick.tick().await;
        let ann = cluster.enabled().then(|| discovery::Announcement {
            cluster_name: cluster.settings.cluster.name.clone(),
            node_id: cluster.node_id(),
            cluster_addr: cluster.raft.listen_addr().to_string(),
            protocol: chorus_raft::PROTOCOL_VERSION,
            cluster_id: cluster
                .cluster_id()
                .and_then(|id| u64::from_str_radix(&id, 16).ok()),
            sent_at_ms: 0,
            nonce: 0,
        });
        discovery.set_announcement(ann);
    }
}

/// TLS for the cluster connections: off, operator certificates (mutual TLS against
/// `cluster.tls.ca`), or a certificate made for this process.
fn cluster_tls(settings: &Settings) -> Result<Option<Arc<chorus_raft::network::ClusterTls>>> {
    use chorus_raft::network::ClusterTls;
    let t = &settings.cluster.tls;
    if !t.enabled {
        tracing::warn!("cluster.tls.enabled is false: cluster traffic is not encrypted");
        return Ok(None);
    }
    let tls = if t.ca.is_empty() {
        ClusterTls::self_signed()
    } else {
        let read = |key: &str, path: &str| {
            std::fs::read(path).with_context(|| format!("reading {key} ({path})"))
        };
        ClusterTls::with_ca(
            &read("cluster.tls.cert", &t.cert)?,
            &read("cluster.tls.key", &t.key)?,
            &read("cluster.tls.ca", &t.ca)?,
        )
    };
    Ok(Some(Arc::new(tls.map_err(|e| anyhow::anyhow!(e))?)))
}

/// The key of unknown users' fake SCRAM salts, derived from the cluster key
/// (itself PBKDF2 of the secret, so a fake salt is no cheap oracle on the
/// secret): every node of a cluster gives an unknown name the same salt (as
/// every node gives a real account its one salt), and it survives restarts.
fn unknown_user_salt_key(cluster_key: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(cluster_key).expect("any key length");
    mac.update(b"chorus unknown-user salt key");
    mac.finalize().into_bytes().into()
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
