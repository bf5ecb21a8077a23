//! TLS on cluster connections.
//!
//! Every cluster connection (Raft RPCs, forwarded writes, application requests, peer
//! links) is TLS 1.3 unless the operator turned it off. Who is at the other end is proved
//! by the cluster secret, not by a certificate: each node makes a throw-away self-signed
//! certificate at start, a client accepts any certificate whose handshake signature is
//! valid, and the hello that follows proves the secret with an HMAC over the TLS
//! session's exporter value (RFC 8446 7.5). A man in the middle holds two TLS sessions
//! with two exporter values, so the proofs it relays verify on neither side.
//!
//! With operator certificates (`cluster.tls.cert`, `key`, `ca`), both sides also check
//! the other's certificate against the CA (mutual TLS); the secret is still proved.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// The exporter label the hello proofs bind to.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-chorus-cluster-v3";
/// What a client calls the server when it checks no certificate name.
const ANY_NAME: &str = "chorus-cluster";

/// The TLS side of a node's cluster identity: how it connects and how it accepts.
pub struct ClusterTls {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    /// Operator certificates: the server's name (the host of its cluster address) is
    /// checked against its certificate.
    check_names: bool,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("check_names", &self.check_names)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> String {
    format!("cluster TLS: {e}")
}

impl ClusterTls {
    /// A fresh self-signed certificate; peers are authenticated by the secret alone.
    pub fn self_signed() -> Result<ClusterTls, String> {
        let certified =
            rcgen::generate_simple_self_signed(vec![ANY_NAME.to_string()]).map_err(tls_error)?;
        let chain = vec![certified.cert.der().clone()];
        let key =
            PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(tls_error)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth();
        Ok(Self::from_configs(client, server, false))
    }

    /// Operator certificates: this node's chain and key (PEM), and the CA (PEM) that
    /// every peer's certificate must chain to, in both directions.
    pub fn with_ca(chain_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<ClusterTls, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<_, _>>()
            .map_err(tls_error)?;
        if chain.is_empty() {
            return Err(tls_error("no certificate in cluster.tls.cert"));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            pem::Error::NoItemsFound => tls_error("no private key in cluster.tls.key"),
            e => tls_error(e),
        })?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(ca.map_err(tls_error)?).map_err(tls_error)?;
        }
        if roots.is_empty() {
            return Err(tls_error("no certificate in cluster.tls.ca"));
        }
        let roots = Arc::new(roots);
        let client_verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .map_err(tls_error)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls_error)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_error)?;
        Ok(Self::from_configs(client, server, true))
    }

    fn from_configs(client: ClientConfig, server: ServerConfig, check_names: bool) -> ClusterTls {
        ClusterTls {
            connector: TlsConnector::from(Arc::new(client)),
            acceptor: TlsAcceptor::from(Arc::new(server)),
            check_names,
        }
    }

    /// The client side of a new connection to `addr` (HOST:PORT).
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<ClusterStream> {
        let host = if self.check_names {
            addr.rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(addr)
        } else {
            ANY_NAME
        };
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = self.connector.connect(name, tcp).await?;
        Ok(ClusterStream::Tls(Box::new(TlsStream::Client(tls))))
    }

    /// The server side of an accepted connection.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<ClusterStream> {
        let tls = self.acceptor.accept(tcp).await?;
        Ok(ClusterStream::Tls(Box::new(TlsStream::Server(tls))))
    }
}

/// Accepts any server certificate, but still checks that the server signed the
/// handshake with the key of the certificate it sent. The peer is authenticated by the
/// secret-bound hello that follows, not here.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A cluster connection: TLS, or plain TCP when the operator turned TLS off.
pub enum ClusterStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl ClusterStream {
    /// The TLS session's exporter value, which the hello proofs bind to; empty on a
    /// plain connection (which then relies on the nonces alone and is not private).
    pub fn exporter(&self) -> Vec<u8> {
        let mut out = vec![0u8; 32];
        let done = match self {
            ClusterStream::Plain(_) => return Vec::new(),
            ClusterStream::Tls(tls) => match tls.as_ref() {
                TlsStream::Client(s) => s
                    .get_ref()
                    .1
                    .export_keying_material(&mut out, EXPORTER_LABEL, None)
                    .is_ok(),
                TlsStream::Server(s) => s
                    .get_ref()
                    .1
                    .export_keying_material(&mut out, EXPORTER_LABEL, None)
                    .is_ok(),
            },
        };
        if done {
            out
        } else {
            Vec::new()
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClusterStream::Tls(_))
    }
}

impl AsyncRead for ClusterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClusterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_write(cx, data),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClusterStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClusterStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
