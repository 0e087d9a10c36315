# host-only. A virtual kiosk: the real firmware (firmware/) on the sim board, against a real
# MQTT broker over real asyncio TCP streams (CPython). The RC522 is the register-level
# emulator (boards/sim/rc522.py) driven by the real driver (firmware/rc522.py): a tap puts a
# virtual card in the emulated RF field and the firmware's own poll loop finds it.
#
# Command line (docs/firmware.md):
#   python -m boards.sim.kiosk --kiosk K1 --key HEX --broker mqtt://127.0.0.1:1883
#   python -m boards.sim.kiosk --config kiosk.json --script taps.txt --names names.json
# Input lines (script file or keyboard): a card UID (8/14/20 hex digits), a name from
# --names, "sleep SECONDS", "offline"/"online" (drop / restore the broker link), "quit".
#
# Library:
#   vk = await start_kiosk(config, "127.0.0.1", port)     # on a running asyncio loop
#   event = await vk.tap("ED0BA996")                        # final feedback event (dict)
#   await vk.stop()                                         # or vk.power_cut(torn_bytes=N)
#   tk = start_kiosk_thread(config, "127.0.0.1", port)      # own loop in a thread, sync API
#   event = tk.tap("ED0BA996"); tk.stop()
import argparse
import asyncio
import binascii
import json
import struct
import sys
import tempfile
import threading
import time

from firmware import clock, config as fwconfig, main as fwmain, net
from firmware.board import SimBoard
from protocol import uid as uidtext

FINAL = ("approved", "declined", "offline", "no_verdict", "fault")


class EmulatedReader:
    """The real driver on the emulated MFRC522; tap() puts a virtual card in its field."""

    def __init__(self):
        from boards.sim import rc522 as chip
        from firmware.reader import CardReader
        spi, cs, rst, self.chip, self.field = chip.wire()
        self.reader = CardReader(spi, cs, rst)

    def poll(self):
        return self.reader.poll()

    def read_credential(self, card, secret):
        return self.reader.read_credential(card, secret)

    def present(self, uid_bytes, card=None):
        """Put a card in the field: the given virtual card, or a blank MIFARE Classic 1K."""
        from boards.sim import cards
        card = card or cards.MifareClassic1K(uid_bytes)
        self.field.add(card)
        return card

    def remove(self, card):
        self.field.remove(card)


class QueueReader:
    """Fallback without the emulator: a tap is handed to the next poll."""

    def __init__(self):
        self.cards = []

    def poll(self):
        return self.cards.pop(0) if self.cards else None

    def present(self, uid_bytes, card=None):
        class Card:
            uid = uid_bytes
            sak = 0x08
        self.cards.append(Card)
        return Card

    def remove(self, card):
        pass


def _uid_bytes(uid):
    if isinstance(uid, (bytes, bytearray)):
        return bytes(uid)
    return uidtext.uid_bytes(uid.strip().upper())


