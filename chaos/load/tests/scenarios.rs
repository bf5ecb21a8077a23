//! The generator's own tests: each scenario, short, against real Chorus processes, with
//! its counts and its zero errors checked (never its times: these machines are shared),
//! and the bad inputs that must end in a clear message and a non-zero exit.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn chorus_bin() -> PathBuf {
    let bin = std::env::var_os("TEST_CHORUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_BIN_EXE_chorus-load")).with_file_name("chorus"));
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace) or set TEST_CHORUS_BIN",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    child: Child,
    dir: tempfile::TempDir,
    c2s: u16,
}

impl Node {
    fn prepare() -> (tempfile::TempDir, u16, u16, u16, u16) {
        (
            tempfile::tempdir().unwrap(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        )
    }

    fn start(prepared: (tempfile::TempDir, u16, u16, u16, u16), extra: &[String]) -> Node {
        let (dir, c2s, c2s_tls, http, cluster) = prepared;
        let log = std::fs::File::create(dir.path().join("node.log")).unwrap();
        let child = Command::new(chorus_bin())
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--c2s", &format!("127.0.0.1:{c2s}")])
            .args(["--c2s-tls", &format!("127.0.0.1:{c2s_tls}")])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--cluster", &format!("127.0.0.1:{cluster}")])
            .arg("--allow-plaintext-auth")
            .args(["--set", "registration.open=true"])
            .args(["--set", "rate.registrations_per_ip_per_minute=0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Node { child, dir, c2s }
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.dir.path().join("api.json").exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("chorus exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "node did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn single() -> Node {
        let mut n = Node::start(Node::prepare(), &[]);
        n.wait_ready();
        n
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.c2s)
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("tls").join("cert.pem")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cluster(n: usize) -> Vec<Node> {
    let prepared: Vec<_> = (0..n).map(|_| Node::prepare()).collect();
    let seeds: Vec<String> = prepared
        .iter()
        .flat_map(|p| ["--seed".to_string(), format!("127.0.0.1:{}", p.4)])
        .collect();
    let mut common: Vec<String> = [
        "--cluster-name",
        "load-test",
        "--cluster-secret",
        "load-test-secret",
        "--bootstrap-expect",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    common.push(n.to_string());
    for s in [
        "cluster.startup.delay=1",
        "cluster.startup.retry.seconds=1",
        "cluster.multicast.enabled=false",
    ] {
        common.extend(["--set".to_string(), s.to_string()]);
    }
    common.extend(seeds);
    let mut nodes: Vec<Node> = prepared
        .into_iter()
        .map(|p| Node::start(p, &common))
        .collect();
    for node in &mut nodes {
        node.wait_ready();
    }
    nodes
}

struct Run {
    out: Output,
    report: Option<serde_json::Value>,
}

impl Run {
    fn text(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.out.status.code(),
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        )
    }

    fn ok(&self) -> &serde_json::Value {
        assert_eq!(self.out.status.code(), Some(0), "{}", self.text());
        self.report.as_ref().expect("a JSON report")
    }
}

fn load(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_chorus-load"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    Run { out, report }
}

#[test]
fn a_login_storm_over_starttls_with_scram_sha_256_from_several_workers_and_sources() {
    let node = Node::single();
    let cert = node.cert();
    let keys = tempfile::NamedTempFile::new().unwrap();
    let run = load(&[
        "login",
        "--server",
        &node.server(),
        "--users",
        "120",
        "--per-worker",
        "50",
        "--sources",
        "3",
        "--register",
        "--concurrency",
        "20",
        "--tls-ca",
        cert.to_str().unwrap(),
        "--keys",
        keys.path().to_str().unwrap(),
    ]);
    let r = run.ok();
    assert_eq!(r["workers"], 3, "{}", run.text());
    assert_eq!(r["login"]["ok"], 120, "{}", run.text());
    assert_eq!(r["login"]["failed"], 0);
    assert_eq!(r["login"]["latency"]["count"], 120);
    // The salted passwords were kept: a second storm logs in with them.
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(keys.path()).unwrap()).unwrap();
    assert_eq!(cached.as_array().unwrap().len(), 120);
    let again = load(&[
        "login",
        "--server",
        &node.server(),
        "--users",
        "120",
        "--tls-ca",
        cert.to_str().unwrap(),
        "--keys",
        keys.path().to_str().unwrap(),
    ]);
    assert_eq!(again.ok()["login"]["ok"], 120, "{}", again.text());
}

#[test]
fn plaintext_logins_with_plain_and_scram_sha_1() {
    let node = Node::single();
    for mechanism in ["PLAIN", "SCRAM-SHA-1"] {
        let run = load(&[
            "login",
            "--server",
            &node.server(),
            "--users",
            "30",
            "--register",
            "--concurrency",
            "10",
            "--mechanism",
            mechanism,
        ]);
        assert_eq!(run.ok()["login"]["ok"], 30, "{mechanism}: {}", run.text());
    }
}

#[test]
fn idle_sessions_are_held_and_the_server_is_sampled() {
    let node = Node::single();
    let pid = node.child.id().to_string();
    let run = load(&[
        "idle",
        "--hold",
        "2",
        "--keepalive",
        "1",
        "--server",
        &node.server(),
        "--users",
        "40",
        "--register",
        "--concurrency",
        "10",
        "--pid",
        &pid,
    ]);
    let r = run.ok();
    assert_eq!(r["login"]["ok"], 40, "{}", run.text());
    let server = &r["server"];
    assert!(
        server["before"]["rss_kib"].as_u64().unwrap() > 0,
        "{server}"
    );
    assert!(server["end"]["rss_kib"].as_u64().unwrap() > 0, "{server}");
    assert!(server["rss_per_session_kib"].is_number(), "{server}");
    assert!(server["cpu_secs"].is_number(), "{server}");
}

#[test]
fn chat_on_one_node_delivers_every_message_once_and_measures_it() {
    let node = Node::single();
    let run = load(&[
        "chat",
        "--rate",
        "100",
        "--secs",
        "2",
        "--server",
        &node.server(),
        "--users",
        "20",
        "--per-worker",
        "10",
        "--register",
        "--concurrency",
        "10",
    ]);
    let r = run.ok();
    let chat = &r["chat"];
    assert!(chat["sent"].as_u64().unwrap() > 0, "{}", run.text());
    assert_eq!(chat["sent"], chat["delivered"], "{}", run.text());
    assert_eq!(chat["latency"]["count"], chat["delivered"]);
}

#[test]
fn chat_across_a_cluster_goes_from_each_node_to_the_others() {
    let nodes = cluster(2);
    let run = load(&[
        "chat",
        "--rate",
        "100",
        "--secs",
        "2",
        "--server",
        &nodes[0].server(),
        "--server",
        &nodes[1].server(),
        "--users",
        "20",
        "--register",
        "--concurrency",
        "10",
    ]);
    let r = run.ok();
    assert_eq!(r["login"]["ok"], 20, "{}", run.text());
    let chat = &r["chat"];
    assert!(chat["sent"].as_u64().unwrap() > 0, "{}", run.text());
    assert_eq!(chat["sent"], chat["delivered"], "{}", run.text());
}

#[test]
fn an_unreachable_server_is_a_clear_error_and_a_non_zero_exit() {
    let port = free_port();
    let run = load(&[
        "chat",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--users",
        "5",
        "--timeout",
        "5",
    ]);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.text());
    let text = run.text();
    assert!(text.contains("connect: 5"), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(text.contains("the scenario does not go on"), "{text}");
}

#[test]
fn a_wrong_password_is_a_clear_error_and_a_non_zero_exit() {
    let node = Node::single();
    let made = load(&[
        "login",
        "--server",
        &node.server(),
        "--users",
        "3",
        "--register",
    ]);
    made.ok();
    let run = load(&[
        "login",
        "--server",
        &node.server(),
        "--users",
        "3",
        "--password",
        "not-the-password",
    ]);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.text());
    assert!(run.text().contains("not-authorized"), "{}", run.text());
}

#[test]
fn a_server_that_closes_every_stream_is_a_clear_error_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let run = load(&[
        "login",
        "--server",
        &format!("127.0.0.1:{port}"),
        "--users",
        "4",
    ]);
    assert_eq!(run.out.status.code(), Some(1), "{}", run.text());
    assert!(
        run.text().contains("stream closed by server"),
        "{}",
        run.text()
    );
}

#[test]
fn bad_arguments_exit_2_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_chorus-load"))
        .args(["chat", "--mechanism", "DIGEST-MD5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DIGEST-MD5"));
}

#[test]
fn a_peak_search_steps_up_the_offered_rate_and_names_the_highest_good_one() {
    let node = Node::single();
    // A generous latency target, so that the search stops at --max, not on this
    // machine's load: the test checks the search, never the figures.
    let run = load(&[
        "peak",
        "--start",
        "20",
        "--max",
        "80",
        "--step-secs",
        "1",
        "--p99-ms",
        "60000",
        "--server",
        &node.server(),
        "--users",
        "10",
        "--register",
        "--concurrency",
        "5",
    ]);
    let r = run.ok();
    let steps = r["steps"].as_array().unwrap();
    let rates: Vec<f64> = steps.iter().map(|s| s["rate"].as_f64().unwrap()).collect();
    assert_eq!(rates, vec![20.0, 40.0, 80.0], "{}", run.text());
    assert!(steps.iter().all(|s| s["good"] == true), "{}", run.text());
    for s in steps {
        assert_eq!(s["chat"]["sent"], s["chat"]["delivered"], "{}", run.text());
    }
    assert_eq!(r["peak"], 80.0);
}

#[test]
fn presence_churn_subscribes_every_pair_and_measures_the_presence_contacts_receive() {
    let nodes = cluster(2);
    let run = load(&[
        "churn",
        "--contacts",
        "4",
        "--rate",
        "4",
        "--secs",
        "2",
        "--server",
        &nodes[0].server(),
        "--server",
        &nodes[1].server(),
        "--users",
        "20",
        "--per-worker",
        "10",
        "--register",
        "--concurrency",
        "10",
    ]);
    let r = run.ok();
    assert_eq!(r["login"]["ok"], 20, "{}", run.text());
    let churn = &r["churn"];
    let cycles = churn["ok"].as_u64().unwrap();
    assert!(cycles > 0, "{}", run.text());
    // Each cycle stamps an unavailable and an available presence, for up to 4 contacts
    // each (fewer when a contact is itself between streams).
    assert_eq!(
        churn["sent"].as_u64().unwrap(),
        2 * cycles,
        "{}",
        run.text()
    );
    let delivered = churn["delivered"].as_u64().unwrap();
    assert!(delivered > 0, "{}", run.text());
    assert!(delivered <= 2 * 4 * cycles, "{}", run.text());
    assert_eq!(churn["latency"]["count"], churn["delivered"]);
    assert_eq!(r["churn_logins"]["count"].as_u64().unwrap(), cycles);
}
