"""`make demo`: a whole site on this machine, no hardware.

A private Mosquitto (generated accounts and ACL, free port), the bridge on SQLite as its own
process, five virtual kiosks (the real firmware on the sim board with its emulated RC522) at
two canteens, a barber's and a bus, and enrolled residents of every group tapping. Each
verdict is shown as it happens; midway a canteen loses its network and keeps serving
offline, and an operator blocks a lost card. Then the day's report and the ledger check.

    python -m bridge.demo [--seconds 60] [--dir var/demo]
"""
import argparse
import asyncio
import datetime
import json
import os
import random
import shutil
import statistics
import sys
import time

from sqlalchemy import select

from bridge import cockpit, ledger, registry, reports, schema
from bridge.db import BridgeError
from bridge.site import BRIDGE_USER, Site
from protocol import money, reasons

MERCHANTS = [("dongxiao-canteen", "Dongxiao village canteen"), ("caoxiao-canteen", "Caoxiao community canteen"),
             ("lili-barber", "Lili barber's (love merchant)"), ("bus-k102", "Bus K102, Jindong")]
KIOSKS = [("canteen-1a", "dongxiao-canteen", "meal"), ("canteen-1b", "dongxiao-canteen", "meal"),
          ("canteen-2", "caoxiao-canteen", "meal"), ("barber-1", "lili-barber", "haircut"),
          ("bus-1", "bus-k102", "bus_ride")]
# name, age, flags, opening balance (yuan)
RESIDENTS = [
    ("Wang Xiulan", 90, (), 80), ("Chen Guoqiang", 92, (), 60), ("Li Fengying", 86, (), 120),
    ("Zhang Jianhua", 81, (), 45), ("Zhao Meiling", 84, ("dementia",), 100), ("Liu Dehai", 77, ("disabled",), 90),
    ("Huang Shufen", 73, (), 150), ("Zhou Weimin", 68, (), 35), ("Wu Yuzhen", 64, (), 200),
    ("Xu Laoshan", 79, ("preferential",), 70), ("Sun Guihua", 71, (), 55), ("Ma Jinlong", 62, (), 40),
    ("Zhu Xiuying", 88, (), 66), ("Hu Baoguo", 75, ("preferential",), 85), ("Guo Lanying", 69, (), 1),
    ("He Shuzhen", 83, ("disabled",), 95), ("Lin Youcai", 66, (), 120), ("Luo Cuihua", 95, (), 30),
]
LOST_CARD_OWNER = "Zhang Jianhua"   # reports her card lost midway; the operator blocks it
VISITOR_UID = "5A0C33E1"            # a card from another district: not enrolled here
OFFLINE_KIOSK = "canteen-2"
MIFARE_KIOSKS = ("barber-1",)       # service points that check the card's MIFARE credential


class Screen:
    """The demo's console: one line per verdict, colour when the terminal has it."""

    COLOURS = {"approved": "32", "declined": "31", "offline": "33", "no_verdict": "35", "fault": "35"}

    def __init__(self, out=sys.stdout):
        self.out = out
        self.colour = out.isatty() and not os.environ.get("NO_COLOR")

    def paint(self, text, code):
        return "\033[%sm%s\033[0m" % (code, text) if self.colour else text

    def say(self, text=""):
        print(text, file=self.out, flush=True)

    def banner(self, text):
        self.say()
        self.say(self.paint("== " + text + " ==", "1"))

    def tap(self, record, who, settled):
        ev = record["event"]
        clock = time.strftime("%H:%M:%S", time.localtime(record["t"]))
        if ev is None:
            self.say("%s  %-11s %-34s (same card again within seconds: ignored)" % (clock, record["kiosk"], who))
            return
        kind = ev["kind"]
        mark = {"approved": "OK  APPROVED", "declined": "NO  DECLINED", "offline": "OK  ACCEPTED OFFLINE",
                "no_verdict": "..  NO VERDICT YET", "fault": "!!  READER FAULT"}[kind]
        detail = ""
        if kind == "approved" and settled:
            detail = "paid %s  subsidy %s  balance %s" % (yuan(settled["resident_pays"]), yuan(settled["subsidy_pays"]),
                                                          yuan(ev.get("balance")))
        elif kind == "declined":
            detail = "%s (%s)" % (reasons.display(ev["reason"]), ev["reason"])
        elif kind == "offline":
            detail = "settles when the line is back"
        self.say("%s  %-11s %-34s %s  %s  %s" % (clock, record["kiosk"], who, self.paint("%-22s" % mark, self.COLOURS[kind]),
                                               "%4.0f ms" % record["ms"], detail))


def yuan(fen):
    return "-" if fen is None else money.yuan(fen)


