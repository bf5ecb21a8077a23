//! The state machine's decisions, against the in-memory reference store.

mod common;

use chorus_raft::machine::{apply, apply_request, Applied, MemState};
use chorus_raft::QueueMeta;
use chorus_raft::{Command, CommandResult, Request, Route, StateEvent, PROTOCOL_VERSION};
use common::{bind, create_user, data_write, push, put_data, record, remove};

fn route(node: u64, session: &str) -> Route {
    Route {
        node,
        session: session.into(),
    }
}

fn run(state: &mut MemState, cmd: Command) -> (CommandResult, Vec<StateEvent>) {
    apply(state, &cmd).unwrap()
}

#[test]
fn bind_replaces_and_reports_the_old_route() {
    let mut s = MemState::default();
    let (r, ev) = run(&mut s, bind("al@x/phone", 1, "s1"));
    assert_eq!(r, CommandResult::Bound { replaced: None });
    assert!(ev.is_empty());

    let (r, ev) = run(&mut s, bind("al@x/phone", 2, "s2"));
    assert_eq!(
        r,
        CommandResult::Bound {
            replaced: Some(route(1, "s1"))
        }
    );
    assert_eq!(
        ev,
        vec![StateEvent::RouteReplaced {
            full_jid: "al@x/phone".into(),
            old: route(1, "s1"),
            new: route(2, "s2"),
        }]
    );
    assert_eq!(s.routes.get("al@x/phone"), Some(&route(2, "s2")));
}

#[test]
fn rebinding_the_same_session_displaces_no_one() {
    let mut s = MemState::default();
    run(&mut s, bind("al@x/phone", 1, "s1"));
    let (r, ev) = run(&mut s, bind("al@x/phone", 1, "s1"));
    assert_eq!(r, CommandResult::Bound { replaced: None });
    assert!(ev.is_empty());
}

#[test]
fn unbind_with_a_stale_session_does_nothing() {
    let mut s = MemState::default();
    run(&mut s, bind("al@x/phone", 1, "old"));
    run(&mut s, bind("al@x/phone", 2, "new"));
    let before = s.clone();
    let (r, ev) = run(
        &mut s,
        Command::UnbindResource {
            full_jid: "al@x/phone".into(),
            session: "old".into(),
        },
    );
    assert_eq!(r, CommandResult::Unbound { removed: false });
    assert!(ev.is_empty());
    assert_eq!(s, before);
}

#[test]
fn unbind_with_the_owning_session_removes_the_route() {
    let mut s = MemState::default();
    run(&mut s, bind("al@x/phone", 1, "s1"));
    let (r, ev) = run(
        &mut s,
        Command::UnbindResource {
            full_jid: "al@x/phone".into(),
            session: "s1".into(),
        },
    );
    assert_eq!(r, CommandResult::Unbound { removed: true });
    assert_eq!(
        ev,
        vec![StateEvent::RouteRemoved {
            full_jid: "al@x/phone".into(),
            route: route(1, "s1"),
        }]
    );
    assert!(s.routes.is_empty());
}

#[test]
fn delete_user_drops_their_routes_and_no_one_elses() {
    let mut s = MemState::default();
    run(&mut s, create_user("al@x"));
    run(&mut s, bind("al@x/a", 1, "s1"));
    run(&mut s, bind("al@x/b/with/slashes", 2, "s2"));
    // Bare JIDs that share a prefix with "al@x" must survive.
    run(&mut s, bind("al@xy/a", 1, "s3"));
    run(&mut s, bind("al@x.y/a", 1, "s4"));

    let (r, ev) = run(
        &mut s,
        Command::DeleteUser {
            user: "al@x".into(),
        },
    );
    assert_eq!(r, CommandResult::Done);
    assert_eq!(
        ev,
        vec![
            StateEvent::RouteRemoved {
                full_jid: "al@x/a".into(),
                route: route(1, "s1"),
            },
            StateEvent::RouteRemoved {
                full_jid: "al@x/b/with/slashes".into(),
                route: route(2, "s2"),
            },
            StateEvent::UserDeleted {
                user: "al@x".into()
            },
        ]
    );
    assert!(s.users.is_empty());
    assert_eq!(
        s.routes.keys().collect::<Vec<_>>(),
        vec!["al@x.y/a", "al@xy/a"]
    );
}

