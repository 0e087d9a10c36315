# An in-memory MQTT 3.1.1 broker and stream pair for the firmware's device tests (the issue
# allows it: MicroPython's WebAssembly port has no sockets), plus tests of firmware.mqtt
# against it. Runs under CPython and MicroPython. Other test_fw_* modules import it.
import struct

try:
    import asyncio
except ImportError:
    import uasyncio as asyncio

from firmware import clock
from firmware.mqtt import MQTTClient


class _Pipe:
    """One direction: bytes in a bytearray read from an offset (no copy of the rest per read:
    the MQTT reader takes one byte at a time)."""

    def __init__(self):
        self.buf = bytearray()
        self.off = 0
        self.ev = asyncio.Event()
        self.closed = False

    def feed(self, data):
        if not self.closed:
            if self.off and self.off == len(self.buf):
                self.buf = bytearray()
                self.off = 0
            self.buf.extend(data)
            self.ev.set()

    def avail(self):
        return len(self.buf) - self.off

    def take(self, n):
        data = bytes(self.buf[self.off:self.off + n])
        self.off += n
        return data

    def close(self):
        self.closed = True
        self.ev.set()


class MemStream:
    """One end of an in-memory duplex stream: async read/readexactly/drain, write, close."""

    def __init__(self, rx, tx):
        self.rx = rx
        self.tx = tx

    async def readexactly(self, n):
        while self.rx.avail() < n:
            if self.rx.closed:
                raise EOFError("closed")
            self.rx.ev.clear()
            await self.rx.ev.wait()
        return self.rx.take(n)

    async def read(self, n=-1):
        while not self.rx.avail() and not self.rx.closed:
            self.rx.ev.clear()
            await self.rx.ev.wait()
        a = self.rx.avail()
        return self.rx.take(a if n < 0 else min(n, a))

    def write(self, data):
        if self.tx.closed:
            raise OSError("closed")
        self.tx.feed(data)

    async def drain(self):
        if self.tx.closed:
            raise OSError("closed")

    def close(self):
        self.tx.close()
        self.rx.close()


def pipe_pair():
    a, b = _Pipe(), _Pipe()
    return MemStream(a, b), MemStream(b, a)


def topic_matches(filt, topic):
    f = filt.split("/")
    t = topic.split("/")
    for i in range(len(f)):
        if f[i] == "#":
            return True
        if i >= len(t) or (f[i] != "+" and f[i] != t[i]):
            return False
    return len(f) == len(t)


def _packet(typ, body):
    n = len(body)
    hdr = bytearray([typ])
    while True:
        b = n & 0x7F
        n >>= 7
        hdr.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes(hdr) + bytes(body)


def _s(b):
    return struct.pack(">H", len(b)) + b


