//! Per-stream XEPs on one node: XEP-0280 carbons and XEP-0352 client state
//! indication, driven by the project's own client.

mod common;

use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use common::{Client, TestNode};

const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";

fn node() -> TestNode {
    let node = TestNode::start();
    for u in ["alice", "bob"] {
        node.add_user(&format!("{u}@localhost"), "pw");
    }
    node
}

async fn enable_carbons(c: &mut Client) {
    c.send("<iq type='set' id='cc'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    let r = c.recv_until(|e| e.attr("id") == Some("cc")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r:?}");
}

fn carbon_body(e: &Element, direction: &str) -> Option<String> {
    let inner = e
        .get_child(direction, CARBONS)?
        .get_child("forwarded", FORWARD)?
        .get_child("message", ns::CLIENT)?;
    Some(inner.get_child("body", ns::CLIENT)?.text())
}

/// Everything `c` receives until its ping answer: what arrived before it.
async fn drain(c: &mut Client, id: &str) -> Vec<Element> {
    c.send(&format!(
        "<iq type='get' id='{id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await;
    let mut got = Vec::new();
    loop {
        let e = c.recv().await;
        if e.attr("id") == Some(id) {
            return got;
        }
        got.push(e);
    }
}

#[tokio::test]
async fn carbons_copy_sent_and_received_chats_to_enabled_streams() {
    let node = node();
    let mut phone = Client::login(&node, "alice", "pw", "phone").await;
    let mut laptop = Client::login(&node, "alice", "pw", "laptop").await;
    let mut tablet = Client::login(&node, "alice", "pw", "tablet").await;
    let mut bob = Client::login(&node, "bob", "pw", "b").await;
    enable_carbons(&mut phone).await;

    // Received by the laptop: the phone gets a `received` carbon.
    bob.send("<message to='alice@localhost/laptop' type='chat'><body>to laptop</body></message>")
        .await;
    laptop.recv_until(|e| e.name() == "message").await;
    let c = phone.recv_until(|e| e.name() == "message").await;
    assert_eq!(c.attr("from"), Some("alice@localhost"));
    assert_eq!(carbon_body(&c, "received").as_deref(), Some("to laptop"));

    // Sent by the laptop: the phone gets a `sent` carbon.
    laptop
        .send("<message to='bob@localhost' type='chat'><body>from laptop</body></message>")
        .await;
    bob.recv_until(|e| e.name() == "message").await;
    let c = phone.recv_until(|e| e.name() == "message").await;
    assert_eq!(carbon_body(&c, "sent").as_deref(), Some("from laptop"));

    // Private messages and headlines are not copied; the tablet never enabled carbons.
    laptop
        .send("<message to='bob@localhost' type='chat'><body>secret</body><private xmlns='urn:xmpp:carbons:2'/></message>")
        .await;
    bob.send("<message to='alice@localhost/laptop' type='headline'><body>news</body></message>")
        .await;
    laptop.sync("l").await;
    bob.sync("b").await;
    assert!(
        drain(&mut phone, "p")
            .await
            .iter()
            .all(|e| e.name() != "message"),
        "uncopyable message copied"
    );
    assert!(
        drain(&mut tablet, "t")
            .await
            .iter()
            .all(|e| e.name() != "message"),
        "carbons without enabling"
    );

    // Disabled: no more copies.
    phone
        .send("<iq type='set' id='cd'><disable xmlns='urn:xmpp:carbons:2'/></iq>")
        .await;
    phone.recv_until(|e| e.attr("id") == Some("cd")).await;
    bob.send("<message to='alice@localhost/laptop' type='chat'><body>again</body></message>")
        .await;
    laptop.recv_until(|e| e.name() == "message").await;
    assert!(drain(&mut phone, "p2")
        .await
        .iter()
        .all(|e| e.name() != "message"));
}

#[tokio::test]
async fn inactive_clients_get_presence_late_and_messages_at_once() {
    let node = node();
    let mut bob = Client::login(&node, "bob", "pw", "b").await;
    let features = {
        // The bind-stage features advertise CSI.
        let mut c = Client::starttls(&node).await;
        assert_eq!(c.scram_sha256("bob", "pw").await.name(), "success");
        c.restart().await;
        c.features.clone().unwrap()
    };
    assert!(features.get_child("csi", "urn:xmpp:csi:0").is_some());

    let mut alice = Client::login(&node, "alice", "pw", "a").await;
    bob.send("<inactive xmlns='urn:xmpp:csi:0'/>").await;
    bob.sync("inactive").await;
    // Two status changes sent directly to bob: held, and only the latest kept.
    alice
        .send("<presence to='bob@localhost/b'><show>away</show></presence>")
        .await;
    alice
        .send("<presence to='bob@localhost/b'><show>dnd</show></presence>")
        .await;
    alice.sync("a1").await;
    assert!(
        drain(&mut bob, "held")
            .await
            .iter()
            .all(|e| e.name() != "presence"),
        "presence was not held"
    );

    // A message wakes the client: the held presence comes first, then the message.
    alice
        .send("<message to='bob@localhost/b' type='chat'><body>wake up</body></message>")
        .await;
    let first = bob
        .recv_until(|e| e.name() == "presence" || e.name() == "message")
        .await;
    assert_eq!(first.name(), "presence");
    assert_eq!(first.get_child("show", ns::CLIENT).unwrap().text(), "dnd");
    let second = bob
        .recv_until(|e| e.name() == "presence" || e.name() == "message")
        .await;
    assert_eq!(
        second.name(),
        "message",
        "only the latest presence per sender is kept"
    );

    // Active again: held presence is flushed at once.
    alice
        .send("<presence to='bob@localhost/b'><show>xa</show></presence>")
        .await;
    alice.sync("a2").await;
    bob.send("<active xmlns='urn:xmpp:csi:0'/>").await;
    let p = bob.recv_until(|e| e.name() == "presence").await;
    assert_eq!(p.get_child("show", ns::CLIENT).unwrap().text(), "xa");
}
