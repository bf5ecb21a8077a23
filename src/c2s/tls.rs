//! TLS for client streams: the node's certificate and the rustls server config.
//!
//! A certificate from the settings is used as given; otherwise a self-signed one
//! for the domain is made on first start and kept in `DATA_DIR/tls`, so that
//! clients that pinned it on first use still trust the node after a restart.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;

/// Where a self-signed certificate lives when none is configured.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// The acceptor for the node's certificate, making a self-signed one if needed.
pub fn acceptor(settings: &Settings) -> Result<TlsAcceptor> {
    let (cert_path, key_path) = if settings.tls.cert.is_empty() {
        let (cert, key) = self_signed_paths(&settings.data_dir);
        if !cert.exists() || !key.exists() {
            make_self_signed(&settings.domain, &cert, &key)?;
        }
        (cert, key)
    } else {
        (
            PathBuf::from(&settings.tls.cert),
            PathBuf::from(&settings.tls.key),
        )
    };
    let certs = load_certs(&cert_path)?;
    let key = load_key(&key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TLS certificate {} does not match its key",
                cert_path.display()
            )
        })?;
    // XEP-0368: clients connecting to the direct-TLS port say "xmpp-client".
    config.alpn_protocols = vec![b"xmpp-client".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn make_self_signed(domain: &str, cert_path: &Path, key_path: &Path) -> Result<()> {
    let names = vec![domain.to_string(), format!("*.{domain}")];
    let certified =
        rcgen::generate_simple_self_signed(names).context("making a self-signed certificate")?;
    let dir = cert_path
        .parent()
        .ok_or_else(|| anyhow!("bad certificate path"))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    crate::data_dir::write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    fs::write(cert_path, certified.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    tracing::info!(cert = %cert_path.display(), "made a self-signed certificate for {domain}");
    Ok(())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem =
        fs::read(path).with_context(|| format!("opening TLS certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("reading TLS certificate {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem = fs::read(path).with_context(|| format!("opening TLS key {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!("no private key in {}", path.display()),
        e => anyhow!("reading TLS key {}: {e}", path.display()),
    })
}

/// RFC 9266 tls-exporter channel binding; only defined for TLS 1.3 (without
/// extended master secret TLS 1.2 exporters are not unique to the connection).
pub fn channel_binding(conn: &rustls::ServerConnection) -> Option<Vec<u8>> {
    if conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3) {
        return None;
    }
    conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
        .ok()
}
