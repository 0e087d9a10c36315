# host-only. The live operations page ("cockpit", DESIGN.md 5; DOMAIN.md): what the
# district office watches during the day. Today's services (per merchant and service, in
# the site's local day), what residents and each fund paid, declines by reason, offline
# exceptions to review, the latest taps, and every kiosk's state (online, journal depth:
# a kiosk whose journal grows is cut off or unanswered).
#
#   aixin cockpit --port 8080 [--broker mqtt://127.0.0.1:1883 --user bridge]
#
# Plain standard-library HTTP: GET / is the page (it refreshes itself every 2 s from
# GET /api/today, which is JSON for anyone else's dashboard). Kiosk states come from the
# retained state topics, read with the bridge's broker account.
import datetime
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import and_, func, select

from bridge import ledger, localtime, registry, schema
from protocol import money, reasons, topics


def _today_bounds(conn, now):
    tz = ledger.site_tz(conn)
    local = localtime.local(now, tz)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + datetime.timedelta(days=1)
    return local.strftime("%Y-%m-%d"), int(start.timestamp()), int(end.timestamp()), tz


def snapshot(engine, kiosk_states=None, now=None, recent=15):
    """Everything the page shows, as a JSON-ready dict."""
    now = time.time() if now is None else now
    t, e, a, s = schema.transactions, schema.entries, schema.accounts, schema.swipes
    sold = t.c.kind.in_(("swipe", "flagged"))
    with engine.connect() as conn:
        day, start, end, tz = _today_bounds(conn, now)
        today = and_(sold, t.c.local_day == day)
        by_merchant = [dict(merchant=m, service=sv, orders=n, fen=fen) for m, sv, n, fen in conn.execute(
            select(t.c.merchant_id, t.c.service, func.count(), func.sum(t.c.amount)).where(today)
            .group_by(t.c.merchant_id, t.c.service).order_by(func.count().desc()))]
        payers = {}
        for code, fen in conn.execute(
                select(a.c.code, func.sum(-e.c.amount)).join(e, e.c.account_id == a.c.id)
                .join(t, t.c.id == e.c.txn_id).where(today, a.c.kind.in_(("wallet", "fund", "suspense")))
                .group_by(a.c.code)):
            payer = "residents" if code.startswith("wallet:") else code
            payers[payer] = payers.get(payer, 0) + int(fen)
        declines = {r: n for r, n in conn.execute(
            select(s.c.reason, func.count()).where(s.c.verdict == "declined", s.c.decided_at >= start,
                                                    s.c.decided_at < end).group_by(s.c.reason))}
        flagged = conn.execute(select(func.count()).select_from(t).where(today, t.c.flagged)).scalar()
        r = schema.residents
        latest = []
        for row in conn.execute(select(t.c.id, t.c.ts, t.c.merchant_id, t.c.service, r.c.name,
                                       t.c.amount, t.c.offline, t.c.flagged, t.c.reason)
                                .outerjoin(r, r.c.id == t.c.resident_id)
                                .where(sold).order_by(t.c.id.desc()).limit(recent)).mappings():
            latest.append(dict(time=localtime.local(row["ts"], tz).strftime("%H:%M:%S"), merchant=row["merchant_id"],
                               service=row["service"], resident=row["name"],
                               yuan=money.yuan(row["amount"]), offline=bool(row["offline"]),
                               flagged=bool(row["flagged"]), reason=row["reason"]))
        kiosks = []
        for k in registry.list_kiosks(conn):
            st = (kiosk_states or {}).get(k["id"], {})
            kiosks.append(dict(kiosk=k["id"], merchant=k["merchant_id"], service=k["service"],
                               enabled=bool(k["enabled"]), status=st.get("status", "unknown"),
                               journal=st.get("journal"), fw=st.get("fw"), seen=st.get("_seen")))
    orders = sum(m["orders"] for m in by_merchant)
    return {"day": day, "at": localtime.local(now, tz).strftime("%H:%M:%S"), "orders": orders,
            "fen_total": sum(m["fen"] for m in by_merchant), "by_merchant": by_merchant, "payers": payers,
            "declines": [dict(reason=r, text=reasons.display(r), count=n) for r, n in sorted(declines.items())],
            "flagged": flagged, "latest": latest, "kiosks": kiosks}


class KioskStates:
    """Follows aixin/v1/kiosks/+/state (retained, with the offline will) over MQTT."""

    def __init__(self, broker, user=None, password=None):
        import paho.mqtt.client as mqtt

        from bridge.serve import parse_broker
        self.states = {}
        host, port = parse_broker(broker)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="aixin-cockpit-%d" % time.time_ns())
        if user:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, ud, fl, rc, pr: c.subscribe(topics.ALL_STATES, qos=1)
        self.client.on_message = self._on_message
        self.client.connect_async(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg):
        where = topics.parse(msg.topic)
        try:
            state = json.loads(msg.payload)
        except ValueError:
            return
        if where and isinstance(state, dict):
            state["_seen"] = time.strftime("%H:%M:%S")
            self.states[where[1]] = state

    def stop(self):
        self.client.loop_stop()
        self.client.disconnect()


PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cockpit.html")


def serve(engine, port=8080, host="127.0.0.1", states=None):
    """Start the page in a thread; returns the HTTPServer (shutdown() to stop)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.split("?")[0] == "/api/today":
                body = json.dumps(snapshot(engine, states.states if states else None)).encode()
                kind = "application/json"
            elif self.path.split("?")[0] in ("/", "/index.html"):
                with open(PAGE, "rb") as f:
                    body, kind = f.read(), "text/html; charset=utf-8"
            else:
                self.send_error(404, "no such page: try /")
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet: one line per request would drown the bridge log
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
