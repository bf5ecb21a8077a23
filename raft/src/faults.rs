//! Read faults for tests of what callers do when the replica cannot be read. In debug
//! builds only, `TEST_CHORUS_FAIL_STATE_READS` names what fails (a data kind such as
//! `blocklist`, a queue, or `users` / `routes`; `KIND:USER` for one account's data of that
//! kind only), comma-separated: every read of it returns `ReadError::Storage` as a RocksDB
//! error would. `TEST_CHORUS_DELAY_APPLY_MS` makes each applied batch wait that long before
//! it is written: a replica that lags behind the leader. Release builds have no fault
//! point.

#[cfg(debug_assertions)]
fn names() -> &'static [String] {
    use std::sync::OnceLock;
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        std::env::var("TEST_CHORUS_FAIL_STATE_READS")
            .map(|v| {
                v.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Whether any fault is set (so that the common case costs no formatting).
#[cfg(debug_assertions)]
pub(crate) fn enabled() -> bool {
    !names().is_empty()
}

#[cfg(debug_assertions)]
pub(crate) fn read_fails(name: &str) -> bool {
    names().iter().any(|n| n == name)
}

#[cfg(not(debug_assertions))]
pub(crate) fn enabled() -> bool {
    false
}

#[cfg(not(debug_assertions))]
pub(crate) fn read_fails(_: &str) -> bool {
    false
}

/// How long each applied batch waits first, when the replica is told to lag.
#[cfg(debug_assertions)]
pub(crate) fn apply_delay() -> Option<std::time::Duration> {
    use std::sync::OnceLock;
    static DELAY: OnceLock<Option<std::time::Duration>> = OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("TEST_CHORUS_DELAY_APPLY_MS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .map(std::time::Duration::from_millis)
    })
}

#[cfg(not(debug_assertions))]
pub(crate) fn apply_delay() -> Option<std::time::Duration> {
    None
}
