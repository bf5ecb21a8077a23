//! The `chorus` command line: `serve` runs a node; `user ...` administers
//! accounts and `cluster ...` membership through a running node's admin API.

mod api_client;
pub mod cluster;
pub mod user;

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Overrides, Settings};

#[derive(Parser, Debug)]
#[command(name = "chorus", version, about = "A clustered XMPP server on Raft")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Subcommand, Debug)]
pub enum Commands {
    /// Run a node (with no flags: a one-node cluster for `localhost`, data in ./data).
    Serve(Box<ServeArgs>),
    /// Add, remove, list accounts and change passwords.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Show the cluster; join, leave, remove members; enable or disable clustering.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Print every setting with its default value, as TOML.
    Defaults,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file of settings (docs/configuration.md).
    #[arg(long, env = "CHORUS_CONFIG")]
    pub config: Option<String>,
    /// Where the node keeps its data (data_dir).
    #[arg(long)]
    pub data_dir: Option<String>,
    /// The XMPP domain served (domain).
    #[arg(long)]
    pub domain: Option<String>,
    /// Client port with STARTTLS, IP:PORT (c2s.listen).
    #[arg(long)]
    pub c2s: Option<String>,
    /// Client port with direct TLS, IP:PORT (c2s.tls_listen).
    #[arg(long)]
    pub c2s_tls: Option<String>,
    /// Admin API and metrics, IP:PORT (http.listen).
    #[arg(long)]
    pub http: Option<String>,
    /// Cluster (Raft) port, IP:PORT (cluster.listen).
    #[arg(long)]
    pub cluster: Option<String>,
    /// PEM certificate chain (tls.cert).
    #[arg(long)]
    pub cert: Option<String>,
    /// PEM private key (tls.key).
    #[arg(long)]
    pub key: Option<String>,
    /// Allow PLAIN and authentication without TLS; for benchmarks (c2s.allow_plaintext_auth).
    #[arg(long)]
    pub allow_plaintext_auth: bool,
    /// A member (or would-be member) to contact at start-up, HOST:PORT of its cluster
    /// port (repeatable; cluster.seeds).
    #[arg(long = "seed", value_name = "HOST:PORT")]
    pub seed: Vec<String>,
    /// Fresh nodes wait until this many have found each other, then form one cluster
    /// (cluster.bootstrap_expect).
    #[arg(long)]
    pub bootstrap_expect: Option<String>,
    /// Nodes join only a cluster of this name (cluster.name).
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// The shared cluster secret (cluster.secret; prefer the config file or
    /// CHORUS_CLUSTER_SECRET, which other users cannot read from the process list).
    #[arg(long)]
    pub cluster_secret: Option<String>,
    /// Any setting, as KEY=VALUE (repeatable), e.g. --set c2s.max_stanza_bytes=65536.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Environment variables the CLI itself reads; all other `CHORUS_*` must be settings.
const CLI_ENV: &[&str] = &["CHORUS_CONFIG", "CHORUS_API", "CHORUS_TOKEN"];

impl ServeArgs {
    pub fn settings(&self) -> Result<Settings> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let keys: Vec<String> = Settings::keys()
            .iter()
            .map(|k| config::env_name(k))
            .collect();
        if let Some((name, _)) = vars.iter().find(|(n, _)| {
            n.starts_with("CHORUS_") && !keys.contains(n) && !CLI_ENV.contains(&n.as_str())
        }) {
            return Err(anyhow!(
                "unknown setting in environment variable {name}; see docs/configuration.md"
            ));
        }
        let env = config::env_overrides(vars.into_iter());
        Ok(Settings::load(
            self.config.as_deref(),
            &env,
            &self.flag_overrides()?,
        )?)
    }

    fn flag_overrides(&self) -> Result<Overrides> {
        let mut out: Overrides = Vec::new();
        let named = [
            ("data_dir", &self.data_dir, "--data-dir"),
            ("domain", &self.domain, "--domain"),
            ("c2s.listen", &self.c2s, "--c2s"),
            ("c2s.tls_listen", &self.c2s_tls, "--c2s-tls"),
            ("http.listen", &self.http, "--http"),
            ("cluster.listen", &self.cluster, "--cluster"),
            ("tls.cert", &self.cert, "--cert"),
            ("tls.key", &self.key, "--key"),
            (
                "cluster.bootstrap_expect",
                &self.bootstrap_expect,
                "--bootstrap-expect",
            ),
            ("cluster.name", &self.cluster_name, "--cluster-name"),
            ("cluster.secret", &self.cluster_secret, "--cluster-secret"),
        ];
        for (key, value, flag) in named {
            if let Some(v) = value {
                out.push((key.into(), v.clone(), format!("flag {flag}")));
            }
        }
        if !self.seed.is_empty() {
            out.push((
                "cluster.seeds".into(),
                self.seed.join(","),
                "flag --seed".into(),
            ));
        }
        if self.allow_plaintext_auth {
            out.push((
                "c2s.allow_plaintext_auth".into(),
                "true".into(),
                "flag --allow-plaintext-auth".into(),
            ));
        }
        for pair in &self.set {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                anyhow!("--set {pair}: write it as KEY=VALUE, e.g. --set c2s.max_depth=16")
            })?;
            out.push((k.trim().into(), v.into(), format!("flag --set {k}")));
        }
        Ok(out)
    }
}

/// Where the admin API of a node is, and its token.
#[derive(Args, Debug, Clone)]
pub struct ApiArgs {
    /// Data dir of a node running on this host; its API address and token are read from there.
    #[arg(long, env = "CHORUS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Admin API URL, e.g. http://127.0.0.1:5280 (instead of --data-dir).
    #[arg(long, env = "CHORUS_API")]
    pub api: Option<String>,
    /// Admin token (instead of --data-dir).
    #[arg(long, env = "CHORUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}
