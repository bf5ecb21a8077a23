//! The session actor of a bound client stream.
//!
//! It checks and stamps what the client sends (RFC 6120 8.1), hands iqs for
//! the server to `xep`, the client's own presence to the router, and every
//! other stanza to the router; it writes what the router delivers. A parser
//! task feeds it stanzas and a writer task drains its bounded outbound queue,
//! so a slow client can hold back neither the actor nor the node.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chorus_raft::Command;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::admission::Ticket;
use super::negotiate::{Bound, Reader, Writer};
use super::outbound::{self, Outbox, Refused, WriterEnd};
use super::transport::Activity;
use super::C2s;
use crate::bus::iq::{Answer, Caller, Target};
use crate::bus::{
    Carbon, CarbonsEnabled, Deliver, DeliverBatch, Directed, Kick, OwnPresence, Register,
    RouteStanza, SessionFlag, SessionHandle, Unregister,
};
use crate::features;
use crate::im::presence;
use crate::rate::Shaper;
use crate::xep::{self, carbons, csi};
use crate::xmpp::element::Element;
use crate::xmpp::error::{error_reply, stream_error_xml, StanzaErrorKind, StreamErrorKind};
use crate::xmpp::ns;
use crate::xmpp::stanza::{self, StanzaKind};
use crate::xmpp::stream::{ReadError, StreamEvent};

pub struct Session {
    c2s: Arc<C2s>,
    full_jid: jid::FullJid,
    bare_jid: String,
    session_id: String,
    out: Outbox,
    /// The parser task: it may wait on a silent client forever, so it is
    /// aborted when the session stops.
    reader_task: tokio::task::AbortHandle,
    /// The writer task: aborted when the queue overflows, which frees the
    /// socket and everything queued at once.
    writer_task: tokio::task::AbortHandle,
    /// Held until the session ends: its place among the node's connections.
    _ticket: Ticket,
    activity: Activity,
    closing: bool,
    pings_sent: u64,
    /// XEP-0280 carbons enabled on this stream.
    carbons: bool,
    /// The bind result, written once the router knows this session.
    bind_reply: Option<Element>,
    /// XEP-0352: the client said it is inactive; presence for it is held.
    inactive: bool,
    held: csi::Held,
    /// Answers being worked out (Raft writes) for this stream's iqs, and subscription
    /// changes under way: at most `c2s.max_pending_requests`.
    pending_answers: u32,
    /// Where this stream sent available directed presence (RFC 6121 4.6): at most
    /// `limits.directed_presences`.
    directed: std::collections::HashSet<String>,
    /// A close asked for while answers were pending: it waits for them, so a
    /// client that, say, deletes its account still reads the result first.
    deferred_close: Option<(StreamErrorKind, Option<String>)>,
}

/// Turn a bound stream into a running session.
pub fn start(
    c2s: Arc<C2s>,
    reader: Reader,
    writer: Writer,
    activity: Activity,
    bound: Bound,
    ticket: Ticket,
) {
    let settings = &c2s.settings.c2s;
    let queue = settings.outbound_queue as usize;
    let (out, inbox) = outbound::queue(queue, settings.outbound_queue_bytes);
    let writer = tokio::spawn(outbound::write_loop(writer, inbox, c2s.write_timeout()));
    let writer_task = writer.abort_handle();
    // Boxed: tokio allocates a channel's slots 32 at a time, up front, and an unboxed
    // event made that 4.6 KiB on every idle session (docs/benchmarks.md).
    let (in_tx, in_rx) = mpsc::channel::<Box<Result<StreamEvent, ReadError>>>(16);
    let shaper = c2s.rates.shaper();
    let reader_task = tokio::spawn(read_loop(reader, in_tx, shaper)).abort_handle();
    let arbiter = c2s.arbiter.clone();
    Session::start_in_arbiter(&arbiter, move |ctx: &mut Context<Session>| {
        ctx.set_mailbox_capacity(queue);
        ctx.add_stream(tokio_stream::StreamExt::map(
            ReceiverStream::new(in_rx),
            |event| *event,
        ));
        ctx.spawn(
            actix::fut::wrap_future::<_, Session>(writer)
                .map(|end, act, ctx| act.writer_ended(end, ctx)),
        );
        Session {
            bare_jid: bound.full_jid.to_bare().to_string(),
            full_jid: bound.full_jid,
            session_id: bound.session_id,
            bind_reply: Some(bound.reply),
            c2s,
            out,
            reader_task,
            writer_task,
            _ticket: ticket,
            activity,
            closing: false,
            pings_sent: 0,
            carbons: false,
            pending_answers: 0,
            directed: Default::default(),
            deferred_close: None,
            inactive: false,
            held: csi::Held::default(),
        }
    });
}

