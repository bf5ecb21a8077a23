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
    node_down_key, Command, CommandResult, NodeId, Request, Response, Route, StateEvent, UserRecord,
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

    fn setting(&self, key: &str) -> Result<Option<String>, Self::Error>;
    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), Self::Error>;
    fn remove_setting(&mut self, key: &str) -> Result<(), Self::Error>;

    fn client(&self, client: u64) -> Result<Option<ClientRecord>, Self::Error>;
    fn put_client(&mut self, client: u64, record: &ClientRecord) -> Result<(), Self::Error>;

    // Per-user data and queues. `apply` only passes names that `invalid_name` accepts (not
    // empty, no NUL), except that `data_kinds` and `queues_of` may be asked about any user
    // name and must then answer exactly that user's.

    /// The version of (user, kind): 0 if it was never written.
    fn data_version(&self, user: &str, kind: &str) -> Result<u64, Self::Error>;
    fn put_data_version(&mut self, user: &str, kind: &str, version: u64)
        -> Result<(), Self::Error>;
    fn remove_data_version(&mut self, user: &str, kind: &str) -> Result<(), Self::Error>;
    /// The kinds of that user that have a version, sorted.
    fn data_kinds(&self, user: &str) -> Result<Vec<String>, Self::Error>;
    /// The keys of (user, kind), sorted.
    fn data_keys(&self, user: &str, kind: &str) -> Result<Vec<String>, Self::Error>;
    fn put_data(
        &mut self,
        user: &str,
        kind: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), Self::Error>;
    fn remove_data(&mut self, user: &str, kind: &str, key: &str) -> Result<(), Self::Error>;

    fn queue_meta(&self, user: &str, queue: &str) -> Result<Option<QueueMeta>, Self::Error>;
    fn put_queue_meta(
        &mut self,
        user: &str,
        queue: &str,
        meta: &QueueMeta,
    ) -> Result<(), Self::Error>;
    fn remove_queue_meta(&mut self, user: &str, queue: &str) -> Result<(), Self::Error>;
    /// The queues of that user that have a meta record, sorted by name.
    fn queues_of(&self, user: &str) -> Result<Vec<(String, QueueMeta)>, Self::Error>;
    fn put_queue_item(
        &mut self,
        user: &str,
        queue: &str,
        seq: u64,
        value: &[u8],
    ) -> Result<(), Self::Error>;
    fn remove_queue_item(&mut self, user: &str, queue: &str, seq: u64) -> Result<(), Self::Error>;
    /// The size of one item, if it is held.
    fn queue_item_len(&self, user: &str, queue: &str, seq: u64)
        -> Result<Option<u64>, Self::Error>;
}

/// The bookkeeping of one (user, queue), kept apart from the items so that a push checks
/// the limit and a reader learns the length without counting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMeta {
    /// The seq of the newest item ever pushed, 0 before the first: the next push gets
    /// `last_seq + 1`. Kept when the queue empties, so that seqs are never reused.
    pub last_seq: u64,
    /// Items held now. Removal only ever takes a prefix, so they are exactly the seqs
    /// `last_seq - len + 1 ..= last_seq`.
    pub len: u64,
    /// Bytes of the items held now (what `QueuePushBounded` bounds).
    pub bytes: u64,
}

impl QueueMeta {
    /// The seqs of the items held, oldest first. Written so that it cannot overflow even at
    /// `last_seq == u64::MAX`.
    pub fn seqs(&self) -> impl Iterator<Item = u64> {
        debug_assert!(
            self.len <= self.last_seq,
            "queue holds more items than were pushed"
        );
        let removed_through = self.last_seq.saturating_sub(self.len);
        (removed_through..self.last_seq).map(|s| s + 1)
    }
}

/// Why a user, kind, key or queue name cannot be used, or `None` if it can. The RocksDB
/// key layout would survive a NUL, but no XMPP name contains one, so one arriving here is a
/// bug upstream that is better refused than stored.
pub fn invalid_name(what: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        Some(format!("{what} is empty"))
    } else if name.contains('\0') {
        Some(format!("{what} {name:?} contains a NUL character"))
    } else {
        None
    }
}

