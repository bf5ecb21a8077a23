//! Stream negotiation (RFC 6120 sections 4-7): stream headers and features,
//! STARTTLS, SASL and resource binding, up to the moment a full JID is bound.
//!
//! One task owns the socket for all of it. Each restart (after TLS, after SASL)
//! starts a fresh parser, and refuses bytes the old parser had already read:
//! plaintext sent ahead of a TLS handshake is an injection attempt.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chorus_raft::{Command, CommandResult, Route};
use tokio::io::{split, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use super::admission::Ticket;
use super::transport::{Activity, Inner, Transport};
use super::C2s;
use crate::auth::{offered_mechanisms, SaslFailure, SaslSession, SaslStep};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, stream_error_xml, StanzaErrorKind, StreamErrorKind};
use crate::xmpp::ns;
use crate::xmpp::stream::{ReadError, StreamEvent, StreamHeader, StreamReader};

pub type Reader = StreamReader<ReadHalf<Transport>>;
pub type Writer = WriteHalf<Transport>;

/// Why negotiation stopped without a bound resource.
#[derive(Debug)]
pub enum Close {
    /// End the stream with this stream error.
    Error(StreamErrorKind, Option<String>),
    /// The client closed its stream; close ours.
    PeerClosed,
    /// The connection is gone; nothing more can be written.
    Gone,
}

fn err(kind: StreamErrorKind, text: &str) -> Close {
    Close::Error(kind, Some(text.to_string()))
}

/// A bound resource, ready to become a session.
pub struct Bound {
    pub full_jid: jid::FullJid,
    pub session_id: String,
    /// The bind result. The session writes it only after registering with the
    /// router, so that nothing sent to the new JID once the client knows it
    /// can arrive before the router knows the session.
    pub reply: Element,
}

/// The connection while it is being negotiated.
pub struct Conn {
    pub reader: Option<Reader>,
    pub writer: Option<Writer>,
    pub activity: Activity,
    header_sent: bool,
    /// Our stream header, written together with what follows it (the features or
    /// a stream error): one write and one wake-up of the client instead of two.
    unsent_header: String,
    stream_id: String,
    channel_binding: Option<Vec<u8>>,
    secure: bool,
    authenticated: bool,
    /// This connection's places among the node's connections.
    pub ticket: Ticket,
}

impl Conn {
    pub fn new(activity: Activity, ticket: Ticket) -> Self {
        Conn {
            reader: None,
            writer: None,
            activity,
            ticket,
            header_sent: false,
            unsent_header: String::new(),
            stream_id: String::new(),
            channel_binding: None,
            secure: false,
            authenticated: false,
        }
    }

    fn attach(&mut self, c2s: &C2s, transport: Transport) {
        let (r, w) = split(transport);
        let limits = if self.authenticated {
            &c2s.limits
        } else {
            &c2s.limits_before_auth
        };
        self.reader = Some(StreamReader::new(r, limits.clone()));
        self.writer = Some(w);
        self.header_sent = false;
    }

    /// Take the socket back from the parser, refusing bytes it read ahead.
    fn detach(&mut self) -> Result<Transport, Close> {
        debug_assert!(
            self.unsent_header.is_empty(),
            "a stream header was never written"
        );
        let reader = self.reader.take().ok_or(Close::Gone)?;
        let writer = self.writer.take().ok_or(Close::Gone)?;
        if reader.buffered_len() > 0 {
            self.writer = Some(writer);
            return Err(err(
                StreamErrorKind::PolicyViolation,
                "data sent ahead of a stream restart",
            ));
        }
        Ok(reader.into_inner().unsplit(writer))
    }

