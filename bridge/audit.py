# host-only. The fault drills' audit (issue 6): after a fleet run and a drain, hold every
# tap a resident made against what the bridge booked, and say what was lost or doubled.
#
#   site, cards = drill_site(folder, kiosks=4, residents=40)
#   ... run a Fleet over site.kiosk_config(k) for k in site.kiosk_ids(), inject faults ...
#   left = await fleet.drain()
#   result = audit(site.engine, fleet.taps, journal_left=left)
#   print(table(result)); assert result["lost"] == 0 and result["double_booked"] == 0
#
# Used by tests/test_drills.py and bench/drill.py.
import datetime
import random

from sqlalchemy import func, select

from bridge import ledger, schema
from bridge.site import Site

LOCAL_ONLY = "kiosk:"  # prefix for declines decided on the kiosk (no seq, never published)


# --- a site to drill on ---------------------------------------------------------------

def drill_site(folder, kiosks=4, residents=40, seed=1, balance_fen=100000):
    """A Site with two merchants (a canteen selling meals, a bus line), `kiosks` kiosks
    alternating between them, and `residents` enrolled residents of mixed ages and flags,
    each with one card. Returns (site, cards) with cards = [(uid, who), ...]. A few
    residents are poor (their wallet runs dry) so declines show up too."""
    rng = random.Random(seed)
    site = Site(folder)
    site.add_merchant("canteen", "Drill canteen")
    site.add_merchant("bus", "Drill bus line")
    for i in range(kiosks):
        if i % 2 == 0:
            site.add_kiosk("canteen-%02d" % i, "canteen", "meal")
        else:
            site.add_kiosk("bus-%02d" % i, "bus", "bus_ride")
    today = datetime.date.today()
    cards = []
    used = set()
    for i in range(residents):
        while True:
            n = 4 if i % 3 else 7
            uid = "".join("%02X" % rng.randrange(256) for _ in range(n))
            if n == 7:
                uid = "04" + uid[2:]
            if uid not in used:
                used.add(uid)
                break
        age = rng.choice((62, 68, 75, 81, 88, 93))
        flags = rng.choice(((), (), (), ("disabled",), ("preferential",)))
        birth = "%04d-01-01" % (today.year - age)
        fen = 150 if i % 10 == 9 else balance_fen  # every tenth resident is nearly broke
        who = "resident-%03d" % i
        site.add_resident(who, birth, uid, fen, flags)
        cards.append((uid, who))
    return site, cards


def drill_script(cards, kiosk_ids, taps, seconds, seed=1, stranger_every=40):
    """{kiosk: [(delay_s, uid, who), ...]} with `taps` taps spread over the kiosks and
    over about `seconds`. Never the same card twice in a row at one kiosk (the kiosk would
    suppress it as one presentation). About one tap in `stranger_every` is an unenrolled card."""
    rng = random.Random(seed)
    script = {k: [] for k in kiosk_ids}
    per = {k: 0 for k in kiosk_ids}
    for i in range(taps):
        per[kiosk_ids[i % len(kiosk_ids)]] += 1
    for k in kiosk_ids:
        n = per[k]
        gap = seconds / max(1, n)
        last = None
        for _j in range(n):
            if stranger_every and rng.random() < 1.0 / stranger_every:
                uid, who = "5A%06X" % rng.randrange(1 << 24), "stranger"
            else:
                uid, who = rng.choice(cards)
                while uid == last and len(cards) > 1:
                    uid, who = rng.choice(cards)
            last = uid
            script[k].append((round(gap * rng.uniform(0.2, 1.8), 3), uid, who))
    return script


# --- the audit ------------------------------------------------------------------------

