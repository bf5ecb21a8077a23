//! What a server process costs, read from /proc: resident memory and CPU time.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Sample {
    pub rss_kib: u64,
    /// User plus system CPU time since the process started.
    pub cpu_secs: f64,
}

/// Reads one process's figures; an error names the process that is gone.
pub fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| anyhow::anyhow!("server process {pid} cannot be read: {e}"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| anyhow::anyhow!("server process {pid} cannot be read: {e}"))?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Ok(Sample {
        rss_kib,
        cpu_secs: ticks as f64 / hz,
    })
}

/// The servers' figures summed over their processes (a cluster on one machine).
pub fn sample_all(pids: &[u32]) -> anyhow::Result<Sample> {
    let mut total = Sample::default();
    for pid in pids {
        let s = sample(*pid)?;
        total.rss_kib += s.rss_kib;
        total.cpu_secs += s.cpu_secs;
    }
    Ok(total)
}