    async fn send(&mut self, xml: &str) -> Result<(), Close> {
        let w = self.writer.as_mut().ok_or(Close::Gone)?;
        if self.unsent_header.is_empty() {
            w.write_all(xml.as_bytes()).await.map_err(|_| Close::Gone)?;
        } else {
            let mut both = std::mem::take(&mut self.unsent_header);
            both.push_str(xml);
            w.write_all(both.as_bytes())
                .await
                .map_err(|_| Close::Gone)?;
        }
        w.flush().await.map_err(|_| Close::Gone)
    }

    /// Our stream header; it leaves with the next `send`.
    fn send_header(&mut self, domain: &str, to: Option<&str>) {
        self.stream_id = random_id();
        let to = to
            .map(|t| format!(" to='{}'", crate::xmpp::escape_attr(t)))
            .unwrap_or_default();
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' id='{}' from='{}'{to} version='1.0' xml:lang='en'>",
            ns::CLIENT,
            ns::STREAM,
            self.stream_id,
            crate::xmpp::escape_attr(domain),
        );
        self.header_sent = true;
        self.unsent_header = header;
    }

    async fn next(&mut self) -> Result<StreamEvent, Close> {
        let reader = self.reader.as_mut().ok_or(Close::Gone)?;
        match reader.next().await {
            Ok(StreamEvent::Closed) => Err(Close::PeerClosed),
            Ok(event) => Ok(event),
            Err(ReadError::Stream { kind, text }) => Err(Close::Error(kind, text)),
            Err(_) => Err(Close::Gone),
        }
    }

    async fn next_stanza(&mut self) -> Result<Element, Close> {
        match self.next().await? {
            StreamEvent::Stanza(el) => Ok(el),
            _ => Err(err(StreamErrorKind::BadFormat, "unexpected stream header")),
        }
    }

    /// End the connection as `close` says, writing what can still be written.
    pub async fn finish(&mut self, c2s: &C2s, close: Close) {
        let tail = match close {
            Close::Gone => None,
            Close::PeerClosed => Some("</stream:stream>".to_string()),
            Close::Error(kind, text) => {
                c2s.stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = kind.name(), ?text, "closing stream with an error");
                Some(format!(
                    "{}</stream:stream>",
                    stream_error_xml(kind, text.as_deref())
                ))
            }
        };
        if let Some(tail) = tail {
            if !self.header_sent && self.writer.is_some() {
                self.send_header(c2s.domain(), None);
            }
            let _ = self.send(&tail).await;
        }
        if let Some(mut w) = self.writer.take() {
            let _ = w.shutdown().await;
        }
    }
}

/// What the server offers at each stage of negotiation.
#[derive(Clone, Debug, PartialEq)]
/// Each names what the client must do next.
enum Stage {
    Tls,
    Auth,
    Bind(jid::BareJid),
}

