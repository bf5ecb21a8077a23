//! Data at rest and careless operators (issue 11, items 4 and 6): the data
//! dir and everything in it, RocksDB's files included, are the owner's alone;
//! a cluster secret shorter than 16 bytes or an empty secret file stops
//! start-up with a message that says what to do.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::TestNode;

/// Every path under `dir` whose mode lets its group or others in.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            found.push(format!(
                "{} {:o}",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
    }
    found
}

#[test]
fn the_data_dir_and_everything_in_it_are_the_owners_alone() {
    let mut node = TestNode::prepare(&[]);
    // A data dir an older version (or a careless operator) left open.
    let dir = node.data_dir().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("notes.txt"), "left by hand").unwrap();
    std::fs::set_permissions(
        dir.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    node.spawn();
    // Writes that make RocksDB create files: an account, and its log and tables.
    node.add_user("alice@localhost", "pw");
    assert!(dir.join("raft").is_dir());
    assert!(
        std::fs::read_dir(dir.join("raft")).unwrap().count() > 3,
        "RocksDB made its files"
    );
    let open = open_to_others(&dir);
    assert!(open.is_empty(), "readable by others: {open:#?}");
}

/// Start a node that must refuse to run; its log.
fn refused_start(node: &mut TestNode) -> String {
    node.spawn_nowait();
    let child = node.child.as_mut().unwrap();
    for _ in 0..300 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(!status.success());
            node.child = None;
            return node.log();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the node started:\n{}", node.log());
}

#[test]
fn a_short_cluster_secret_stops_start_up() {
    let mut node = TestNode::prepare(&["--cluster-secret", "fifteen-bytes!!"]);
    let log = refused_start(&mut node);
    assert!(log.contains("cluster.secret"), "{log}");
    assert!(log.contains("16"), "{log}");
}

#[test]
fn an_empty_cluster_secret_file_stops_start_up() {
    let mut node = TestNode::prepare(&[]);
    std::fs::write(node.data_dir().join("cluster.secret"), "\n").unwrap();
    let log = refused_start(&mut node);
    assert!(log.contains("cluster.secret"), "{log}");
    assert!(log.contains("delete the file"), "{log}");
}
