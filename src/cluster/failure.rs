//! Failure detection, done once, by the leader: it pings every member; one that has not
//! answered for `cluster.failure.timeout` is committed `NodeDown` (every node then drops its
//! routes and tells its own local contacts, so each contact hears once), and `NodeUp` when
//! it answers again. Every node also watches its own contact with the majority: cut off
//! for that long, it stops serving clients so that they reconnect to the majority side.
//!
//! A member whose process is gone need not wait the whole timeout: when a ping fails and
//! the member's host refuses a plain TCP connection to its cluster port (twice, a moment
//! apart), nothing listens there any more, so the leader commits `NodeDown` at once
//! (`cluster.failure.fast_when_refused`). A paused process still accepts connections (the
//! kernel answers for it) and a partition or a dead host answers nothing: both wait the
//! full timeout, as a slow node must not be mistaken for a dead one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_raft::{node_down_key, Command, NodeId};

use super::protocol::ClusterRequest;
use super::{membership, Cluster, Stop};

/// How often the leader pings and every node re-checks its contact.
pub fn tick(failure_timeout: Duration) -> Duration {
    (failure_timeout / 4).clamp(Duration::from_millis(200), Duration::from_secs(1))
}

pub async fn run(cluster: Arc<Cluster>) {
    let timeout = cluster.failure_timeout();
    let mut interval = tokio::time::interval(tick(timeout));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ok: HashMap<NodeId, Instant> = HashMap::new();
    let mut was_leader = false;
    let mut was_member = false;
    let mut last_leader = None;
    let verdicts = Verdicts::default();
    loop {
        interval.tick().await;
        let me = cluster.node_id();
        let status = cluster.raft.status();
        if status.current_leader != last_leader {
            // A newly elected leader was chosen by a majority that includes our log: that
            // is contact, even before its first ping.
            if status.current_leader.is_some_and(|l| l != me) {
                cluster.note_leader_contact();
            }
            last_leader = status.current_leader;
        }
        let member = status.membership.contains(&me) || status.learners.contains(&me);
        if was_member && !member && !status.membership.is_empty() {
            tracing::warn!(
                node = me,
                "this node was removed from the cluster; stopping"
            );
            cluster
                .stop_serving("this node was removed from the cluster; reconnect to another node");
            cluster.request_stop(Stop::Left);
            return;
        }
        was_member |= member;

        let leader = status.current_leader == Some(me);
        if was_leader && !leader {
            cluster.stepped_down();
        }
        if leader && !was_leader {
            // Just elected by a majority: in contact. Everyone gets a full timeout before
            // being judged.
            last_ok.clear();
            cluster.note_quorum();
        }
        was_leader = leader;
        cluster.refresh_serving();
        if !leader {
            continue;
        }
        let now = Instant::now();
        let members = cluster.raft.members();
        let fast = cluster.settings.cluster.failure.fast_when_refused;
        let pings = members.iter().filter(|m| m.id != me).map(|m| {
            let cluster = cluster.clone();
            let (id, addr) = (m.id, m.addr.clone());
            async move {
                let ping = ClusterRequest::Ping {
                    leader: me,
                    term: status.current_term,
                };
                let deadline = tick(timeout).max(Duration::from_millis(500));
                let started = Instant::now();
                let ok = cluster
                    .call_within(&addr, id, &ping, deadline)
                    .await
                    .is_ok();
                // A ping that failed fast was refused, not lost: worth a closer look.
                let failed_fast = started.elapsed() < deadline / 2;
                let gone = !ok && fast && failed_fast && process_gone(&addr).await;
                (id, ok, gone)
            }
        });
        let answers = futures::future::join_all(pings).await;
        let state = cluster.raft.state();
        // Verdicts are the current leader's alone: never forwarded, so a deposed leader
        // cannot get a stale NodeDown committed after the heal.
        // A down mark that cannot be read gives no verdict this round.
        let down_mark = |id| state.setting(&node_down_key(id)).map(|s| s.is_some());
        if down_mark(me) == Ok(true) {
            verdicts.propose(&cluster, me, true);
        }
        for (id, ok, gone) in answers {
            let seen = *last_ok.entry(id).or_insert(now);
            let Ok(down) = down_mark(id) else { continue };
            match verdict(ok, gone, down, now.duration_since(seen), timeout) {
                Verdict::Up => {
                    tracing::info!(node = id, "member answers again: NodeUp");
                    verdicts.propose(&cluster, id, true);
                }
                Verdict::Down(reason) => {
                    tracing::warn!(node = id, ?timeout, reason, "NodeDown");
                    verdicts.propose(&cluster, id, false);
                }
                Verdict::Wait => {}
            }
            if ok {
                last_ok.insert(id, Instant::now());
            }
        }
        last_ok.retain(|id, _| members.iter().any(|m| m.id == *id));
        // The leader is in contact while a majority of voters (itself included) answered
        // within the timeout; openraft's own quorum-ack figure is only refreshed when its
        // metrics change, so an isolated leader would never see it age.
        let voters: Vec<NodeId> = members.iter().filter(|m| m.voter).map(|m| m.id).collect();
        let reached = voters
            .iter()
            .filter(|id| **id == me || last_ok.get(id).is_some_and(|t| t.elapsed() < timeout))
            .count();
        if reached * 2 > voters.len() {
            cluster.note_quorum();
        }
        verdicts.promote(&cluster);
    }
}

