# host-only. Opening the database: a file path means SQLite (WAL, synchronous=FULL so a
# commit is on disk before a swipe is acknowledged); a URL (postgresql+psycopg://...)
# means that engine. Everything else goes through SQLAlchemy Core.
import os
import threading

from sqlalchemy import bindparam, create_engine, event, exc, insert, select, update

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


class Prepared:
    """A Core statement compiled once per dialect and run straight on the DB-API cursor.

    Written here on purpose, in place of conn.execute on the bridge's hot path: SQLAlchemy
    still renders the SQL for each engine (SQLite, PostgreSQL), but its per-execution
    machinery (compiled cache lookup, parameter construction, result wrapping, events) cost
    50-85 us a statement against 4-15 us for SQLite itself, about half of a one-swipe
    batch. Only for plain binds (no expanding or literal ones: see InQuery); rows come back
    as the driver's tuples. Driver errors are re-raised as SQLAlchemy's DBAPIError family,
    as conn.execute would."""

    def __init__(self, stmt):
        self.stmt = stmt
        self._compiled = {}  # (dialect, column keys) -> (sql, names or None, processors, fixed)

    def _compile(self, conn, keys=None):
        dialect = conn.dialect
        ck = (dialect, keys)
        c = self._compiled.get(ck)
        if c is None:
            comp = self.stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
            if any(bp.expanding for bp in comp.binds.values()):
                raise TypeError("Prepared: IN with a list: use InQuery, or == ... or ...")
            names = list(comp.positiontup) if comp.positional else None
            procs = comp._bind_processors  # e.g. Boolean -> int where not native
            # Literals in the statement (kind == "swipe") are binds with a fixed value.
            fixed = {n: bp.value for n, bp in comp.binds.items()
                     if not bp.required and bp.value is not None}
            if names is not None:  # positional: the processors by position
                procs = [(i, procs[n]) for i, n in enumerate(names) if n in procs]
            c = self._compiled[ck] = (comp.string, names, procs, fixed)
        return c

    @staticmethod
    def _bind(names, procs, fixed, params):
        if names is None:  # named paramstyle (PostgreSQL): a dict
            if fixed:
                params = dict(fixed, **params)
            if procs:
                params = {k: (procs[k](v) if k in procs and v is not None else v)
                          for k, v in params.items()}
            return params
        if fixed:
            args = [params[n] if n in params else fixed[n] for n in names]
        else:
            args = [params[n] for n in names]
        for i, proc in procs:
            if args[i] is not None:
                args[i] = proc(args[i])
        return args

    def _run(self, conn, sql, args, many=False):
        cur = conn.connection.dbapi_connection.cursor()
        try:
            if many:
                cur.executemany(sql, args)
            else:
                cur.execute(sql, args)
        except conn.dialect.loaded_dbapi.Error as e:
            cur.close()
            raise exc.DBAPIError.instance(sql, args, e, conn.dialect.loaded_dbapi.Error,
                                          dialect=conn.dialect) from e
        return cur

    def rows(self, conn, params=None):
        """All rows of a query (or of INSERT ... RETURNING), as tuples."""
        sql, names, procs, fixed = self._compile(conn)
        cur = self._run(conn, sql, self._bind(names, procs, fixed, params or {}))
        rows = cur.fetchall() if cur.description else []
        cur.close()
        return rows

    def first(self, conn, params=None):
        rows = self.rows(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn, params=None):
        row = self.first(conn, params)
        return row[0] if row else None

    def many(self, conn, param_list):
        """executemany: one statement, many parameter sets (all with the same keys)."""
        if not param_list:
            return
        keys = tuple(sorted(param_list[0]))
        sql, names, procs, fixed = self._compile(conn, keys)
        self._run(conn, sql, [self._bind(names, procs, fixed, p) for p in param_list],
                  many=True).close()


