//! Accept loops for the STARTTLS port and the direct-TLS port (XEP-0368).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::negotiate::{negotiate, Close, Conn};
use super::transport::Activity;
use super::C2s;
use crate::xmpp::error::StreamErrorKind;

/// Accept client connections until the listener fails.
pub async fn accept_loop(c2s: Arc<C2s>, listener: TcpListener, direct_tls: bool) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                c2s.stats
                    .connections_accepted
                    .fetch_add(1, Ordering::Relaxed);
                let _ = tcp.set_nodelay(true);
                tracing::debug!(%peer, direct_tls, "client connected");
                tokio::spawn(serve(c2s.clone(), tcp, direct_tls));
            }
            Err(e) => {
                // Out of file descriptors, usually: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(c2s: Arc<C2s>, tcp: TcpStream, direct_tls: bool) {
    let activity = Activity::new();
    let mut conn = Conn::new(activity.clone());
    let limit = Duration::from_secs(c2s.settings.c2s.auth_timeout_secs);
    let outcome = tokio::time::timeout(limit, negotiate(&c2s, &mut conn, tcp, direct_tls)).await;
    match outcome {
        Ok(Ok(bound)) => {
            let (Some(reader), Some(writer)) = (conn.reader.take(), conn.writer.take()) else {
                return;
            };
            super::session::start(c2s, reader, writer, activity, bound);
        }
        Ok(Err(close)) => conn.finish(&c2s, close).await,
        Err(_) => {
            let close = Close::Error(
                StreamErrorKind::ConnectionTimeout,
                Some("authentication took too long".into()),
            );
            conn.finish(&c2s, close).await;
        }
    }
}
