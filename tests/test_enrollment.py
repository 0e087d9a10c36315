"""`aixin resident import`: many residents and cards from a CSV file, all or nothing."""
import os

from sqlalchemy import func, select

from bridge import cli, db, ledger, schema


def _count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _write(tmp_path, text):
    path = tmp_path / "people.csv"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_import_enrolls_residents_cards_and_balances(tmp_path, capsys):
    dbfile = str(tmp_path / "site.db")
    assert cli.main(["--db", dbfile, "init"]) == 0
    rows = ["name,born,flags,card,topup"]
    for i in range(2500):
        rows.append("Resident %d,19%02d-0%d-1%d,%s,%08X,%s" % (i, 30 + i % 30, 1 + i % 9, i % 9,
                                                            "disabled;preferential" if i % 7 == 0 else "",
                                                            0x10000000 + i, "12.50" if i % 2 else ""))
    path = _write(tmp_path, "\ufeff" + "\n".join(rows) + "\n")  # with the BOM Excel writes
    assert cli.main(["--db", dbfile, "resident", "import", path]) == 0
    out = capsys.readouterr()
    assert "imported 2500 residents" in out.out and "enrolled 2500 of 2500" in out.err
    engine = db.connect(dbfile)
    assert _count(engine, schema.residents) == 2500 and _count(engine, schema.cards) == 2500
    with engine.connect() as conn:
        assert ledger.balance(conn, ledger.wallet("R000002")) == 1250
        assert ledger.balance(conn, ledger.wallet("R000001")) == 0
        flags = conn.execute(select(schema.residents.c.flags).where(schema.residents.c.id == "R000001")).scalar()
    assert flags == "disabled,preferential"
    assert ledger.check(engine)["ok"]
    # importing the same file again changes nothing: every card is already enrolled
    assert cli.main(["--db", dbfile, "resident", "import", path]) == 1
    assert "2500 card(s) are already enrolled" in capsys.readouterr().err
    assert _count(engine, schema.residents) == 2500


def test_a_bad_file_imports_nothing_and_says_where(tmp_path, capsys):
    dbfile = str(tmp_path / "site.db")
    assert cli.main(["--db", dbfile, "init"]) == 0
    path = _write(tmp_path, "name,born,flags,card,topup\n"
                            "Wang,1936-05-02,,ED0BA996,50\n"
                            "Li,02/03/1940,,0A0B0C0D,\n"
                            "Zhao,1941-01-01,blind,0A0B0C0E,\n"
                            "Chen,1941-01-01,,ED0BA996,\n"
                            "Zhou,1941-01-01,,XYZ,\n"
                            "Wu,1941-01-01,,0A0B0C0F,12.345\n")
    assert cli.main(["--db", dbfile, "resident", "import", path]) == 1
    err = capsys.readouterr().err
    assert "5 problem(s); nothing was imported" in err
    for text in ("line 3: born '02/03/1940'", "line 4: flag 'blind'", "line 5: card ED0BA996 is also on line 2",
                 "line 6: card UID 'XYZ'", "line 7: amount '12.345'"):
        assert text in err, text
    assert "Traceback" not in err
    assert _count(db.connect(dbfile), schema.residents) == 0


def test_missing_columns_and_check_mode(tmp_path, capsys):
    dbfile = str(tmp_path / "site.db")
    assert cli.main(["--db", dbfile, "init"]) == 0
    assert cli.main(["--db", dbfile, "resident", "import", _write(tmp_path, "who,card\nWang,ED0BA996\n")]) == 1
    assert "missing name, born" in capsys.readouterr().err
    ok = _write(tmp_path, "name,born,card\nWang,1936-05-02,ed:0b:a9:96\n")
    assert cli.main(["--db", dbfile, "resident", "import", ok, "--check"]) == 0
    assert _count(db.connect(dbfile), schema.residents) == 0
    assert cli.main(["--db", dbfile, "resident", "import", os.path.join(str(tmp_path), "nope.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err
