//! No enumeration (issue 11, item 5): a name with no account gets the same
//! SCRAM salt and iteration count from every node of a cluster, as a real
//! account does, so asking two nodes does not tell them apart.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chorus::xmpp::ns;
use common::cluster::{start_cluster, Find};
use common::{Client, TestNode};

/// The `s=` and `i=` of the server-first message a SCRAM-SHA-256 login for `user` gets.
async fn salt_and_iterations(node: &TestNode, user: &str) -> (String, String) {
    let mut c = Client::starttls(node).await;
    let first = format!("n,,n={user},r=fixednonce");
    c.send(&format!(
        "<auth xmlns='{}' mechanism='SCRAM-SHA-256'>{}</auth>",
        ns::SASL,
        B64.encode(first)
    ))
    .await;
    let challenge = c.recv().await;
    assert_eq!(challenge.name(), "challenge", "{challenge:?}");
    let server_first = String::from_utf8(B64.decode(challenge.text().trim()).unwrap()).unwrap();
    let attr = |k: &str| {
        server_first
            .split(',')
            .find_map(|a| a.strip_prefix(k))
            .unwrap()
            .to_string()
    };
    (attr("s="), attr("i="))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_name_gets_the_same_salt_from_every_node() {
    let nodes = start_cluster(
        &format!("enum-{}", rand::random::<u32>()),
        2,
        Find::Seeds,
        &[],
    );
    nodes[0].add_user("real@localhost", "pw");
    common::cluster::eventually_has_user(&nodes[1], "real@localhost").await;

    let ghost_a = salt_and_iterations(&nodes[0], "ghost").await;
    let ghost_b = salt_and_iterations(&nodes[1], "ghost").await;
    assert_eq!(
        ghost_a, ghost_b,
        "two nodes gave an unknown name different salts"
    );
    assert_eq!(salt_and_iterations(&nodes[0], "ghost").await, ghost_a);
    let real_a = salt_and_iterations(&nodes[0], "real").await;
    let real_b = salt_and_iterations(&nodes[1], "real").await;
    assert_eq!(real_a, real_b);
    assert_eq!(
        real_a.1, ghost_a.1,
        "the iteration count gives an unknown name away"
    );
    assert_ne!(
        salt_and_iterations(&nodes[0], "other-ghost").await.0,
        ghost_a.0
    );
}