fn invalid_data_write(
    user: &str,
    kind: &str,
    deletes: &[String],
    puts: &[(String, Vec<u8>)],
) -> Option<String> {
    invalid_name("user", user)
        .or_else(|| invalid_name("kind", kind))
        .or_else(|| deletes.iter().find_map(|k| invalid_name("deleted key", k)))
        .or_else(|| puts.iter().find_map(|(k, _)| invalid_name("put key", k)))
}

#[allow(clippy::too_many_arguments)]
fn data_write<S: StateStore>(
    state: &mut S,
    events: &mut Vec<StateEvent>,
    user: &str,
    kind: &str,
    clear: bool,
    deletes: &[String],
    puts: &[(String, Vec<u8>)],
    expect_version: Option<u64>,
) -> Result<CommandResult, S::Error> {
    if let Some(reason) = invalid_data_write(user, kind, deletes, puts) {
        return Ok(CommandResult::Invalid { reason });
    }
    if state.user(user)?.is_none() {
        return Ok(CommandResult::NoSuchUser);
    }
    let current = state.data_version(user, kind)?;
    if let Some(expected) = expect_version {
        if expected != current {
            return Ok(CommandResult::VersionMismatch { current });
        }
    }
    let Some(version) = current.checked_add(1) else {
        return Ok(CommandResult::Invalid {
            reason: format!("version of {user} {kind} is exhausted"),
        });
    };
    if clear {
        for key in state.data_keys(user, kind)? {
            state.remove_data(user, kind, &key)?;
        }
    }
    for key in deletes {
        state.remove_data(user, kind, key)?;
    }
    for (key, value) in puts {
        state.put_data(user, kind, key, value)?;
    }
    state.put_data_version(user, kind, version)?;
    events.push(StateEvent::DataChanged {
        user: user.to_owned(),
        kind: kind.to_owned(),
        version,
    });
    Ok(CommandResult::DataWritten { version })
}

fn invalid_queue(user: &str, queue: &str) -> Option<String> {
    invalid_name("user", user).or_else(|| invalid_name("queue", queue))
}

fn queue_push<S: StateStore>(
    state: &mut S,
    events: &mut Vec<StateEvent>,
    user: &str,
    queue: &str,
    value: &[u8],
    limit: u64,
    max_bytes: u64,
) -> Result<CommandResult, S::Error> {
    if let Some(reason) = invalid_queue(user, queue) {
        return Ok(CommandResult::Invalid { reason });
    }
    if state.user(user)?.is_none() {
        return Ok(CommandResult::NoSuchUser);
    }
    let meta = state.queue_meta(user, queue)?.unwrap_or_default();
    let bytes = meta.bytes.saturating_add(value.len() as u64);
    if meta.len >= limit || bytes > max_bytes {
        return Ok(CommandResult::QueueFull { len: meta.len });
    }
    let Some(seq) = meta.last_seq.checked_add(1) else {
        return Ok(CommandResult::Invalid {
            reason: format!("sequence numbers of {user} {queue} are exhausted"),
        });
    };
    state.put_queue_item(user, queue, seq, value)?;
    state.put_queue_meta(
        user,
        queue,
        &QueueMeta {
            last_seq: seq,
            len: meta.len + 1,
            bytes,
        },
    )?;
    events.push(StateEvent::Queued {
        user: user.to_owned(),
        queue: queue.to_owned(),
        seq,
    });
    Ok(CommandResult::Queued { seq })
}

fn queue_remove<S: StateStore>(
    state: &mut S,
    user: &str,
    queue: &str,
    through_seq: u64,
) -> Result<CommandResult, S::Error> {
    if let Some(reason) = invalid_queue(user, queue) {
        return Ok(CommandResult::Invalid { reason });
    }
    if state.user(user)?.is_none() {
        return Ok(CommandResult::NoSuchUser);
    }
    let Some(meta) = state.queue_meta(user, queue)? else {
        return Ok(CommandResult::QueueRemoved { count: 0 });
    };
    // The items are a contiguous run of seqs, so the ones to remove are found without
    // reading the items.
    let mut count = 0;
    let mut bytes = 0u64;
    for seq in meta.seqs().take_while(|s| *s <= through_seq) {
        bytes = bytes.saturating_add(state.queue_item_len(user, queue, seq)?.unwrap_or(0));
        state.remove_queue_item(user, queue, seq)?;
        count += 1;
    }
    if count > 0 {
        state.put_queue_meta(
            user,
            queue,
            &QueueMeta {
                last_seq: meta.last_seq,
                len: meta.len - count,
                bytes: meta.bytes.saturating_sub(bytes),
            },
        )?;
    }
    Ok(CommandResult::QueueRemoved { count })
}

