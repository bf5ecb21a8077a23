//! One clock for every worker process: CLOCK_MONOTONIC is system-wide on Linux, so a
//! sender in one process stamps a message and a receiver in another subtracts.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds on the system's monotonic clock.
pub fn now_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}
