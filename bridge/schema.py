# host-only. The bridge's tables, in SQLAlchemy Core so one schema serves SQLite and
# PostgreSQL (DESIGN.md 5). Versioned by a small migrations table (schema_version) and
# the ordered MIGRATIONS list below: each step runs once, in its own transaction.
import time

from sqlalchemy import (BigInteger, Boolean, Column, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, PrimaryKeyConstraint, String, Table, Text,
                        select)

metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
)

# Named counters: lists_version (deny/allow lists), registry_version (kiosks/merchants).
meta = Table(
    "meta", metadata,
    Column("name", String(40), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

merchants = Table(
    "merchants", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# key_hex is the device key (secret): never logged, never published. seq_base: seqs below
# it belong to an older key generation (stale). high_seq: highest seq ever accepted.
kiosks = Table(
    "kiosks", metadata,
    Column("id", String(32), primary_key=True),
    Column("merchant_id", String(32), ForeignKey("merchants.id"), nullable=False),
    Column("service", String(32), nullable=False),
    Column("key_hex", String(64), nullable=False),
    Column("key_gen", Integer, nullable=False),
    Column("seq_base", BigInteger, nullable=False),
    Column("high_seq", BigInteger, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# flags: comma-separated subset of disabled, dementia, preferential.
residents = Table(
    "residents", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", Text, nullable=False),
    Column("birth_date", String(10), nullable=False),
    Column("flags", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

cards = Table(
    "cards", metadata,
    Column("uid", String(20), primary_key=True),
    Column("resident_id", String(32), ForeignKey("residents.id"), nullable=False),
    Column("status", String(10), nullable=False),  # active | blocked
    Column("enrolled_at", BigInteger, nullable=False),
    Column("changed_at", BigInteger, nullable=False),
    Column("note", Text, nullable=False),
)

# code: wallet:<resident>, fund:<name>, merchant:<id>, cash (top-up source), suspense
# (offline swipes flagged for review). floor: lowest allowed balance (wallets 0), or NULL.
accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(80), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),
    Column("balance", BigInteger, nullable=False),
    Column("floor", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

# kind: swipe | flagged | topup | reversal. ts: when the service happened (an offline
# swipe's own time), local_day/local_month in the site's time zone; booked_at: commit time.
transactions = Table(
    "transactions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(10), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("local_day", String(10), nullable=False),
    Column("local_month", String(7), nullable=False),
    Column("booked_at", BigInteger, nullable=False),
    Column("kiosk_id", String(32), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("card_uid", String(20), nullable=True),
    Column("resident_id", String(32), nullable=True),
    Column("merchant_id", String(32), nullable=True),
    Column("service", String(32), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("offline", Boolean, nullable=False),
    Column("flagged", Boolean, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("reverses", Integer, ForeignKey("transactions.id"), nullable=True),
    Column("reversed_by", Integer, nullable=True),
    Column("memo", Text, nullable=False),
)
Index("ix_txn_caps", transactions.c.resident_id, transactions.c.service,
      transactions.c.local_day)
Index("ix_txn_card", transactions.c.card_uid)

entries = Table(
    "entries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("txn_id", Integer, ForeignKey("transactions.id"), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),  # signed fen; a txn's entries sum to 0
)
Index("ix_entries_txn", entries.c.txn_id)
Index("ix_entries_account", entries.c.account_id)

# The idempotency table (DESIGN.md 2): one row per decided (kiosk, seq), holding the exact
# result (and settlement record) published for it, so a redelivery gets the same bytes.
swipes = Table(
    "swipes", metadata,
    Column("kiosk_id", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("mac", String(64), nullable=False),
    Column("verdict", String(10), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("txn_id", Integer, nullable=True),
    Column("result", LargeBinary, nullable=False),
    Column("settlement", LargeBinary, nullable=True),
    Column("decided_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("kiosk_id", "seq"),
)

# Messages refused before any verdict could be signed (bad MAC, unknown kiosk, malformed):
# kept for operators; nothing is booked for them.
refusals = Table(
    "refusals", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("kiosk_id", String(32), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("reason", String(32), nullable=False),
    Column("field", String(32), nullable=True),
)

# Pricing and subsidy rules as loaded (JSON text of the parsed file); the highest version
# is in force.
rules = Table(
    "rules", metadata,
    Column("version", Integer, primary_key=True),
    Column("loaded_at", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("body", Text, nullable=False),
)


def _v1(conn):
    # The tables of version 1, named: a later step adds its own tables explicitly, so this
    # step never creates them early.
    metadata.create_all(conn, tables=[
        schema_version, meta, merchants, kiosks, residents, cards, accounts, transactions,
        entries, swipes, refusals, rules])
    conn.execute(meta.insert(), [{"name": "lists_version", "value": 1},
                                 {"name": "registry_version", "value": 1}])


# Site secrets: the site master key from which the MIFARE card secret is derived
# (bridge/card_keys.py). Never printed, logged or published.
site_secrets = Table(
    "site_secrets", metadata,
    Column("name", String(40), primary_key=True),
    Column("value_hex", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)


def _v2(conn):
    metadata.create_all(conn, tables=[site_secrets])


def _v3(conn):
    # Databases made before version 3 also had ix_txn_month (resident, service, month):
    # monthly caps now count over a day range on ix_txn_caps, and each booking saves
    # writing one index page (about 8% of the bridge's time in a burst).
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_txn_month")


# (version, note, step). Append only; never edit a step that has shipped.
MIGRATIONS = [
    (1, "ledger, registry, idempotency, rules", _v1),
    (2, "site secrets (MIFARE card credential master key)", _v2),
    (3, "monthly caps counted on ix_txn_caps; ix_txn_month dropped", _v3),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn):
    if not conn.dialect.has_table(conn, "schema_version"):
        return 0
    v = conn.execute(select(schema_version.c.version).order_by(
        schema_version.c.version.desc()).limit(1)).scalar()
    return v or 0


def migrate(engine):
    """Bring the database to LATEST. Returns the list of versions applied."""
    applied = []
    for version, note, step in MIGRATIONS:
        with engine.begin() as conn:
            if current_version(conn) >= version:
                continue
            step(conn)
            conn.execute(schema_version.insert().values(
                version=version, applied_at=int(time.time()), note=note))
            applied.append(version)
    return applied
