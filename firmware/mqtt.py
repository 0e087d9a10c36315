# MQTT 3.1.1 client for the kiosk (DESIGN.md 2, 4), written for asyncio on both
# interpreters. It never owns a socket: open_stream() (given from outside) returns an object
# with async read/readexactly/drain, write and close, so the board passes a TCP/TLS stream,
# the host runner a CPython asyncio stream, and tests an in-memory one.
# What it does: CONNECT with a will, keepalive PINGREQ, QoS 1 PUBLISH kept until PUBACK and
# resent with DUP after a reconnect (clean_session=0, MQTT-4.4.0-1), SUBSCRIBE on every
# connect, reconnect with capped exponential backoff. QoS 2 is not used by the protocol.
# Exactly-once is not MQTT's job here: the journal and (kiosk, seq) give it (DESIGN.md 6a).
import struct

from firmware import clock

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

CONNECT = const(0x10)
CONNACK = const(0x20)
PUBLISH = const(0x30)
PUBACK = const(0x40)
SUBSCRIBE = const(0x82)
SUBACK = const(0x90)
PINGREQ = const(0xC0)
PINGRESP = const(0xD0)
DISCONNECT = const(0xE0)
DUP = const(0x08)
RETAIN = const(0x01)

_PING = b"\xc0\x00"
_DISC = b"\xe0\x00"


class MQTTError(Exception):
    pass


def _varint_into(buf, off, n):
    while True:
        b = n & 0x7F
        n >>= 7
        buf[off] = b | (0x80 if n else 0)
        off += 1
        if not n:
            return off


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack(">H", len(s)) + s