#[test]
fn account_commands_report_why_they_failed() {
    let mut s = MemState::default();
    assert_eq!(
        run(
            &mut s,
            Command::DeleteUser {
                user: "al@x".into()
            }
        )
        .0,
        CommandResult::NoSuchUser
    );
    assert_eq!(
        run(
            &mut s,
            Command::SetPassword {
                user: "al@x".into(),
                record: record(2)
            }
        )
        .0,
        CommandResult::NoSuchUser
    );
    assert_eq!(run(&mut s, create_user("al@x")).0, CommandResult::Done);
    assert_eq!(
        run(&mut s, create_user("al@x")).0,
        CommandResult::UserExists
    );
    assert_eq!(
        run(
            &mut s,
            Command::SetPassword {
                user: "al@x".into(),
                record: record(2)
            }
        )
        .0,
        CommandResult::Done
    );
    assert_eq!(s.users.get("al@x"), Some(&record(2)));
}

#[test]
fn change_password_replaces_the_keys_and_tells_who_to_keep() {
    let mut s = MemState::default();
    let change = |keep: Option<&str>| Command::ChangePassword {
        user: "al@x".into(),
        record: record(3),
        keep_session: keep.map(String::from),
    };
    let (r, ev) = run(&mut s, change(None));
    assert_eq!(r, CommandResult::NoSuchUser);
    assert!(ev.is_empty());
    run(&mut s, create_user("al@x"));
    let (r, ev) = run(&mut s, change(Some("s1")));
    assert_eq!(r, CommandResult::Done);
    assert_eq!(s.users.get("al@x"), Some(&record(3)));
    assert_eq!(
        ev,
        vec![StateEvent::PasswordChanged {
            user: "al@x".into(),
            keep_session: Some("s1".into())
        }]
    );
}

#[test]
fn a_bounded_push_counts_the_bytes_held_and_a_removal_gives_them_back() {
    let mut s = MemState::default();
    run(&mut s, create_user("al@x"));
    let push = |value: &[u8]| Command::QueuePushBounded {
        user: "al@x".into(),
        queue: "q".into(),
        value: value.to_vec(),
        limit: 100,
        max_bytes: 10,
    };
    assert_eq!(
        run(&mut s, push(b"1234")).0,
        CommandResult::Queued { seq: 1 }
    );
    assert_eq!(
        run(&mut s, push(b"56789")).0,
        CommandResult::Queued { seq: 2 }
    );
    // 4 + 5 held: 2 more bytes would pass 10.
    assert_eq!(
        run(&mut s, push(b"ab")).0,
        CommandResult::QueueFull { len: 2 }
    );
    assert_eq!(run(&mut s, push(b"a")).0, CommandResult::Queued { seq: 3 });
    let meta = |s: &MemState| *s.queue_metas.get(&("al@x".into(), "q".into())).unwrap();
    assert_eq!(meta(&s).bytes, 10);
    assert_eq!(
        run(&mut s, remove("al@x", "q", 1)).0,
        CommandResult::QueueRemoved { count: 1 }
    );
    assert_eq!(meta(&s).bytes, 6);
    assert_eq!(
        run(&mut s, push(b"abcd")).0,
        CommandResult::Queued { seq: 4 }
    );
    // A plain push counts its bytes too, and is bounded by count alone.
    run(&mut s, common::push("al@x", "q", b"0123456789", 100));
    assert_eq!(meta(&s).bytes, 20);
}

