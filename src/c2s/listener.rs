//! Accept loops for the STARTTLS port and the direct-TLS port (XEP-0368).
//!
//! Each accepted connection first takes its places from `c2s::admission`; a
//! refused one on the STARTTLS port reads a stream error saying which bound it
//! hit (on the direct-TLS port a refusal is a plain close: a TLS handshake is
//! exactly the work a flood wants the node to do).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::admission::{Refusal, Ticket};
use super::negotiate::{negotiate, Close, Conn};
use super::outbound::write_with_progress;
use super::transport::Activity;
use super::C2s;
use crate::xmpp::error::{stream_error_xml, StreamErrorKind};
use crate::xmpp::ns;

/// How long a refused connection is given to take its stream error.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accept client connections until the listener fails.
pub async fn accept_loop(c2s: Arc<C2s>, listener: TcpListener, direct_tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                c2s.stats
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                match c2s.admission.enter(peer.ip()) {
                    Ok(ticket) => {
                        prepare_socket(&c2s, &tcp);
                        tracing::debug!(%peer, direct_tls, "client connected");
                        tokio::spawn(serve(c2s.clone(), tcp, direct_tls, ticket));
                    }
                    Err(refusal) => {
                        tracing::debug!(%peer, ?refusal, "client connection refused");
                        if !direct_tls {
                            tokio::spawn(refuse(c2s.clone(), tcp, refusal));
                        }
                    }
                }
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn prepare_socket(c2s: &C2s, tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let secs = c2s.settings.c2s.tcp_keepalive_secs;
    if secs > 0 {
        // A peer whose host vanished (no FIN, no RST) is found by the kernel
        // within about secs + 3 probes 10 s apart, even on an idle stream.
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(secs))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        if let Err(e) = SockRef::from(tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "could not set TCP keep-alive");
        }
    }
}

/// Our stream header and the refusal's stream error, then close (RFC 6120
/// 4.9.1.1: an error before the client's header still comes after ours).
async fn refuse(c2s: Arc<C2s>, mut tcp: TcpStream, refusal: Refusal) {
    c2s.stats.stream_errors.fetch_add(1, Ordering::Relaxed);
    let (kind, text) = refusal.stream_error();
    let xml = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' from='{}' version='1.0'>{}</stream:stream>",
        ns::CLIENT,
        ns::STREAM,
        crate::xmpp::escape_attr(c2s.domain()),
        stream_error_xml(kind, Some(text)),
    );
    if write_with_progress(&mut tcp, xml.as_bytes(), REFUSAL_WRITE_TIMEOUT)
        .await
        .is_ok()
    {
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, tcp.shutdown()).await;
    }
}

async fn serve(c2s: Arc<C2s>, tcp: TcpStream, direct_tls: bool, ticket: Ticket) {
    let activity = Activity::new();
    let mut conn = Conn::new(activity.clone(), ticket);
    let limit = Duration::from_secs(c2s.settings.c2s.auth_timeout_secs);
    let outcome = tokio::time::timeout(limit, negotiate(&c2s, &mut conn, tcp, direct_tls)).await;
    let close = match outcome {
        Ok(Ok(bound)) => {
            let (Some(reader), Some(writer)) = (conn.reader.take(), conn.writer.take()) else {
                return;
            };
            let ticket = conn.ticket;
            super::session::start(c2s, reader, writer, activity, bound, ticket);
            return;
        }
        Ok(Err(close)) => close,
        Err(_) => Close::Error(
            StreamErrorKind::ConnectionTimeout,
            Some("authentication took too long".into()),
        ),
    };
    // A client that stopped reading must not keep the connection (and its
    // places) past the write timeout.
    if tokio::time::timeout(c2s.write_timeout(), conn.finish(&c2s, close))
        .await
        .is_err()
    {
        c2s.stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }
}
