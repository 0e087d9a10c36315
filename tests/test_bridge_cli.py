# host-only. The operator CLI: each subcommand end to end on a real SQLite file, errors
# that say what to do (no traceback, non-zero exit), and CSV reports.
import csv
import subprocess
import sys

import pytest

from bridge import cli, db, ledger, settle
from protocol import messages, utctime
from tests.brokers import REPO, bridge_env

pytestmark = pytest.mark.timeout(60)


def run(capsys, dbpath, *argv):
    code = cli.main(["--db", str(dbpath)] + list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_operator_session(tmp_path, capsys):
    d = tmp_path / "site.db"
    assert run(capsys, d, "init")[0] == 0
    assert run(capsys, d, "merchant", "add", "M1", "Dongxiao canteen")[0] == 0
    code, out, _ = run(capsys, d, "kiosk", "add", "K1", "--merchant", "M1", "--service", "meal")
    assert code == 0
    key = bytes.fromhex(out.strip().splitlines()[-1])
    assert len(key) == 32
    code, out, _ = run(capsys, d, "kiosk", "list")
    assert "K1" in out and key.hex() not in out
    assert run(capsys, d, "resident", "add", "Wang Fang", "--born", "1941-03-02",
               "--flags", "disabled")[1].strip() == "resident R000001 added"
    assert run(capsys, d, "card", "enroll", "ed:0b:a9:96", "--resident", "R000001")[0] == 0
    code, out, _ = run(capsys, d, "topup", "R000001", "50.5")
    assert code == 0 and "balance 50.50 yuan" in out

    # a swipe settled through the library, as the bridge would
    engine = db.connect(str(d))
    msg = messages.swipe("K1", 1, utctime.iso(1763900000), "ED0BA996", "uid", "meal", False, key)
    import json
    with engine.begin() as conn:
        out_ = settle.settle(conn, "aixin/v1/kiosks/K1/swipes", json.dumps(msg).encode())
    res = json.loads(out_.result)
    assert res["reason"] == "ok" and res["resident_pays"] == 200  # disabled: 8.00 subsidised

    code, out, _ = run(capsys, d, "history", "ED0BA996")
    assert code == 0 and res["txn"] in out and "balance 48.50 yuan" in out
    code, out, _ = run(capsys, d, "report", "daily")
    assert "fund:civil_affairs" in out and "resident" in out
    csv_path = tmp_path / "m.csv"
    assert run(capsys, d, "report", "monthly", "--csv", str(csv_path))[0] == 0
    rows = list(csv.DictReader(open(csv_path)))
    assert {r["payer"] for r in rows} == {"resident", "fund:civil_affairs", "fund:village"}
    assert sum(int(r["fen"]) for r in rows) == 1000
    code, out, _ = run(capsys, d, "reverse", res["txn"])
    assert code == 0
    code, _, err = run(capsys, d, "reverse", res["txn"])
    assert code == 1 and "already reversed" in err
    code, out, _ = run(capsys, d, "history", "ED0BA996")
    assert "balance 50.50 yuan" in out
    assert run(capsys, d, "card", "block", "ED0BA996", "--note", "lost")[0] == 0
    assert run(capsys, d, "card", "unblock", "ED0BA996")[0] == 0
    code, out, _ = run(capsys, d, "ledger", "check")
    assert code == 0 and "ledger OK" in out
    assert ledger.check(engine)["ok"]


def test_rules_load_and_bad_rules(tmp_path, capsys):
    d = tmp_path / "site.db"
    run(capsys, d, "init")
    good = tmp_path / "r.toml"
    good.write_text('timezone = "Asia/Shanghai"\n[funds]\ncity = "City"\n'
                    '[[groups]]\nname = "all"\nmin_age = 60\n'
                    '[services.meal]\nprice = 800\nper_day = 1\n'
                    '[services.meal.split]\nall = { city = "50%" }\n')
    code, out, _ = run(capsys, d, "rules", "load", str(good))
    assert code == 0 and "version 2" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('city = "50%"', 'nofund = 100'))
    code, _, err = run(capsys, d, "rules", "load", str(bad))
    assert code == 1 and "services.meal.split.all.nofund" in err and "no such fund" in err
    code, _, err = run(capsys, d, "rules", "load", str(tmp_path / "missing.toml"))
    assert code == 1 and "cannot read rules file" in err


@pytest.mark.parametrize("argv,needle", [
    (["topup", "R404", "5"], "add them first"),
    (["kiosk", "add", "K1", "--merchant", "NOPE", "--service", "meal"], "merchant add"),
    (["card", "enroll", "XYZ", "--resident", "R1"], "hex digits"),
    (["resident", "add", "A", "--born", "1.2.1950"], "YYYY-MM-DD"),
    (["topup", "R1", "1.234"], "at most 2 decimals"),
    (["reverse", "T999"], "no transaction"),
    (["merchant", "add", "bad/id"], "A-Z a-z 0-9"),
])
def test_errors_say_what_to_do(tmp_path, capsys, argv, needle):
    d = tmp_path / "site.db"
    run(capsys, d, "init")
    code, out, err = run(capsys, d, *argv)
    assert code == 1 and needle in err and "Traceback" not in err + out


def test_console_command_has_help_and_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bridge", "--help"], cwd=REPO, env=bridge_env(),
                       capture_output=True, text=True)
    assert p.returncode == 0 and "aixin init" in p.stdout and "ledger check" in p.stdout
    p = subprocess.run([sys.executable, "-m", "bridge", "--db", str(tmp_path / "x.db"), "serve",
                        "--broker", "mqtt://127.0.0.1:1", "--connect-timeout", "2"],
                       cwd=REPO, env=bridge_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot reach the broker" in p.stderr
    assert "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "bridge", "--db", "/nonexistent/dir/x.db", "init"],
                       cwd=REPO, env=bridge_env(), capture_output=True, text=True)
    assert p.returncode == 1 and "does not exist" in p.stderr and "Traceback" not in p.stderr
