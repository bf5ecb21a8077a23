//! What accounts keep on the server and how they come to be, against a real
//! `chorus` process: XEP-0054 vCards, XEP-0049 private XML storage and
//! XEP-0077 in-band registration.

mod common;

use chorus::xmpp::element::Element;
use chorus::xmpp::ns;
use common::{assert_error, assert_result, Client, TestNode};

const VCARD: &str = "vcard-temp";
const PRIVATE: &str = "jabber:iq:private";
const REGISTER: &str = "jabber:iq:register";
const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";

/// The `<FN/>` of the vCard in a result, or `None` for an empty vCard.
fn full_name(reply: &Element) -> Option<String> {
    assert_result(reply);
    let card = reply
        .get_child("vCard", VCARD)
        .expect("a vCard in the result");
    card.get_child("FN", VCARD).map(|f| f.text())
}

fn set_vcard(id: &str, name: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><vCard xmlns='{VCARD}'><FN>{name}</FN><NICKNAME>nick</NICKNAME></vCard></iq>"
    )
}

async fn login(node: &TestNode, user: &str, password: &str) -> Client {
    Client::login(node, user, password, "r").await
}

#[tokio::test]
async fn vcard_is_set_and_read_back_by_its_owner() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    // Nothing stored yet: an empty vCard, not an error.
    let empty = alice
        .iq(&format!(
            "<iq type='get' id='g0'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&empty), None);
    assert_result(&alice.iq(&set_vcard("s1", "Alice Liddell")).await);
    let own = alice
        .iq(&format!(
            "<iq type='get' id='g1'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&own).as_deref(), Some("Alice Liddell"));
    // Addressed to her own bare JID, the server answers for the account too.
    let addressed = alice
        .iq(&format!(
            "<iq type='get' id='g2' to='alice@localhost'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&addressed).as_deref(), Some("Alice Liddell"));
    assert_eq!(addressed.attr("from"), Some("alice@localhost"));
    // A second set replaces the whole vCard.
    assert_result(&alice.iq(&set_vcard("s2", "Alice")).await);
    let again = alice
        .iq(&format!(
            "<iq type='get' id='g3'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&again).as_deref(), Some("Alice"));
}

#[tokio::test]
async fn vcards_of_other_accounts_are_readable_but_not_writable() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    node.add_user("bob@localhost", "b-pass");
    node.add_user("carol@localhost", "c-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    assert_result(&alice.iq(&set_vcard("s1", "Alice Liddell")).await);
    let mut bob = login(&node, "bob", "b-pass").await;
    let read = bob
        .iq(&format!(
            "<iq type='get' id='b1' to='alice@localhost'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&read).as_deref(), Some("Alice Liddell"));
    assert_eq!(read.attr("from"), Some("alice@localhost"));
    // An account without a vCard: an empty one, as Prosody answers.
    let none = bob
        .iq(&format!(
            "<iq type='get' id='b2' to='carol@localhost'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&none), None);
    // No such account (RFC 6121 8.5.1).
    let missing = bob
        .iq(&format!(
            "<iq type='get' id='b3' to='nobody@localhost'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_error(&missing, "service-unavailable");
    // Bob cannot change Alice's vCard.
    let forged = bob
        .iq(&format!(
            "<iq type='set' id='b4' to='alice@localhost'><vCard xmlns='{VCARD}'><FN>Bob was here</FN></vCard></iq>"
        ))
        .await;
    assert_error(&forged, "forbidden");
    let after = alice
        .iq(&format!(
            "<iq type='get' id='a2'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&after).as_deref(), Some("Alice Liddell"));
}

#[tokio::test]
async fn a_vcard_over_the_limit_is_not_acceptable() {
    let node = TestNode::start_with(&["--set", "limits.vcard_bytes=1024"]);
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    assert_result(&alice.iq(&set_vcard("s1", "Small")).await);
    let photo = "A".repeat(2000);
    let big = alice
        .iq(&format!(
            "<iq type='set' id='s2'><vCard xmlns='{VCARD}'><FN>Big</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>"
        ))
        .await;
    assert_error(&big, "not-acceptable");
    let kept = alice
        .iq(&format!(
            "<iq type='get' id='g'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&kept).as_deref(), Some("Small"));
}

#[tokio::test]
async fn vcard_and_private_xml_survive_a_killed_node() {
    let mut node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    assert_result(&alice.iq(&set_vcard("s1", "Alice Liddell")).await);
    assert_result(
        &alice
            .iq(&format!(
                "<iq type='set' id='s2'><query xmlns='{PRIVATE}'><prefs xmlns='urn:example:prefs'><theme>dark</theme></prefs></query></iq>"
            ))
            .await,
    );
    drop(alice);
    node.kill9();
    node.spawn();
    let mut alice = login(&node, "alice", "a-pass").await;
    let card = alice
        .iq(&format!(
            "<iq type='get' id='g1'><vCard xmlns='{VCARD}'/></iq>"
        ))
        .await;
    assert_eq!(full_name(&card).as_deref(), Some("Alice Liddell"));
    let prefs = alice
        .iq(&format!(
            "<iq type='get' id='g2'><query xmlns='{PRIVATE}'><prefs xmlns='urn:example:prefs'/></query></iq>"
        ))
        .await;
    assert_eq!(private_text(&prefs, "theme").as_deref(), Some("dark"));
}

/// The text of `child` inside the `<prefs/>` of a private-storage result.
fn private_text(reply: &Element, child: &str) -> Option<String> {
    assert_result(reply);
    let prefs = reply
        .get_child("query", PRIVATE)
        .expect("a query in the result")
        .get_child("prefs", "urn:example:prefs")
        .expect("the element asked for");
    prefs
        .get_child(child, "urn:example:prefs")
        .map(|c| c.text())
}

fn set_prefs(id: &str, theme: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{PRIVATE}'><prefs xmlns='urn:example:prefs'><theme>{theme}</theme></prefs></query></iq>"
    )
}

fn get_prefs(id: &str, to: Option<&str>) -> String {
    let to = to.map(|t| format!(" to='{t}'")).unwrap_or_default();
    format!(
        "<iq type='get' id='{id}'{to}><query xmlns='{PRIVATE}'><prefs xmlns='urn:example:prefs'/></query></iq>"
    )
}

#[tokio::test]
async fn private_xml_is_stored_read_and_overwritten() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    // Nothing stored: the empty element asked for comes back.
    let empty = alice.iq(&get_prefs("g0", None)).await;
    assert_eq!(private_text(&empty, "theme"), None);
    assert_result(&alice.iq(&set_prefs("s1", "dark")).await);
    let stored = alice.iq(&get_prefs("g1", None)).await;
    assert_eq!(private_text(&stored, "theme").as_deref(), Some("dark"));
    assert_result(&alice.iq(&set_prefs("s2", "light")).await);
    let overwritten = alice.iq(&get_prefs("g2", None)).await;
    assert_eq!(
        private_text(&overwritten, "theme").as_deref(),
        Some("light")
    );
    // Another element is kept apart, under its own namespace and name.
    assert_result(
        &alice
            .iq(&format!(
                "<iq type='set' id='s3'><query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'><conference jid='tea@muc.localhost'/></storage></query></iq>"
            ))
            .await,
    );
    let bookmarks = alice
        .iq(&format!(
            "<iq type='get' id='g3'><query xmlns='{PRIVATE}'><storage xmlns='storage:bookmarks'/></query></iq>"
        ))
        .await;
    assert!(bookmarks
        .get_child("query", PRIVATE)
        .and_then(|q| q.get_child("storage", "storage:bookmarks"))
        .and_then(|s| s.get_child("conference", "storage:bookmarks"))
        .is_some());
    let prefs = alice.iq(&get_prefs("g4", None)).await;
    assert_eq!(private_text(&prefs, "theme").as_deref(), Some("light"));
}

#[tokio::test]
async fn private_xml_refuses_reserved_namespaces_and_bad_queries() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    let roster = alice
        .iq(&format!(
            "<iq type='set' id='r1'><query xmlns='{PRIVATE}'><query xmlns='jabber:iq:roster'><item jid='x@y'/></query></query></iq>"
        ))
        .await;
    assert_error(&roster, "not-acceptable");
    let get_reserved = alice
        .iq(&format!(
            "<iq type='get' id='r2'><query xmlns='{PRIVATE}'><query xmlns='jabber:iq:roster'/></query></iq>"
        ))
        .await;
    assert_error(&get_reserved, "not-acceptable");
    let empty_get = alice
        .iq(&format!(
            "<iq type='get' id='r3'><query xmlns='{PRIVATE}'/></iq>"
        ))
        .await;
    assert_error(&empty_get, "bad-request");
    let empty_set = alice
        .iq(&format!(
            "<iq type='set' id='r4'><query xmlns='{PRIVATE}'/></iq>"
        ))
        .await;
    assert_error(&empty_set, "not-acceptable");
}

#[tokio::test]
async fn private_xml_of_another_account_is_answered_as_for_no_account() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    node.add_user("bob@localhost", "b-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    assert_result(&alice.iq(&set_prefs("s1", "dark")).await);
    let mut bob = login(&node, "bob", "b-pass").await;
    let peek = bob.iq(&get_prefs("b1", Some("alice@localhost"))).await;
    assert_error(&peek, "service-unavailable");
    let nobody = bob.iq(&get_prefs("b1", Some("nobody@localhost"))).await;
    assert_eq!(
        peek.get_child("error", ns::CLIENT).map(|e| e.to_xml()),
        nobody.get_child("error", ns::CLIENT).map(|e| e.to_xml())
    );
    let overwrite = bob
        .iq(&format!(
            "<iq type='set' id='b2' to='alice@localhost'><query xmlns='{PRIVATE}'><prefs xmlns='urn:example:prefs'><theme>pink</theme></prefs></query></iq>"
        ))
        .await;
    assert_error(&overwrite, "service-unavailable");
    // Bob's own storage is his: he does not see Alice's under the same key.
    let own = bob.iq(&get_prefs("b3", None)).await;
    assert_eq!(private_text(&own, "theme"), None);
    let hers = alice.iq(&get_prefs("a2", None)).await;
    assert_eq!(private_text(&hers, "theme").as_deref(), Some("dark"));
}

#[tokio::test]
async fn disco_advertises_the_storage_and_registration_features() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    let info = alice
        .iq("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        .await;
    let features: Vec<String> = info
        .get_child("query", ns::DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.attr("var").map(str::to_string))
        .collect();
    for f in [VCARD, PRIVATE, REGISTER] {
        assert!(features.iter().any(|x| x == f), "{f} missing: {features:?}");
    }
}

fn offers_registration(c: &Client) -> bool {
    c.features
        .as_ref()
        .unwrap()
        .get_child("register", REGISTER_FEATURE)
        .is_some()
}

fn register_set(id: &str, user: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}'><query xmlns='{REGISTER}'><username>{user}</username><password>{password}</password></query></iq>"
    )
}

fn user_list(node: &TestNode) -> Vec<String> {
    let out = node.cli(&["user", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn open_registration() -> TestNode {
    TestNode::start_with(&["--set", "registration.open=true"])
}

#[tokio::test]
async fn registration_is_closed_by_default() {
    let node = TestNode::start();
    let mut c = Client::starttls(&node).await;
    assert!(!offers_registration(&c), "{:?}", c.features);
    let form = c
        .iq(&format!(
            "<iq type='get' id='r1'><query xmlns='{REGISTER}'/></iq>"
        ))
        .await;
    assert_error(&form, "service-unavailable");
    let create = c.iq(&register_set("r2", "mallory", "m-pass")).await;
    assert_error(&create, "not-allowed");
    assert!(user_list(&node).is_empty());
    // The stream is still good for authenticating.
    assert_eq!(c.scram_sha256("mallory", "m-pass").await.name(), "failure");
}

#[tokio::test]
async fn open_registration_creates_an_account_that_then_logs_in() {
    let node = open_registration();
    // Before TLS nothing is offered: authentication is not offered there either.
    let mut plain = Client::tcp(node.c2s, "localhost").await;
    plain.open().await;
    assert!(!offers_registration(&plain));
    drop(plain);
    let mut c = Client::starttls(&node).await;
    assert!(offers_registration(&c), "{:?}", c.features);
    let form = c
        .iq(&format!(
            "<iq type='get' id='r1'><query xmlns='{REGISTER}'/></iq>"
        ))
        .await;
    assert_result(&form);
    let query = form.get_child("query", REGISTER).unwrap();
    for field in ["username", "password", "instructions"] {
        assert!(
            query.get_child(field, REGISTER).is_some(),
            "{field}: {form:?}"
        );
    }
    assert_result(&c.iq(&register_set("r2", "dora", "explorer")).await);
    assert_eq!(user_list(&node), vec!["dora@localhost".to_string()]);
    // Then authenticate with it on the same stream, as XEP-0077 3.1.1 has it.
    let outcome = c.scram_sha256("dora", "explorer").await;
    assert_eq!(outcome.name(), "success", "{outcome:?}");
    assert_result(&c.bind(Some("r")).await);
    // And from a fresh connection.
    login(&node, "dora", "explorer").await;
}

#[tokio::test]
async fn registration_refuses_taken_and_invalid_usernames() {
    let node = open_registration();
    node.add_user("alice@localhost", "a-pass");
    let mut c = Client::starttls(&node).await;
    let taken = c.iq(&register_set("r1", "alice", "other")).await;
    assert_error(&taken, "conflict");
    // Same name once normalized.
    let taken = c.iq(&register_set("r2", "ALICE", "other")).await;
    assert_error(&taken, "conflict");
    let invalid = c.iq(&register_set("r3", "a@b", "pw")).await;
    assert_error(&invalid, "not-acceptable");
    let no_password = c
        .iq(&format!(
            "<iq type='set' id='r4'><query xmlns='{REGISTER}'><username>eve</username><password/></query></iq>"
        ))
        .await;
    assert_error(&no_password, "not-acceptable");
    assert_eq!(user_list(&node), vec!["alice@localhost".to_string()]);
    // The existing account's password was not touched.
    login(&node, "alice", "a-pass").await;
}

#[tokio::test]
async fn an_account_changes_its_password_in_band() {
    // Password changes concern existing accounts: allowed with registration closed.
    let node = TestNode::start();
    node.add_user("alice@localhost", "old-pass");
    let mut alice = login(&node, "alice", "old-pass").await;
    let info = alice
        .iq(&format!(
            "<iq type='get' id='i'><query xmlns='{REGISTER}'/></iq>"
        ))
        .await;
    assert_result(&info);
    let query = info.get_child("query", REGISTER).unwrap();
    assert!(
        query.get_child("registered", REGISTER).is_some(),
        "{info:?}"
    );
    assert_eq!(
        query
            .get_child("username", REGISTER)
            .map(|u| u.text())
            .as_deref(),
        Some("alice")
    );
    let changed = alice
        .iq(&format!(
            "<iq type='set' id='c1' to='localhost'><query xmlns='{REGISTER}'><username>alice</username><password>new-pass</password></query></iq>"
        ))
        .await;
    assert_result(&changed);
    let mut old = Client::starttls(&node).await;
    assert_eq!(
        old.scram_sha256("alice", "old-pass").await.name(),
        "failure"
    );
    Client::login(&node, "alice", "new-pass", "second").await;
    // Not someone else's.
    let other = alice
        .iq(&format!(
            "<iq type='set' id='c2'><query xmlns='{REGISTER}'><username>bob</username><password>x</password></query></iq>"
        ))
        .await;
    assert_error(&other, "bad-request");
}

#[tokio::test]
async fn cancelling_registration_ends_the_streams_and_deletes_the_account() {
    let node = TestNode::start();
    node.add_user("alice@localhost", "a-pass");
    node.add_user("bob@localhost", "b-pass");
    let mut alice = login(&node, "alice", "a-pass").await;
    let mut other_resource = Client::login(&node, "alice", "a-pass", "phone").await;
    alice
        .send(&format!(
            "<iq type='set' id='bye'><query xmlns='{REGISTER}'><remove/></query></iq>"
        ))
        .await;
    let (before, error) = until_stream_error(&mut alice).await;
    assert_eq!(error.as_deref(), Some("not-authorized"));
    // XEP-0077 3.2: the result comes first, then the stream ends.
    let answered = before
        .iter()
        .any(|e| e.attr("id") == Some("bye") && e.attr("type") == Some("result"));
    assert!(answered, "no result before <not-authorized/>: {before:?}");
    assert!(
        !before
            .iter()
            .any(|e| e.attr("id") == Some("bye") && e.attr("type") == Some("error")),
        "{before:?}"
    );
    assert_eq!(
        other_resource.expect_stream_error().await.as_deref(),
        Some("not-authorized")
    );
    assert_eq!(user_list(&node), vec!["bob@localhost".to_string()]);
    let mut again = Client::starttls(&node).await;
    assert_eq!(
        again.scram_sha256("alice", "a-pass").await.name(),
        "failure"
    );
}

/// Everything the server sends until it ends the stream, and the stream error's condition.
async fn until_stream_error(c: &mut Client) -> (Vec<Element>, Option<String>) {
    use chorus::xmpp::stream::StreamEvent;
    let mut seen = Vec::new();
    loop {
        match c.next().await {
            Ok(StreamEvent::Stanza(el)) if el.is("error", ns::STREAM) => {
                let condition = el
                    .children()
                    .find(|c| c.ns() == ns::STREAMS && c.name() != "text")
                    .map(|c| c.name().to_string());
                return (seen, condition);
            }
            Ok(StreamEvent::Stanza(el)) => seen.push(el),
            Ok(StreamEvent::Header(_)) => {}
            Ok(StreamEvent::Closed) | Err(_) => return (seen, None),
        }
    }
}
