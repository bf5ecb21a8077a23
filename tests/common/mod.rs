//! Test support: a real `chorus` process on free loopback ports, and the
//! project's own small XMPP client (TLS, SCRAM-SHA-256 written from RFC 5802,
//! bind, send and receive).

#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use chorus::xmpp::stream::{Limits, ReadError, StreamEvent, StreamReader};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

pub mod cluster;

pub const BIN: &str = env!("CARGO_BIN_EXE_chorus");

/// A port no other test of this process was given, below the ephemeral range: a port
/// the kernel picked for us (`bind(0)`) can be taken by some outgoing connection's local
/// port before the node binds it, which many nodes connecting to each other make likely.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN.lock().unwrap();
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if given.contains(&port) {
            continue;
        }
        let tcp = StdListener::bind(("127.0.0.1", port)).is_ok();
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if tcp && udp {
            given.insert(port);
            return port;
        }
    }
}

/// One `chorus serve` process with its own data dir and ports.
pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub domain: String,
    pub c2s: u16,
    pub c2s_tls: u16,
    pub http: u16,
    pub cluster: u16,
    pub extra: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Pass `--domain` (off when a test sets the domain another way).
    pub domain_flag: bool,
    pub child: Option<Child>,
}

impl TestNode {
    pub fn start() -> TestNode {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> TestNode {
        let mut node = Self::prepare(extra);
        node.spawn();
        node
    }

    /// A node with its ports and data dir chosen but not started (cluster tests start
    /// several at once).
    pub fn prepare(extra: &[&str]) -> TestNode {
        TestNode {
            dir: tempfile::tempdir().unwrap(),
            domain: "localhost".into(),
            c2s: free_port(),
            c2s_tls: free_port(),
            http: free_port(),
            cluster: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            domain_flag: true,
            child: None,
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn serve_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--c2s".into(),
            format!("127.0.0.1:{}", self.c2s),
            "--c2s-tls".into(),
            format!("127.0.0.1:{}", self.c2s_tls),
            "--http".into(),
            format!("127.0.0.1:{}", self.http),
            "--cluster".into(),
            format!("127.0.0.1:{}", self.cluster),
        ];
        if self.domain_flag {
            args.extend(["--domain".to_string(), self.domain.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Start the process and wait until its admin API answers.
    pub fn spawn(&mut self) {
        self.spawn_nowait();
        self.wait_ready();
    }

    /// Start the process without waiting for it.
    pub fn spawn_nowait(&mut self) {
        let api_file = self.data_dir().join("api.json");
        let _ = std::fs::remove_file(&api_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data_dir().join("node.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(self.serve_args())
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG")
                    .unwrap_or_else(|_| "info,chorus=debug,openraft=warn".into()),
            )
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn chorus");
        self.child = Some(child);
    }

    /// Wait until the node's admin API is up (it has joined or formed its cluster).
    pub fn wait_ready(&mut self) {
        let api_file = self.data_dir().join("api.json");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api_file.exists() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("chorus exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("node.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe_kill(child.id(), "TERM");
            child.wait().unwrap();
        }
    }

    /// Resident memory of the node process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }

    /// Open file descriptors of the node process (sockets among them).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// A counter's or gauge's value in the node's /metrics.
    pub fn metric(&self, name: &str) -> u64 {
        let body = ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
    }

    /// Run `chorus ARGS... --data-dir DIR` (the CLI as other tools drive it).
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run chorus cli")
    }

    pub fn add_user(&self, jid: &str, password: &str) {
        let out = self.cli(&["user", "add", jid, "--password", password]);
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// GET an admin API path with the node's token.
    pub fn api_get(&self, path: &str) -> serde_json::Value {
        let token = std::fs::read_to_string(self.data_dir().join("admin.token")).unwrap();
        let mut resp = ureq::get(&format!("http://127.0.0.1:{}{path}", self.http))
            .header("Authorization", &format!("Bearer {}", token.trim()))
            .call()
            .unwrap();
        resp.body_mut().read_json().unwrap()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.data_dir().join("tls").join("cert.pem")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() && std::env::var_os("TEST_SHOW_LOGS").is_some() {
            eprintln!("==== log of node {} ====\n{}", self.cluster, self.log());
        }
    }
}

pub fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A TCP connection to the node's `port` from the loopback address `source`
/// (127.0.0.2 and up are as local as 127.0.0.1, and count as other clients).
pub async fn connect_from(source: &str, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

/// `connect_from`, with a receive buffer as small as the kernel allows: a client that
/// stops reading fills it at once.
pub async fn connect_tiny_buffer(source: &str, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(([127, 0, 0, 1], port).into()).await.unwrap()
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The project's own XMPP client, just enough to drive the server in tests.
pub struct Client {
    pub reader: Option<StreamReader<ReadHalf<Box<dyn Io>>>>,
    pub writer: Option<WriteHalf<Box<dyn Io>>>,
    pub domain: String,
    pub jid: Option<String>,
    pub features: Option<Element>,
}

pub fn tls_connector(cert: &Path) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert).unwrap();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

impl Client {
    fn from_io(io: Box<dyn Io>, domain: &str) -> Client {
        let (r, w) = tokio::io::split(io);
        Client {
            reader: Some(StreamReader::new(
                r,
                Limits {
                    max_stanza_bytes: 1 << 24,
                    ..Limits::default()
                },
            )),
            writer: Some(w),
            domain: domain.into(),
            jid: None,
            features: None,
        }
    }

    /// A TCP connection the test made itself, before any stream is opened.
    pub fn from_tcp(tcp: TcpStream, domain: &str) -> Client {
        Client::from_io(Box::new(tcp), domain)
    }

    /// Plain TCP, before any stream is opened.
    pub async fn tcp(port: u16, domain: &str) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Client::from_io(Box::new(tcp), domain)
    }

    /// Connect to the STARTTLS port and upgrade.
    pub async fn starttls(node: &TestNode) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", node.c2s)).await.unwrap();
        Client::starttls_over(node, tcp).await
    }

    /// Upgrade a TCP connection the test made itself (a source address, buffer sizes).
    pub async fn starttls_over(node: &TestNode, tcp: TcpStream) -> Client {
        let mut c = Client::from_io(Box::new(tcp), &node.domain);
        c.open().await;
        assert!(
            c.features
                .as_ref()
                .unwrap()
                .get_child("starttls", ns::TLS)
                .is_some(),
            "no starttls offered"
        );
        c.send(&format!("<starttls xmlns='{}'/>", ns::TLS)).await;
        let proceed = c.recv().await;
        assert!(proceed.is("proceed", ns::TLS), "{proceed:?}");
        let r = c.reader.take().unwrap().into_inner();
        let io = r.unsplit(c.writer.take().unwrap());
        let name = rustls::pki_types::ServerName::try_from(node.domain.clone()).unwrap();
        let tls = tls_connector(&node.cert_path())
            .connect(name, io)
            .await
            .unwrap();
        let mut c = Client::from_io(Box::new(tls), &node.domain);
        c.open().await;
        c
    }

    /// Connect to the direct-TLS port (XEP-0368).
    pub async fn direct_tls(node: &TestNode) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", node.c2s_tls))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from(node.domain.clone()).unwrap();
        let tls = tls_connector(&node.cert_path())
            .connect(name, tcp)
            .await
            .unwrap();
        let mut c = Client::from_io(Box::new(tls), &node.domain);
        c.open().await;
        c
    }

    pub async fn send(&mut self, xml: &str) {
        let w = self.writer.as_mut().unwrap();
        w.write_all(xml.as_bytes()).await.unwrap();
        w.flush().await.unwrap();
    }

    /// Send, ignoring a connection the server already closed.
    pub async fn try_send(&mut self, xml: &[u8]) -> bool {
        let w = self.writer.as_mut().unwrap();
        w.write_all(xml).await.is_ok() && w.flush().await.is_ok()
    }

    /// Open a stream and read the header and features.
    pub async fn open(&mut self) {
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{}' to='{}' version='1.0'>",
            ns::STREAM,
            self.domain
        );
        self.send(&header).await;
        match self.next().await {
            Ok(StreamEvent::Header(_)) => {}
            other => panic!("expected a stream header, got {other:?}"),
        }
        let features = self.recv().await;
        assert_eq!(features.name(), "features", "{features:?}");
        self.features = Some(features);
    }

    pub async fn next(&mut self) -> Result<StreamEvent, ReadError> {
        tokio::time::timeout(
            Duration::from_secs(30),
            self.reader.as_mut().unwrap().next(),
        )
        .await
        .expect("server did not answer within 30 s")
    }

    pub async fn recv(&mut self) -> Element {
        match self.next().await {
            Ok(StreamEvent::Stanza(el)) => el,
            other => panic!("expected a stanza, got {other:?}"),
        }
    }

    /// Read until the server closes the stream; return the stream error's condition, if any.
    pub async fn expect_stream_error(&mut self) -> Option<String> {
        loop {
            match self.next().await {
                Ok(StreamEvent::Stanza(el)) if el.name() == "error" && el.ns() == ns::STREAM => {
                    return el
                        .children()
                        .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
                        .map(|c| c.name().to_string());
                }
                Ok(StreamEvent::Stanza(_)) | Ok(StreamEvent::Header(_)) => continue,
                Ok(StreamEvent::Closed) | Err(_) => return None,
            }
        }
    }

    pub fn mechanisms(&self) -> Vec<String> {
        self.features
            .as_ref()
            .and_then(|f| f.get_child("mechanisms", ns::SASL))
            .map(|m| m.children().map(|c| c.text()).collect())
            .unwrap_or_default()
    }

    /// SCRAM-SHA-256 (RFC 5802 / 7677) without channel binding. Returns the
    /// server's final `<success/>` or `<failure/>` element.
    pub async fn scram_sha256(&mut self, user: &str, password: &str) -> Element {
        let cnonce = B64.encode(rand::random::<[u8; 18]>());
        let client_first_bare = format!("n={user},r={cnonce}");
        let first = format!("n,,{client_first_bare}");
        self.send(&format!(
            "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
            ns::SASL,
            B64.encode(first.as_bytes())
        ))
        .await;
        let challenge = self.recv().await;
        if challenge.name() != "challenge" {
            return challenge;
        }
        let server_first = String::from_utf8(B64.decode(challenge.text().trim()).unwrap()).unwrap();
        let attrs: std::collections::HashMap<&str, &str> = server_first
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let nonce = attrs["r"];
        assert!(nonce.starts_with(&cnonce), "server nonce must extend ours");
        let salt = B64.decode(attrs["s"]).unwrap();
        let iterations: u32 = attrs["i"].parse().unwrap();
        let mut salted = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, iterations, &mut salted);
        let client_key = hmac256(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac256(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let final_msg = format!("{without_proof},p={}", B64.encode(proof));
        self.send(&format!(
            "<response xmlns='{}'>{}</response>",
            ns::SASL,
            B64.encode(final_msg.as_bytes())
        ))
        .await;
        let outcome = self.recv().await;
        if outcome.name() == "success" {
            let server_key = hmac256(&salted, b"Server Key");
            let expected = format!(
                "v={}",
                B64.encode(hmac256(&server_key, auth_message.as_bytes()))
            );
            let got = String::from_utf8(B64.decode(outcome.text().trim()).unwrap()).unwrap();
            assert_eq!(
                got, expected,
                "server signature must prove the server knows the key"
            );
        }
        outcome
    }

    /// SASL PLAIN; the server's `<success/>` or `<failure/>`.
    pub async fn plain(&mut self, user: &str, password: &str) -> Element {
        let payload = B64.encode(format!("\0{user}\0{password}"));
        self.send(&format!(
            "<auth xmlns='{}' mechanism='PLAIN'>{payload}</auth>",
            ns::SASL
        ))
        .await;
        self.recv().await
    }

    /// After SASL success: restart the stream (fresh parser, new header).
    pub async fn restart(&mut self) {
        let r = self.reader.take().unwrap().into_inner();
        self.reader = Some(StreamReader::new(
            r,
            Limits {
                max_stanza_bytes: 1 << 24,
                ..Limits::default()
            },
        ));
        self.open().await;
    }

    /// Bind a resource on a restarted stream.
    pub async fn bind_resource(&mut self, resource: Option<&str>) -> Element {
        let res = resource
            .map(|r| format!("<resource>{r}</resource>"))
            .unwrap_or_default();
        self.send(&format!(
            "<iq type='set' id='bind1'><bind xmlns='{}'>{res}</bind></iq>",
            ns::BIND
        ))
        .await;
        let reply = self.recv().await;
        if let Some(jid) = reply
            .get_child("bind", ns::BIND)
            .and_then(|b| b.get_child("jid", ns::BIND))
        {
            self.jid = Some(jid.text());
        }
        reply
    }

    /// After SASL success: restart the stream and bind a resource.
    pub async fn bind(&mut self, resource: Option<&str>) -> Element {
        self.restart().await;
        self.bind_resource(resource).await
    }

    /// STARTTLS, SCRAM-SHA-256, bind, initial presence.
    pub async fn login(node: &TestNode, user: &str, password: &str, resource: &str) -> Client {
        let tcp = TcpStream::connect(("127.0.0.1", node.c2s)).await.unwrap();
        Client::login_over(node, tcp, user, password, resource).await
    }

    /// `login` on a TCP connection the test made itself.
    pub async fn login_over(
        node: &TestNode,
        tcp: TcpStream,
        user: &str,
        password: &str,
        resource: &str,
    ) -> Client {
        let mut c = Client::starttls_over(node, tcp).await;
        let outcome = c.scram_sha256(user, password).await;
        assert_eq!(outcome.name(), "success", "{outcome:?}");
        let bound = c.bind(Some(resource)).await;
        assert_eq!(bound.attr("type"), Some("result"), "{bound:?}");
        c.send("<presence/>").await;
        c
    }

    /// Send an iq (it must carry an `id`) and return the answer to it,
    /// skipping whatever else arrives meanwhile.
    pub async fn iq(&mut self, xml: &str) -> Element {
        let sent = Element::from_xml(xml).expect("the iq is well-formed");
        let id = sent.attr("id").expect("the iq has an id").to_string();
        self.send(xml).await;
        self.recv_until(|e| e.name() == "iq" && e.attr("id") == Some(id.as_str()))
            .await
    }

    /// Receive stanzas until one matches, skipping others (presence, pings).
    pub async fn recv_until(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            let el = self.recv().await;
            if pred(&el) {
                return el;
            }
        }
    }
}

fn hmac256(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The defined condition of an error reply, if it is one.
pub fn condition(reply: &Element) -> Option<String> {
    if reply.attr("type") != Some("error") {
        return None;
    }
    reply
        .get_child("error", ns::CLIENT)?
        .children()
        .find(|c| c.ns() == ns::STANZAS && c.name() != "text")
        .map(|c| c.name().to_string())
}

pub fn assert_result(reply: &Element) {
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
}

pub fn assert_error(reply: &Element, expected: &str) {
    assert_eq!(
        condition(reply).as_deref(),
        Some(expected),
        "expected <{expected}/>: {reply:?}"
    );
}

/// A node started with `extra` flags and accounts `USER@localhost` with password "pw".
pub fn node_with(users: &[&str], extra: &[&str]) -> TestNode {
    let node = TestNode::start_with(extra);
    for u in users {
        node.add_user(&format!("{u}@localhost"), "pw");
    }
    node
}

impl Client {
    /// A ping round trip: what this client sent before has been processed.
    pub async fn sync(&mut self, id: &str) {
        self.send(&format!(
            "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
        self.recv_until(|e| e.attr("id") == Some(id)).await;
    }
}