class InQuery:
    """A statement with IN lists, built once per list length and reused (Core, so the
    same for SQLite and PostgreSQL). An expanding bindparam re-renders the SQL on every
    execution; this renders `IN (:kids_0, :kids_1, ...)` once per length. Lengths are
    padded to a power of two by repeating the last value (IN does not care), so a handful
    of statements cover every batch.
    build(**{name: [bindparam, ...]}) -> statement; columns: name -> the column compared
    (for the parameter type). Calling it gives (Prepared, params)."""

    def __init__(self, build, **columns):
        self._build = build
        self._columns = columns
        self._stmts = {}

    def __call__(self, **lists):
        """-> (Prepared, params). Each list non-empty, in the order wanted (sort it for
        lock order); other keyword values are passed through as plain parameters."""
        sizes, params = [], {}
        for name, values in lists.items():
            if name not in self._columns:
                params[name] = values
                continue
            values = list(values)
            n = 1
            while n < len(values):
                n *= 2
            values += values[-1:] * (n - len(values))
            sizes.append((name, n))
            for i, v in enumerate(values):
                params["%s_%d" % (name, i)] = v
        key = tuple(sizes)
        stmt = self._stmts.get(key)
        if stmt is None:
            stmt = self._stmts[key] = Prepared(self._build(**{
                name: [bindparam("%s_%d" % (name, i), type_=self._columns[name].type)
                       for i in range(n)] for name, n in sizes}))
        return stmt, params

    def rows(self, conn, **lists):
        stmt, params = self(**lists)
        return stmt.rows(conn, params)


class InsertReturning:
    """A multi-row INSERT ... RETURNING, one statement per power-of-two chunk of rows
    (a batch of 37 rows is 3 statements: 32 + 4 + 1), each compiled once. SQLAlchemy's own
    insertmanyvalues does the same through the slow path. Rows must share their keys."""

    def __init__(self, table, *returning):
        self.table = table
        self.returning = returning
        self._stmts = {}

    def rows(self, conn, rows):
        out = []
        i = 0
        while i < len(rows):
            n = 1
            while n * 2 <= len(rows) - i:
                n *= 2
            chunk = rows[i:i + n]
            keys = tuple(sorted(chunk[0]))
            stmt = self._stmts.get((keys, n))
            if stmt is None:
                cols = self.table.c
                stmt = self._stmts[(keys, n)] = Prepared(
                    insert(self.table).values([
                        {k: bindparam("%s_%d" % (k, j), type_=cols[k].type) for k in keys}
                        for j in range(n)]).returning(*self.returning))
            params = {}
            for j, row in enumerate(chunk):
                for k in keys:
                    params["%s_%d" % (k, j)] = row[k]
            out.extend(stmt.rows(conn, params))
            i += n
        return out


class Checkpointer:
    """SQLite only: copies the WAL back into the database file on a thread of its own.

    SQLite's default is to do that inside a commit once the WAL holds 1000 pages: at 500
    one-swipe commits a second (about 13 pages each) that was a checkpoint every 150 ms,
    each with an fdatasync of the database file of 5-12 ms, all on the bridge's one
    thread (strace), and the p99 latency with them. Here a PASSIVE checkpoint runs every
    every_s on a connection of its own: it never takes the write lock, so commits go on
    meanwhile (the sqlite3 module lets go of the GIL while SQLite works). The writer keeps
    a far larger automatic threshold (hot_connection) as a backstop should this thread
    stop or fall behind."""

    BACKSTOP_PAGES = 20000  # ~80 MB of WAL before the writer checkpoints on its own

    def __init__(self, engine, every_s=0.2):
        self.engine = engine
        self.every_s = every_s
        self.enabled = engine.dialect.name == "sqlite"
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aixin-checkpoint", daemon=True)

    def hot_connection(self, conn):
        """Call on the connection that commits swipes: leave checkpoints to this thread."""
        if self.enabled:
            # On the driver: through SQLAlchemy this would open a transaction (BEGIN IMMEDIATE).
            conn.connection.dbapi_connection.execute(
                "PRAGMA wal_autocheckpoint=%d" % self.BACKSTOP_PAGES).close()
        return conn

    def start(self):
        if self.enabled:
            self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self):
        conn = None
        while not self._stop.wait(self.every_s):
            try:
                if conn is None:
                    conn = self.engine.raw_connection()  # no BEGIN: a checkpoint is not one
                conn.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)").close()
                self.runs += 1
            except Exception:  # the database gone for a moment: the writer's backstop holds
                if conn is not None:
                    conn.close()
                    conn = None
        if conn is not None:
            conn.close()


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
