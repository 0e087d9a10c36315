# host-only. Opening the database: a file path means SQLite (WAL, synchronous=FULL so a
# commit is on disk before a swipe is acknowledged); a URL (postgresql+psycopg://...)
# means that engine. Everything else goes through SQLAlchemy Core.
import os

from sqlalchemy import bindparam, create_engine, event, select, update

from bridge import schema

DEFAULT_DB = "./aixin.db"


class BridgeError(Exception):
    """An operator-facing error: what happened and what to do. The CLI prints it, no
    traceback, and exits non-zero."""


def url_for(path_or_url):
    if path_or_url is None:
        path_or_url = os.environ.get("AIXIN_DB") or DEFAULT_DB
    if "://" in path_or_url:
        return path_or_url
    return "sqlite:///" + os.path.abspath(path_or_url)


def _sqlite_setup(engine):
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: the write lock is taken at
        # the start, so two writers queue on busy_timeout instead of failing mid-way.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        # Straight to the driver: through exec_driver_sql this one statement cost as much
        # as a query (~5% of a one-swipe batch).
        conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")


class InQuery:
    """A statement with IN lists, built once per list length and reused (Core, so the
    same for SQLite and PostgreSQL). An expanding bindparam re-renders the SQL on every
    execution (~45 us of a ~100 us query); this renders `IN (:kids_0, :kids_1, ...)` once
    per length. Lengths are padded to a power of two by repeating the last value (IN does
    not care), so a handful of statements cover every batch.
    build(**{name: [bindparam, ...]}) -> statement; columns: name -> the column compared
    (for the parameter type)."""

    def __init__(self, build, **columns):
        self._build = build
        self._columns = columns
        self._stmts = {}

    def __call__(self, **lists):
        """-> (statement, params) for conn.execute(*...). Each list non-empty, in the
        order wanted (sort it for lock order)."""
        sizes, params = [], {}
        for name, values in lists.items():
            values = list(values)
            n = 1
            while n < len(values):
                n *= 2
            values += values[-1:] * (n - len(values))
            sizes.append(n)
            for i, v in enumerate(values):
                params["%s_%d" % (name, i)] = v
        key = tuple(sizes)
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = self._build(**{
                name: [bindparam("%s_%d" % (name, i), type_=self._columns[name].type)
                       for i in range(n)] for name, n in zip(lists, sizes)})
        return stmt, params


def connect(path_or_url=None, migrate=True):
    """An Engine for the database, migrated to the latest schema unless migrate=False."""
    url = url_for(path_or_url)
    if url.startswith("sqlite"):
        path = url[len("sqlite:///"):]
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            raise BridgeError("folder %s does not exist: create it or choose another --db"
                              % folder)
        engine = create_engine(url)
        _sqlite_setup(engine)
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except Exception as e:  # bad URL or missing driver
            raise BridgeError("cannot use database %s: %s" % (_safe(url), e))
    if migrate:
        try:
            schema.migrate(engine)
        except Exception as e:
            if isinstance(e, BridgeError):
                raise
            raise BridgeError("cannot open database %s: %s\n(check the path or URL given by "
                              "--db or AIXIN_DB, that the database server runs, and the "
                              "user's rights)" % (_safe(url), str(e).splitlines()[0]))
    return engine


def _safe(url):
    """URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" not in cred:
            return url
        return "%s://%s:***@%s" % (scheme, cred.split(":", 1)[0], host)
    return url


def bump(conn, name):
    """Increment a counter in meta and return the new value."""
    conn.execute(update(schema.meta).where(schema.meta.c.name == name)
                 .values(value=schema.meta.c.value + 1))
    return counter(conn, name)


def counter(conn, name):
    return conn.execute(select(schema.meta.c.value).where(schema.meta.c.name == name)).scalar()