#[test]
fn drop_node_routes_removes_only_that_nodes_routes() {
    let mut s = MemState::default();
    run(&mut s, bind("a@x/1", 1, "s1"));
    run(&mut s, bind("b@x/1", 2, "s2"));
    run(&mut s, bind("c@x/1", 1, "s3"));
    let (r, ev) = run(&mut s, Command::DropNodeRoutes { node: 1 });
    assert_eq!(r, CommandResult::RoutesDropped { count: 2 });
    assert_eq!(
        ev,
        vec![StateEvent::RoutesLost {
            node: 1,
            routes: vec![
                ("a@x/1".into(), route(1, "s1")),
                ("c@x/1".into(), route(1, "s3"))
            ],
        }]
    );
    assert_eq!(s.routes.keys().collect::<Vec<_>>(), vec!["b@x/1"]);
}

#[test]
fn a_down_node_loses_its_routes_and_cannot_bind_until_it_is_up() {
    let mut s = MemState::default();
    run(&mut s, bind("a@x/1", 1, "s1"));
    run(&mut s, bind("b@x/1", 2, "s2"));
    let (r, ev) = run(&mut s, Command::NodeDown { node: 1 });
    assert_eq!(r, CommandResult::RoutesDropped { count: 1 });
    assert_eq!(
        ev,
        vec![
            StateEvent::RoutesLost {
                node: 1,
                routes: vec![("a@x/1".into(), route(1, "s1"))],
            },
            StateEvent::NodeDown { node: 1 }
        ]
    );
    // A node cut off from the majority must not win a route back while it is down.
    let (r, _) = run(&mut s, bind("a@x/1", 1, "s9"));
    assert_eq!(r, CommandResult::NodeIsDown { node: 1 });
    assert!(!s.routes.contains_key("a@x/1"));
    assert_eq!(
        run(&mut s, bind("b@x/2", 2, "s3")).0,
        CommandResult::Bound { replaced: None }
    );

    let (r, ev) = run(&mut s, Command::NodeUp { node: 1 });
    assert_eq!(r, CommandResult::Done);
    assert_eq!(ev, vec![StateEvent::NodeUp { node: 1 }]);
    assert_eq!(
        run(&mut s, bind("a@x/1", 1, "s9")).0,
        CommandResult::Bound { replaced: None }
    );
    // NodeUp of a node that is not down changes nothing and says nothing.
    assert_eq!(run(&mut s, Command::NodeUp { node: 1 }).1, vec![]);
}

#[test]
fn cas_setting_writes_only_over_the_expected_value() {
    let mut s = MemState::default();
    let cas = |expect: Option<&str>, value: &str| Command::CasSetting {
        key: "k".into(),
        expect: expect.map(String::from),
        value: value.into(),
    };
    assert_eq!(run(&mut s, cas(None, "1")).0, CommandResult::Done);
    assert_eq!(
        run(&mut s, cas(None, "2")).0,
        CommandResult::SettingMismatch {
            current: Some("1".into())
        }
    );
    assert_eq!(run(&mut s, cas(Some("1"), "2")).0, CommandResult::Done);
    assert_eq!(s.settings.get("k").map(String::as_str), Some("2"));
    run(&mut s, Command::RemoveSetting { key: "k".into() });
    assert!(!s.settings.contains_key("k"));
}

#[test]
fn retried_request_is_applied_once() {
    let mut s = MemState::default();
    let req = Request {
        version: PROTOCOL_VERSION,
        client: 7,
        serial: 1,
        commands: vec![create_user("al@x"), bind("al@x/a", 1, "s1")],
    };
    let (first, ev, applied) = apply_request(&mut s, &req).unwrap();
    assert_eq!(applied, Applied::Fresh);
    assert_eq!(
        first.results,
        vec![CommandResult::Done, CommandResult::Bound { replaced: None }]
    );
    assert!(ev.is_empty());
    let after_first = s.clone();

    // The same request again (a retry): the remembered response, nothing applied. Applied
    // twice, CreateUser would answer UserExists.
    let (again, ev, applied) = apply_request(&mut s, &req).unwrap();
    assert_eq!(applied, Applied::Duplicate { last_serial: 1 });
    assert_eq!(again, first);
    assert!(ev.is_empty());
    assert_eq!(s, after_first);

    // A newer serial from the same client is applied.
    let next = Request {
        serial: 2,
        commands: vec![create_user("al@x")],
        ..req.clone()
    };
    let (resp, _, applied) = apply_request(&mut s, &next).unwrap();
    assert_eq!(applied, Applied::Fresh);
    assert_eq!(resp.results, vec![CommandResult::UserExists]);

    // An older serial is a stale retry: answered, not applied.
    let (_, _, applied) = apply_request(&mut s, &req).unwrap();
    assert_eq!(applied, Applied::Duplicate { last_serial: 2 });

    // Another client with serial 1 is not a duplicate.
    let other = Request {
        client: 8,
        commands: vec![create_user("bo@x")],
        ..req
    };
    let (resp, _, applied) = apply_request(&mut s, &other).unwrap();
    assert_eq!(applied, Applied::Fresh);
    assert_eq!(resp.results, vec![CommandResult::Done]);
}

