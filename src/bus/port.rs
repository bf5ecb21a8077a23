//! How features reach the router: three recipients, not the router's address, so that a
//! feature can send stanzas and pushes without depending on the router.

use actix::Recipient;

use super::messages::{PresenceTo, RouteStanza, ToResources};

#[derive(Clone)]
pub struct RouterPort {
    route: Recipient<RouteStanza>,
    to_resources: Recipient<ToResources>,
    presence_to: Recipient<PresenceTo>,
}

impl RouterPort {
    pub fn new(
        route: Recipient<RouteStanza>,
        to_resources: Recipient<ToResources>,
        presence_to: Recipient<PresenceTo>,
    ) -> RouterPort {
        RouterPort {
            route,
            to_resources,
            presence_to,
        }
    }

    pub fn do_send(&self, msg: impl Routed) {
        msg.send_via(self);
    }

    /// Where stanzas to route go, for a part that needs nothing else.
    pub fn route(&self) -> Recipient<RouteStanza> {
        self.route.clone()
    }
}

/// A message the router takes from features.
pub trait Routed {
    fn send_via(self, port: &RouterPort);
}

impl Routed for RouteStanza {
    fn send_via(self, port: &RouterPort) {
        port.route.do_send(self);
    }
}

impl Routed for ToResources {
    fn send_via(self, port: &RouterPort) {
        port.to_resources.do_send(self);
    }
}

impl Routed for PresenceTo {
    fn send_via(self, port: &RouterPort) {
        port.presence_to.do_send(self);
    }
}
