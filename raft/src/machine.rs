//! The decisions of the state machine, as a pure function of (state, command).
//!
//! Nothing here reads a clock, draws a random number or touches the network: every replica
//! that applies the same entries to the same state reaches the same state and the same
//! results. The storage behind `StateStore` is RocksDB in production (`storage::sm`) and
//! `MemState` in tests.

use std::collections::BTreeMap;
use std::convert::Infallible;

use serde::{Deserialize, Serialize};

use crate::types::{
    Command, CommandResult, NodeId, Request, Response, Route, StateEvent, UserRecord,
};

/// What the state machine remembers per proposer to apply a retried request once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub serial: u64,
    pub response: Response,
}

/// The state the commands read and write. Errors are the store's own (I/O, decoding):
/// a command's outcome never depends on them.
pub trait StateStore {
    type Error;

    fn user(&self, user: &str) -> Result<Option<UserRecord>, Self::Error>;
    fn put_user(&mut self, user: &str, record: &UserRecord) -> Result<(), Self::Error>;
    fn remove_user(&mut self, user: &str) -> Result<(), Self::Error>;

    fn route(&self, full_jid: &str) -> Result<Option<Route>, Self::Error>;
    fn put_route(&mut self, full_jid: &str, route: &Route) -> Result<(), Self::Error>;
    fn remove_route(&mut self, full_jid: &str) -> Result<(), Self::Error>;
    /// Routes whose full JID has exactly this bare JID, ordered by full JID.
    fn routes_of(&self, bare_jid: &str) -> Result<Vec<(String, Route)>, Self::Error>;
    /// Routes on that node, ordered by full JID.
    fn routes_on_node(&self, node: NodeId) -> Result<Vec<(String, Route)>, Self::Error>;

    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), Self::Error>;

    fn client(&self, client: u64) -> Result<Option<ClientRecord>, Self::Error>;
    fn put_client(&mut self, client: u64, record: &ClientRecord) -> Result<(), Self::Error>;
}

/// The prefix every full JID of `bare_jid` starts with. A bare JID cannot contain '/', so
/// "al@x/" never matches "al@xy/..." or "al@x.y/...".
pub fn full_jid_prefix(bare_jid: &str) -> String {
    format!("{bare_jid}/")
}

/// Applies one command.
pub fn apply<S: StateStore>(
    state: &mut S,
    command: &Command,
) -> Result<(CommandResult, Vec<StateEvent>), S::Error> {
    let mut events = Vec::new();
    let result = match command {
        Command::Noop => CommandResult::Done,
        Command::CreateUser { user, record } => {
            if state.user(user)?.is_some() {
                CommandResult::UserExists
            } else {
                state.put_user(user, record)?;
                CommandResult::Done
            }
        }
        Command::SetPassword { user, record } => {
            if state.user(user)?.is_none() {
                CommandResult::NoSuchUser
            } else {
                state.put_user(user, record)?;
                CommandResult::Done
            }
        }
        Command::DeleteUser { user } => {
            if state.user(user)?.is_none() {
                CommandResult::NoSuchUser
            } else {
                // A deleted account must not stay reachable through a live route.
                for (full_jid, route) in state.routes_of(user)? {
                    state.remove_route(&full_jid)?;
                    events.push(StateEvent::RouteRemoved { full_jid, route });
                }
                state.remove_user(user)?;
                events.push(StateEvent::UserDeleted { user: user.clone() });
                CommandResult::Done
            }
        }
        Command::BindResource { full_jid, route } => match state.route(full_jid)? {
            // Binding the same session again (a retry) changes nothing and displaces no one.
            Some(old) if old == *route => CommandResult::Bound { replaced: None },
            Some(old) => {
                state.put_route(full_jid, route)?;
                events.push(StateEvent::RouteReplaced {
                    full_jid: full_jid.clone(),
                    old: old.clone(),
                    new: route.clone(),
                });
                CommandResult::Bound {
                    replaced: Some(old),
                }
            }
            None => {
                state.put_route(full_jid, route)?;
                CommandResult::Bound { replaced: None }
            }
        },
        Command::UnbindResource { full_jid, session } => match state.route(full_jid)? {
            // Only the session that owns the route may remove it: an unbind from a session
            // that was already replaced must not remove its successor.
            Some(route) if route.session == *session => {
                state.remove_route(full_jid)?;
                events.push(StateEvent::RouteRemoved {
                    full_jid: full_jid.clone(),
                    route,
                });
                CommandResult::Unbound { removed: true }
            }
            _ => CommandResult::Unbound { removed: false },
        },
        Command::DropNodeRoutes { node } => {
            let routes = state.routes_on_node(*node)?;
            let count = routes.len() as u64;
            for (full_jid, route) in routes {
                debug_assert_eq!(route.node, *node, "node index out of step with routes");
                state.remove_route(&full_jid)?;
                events.push(StateEvent::RouteRemoved { full_jid, route });
            }
            CommandResult::RoutesDropped { count }
        }
        Command::SetSetting { key, value } => {
            state.put_setting(key, value)?;
            CommandResult::Done
        }
    };
    Ok((result, events))
}