class MQTTClient:
    def __init__(self, client_id, open_stream, keepalive=30, user=None, password=None,
                 clean=False, backoff_min_ms=250, backoff_max_ms=30000, max_inflight=16,
                 max_packet=40000, log=None):
        self.client_id = client_id
        self.open_stream = open_stream
        self.keepalive = keepalive
        self.user = user
        self.password = password
        self.clean = clean
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        self.max_inflight = max_inflight
        self.max_packet = max_packet
        self.log = log or (lambda text: None)
        self.will = None          # (topic, payload, retain), QoS 1
        self.subs = []            # [(topic filter, qos)]
        self.on_message = None    # fn(topic str, payload bytes); sync, keep it short
        self.on_connect = None    # fn(session_present)
        self.on_puback = None     # fn(pid)
        self.connected = False
        self.connects = 0
        self._stream = None
        self._stopped = False
        self._pid = 0
        self._inflight = {}       # pid -> [topic, payload, retain, sent]
        self._order = []          # pids in publish order (MicroPython dicts are unordered)
        self._hdr = bytearray(7)  # fixed header + topic length, reused per PUBLISH
        self._pidbuf = bytearray(2)
        self._ack = bytearray(b"\x40\x02\x00\x00")
        self._last_rx = 0
        self._last_tx = 0
        self._lock = asyncio.Lock()
        self._up = asyncio.Event()
        self._dead = asyncio.Event()
        self._reader_done = True
        self._reader_err = None

    # -- public API ---------------------------------------------------------------------
    def inflight(self):
        return len(self._inflight)

    def is_inflight(self, pid):
        return pid in self._inflight

    def can_publish(self):
        return len(self._inflight) < self.max_inflight

    async def publish(self, topic, payload, retain=False, qos=1):
        """Queue (QoS 1: until PUBACK) and send if connected. Returns the packet id (0 for
        QoS 0). Raises MQTTError when max_inflight QoS 1 messages are unacknowledged."""
        pid = 0
        if qos:
            if len(self._inflight) >= self.max_inflight:
                raise MQTTError("inflight window full")
            pid = self._next_pid()
            self._inflight[pid] = [topic, payload, retain, False]
            self._order.append(pid)
        if self.connected:
            try:
                await self._send_publish(topic, payload, retain, qos, pid, False)
                if pid and pid in self._inflight:
                    self._inflight[pid][3] = True
            except Exception as e:  # the session task notices and reconnects
                self._fail("publish: %r" % (e,))
        return pid

    async def wait_connected(self, timeout_ms=None):
        if self.connected:
            return True
        if timeout_ms is None:
            await self._up.wait()
            return True
        try:
            await clock.wait_for_ms(self._up.wait(), timeout_ms)
        except clock.TimeoutError:
            return False
        return self.connected

    def stop(self):
        self._stopped = True
        self._fail("stopped")

    async def disconnect(self):
        """Clean DISCONNECT (the broker then drops the will) and stop."""
        self._stopped = True
        if self.connected:
            try:
                await self._send(_DISC)
            except Exception:
                pass
        self._fail("disconnect")

    async def run(self):
        """Connect, serve, reconnect with capped backoff; returns after stop()."""
        delay = self.backoff_min_ms
        while not self._stopped:
            try:
                await self._session()
            except Exception as e:  # noqa: BLE001 - any failure means: reconnect
                if self.connected or delay == self.backoff_min_ms:  # once per outage
                    self.log("mqtt: connection lost: %r" % (e,))
            was_up = self.connected
            self._fail(None)
            if self._stopped:
                break
            if was_up:
                delay = self.backoff_min_ms
            await clock.sleep_ms(delay)
            delay = min(delay * 2, self.backoff_max_ms)

    # -- connection ---------------------------------------------------------------------
    def _fail(self, why):
        if why:
            self.log("mqtt: " + why)
        self.connected = False
        self._up.clear()
        self._dead.set()
        s = self._stream
        self._stream = None
        if s is not None:
            try:
                s.close()
            except Exception:
                pass

    async def _session(self):
        self._stream = await self.open_stream()
        await self._send_connect()
        typ, body = await clock.wait_for_ms(self._read_packet(), max(self.keepalive, 5) * 1000)
        if typ & 0xF0 != CONNACK or len(body) != 2:
            raise MQTTError("expected CONNACK")
        if body[1] != 0:
            raise MQTTError("connection refused, code %d" % body[1])
        self._last_rx = clock.ticks_ms()
        self.connected = True
        self.connects += 1
        if self.subs:
            await self._send_subscribe()
        for pid in list(self._order):  # resend unacknowledged QoS 1, in order, with DUP
            item = self._inflight.get(pid)
            if item is not None:
                await self._send_publish(item[0], item[1], item[2], 1, pid, item[3])
                item[3] = True
        self._up.set()
        if self.on_connect:
            self.on_connect(body[0] & 1)
        self._reader_done = False
        self._reader_err = None
        self._dead.clear()
        reader = asyncio.create_task(self._read_loop())
        try:
            tick = min(500, self.keepalive * 250)
            while self.connected and not self._reader_done:
                try:  # wakes at once when the reader ends, else once per tick
                    await clock.wait_for_ms(self._dead.wait(), tick)
                except clock.TimeoutError:
                    pass
                now = clock.ticks_ms()
                if clock.ticks_diff(now, self._last_rx) > self.keepalive * 1500:
                    raise MQTTError("keepalive: broker silent")
                if clock.ticks_diff(now, self._last_tx) >= self.keepalive * 500:
                    await self._send(_PING)
            if self._reader_err is not None:
                raise self._reader_err
        finally:
            reader.cancel()

    async def _read_loop(self):
        try:
            while True:
                typ, body = await self._read_packet()
                self._last_rx = clock.ticks_ms()
                kind = typ & 0xF0
                if kind == PUBLISH:
                    await self._on_publish(typ, body)
                elif kind == PUBACK and len(body) == 2:
                    pid = (body[0] << 8) | body[1]
                    if self._inflight.pop(pid, None) is not None:
                        self._order.remove(pid)
                        if self.on_puback:
                            self.on_puback(pid)
                # SUBACK, PINGRESP: receipt (last_rx) is all we need
        except Exception as e:  # noqa: BLE001 - handed to the session task
            self._reader_err = e
        self._reader_done = True
        self._dead.set()

    async def _on_publish(self, typ, body):
        qos = (typ >> 1) & 3
        n = (body[0] << 8) | body[1]
        topic = bytes(body[2:2 + n]).decode()
        off = 2 + n
        if qos:
            pid_hi, pid_lo = body[off], body[off + 1]
            off += 2
        if self.on_message:
            try:
                self.on_message(topic, body[off:])
            except Exception as e:  # noqa: BLE001 - a bad message must not drop the link
                self.log("mqtt: on_message failed: %r" % (e,))
        if qos == 1:
            ack = self._ack
            ack[2] = pid_hi
            ack[3] = pid_lo
            await self._send(ack)

    async def _read_packet(self):
        s = self._stream
        if s is None:
            raise MQTTError("not connected")
        b = await s.readexactly(1)
        typ = b[0]
        n = 0
        shift = 0
        while True:
            c = (await s.readexactly(1))[0]
            n |= (c & 0x7F) << shift
            if not c & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n > self.max_packet:
            await self._skip(typ, n)
            return 0, b""
        body = await s.readexactly(n) if n else b""
        return typ, body

    async def _skip(self, typ, n):
        """Read past an oversized packet without holding it; PUBACK it if it is a QoS 1
        PUBLISH, or a persistent session would redeliver it on every reconnect, forever."""
        s = self._stream
        pid = None
        if typ & 0xF0 == PUBLISH and (typ >> 1) & 3 and n >= 4:
            t = await s.readexactly(2)
            tn = (t[0] << 8) | t[1]
            left = tn
            while left:
                left -= len(await s.readexactly(min(left, 256)))
            pid = await s.readexactly(2)
            n -= 4 + tn
        while n > 0:
            n -= len(await s.readexactly(min(n, 256)))
        self.log("mqtt: dropped an oversized packet")
        if pid is not None:
            ack = self._ack
            ack[2] = pid[0]
            ack[3] = pid[1]
            await self._send(ack)

    # -- sending ------------------------------------------------------------------------
    def _next_pid(self):
        while True:
            self._pid = self._pid % 65535 + 1
            if self._pid not in self._inflight:
                return self._pid

    async def _send(self, *parts):
        s = self._stream
        if s is None:
            raise MQTTError("not connected")
        async with self._lock:  # one packet's parts stay together; one drain at a time
            for p in parts:
                s.write(p)
            await s.drain()
        self._last_tx = clock.ticks_ms()

    async def _send_publish(self, topic, payload, retain, qos, pid, dup):
        if isinstance(topic, str):
            topic = topic.encode()
        tn = len(topic)
        n = 2 + tn + len(payload) + (2 if qos else 0)
        hdr = self._hdr
        hdr[0] = PUBLISH | (qos << 1) | (DUP if dup else 0) | (RETAIN if retain else 0)
        off = _varint_into(hdr, 1, n)
        struct.pack_into(">H", hdr, off, tn)
        mv = memoryview(hdr)
        if qos:
            struct.pack_into(">H", self._pidbuf, 0, pid)
            await self._send(mv[:off + 2], topic, self._pidbuf, payload)
        else:
            await self._send(mv[:off + 2], topic, payload)

    async def _send_connect(self):
        flags = 0x02 if self.clean else 0
        payload = _str(self.client_id)
        if self.will:
            topic, msg, retain = self.will
            flags |= 0x04 | (1 << 3) | (0x20 if retain else 0)  # will, will QoS 1, retain
            payload += _str(topic) + _str(msg)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        var = b"\x00\x04MQTT\x04" + struct.pack(">BH", flags, self.keepalive)
        hdr = bytearray(5)
        hdr[0] = CONNECT
        off = _varint_into(hdr, 1, len(var) + len(payload))
        await self._send(bytes(hdr[:off]), var, payload)

    async def _send_subscribe(self):
        body = struct.pack(">H", self._next_sub_pid())
        for topic, qos in self.subs:
            body += _str(topic) + bytes((qos,))
        hdr = bytearray(5)
        hdr[0] = SUBSCRIBE
        off = _varint_into(hdr, 1, len(body))
        await self._send(bytes(hdr[:off]), body)

    def _next_sub_pid(self):
        # SUBSCRIBE ids come from the same space but are never held in _inflight
        return self._next_pid()
