//! `/metrics`: the node's figures in the Prometheus text format, read fresh at
//! each scrape from the counters and state that already exist (nothing here is
//! a second copy to keep in step).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::api::ApiState;
use crate::bus::GetStats;
use crate::c2s::admission::Refusal;
use crate::rate::Limit;

pub async fn scrape(State(state): State<ApiState>) -> impl IntoResponse {
    let mut registry = Registry::with_prefix("chorus");
    let c2s = &state.c2s.stats;
    let admission = &state.c2s.admission;
    let rates = &state.c2s.rates;
    let hashing = &state.c2s.hashing;
    let counters = [
        (
            "c2s_connections_accepted",
            "client connections accepted",
            c2s.connections_accepted.load(Ordering::Relaxed),
        ),
        (
            "c2s_auth_successes",
            "successful SASL authentications",
            c2s.auth_successes.load(Ordering::Relaxed),
        ),
        (
            "c2s_auth_failures",
            "failed SASL authentications",
            c2s.auth_failures.load(Ordering::Relaxed),
        ),
        (
            "c2s_stream_errors",
            "client streams ended with a stream error",
            c2s.stream_errors.load(Ordering::Relaxed),
        ),
        (
            "c2s_slow_clients_disconnected",
            "sessions closed because their outbound queue overflowed (c2s.outbound_queue, c2s.outbound_queue_bytes)",
            c2s.slow_clients.load(Ordering::Relaxed),
        ),
        (
            "c2s_write_timeouts",
            "connections closed because a write made no progress for c2s.write_timeout_secs",
            c2s.write_timeouts.load(Ordering::Relaxed),
        ),
        (
            "c2s_refused_max_connections",
            "connections refused at c2s.max_connections",
            admission.refused(Refusal::MaxConnections),
        ),
        (
            "c2s_refused_per_ip",
            "connections refused at c2s.max_connections_per_ip",
            admission.refused(Refusal::PerIp),
        ),
        (
            "c2s_refused_unauthenticated",
            "connections refused at c2s.max_unauthenticated",
            admission.refused(Refusal::Unauthenticated),
        ),
        (
            "rate_refused_sasl_per_ip",
            "SASL attempts refused by rate.sasl_failures_per_ip_per_minute",
            rates.refused(Limit::SaslPerIp),
        ),
        (
            "rate_refused_sasl_per_account",
            "SASL attempts refused by rate.sasl_failures_per_account_per_minute",
            rates.refused(Limit::SaslPerAccount),
        ),
        (
            "rate_refused_registrations_per_ip",
            "in-band registrations refused by rate.registrations_per_ip_per_minute",
            rates.refused(Limit::RegistrationsPerIp),
        ),
        (
            "rate_refused_password_changes",
            "in-band password changes refused by rate.password_changes_per_account_per_minute",
            rates.refused(Limit::PasswordChangesPerAccount),
        ),
        (
            "rate_session_pauses",
            "times a session's reading paused for its stanza or byte rate",
            rates.shaped.load(Ordering::Relaxed),
        ),
        (
            "auth_hash_jobs",
            "password hashing jobs run (PLAIN checks, new passwords)",
            hashing.stats.done.load(Ordering::Relaxed),
        ),
        (
            "auth_hash_refused",
            "password hashing jobs refused because auth.hash_queue was full",
            hashing.stats.refused.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    registry.register(
        "auth_hash_threads",
        "threads that run password hashing (auth.hash_threads)",
        ConstGauge::new(hashing.threads() as i64),
    );
    let (open, unauthenticated) = admission.open();
    registry.register(
        "c2s_connections_open",
        "client connections open on this node, from accept to close",
        ConstGauge::new(open as i64),
    );
    registry.register(
        "c2s_connections_unauthenticated",
        "open client connections that have not authenticated yet",
        ConstGauge::new(unauthenticated as i64),
    );
    registry.register(
        "c2s_max_connections",
        "c2s.max_connections in effect (capped below the open-file limit)",
        ConstGauge::new(admission.bounds().total as i64),
    );
    let stats = state.router.send(GetStats).await.unwrap_or_default();
    registry.register(
        "router_stanzas_routed",
        "stanzas routed by address",
        ConstCounter::new(stats.routed),
    );
    registry.register(
        "router_stanzas_bounced",
        "stanzas answered with an error",
        ConstCounter::new(stats.bounced),
    );
    registry.register(
        "router_stanzas_refused_unreadable_state",
        "stanzas refused with internal-server-error because a state read they needed failed",
        ConstCounter::new(stats.read_refusals),
    );
    registry.register(
        "router_remote_nodes_remembered",
        "lookups of which other nodes hold an account's streams answered from memory (the routing table unchanged since read)",
        ConstCounter::new(stats.remote_nodes_remembered),
    );
    registry.register(
        "router_remote_nodes_read",
        "lookups of which other nodes hold an account's streams read from the routing table",
        ConstCounter::new(stats.remote_nodes_read),
    );
    registry.register(
        "delivery_screened",
        "stanzas a delivery hook kept from a local account (a block list)",
        ConstCounter::new(state.c2s.hooks.screened()),
    );
    registry.register(
        "state_read_errors",
        "reads of the local replica that failed (storage error or undecodable value)",
        ConstCounter::new(state.raft.state().read_errors()),
    );
    let cache = state.raft.state().data_cache_stats();
    registry.register(
        "state_data_cache_hits",
        "whole-data reads (rosters) answered from memory (cluster.data_cache_bytes)",
        ConstCounter::new(cache.hits),
    );
    registry.register(
        "state_data_cache_misses",
        "whole-data reads (rosters) that went to RocksDB",
        ConstCounter::new(cache.misses),
    );
    registry.register(
        "state_data_cache_bytes",
        "bytes of whole data (rosters) held in memory, at most cluster.data_cache_bytes",
        ConstGauge::new(cache.bytes as i64),
    );
    registry.register(
        "c2s_sessions",
        "bound client streams on this node",
        ConstGauge::new(stats.sessions as i64),
    );
    registry.register(
        "online_users",
        "accounts with a bound stream on this node",
        ConstGauge::new(stats.online_users as i64),
    );

    let raft = state.raft.status();
    let gauges = [
        ("raft_term", "current Raft term", raft.current_term),
        (
            "raft_is_leader",
            "1 if this node leads the cluster",
            u64::from(raft.state == "Leader"),
        ),
        (
            "raft_last_log_index",
            "index of the last log entry",
            raft.last_log_index.unwrap_or(0),
        ),
        (
            "raft_last_applied",
            "index of the last applied entry",
            raft.last_applied.unwrap_or(0),
        ),
        (
            "raft_snapshot_index",
            "last index in the current snapshot",
            raft.snapshot_index.unwrap_or(0),
        ),
        (
            "raft_first_log_index",
            "first index still in the log (purged below)",
            raft.first_log_index,
        ),
        (
            "raft_voters",
            "voting members",
            raft.membership.len() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        registry.register(name, help, ConstGauge::new(value));
    }
    registry.register(
        "raft_entries_proposed",
        "log entries proposed by this node",
        ConstCounter::new(raft.entries_proposed),
    );
    registry.register(
        "raft_commands_proposed",
        "commands proposed by this node (several share an entry)",
        ConstCounter::new(raft.commands_proposed),
    );
    registry.register(
        "cluster_connections_refused_pending",
        "inbound cluster connections closed at once: cluster.max_pending_per_address reached",
        ConstCounter::new(raft.refused_pending),
    );
    registry.register(
        "cluster_connections_refused_full",
        "inbound cluster connections closed at once: every slot taken",
        ConstCounter::new(raft.refused_full),
    );
    registry.register(
        "cluster_handshakes_failed",
        "inbound cluster connections that did not finish TLS and the proof of the secret within cluster.handshake_timeout_ms",
        ConstCounter::new(raft.failed_handshakes),
    );

    let cluster = &state.cluster;
    registry.register(
        "cluster_catch_ups",
        "reads that first brought this replica up to the leader's commits (a SASL name not found here)",
        ConstCounter::new(cluster.catch_ups.load(Ordering::Relaxed)),
    );
    let links = &cluster.links.stats;
    let link_counters = [
        ("peer_link_messages_sent", "messages queued on peer links", links.sent.load(Ordering::Relaxed)),
        ("peer_link_messages_received", "messages received on peer links", links.received.load(Ordering::Relaxed)),
        (
            "peer_link_refused_down",
            "messages refused because the peer's link was down (stanzas fall back to offline storage or bounce)",
            links.refused_down.load(Ordering::Relaxed),
        ),
        (
            "peer_link_refused_full",
            "messages refused because the peer's link queue was full",
            links.refused_full.load(Ordering::Relaxed),
        ),
        ("peer_link_connects", "peer link connections made", links.connects.load(Ordering::Relaxed)),
        (
            "peer_link_writes",
            "writes to peer links, each carrying every frame queued at the time (frames per write: messages sent over writes)",
            links.writes.load(Ordering::Relaxed),
        ),
        (
            "peer_link_resent",
            "stanzas sent again on a new connection because the peer had not taken them",
            links.resent.load(Ordering::Relaxed),
        ),
        (
            "peer_link_returned",
            "stanzas a peer never acknowledged (down, restarted) or that never left, handed back to the router",
            links.returned.load(Ordering::Relaxed),
        ),
        (
            "peer_link_dropped_stale",
            "connections dropped because they had been silent too long (a pause or partition)",
            links.dropped_stale.load(Ordering::Relaxed),
        ),
        (
            "peer_link_waited_for_state",
            "stanzas from a peer that waited until this replica had applied what the peer had when it sent them",
            links.waited_for_state.load(Ordering::Relaxed),
        ),
        (
            "peer_link_state_wait_timeouts",
            "of those, stanzas taken while this replica was still behind (it could not catch up within a sixth of the failure timeout)",
            links.state_wait_timeouts.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, value) in link_counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    if let Some(d) = cluster.discovery() {
        let d = d.stats();
        let beacons = [
            ("discovery_beacons_sent", "multicast beacons sent", d.sent),
            ("discovery_beacons_accepted", "beacons accepted", d.accepted),
            (
                "discovery_beacons_unsigned",
                "beacons ignored: not signed",
                d.unsigned,
            ),
            (
                "discovery_beacons_bad_signature",
                "beacons ignored: signed with another secret",
                d.bad_signature,
            ),
            (
                "discovery_beacons_other_cluster",
                "beacons ignored: another cluster name",
                d.other_cluster,
            ),
            (
                "discovery_beacons_malformed",
                "datagrams ignored: not a beacon",
                d.malformed,
            ),
            (
                "discovery_beacons_stale",
                "signed beacons ignored: stamped more than a minute from this node's clock",
                d.stale,
            ),
            (
                "discovery_beacons_replayed",
                "signed beacons ignored: not newer than one already heard from that node",
                d.replayed,
            ),
        ];
        for (name, help, value) in beacons {
            registry.register(name, help, ConstCounter::new(value));
        }
    }
    registry.register(
        "cluster_serving",
        "1 if this node serves clients (in contact with the majority)",
        ConstGauge::new(i64::from(cluster.serving())),
    );
    registry.register(
        "cluster_members",
        "members (voters and learners)",
        ConstGauge::new(cluster.raft.members().len() as i64),
    );
    registry.register(
        "cluster_nodes_down",
        "members the leader has marked down",
        ConstGauge::new(cluster.down_nodes() as i64),
    );

    let mut body = String::new();
    if encode(&mut body, &registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "encoding failed",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
