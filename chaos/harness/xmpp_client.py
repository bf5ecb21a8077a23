"""A chaos-workload XMPP client: slixmpp with the things a workload needs (connect to a
given node, accept each node's self-signed certificate, know whether the stream is
alive, an application-level acknowledgement by ping round trip)."""

import asyncio
import ssl

from slixmpp import ClientXMPP

CONNECT_TIMEOUT = 10


class Client:
    def __init__(self, jid: str, password: str, on_message=None, on_presence=None):
        self.jid = jid
        self.x = ClientXMPP(jid, password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.x.ssl_context = ctx
        self.x.enable_plaintext = False
        self.x.enable_direct_tls = False
        self.x.enable_starttls = True
        self.x.register_plugin("xep_0199")
        self.x.auto_reconnect = False
        self.alive = False
        self.closing = False
        self.closed = asyncio.get_running_loop().create_future()
        self._started = asyncio.get_running_loop().create_future()
        self.x.add_event_handler("session_start", self._on_start)
        self.x.add_event_handler("failed_all_auth", lambda _: self._settle(False))
        self.x.add_event_handler("disconnected", self._on_disconnected)
        self.x.add_event_handler("connection_failed", lambda _: self._settle(False))
        self.x.add_event_handler("stream_error", lambda e: None)
        if on_message:
            self.x.add_event_handler("message", on_message)
        if on_presence:
            self.x.add_event_handler("presence", on_presence)

    def _settle(self, ok: bool):
        if not self._started.done():
            self._started.set_result(ok)

    async def _on_start(self, _):
        if self.closing:
            # A connection attempt we had given up on completed after all.
            self.x.disconnect(wait=0)
            return
        self.alive = True
        self.x.send_presence()
        self._settle(True)

    def _on_disconnected(self, _):
        self.alive = False
        self._settle(False)
        if not self.closed.done():
            self.closed.set_result(True)

    async def connect(self, host: str, port: int = 5222) -> bool:
        self.x.connect(host=host, port=port)
        try:
            ok = await asyncio.wait_for(self._started, CONNECT_TIMEOUT)
        except asyncio.TimeoutError:
            ok = False
        if not ok:
            # Never leave a half-made stream behind: slixmpp may go on and bind it later,
            # and a stream nobody tracks would look like a ghost to the checker.
            self.close()
        return ok

    async def ping(self, timeout: float = 5.0) -> bool:
        """True once the server answered a ping sent now: everything this stream sent
        before it has been processed by the server (streams are handled in order)."""
        if not self.alive:
            return False
        try:
            await self.x.plugin["xep_0199"].ping(jid=self.x.boundjid.domain, timeout=timeout)
            return True
        except Exception:
            return False

    def close(self):
        self.alive = False
        self.closing = True
        try:
            # slixmpp keeps retrying a connection that failed; disconnect() alone does not
            # stop that, and a retry that succeeds later would leave a stream nobody owns.
            self.x.cancel_connection_attempt()
            self.x.disconnect(wait=0)
        except Exception:
            pass
