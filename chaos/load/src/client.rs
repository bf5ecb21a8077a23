//! One generated client: connect (from a chosen source address), STARTTLS, SASL, bind,
//! roster, presence; then a session whose reader records what arrives and whose writer
//! sends what the scenario asks and keeps the connection alive.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chorus::xmpp::element::Element;
use chorus::xmpp::error::stanza_error_condition;
use chorus::xmpp::ns;
use chorus::xmpp::stream::{Limits, StreamEvent, StreamReader};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpSocket;
use tokio_rustls::rustls;

use crate::sasl::{Exchange, KeyCache, Step};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type BoxIo = Box<dyn Io>;

/// Everything a login needs that is the same for every client of a run.
pub struct LoginConfig {
    pub domain: String,
    pub password: String,
    pub mechanism: String,
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub register: bool,
    pub timeout: Duration,
    pub keys: Arc<KeyCache>,
}

/// Why a login or a session failed, by kind (the report counts kinds).
#[derive(Debug)]
pub struct Failure {
    pub kind: &'static str,
    pub detail: String,
}

impl Failure {
    fn new(kind: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

type Result<T> = std::result::Result<T, Failure>;

/// A TLS client that trusts the certificate in `ca` (PEM) only.
pub fn tls_connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)
        .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", ca.display()))?
    {
        let cert = cert.map_err(|e| anyhow::anyhow!("bad certificate in {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("unusable certificate in {}: {e}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A stream being negotiated: one reader, one writer, read in order.
struct Negotiation {
    reader: StreamReader<ReadHalf<BoxIo>>,
    writer: WriteHalf<BoxIo>,
    timeout: Duration,
}

fn limits() -> Limits {
    Limits {
        max_stanza_bytes: 1 << 20,
        ..Limits::default()
    }
}

impl Negotiation {
    fn new(io: BoxIo, timeout: Duration) -> Negotiation {
        let (r, w) = tokio::io::split(io);
        Negotiation {
            reader: StreamReader::new(r, limits()),
            writer: w,
            timeout,
        }
    }

    async fn send(&mut self, xml: &str) -> Result<()> {
        let write = async {
            self.writer.write_all(xml.as_bytes()).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Failure::new("connection lost", e.to_string())),
            Err(_) => Err(Failure::new(
                "timeout",
                "the server did not take what was sent",
            )),
        }
    }

    async fn next(&mut self, waiting_for: &str) -> Result<Element> {
        loop {
            let event = tokio::time::timeout(self.timeout, self.reader.next())
                .await
                .map_err(|_| {
                    Failure::new(
                        "timeout",
                        format!(
                            "no answer within {:?} waiting for {waiting_for}",
                            self.timeout
                        ),
                    )
                })?;
            match event {
                Ok(StreamEvent::Header(_)) => continue,
                Ok(StreamEvent::Stanza(e)) if e.is("error", ns::STREAM) => {
                    return Err(stream_error(&e));
                }
                Ok(StreamEvent::Stanza(e)) => return Ok(e),
                Ok(StreamEvent::Closed) => {
                    return Err(Failure::new(
                        "stream closed by server",
                        format!("while waiting for {waiting_for}"),
                    ))
                }
                Err(e) => {
                    return Err(Failure::new(
                        "stream closed by server",
                        format!("{e} (waiting for {waiting_for})"),
                    ))
                }
            }
        }
    }

    async fn open(&mut self, domain: &str) -> Result<Element> {
        self.send(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{}' to='{domain}' version='1.0'>",
            ns::STREAM
        ))
        .await?;
        let features = self.next("stream features").await?;
        if !features.is("features", ns::STREAM) {
            return Err(Failure::new(
                "protocol",
                format!("expected stream features, got {}", features.to_xml()),
            ));
        }
        Ok(features)
    }

    /// The answer to an iq we sent (other stanzas before it are skipped).
    async fn iq(&mut self, xml: &str, id: &str, what: &str) -> Result<Element> {
        self.send(xml).await?;
        loop {
            let e = self.next(what).await?;
            if e.name() == "iq" && e.attr("id") == Some(id) {
                return Ok(e);
            }
        }
    }

    /// `iq`, where anything but a result is a failure of `kind`.
    async fn iq_result(&mut self, xml: &str, id: &str, kind: &'static str) -> Result<Element> {
        let answer = self.iq(xml, id, kind).await?;
        if answer.attr("type") != Some("result") {
            return Err(Failure::new(
                kind,
                format!("{kind} refused: <{}/>", error_condition(&answer)),
            ));
        }
        Ok(answer)
    }
}

fn stream_error(e: &Element) -> Failure {
    let condition = e
        .children()
        .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
        .map(|c| c.name().to_string())
        .unwrap_or_else(|| "undefined".into());
    Failure::new("stream error", format!("stream error <{condition}/>"))
}

fn error_condition(e: &Element) -> &'static str {
    stanza_error_condition(e).map_or("undefined", |(kind, _)| kind.name())
}

/// Connects and logs `user` in; `source` is the local address to leave from.
pub async fn login(
    cfg: &LoginConfig,
    server: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
) -> Result<Session> {
    login_with_presence(cfg, server, source, user, || "<presence/>".to_string()).await
}

/// `login`, with the initial presence `presence` makes, just before it is sent (so that
/// a stamp in it is the moment it left).
pub async fn login_with_presence(
    cfg: &LoginConfig,
    server: SocketAddr,
    source: Option<IpAddr>,
    user: &str,
    presence: impl FnOnce() -> String,
) -> Result<Session> {
    let socket = TcpSocket::new_v4().map_err(|e| Failure::new("socket", e.to_string()))?;
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| Failure::new("source address", format!("cannot bind {ip}: {e}")))?;
    }
    let tcp = tokio::time::timeout(cfg.timeout, socket.connect(server))
        .await
        .map_err(|_| {
            Failure::new(
                "connect",
                format!("{server}: no answer within {:?}", cfg.timeout),
            )
        })?
        .map_err(|e| Failure::new("connect", format!("{server}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut n = Negotiation::new(Box::new(tcp), cfg.timeout);
    let mut features = n.open(&cfg.domain).await?;

    if let Some(tls) = &cfg.tls {
        if features.get_child("starttls", ns::TLS).is_none() {
            return Err(Failure::new("protocol", "the server offers no STARTTLS"));
        }
        n.send(&format!("<starttls xmlns='{}'/>", ns::TLS)).await?;
        let proceed = n.next("STARTTLS proceed").await?;
        if !proceed.is("proceed", ns::TLS) {
            return Err(Failure::new(
                "tls",
                format!("STARTTLS refused: {}", proceed.to_xml()),
            ));
        }
        let io = n.reader.into_inner().unsplit(n.writer);
        let name = rustls::pki_types::ServerName::try_from(cfg.domain.clone())
            .map_err(|e| Failure::new("tls", format!("bad server name {}: {e}", cfg.domain)))?;
        let tls = tokio::time::timeout(cfg.timeout, tls.connect(name, io))
            .await
            .map_err(|_| Failure::new("timeout", "TLS handshake"))?
            .map_err(|e| Failure::new("tls", e.to_string()))?;
        n = Negotiation::new(Box::new(tls), cfg.timeout);
        features = n.open(&cfg.domain).await?;
    }

    if cfg.register {
        register(&mut n, cfg, user).await?;
    }

    authenticate(&mut n, cfg, user, &features).await?;
    // A new stream after SASL (RFC 6120 6.4.6): a new parser, since the server's header
    // starts a new XML document. Nothing is buffered: the server waits for our header.
    n.reader = StreamReader::new(n.reader.into_inner(), limits());
    let features = n.open(&cfg.domain).await?;
    if features.get_child("bind", ns::BIND).is_none() {
        return Err(Failure::new(
            "protocol",
            "no resource binding offered after SASL",
        ));
    }
    n.iq_result(
        &format!(
            "<iq type='set' id='bind'><bind xmlns='{}'><resource>load</resource></bind></iq>",
            ns::BIND
        ),
        "bind",
        "bind",
    )
    .await?;
    // RFC 3921 sessions: only where the server still requires one.
    if let Some(s) = features.get_child("session", ns::SESSION) {
        if s.get_child("optional", ns::SESSION).is_none() {
            n.iq_result(
                &format!(
                    "<iq type='set' id='sess'><session xmlns='{}'/></iq>",
                    ns::SESSION
                ),
                "sess",
                "session",
            )
            .await?;
        }
    }
    n.iq_result(
        &format!(
            "<iq type='get' id='roster'><query xmlns='{}'/></iq>",
            ns::ROSTER
        ),
        "roster",
        "roster",
    )
    .await?;
    n.send(&presence()).await?;
    Ok(Session {
        reader: n.reader,
        writer: n.writer,
    })
}

/// XEP-0077 before SASL; an account that exists already is fine.
async fn register(n: &mut Negotiation, cfg: &LoginConfig, user: &str) -> Result<()> {
    let reply = n
        .iq(
            &format!(
                "<iq type='set' id='reg' to='{}'><query xmlns='jabber:iq:register'><username>{user}</username><password>{}</password></query></iq>",
                cfg.domain, cfg.password
            ),
            "reg",
            "the registration result",
        )
        .await?;
    match reply.attr("type") {
        Some("result") => Ok(()),
        _ if error_condition(&reply) == "conflict" => Ok(()),
        _ => Err(Failure::new(
            "registration",
            format!(
                "registration of {user} refused: <{}/>",
                error_condition(&reply)
            ),
        )),
    }
}

async fn authenticate(
    n: &mut Negotiation,
    cfg: &LoginConfig,
    user: &str,
    features: &Element,
) -> Result<()> {
    let offered: Vec<String> = features
        .get_child("mechanisms", ns::SASL)
        .map(|m| m.children().map(|c| c.text().trim().to_string()).collect())
        .unwrap_or_default();
    if !offered.iter().any(|m| m == &cfg.mechanism) {
        return Err(Failure::new(
            "authentication",
            format!(
                "the server does not offer {} (offered: {})",
                cfg.mechanism,
                offered.join(" ")
            ),
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut sasl = Exchange::start(&cfg.mechanism, user, &cfg.password, cfg.keys.clone())
        .map_err(|e| Failure::new("authentication", e.to_string()))?;
    let first = match sasl
        .step(None)
        .map_err(|e| Failure::new("authentication", e.to_string()))?
    {
        Step::Send(data) if data.is_empty() => "=".to_string(),
        Step::Send(data) => b64.encode(data),
        Step::Done => "=".to_string(),
    };
    n.send(&format!(
        "<auth xmlns='{}' mechanism='{}'>{first}</auth>",
        ns::SASL,
        cfg.mechanism
    ))
    .await?;
    loop {
        let e = n.next("a SASL answer").await?;
        let data = || -> Result<Vec<u8>> {
            let text = e.text();
            let text = text.trim();
            if text.is_empty() || text == "=" {
                return Ok(Vec::new());
            }
            b64.decode(text)
                .map_err(|_| Failure::new("authentication", "the server sent bad base64"))
        };
        match e.name() {
            "challenge" => {
                let input = data()?;
                let reply = match sasl
                    .step(Some(&input))
                    .map_err(|e| Failure::new("authentication", e.to_string()))?
                {
                    Step::Send(d) if !d.is_empty() => b64.encode(d),
                    _ => String::new(),
                };
                n.send(&format!(
                    "<response xmlns='{}'>{reply}</response>",
                    ns::SASL
                ))
                .await?;
            }
            "success" => {
                let input = data()?;
                if !input.is_empty() {
                    // The server's final message: rsasl checks its signature.
                    sasl.step(Some(&input)).map_err(|e| {
                        Failure::new(
                            "authentication",
                            format!("the server did not prove it knows the password: {e}"),
                        )
                    })?;
                }
                return Ok(());
            }
            "failure" => {
                let condition = e
                    .children()
                    .find(|c| c.name() != "text")
                    .map(|c| c.name().to_string())
                    .unwrap_or_else(|| "undefined".into());
                return Err(Failure::new(
                    "authentication",
                    format!("authentication of {user} failed: <{condition}/>"),
                ));
            }
            other => {
                return Err(Failure::new(
                    "protocol",
                    format!("unexpected <{other}/> during SASL"),
                ))
            }
        }
    }
}

/// A logged-in stream, to be split into a reader task and a writer task.
pub struct Session {
    pub reader: StreamReader<ReadHalf<BoxIo>>,
    pub writer: WriteHalf<BoxIo>,
}

/// Answers the server's XEP-0199 pings and roster pushes (RFC 6121 2.1.6), and refuses other
/// requests, so that no server drops an idle generated client for not answering.
pub fn answer_to(e: &Element) -> Option<String> {
    if e.name() != "iq" || !matches!(e.attr("type"), Some("get" | "set")) {
        return None;
    }
    let mut reply = Element::new("iq", ns::CLIENT).with_attr("id", e.attr("id").unwrap_or(""));
    if let Some(from) = e.attr("from") {
        reply.set_attr("to", from);
    }
    let roster_push = e.attr("type") == Some("set") && e.get_child("query", ns::ROSTER).is_some();
    if e.get_child("ping", ns::PING).is_some() || roster_push {
        reply.set_attr("type", "result");
    } else {
        reply.set_attr("type", "error");
        reply.append_child(
            Element::new("error", ns::CLIENT)
                .with_attr("type", "cancel")
                .with_child(Element::new("service-unavailable", ns::STANZAS)),
        );
    }
    Some(reply.to_xml_in(ns::CLIENT))
}
