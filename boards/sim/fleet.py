# host-only. A fleet of virtual kiosks (the real firmware on the sim board, each with its own
# emulated RC522 and its own TCP connection to the broker) on one asyncio loop, and scripted
# residents tapping at them: a lunch rush at a canteen, haircuts at a barber's, a bus route.
#
#   fleet = Fleet(configs, "127.0.0.1", port, data_root)
#   await fleet.start()
#   await fleet.run(lunch_rush(cards, kiosk_ids), on_tap=print)
#   await fleet.drain()          # every journalled swipe has its verdict
#   await fleet.stop()
#
# fleet.taps records every tap: kiosk, uid, who, the final feedback event (kind, reason,
# seq, pays, balance) and the wall time, for the demo's display and the drills' audit.
import asyncio
import os
import random
import time

from boards.sim.kiosk import start_kiosk

HOLD_S = 0.3


class Fleet:
    def __init__(self, configs, host, port, data_root, verdict_timeout_s=3, card_maker=None):
        """card_maker(uid text) -> a virtual card for each tap (e.g. a personalised MIFARE
        card, boards.sim.cards.personalised); None means a blank card with that UID."""
        self.configs = {c["kiosk"]: dict(c, verdict_timeout_ms=verdict_timeout_s * 1000) for c in configs}
        self.card_maker = card_maker
        self.host, self.port = host, port
        self.data_root = data_root
        self.kiosks = {}
        self.taps = []
        self._gates = {}  # kiosk -> lock: a tap and a power cycle never overlap

    def _gate(self, kiosk_id):
        if kiosk_id not in self._gates:
            self._gates[kiosk_id] = asyncio.Lock()
        return self._gates[kiosk_id]

    def data_dir(self, kiosk_id):
        path = os.path.join(self.data_root, kiosk_id)
        os.makedirs(path, exist_ok=True)
        return path

    async def start_kiosk(self, kiosk_id):
        """Power on (or on again: the same data_dir keeps its journal and cached config)."""
        self.kiosks[kiosk_id] = await start_kiosk(self.configs[kiosk_id], self.host, self.port,
                                                  data_dir=self.data_dir(kiosk_id))
        return self.kiosks[kiosk_id]

    async def start(self, connect_timeout=15):
        for kiosk_id in self.configs:
            await self.start_kiosk(kiosk_id)
        for vk in self.kiosks.values():
            if not await vk.wait_connected(connect_timeout):
                raise RuntimeError("kiosk %s could not connect to the broker on port %d" % (vk.id, self.port))

    async def tap(self, kiosk_id, uid, who=None, card=None):
        t0 = time.time()
        async with self._gate(kiosk_id):  # a kiosk being power-cycled is tapped once it is back
            vk = self.kiosks[kiosk_id]
            if card is None and self.card_maker:
                card = self.card_maker(uid)
            event = await vk.tap(uid, hold=0, card=card)  # card in the field -> final feedback shown
        record = {"kiosk": kiosk_id, "uid": uid, "who": who, "event": event, "t": t0,
                  "ms": (time.time() - t0) * 1000}
        self.taps.append(record)
        await asyncio.sleep(HOLD_S)  # the resident takes the card away
        return record

    async def run(self, script, on_tap=None):
        """script: {kiosk_id: [(delay_s, uid, who), ...]}; each kiosk's queue runs in order,
        the kiosks at once, as at a real site."""
        async def queue(kiosk_id, steps):
            for delay, uid, who in steps:
                await asyncio.sleep(delay)
                record = await self.tap(kiosk_id, uid, who)
                if on_tap:
                    on_tap(record)
        await asyncio.gather(*(queue(k, steps) for k, steps in script.items()))

    async def power_cut(self, kiosk_id, torn_bytes=0):
        await self.kiosks[kiosk_id].power_cut(torn_bytes=torn_bytes)

    async def power_cycle(self, kiosk_id, torn_bytes=0, off_s=0.5, connect_timeout=15):
        """Between two taps: cut the power (torn_bytes into the next journal record), stay
        off off_s, power on again on the same data dir. Returns the new VirtualKiosk, its
        cut_seq attribute the seq the torn record carried."""
        async with self._gate(kiosk_id):
            cut_seq = self.kiosks[kiosk_id].kiosk.journal.next_seq()
            await self.power_cut(kiosk_id, torn_bytes)
            await asyncio.sleep(off_s)
            vk = await self.start_kiosk(kiosk_id)
            await vk.wait_connected(connect_timeout)
            vk.cut_seq = cut_seq
            return vk

    def depth(self):
        return sum(vk.journal_depth() for vk in self.kiosks.values())

    async def drain(self, timeout=60):
        """Wait until every kiosk's journal is empty (each swipe has its verdict). Returns
        the swipes still waiting (0 on success)."""
        deadline = time.time() + timeout
        while self.depth() and time.time() < deadline:
            await asyncio.sleep(0.1)
        return self.depth()

    async def stop(self):
        for vk in self.kiosks.values():
            await vk.stop()


# --- scripted residents -----------------------------------------------------------------

def lunch_rush(cards, kiosk_ids, seconds=20, seed=1):
    """Residents queue at the canteen kiosks around noon: most tap once, a few come back
    for seconds (the day's cap catches them), spread over `seconds`."""
    rng = random.Random(seed)
    script = {k: [] for k in kiosk_ids}
    diners = list(cards)
    rng.shuffle(diners)
    diners += rng.sample(diners, max(1, len(diners) // 8))  # back for more
    for i, (uid, who) in enumerate(diners):
        script[kiosk_ids[i % len(kiosk_ids)]].append((uid, who))
    return _paced(script, seconds, rng)


def haircuts(cards, kiosk_ids, seconds=20, seed=2):
    """A barber's day: a few customers, unhurried."""
    rng = random.Random(seed)
    script = {k: [] for k in kiosk_ids}
    for i, (uid, who) in enumerate(rng.sample(list(cards), min(len(cards), 4 * len(kiosk_ids)))):
        script[kiosk_ids[i % len(kiosk_ids)]].append((uid, who))
    return _paced(script, seconds, rng)


def bus_route(cards, kiosk_ids, seconds=20, seed=3):
    """Buses stop at villages: a bunch of riders board at each stop, then a gap."""
    rng = random.Random(seed)
    script = {k: [] for k in kiosk_ids}
    for k in kiosk_ids:
        for _stop in range(3):
            riders = rng.sample(list(cards), min(len(cards), rng.randint(2, 5)))
            script[k] += [(uid, who) for uid, who in riders]
    return _paced(script, seconds, rng, bunched=True)


def _paced(script, seconds, rng, bunched=False):
    out = {}
    for k, taps in script.items():
        gap = seconds / max(1, len(taps))
        steps = []
        for i, (uid, who) in enumerate(taps):
            if bunched:
                delay = gap * (4 if i % 4 == 0 else 0.25)
            else:
                delay = gap * rng.uniform(0.4, 1.6)
            steps.append((round(delay, 2), uid, who))
        out[k] = steps
    return out


def merge(*scripts):
    """Several scripts' kiosks side by side (a kiosk in two scripts runs both in turn)."""
    out = {}
    for s in scripts:
        for k, steps in s.items():
            out.setdefault(k, []).extend(steps)
    return out