/// Removes every data kind (with its version) and every queue (with its seqs) of `user`.
fn remove_user_data<S: StateStore>(state: &mut S, user: &str) -> Result<(), S::Error> {
    for kind in state.data_kinds(user)? {
        for key in state.data_keys(user, &kind)? {
            state.remove_data(user, &kind, &key)?;
        }
        state.remove_data_version(user, &kind)?;
    }
    for (queue, meta) in state.queues_of(user)? {
        for seq in meta.seqs() {
            state.remove_queue_item(user, &queue, seq)?;
        }
        state.remove_queue_meta(user, &queue)?;
    }
    Ok(())
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
        Command::ChangePassword {
            user,
            record,
            keep_session,
        } => {
            if state.user(user)?.is_none() {
                CommandResult::NoSuchUser
            } else {
                state.put_user(user, record)?;
                events.push(StateEvent::PasswordChanged {
                    user: user.clone(),
                    keep_session: keep_session.clone(),
                });
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
                // A later account of the same name must not inherit this one's roster or
                // offline messages.
                remove_user_data(state, user)?;
                state.remove_user(user)?;
                events.push(StateEvent::UserDeleted { user: user.clone() });
                CommandResult::Done
            }
        }
        Command::BindResource { route, .. }
            if state.setting(&node_down_key(route.node))?.is_some() =>
        {
            CommandResult::NodeIsDown { node: route.node }
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
        Command::DropNodeRoutes { node } => drop_node_routes(state, &mut events, *node)?,
        Command::NodeDown { node } => {
            state.put_setting(&node_down_key(*node), "1")?;
            let result = drop_node_routes(state, &mut events, *node)?;
            events.push(StateEvent::NodeDown { node: *node });
            result
        }
        Command::NodeUp { node } => {
            let key = node_down_key(*node);
            if state.setting(&key)?.is_some() {
                state.remove_setting(&key)?;
                events.push(StateEvent::NodeUp { node: *node });
            }
            CommandResult::Done
        }
        Command::CasSetting { key, expect, value } => {
            let current = state.setting(key)?;
            if current == *expect {
                state.put_setting(key, value)?;
                CommandResult::Done
            } else {
                CommandResult::SettingMismatch { current }
            }
        }
        Command::RemoveSetting { key } => {
            state.remove_setting(key)?;
            CommandResult::Done
        }
        Command::SetSetting { key, value } => {
            state.put_setting(key, value)?;
            CommandResult::Done
        }
        Command::DataWrite {
            user,
            kind,
            clear,
            deletes,
            puts,
            expect_version,
        } => data_write(
            state,
            &mut events,
            user,
            kind,
            *clear,
            deletes,
            puts,
            *expect_version,
        )?,
        Command::QueuePush {
            user,
            queue,
            value,
            limit,
        } => queue_push(state, &mut events, user, queue, value, *limit, u64::MAX)?,
        Command::QueuePushBounded {
            user,
            queue,
            value,
            limit,
            max_bytes,
        } => queue_push(state, &mut events, user, queue, value, *limit, *max_bytes)?,
        Command::QueueRemove {
            user,
            queue,
            through_seq,
        } => queue_remove(state, user, queue, *through_seq)?,
    };
    Ok((result, events))
}

