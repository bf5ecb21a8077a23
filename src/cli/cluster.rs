//! `chorus cluster status|join|leave|remove|enable|disable`: cluster membership
//! over the admin API (`/api/v1/cluster`, docs/api.md).
//!
//! Arguments are checked here, before any call, so a mistyped address or node id
//! is reported as such and not as whatever the node makes of it.

use anyhow::{anyhow, Result};
use clap::Subcommand;
use serde_json::{json, Value};

use super::api_client::Client;
use super::ApiArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show leader, term, commit index, and each member's role, state, lag, sessions, uptime.
    Status {
        /// Print the API's JSON object on one line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make this node join the cluster that HOST:PORT belongs to (the node restarts into it).
    Join {
        /// The cluster address of any member (its cluster.listen), e.g. 10.0.0.1:7070.
        #[arg(value_name = "HOST:PORT")]
        addr: String,
        /// Discard this node's data (accounts and all) to join; refused without it if it has any.
        #[arg(long)]
        wipe: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make this node leave its cluster cleanly (clients are moved off; it then stops).
    Leave {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a dead or unwanted member from the cluster.
    Remove {
        /// The member's node id, in decimal, as `chorus cluster status` shows it.
        #[arg(value_name = "NODE")]
        node: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Let nodes join the cluster and send discovery beacons (cluster-wide).
    Enable {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Let no node join the cluster and send no beacons; members stay (cluster-wide).
    Disable {
        #[command(flatten)]
        api: ApiArgs,
    },
}

pub fn run(cmd: ClusterCommand) -> Result<()> {
    match cmd {
        ClusterCommand::Status { json, api } => {
            let value = Client::new(&api)?.expect("GET", "/api/v1/cluster", None)?;
            if json {
                println!("{}", serde_json::to_string(&value)?);
            } else {
                print!("{}", status_table(&value));
            }
        }
        ClusterCommand::Join { addr, wipe, api } => {
            let addr = check_cluster_addr(&addr)?;
            let value = Client::new(&api)?.expect(
                "POST",
                "/api/v1/cluster/join",
                Some(json!({ "addr": addr, "wipe": wipe })),
            )?;
            let summary = match value.get("cluster_id").and_then(Value::as_str) {
                Some(id) => format!("joining cluster {id} through {addr}"),
                None => format!("joining the cluster of {addr}"),
            };
            println!("{}", message_or(&value, summary));
        }
        ClusterCommand::Leave { api } => {
            let value =
                Client::new(&api)?.expect("POST", "/api/v1/cluster/leave", Some(json!({})))?;
            println!("{}", message_or(&value, "leaving the cluster".into()));
        }
        ClusterCommand::Remove { node, api } => {
            let id = check_node_id(&node)?;
            let value = Client::new(&api)?.expect(
                "DELETE",
                &format!("/api/v1/cluster/members/{id}"),
                None,
            )?;
            println!("{}", message_or(&value, format!("removed node {id}")));
        }
        ClusterCommand::Enable { api } => set_enabled(&api, true)?,
        ClusterCommand::Disable { api } => set_enabled(&api, false)?,
    }
    Ok(())
}

fn set_enabled(api: &ApiArgs, enabled: bool) -> Result<()> {
    let value = Client::new(api)?.expect(
        "PUT",
        "/api/v1/cluster/enabled",
        Some(json!({ "enabled": enabled })),
    )?;
    let now = value
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(enabled);
    println!(
        "{}",
        message_or(&value, format!("clustering {}", on_off(now)))
    );
    Ok(())
}

fn on_off(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

/// The response's `message`, or `summary` when it has none.
fn message_or(value: &Value, summary: String) -> String {
    match value.get("message").and_then(Value::as_str) {
        Some(m) if !m.trim().is_empty() => m.trim().to_string(),
        _ => summary,
    }
}

/// A member's cluster address as `chorus cluster join` takes it: HOST:PORT, with an
/// IPv6 address in brackets. Returns the address trimmed, or why it is not one.
pub fn check_cluster_addr(given: &str) -> Result<String> {
    let addr = given.trim();
    let example = "e.g. 10.0.0.1:7070 or [fd00::1]:7070 (a member's cluster.listen)";
    if addr.is_empty() {
        return Err(anyhow!(
            "no cluster address: give a member's as HOST:PORT, {example}"
        ));
    }
    if addr.contains("://") || addr.contains('/') {
        return Err(anyhow!(
            "`{addr}` is not HOST:PORT: give a member's cluster address without scheme or path, {example}"
        ));
    }
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| {
            anyhow!("`{addr}` has no closing `]` after the IPv6 address, {example}")
        })?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| anyhow!("`{addr}` has no port: write it as HOST:PORT, {example}"))?;
        (host, port)
    } else {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return Err(anyhow!(
                "`{addr}` has no port: write it as HOST:PORT, {example}"
            ));
        };
        if host.contains(':') {
            return Err(anyhow!(
                "`{addr}`: write an IPv6 address in brackets with a port, {example}"
            ));
        }
        (host, port)
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(anyhow!(
            "`{addr}` has no host name or address before the port, {example}"
        ));
    }
    if port.is_empty() {
        return Err(anyhow!(
            "`{addr}` has no port: write it as HOST:PORT, {example}"
        ));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(addr.to_string()),
        _ => Err(anyhow!(
            "`{addr}`: the port must be a number from 1 to 65535, {example}"
        )),
    }
}

/// A node id as `chorus cluster remove` takes it: a decimal u64 other than 0
/// (0 stands for "any node" in the cluster protocol, never for a member).
pub fn check_node_id(given: &str) -> Result<u64> {
    let s = given.trim();
    let hint = "give the node id in decimal, as `chorus cluster status` shows it";
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(anyhow!("`{given}` is not a node id: {hint}"));
    }
    match s.parse::<u64>() {
        Ok(0) => Err(anyhow!("0 is not a node id: {hint}")),
        Ok(id) => Ok(id),
        Err(_) => Err(anyhow!("`{given}` is too large for a node id: {hint}")),
    }
}