#[test]
fn commands_in_one_request_see_each_other() {
    let mut s = MemState::default();
    let req = Request {
        version: PROTOCOL_VERSION,
        client: 1,
        serial: 1,
        commands: vec![
            create_user("al@x"),
            create_user("al@x"),
            Command::SetSetting {
                key: "k".into(),
                value: "v".into(),
            },
            Command::DeleteUser {
                user: "al@x".into(),
            },
            Command::DeleteUser {
                user: "al@x".into(),
            },
        ],
    };
    let (resp, _, _) = apply_request(&mut s, &req).unwrap();
    assert_eq!(
        resp.results,
        vec![
            CommandResult::Done,
            CommandResult::UserExists,
            CommandResult::Done,
            CommandResult::Done,
            CommandResult::NoSuchUser,
        ]
    );
    assert_eq!(s.settings.get("k").map(String::as_str), Some("v"));
}

// Per-user data and queues.

fn with_users(users: &[&str]) -> MemState {
    let mut s = MemState::default();
    for u in users {
        run(&mut s, create_user(u));
    }
    s
}

fn data_of(s: &MemState, user: &str, kind: &str) -> Vec<(String, Vec<u8>)> {
    s.data
        .iter()
        .filter(|((u, k, _), _)| u == user && k == kind)
        .map(|((_, _, key), v)| (key.clone(), v.clone()))
        .collect()
}

