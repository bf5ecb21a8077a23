//! Fast failure verdicts (issue 11, item 9): a member whose process is gone
//! (its host refuses connections to its cluster port) is declared down at once;
//! a paused member still waits the whole `cluster.failure.timeout`. The
//! timeout here is ten minutes, so only the fast path can mark a member down
//! within the test's bounds.

mod common;

use std::time::Duration;

use common::cluster::{eventually, member_state, node_id, start_cluster, status, Find};
use common::unsafe_kill;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_down_at_once_and_a_paused_one_is_not() {
    let mut nodes = start_cluster(
        &format!("verdicts-{}", rand::random::<u32>()),
        3,
        Find::Seeds,
        &["--set", "cluster.failure.timeout=600"],
    );
    let leader = nodes
        .iter()
        .position(|n| n.metric("chorus_raft_is_leader") == 1)
        .expect("a leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (paused, killed) = (followers[0], followers[1]);
    let paused_id = node_id(&nodes[paused]);
    let killed_id = node_id(&nodes[killed]);

    // A pause: connections are still accepted by the kernel, pings go unanswered.
    unsafe_kill(nodes[paused].pid(), "STOP");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = member_state(&status(&nodes[leader]), &paused_id);
    unsafe_kill(nodes[paused].pid(), "CONT");
    assert_ne!(
        seen.as_deref(),
        Some("down"),
        "a paused member was declared down"
    );

    // A crash: the host refuses connections to the dead process's port.
    nodes[killed].kill9();
    eventually("the killed member was declared down", || {
        member_state(&status(&nodes[leader]), &killed_id).as_deref() == Some("down")
    })
    .await;
    assert_ne!(
        member_state(&status(&nodes[leader]), &paused_id).as_deref(),
        Some("down")
    );
    // Said by whichever node leads now (the resumed one may have won an election).
    assert!(
        [leader, paused]
            .iter()
            .any(|i| nodes[*i].log().contains("the process is gone")),
        "the verdict did not come from the fast path"
    );
}