class VirtualKiosk:
    def __init__(self, kiosk, board, reader, tasks):
        self.kiosk = kiosk
        self.board = board
        self.reader = reader
        self.tasks = tasks
        self.events = []          # every feedback event, in order
        self._waiters = []
        self._lock = asyncio.Lock()
        board.on_event = self._on_event

    @property
    def id(self):
        return self.kiosk.id

    def _on_event(self, event):
        self.events.append(event)
        if event["kind"] in FINAL and self._waiters:
            fut = self._waiters.pop(0)
            if not fut.done():
                fut.set_result(event)

    async def wait_connected(self, timeout=10.0):
        return await self.kiosk.mqtt.wait_connected(int(timeout * 1000))

    @property
    def connected(self):
        return self.kiosk.mqtt.connected

    async def tap(self, uid, timeout=10.0, hold=0.3, card=None):
        """Present a card (UID hex text or bytes); return the final feedback event: a dict
        with kind (approved/declined/offline/no_verdict/fault), reason, text, pays, balance,
        colour, lines, uid, seq. card: a virtual card (boards.sim.cards) to present
        instead of a blank one, e.g. a personalised or a cloned card. None if the kiosk ignored it (same card within
        suppress_s) or nothing was shown within timeout."""
        async with self._lock:  # one card in the field at a time, like a real counter
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            card = self.reader.present(_uid_bytes(uid), card)
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                if fut in self._waiters:
                    self._waiters.remove(fut)
                return None
            finally:
                await asyncio.sleep(hold)  # the hand leaves the reader
                self.reader.remove(card)

    def journal_depth(self):
        return self.kiosk.journal.depth()

    def go_offline(self):
        """The network goes away: the link drops and every reconnect attempt fails, as
        with Wi-Fi gone, until go_online()."""
        self.link["up"] = False
        self.kiosk.mqtt._fail("link cut (go_offline)")

    async def go_online(self):
        """The network is back; reconnect now rather than at the end of the backoff."""
        self.link["up"] = True
        for t in self.tasks[:1]:
            t.cancel()
        self.tasks[0] = asyncio.get_running_loop().create_task(self.kiosk.mqtt.run())

    async def power_cut(self, torn_bytes=0):
        """Power off now: no DISCONNECT (the broker publishes the will), tasks dropped. With
        torn_bytes > 0, the power dies that many bytes into writing the next swipe's journal
        record, as if a tap was being journalled. Start a kiosk on the same data_dir to
        'power on' again."""
        k = self.kiosk
        if torn_bytes:
            from firmware import journal as jr
            from protocol import messages, utctime
            seq = k.journal.next_seq()
            msg = messages.swipe(k.id, seq, utctime.iso(clock.now()), "0A0B0C0D", "uid",
                                 k.service(), False, k.key)
            payload = messages.encode("swipe", msg)
            rec = bytearray(jr.HEADER + len(payload) + jr.TRAILER)
            struct.pack_into(">BBHI", rec, 0, jr.MAGIC, jr.SWIPE, len(payload), seq)
            rec[jr.HEADER:jr.HEADER + len(payload)] = payload
            crc = binascii.crc32(bytes(rec[1:jr.HEADER + len(payload)])) & 0xFFFFFFFF
            struct.pack_into(">I", rec, jr.HEADER + len(payload), crc)
            k.journal.close()
            with open(k.journal.path, "ab") as f:
                f.write(bytes(rec[:min(torn_bytes, len(rec) - 1)]))
        await self.stop(clean=False)

    async def stop(self, clean=True):
        """clean: DISCONNECT (no will). clean=False: power cut (socket dropped, will fires)."""
        if clean:
            await self.kiosk.mqtt.disconnect()
        self.kiosk.stop()
        for t in self.tasks:
            t.cancel()
        await asyncio.sleep(0)


async def start_kiosk(cfg, broker_host="127.0.0.1", port=1883, data_dir=None, emulator=True,
                      log=None, tls=False, ca=None):
    """Start a virtual kiosk on the running loop. cfg: a config.json dict (kiosk, key, ...).
    data_dir keeps its journal and cached config (reuse it to 'reboot' the same kiosk)."""
    cfg = dict(cfg)
    if data_dir is None:
        data_dir = tempfile.mkdtemp(prefix="kiosk-%s-" % cfg.get("kiosk", "x"))
    cfg["data_dir"] = data_dir
    cfg.setdefault("board", "sim")
    fwconfig.prepare(cfg)
    clock.set_now(time.time(), "host")
    board = SimBoard()
    reader = EmulatedReader() if emulator else QueueReader()
    log = log or (lambda text: None)
    link = {"up": True}
    connect = net.opener(broker_host, port, tls, ca)

    async def opener():
        if not link["up"]:
            raise OSError("network down (simulated)")
        return await connect()

    kiosk = fwmain.build(cfg, board, reader, opener, log=log)
    tasks = kiosk.start()
    vk = VirtualKiosk(kiosk, board, reader, tasks)
    vk.link = link
    return vk


