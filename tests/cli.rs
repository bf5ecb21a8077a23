//! The CLI and admin API as other tools drive them: exact command forms,
//! one-line errors with non-zero exits, JSON errors from the API.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{Client, TestNode, BIN};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn user_add_list_passwd_del() {
    let node = TestNode::start();
    let dir = node.data_dir().display().to_string();
    // The exact forms other tools use.
    let out = Command::new(BIN)
        .args([
            "user",
            "add",
            "alice@localhost",
            "--password",
            "secret",
            "--data-dir",
            &dir,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(BIN)
        .args(["user", "list", "--data-dir", &dir])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "alice@localhost\n");

    // Adding again: a one-line error and a non-zero exit.
    let out = node.cli(&["user", "add", "alice@localhost", "--password", "x"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    // Wrong domain, missing user part.
    for bad in ["alice@elsewhere", "localhost"] {
        let out = node.cli(&["user", "add", bad, "--password", "x"]);
        assert!(!out.status.success(), "{bad} accepted");
        assert_eq!(stderr(&out).lines().count(), 1);
    }

    let out = node.cli(&[
        "user",
        "passwd",
        "alice@localhost",
        "--password",
        "new-secret",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Client::starttls(&node).await;
    assert_eq!(c.scram_sha256("alice", "secret").await.name(), "failure");
    assert_eq!(
        c.scram_sha256("alice", "new-secret").await.name(),
        "success"
    );

    let out = node.cli(&["user", "del", "alice@localhost"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = node.cli(&["user", "list"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "");
    let out = node.cli(&["user", "del", "alice@localhost"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

#[tokio::test]
async fn deleting_an_account_ends_its_streams() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "secret");
    let mut c = Client::login(&node, "alice", "secret", "r").await;
    assert!(node
        .cli(&["user", "del", "alice@localhost"])
        .status
        .success());
    assert_eq!(
        c.expect_stream_error().await.as_deref(),
        Some("not-authorized")
    );
}

#[test]
fn explicit_api_and_token() {
    let node = TestNode::start();
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap();
    let api = format!("http://127.0.0.1:{}", node.http);
    let out = Command::new(BIN)
        .args([
            "user",
            "add",
            "bob@localhost",
            "--password",
            "pw",
            "--api",
            &api,
            "--token",
            token.trim(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = Command::new(BIN)
        .args(["user", "list"])
        .env("CHORUS_API", &api)
        .env("CHORUS_TOKEN", token.trim())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "bob@localhost\n");
    let out = Command::new(BIN)
        .args(["user", "list", "--api", &api, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin token"), "{}", stderr(&out));
}

#[test]
fn admin_token_is_private_and_the_api_answers_json_errors() {
    let node = TestNode::start();
    let mode = std::fs::metadata(node.data_dir().join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{}/api/v1/users", node.http);
    let mut resp = agent.get(&url).call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.body_mut().read_json().unwrap();
    assert!(body["error"].as_str().is_some());
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap();
    let mut resp = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .header("Content-Type", "application/json")
        .send("{not json")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.body_mut().read_json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("JSON"), "{body}");
}

#[test]
fn no_running_node_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["user", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no running node"), "{}", stderr(&out));
}

#[test]
fn unknown_setting_or_bad_value_stops_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chorus.toml");
    std::fs::write(&config, "[c2s]\nmax_stanza_byte = 10\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("c2s.max_stanza_byte"),
        "{}",
        stderr(&out)
    );

    let out = Command::new(BIN)
        .args(["serve", "--c2s", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("c2s.listen"), "{}", stderr(&out));

    let out = Command::new(BIN)
        .args(["serve"])
        .env("CHORUS_C2S_MAX_DEPTH", "deep")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("c2s.max_depth"), "{}", stderr(&out));

    let out = Command::new(BIN)
        .args(["serve"])
        .env("CHORUS_C2S_MAX_DEEP", "3")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("CHORUS_C2S_MAX_DEEP"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn settings_from_env_and_file_reach_the_node() {
    let mut node = TestNode::start();
    node.kill9();
    let config = node.data_dir().join("chorus.toml");
    std::fs::write(&config, "domain = \"example.test\"\n").unwrap();
    node.domain = "example.test".into();
    node.domain_flag = false;
    node.extra = vec!["--config".into(), config.display().to_string()];
    node.env = vec![("CHORUS_AUTH_SCRAM_ITERATIONS".into(), "5000".into())];
    node.spawn();
    node.add_user("alice@example.test", "pw");
    let out = node.cli(&["user", "add", "bob@localhost", "--password", "pw"]);
    assert!(!out.status.success(), "localhost is not served any more");
}
