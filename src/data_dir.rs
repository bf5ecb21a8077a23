//! The node's own files in its data dir: identity, admin token, API address.
//!
//! These are made once and kept, so that a restarted node is the same node
//! (DESIGN decision 3) and the CLI on the same host can find and reach it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

pub const NODE_ID_FILE: &str = "node_id";
pub const TOKEN_FILE: &str = "admin.token";
pub const API_FILE: &str = "api.json";
pub const SECRET_FILE: &str = "cluster.secret";
/// Left by `chorus cluster join` for the restart: the seed to join through.
pub const JOIN_FILE: &str = "join.request";

/// Make the data dir owner-only and keep it so: it is created (or tightened)
/// to 0700, whatever is already in it loses its group and other bits, and the
/// process's umask becomes 077, so every file made from here on (RocksDB's
/// among them, which it creates itself) is 0600 and every directory 0700.
/// The dir holds SCRAM keys, the admin token and the cluster secret.
pub fn private_data_dir(data_dir: &Path) -> Result<()> {
    rustix::process::umask(rustix::fs::Mode::RWXG | rustix::fs::Mode::RWXO);
    fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    tighten(data_dir).with_context(|| {
        format!(
            "making data dir {} readable by its owner only",
            data_dir.display()
        )
    })
}

fn tighten(path: &Path) -> std::io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(mode & !0o077))?;
    }
    if meta.is_dir() {
        for entry in fs::read_dir(path)? {
            tighten(&entry?.path())?;
        }
    }
    Ok(())
}

/// Write a file readable by the owner only (mode 0600), atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The node's id, made on first start. Zero is never used: openraft and the
/// routing table treat ids as opaque, but a zero id is an easy mistake to spot.
pub fn node_id(data_dir: &Path) -> Result<u64> {
    let path = data_dir.join(NODE_ID_FILE);
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        return text.trim().parse().map_err(|_| {
            anyhow!(
                "{} is corrupt: expected a number, found `{}`",
                path.display(),
                text.trim()
            )
        });
    }
    let id = rand::rng().random_range(1..(1u64 << 53));
    write_private(&path, format!("{id}\n").as_bytes())?;
    Ok(id)
}

/// The admin API token, made on first start (mode 0600).
pub fn admin_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    if path.exists() {
        let token =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let token = token.trim().to_string();
        if token.len() < 32 {
            return Err(anyhow!(
                "{} is corrupt: the token is too short",
                path.display()
            ));
        }
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::rng().random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The cluster secret: the configured one, or one made on first start and kept in
/// DATA_DIR/cluster.secret (0600). The flag says whether it was made up here.
pub fn cluster_secret(data_dir: &Path, configured: &str) -> Result<(Vec<u8>, bool)> {
    if !configured.is_empty() {
        return Ok((configured.as_bytes().to_vec(), false));
    }
    let path = data_dir.join(SECRET_FILE);
    if path.exists() {
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let secret = text.trim();
        if secret.len() < crate::config::MIN_SECRET_BYTES {
            anyhow::bail!(
                "{} holds {} bytes; a cluster secret needs at least {}: write the cluster's secret \
                 there, or delete the file to have a random one made",
                path.display(),
                secret.len(),
                crate::config::MIN_SECRET_BYTES
            );
        }
        return Ok((secret.as_bytes().to_vec(), true));
    }
    let bytes: [u8; 32] = rand::rng().random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, format!("{secret}\n").as_bytes())?;
    Ok((secret.into_bytes(), true))
}

/// `chorus cluster join`: where to join after the restart.
pub fn write_join_request(data_dir: &Path, seed: &str) -> Result<()> {
    write_private(&data_dir.join(JOIN_FILE), seed.as_bytes())
}

pub fn take_join_request(data_dir: &Path) -> Option<String> {
    fs::read_to_string(data_dir.join(JOIN_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub fn clear_join_request(data_dir: &Path) {
    let _ = fs::remove_file(data_dir.join(JOIN_FILE));
}

/// Deletes the Raft store (log, state machine, snapshots): the node becomes fresh. Its
/// id, token, certificate and secret are kept.
pub fn wipe_raft(data_dir: &Path) -> Result<()> {
    let raft = data_dir.join("raft");
    if raft.exists() {
        fs::remove_dir_all(&raft).with_context(|| format!("wiping {}", raft.display()))?;
    }
    Ok(())
}

/// What a running node tells local tools about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiInfo {
    pub url: String,
    pub pid: u32,
    pub node_id: u64,
}

pub fn api_file(data_dir: &Path) -> PathBuf {
    data_dir.join(API_FILE)
}

pub fn write_api_info(data_dir: &Path, info: &ApiInfo) -> Result<()> {
    write_private(&api_file(data_dir), serde_json::to_string(info)?.as_bytes())
}

pub fn read_api_info(data_dir: &Path) -> Result<ApiInfo> {
    let path = api_file(data_dir);
    let text = fs::read_to_string(&path).map_err(|_| {
        anyhow!(
            "no running node found in {} (start one with `chorus serve --data-dir {}`, or give --api and --token)",
            data_dir.display(),
            data_dir.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| anyhow!("{} is corrupt: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_token_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = node_id(dir.path()).unwrap();
        assert_eq!(node_id(dir.path()).unwrap(), id);
        let token = admin_token(dir.path()).unwrap();
        assert_eq!(admin_token(dir.path()).unwrap(), token);
        let mode = fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