/// Negotiate a new connection up to a bound resource.
pub async fn negotiate(
    c2s: &Arc<C2s>,
    conn: &mut Conn,
    tcp: TcpStream,
    direct_tls: bool,
) -> Result<Bound, Close> {
    let mut stage = if direct_tls {
        let tls = c2s.tls.accept(tcp).await.map_err(|_| Close::Gone)?;
        start_tls_session(conn, c2s, tls);
        Stage::Auth
    } else {
        conn.attach(
            c2s,
            Transport::new(Inner::Plain(tcp), conn.activity.clone()),
        );
        Stage::Tls
    };
    let mut failures = 0u64;
    loop {
        let header = match conn.next().await? {
            StreamEvent::Header(h) => h,
            _ => return Err(err(StreamErrorKind::BadFormat, "expected a stream header")),
        };
        open_stream(c2s, conn, &header).await?;
        conn.send(&features(c2s, conn, &stage)).await?;
        // Stanzas until this stage ends in a stream restart or a bound resource.
        stage = loop {
            let el = conn.next_stanza().await?;
            match (&stage, el.ns(), el.name()) {
                (Stage::Tls, ns::TLS, "starttls") => {
                    conn.send(&format!("<proceed xmlns='{}'/>", ns::TLS))
                        .await?;
                    let transport = conn.detach()?;
                    let Inner::Plain(tcp) = transport.inner else {
                        return Err(Close::Gone);
                    };
                    let tls = c2s.tls.accept(tcp).await.map_err(|_| Close::Gone)?;
                    start_tls_session(conn, c2s, tls);
                    break Stage::Auth;
                }
                (Stage::Tls | Stage::Auth, ns::SASL, "auth")
                    if conn.secure || c2s.settings.c2s.allow_plaintext_auth =>
                {
                    match authenticate(c2s, conn, &el).await? {
                        Some(user) => {
                            conn.authenticated = true;
                            conn.ticket.authenticated();
                            restart_parser(conn, c2s)?;
                            break Stage::Bind(user);
                        }
                        None => {
                            failures += 1;
                            if failures >= c2s.settings.c2s.max_auth_failures {
                                return Err(err(
                                    StreamErrorKind::PolicyViolation,
                                    "too many failed authentication attempts",
                                ));
                            }
                        }
                    }
                }
                (Stage::Tls, ns::SASL, "auth") => {
                    conn.send(&sasl_failure(SaslFailure::EncryptionRequired))
                        .await?;
                }
                // XEP-0077: creating an account comes before authenticating with it.
                (Stage::Tls | Stage::Auth, ns::CLIENT, "iq")
                    if (conn.secure || c2s.settings.c2s.allow_plaintext_auth)
                        && crate::xep::register::is_request(&el) =>
                {
                    let reply = crate::xep::register::answer_unauthenticated(
                        &crate::xep::register::Newcomer {
                            raft: &c2s.raft,
                            settings: &c2s.settings,
                            rates: &c2s.rates,
                            hashing: &c2s.hashing,
                            ip: conn.ticket.ip(),
                        },
                        &el,
                    )
                    .await;
                    conn.send(&reply.to_xml_in(ns::CLIENT)).await?;
                }
                (Stage::Bind(user), ns::CLIENT, "iq")
                    if el.get_child("bind", ns::BIND).is_some() =>
                {
                    if let Some(bound) = bind(c2s, conn, user, &el).await? {
                        return Ok(bound);
                    }
                }
                (Stage::Tls, _, _) if !c2s.settings.c2s.allow_plaintext_auth => {
                    return Err(err(
                        StreamErrorKind::PolicyViolation,
                        "STARTTLS is required",
                    ));
                }
                _ => {
                    return Err(err(
                        StreamErrorKind::NotAuthorized,
                        "authenticate and bind a resource first",
                    ))
                }
            }
        };
    }
}

fn start_tls_session(conn: &mut Conn, c2s: &C2s, tls: tokio_rustls::server::TlsStream<TcpStream>) {
    conn.channel_binding = super::tls::channel_binding(tls.get_ref().1);
    conn.secure = true;
    conn.attach(
        c2s,
        Transport::new(Inner::Tls(Box::new(tls)), conn.activity.clone()),
    );
}

fn restart_parser(conn: &mut Conn, c2s: &C2s) -> Result<(), Close> {
    let transport = conn.detach()?;
    conn.attach(c2s, transport);
    Ok(())
}

/// Answer a client's stream header with ours, or refuse it (RFC 6120 4.7, 4.9.3).
async fn open_stream(c2s: &C2s, conn: &mut Conn, header: &StreamHeader) -> Result<(), Close> {
    conn.send_header(c2s.domain(), header.from.as_deref());
    if header.default_ns != ns::CLIENT {
        return Err(err(
            StreamErrorKind::InvalidNamespace,
            "the default namespace must be jabber:client",
        ));
    }
    if let Some(to) = &header.to {
        let host = jid::BareJid::new(to).ok().filter(|j| j.node().is_none());
        if host.as_ref().map(|h| h.as_str()) != Some(c2s.domain()) {
            return Err(err(
                StreamErrorKind::HostUnknown,
                "this server does not serve that domain",
            ));
        }
    }
    let major = header
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if major.is_none_or(|m| m < 1) {
        return Err(err(
            StreamErrorKind::UnsupportedVersion,
            "XMPP 1.0 is required",
        ));
    }
    Ok(())
}

