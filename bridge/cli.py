# host-only. `aixin`: the operator's one command (DESIGN.md 5). Each subcommand is a thin
# shell over a library function in bridge/ that tests call directly.
import argparse
import json
import logging
import os
import signal
import sys
import threading

from bridge import db as dbmod
from bridge.db import BridgeError
from protocol import money

EPILOG = """examples:
  aixin init                                     create ./aixin.db with default rules
  aixin merchant add M1 "Dongxiao canteen"
  aixin kiosk add K1 --merchant M1 --service meal   prints the device key ONCE
  aixin resident add "Wang Fang" --born 1941-03-02 --flags disabled
  aixin card enroll ED0BA996 --resident R000001
  aixin topup R000001 50.00                      50 yuan (or --fen 5000)
  aixin card block ED0BA996 --note "lost at market"
  aixin serve --broker mqtt://127.0.0.1:1883
  aixin report daily --day 2026-11-23 --csv today.csv
  aixin ledger check

The database is --db PATH_OR_URL, else $AIXIN_DB, else ./aixin.db. A PostgreSQL URL
looks like postgresql+psycopg://user@host/dbname.
Money: 1 yuan = 100 fen; commands take yuan like 12.50 unless --fen is given."""


def _engine(args):
    return dbmod.connect(args.db)


def _fen(text):
    try:
        return money.parse_yuan(text)
    except ValueError as e:
        raise BridgeError(str(e))


def _print_json(obj):
    print(json.dumps(obj, indent=2, ensure_ascii=False))


# -- commands: each returns an exit code --
def cmd_init(args):
    from bridge import pricing, schema
    engine = _engine(args)
    with engine.connect() as conn:
        has_rules = pricing.current(conn) is not None
    if not has_rules:
        v = pricing.load(engine, args.rules or pricing.DEFAULT_RULES)
        print("rules version %d loaded from %s" % (v, args.rules or pricing.DEFAULT_RULES))
    print("database ready at %s (schema version %d)" % (dbmod.url_for(args.db), schema.LATEST))
    return 0


def cmd_merchant_add(args):
    from bridge import registry
    registry.add_merchant(_engine(args), args.id, args.name)
    print("merchant %s added" % args.id)
    return 0


def cmd_kiosk_add(args):
    from bridge import registry
    key = registry.add_kiosk(_engine(args), args.id, args.merchant, args.service)
    print("kiosk %s added at merchant %s for %s" % (args.id, args.merchant, args.service))
    print("device key (write it to the kiosk now; it is not shown again):")
    print(key.hex())
    return 0


def cmd_kiosk_list(args):
    from bridge import registry
    with _engine(args).connect() as conn:
        for k in registry.list_kiosks(conn):
            print("%(id)-16s merchant=%(merchant_id)s service=%(service)s key_gen=%(key_gen)s "
                  "seq_base=%(seq_base)s high_seq=%(high_seq)s enabled=%(enabled)s" % k)
    return 0


def cmd_kiosk_enable(args, enabled):
    from bridge import registry
    registry.set_kiosk_enabled(_engine(args), args.id, enabled)
    print("kiosk %s %s" % (args.id, "enabled" if enabled else "disabled"))
    return 0


def cmd_resident_add(args):
    from bridge import registry
    flags = args.flags.split(",") if args.flags else []
    rid = registry.add_resident(_engine(args), args.name, args.born, flags, args.id)
    print("resident %s added" % rid)
    return 0


def cmd_resident_import(args):
    from bridge import enrollment
    rows = enrollment.read(args.file)
    if args.check:
        print("%s: %d rows, all fine (nothing imported: --check)" % (args.file, len(rows)))
        return 0
    tty = sys.stderr.isatty()

    def progress(done, total):
        end = "\r" if tty and done < total else "\n"
        print("  enrolled %d of %d" % (done, total), end=end, file=sys.stderr, flush=True)

    n = enrollment.import_rows(_engine(args), rows, progress)
    print("imported %d residents with their cards from %s; kiosks get the new allow list within "
          "seconds from the running bridge" % (n, args.file))
    return 0


def cmd_card_enroll(args):
    from bridge import registry
    uid = registry.enroll_card(_engine(args), args.uid, args.resident)
    print("card %s enrolled to %s" % (uid, args.resident))
    return 0


def cmd_card_block(args, blocked):
    from bridge import registry
    v = registry.set_card_status(_engine(args), args.uid, blocked, args.note or "")
    print("card %s %s (lists version %d; kiosks are told within a few seconds by the running "
          "bridge)" % (registry.canonical_uid(args.uid), "blocked" if blocked else "unblocked", v))
    return 0


