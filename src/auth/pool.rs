//! Password hashing on its own few threads.
//!
//! PBKDF2 is slow on purpose: a PLAIN check or a new password costs
//! `auth.scram_iterations` HMAC runs. Run on tokio's blocking pool (hundreds
//! of threads), a flood of bad logins would take every CPU and delay Raft's
//! heartbeats, appends and fsyncs until elections start. Here hashing gets
//! `auth.hash_threads` threads (by default one less than the CPUs) at a lower
//! scheduling priority, and at most `auth.hash_queue` jobs wait; a job beyond
//! that is refused at once ([`Busy`]), which a login answers with
//! `<temporary-auth-failure/>`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The pool had no room for another job.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("password hashing is saturated; try again shortly")
    }
}

pub struct HashPool {
    jobs: SyncSender<Job>,
    threads: usize,
    pub stats: HashStats,
}

#[derive(Default)]
pub struct HashStats {
    pub done: AtomicU64,
    pub refused: AtomicU64,
}

impl HashPool {
    /// `threads` (0: one less than the CPUs, at least one) and `queue` waiting jobs.
    pub fn new(threads: usize, queue: usize) -> Arc<HashPool> {
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1)
        } else {
            threads
        };
        let (jobs, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("chorus-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        job();
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Arc::new(HashPool {
            jobs,
            threads,
            stats: HashStats::default(),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Run `f` on a hashing thread, or refuse at once when the queue is full.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = oneshot::channel();
        let pool = self.clone();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
            pool.stats.done.fetch_add(1, Ordering::Relaxed);
        });
        match self.jobs.try_send(job) {
            Ok(()) => rx.await.map_err(|_| Busy),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err(Busy)
            }
        }
    }
}

/// New SCRAM keys for `password` (`make_user_record`) on the pool.
pub async fn hash_password(
    pool: &Arc<HashPool>,
    password: String,
    iterations: u32,
) -> Result<Result<chorus_raft::UserRecord, super::AuthError>, Busy> {
    pool.run(move || super::make_user_record(&password, iterations))
        .await
}

/// Nice 10 for the calling thread only (Linux applies `setpriority` with a
/// thread id to that thread): hashing yields to Raft and the sessions.
fn lower_priority() {
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_run_and_a_full_queue_refuses() {
        let pool = HashPool::new(1, 1);
        assert_eq!(pool.run(|| 2 + 2).await, Ok(4));
        // Hold the only thread, fill the one waiting place: the next job is refused.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let busy = pool.clone();
        let first = tokio::spawn(async move { busy.run(move || hold.recv().is_ok()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting = pool.clone();
        let second = tokio::spawn(async move { waiting.run(|| 1).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.run(|| 1).await, Err(Busy));
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(true));
        assert_eq!(second.await.unwrap(), Ok(1));
        assert_eq!(pool.stats.refused.load(Ordering::Relaxed), 1);
    }
}