fn features(c2s: &C2s, conn: &Conn, stage: &Stage) -> String {
    let plaintext_ok = c2s.settings.c2s.allow_plaintext_auth;
    let mut out = String::from("<stream:features>");
    match stage {
        Stage::Tls => {
            let required = if plaintext_ok { "" } else { "<required/>" };
            out.push_str(&format!(
                "<starttls xmlns='{}'>{required}</starttls>",
                ns::TLS
            ));
            if plaintext_ok {
                out.push_str(&mechanisms(conn, plaintext_ok));
            }
        }
        Stage::Auth => out.push_str(&mechanisms(conn, plaintext_ok)),
        Stage::Bind(_) => {
            out.push_str(&format!("<bind xmlns='{}'/>", ns::BIND));
            out.push_str(&format!(
                "<session xmlns='{}'><optional/></session>",
                ns::SESSION
            ));
            // XEP-0237 roster versioning and RFC 6121 3.4 pre-approval.
            out.push_str(&format!(
                "<ver xmlns='{}'/>",
                crate::im::roster::VER_FEATURE_NS
            ));
            out.push_str("<sub xmlns='urn:xmpp:features:pre-approval'/>");
            out.push_str(&format!("<csi xmlns='{}'/>", crate::xep::csi::NS));
        }
    }
    // XEP-0077: offered wherever authentication is.
    if !matches!(stage, Stage::Bind(_)) && (conn.secure || plaintext_ok) {
        out.push_str(&crate::xep::register::stream_feature(&c2s.settings));
    }
    out.push_str("</stream:features>");
    out
}

fn mechanisms(conn: &Conn, plaintext_ok: bool) -> String {
    let mut out = format!("<mechanisms xmlns='{}'>", ns::SASL);
    for m in offered_mechanisms(conn.secure, conn.channel_binding.is_some(), plaintext_ok) {
        out.push_str(&format!("<mechanism>{}</mechanism>", m.name()));
    }
    out.push_str("</mechanisms>");
    out
}

/// Answer a failed SASL attempt, counted before the client can see it.
async fn refuse(c2s: &C2s, conn: &mut Conn, f: SaslFailure) -> Result<(), Close> {
    c2s.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
    conn.send(&sasl_failure(f)).await
}

async fn refuse_with_text(
    c2s: &C2s,
    conn: &mut Conn,
    f: SaslFailure,
    text: &str,
) -> Result<(), Close> {
    c2s.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
    conn.send(&format!(
        "<failure xmlns='{}'><{}/><text xml:lang='en'>{}</text></failure>",
        ns::SASL,
        f.name(),
        crate::xmpp::escape_text(text)
    ))
    .await
}

fn sasl_failure(f: SaslFailure) -> String {
    format!("<failure xmlns='{}'><{}/></failure>", ns::SASL, f.name())
}

/// Decode SASL payload text: empty means no data, "=" means empty data (RFC 6120 6.4.2).
fn sasl_payload(el: &Element) -> Result<Option<Vec<u8>>, ()> {
    let text = el.text();
    let text = text.trim();
    match text {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        t => B64.decode(t).map(Some).map_err(|_| ()),
    }
}