/// The answer to a request beyond `c2s.max_pending_requests`: wait and send it again.
fn too_busy(request: &Element) -> Element {
    crate::xmpp::error::error_reply_with_type(
        request,
        StanzaErrorKind::ResourceConstraint,
        crate::xmpp::error::ErrorType::Wait,
        Some("too many requests under way on this stream; wait for their answers"),
    )
}

/// The parser runs in its own task (its futures are not cancel-safe, so they
/// stay out of any select) and stops at the first end or error. A client over
/// its rate (`rate.session_*`) is not read from until it is back under it.
async fn read_loop(
    mut reader: Reader,
    tx: mpsc::Sender<Box<Result<StreamEvent, ReadError>>>,
    mut shaper: Shaper,
) {
    let mut read = reader.bytes_read();
    loop {
        let event = reader.next().await;
        let last = !matches!(event, Ok(StreamEvent::Stanza(_)));
        if tx.send(Box::new(event)).await.is_err() || last {
            break;
        }
        let now_read = reader.bytes_read();
        let pause = shaper.after_stanza(now_read - read);
        read = now_read;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

impl Session {
    /// What a feature answering this stream's request works with. Made for each request,
    /// not kept: an idle stream holds none of it (about 0.7 KiB, docs/benchmarks.md).
    fn caller(&self, ctx: &Context<Self>) -> Arc<Caller> {
        Arc::new(Caller {
            domain: self.c2s.domain().to_string(),
            full_jid: self.full_jid.to_string(),
            session_id: self.session_id.clone(),
            bare_jid: self.bare_jid.clone(),
            raft: self.c2s.raft.clone(),
            router: self.c2s.port.clone(),
            hooks: self.c2s.hooks.clone(),
            settings: self.c2s.settings.clone(),
            session: ctx.address().recipient(),
            started: self.c2s.started,
            rates: self.c2s.rates.clone(),
            hashing: self.c2s.hashing.clone(),
        })
    }

    fn session_handle(&self, ctx: &Context<Self>) -> SessionHandle {
        SessionHandle {
            full_jid: self.full_jid.to_string(),
            session_id: self.session_id.clone(),
            deliver: ctx.address().recipient(),
            kick: ctx.address().recipient(),
            batch: ctx.address().recipient(),
        }
    }

    fn send(&mut self, el: &Element, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        match self.out.try_push(el.to_xml_in(ns::CLIENT)) {
            Ok(()) => {}
            Err(Refused::Full) => {
                tracing::warn!(jid = %self.full_jid, "outbound queue full; disconnecting slow client");
                self.c2s.stats.slow_clients.fetch_add(1, Ordering::Relaxed);
                self.abort(ctx);
            }
            // The writer has ended; `writer_ended` hears why (a stalled client is counted
            // there) and stops the session. Stopping here first lost that count whenever a
            // delivery came in between (found by tests/hostile_clients.rs).
            Err(Refused::Closed) => self.closing = true,
        }
    }

    /// End the session without another write: the client is not reading.
    fn abort(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        self.writer_task.abort();
        ctx.stop();
    }

    /// The writer stopped: a clean close, a stalled client or a failed socket.
    fn writer_ended(
        &mut self,
        end: Result<WriterEnd, tokio::task::JoinError>,
        ctx: &mut Context<Self>,
    ) {
        if let Ok(WriterEnd::TimedOut) = end {
            tracing::info!(jid = %self.full_jid, "client stopped reading; closing its connection");
            self.c2s
                .stats
                .write_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        self.closing = true;
        ctx.stop();
    }

    /// End the stream: an optional stream error, then `</stream:stream>`.
    fn close(&mut self, error: Option<(StreamErrorKind, Option<String>)>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        let mut tail = String::new();
        if let Some((kind, text)) = error {
            self.c2s.stats.stream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::info!(jid = %self.full_jid, error = kind.name(), ?text, "closing stream with an error");
            tail.push_str(&stream_error_xml(kind, text.as_deref()));
        }
        tail.push_str("</stream:stream>");
        self.out.close(tail);
        ctx.stop();
    }

    fn dispatch(&mut self, mut el: Element, ctx: &mut Context<Self>) {
        if el.ns() == csi::NS {
            return self.client_state(&el, ctx);
        }
        let Some(kind) = stanza::kind(&el) else {
            return self.close(Some((StreamErrorKind::UnsupportedStanzaType, None)), ctx);
        };
        // RFC 6120 8.1.2.1: the server stamps `from`; a client may not claim another.
        if let Some(from) = el.attr("from") {
            let ok = jid::Jid::new(from)
                .is_ok_and(|j| j.as_str() == self.full_jid.as_str() || j.as_str() == self.bare_jid);
            if !ok {
                return self.close(Some((StreamErrorKind::InvalidFrom, None)), ctx);
            }
        }
        el.set_attr("from", self.full_jid.to_string());
        let to = match el.attr("to").map(jid::Jid::new) {
            None => None,
            Some(Ok(to)) => Some(to),
            Some(Err(_)) => {
                if el.attr("type") != Some("error") {
                    let mut reply = error_reply(&el, StanzaErrorKind::JidMalformed, None);
                    reply.remove_attr("from");
                    self.send(&reply, ctx);
                }
                return;
            }
        };
        if let Some(to) = &to {
            el.set_attr("to", to.to_string());
            let state = self.c2s.raft.state();
            match xep::blocking::outbound(&state, &self.bare_jid, kind, &el, to) {
                xep::blocking::Outbound::Send => {}
                xep::blocking::Outbound::Drop(_) => return,
                xep::blocking::Outbound::Refuse(reply) => return self.send(&reply, ctx),
            }
        }
        match kind {
            StanzaKind::Iq => self.iq(el, to, ctx),
            StanzaKind::Presence => match to {
                None => self.own_presence(el),
                Some(to) => self.directed_presence(el, to, ctx),
            },
            StanzaKind::Message => {
                if to.is_none() {
                    el.set_attr("to", self.bare_jid.clone());
                }
                // XEP-0280: the account's other streams get a `sent` carbon.
                if el.attr("to") != Some(self.bare_jid.as_str()) && carbons::should_copy(&el).0 {
                    self.c2s.router.do_send(Carbon {
                        account: self.bare_jid.clone(),
                        full_jid: self.full_jid.to_string(),
                        direction: carbons::Direction::Sent,
                        stanza: el.clone(),
                    });
                }
                self.c2s.router.do_send(RouteStanza(el));
            }
        }
    }

    fn iq(&mut self, el: Element, to: Option<jid::Jid>, ctx: &mut Context<Self>) {
        if let Err(reason) = stanza::check_iq(&el) {
            if !matches!(el.attr("type"), Some("result" | "error")) {
                self.send(
                    &error_reply(&el, StanzaErrorKind::BadRequest, Some(reason)),
                    ctx,
                );
            }
            return;
        }
        let domain = self.c2s.domain();
        let target = match &to {
            None => Target::OwnAccount,
            Some(to) if to.as_str() == domain => Target::Server,
            Some(to) if to.as_str() == self.bare_jid => Target::OwnAccount,
            Some(to) if to.is_bare() && to.domain().as_str() == domain => {
                Target::Account(to.to_string())
            }
            // Full JIDs and other domains: the router delivers or bounces.
            Some(_) => return self.c2s.router.do_send(RouteStanza(el)),
        };
        if matches!(el.attr("type"), Some("result" | "error")) {
            // Answers to the server's own pings: the activity mark already counted them.
            return;
        }
        let caller = self.caller(ctx);
        // Answered on behalf of the account itself: no `from` (RFC 6120 8.1.2.1).
        let strip_from = to.is_none();
        let finish = move |mut reply: Element| {
            if strip_from {
                reply.remove_attr("from");
            }
            reply
        };
        match features::answer_iq(&el, &target, &caller) {
            Answer::Now(reply) => self.send(&finish(reply), ctx),
            Answer::Later(_) if self.busy() => {
                let reply = too_busy(&el);
                self.send(&finish(reply), ctx)
            }
            Answer::Later(future) => {
                self.pending_answers += 1;
                ctx.spawn(actix::fut::wrap_future::<_, Self>(future).map(
                    move |reply, act, ctx| {
                        act.send(&finish(reply), ctx);
                        act.request_done(ctx);
                    },
                ));
            }
        }
    }

    /// As many requests are under way as one stream may have.
    fn busy(&self) -> bool {
        self.pending_answers as u64 >= self.c2s.settings.c2s.max_pending_requests
    }

    /// A request under way is done: a close that waited for it may go ahead.
    fn request_done(&mut self, ctx: &mut Context<Self>) {
        self.pending_answers -= 1;
        if self.pending_answers == 0 {
            if let Some(error) = self.deferred_close.take() {
                self.close(Some(error), ctx);
            }
        }
    }

    /// XEP-0352 `<active/>` and `<inactive/>`.
    fn client_state(&mut self, el: &Element, ctx: &mut Context<Self>) {
        match el.name() {
            "inactive" => self.inactive = true,
            "active" => {
                self.inactive = false;
                self.flush_held(ctx);
            }
            _ => self.close(Some((StreamErrorKind::UnsupportedStanzaType, None)), ctx),
        }
    }

    fn flush_held(&mut self, ctx: &mut Context<Self>) {
        for el in self.held.drain() {
            self.send(&el, ctx);
        }
    }

    fn own_presence(&mut self, el: Element) {
        if presence::own_state(&el).is_none() {
            // Subscription types need a `to`; probes come from servers only.
            return;
        }
        if el.attr("type") == Some("unavailable") {
            // Unavailable goes to everyone it was directed to (RFC 6121 4.6.3): the set
            // starts again.
            self.directed.clear();
        }
        self.c2s.router.do_send(OwnPresence {
            full_jid: self.full_jid.to_string(),
            session_id: self.session_id.clone(),
            stanza: el,
        });
    }

    /// Presence with a `to`: a subscription request or answer (RFC 6121 3),
    /// or directed presence (4.6).
    fn directed_presence(&mut self, el: Element, to: jid::Jid, ctx: &mut Context<Self>) {
        let ty = el.attr("type").unwrap_or("available").to_string();
        if let Some(kind) = crate::im::subscription::Kind::from_type(&ty) {
            let caller = self.caller(ctx);
            if self.busy() {
                return self.send(&too_busy(&el), ctx);
            }
            self.pending_answers += 1;
            let future = crate::im::subscription::outbound(caller, kind, to.to_bare(), el);
            ctx.spawn(
                actix::fut::wrap_future::<_, Self>(future)
                    .map(|(), act, ctx| act.request_done(ctx)),
            );
            return;
        }
        if ty == "probe" {
            return;
        }
        if ty == "available" {
            let target = to.to_string();
            let limit = self.c2s.settings.limits.directed_presences as usize;
            if !self.directed.contains(&target) && self.directed.len() >= limit {
                let text = format!(
                    "presence was already sent to {limit} JIDs; send some unavailable first"
                );
                return self.send(
                    &error_reply(&el, StanzaErrorKind::PolicyViolation, Some(&text)),
                    ctx,
                );
            }
            self.directed.insert(target);
        } else if ty == "unavailable" {
            self.directed.remove(to.as_str());
        }
        if matches!(ty.as_str(), "available" | "unavailable") {
            self.c2s.router.do_send(Directed {
                full_jid: self.full_jid.to_string(),
                to: to.to_string(),
                available: ty == "available",
            });
        }
        self.c2s.router.do_send(RouteStanza(el));
    }

    /// XEP-0199: ping a silent client; close the stream if it stays silent.
    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        let idle = self.activity.idle();
        let settings = &self.c2s.settings.c2s;
        if idle >= Duration::from_secs(settings.idle_timeout_secs) {
            self.close(
                Some((
                    StreamErrorKind::ConnectionTimeout,
                    Some("no traffic for too long".into()),
                )),
                ctx,
            );
        } else if idle >= Duration::from_secs(settings.ping_interval_secs) {
            self.pings_sent += 1;
            let id = format!("c2s-ping-{}", self.pings_sent);
            let ping = xep::ping::server_ping(self.c2s.domain(), self.full_jid.as_str(), &id);
            self.send(&ping, ctx);
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.c2s.router.do_send(Register(self.session_handle(ctx)));
        if let Some(reply) = self.bind_reply.take() {
            self.send(&reply, ctx);
        }
        let settings = &self.c2s.settings.c2s;
        let tick = Duration::from_secs(
            settings
                .ping_interval_secs
                .min(settings.idle_timeout_secs)
                .max(2)
                / 2,
        );
        ctx.run_interval(tick, |act, ctx| act.check_idle(ctx));
        tracing::debug!(jid = %self.full_jid, session = %self.session_id, "session started");
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.reader_task.abort();
        let full_jid = self.full_jid.to_string();
        self.c2s.router.do_send(Unregister {
            full_jid: full_jid.clone(),
            session_id: self.session_id.clone(),
        });
        let raft = self.c2s.raft.clone();
        let session = self.session_id.clone();
        // A node shutting down past its grace drops its sessions after the runtime: the
        // route goes with the node then (its routes are dropped when it leaves or is
        // found down), and spawning would panic.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::debug!(jid = %self.full_jid, "runtime gone; route left to the node's departure");
            return;
        };
        // The route goes only if it is still ours: a newer bind may have replaced it.
        runtime.spawn(async move {
            if let Err(e) = raft
                .propose(Command::UnbindResource {
                    full_jid: full_jid.clone(),
                    session,
                })
                .await
            {
                tracing::warn!(jid = %full_jid, error = %e, "could not remove the route of a closed stream");
            }
        });
        tracing::debug!(jid = %self.full_jid, session = %self.session_id, "session ended");
    }
}

impl StreamHandler<Result<StreamEvent, ReadError>> for Session {
    fn handle(&mut self, event: Result<StreamEvent, ReadError>, ctx: &mut Context<Self>) {
        match event {
            Ok(StreamEvent::Stanza(el)) => self.dispatch(el, ctx),
            Ok(StreamEvent::Closed) => self.close(None, ctx),
            Ok(StreamEvent::Header(_)) => self.close(
                Some((
                    StreamErrorKind::BadFormat,
                    Some("unexpected stream restart".into()),
                )),
                ctx,
            ),
            Err(ReadError::Stream { kind, text }) => self.close(Some((kind, text)), ctx),
            Err(_) => {
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for Session {
    type Result = ();
    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if self.inactive {
            // XEP-0352: presence waits; anything else goes out, after what waited.
            if csi::can_wait(&msg.0).0 && self.held.hold(msg.0.clone()) {
                return;
            }
            self.flush_held(ctx);
        }
        self.send(&msg.0, ctx);
    }
}

impl Handler<Kick> for Session {
    type Result = ();
    fn handle(&mut self, msg: Kick, ctx: &mut Context<Self>) {
        if self.pending_answers > 0 && self.deferred_close.is_none() {
            self.deferred_close = Some((msg.condition, msg.text));
            // An answer that never comes must not keep the stream open.
            ctx.run_later(Duration::from_secs(5), |act, ctx| {
                if let Some(error) = act.deferred_close.take() {
                    act.close(Some(error), ctx);
                }
            });
            return;
        }
        self.close(Some((msg.condition, msg.text)), ctx);
    }
}

impl Handler<SessionFlag> for Session {
    type Result = ();
    fn handle(&mut self, flag: SessionFlag, _: &mut Context<Self>) {
        match flag {
            SessionFlag::Carbons(on) => {
                self.carbons = on;
                self.c2s.router.do_send(CarbonsEnabled {
                    full_jid: self.full_jid.to_string(),
                    on,
                });
            }
            SessionFlag::RosterInterest => self.c2s.router.do_send(crate::bus::RosterInterest {
                full_jid: self.full_jid.to_string(),
            }),
            SessionFlag::BlocklistInterest => {
                self.c2s.router.do_send(crate::bus::BlocklistInterest {
                    full_jid: self.full_jid.to_string(),
                })
            }
        }
    }
}

impl Handler<DeliverBatch> for Session {
    type Result = ResponseFuture<bool>;

    /// Waits for room in the outbound queue instead of failing when it is
    /// full: a batch is paced by the client, not dropped. True only once the
    /// whole batch is on the socket, so that what the caller then removes
    /// (offline storage) is never lost with a connection that dropped first.
    fn handle(&mut self, msg: DeliverBatch, _: &mut Context<Self>) -> Self::Result {
        let out = self.out.clone();
        let closing = self.closing;
        Box::pin(async move {
            if closing {
                return false;
            }
            let Some((last, rest)) = msg.0.split_last() else {
                return true;
            };
            for el in rest {
                if out.push(el.to_xml_in(ns::CLIENT)).await.is_err() {
                    return false;
                }
            }
            // Written in order: the last one on the socket means all of them are.
            match out.push_until_written(last.to_xml_in(ns::CLIENT)).await {
                Ok(written) => written.await.is_ok(),
                Err(_) => false,
            }
        })
    }
}