class ThreadedKiosk:
    """start_kiosk on its own event loop in a thread, with a blocking API (tap, stop)."""

    def __init__(self, cfg, broker_host, port, **kw):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.vk = self._call(start_kiosk(cfg, broker_host, port, **kw))

    def _call(self, coro, timeout=30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def tap(self, uid, timeout=10.0):
        return self._call(self.vk.tap(uid, timeout), timeout + 5)

    def wait_connected(self, timeout=10.0):
        return self._call(self.vk.wait_connected(timeout), timeout + 5)

    @property
    def events(self):
        return self.vk.events

    def stop(self, clean=True):
        self._call(self.vk.stop(clean))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def start_kiosk_thread(cfg, broker_host="127.0.0.1", port=1883, **kw):
    return ThreadedKiosk(cfg, broker_host, port, **kw)


def describe(event):
    if event is None:
        return "(ignored: same card again too soon)"
    return "%-10s %-14s seq=%s  %s" % (event["kind"].upper(), event.get("uid") or "-",
                                       event.get("seq"), " | ".join(event["lines"]))


async def _lines(script):
    if script:
        with open(script) as f:
            for line in f:
                yield line
        return
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line


async def _main(args):
    cfg = {}
    if args.config:
        with open(args.config) as f:
            cfg = json.load(f)
    if args.kiosk:
        cfg["kiosk"] = args.kiosk
    if args.key:
        cfg["key"] = args.key
    if args.service:
        cfg["service"] = args.service
    broker = args.broker or cfg.get("broker") or "mqtt://127.0.0.1:1883"
    host, port, tls = fwconfig.parse_broker(broker)
    names = {}
    if args.names:
        with open(args.names) as f:
            names = {k.lower(): v for k, v in json.load(f).items()}
    quiet = args.quiet
    vk = await start_kiosk(cfg, host, port, data_dir=args.data_dir, tls=tls, ca=cfg.get("ca"),
                           emulator=not args.no_emulator,
                           log=(lambda t: None) if quiet else (lambda t: print("  " + t)))
    ok = await vk.wait_connected(args.connect_timeout)
    print("kiosk %s %s %s" % (vk.id, "connected to" if ok else "OFFLINE, broker", broker))
    async for line in _lines(args.script):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word = line.split()
        if word[0] == "quit":
            break
        if word[0] == "sleep":
            await asyncio.sleep(float(word[1]))
            continue
        if word[0] == "offline":
            vk.go_offline()
            print("link cut")
            continue
        if word[0] == "online":
            await vk.go_online()
            await vk.wait_connected(args.connect_timeout)
            continue
        card = names.get(line.lower(), line)
        try:
            _uid_bytes(card)
        except ValueError:
            print("? %r is not a card UID (8, 14 or 20 hex digits) or a known name" % line)
            continue
        print(describe(await vk.tap(card)))
    if args.drain:  # wait for offline swipes to settle before leaving
        deadline = time.time() + args.drain
        while vk.journal_depth() and time.time() < deadline:
            await asyncio.sleep(0.1)
    print("journal depth %d" % vk.journal_depth())
    await vk.stop()


def cli(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m boards.sim.kiosk",
        description="Run a virtual Aixin kiosk (the real firmware on the sim board) against a "
                    "real MQTT broker. Taps come from --script or the keyboard: one card UID "
                    "or resident name per line.")
    p.add_argument("--config", help="a kiosk config.json (kiosk, key, service, broker, ...)")
    p.add_argument("--kiosk", help="kiosk id (overrides the config)")
    p.add_argument("--key", help="device key, hex (overrides the config)")
    p.add_argument("--service", help="service id, e.g. lunch")
    p.add_argument("--broker", help="mqtt://host:port or mqtts://host:port (default 127.0.0.1:1883)")
    p.add_argument("--script", help="file of taps, one per line (else the keyboard)")
    p.add_argument("--names", help="JSON {name: UID} so a line can be a resident's name")
    p.add_argument("--data-dir", help="journal + cached config folder (reuse = same kiosk after reboot)")
    p.add_argument("--drain", type=float, default=0, help="at the end, wait up to S seconds for the journal to settle")
    p.add_argument("--connect-timeout", type=float, default=5)
    p.add_argument("--no-emulator", action="store_true", help="skip the RC522 emulator (taps go straight to the loop)")
    p.add_argument("--quiet", action="store_true", help="only verdict lines")
    args = p.parse_args(argv)
    if not (args.config or (args.kiosk and args.key)):
        p.error("give --config or both --kiosk and --key")
    try:
        asyncio.run(_main(args))
    except fwconfig.ConfigError as e:
        p.exit(2, "config: %s\n" % e)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    cli()