def audit(engine, taps, journal_left=0):
    """taps: Fleet.taps (each with kiosk, uid and the final feedback event). journal_left:
    swipes still unsettled in the kiosks' journals after the drain. Returns a dict:

    taps            taps made (records)
    no_feedback     taps the kiosk showed nothing for (None event): must be 0
    shown           {kind: n} final feedback shown at the kiosks
    no_verdict      online taps that showed "no verdict" (bridge or broker away)
    booked          taps whose swipe has a transaction (approved + offline booked)
    approved        swipes the bridge approved and booked
    declined        {reason: n}: bridge declines by reason, kiosk-local ones as kiosk:REASON
    offline_booked  offline swipes booked at their own time (flagged included)
    flagged         offline swipes booked as flagged exceptions
    lost            taps with a seq whose swipe is not in the DB, plus journal_left
    phantom         swipes of the drill's kiosks in the DB that no tap made
    double_booked   (kiosk, seq) with more than one sale transaction, plus cards charged
                    more often than their taps were booked
    disagree        kiosk showed approved/declined but the DB says otherwise
    ledger_ok       bridge.ledger.check passed (problems in ledger_problems)
    """
    s, t = schema.swipes, schema.transactions
    kiosks = sorted({r["kiosk"] for r in taps})
    with engine.connect() as conn:
        rows = {(k, q): (v, why, txn) for k, q, v, why, txn in conn.execute(
            select(s.c.kiosk_id, s.c.seq, s.c.verdict, s.c.reason, s.c.txn_id)
            .where(s.c.kiosk_id.in_(kiosks)))} if kiosks else {}
        txns = {tid: (kind, offline, flagged, uid) for tid, kind, offline, flagged, uid in conn.execute(
            select(t.c.id, t.c.kind, t.c.offline, t.c.flagged, t.c.card_uid)
            .where(t.c.kind.in_(("swipe", "flagged"))))}
        doubled_keys = [(k, q, n) for k, q, n in conn.execute(
            select(t.c.kiosk_id, t.c.seq, func.count()).where(t.c.kind.in_(("swipe", "flagged")))
            .group_by(t.c.kiosk_id, t.c.seq).having(func.count() > 1))]
        charges = dict(conn.execute(
            select(t.c.card_uid, func.count()).where(t.c.kind.in_(("swipe", "flagged")),
                                                     t.c.kiosk_id.in_(kiosks))
            .group_by(t.c.card_uid)).all()) if kiosks else {}
    out = {"taps": len(taps), "no_feedback": 0, "shown": {}, "no_verdict": 0, "booked": 0,
           "approved": 0, "declined": {}, "offline_booked": 0, "flagged": 0, "lost": 0,
           "phantom": 0, "double_booked": 0, "disagree": 0, "journal_left": journal_left,
           "problems": []}
    seen = set()
    booked_per_card = {}
    for r in taps:
        ev = r["event"]
        if ev is None:
            out["no_feedback"] += 1
            out["problems"].append("%s %s: nothing shown" % (r["kiosk"], r["uid"]))
            continue
        kind = ev["kind"]
        out["shown"][kind] = out["shown"].get(kind, 0) + 1
        seq = ev.get("seq")
        if seq is None:  # decided on the kiosk, never journalled (or a reader fault)
            key = LOCAL_ONLY + (ev.get("reason") or kind)
            out["declined"][key] = out["declined"].get(key, 0) + 1
            continue
        if (r["kiosk"], seq) in seen:
            out["problems"].append("%s/%d: two taps shown with one seq" % (r["kiosk"], seq))
            out["double_booked"] += 1
            continue
        seen.add((r["kiosk"], seq))
        if kind == "no_verdict":
            out["no_verdict"] += 1
        row = rows.get((r["kiosk"], seq))
        if row is None:
            out["lost"] += 1
            out["problems"].append("%s/%d (%s, shown %s): not in the database" % (r["kiosk"], seq, r["uid"], kind))
            continue
        verdict, why, txn = row
        if txn is not None:
            out["booked"] += 1
            booked_per_card[r["uid"]] = booked_per_card.get(r["uid"], 0) + 1
            _kind, offline, flagged, card = txns.get(txn, (None, None, None, None))
            if card != r["uid"]:
                out["problems"].append("%s/%d: booked on card %s, tapped %s" % (r["kiosk"], seq, card, r["uid"]))
                out["disagree"] += 1
            if offline:
                out["offline_booked"] += 1
            if flagged:
                out["flagged"] += 1
            elif verdict == "approved":
                out["approved"] += 1
        else:
            out["declined"][why] = out["declined"].get(why, 0) + 1
        if kind in ("approved", "declined") and (kind != verdict or ev.get("reason") != why):
            out["disagree"] += 1
            out["problems"].append("%s/%d: kiosk showed %s/%s, booked %s/%s" % (
                r["kiosk"], seq, kind, ev.get("reason"), verdict, why))
        if kind == "offline" and txn is None:
            out["problems"].append("%s/%d: accepted offline but not booked (%s)" % (r["kiosk"], seq, why))
            out["disagree"] += 1
    for k, q in rows:
        if (k, q) not in seen:
            out["phantom"] += 1
            out["problems"].append("%s/%d: in the database but no tap made it" % (k, q))
    for k, q, n in doubled_keys:
        out["double_booked"] += 1
        out["problems"].append("%s/%d: %d sale transactions" % (k, q, n))
    for uid, n in charges.items():
        if n > booked_per_card.get(uid, 0):
            out["double_booked"] += 1
            out["problems"].append("card %s charged %d times, %d taps booked" % (uid, n, booked_per_card.get(uid, 0)))
    out["lost"] += journal_left
    if journal_left:
        out["problems"].append("%d swipes still unsettled in kiosk journals" % journal_left)
    check = ledger.check(engine)
    out["ledger_ok"] = check["ok"]
    out["ledger_problems"] = check["problems"]
    out["transactions"] = check["transactions"]
    return out