def age_to_birth(age, today):
    return "%04d-%02d-%02d" % (today.year - age, max(1, today.month - 1) if today.month > 1 else 1, 1)


def populate(site, rng):
    """Merchants, kiosks and residents of every group, each with a card and a balance."""
    today = datetime.date.today()
    for mid, name in MERCHANTS:
        site.add_merchant(mid, name)
    for kid, mid, service in KIOSKS:
        site.add_kiosk(kid, mid, service)
    people = {}
    for i, (name, age, flags, balance) in enumerate(RESIDENTS):
        uid_len = 4 if i % 3 else 7
        uid = "".join("%02X" % rng.randrange(256) for _ in range(uid_len))
        if uid_len == 7:
            uid = "04" + uid[2:]  # NXP manufacturer byte, as on real 7-byte cards
        site.add_resident(name, age_to_birth(age, today), uid, balance * 100, flags)
        people[uid] = "%s, %d%s" % (name, age, " (" + ",".join(flags) + ")" if flags else "")
    people[VISITOR_UID] = "visitor from another district"
    return people


def booked(engine, kiosk, seq):
    """The bridge's stored result for (kiosk, seq), or None if not decided yet."""
    s = schema.swipes
    with engine.connect() as conn:
        row = conn.execute(select(s.c.result).where(s.c.kiosk_id == kiosk, s.c.seq == seq)).first()
    return json.loads(row[0]) if row else None


def script(people, rng, seconds):
    """Who taps where and when: a morning of buses and haircuts, then the lunch rush."""
    from boards.sim import fleet
    cards = [(uid, who) for uid, who in people.items() if uid != VISITOR_UID]
    third = seconds / 3
    morning = fleet.merge(fleet.bus_route(cards, ["bus-1"], third, seed=rng.randrange(1000)),
                          fleet.haircuts(cards, ["barber-1"], third, seed=rng.randrange(1000)))
    lunch = fleet.lunch_rush(cards, ["canteen-1a", "canteen-1b", OFFLINE_KIOSK], 2 * third - 4,
                             seed=rng.randrange(1000))
    lunch["bus-1"] = [(third * 0.8, VISITOR_UID, people[VISITOR_UID])]
    return morning, lunch


async def run(site, people, seconds, screen, rng):
    from boards.sim.fleet import Fleet
    configs = [site.kiosk_config(k, mifare=k in MIFARE_KIOSKS) for k, _, _ in KIOSKS]
    fleet = Fleet(configs, "127.0.0.1", site.port, os.path.join(site.folder, "kiosks"),
                  card_maker=site.card_maker())
    await fleet.start()
    screen.say("%d kiosks online: %s" % (len(fleet.kiosks), ", ".join(fleet.kiosks)))

    def on_tap(record):
        ev = record["event"]
        settled = booked(site.engine, record["kiosk"], ev["seq"]) if ev and ev.get("seq") else None
        screen.tap(record, record.get("who") or people.get(record["uid"], record["uid"]), settled)

    morning, lunch = script(people, rng, seconds)
    screen.banner("Morning: bus K102 and the barber's (which checks each card's MIFARE credential)")
    await fleet.run(morning, on_tap)
    from boards.sim import cards
    from protocol import uid as uidtext
    victim = next(u for u, w in people.items() if w.startswith("Wu Yuzhen"))
    screen.say(screen.paint("-- someone tries a copy of %s's card (same UID, no keys) at the barber's"
                            % people[victim].split(",")[0], "36"))
    on_tap(await fleet.tap("barber-1", victim, "copied card of " + people[victim].split(",")[0],
                           card=cards.uid_clone(uidtext.uid_bytes(victim))))

    screen.banner("Lunch rush at the canteens (%s will lose its network for a while)" % OFFLINE_KIOSK)
    lost_uid = next(u for u, w in people.items() if w.startswith(LOST_CARD_OWNER))

    async def incidents():
        await asyncio.sleep(seconds / 8)
        fleet.kiosks[OFFLINE_KIOSK].go_offline()
        screen.say(screen.paint("-- %s: network down; the kiosk keeps serving from its cached lists" % OFFLINE_KIOSK, "33"))
        await asyncio.sleep(seconds / 6)
        registry.set_card_status(site.engine, lost_uid, True, note="reported lost at the demo")
        screen.say(screen.paint("-- operator: `aixin card block %s` (%s reported her card lost)"
                                % (lost_uid, LOST_CARD_OWNER), "36"))
        await asyncio.sleep(seconds / 8)
        await fleet.kiosks[OFFLINE_KIOSK].go_online()
        waiting = fleet.kiosks[OFFLINE_KIOSK].journal_depth()
        screen.say(screen.paint("-- %s: network back; uploading %d offline swipe(s) in order" % (OFFLINE_KIOSK, waiting), "33"))

    await asyncio.gather(fleet.run(lunch, on_tap), incidents())
    # the lost card is tried once more, after the block reached the kiosks
    await asyncio.sleep(1.5)
    on_tap((await fleet.tap("canteen-1a", lost_uid, people[lost_uid])))
    left = await fleet.drain(30)
    await fleet.stop()
    return fleet.taps, left


