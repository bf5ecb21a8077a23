//! A node killed with SIGKILL (no clean shutdown) comes back with every committed command.
//!
//! The node runs in a child process: this test binary re-executed with only the ignored
//! helper test selected.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use chorus_raft::{CommandResult, RaftNode};
use common::{create_user, init_tracing, test_config};

const DIR_VAR: &str = "CHORUS_RAFT_KILL_TEST_DIR";
const HELPER: &str = "helper_process_proposes_until_killed";
/// Commits the parent waits to see before it kills the child.
const COMMITS_BEFORE_KILL: usize = 300;

fn config(dir: &std::path::Path) -> chorus_raft::RaftConfig {
    let mut cfg = test_config(dir, 1);
    // Several snapshots and purges happen before the kill, so the restart starts from a
    // snapshot plus a log tail.
    cfg.snapshot_threshold = 64;
    cfg.logs_to_keep = 8;
    cfg
}

/// Runs only as the child of `committed_commands_survive_sigkill`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process, started by committed_commands_survive_sigkill"]
async fn helper_process_proposes_until_killed() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let node = RaftNode::start(config(std::path::Path::new(&dir)))
        .await
        .unwrap();
    for i in 0.. {
        let r = node
            .propose(create_user(&format!("u{i:06}@x")))
            .await
            .unwrap();
        assert_eq!(r, CommandResult::Done);
        // Printed only after propose returned: the command is committed and applied.
        println!("committed {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_commands_survive_sigkill() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            HELPER,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let last = tokio::task::spawn_blocking(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                let n: usize = n.parse().unwrap();
                last = Some(n);
                if n + 1 >= COMMITS_BEFORE_KILL {
                    break;
                }
            }
        }
        last
    })
    .await
    .unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let last = last.expect("child committed nothing");
    assert!(
        last + 1 >= COMMITS_BEFORE_KILL,
        "child stopped early at {last}"
    );

    let node = RaftNode::start(config(dir.path())).await.unwrap();
    let st = node.status();
    assert!(
        st.snapshot_index.is_some(),
        "restart from a snapshot: {st:?}"
    );
    assert!(st.first_log_index > 0, "log was purged: {st:?}");
    let users = node.state().users().unwrap();
    for i in 0..=last {
        assert!(
            node.state().user(&format!("u{i:06}@x")).unwrap().is_some(),
            "committed user {i} lost after SIGKILL (have {} users)",
            users.len()
        );
    }
    // At most the one proposal in flight at the kill may have committed unreported.
    assert!(users.len() <= last + 2, "{} users", users.len());
    node.shutdown().await.unwrap();
}