fn items(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

fn queue_seqs(s: &MemState, user: &str, queue: &str) -> Vec<u64> {
    s.queue_items
        .keys()
        .filter(|(u, q, _)| u == user && q == queue)
        .map(|(_, _, seq)| *seq)
        .collect()
}

#[test]
fn every_data_write_adds_exactly_one_to_the_version_and_announces_it() {
    let mut s = with_users(&["al@x"]);
    for want in 1..=3 {
        let (r, ev) = run(&mut s, put_data("al@x", "roster", &[("k", b"v")]));
        assert_eq!(r, CommandResult::DataWritten { version: want });
        assert_eq!(
            ev,
            vec![StateEvent::DataChanged {
                user: "al@x".into(),
                kind: "roster".into(),
                version: want,
            }]
        );
    }
    // A write that changes no key is still a write: clients compare versions, not bytes.
    let (r, _) = run(&mut s, data_write("al@x", "roster", false, &[], &[], None));
    assert_eq!(r, CommandResult::DataWritten { version: 4 });
    // Each kind has its own version.
    let (r, _) = run(&mut s, put_data("al@x", "vcard", &[]));
    assert_eq!(r, CommandResult::DataWritten { version: 1 });
    assert_eq!(
        s.data_versions.get(&("al@x".into(), "roster".into())),
        Some(&4)
    );
}

#[test]
fn data_write_with_a_stale_version_writes_nothing() {
    let mut s = with_users(&["al@x"]);
    let (r, _) = run(
        &mut s,
        data_write("al@x", "roster", false, &[], &[("a", b"1")], Some(0)),
    );
    assert_eq!(r, CommandResult::DataWritten { version: 1 });

    let before = s.clone();
    for stale in [Some(0), Some(2), Some(u64::MAX)] {
        let (r, ev) = run(
            &mut s,
            data_write("al@x", "roster", true, &["a"], &[("b", b"2")], stale),
        );
        assert_eq!(r, CommandResult::VersionMismatch { current: 1 });
        assert!(ev.is_empty());
        assert_eq!(s, before, "a mismatched write must change nothing");
    }

    let (r, _) = run(
        &mut s,
        data_write("al@x", "roster", false, &[], &[("b", b"2")], Some(1)),
    );
    assert_eq!(r, CommandResult::DataWritten { version: 2 });
    assert_eq!(
        data_of(&s, "al@x", "roster"),
        items(&[("a", b"1"), ("b", b"2")])
    );
}

#[test]
fn data_write_clears_then_deletes_then_puts() {
    let mut s = with_users(&["al@x"]);
    run(
        &mut s,
        put_data("al@x", "roster", &[("a", b"1"), ("b", b"1"), ("c", b"1")]),
    );
    run(&mut s, put_data("al@x", "vcard", &[("a", b"other kind")]));

    // Clear first: "a" survives only because it is put again; "b" and "c" go.
    run(
        &mut s,
        data_write("al@x", "roster", true, &["x"], &[("a", b"2")], None),
    );
    assert_eq!(data_of(&s, "al@x", "roster"), items(&[("a", b"2")]));
    assert_eq!(
        data_of(&s, "al@x", "vcard"),
        items(&[("a", b"other kind")]),
        "clear touches one kind only"
    );

    // Deletes before puts: a key both deleted and put ends up put.
    run(
        &mut s,
        data_write(
            "al@x",
            "roster",
            false,
            &["a", "z"],
            &[("a", b"3"), ("d", b"1")],
            None,
        ),
    );
    assert_eq!(
        data_of(&s, "al@x", "roster"),
        items(&[("a", b"3"), ("d", b"1")])
    );

    // Deletes alone remove; the later of two puts of one key wins.
    run(
        &mut s,
        data_write(
            "al@x",
            "roster",
            false,
            &["a"],
            &[("d", b"2"), ("d", b"3")],
            None,
        ),
    );
    assert_eq!(data_of(&s, "al@x", "roster"), items(&[("d", b"3")]));

    // Clear alone leaves the kind empty but versioned.
    let (r, _) = run(&mut s, data_write("al@x", "roster", true, &[], &[], None));
    assert_eq!(r, CommandResult::DataWritten { version: 5 });
    assert!(data_of(&s, "al@x", "roster").is_empty());
}

#[test]
fn malformed_names_are_invalid_and_change_nothing() {
    let mut s = with_users(&["al@x", "nul\0@x"]);
    run(&mut s, put_data("al@x", "roster", &[("a", b"1")]));
    run(&mut s, push("al@x", "q", b"m", 10));
    let before = s.clone();
    let cases = [
        put_data("", "roster", &[("a", b"1")]),
        put_data("nul\0@x", "roster", &[("a", b"1")]),
        put_data("al@x", "", &[("a", b"1")]),
        put_data("al@x", "ro\0ster", &[("a", b"1")]),
        put_data("al@x", "roster", &[("", b"1")]),
        put_data("al@x", "roster", &[("ok", b"1"), ("a\0", b"1")]),
        data_write("al@x", "roster", true, &[""], &[], None),
        data_write("al@x", "roster", true, &["\0"], &[], None),
        // Refused before the version is compared: an invalid write has no version to check.
        data_write("al@x", "", false, &[], &[], Some(99)),
        // Refused before the user is looked up: the name is wrong whoever it names.
        put_data("nobody\0@x", "roster", &[("a", b"1")]),
        push("", "q", b"m", 10),
        push("al@x", "", b"m", 10),
        push("al@x", "q\0", b"m", 10),
        push("nul\0@x", "q", b"m", 10),
        remove("", "q", 10),
        remove("al@x", "", 10),
        remove("al@x", "\0", 10),
    ];
    for cmd in cases {
        let (r, ev) = run(&mut s, cmd.clone());
        assert!(
            matches!(&r, CommandResult::Invalid { reason } if !reason.is_empty()),
            "{cmd:?} gave {r:?}"
        );
        assert!(ev.is_empty(), "{cmd:?}");
        assert_eq!(s, before, "{cmd:?} changed the state");
    }
}

#[test]
fn data_and_queue_commands_need_an_existing_user() {
    let mut s = with_users(&["al@x"]);
    let before = s.clone();
    for cmd in [
        put_data("bo@x", "roster", &[("a", b"1")]),
        data_write("bo@x", "roster", true, &[], &[], Some(0)),
        push("bo@x", "q", b"m", 10),
        remove("bo@x", "q", 10),
    ] {
        let (r, ev) = run(&mut s, cmd.clone());
        assert_eq!(r, CommandResult::NoSuchUser, "{cmd:?}");
        assert!(ev.is_empty());
    }
    assert_eq!(s, before);
}

#[test]
fn delete_user_wipes_their_data_and_queues_and_no_one_elses() {
    let mut s = with_users(&["al@x", "al@x.y", "al@xy"]);
    for u in ["al@x", "al@x.y", "al@xy"] {
        run(&mut s, put_data(u, "roster", &[("a", u.as_bytes())]));
        run(&mut s, put_data(u, "vcard", &[("v", b"card")]));
        run(&mut s, push(u, "offline", b"m1", 10));
        run(&mut s, push(u, "offline", b"m2", 10));
    }
    run(&mut s, push("al@x", "other", b"m", 10));
    // An emptied queue still has its meta: it must go too.
    run(&mut s, remove("al@x", "other", 1));
    let (r, ev) = run(
        &mut s,
        Command::DeleteUser {
            user: "al@x".into(),
        },
    );
    assert_eq!(r, CommandResult::Done);
    assert_eq!(
        ev,
        vec![StateEvent::UserDeleted {
            user: "al@x".into()
        }]
    );
    for map_users in [
        s.data.keys().map(|(u, _, _)| u.clone()).collect::<Vec<_>>(),
        s.data_versions.keys().map(|(u, _)| u.clone()).collect(),
        s.queue_items.keys().map(|(u, _, _)| u.clone()).collect(),
        s.queue_metas.keys().map(|(u, _)| u.clone()).collect(),
    ] {
        assert!(!map_users.is_empty());
        assert!(
            map_users.iter().all(|u| u == "al@x.y" || u == "al@xy"),
            "{map_users:?}"
        );
    }
    assert_eq!(queue_seqs(&s, "al@x.y", "offline"), vec![1, 2]);

    // A new account of the same name starts from nothing.
    run(&mut s, create_user("al@x"));
    assert_eq!(
        run(&mut s, put_data("al@x", "roster", &[])).0,
        CommandResult::DataWritten { version: 1 }
    );
    assert_eq!(
        run(&mut s, push("al@x", "offline", b"new", 10)).0,
        CommandResult::Queued { seq: 1 }
    );
}

#[test]
fn data_of_one_user_or_kind_never_leaks_into_another() {
    let mut s = with_users(&["al@x", "al@x.y"]);
    run(&mut s, put_data("al@x", "r", &[("k", b"r")]));
    run(&mut s, put_data("al@x", "roster", &[("k", b"roster")]));
    run(&mut s, put_data("al@x.y", "r", &[("k", b"other user")]));
    run(&mut s, push("al@x", "q", b"q", 10));
    run(&mut s, push("al@x", "q2", b"q2", 10));
    run(&mut s, push("al@x.y", "q", b"other user", 10));

    // Clearing kind "r" of "al@x" leaves "roster" and "al@x.y" alone.
    run(&mut s, data_write("al@x", "r", true, &[], &[], None));
    assert!(data_of(&s, "al@x", "r").is_empty());
    assert_eq!(data_of(&s, "al@x", "roster"), items(&[("k", b"roster")]));
    assert_eq!(data_of(&s, "al@x.y", "r"), items(&[("k", b"other user")]));
    assert_eq!(
        s.data_versions.get(&("al@x.y".into(), "r".into())),
        Some(&1)
    );

    // Emptying queue "q" of "al@x" leaves "q2" and "al@x.y"'s "q" alone.
    assert_eq!(
        run(&mut s, remove("al@x", "q", u64::MAX)).0,
        CommandResult::QueueRemoved { count: 1 }
    );
    assert_eq!(queue_seqs(&s, "al@x", "q2"), vec![1]);
    assert_eq!(queue_seqs(&s, "al@x.y", "q"), vec![1]);
}

#[test]
fn queue_push_stops_at_the_limit() {
    let mut s = with_users(&["al@x"]);
    for want in 1..=2 {
        let (r, ev) = run(&mut s, push("al@x", "offline", b"m", 2));
        assert_eq!(r, CommandResult::Queued { seq: want });
        assert_eq!(
            ev,
            vec![StateEvent::Queued {
                user: "al@x".into(),
                queue: "offline".into(),
                seq: want,
            }]
        );
    }
    let before = s.clone();
    let (r, ev) = run(&mut s, push("al@x", "offline", b"m", 2));
    assert_eq!(r, CommandResult::QueueFull { len: 2 });
    assert!(ev.is_empty());
    assert_eq!(s, before);
    // The limit is the caller's, per push: a larger one admits more.
    assert_eq!(
        run(&mut s, push("al@x", "offline", b"m", 3)).0,
        CommandResult::Queued { seq: 3 }
    );
    assert_eq!(
        run(&mut s, push("al@x", "offline", b"m", 1)).0,
        CommandResult::QueueFull { len: 3 }
    );
    assert_eq!(
        run(&mut s, push("al@x", "empty", b"m", 0)).0,
        CommandResult::QueueFull { len: 0 }
    );
    // Room made by a removal is usable.
    run(&mut s, remove("al@x", "offline", 1));
    assert_eq!(
        run(&mut s, push("al@x", "offline", b"m", 3)).0,
        CommandResult::Queued { seq: 4 }
    );
}

#[test]
fn queue_remove_takes_items_through_the_seq_and_seqs_are_never_reused() {
    let mut s = with_users(&["al@x"]);
    for i in 1..=5u8 {
        run(&mut s, push("al@x", "q", &[i], 100));
    }
    assert_eq!(
        run(&mut s, remove("al@x", "q", 2)).0,
        CommandResult::QueueRemoved { count: 2 }
    );
    assert_eq!(queue_seqs(&s, "al@x", "q"), vec![3, 4, 5]);
    assert_eq!(
        s.queue_items.get(&("al@x".into(), "q".into(), 3)),
        Some(&vec![3u8])
    );
    // Already removed, and nothing at 0: no-ops.
    for through in [0, 2] {
        assert_eq!(
            run(&mut s, remove("al@x", "q", through)).0,
            CommandResult::QueueRemoved { count: 0 }
        );
    }
    assert_eq!(
        run(&mut s, remove("al@x", "never-pushed", 10)).0,
        CommandResult::QueueRemoved { count: 0 }
    );
    assert_eq!(
        run(&mut s, remove("al@x", "q", 1000)).0,
        CommandResult::QueueRemoved { count: 3 }
    );
    assert!(queue_seqs(&s, "al@x", "q").is_empty());
    assert_eq!(
        s.queue_metas.get(&("al@x".into(), "q".into())),
        Some(&QueueMeta {
            last_seq: 5,
            len: 0,
            bytes: 0
        })
    );
    // The emptied queue goes on from 6, not 1.
    let (r, ev) = run(&mut s, push("al@x", "q", b"later", 100));
    assert_eq!(r, CommandResult::Queued { seq: 6 });
    assert_eq!(ev.len(), 1);
    assert_eq!(
        run(&mut s, remove("al@x", "q", u64::MAX)).0,
        CommandResult::QueueRemoved { count: 1 }
    );
}