def cmd_topup(args):
    from bridge import ledger
    fen = int(args.amount) if args.fen else _fen(args.amount)
    txn = ledger.topup(_engine(args), args.resident, fen, memo=args.note or "")
    engine = _engine(args)
    with engine.connect() as conn:
        bal = ledger.balance(conn, ledger.wallet(args.resident))
    print("%s: topped up %s yuan; balance %s yuan" % (txn, money.yuan(fen), money.yuan(bal)))
    return 0


def cmd_rules_load(args):
    from bridge import pricing
    v = pricing.load(_engine(args), args.file)
    print("rules version %d in force (kiosk configs are republished by the running bridge)" % v)
    return 0


def cmd_rules_show(args):
    from bridge import pricing
    with _engine(args).connect() as conn:
        r = pricing.current(conn)
    if r is None:
        raise BridgeError("no rules loaded: run `aixin rules load FILE`")
    print("# version %d" % r.version)
    _print_json(r.body)
    return 0


def cmd_reverse(args):
    from bridge import ledger
    rid = ledger.reverse(_engine(args), args.txn, memo=args.note or "")
    print("%s reversed by %s" % (args.txn.upper(), rid))
    return 0


def cmd_history(args):
    from bridge import reports
    h = reports.history(_engine(args), args.card, args.limit)
    if args.json:
        _print_json(h)
        return 0
    print("card %s  resident %s  %s  balance %s yuan" % (h["card"], h["resident"], h["status"],
                                                      money.yuan(h["balance"])))
    for t in h["transactions"]:
        extra = []
        if t["offline"]:
            extra.append("offline")
        if t["flagged"]:
            extra.append("FLAGGED:" + t["reason"])
            if t.get("memo"):  # e.g. the kiosk's own time of a clock_skew tap
                extra.append("(%s)" % t["memo"])
        if t["reversed_by"]:
            extra.append("reversed by T%d" % t["reversed_by"])
        if t["reverses"]:
            extra.append("reverses T%d" % t["reverses"])
        print("%-7s %s %-8s %-10s %-14s wallet %8s  total %8s  %s" % (
            t["txn"], t["ts"], t["kind"], t["merchant_id"] or "", t["service"] or "",
            money.yuan(t["wallet"]), money.yuan(t["amount"]), " ".join(extra)))
    return 0


def cmd_report(args):
    from bridge import reports
    rows = reports.report(_engine(args), args.period, args.day)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            f.write(reports.to_csv(rows))
        print("%d rows written to %s" % (len(rows), args.csv))
        return 0
    print("%-10s %-24s %-14s %-22s %6s %12s" % ("period", "merchant", "service", "payer", "taps",
                                                "yuan"))
    for p, m, s, payer, taps, fen in rows:
        print("%-10s %-24s %-14s %-22s %6d %12s" % (p, m, s, payer, taps, money.yuan(fen)))
    if not rows:
        print("(no transactions%s)" % (" on " + args.day if args.day else ""))
    return 0


def cmd_ledger_check(args):
    from bridge import ledger
    r = ledger.check(_engine(args))
    if r["ok"]:
        print("ledger OK: %d transactions, %d accounts; every transaction sums to zero and "
              "every balance equals its entries" % (r["transactions"], r["accounts"]))
        return 0
    for p in r["problems"]:
        print("PROBLEM: " + p)
    print("ledger check FAILED (%d problems): stop the bridge and call the maintainer"
          % len(r["problems"]))
    return 2


def cmd_serve(args):
    from bridge.serve import Bridge, tune_gc
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    plain = logging.StreamHandler(sys.stdout)
    plain.setFormatter(logging.Formatter("%(message)s"))
    verdicts = logging.getLogger("aixin.verdicts")
    verdicts.addHandler(plain)
    verdicts.propagate = False
    engine = _engine(args)
    password = args.password or os.environ.get("AIXIN_BROKER_PASSWORD")
    bridge = Bridge(engine, args.broker, args.user, password, client_id=args.client_id,
                    share_group=args.share_group)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    bridge.start(timeout=args.connect_timeout)
    tune_gc()
    print("bridge serving; stop with Ctrl-C", flush=True)
    while not done.wait(1) and not bridge.failed:
        pass
    bridge.stop()
    if bridge.failed:
        raise BridgeError("the bridge stopped on an unexpected error (logged above, event="
                          "bridge_failed) after %d messages. Nothing booked is lost and the "
                          "broker will deliver unanswered swipes again: start `aixin serve` "
                          "again (a service manager does it with Restart=always), and report "
                          "the log lines." % bridge.settled)
    print("bridge stopped after %d messages" % bridge.settled, flush=True)
    return 0