/// An uptime in at most two units: `45s`, `13m32s`, `2h05m`, `3d04h`.
pub fn format_uptime(secs: u64) -> String {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    if secs < MINUTE {
        format!("{secs}s")
    } else if secs < HOUR {
        format!("{}m{:02}s", secs / MINUTE, secs % MINUTE)
    } else if secs < DAY {
        format!("{}h{:02}m", secs / HOUR, secs % HOUR / MINUTE)
    } else {
        format!("{}d{:02}h", secs / DAY, secs % DAY / HOUR)
    }
}

const COLUMNS: [&str; 10] = [
    "ID", "ADDRESS", "ROLE", "VOTER", "STATE", "APPLIED", "LAG", "SESSIONS", "VERSION", "UPTIME",
];

/// The human form of `GET /api/v1/cluster`: a summary line, then a table with one
/// row per member, this node's id marked with `*`. Absent or null fields print `-`.
pub fn status_table(status: &Value) -> String {
    let enabled = status
        .get("enabled")
        .and_then(Value::as_bool)
        .map(on_off)
        .unwrap_or("-");
    let mut out = format!(
        "cluster {} (id {}), clustering {}, leader {}, term {}, commit {}\n",
        field(status, "cluster_name"),
        field(status, "cluster_id"),
        enabled,
        field(status, "leader"),
        field(status, "term"),
        field(status, "commit_index"),
    );
    let this = field(status, "node_id");
    let mut rows: Vec<Vec<String>> = vec![COLUMNS.iter().map(|c| c.to_string()).collect()];
    for member in status
        .get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut id = field(member, "id");
        if id != "-" && id == this {
            id.push('*');
        }
        let uptime = member
            .get("uptime_secs")
            .and_then(Value::as_u64)
            .map(format_uptime)
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            id,
            field(member, "addr"),
            field(member, "role"),
            field(member, "voter"),
            field(member, "state"),
            field(member, "applied_index"),
            field(member, "lag"),
            field(member, "sessions"),
            field(member, "version"),
            uptime,
        ]);
    }
    let widths: Vec<usize> = (0..COLUMNS.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One field for the table: strings as they are, numbers in decimal, booleans as
/// yes/no, anything absent or null as `-`.
fn field(object: &Value, key: &str) -> String {
    match object.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(true)) => "yes".into(),
        Some(Value::Bool(false)) => "no".into(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_members() -> Value {
        json!({
            "cluster_name": "chorus", "cluster_id": "1234", "enabled": true,
            "node_id": "42", "leader": "42", "term": 3, "commit_index": 120,
            "voters_target": 5,
            "members": [
                {"id": "42", "addr": "127.0.0.1:7070", "role": "leader", "voter": true,
                 "state": "up", "applied_index": 120, "lag": 0, "sessions": 3,
                 "version": "0.1.0", "protocol": 3, "uptime_secs": 812,
                 "c2s": "127.0.0.1:5222", "http": "127.0.0.1:5280"},
                {"id": "18446744073709551615", "addr": "10.0.0.2:7070", "role": "learner",
                 "voter": false, "state": "up", "applied_index": 118, "lag": 2,
                 "sessions": 11, "version": "0.1.0", "protocol": 3, "uptime_secs": 7500,
                 "c2s": null, "http": null},
                {"id": "7", "addr": "10.0.0.3:7070", "role": "unknown", "voter": true,
                 "state": "unreachable", "applied_index": null, "lag": null,
                 "sessions": null, "version": null, "protocol": null,
                 "uptime_secs": null, "c2s": null, "http": null}
            ]
        })
    }

    #[test]
    fn status_table_has_summary_header_and_one_row_per_member() {
        let table = status_table(&three_members());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(
            lines[0],
            "cluster chorus (id 1234), clustering enabled, leader 42, term 3, commit 120"
        );
        let header: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(header, COLUMNS);
        let leader: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            leader,
            [
                "42*",
                "127.0.0.1:7070",
                "leader",
                "yes",
                "up",
                "120",
                "0",
                "3",
                "0.1.0",
                "13m32s"
            ]
        );
        let learner: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(learner[0], "18446744073709551615");
        assert_eq!(learner[3], "no");
        assert_eq!(learner[9], "2h05m");
    }

    #[test]
    fn status_table_prints_dash_for_unreachable_member_fields() {
        let table = status_table(&three_members());
        let row: Vec<&str> = table.lines().nth(4).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "7",
                "10.0.0.3:7070",
                "unknown",
                "yes",
                "unreachable",
                "-",
                "-",
                "-",
                "-",
                "-"
            ]
        );
    }

    #[test]
    fn status_table_columns_line_up_without_trailing_spaces() {
        let table = status_table(&three_members());
        let lines: Vec<&str> = table.lines().skip(1).collect();
        let at = |line: &str, word: &str| line.find(word).unwrap();
        // Column starts are the same in the header and every row.
        let addr = at(lines[0], "ADDRESS");
        assert_eq!(at(lines[1], "127.0.0.1:7070"), addr);
        assert_eq!(at(lines[2], "10.0.0.2:7070"), addr);
        assert_eq!(at(lines[3], "10.0.0.3:7070"), addr);
        for line in lines {
            assert_eq!(line, line.trim_end());
        }
    }

    #[test]
    fn status_table_marks_only_this_node() {
        let mut status = three_members();
        status["node_id"] = json!("7");
        let table = status_table(&status);
        let ids: Vec<&str> = table
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(ids, ["42", "18446744073709551615", "7*"]);
    }

    #[test]
    fn status_table_of_disabled_cluster_without_leader() {
        let status = json!({
            "cluster_name": "chorus", "cluster_id": "1234", "enabled": false,
            "node_id": "42", "leader": null, "term": 0, "commit_index": 0,
            "voters_target": 5, "members": []
        });
        let table = status_table(&status);
        assert_eq!(
            table.lines().next().unwrap(),
            "cluster chorus (id 1234), clustering disabled, leader -, term 0, commit 0"
        );
        assert_eq!(table.lines().count(), 2, "{table}");
    }

    #[test]
    fn uptime_uses_two_units_at_most() {
        assert_eq!(format_uptime(0), "0s");
        assert_eq!(format_uptime(59), "59s");
        assert_eq!(format_uptime(60), "1m00s");
        assert_eq!(format_uptime(812), "13m32s");
        assert_eq!(format_uptime(3599), "59m59s");
        assert_eq!(format_uptime(3600), "1h00m");
        assert_eq!(format_uptime(2 * 3600 + 5 * 60 + 59), "2h05m");
        assert_eq!(format_uptime(86399), "23h59m");
        assert_eq!(format_uptime(3 * 86400 + 4 * 3600 + 1), "3d04h");
        assert_eq!(format_uptime(400 * 86400), "400d00h");
    }

    #[test]
    fn join_address_accepts_host_port() {
        for ok in [
            "127.0.0.1:7070",
            "node-2.example.net:7070",
            "[::1]:7070",
            "[fd00::1]:1",
            " 10.0.0.1:65535 ",
        ] {
            assert_eq!(check_cluster_addr(ok).unwrap(), ok.trim(), "{ok}");
        }
    }

    #[test]
    fn join_address_without_port_is_rejected_with_the_form_to_use() {
        for bad in ["10.0.0.1", "node-2.example.net", "node-2:", "[::1]"] {
            let err = check_cluster_addr(bad).unwrap_err().to_string();
            assert!(err.contains("no port"), "{bad}: {err}");
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
            assert_eq!(err.lines().count(), 1);
        }
    }

    #[test]
    fn join_address_other_mistakes_are_rejected() {
        for (bad, why) in [
            ("", "no cluster address"),
            ("http://10.0.0.1:7070", "without scheme"),
            ("::1:7070", "brackets"),
            ("[::1:7070", "closing"),
            (":7070", "no host"),
            ("10.0.0.1:0", "1 to 65535"),
            ("10.0.0.1:70000", "1 to 65535"),
            ("10.0.0.1:port", "1 to 65535"),
        ] {
            let err = check_cluster_addr(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn node_id_is_a_nonzero_decimal_u64() {
        assert_eq!(check_node_id("7").unwrap(), 7);
        assert_eq!(check_node_id("18446744073709551615").unwrap(), u64::MAX);
        for bad in [
            "",
            "-1",
            "0x10",
            "node7",
            "1.5",
            "0",
            "18446744073709551616",
        ] {
            let err = check_node_id(bad).unwrap_err().to_string();
            assert!(err.contains("node id"), "{bad}: {err}");
        }
    }
}