/// Removes every route of `node` and reports them in one `RoutesLost` event.
fn drop_node_routes<S: StateStore>(
    state: &mut S,
    events: &mut Vec<StateEvent>,
    node: NodeId,
) -> Result<CommandResult, S::Error> {
    let routes = state.routes_on_node(node)?;
    let count = routes.len() as u64;
    for (full_jid, route) in &routes {
        debug_assert_eq!(route.node, node, "node index out of step with routes");
        state.remove_route(full_jid)?;
    }
    if !routes.is_empty() {
        events.push(StateEvent::RoutesLost { node, routes });
    }
    Ok(CommandResult::RoutesDropped { count })
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
    /// (user, kind, key) -> value. Tuple keys order by user, then kind, then key, like the
    /// RocksDB layout.
    pub data: BTreeMap<(String, String, String), Vec<u8>>,
    /// (user, kind) -> version.
    pub data_versions: BTreeMap<(String, String), u64>,
    /// (user, queue, seq) -> value.
    pub queue_items: BTreeMap<(String, String, u64), Vec<u8>>,
    pub queue_metas: BTreeMap<(String, String), QueueMeta>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
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
    fn setting(&self, key: &str) -> Result<Option<String>, Infallible> {
        Ok(self.settings.get(key).cloned())
    }
    fn put_setting(&mut self, key: &str, value: &str) -> Result<(), Infallible> {
        self.settings.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
    fn remove_setting(&mut self, key: &str) -> Result<(), Infallible> {
        self.settings.remove(key);
        Ok(())
    }
    fn client(&self, client: u64) -> Result<Option<ClientRecord>, Infallible> {
        Ok(self.clients.get(&client).cloned())
    }
    fn put_client(&mut self, client: u64, record: &ClientRecord) -> Result<(), Infallible> {
        self.clients.insert(client, record.clone());
        Ok(())
    }
    fn data_version(&self, user: &str, kind: &str) -> Result<u64, Infallible> {
        Ok(self
            .data_versions
            .get(&pair(user, kind))
            .copied()
            .unwrap_or(0))
    }
    fn put_data_version(&mut self, user: &str, kind: &str, version: u64) -> Result<(), Infallible> {
        self.data_versions.insert(pair(user, kind), version);
        Ok(())
    }
    fn remove_data_version(&mut self, user: &str, kind: &str) -> Result<(), Infallible> {
        self.data_versions.remove(&pair(user, kind));
        Ok(())
    }
    fn data_kinds(&self, user: &str) -> Result<Vec<String>, Infallible> {
        Ok(self
            .data_versions
            .range(pair(user, "")..)
            .take_while(|((u, _), _)| u == user)
            .map(|((_, k), _)| k.clone())
            .collect())
    }
    fn data_keys(&self, user: &str, kind: &str) -> Result<Vec<String>, Infallible> {
        Ok(self
            .data
            .range((user.to_owned(), kind.to_owned(), String::new())..)
            .take_while(|((u, k, _), _)| u == user && k == kind)
            .map(|((_, _, key), _)| key.clone())
            .collect())
    }
    fn put_data(
        &mut self,
        user: &str,
        kind: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), Infallible> {
        self.data.insert(
            (user.to_owned(), kind.to_owned(), key.to_owned()),
            value.to_vec(),
        );
        Ok(())
    }
    fn remove_data(&mut self, user: &str, kind: &str, key: &str) -> Result<(), Infallible> {
        self.data
            .remove(&(user.to_owned(), kind.to_owned(), key.to_owned()));
        Ok(())
    }
    fn queue_meta(&self, user: &str, queue: &str) -> Result<Option<QueueMeta>, Infallible> {
        Ok(self.queue_metas.get(&pair(user, queue)).copied())
    }
    fn put_queue_meta(
        &mut self,
        user: &str,
        queue: &str,
        meta: &QueueMeta,
    ) -> Result<(), Infallible> {
        self.queue_metas.insert(pair(user, queue), *meta);
        Ok(())
    }
    fn remove_queue_meta(&mut self, user: &str, queue: &str) -> Result<(), Infallible> {
        self.queue_metas.remove(&pair(user, queue));
        Ok(())
    }
    fn queues_of(&self, user: &str) -> Result<Vec<(String, QueueMeta)>, Infallible> {
        Ok(self
            .queue_metas
            .range(pair(user, "")..)
            .take_while(|((u, _), _)| u == user)
            .map(|((_, q), m)| (q.clone(), *m))
            .collect())
    }
    fn put_queue_item(
        &mut self,
        user: &str,
        queue: &str,
        seq: u64,
        value: &[u8],
    ) -> Result<(), Infallible> {
        self.queue_items
            .insert((user.to_owned(), queue.to_owned(), seq), value.to_vec());
        Ok(())
    }
    fn remove_queue_item(&mut self, user: &str, queue: &str, seq: u64) -> Result<(), Infallible> {
        self.queue_items
            .remove(&(user.to_owned(), queue.to_owned(), seq));
        Ok(())
    }
    fn queue_item_len(&self, user: &str, queue: &str, seq: u64) -> Result<Option<u64>, Infallible> {
        Ok(self
            .queue_items
            .get(&(user.to_owned(), queue.to_owned(), seq))
            .map(|v| v.len() as u64))
    }
}
