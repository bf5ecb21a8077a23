//! The state machine's decisions, against the in-memory reference store.

mod common;

use chorus_raft::machine::{apply, apply_request, Applied, MemState};
use chorus_raft::{Command, CommandResult, Request, Route, StateEvent, PROTOCOL_VERSION};
use common::{bind, create_user, record};

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
fn drop_node_routes_removes_only_that_nodes_routes() {
    let mut s = MemState::default();
    run(&mut s, bind("a@x/1", 1, "s1"));
    run(&mut s, bind("b@x/1", 2, "s2"));
    run(&mut s, bind("c@x/1", 1, "s3"));
    let (r, ev) = run(&mut s, Command::DropNodeRoutes { node: 1 });
    assert_eq!(r, CommandResult::RoutesDropped { count: 2 });
    assert_eq!(ev.len(), 2);
    assert_eq!(s.routes.keys().collect::<Vec<_>>(), vec!["b@x/1"]);
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