def clean(result, allow_no_verdict=True):
    """The drill's pass condition: nothing lost, doubled, phantom, contradicted or left
    without feedback; the ledger checks. Returns a list of failures (empty = pass)."""
    bad = ["%s=%s" % (k, result[k]) for k in ("no_feedback", "lost", "phantom", "double_booked", "disagree")
           if result[k]]
    if not result["ledger_ok"]:
        bad.append("ledger: %s" % "; ".join(result["ledger_problems"][:5]))
    if not allow_no_verdict and result["no_verdict"]:
        bad.append("no_verdict=%d on a healthy site" % result["no_verdict"])
    return bad + (result["problems"][:10] if bad else [])


def table(result, extra=()):
    """A printable table of the audit (extra: more (label, value) rows, e.g. wall time)."""
    rows = [("taps made", result["taps"]),
            ("booked (a transaction)", result["booked"]),
            ("  approved online or offline", result["approved"]),
            ("  offline, booked at their own time", result["offline_booked"]),
            ("  flagged for review", result["flagged"])]
    rows.append(("declined", sum(result["declined"].values())))
    for why in sorted(result["declined"]):
        rows.append(("  " + why, result["declined"][why]))
    for kind in sorted(result["shown"]):
        rows.append(("shown at kiosk: " + kind, result["shown"][kind]))
    rows += [("no verdict on screen (settled later)", result["no_verdict"]),
             ("nothing shown", result["no_feedback"]),
             ("LOST", result["lost"]),
             ("DOUBLE-BOOKED", result["double_booked"]),
             ("phantom swipes", result["phantom"]),
             ("kiosk/DB disagree", result["disagree"]),
             ("ledger check", "ok (%d transactions)" % result["transactions"] if result["ledger_ok"] else "FAILED")]
    rows += list(extra)
    width = max(len(str(a)) for a, _ in rows)
    return "\n".join("  %-*s  %s" % (width, a, b) for a, b in rows)


# --- running a drill ------------------------------------------------------------------

async def run_fleet(site, script, faults=(), data_root=None, resend_s=4, verdict_timeout_s=3,
                    drain_s=90, on_tap=None):
    """Start a fleet of the site's kiosks, run the script with the fault coroutines beside
    it (each called as fault(site, fleet)), drain, stop. Returns (fleet, journal_left).
    resend_s: a kiosk re-publishes a PUBACKed swipe still without a verdict after this long
    (30 s on a real site; shorter here so a broker crash is recovered within the drill)."""
    import asyncio
    import os

    from boards.sim.fleet import Fleet
    configs = [dict(site.kiosk_config(k), resend_ms=int(resend_s * 1000)) for k in script]
    fleet = Fleet(configs, "127.0.0.1", site.port, data_root or os.path.join(site.folder, "kiosks"),
                  verdict_timeout_s=verdict_timeout_s)
    await fleet.start()
    try:
        await asyncio.gather(fleet.run(script, on_tap), *(f(site, fleet) for f in faults))
        left = await fleet.drain(drain_s)
    finally:
        await fleet.stop()
    return fleet, left


def kill_bridge(times, rng, window_s, down_s=(0.3, 2.0), log=None):
    """A fault: kill -9 the bridge `times` times at random moments within window_s, each
    time restarting it after a random outage."""
    async def fault(site, fleet):
        import asyncio
        moments = sorted(rng.uniform(0.5, window_s) for _ in range(times))
        t = 0.0
        for at in moments:
            await asyncio.sleep(max(0.0, at - t))
            await asyncio.to_thread(site.stop_bridge, True)
            if log:
                log("kill -9 bridge at %.1f s (%d journalled at the kiosks)" % (at, fleet.depth()))
            down = rng.uniform(*down_s)
            await asyncio.sleep(down)
            await asyncio.to_thread(site.start_bridge)
            t = at + down
    return fault


def restart_broker(at_s, down_s=1.0, kill=False, log=None):
    """A fault: stop Mosquitto (SIGTERM, or kill -9) at at_s and start it again after down_s."""
    async def fault(site, fleet):
        import asyncio
        await asyncio.sleep(at_s)
        await asyncio.to_thread(site.stop_broker, kill)
        if log:
            log("%s broker at %.1f s" % ("kill -9" if kill else "stop", at_s))
        await asyncio.sleep(down_s)
        await asyncio.to_thread(site.start_broker)
    return fault


def power_cut(kiosk, at_s, torn_bytes, off_s=0.5, log=None, seen=None):
    """A fault: cut a kiosk's power torn_bytes into a journal write at at_s, boot it again.
    seen (a dict) gets the torn seq, the bytes the journal dropped at boot and the next seq."""
    async def fault(site, fleet):
        import asyncio
        await asyncio.sleep(at_s)
        vk = await fleet.power_cycle(kiosk, torn_bytes, off_s)
        torn_seq = vk.cut_seq
        if seen is not None:
            seen.update(kiosk=kiosk, torn_seq=torn_seq, dropped=vk.kiosk.journal.dropped,
                        next_seq=vk.kiosk.journal.next_seq())
        if log:
            log("power cut %s %d bytes into seq %d; rebooted, %d torn bytes dropped" % (
                kiosk, torn_bytes, torn_seq, vk.kiosk.journal.dropped))
    return fault