/// What the leader does about one member after a round of pings.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Up,
    Down(&'static str),
    Wait,
}

/// The decision for a member that answered (`ok`) or not, whose host refuses connections
/// to its cluster port (`gone`), is marked down (`down`), and was last heard `silent` ago.
pub fn verdict(ok: bool, gone: bool, down: bool, silent: Duration, timeout: Duration) -> Verdict {
    match (ok, down) {
        (true, true) => Verdict::Up,
        (true, false) | (false, true) => Verdict::Wait,
        (false, false) if gone => {
            Verdict::Down("its host refuses connections: the process is gone")
        }
        (false, false) if silent >= timeout => {
            Verdict::Down("no answer for cluster.failure.timeout")
        }
        (false, false) => Verdict::Wait,
    }
}

/// Whether nothing listens at `addr` any more: its host refuses a TCP connection,
/// twice, 200 ms apart (once could be a restart's moment between two listeners). A
/// timeout or any other error is not proof.
async fn process_gone(addr: &str) -> bool {
    for attempt in 0..2 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused = matches!(
            tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if !refused {
            return false;
        }
    }
    true
}

/// Proposals the detector makes without waiting for them: a leader cut off from the
/// majority cannot commit them, and the loop must go on ticking so that it notices and
/// stops serving (found by the chaos suite: an isolated leader waited 10 s on a NodeDown
/// and served clients all that time). One proposal per verdict at a time.
#[derive(Default)]
struct Verdicts {
    /// (node, up) verdicts proposed and not yet answered.
    in_flight: Arc<std::sync::Mutex<std::collections::HashSet<(NodeId, bool)>>>,
    promoting: Arc<std::sync::atomic::AtomicBool>,
}

impl Verdicts {
    /// Proposes `NodeUp` (`up`) or `NodeDown` for `node`, unless that verdict is pending.
    fn propose(&self, cluster: &Arc<Cluster>, node: NodeId, up: bool) {
        let in_flight = self.in_flight.clone();
        if !in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((node, up))
        {
            return;
        }
        let command = if up {
            Command::NodeUp { node }
        } else {
            Command::NodeDown { node }
        };
        let cluster = cluster.clone();
        tokio::spawn(async move {
            if let Err(e) = cluster.raft.propose_as_leader(command).await {
                tracing::warn!(node, up, error = %e, "failure verdict not committed");
            }
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(node, up));
        });
    }

    fn promote(&self, cluster: &Arc<Cluster>) {
        use std::sync::atomic::Ordering;
        if self.promoting.swap(true, Ordering::AcqRel) {
            return;
        }
        let (cluster, promoting) = (cluster.clone(), self.promoting.clone());
        tokio::spawn(async move {
            membership::promote(&cluster).await;
            promoting.store(false, Ordering::Release);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn a_refusing_host_is_down_at_once_a_silent_one_after_the_timeout() {
        let now = Duration::from_millis(10);
        assert!(matches!(
            verdict(false, true, false, now, T),
            Verdict::Down(_)
        ));
        assert_eq!(verdict(false, false, false, now, T), Verdict::Wait);
        assert!(matches!(
            verdict(false, false, false, T, T),
            Verdict::Down(_)
        ));
    }

    #[test]
    fn an_answer_brings_a_down_member_up_and_nothing_is_proposed_twice() {
        assert_eq!(verdict(true, false, true, T, T), Verdict::Up);
        assert_eq!(verdict(true, false, false, T, T), Verdict::Wait);
        assert_eq!(verdict(false, true, true, T, T), Verdict::Wait);
    }
}