def summary(site, taps, left, screen, started):
    screen.banner("Offline swipes, settled after the network came back")
    for r in taps:
        ev = r["event"]
        if ev and ev["kind"] == "offline":
            res = booked(site.engine, r["kiosk"], ev["seq"])
            state = ("booked, flagged for review (%s)" % res["reason"] if res and res["flagged"] else
                     "booked: paid %s, subsidy %s" % (yuan(res["resident_pays"]), yuan(res["subsidy_pays"])) if res
                     else "NOT YET BOOKED")
            screen.say("  %-11s seq %-4s %-34s %s" % (r["kiosk"], ev["seq"], r["who"], state))

    screen.banner("The day in numbers")
    kinds = {}
    for r in taps:
        key = r["event"]["kind"] if r["event"] else "ignored"
        if key == "declined":
            key += ": " + r["event"]["reason"]
        kinds[key] = kinds.get(key, 0) + 1
    for k in sorted(kinds):
        screen.say("  %-34s %4d" % (k, kinds[k]))
    online = [r["ms"] for r in taps if r["event"] and r["event"]["kind"] in ("approved", "declined")]
    if online:
        online.sort()
        screen.say("  taps %d; tap to verdict on screen: median %.0f ms, p95 %.0f ms (sim kiosk, loopback)"
                   % (len(taps), statistics.median(online), online[int(0.95 * (len(online) - 1))]))
    screen.say("  swipes still waiting for a verdict: %d" % left)

    screen.banner("Daily report (aixin report daily): what each payer paid each merchant")
    screen.say("  %-18s %-10s %-24s %5s %10s" % ("merchant", "service", "payer", "taps", "yuan"))
    for _day, merchant, service, payer, n, fen in reports.report(site.engine, "daily"):
        screen.say("  %-18s %-10s %-24s %5d %10s" % (merchant, service, payer, n, yuan(fen)))

    screen.banner("Ledger check (aixin ledger check)")
    check = ledger.check(site.engine)
    verdict = screen.paint("OK", "32") if check["ok"] else screen.paint("FAILED", "31")
    screen.say("  %s: %d transactions, %d accounts; every transaction sums to zero and every balance "
               "equals its entries" % (verdict, check["transactions"], check["accounts"]))
    for p in check["problems"]:
        screen.say("  problem: " + p)
    screen.say()
    screen.say("Demo finished in %.0f s. Site folder: %s (database aixin.db; try "
               "`.venv/bin/aixin --db %s report daily`)" % (time.time() - started, site.folder, site.db_path))
    return check["ok"] and left == 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bridge.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=float(os.environ.get("DEMO_SECONDS", 60)),
                   help="about how long the residents keep tapping (default 60)")
    p.add_argument("--dir", default=os.path.join("var", "demo"),
                   help="the site's folder: database, logs, broker files (default var/demo, emptied first)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--cockpit-port", type=int, default=0, help="port of the live page (default: a free one)")
    args = p.parse_args(argv)
    screen = Screen()
    folder = os.path.abspath(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    rng = random.Random(args.seed)
    started = time.time()
    screen.banner("Aixin card demo: a site on this machine, no hardware")
    site = Site(folder)
    ok = False
    page = states = None
    try:
        people = populate(site, rng)
        screen.say("registry: %d merchants, %d kiosks, %d residents with cards (database %s)"
                   % (len(MERCHANTS), len(KIOSKS), len(RESIDENTS), site.db_path))
        site.start()
        screen.say("Mosquitto on 127.0.0.1:%d (per-kiosk accounts and ACL), bridge running (log %s)"
                   % (site.port, os.path.join(folder, "bridge.log")))
        states = cockpit.KioskStates("mqtt://127.0.0.1:%d" % site.port, BRIDGE_USER, site.bridge_password)
        page = cockpit.serve(site.engine, args.cockpit_port, states=states)
        screen.say("live operations page (cockpit): http://127.0.0.1:%d/" % page.server_address[1])
        taps, left = asyncio.run(run(site, people, args.seconds, screen, rng))
        ok = summary(site, taps, left, screen, started)
    except KeyboardInterrupt:
        screen.say("\nstopped by Ctrl-C; shutting the site down")
    except BridgeError as e:
        screen.say("demo failed: %s" % e)
    finally:
        if page:
            page.shutdown()
        if states:
            states.stop()
        site.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