/// Why a request was or was not applied: returned with the response so that logs and tests
/// can tell a retry from a first application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Fresh,
    /// The serial was not newer than the last one applied for this client: the remembered
    /// response is returned and nothing is applied.
    Duplicate {
        last_serial: u64,
    },
}

/// Applies a request (a batch of commands from one client), once.
pub fn apply_request<S: StateStore>(
    state: &mut S,
    request: &Request,
) -> Result<(Response, Vec<StateEvent>, Applied), S::Error> {
    if let Some(last) = state.client(request.client)? {
        if request.serial <= last.serial {
            return Ok((
                last.response,
                Vec::new(),
                Applied::Duplicate {
                    last_serial: last.serial,
                },
            ));
        }
    }
    let mut results = Vec::with_capacity(request.commands.len());
    let mut events = Vec::new();
    for command in &request.commands {
        let (result, mut evs) = apply(state, command)?;
        results.push(result);
        events.append(&mut evs);
    }
    let response = Response { results };
    state.put_client(
        request.client,
        &ClientRecord {
            serial: request.serial,
            response: response.clone(),
        },
    )?;
    Ok((response, events, Applied::Fresh))
}

/// An in-memory `StateStore`: the reference the RocksDB store is tested against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemState {
    pub users: BTreeMap<String, UserRecord>,
    pub routes: BTreeMap<String, Route>,
    pub settings: BTreeMap<String, String>,
    pub clients: BTreeMap<u64, ClientRecord>,
}

impl StateStore for MemState {
    type Error = Infallible;

    fn user(&self, user: &str) -> Result<Option<UserRecord>, Infallible> {
        Ok(self.users.get(user).cloned())
    }
    fn put_user(&mut self, user: &str, record: &UserRecord) -> Result<(), Infallible> {
        self.users.insert(user.to_owned(), record.clone());
        Ok(())
    }
    fn remove_user(&mut self, user: &str) -> Result<(), Infallible> {
        self.users.remove(user);
        Ok(())
    }
    fn route(&self, full_jid: &str) -> Result<Option<Route>, Infallible> {
        Ok(self.routes.get(full_jid).cloned())
    }
    fn put_route(&mut self, full_jid: &str, route: &Route) -> Result<(), Infallible> {
        self.routes.insert(full_jid.to_owned(), route.clone());
        Ok(())
    }
    fn remove_route(&mut self, full_jid: &str) -> Result<(), Infallible> {
        self.routes.remove(full_jid);
        Ok(())
    }
    fn routes_of(&self, bare_jid: &str) -> Result<Vec<(String, Route)>, Infallible> {
        let prefix = full_jid_prefix(bare_jid);
        Ok(self
            .routes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn routes_on_node(&self, node: NodeId) -> Result<Vec<(String, Route)>, Infallible> {
        Ok(self
            .routes
            .iter()
            .filter(|(_, r)| r.node == node)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), Infallible> {
        self.settings.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    fn client(&self, client: u64) -> Result<Option<ClientRecord>, Infallible> {
        Ok(self.clients.get(&client).cloned())
    }
    fn put_client(&mut self, client: u64, record: &ClientRecord) -> Result<(), Infallible> {
        self.clients.insert(client, record.clone());
        Ok(())
    }
}