class FakeBroker:
    """Just enough MQTT: CONNECT (will, persistent sessions), SUBSCRIBE, QoS 0/1 PUBLISH
    with retained messages, PINGREQ. hooks: fn(topic, payload, flags) called on every
    client PUBLISH. up=False refuses connections; kill() drops every connection (wills fire);
    ack=False stops PUBACKs (a broker that takes messages and loses them)."""

    def __init__(self):
        self.up = True
        self.ack = True
        self.retained = {}
        self.sessions = {}      # client id -> {"subs": [..], "queue": [...]}
        self.conns = {}         # client id -> MemStream (broker end)
        self.received = []      # (client id, topic, payload, flags)
        self.hooks = []
        self.connects = 0
        self._pid = 0

    async def open_stream(self):
        if not self.up:
            raise OSError("connection refused")
        client, server = pipe_pair()
        asyncio.create_task(self._serve(server))
        return client

    def kill(self):
        for cid in list(self.conns):
            self.conns[cid].close()

    def publish(self, topic, payload, retain=False):
        """Broker-side publish (as from another client), QoS 1 to subscribers."""
        if isinstance(payload, str):
            payload = payload.encode()
        if retain:
            self.retained[topic] = payload
        for cid in self.sessions:
            sess = self.sessions[cid]
            for f in sess["subs"]:
                if topic_matches(f, topic):
                    self._deliver(cid, topic, payload, False)
                    break

    def _deliver(self, cid, topic, payload, retain):
        s = self.conns.get(cid)
        if s is None:
            if cid in self.sessions and not self.sessions[cid]["clean"]:
                self.sessions[cid]["queue"].append((topic, payload))
            return
        self._pid = self._pid % 65535 + 1
        body = _s(topic.encode()) + struct.pack(">H", self._pid) + payload
        try:
            s.write(_packet(0x32 | (1 if retain else 0), body))
        except OSError:
            pass

    async def _serve(self, s):
        cid = None
        will = None
        clean_exit = False
        try:
            while True:
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
                body = await s.readexactly(n) if n else b""
                kind = typ & 0xF0
                if kind == 0x10:
                    flags = body[7]
                    keepalive = (body[8] << 8) | body[9]
                    off = 10
                    ln = (body[off] << 8) | body[off + 1]
                    cid = bytes(body[off + 2:off + 2 + ln]).decode()
                    off += 2 + ln
                    if flags & 0x04:
                        ln = (body[off] << 8) | body[off + 1]
                        wt = bytes(body[off + 2:off + 2 + ln]).decode()
                        off += 2 + ln
                        ln = (body[off] << 8) | body[off + 1]
                        wm = bytes(body[off + 2:off + 2 + ln])
                        will = (wt, wm, bool(flags & 0x20))
                    clean = bool(flags & 0x02)
                    old = self.conns.get(cid)
                    if old is not None:
                        old.close()
                    present = cid in self.sessions and not clean
                    if not present:
                        self.sessions[cid] = {"subs": [], "queue": [], "clean": clean}
                    self.conns[cid] = s
                    self.connects += 1
                    s.write(bytes((0x20, 2, 1 if present else 0, 0)))
                    queue = self.sessions[cid]["queue"]
                    self.sessions[cid]["queue"] = []
                    for topic, payload in queue:
                        self._deliver(cid, topic, payload, False)
                    keepalive = keepalive
                elif kind == 0x80:
                    pid = body[:2]
                    off = 2
                    codes = b""
                    while off < len(body):
                        ln = (body[off] << 8) | body[off + 1]
                        f = bytes(body[off + 2:off + 2 + ln]).decode()
                        off += 3 + ln
                        if f not in self.sessions[cid]["subs"]:
                            self.sessions[cid]["subs"].append(f)
                        codes += b"\x01"
                    s.write(_packet(0x90, pid + codes))
                    for topic in self.retained:
                        if topic_matches(f, topic):
                            self._deliver(cid, topic, self.retained[topic], True)
                elif kind == 0x30:
                    qos = (typ >> 1) & 3
                    ln = (body[0] << 8) | body[1]
                    topic = bytes(body[2:2 + ln]).decode()
                    off = 2 + ln
                    pid = None
                    if qos:
                        pid = body[off:off + 2]
                        off += 2
                    payload = bytes(body[off:])
                    self.received.append((cid, topic, payload, typ & 0x0F))
                    if typ & 1:
                        self.retained[topic] = payload
                    if qos and self.ack:
                        s.write(b"\x40\x02" + pid)
                    for hook in self.hooks:
                        hook(topic, payload, typ & 0x0F)
                    if qos and not self.ack:
                        continue
                    self.publish(topic, payload)
                elif kind == 0xC0:
                    s.write(b"\xd0\x00")
                elif kind == 0xE0:
                    clean_exit = True
                    break
        except (EOFError, OSError):
            pass
        if cid is not None and self.conns.get(cid) is s:
            del self.conns[cid]
            if will and not clean_exit:
                self.publish(will[0], will[1], will[2])
        s.close()


async def in_task(coro):
    """Run coro as a real asyncio Task and return its result. The WebAssembly port runs a
    test's top-level coroutine outside any Task, where wait_for_ms/Event waits misbehave
    (node exits with an unsettled await or spins), so every async test body runs in here."""
    box = {}

    async def wrapper():
        try:
            box["r"] = await coro
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["e"] = e
        box["done"] = True

    asyncio.create_task(wrapper())
    while "done" not in box:
        await clock.sleep_ms(5)
    if "e" in box:
        raise box["e"]
    return box.get("r")


def in_task_test(fn):
    async def run():
        return await in_task(fn())
    return run


async def settle(ms=30):
    await clock.sleep_ms(ms)


async def stop_tasks(tasks):
    for t in tasks:
        t.cancel()
    await clock.sleep_ms(5)