def cmd_broker_config(args):
    from bridge import broker_files
    conf, n = broker_files.write_for_registry(_engine(args), args.dir, args.port, args.tls_port, args.bind)
    folder = os.path.abspath(args.dir)
    print("wrote %s: %d kiosk account(s), bridge account %r, ACL%s"
          % (conf, n, broker_files.BRIDGE_USER, ", TLS on port %d (site CA %s)"
             % (args.tls_port, os.path.join(folder, "ca.crt")) if args.tls_port else ""))
    print("start or reload Mosquitto with it:   mosquitto -c %s   (or: kill -HUP <its pid>)" % conf)
    print("run the bridge with its password:    AIXIN_BROKER_PASSWORD=$(cat %s) aixin serve --user %s "
          "--broker mqtt://127.0.0.1:%d" % (os.path.join(folder, broker_files.BRIDGE_PASSWORD_FILE),
                                            broker_files.BRIDGE_USER, args.port))
    return 0


def cmd_cockpit(args):
    from bridge import cockpit
    engine = _engine(args)
    states = None
    if args.broker:
        states = cockpit.KioskStates(args.broker, args.user, args.password or os.environ.get("AIXIN_BROKER_PASSWORD"))
    try:
        server = cockpit.serve(engine, args.port, args.host, states)
    except OSError as e:
        raise BridgeError("cannot listen on %s:%d (%s): is another program using it? try --port" %
                          (args.host, args.port, e.strerror))
    print("live operations page: http://%s:%d/   (Ctrl-C to stop)" % (args.host, server.server_address[1]), flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    try:
        while not done.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    server.shutdown()
    if states:
        states.stop()
    return 0


def build_parser():
    p = argparse.ArgumentParser(
        prog="aixin", description="Aixin elderly-care card: register kiosks and residents, "
        "top up wallets, run the settlement bridge, read the figures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--db", default=None, help="database file or URL (default $AIXIN_DB or "
                   "./aixin.db)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def add(parent, name, fn, help):
        sp = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    def group(name, help):
        g = sub.add_parser(name, help=help, description=help)
        gs = g.add_subparsers(dest="subcommand", metavar="ACTION")
        g.set_defaults(fn=lambda a: (g.print_help(), 1)[1])
        return gs

    sp = add(sub, "init", cmd_init, "create or upgrade the database; load default rules "
             "if none are loaded")
    sp.add_argument("--rules", help="rules file instead of the built-in defaults")

    g = group("merchant", "service providers (canteens, barbers, bath services...)")
    sp = add(g, "add", cmd_merchant_add, "register a merchant")
    sp.add_argument("id", help="merchant id: 1-32 of A-Z a-z 0-9 - _")
    sp.add_argument("name", nargs="?", default="", help="display name")

    g = group("kiosk", "card readers at merchants")
    sp = add(g, "add", cmd_kiosk_add, "register a kiosk; prints its device key once")
    sp.add_argument("id", help="kiosk id: 1-32 of A-Z a-z 0-9 - _")
    sp.add_argument("--merchant", required=True, help="merchant id the kiosk belongs to")
    sp.add_argument("--service", required=True, help="service it sells (e.g. meal, bath)")
    add(g, "list", cmd_kiosk_list, "list kiosks (never shows keys)")
    sp = add(g, "disable", lambda a: cmd_kiosk_enable(a, False), "refuse a kiosk's swipes")
    sp.add_argument("id")
    sp = add(g, "enable", lambda a: cmd_kiosk_enable(a, True), "accept a kiosk's swipes again")
    sp.add_argument("id")

    g = group("resident", "people who hold cards")
    sp = add(g, "import", cmd_resident_import, "enroll many residents and their cards from a CSV "
             "file with the columns name,born,flags,card,topup (flags separated by ; and topup in "
             "yuan are optional); all rows or none")
    sp.add_argument("file", help="CSV file, UTF-8; first line: name,born,flags,card,topup")
    sp.add_argument("--check", action="store_true", help="only check the file; import nothing")
    sp = add(g, "add", cmd_resident_add, "enroll a resident")
    sp.add_argument("name")
    sp.add_argument("--born", required=True, help="birth date YYYY-MM-DD (sets the age group)")
    sp.add_argument("--flags", default="", help="comma list of disabled, dementia, "
                    "preferential")
    sp.add_argument("--id", default=None, help="resident id (default: next R000001...)")

    g = group("card", "cards: enroll, block a lost one, unblock")
    sp = add(g, "enroll", cmd_card_enroll, "give a resident a card")
    sp.add_argument("uid", help="card UID in hex as the reader shows it, e.g. ED0BA996")
    sp.add_argument("--resident", required=True)
    for name, blocked, h in (("block", True, "block a lost or stolen card (kiosks refuse it)"),
                             ("unblock", False, "make a blocked card usable again")):
        sp = add(g, name, (lambda b: lambda a: cmd_card_block(a, b))(blocked), h)
        sp.add_argument("uid")
        sp.add_argument("--note", default="")

    sp = add(sub, "topup", cmd_topup, "add money to a resident's wallet (cash received)")
    sp.add_argument("resident")
    sp.add_argument("amount", help="yuan, e.g. 50 or 12.50")
    sp.add_argument("--fen", action="store_true", help="amount is in fen")
    sp.add_argument("--note", default="")

    g = group("rules", "prices and subsidy rules (TOML or JSON file)")
    sp = add(g, "load", cmd_rules_load, "put a rules file in force (see "
             "bridge/default_rules.toml for the format)")
    sp.add_argument("file")
    add(g, "show", cmd_rules_show, "print the rules in force")

    sp = add(sub, "reverse", cmd_reverse, "undo a transaction with opposite entries")
    sp.add_argument("txn", help="transaction id like T42 (see `aixin history CARD`)")
    sp.add_argument("--note", default="")

    sp = add(sub, "history", cmd_history, "a card's transactions and balance")
    sp.add_argument("card", help="card UID")
    sp.add_argument("--limit", type=int, default=50)
    sp.add_argument("--json", action="store_true")

    g = group("report", "figures per merchant, service and payer (resident or fund)")
    for period in ("daily", "monthly"):
        sp = add(g, period, cmd_report, "%s figures" % period)
        sp.set_defaults(period=period)
        sp.add_argument("--day", default=None, help="only this day YYYY-MM-DD (monthly: "
                        "YYYY-MM)")
        sp.add_argument("--csv", default=None, metavar="FILE", help="write CSV to FILE")

    g = group("ledger", "ledger integrity")
    add(g, "check", cmd_ledger_check, "prove every transaction sums to zero and every "
        "balance equals its entries")

    sp = add(sub, "broker-config", cmd_broker_config, "write Mosquitto's config, password file and "
             "ACL for every enabled kiosk (run again after adding, reflashing or disabling one)")
    sp.add_argument("dir", help="folder for mosquitto.conf, passwd, acl, bridge.password and TLS files")
    sp.add_argument("--port", type=int, default=1883, help="plain listener (default 1883)")
    sp.add_argument("--bind", default="127.0.0.1", help="address of the plain listener (default "
                    "127.0.0.1: only the bridge on this host; kiosks use TLS)")
    sp.add_argument("--tls-port", type=int, default=None, help="TLS listener for kiosks, e.g. 8883; "
                    "makes a site CA (ca.crt, for flash.sh --ca) the first time")

    sp = add(sub, "cockpit", cmd_cockpit, "the live operations page: today's services, what "
             "residents and funds paid, declines, kiosks online, latest taps (a web page)")
    sp.add_argument("--port", type=int, default=8080)
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sp.add_argument("--broker", default=None, help="mqtt://HOST:PORT to show kiosk states (optional)")
    sp.add_argument("--user", default=None)
    sp.add_argument("--password", default=None, help="or set AIXIN_BROKER_PASSWORD")

    sp = add(sub, "serve", cmd_serve, "run the settlement bridge (until Ctrl-C or SIGTERM)")
    sp.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="mqtt://HOST:PORT")
    sp.add_argument("--user", default=None)
    sp.add_argument("--password", default=None, help="or set AIXIN_BROKER_PASSWORD")
    sp.add_argument("--client-id", default="aixin-bridge", help="MQTT client id; keep it "
                    "stable so the broker keeps this bridge's session across restarts")
    sp.add_argument("--share-group", default=None, help="join $share/GROUP/... to split "
                    "swipes between several bridges (use PostgreSQL then)")
    sp.add_argument("--connect-timeout", type=float, default=15)
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 1
    try:
        return args.fn(args)
    except BridgeError as e:
        print("error: %s" % e, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and so on: not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as e:  # an operator should never see a traceback
        print("error: %s: %s\n(unexpected; run with AIXIN_DEBUG=1 for details and report it)"
              % (type(e).__name__, str(e).splitlines()[0] if str(e) else ""), file=sys.stderr)
        if os.environ.get("AIXIN_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