/// Run one SASL exchange; `Some(user)` on success, `None` after a failure the
/// client may retry.
async fn authenticate(
    c2s: &C2s,
    conn: &mut Conn,
    auth: &Element,
) -> Result<Option<jid::BareJid>, Close> {
    let mechanism = auth.attr("mechanism").unwrap_or_default().to_string();
    let mut session = match SaslSession::start(
        &mechanism,
        c2s.credentials.clone(),
        conn.secure,
        c2s.settings.c2s.allow_plaintext_auth,
        conn.channel_binding.clone(),
    ) {
        Ok(s) => s,
        Err(f) => {
            refuse(c2s, conn, f).await?;
            return Ok(None);
        }
    };
    let mut input = match sasl_payload(auth) {
        Ok(Some(data)) => data,
        Ok(None) => {
            // No initial response: ask for it with an empty challenge.
            conn.send(&format!("<challenge xmlns='{}'/>", ns::SASL))
                .await?;
            match next_sasl_response(c2s, conn).await? {
                Some(data) => data,
                None => return Ok(None),
            }
        }
        Err(()) => {
            refuse(c2s, conn, SaslFailure::IncorrectEncoding).await?;
            return Ok(None);
        }
    };
    // Refused before any PBKDF2 run: the address or the account failed too often.
    let ip = conn.ticket.ip();
    let account = crate::auth::claimed_username(session.mechanism(), &input)
        .map(|name| super::account_key(&name, c2s.domain()));
    if let Err(limit) = c2s.rates.sasl_allowed(ip, account.as_deref()) {
        tracing::info!(%ip, ?account, ?limit, "SASL attempt refused by a rate limit");
        refuse_with_text(
            c2s,
            conn,
            SaslFailure::TemporaryAuthFailure,
            "too many failed attempts; try again later",
        )
        .await?;
        return Ok(None);
    }
    // An account made a moment ago through another node may not be in this replica yet:
    // before the exchange takes the name for an unknown one, the replica catches up with
    // the leader (docs/clustering.md, "Read your writes across nodes"). Only names not
    // found pay for it, and failures are rate-limited above.
    if let Some(name) = crate::auth::claimed_username(session.mechanism(), &input) {
        if matches!(c2s.credentials.lookup(&name), Ok(None)) {
            c2s.cluster.catch_up().await;
        }
    }
    loop {
        let step = if session.mechanism() == crate::auth::Mechanism::Plain {
            // PLAIN costs a PBKDF2 run: on the hashing pool, never beside Raft.
            let mut s = session;
            match c2s
                .hashing
                .run(move || {
                    let step = s.step(&input);
                    (s, step)
                })
                .await
            {
                Ok((s, step)) => {
                    session = s;
                    step
                }
                Err(busy) => {
                    tracing::info!(%ip, "SASL PLAIN refused: {busy}");
                    refuse_with_text(
                        c2s,
                        conn,
                        SaslFailure::TemporaryAuthFailure,
                        "the server is busy; try again shortly",
                    )
                    .await?;
                    return Ok(None);
                }
            }
        } else {
            // SCRAM's server steps are a few HMACs: no PBKDF2 on the server.
            session.step(&input)
        };
        match step {
            SaslStep::Challenge(data) => {
                conn.send(&format!(
                    "<challenge xmlns='{}'>{}</challenge>",
                    ns::SASL,
                    B64.encode(data)
                ))
                .await?;
                match next_sasl_response(c2s, conn).await? {
                    Some(data) => input = data,
                    None => return Ok(None),
                }
            }
            SaslStep::Success {
                username,
                additional_data,
            } => {
                let Some(user) = super::account_jid(&username, c2s.domain()) else {
                    c2s.rates.sasl_failed(ip, account.as_deref());
                    refuse(c2s, conn, SaslFailure::NotAuthorized).await?;
                    return Ok(None);
                };
                let body = additional_data.map(|d| B64.encode(d)).unwrap_or_default();
                c2s.stats.auth_successes.fetch_add(1, Ordering::Relaxed);
                conn.send(&format!("<success xmlns='{}'>{body}</success>", ns::SASL))
                    .await?;
                tracing::info!(user = %user, mechanism, "authenticated");
                return Ok(Some(user));
            }
            SaslStep::Failure(f) => {
                tracing::info!(mechanism, failure = f.name(), "authentication failed");
                c2s.rates.sasl_failed(ip, account.as_deref());
                refuse(c2s, conn, f).await?;
                return Ok(None);
            }
        }
    }
}