# -- tests of firmware.mqtt -------------------------------------------------------------
async def _client(broker, **kw):
    c = MQTTClient("c1", broker.open_stream, backoff_min_ms=10, backoff_max_ms=40, **kw)
    task = asyncio.create_task(c.run())
    assert await c.wait_connected(1000)
    return c, task


@in_task_test
async def test_connect_subscribe_publish_puback():
    b = FakeBroker()
    got = []
    c = MQTTClient("c1", b.open_stream, backoff_min_ms=10)
    c.subs = [("a/in", 1)]
    c.on_message = lambda t, p: got.append((t, bytes(p)))
    task = asyncio.create_task(c.run())
    assert await c.wait_connected(1000)
    await settle()
    pid = await c.publish("a/out", b"hello")
    await settle()
    assert b.received[-1][1:3] == ("a/out", b"hello")
    assert not c.is_inflight(pid)
    b.publish("a/in", b"x" * 300)  # remaining length > 127: two-byte varint
    await settle()
    assert got == [("a/in", b"x" * 300)]
    c.stop()
    await stop_tasks([task])


@in_task_test
async def test_unacked_publish_resent_with_dup_after_reconnect():
    b = FakeBroker()
    c, task = await _client(b)
    b.ack = False
    pid = await c.publish("a/out", b"one")
    await settle()
    assert c.is_inflight(pid)
    b.ack = True
    b.kill()
    await settle(150)
    assert c.connected
    assert not c.is_inflight(pid)
    sends = [r for r in b.received if r[1] == "a/out"]
    assert len(sends) == 2
    assert sends[0][3] & 0x08 == 0 and sends[1][3] & 0x08 == 0x08  # DUP on the resend
    c.stop()
    await stop_tasks([task])


@in_task_test
async def test_publish_while_down_goes_out_on_reconnect_and_backoff_is_capped():
    b = FakeBroker()
    c, task = await _client(b)
    b.up = False
    b.kill()
    await settle(30)
    assert not c.connected
    await c.publish("a/out", b"queued")
    await settle(200)  # backoff 10, 20, 40, 40 ... ms: several tries, capped
    assert not c.connected
    b.up = True
    await settle(100)
    assert c.connected
    assert [r[2] for r in b.received if r[1] == "a/out"] == [b"queued"]
    c.stop()
    await stop_tasks([task])


@in_task_test
async def test_will_published_when_link_dies_not_on_disconnect():
    b = FakeBroker()
    c = MQTTClient("c1", b.open_stream, backoff_min_ms=10)
    c.will = ("a/state", b"offline", True)
    task = asyncio.create_task(c.run())
    assert await c.wait_connected(1000)
    b.up = False
    b.kill()
    await settle()
    assert b.retained.get("a/state") == b"offline"
    del b.retained["a/state"]
    b.up = True
    assert await c.wait_connected(1000)
    await c.disconnect()
    await settle()
    assert "a/state" not in b.retained
    await stop_tasks([task])


@in_task_test
async def test_keepalive_sends_ping_and_drops_a_silent_broker():
    b = FakeBroker()
    c, task = await _client(b, keepalive=1)
    await settle(700)
    assert c.connected  # PINGREQ/PINGRESP kept it alive
    n = b.connects
    b.ack = False
    b.hooks.append(lambda t, p, f: None)
    # a broker that stops answering: swap its serve loop's replies off by closing only rx
    conn = b.conns["c1"]
    conn.tx.closed = True   # broker -> client direction goes silent
    await settle(2200)
    assert b.connects > n  # client noticed the silence and reconnected
    c.stop()
    await stop_tasks([task])


@in_task_test
async def test_oversized_publish_is_skipped_and_acknowledged():
    b = FakeBroker()
    got = []
    c = MQTTClient("c1", b.open_stream, backoff_min_ms=10, max_packet=1000)
    c.subs = [("a/in", 1)]
    c.on_message = lambda t, p: got.append(bytes(p))
    task = asyncio.create_task(c.run())
    assert await c.wait_connected(1000)
    await settle()
    n = b.connects
    b.publish("a/in", b"y" * 5000)
    b.publish("a/in", b"small")
    await settle()
    assert got == [b"small"]
    assert c.connected and b.connects == n  # no reconnect loop over the big one
    c.stop()
    await stop_tasks([task])

