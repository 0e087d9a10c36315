# host-only. paho-mqtt's client made cheaper per packet, for the bridge's external loop
# (serve.Bridge) and the benchmark's echo. Every workaround for paho's internals is here.
#
# paho walks its whole in-flight table on every PUBACK when it keeps the QoS 1 window
# itself (_update_inflight): O(window) per message. So paho's window is off and this class
# keeps its own, O(1) per PUBACK: at most the broker's Receive Maximum (CONNACK) in
# flight, the rest wait in an outbox (queue()).
#
# paho reads every packet with three recv() calls (command byte, length, body) and, in an
# external loop, writes each packet with its own send() the moment it is queued. At
# thousands of packets a second that is most of the client's cost. This subclass reads
# whatever the socket has in one recv() and hands paho its bytes from memory, and holds
# what paho sends until flush() writes it in one send(). Written here on purpose: paho
# offers no hook for it, so it overrides paho's two socket methods (_sock_recv,
# _sock_send); tests/test_bridge_hot_path.py checks they are still there and used.
import collections
import contextlib
import select

import paho.mqtt.client as mqtt
from paho.mqtt.matcher import MQTTMatcher

_CHUNK = 65536


class _Matcher(MQTTMatcher):
    """paho's topic matcher for message_callback_add. Its iter_match builds a closure that
    refers to itself, run for every message received: one reference cycle per message,
    left to the cyclic GC (with gen2 pauses of 35-90 ms under load). While no filtered
    callbacks are added (the bridge adds none) there is nothing to match."""

    def iter_match(self, topic):
        if not self._root._children:
            return ()
        return super().iter_match(topic)


def quiet_client(client):
    """Give a paho Client the matcher above (paho 2.x keeps it in _on_message_filtered;
    tests/test_bridge_hot_path.py checks the attribute is still there)."""
    client._on_message_filtered = _Matcher()
    return client


class Client(mqtt.Client):
    """paho's Client with quiet_client's matcher, reads from memory, held writes, its own
    QoS 1 window (queue(); do not set on_publish) and pump() for an external loop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        quiet_client(self)
        self.max_inflight_messages_set(0)
        self.max_queued_messages_set(0)
        self._outbox = collections.deque()  # (topic, payload, retain) waiting for a slot
        self._inflight = set()              # mids published by drain(), not acked yet
        self._window = 20
        self.on_publish = self._acked
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self._holding = False

    def loop_start(self):
        raise TypeError("mqtt_io.Client is for an external loop: call pump()")

    loop_forever = loop_start  # paho's own loops would not see bytes buffered here

    def reconnect(self):
        # A new socket: nothing read or written on the old one belongs to it.
        self._rbuf, self._rpos = b"", 0
        self._wbuf = bytearray()
        return super().reconnect()

    # -- reading --
    def _sock_recv(self, bufsize):
        data, pos = self._rbuf, self._rpos
        if pos >= len(data):
            data = super()._sock_recv(max(bufsize, _CHUNK))  # BlockingIOError passes up
            if not data:
                return data  # connection closed
            self._rbuf, pos = data, 0
        end = pos + bufsize
        self._rpos = end
        return data[pos:end]

    def buffered(self):
        """True while bytes read from the socket wait here: select() would not see them."""
        return self._rpos < len(self._rbuf)

    # -- writing --
    @contextlib.contextmanager
    def held(self):
        """Inside: what paho sends is kept in memory. On leaving (an exception too): it is
        sent, in as few send() calls as the socket allows."""
        self._holding = True
        try:
            yield self
        finally:
            self._holding = False
            self.flush()

    def _sock_send(self, buf):
        if not self._holding and not self._wbuf:
            return super()._sock_send(buf)
        self._wbuf += buf  # taken: it leaves in order, on leaving held() or the next write
        if not self._holding:
            self.flush()
        return len(buf)

    def flush(self):
        """Send what is held; what the socket does not take now (it would block) stays
        for the next loop_write. True when nothing is left."""
        buf = self._wbuf
        while buf:
            if self._sock is None:
                buf.clear()  # no connection: paho resends QoS 1 publishes on the next one
                return False
            try:
                n = super()._sock_send(buf)
            except BlockingIOError:
                return False
            except OSError:
                # Connection lost: the next read sees it and paho handles it as usual
                # (QoS 1 resent, the broker redelivers what was not acknowledged).
                buf.clear()
                return False
            del buf[:n]
        return True

    def want_write(self):
        return bool(self._wbuf) or super().want_write()

    def loop_write(self):
        # paho calls this for every packet it queues: while holding, that is not the time
        if self._wbuf and not self._holding and self._sock is not None:
            self.flush()
        return super().loop_write()

    # -- the QoS 1 window --
    def window_from(self, properties):
        """Call from on_connect with its properties: MQTT 5 says how many unacknowledged
        QoS 1 publishes the broker accepts. paho resends what was in flight on its own."""
        rmax = getattr(properties, "ReceiveMaximum", None) if properties else None
        self._window = max(1, min(int(rmax or 65535), 1000))
        self._inflight.clear()

    def queue(self, topic, payload, retain=False):
        """Publish at QoS 1 now if the window has room, else when a PUBACK makes some."""
        self._outbox.append((topic, payload, retain))
        self.drain()

    def drain(self):
        outbox, inflight, window = self._outbox, self._inflight, self._window
        publish = self.publish
        while outbox and len(inflight) < window:
            topic, payload, retain = outbox.popleft()
            inflight.add(publish(topic, payload, qos=1, retain=retain).mid)

    def _acked(self, client, userdata, mid, reason_code, properties):
        self._inflight.discard(mid)

    # -- the external loop --
    def pump(self, timeout, room=None):
        """One round of network I/O: wait up to timeout for the socket, read all it has
        (while room() says more may come in), publish what the window now lets out,
        write what is pending, keepalive. False if the connection was lost."""
        sock = self.socket()
        if sock is None:
            return False
        if self.buffered():  # bytes already read wait here: do not sleep on select
            timeout = 0
        r, w, _ = select.select([sock], [sock] if self.want_write() else [], [], timeout)
        if r or self.buffered():
            while True:
                if self.loop_read() != mqtt.MQTT_ERR_SUCCESS or self.socket() is None:
                    return False
                if room is not None and not room() or not self.buffered() and \
                        not select.select([sock], [], [], 0)[0]:
                    break
        if self._outbox:
            with self.held():
                self.drain()
        if w or self.want_write():
            self.loop_write()
        self.loop_misc()
        return True