/// The client's next `<response/>`; `None` if it aborted (answered here).
async fn next_sasl_response(c2s: &C2s, conn: &mut Conn) -> Result<Option<Vec<u8>>, Close> {
    let el = conn.next_stanza().await?;
    if el.is("abort", ns::SASL) {
        refuse(c2s, conn, SaslFailure::Aborted).await?;
        return Ok(None);
    }
    if !el.is("response", ns::SASL) {
        return Err(err(
            StreamErrorKind::NotAuthorized,
            "expected a SASL response",
        ));
    }
    match sasl_payload(&el) {
        Ok(data) => Ok(Some(data.unwrap_or_default())),
        Err(()) => {
            refuse(c2s, conn, SaslFailure::IncorrectEncoding).await?;
            Ok(None)
        }
    }
}

/// RFC 6120 7: bind the requested (or a server-made) resource through Raft. A
/// bind of a full JID already in use replaces the older stream, which the
/// router then ends with `<conflict/>`.
async fn bind(
    c2s: &C2s,
    conn: &mut Conn,
    user: &jid::BareJid,
    iq: &Element,
) -> Result<Option<Bound>, Close> {
    if iq.attr("type") != Some("set") || iq.attr("id").is_none() {
        conn.send(&error_reply(iq, StanzaErrorKind::BadRequest, None).to_xml_in(ns::CLIENT))
            .await?;
        return Ok(None);
    }
    let requested = iq
        .get_child("bind", ns::BIND)
        .and_then(|b| b.get_child("resource", ns::BIND))
        .map(|r| r.text().trim().to_string())
        .filter(|r| !r.is_empty());
    let resource = requested.unwrap_or_else(|| format!("chorus-{}", &random_id()[..12]));
    let Ok(full_jid) = user.with_resource_str(&resource) else {
        conn.send(
            &error_reply(iq, StanzaErrorKind::BadRequest, Some("invalid resource"))
                .to_xml_in(ns::CLIENT),
        )
        .await?;
        return Ok(None);
    };
    if !c2s.cluster.serving() {
        // Cut off from the majority (or leaving): the client should go to another node.
        let reply = error_reply(
            iq,
            StanzaErrorKind::ServiceUnavailable,
            Some("this node is not serving clients now; connect to another node"),
        );
        conn.send(&reply.to_xml_in(ns::CLIENT)).await?;
        return Ok(None);
    }
    let session_id = random_id();
    let route = Route {
        node: c2s.node_id,
        session: session_id.clone(),
    };
    match c2s
        .raft
        .propose(Command::BindResource {
            full_jid: full_jid.to_string(),
            route,
        })
        .await
    {
        Ok(CommandResult::Bound { replaced }) => {
            if let Some(old) = replaced {
                tracing::info!(jid = %full_jid, old_node = old.node, "bind replaced an older stream");
            }
        }
        other => {
            tracing::warn!(jid = %full_jid, ?other, "bind was not committed");
            let reply = error_reply(
                iq,
                StanzaErrorKind::InternalServerError,
                Some("could not bind, try again"),
            );
            conn.send(&reply.to_xml_in(ns::CLIENT)).await?;
            return Ok(None);
        }
    }
    let mut result = Element::new("iq", ns::CLIENT).with_attr("type", "result");
    if let Some(id) = iq.attr("id") {
        result.set_attr("id", id);
    }
    let result = result.with_child(
        Element::new("bind", ns::BIND)
            .with_child(Element::new("jid", ns::BIND).with_text(full_jid.to_string())),
    );
    Ok(Some(Bound {
        full_jid,
        session_id,
        reply: result,
    }))
}

/// 128 random bits in hex, from the thread's CSPRNG: unpredictable like a v4
/// UUID, without a getrandom system call for each stream header and resource.
fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
