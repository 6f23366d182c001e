# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the ``archive_restore`` module: bring archived rows back from S3 (the Restore Guide's tool).

Speed: a background thread downloads, verifies, decompresses and converts the next archives to COPY
text while the main thread streams the current one with ``COPY ... FROM STDIN`` (psycopg2 releases the
GIL while libpq sends), so the two cores overlap. With ``conflict_strategy: skip`` a file is first
copied straight into the table; only when that meets a duplicate key is the file rolled back to its
savepoint and loaded through a temporary staging table with ``INSERT ... ON CONFLICT DO NOTHING``.

Safety: every file runs under its own savepoint, so a bad file is rolled back alone. The restore
watermark only advances over files restored without a failed file before them, and it never points past
committed data: in the database it is written in the transaction of the files it covers, in S3 after a
durable commit (see :func:`_load_all`, :func:`_commit` and :class:`_WatermarkWriter`).
"""

from __future__ import annotations

import datetime
import io
import queue
import re
import sys
import threading
import time

from ansible_collections.pgops.resilience.plugins.module_utils import archive_format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import (
    connect, pg_error_text, pg_errors, primary_key, resolve_schema_table, table_columns)
from ansible_collections.pgops.resilience.plugins.module_utils.s3 import Bucket, client_from_params, s3_connection_spec

try:
    import psycopg2
    import psycopg2.errors
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # reported by connect()
    psycopg2 = None
    sql = None

CONFLICT_STRATEGIES = ['skip', 'overwrite', 'fail', 'upsert']
SCHEMA_STRATEGIES = ['strict', 'lenient', 'transform', 'none']
STORAGE_TYPES = ['s3', 'database', 'both']
WATERMARK_TABLE = 'restore_watermarks'
PREFETCH = 2  # archives converted ahead of the one being copied; bounds memory to a few batches
STAGE = 'pgops_restore_stage'
_DATE_RE = re.compile(r'\d{4}-\d{2}-\d{2}\Z')


def argument_spec():
    """The module's own options (the PostgreSQL connection options are added by the module).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    spec = dict(
        database=dict(type='str', required=True),
        table=dict(type='str', required=True),
        schema=dict(type='str', default='public'),
        bucket=dict(type='str', required=True),
        prefix=dict(type='str', default=fmt.DEFAULT_PREFIX),
        s3_key=dict(type='str', no_log=False),
        restore_all=dict(type='bool', default=False),
        start_date=dict(type='str'),
        end_date=dict(type='str'),
        conflict_strategy=dict(type='str', default='skip', choices=CONFLICT_STRATEGIES),
        conflict_columns=dict(type='list', elements='str'),
        schema_migration_strategy=dict(type='str', default='strict', choices=SCHEMA_STRATEGIES),
        drop_indexes=dict(type='bool', default=False),
        commit_frequency=dict(type='int', default=1),
        dry_run=dict(type='bool', default=False),
        restore_watermark=dict(type='bool', default=True),
        storage_type=dict(type='str', default='s3', choices=STORAGE_TYPES),
        update_after_each_archive=dict(type='bool', default=True),
        ignore_watermark=dict(type='bool', default=False),
    )
    spec.update(s3_connection_spec())
    # The database connected to is ``database`` unless login_db is given: without PGDATABASE's fallback, which
    # would otherwise connect to whatever database the environment names (often postgres).
    spec['login_db'] = dict(type='str')
    return spec


MUTUALLY_EXCLUSIVE = [('s3_key', 'restore_all')]


def parse_date(value, option):
    """``YYYY-MM-DD`` as a ``datetime.date``; ``None`` stays ``None``.

    :raises PgopsError: naming ``option`` for anything else.
    """
    if value in (None, ''):
        return None
    # Only YYYY-MM-DD: fromisoformat also takes week dates (2026-W01-1) and YYYYMMDD on newer Pythons.
    if not _DATE_RE.match(str(value)):
        return _bad_date(value, option)
    try:
        return datetime.date.fromisoformat(str(value))
    except ValueError:
        return _bad_date(value, option)


def _bad_date(value, option):
    raise PgopsError('%s %r is not a date: write it as YYYY-MM-DD (the date in the archive keys, year=/month=/day=).'
                     % (option, value))


def validate(params):
    """Check option combinations the argument spec cannot express; returns ``(start_date, end_date)``.

    :raises PgopsError: naming the options.
    """
    start, end = parse_date(params.get('start_date'), 'start_date'), parse_date(params.get('end_date'), 'end_date')
    if (start or end) and not params.get('restore_all'):
        raise PgopsError('start_date and end_date select archives for restore_all: set restore_all: true, or give s3_key.')
    if start and end and start > end:
        raise PgopsError('start_date %s is after end_date %s.' % (start, end))
    if params['commit_frequency'] < 1:
        raise PgopsError('commit_frequency must be at least 1 (archives per transaction); the default is 1.')
    return start, end


# --- planning ----------------------------------------------------------------------------------------

def plan_columns(strategy, archived, table):
    """Decide which columns one archive loads and how, following the Restore Guide's strategies.

    ``strict`` refuses any difference in names or (when the sidecar gives them) types; ``lenient`` loads
    the columns both have (missing ones get the table's defaults, extra ones are dropped) and lets each
    value be read by the table's type; ``transform`` does the same but casts columns whose archived type
    differs, through a staging table; ``none`` loads the archive's columns as they are.

    :param archived: list of ``(name, type or None)``: the archive's columns (metadata fields excluded).
    :param table: list of :class:`~...postgres.Column`.
    :returns: dict with ``copy`` (list of ``(name, type that decides how values are read)``), ``casts``
        (dict name -> ``(archived type, table type)``, only for ``transform``), ``dropped`` and ``defaulted``
        (lists of names).
    :raises fmt.ArchiveFileError: for ``strict`` when anything differs.
    """
    types = dict((c.name, c.type) for c in table)
    writable = [c.name for c in table if not c.generated]
    names = [name for name, archived_type in archived]
    dropped = [n for n in names if n not in writable]
    defaulted = [n for n in writable if n not in names]
    if strategy == 'none':
        return dict(copy=[(n, t or types.get(n) or 'text') for n, t in archived], casts={}, dropped=[], defaulted=defaulted)
    changed = [(n, t, types[n]) for n, t in archived if t and n in types and t != types[n]]
    if strategy == 'strict' and (dropped or defaulted or changed):
        problems = []
        if dropped:
            problems.append('the table lacks archived column(s) %s' % ', '.join(dropped))
        if defaulted:
            problems.append('the archive lacks table column(s) %s' % ', '.join(defaulted))
        problems.extend('column %s was archived as %s but is %s in the table' % c for c in changed)
        raise fmt.ArchiveFileError('schema differs (%s). schema_migration_strategy strict refuses it; lenient drops '
                                   'extra columns and fills missing ones with defaults, transform also casts changed types.'
                                   % '; '.join(problems))
    copy = [(n, t or types[n]) for n, t in archived if n in writable]
    casts = dict((n, (t, tt)) for n, t, tt in changed) if strategy == 'transform' else {}
    return dict(copy=copy, casts=casts, dropped=dropped, defaulted=defaulted)


def watermark_order(document):
    """The archive order (see :func:`fmt.parse_key`) a watermark document points at, or ``None``."""
    key = (document or {}).get('last_restored_key')
    parsed = fmt.parse_key(key) if key else None
    return parsed['order'] if parsed else None


def list_archives(bucket, prefix):
    """The archives of one table in the order they were written.

    :returns: list of dicts with ``key``, ``date`` (``datetime.date``), ``order``, ``size`` (bytes),
        ``has_sidecar`` (bool) and ``pending`` (bool: a ``table_archive`` run was interrupted on it).
    """
    objects = bucket.list(prefix)
    present = set(o['key'] for o in objects)
    archives = []
    for obj in objects:
        parsed = fmt.parse_key(obj['key'])
        if parsed is None:
            continue
        archives.append(dict(key=obj['key'], date=parsed['date'], order=parsed['order'], size=obj['size'],
                             has_sidecar=obj['key'] + fmt.SIDECAR_SUFFIX in present,
                             pending=obj['key'] + fmt.PENDING_SUFFIX in present))
    return sorted(archives, key=lambda a: a['order'])


# --- watermark -----------------------------------------------------------------------------------------

class Watermark:
    """The restore watermark of one table, in S3 (``{prefix}/{database}/{table}/.restore_watermark.json``),
    in the database (table ``restore_watermarks`` in the restored table's schema), or both.

    The database copy is written inside the transaction that commits the files it covers, so it is exact;
    the S3 copy is written after a durable commit by :class:`_WatermarkWriter` and may trail by about a
    second of work after a crash. With ``both`` the database copy is read first.
    """

    def __init__(self, params, bucket, relation, table_prefix):
        self.params = params
        self.storage = params['storage_type']
        self.s3 = bucket.json_object(table_prefix + fmt.WATERMARK_NAME)
        self.relation = relation
        self.ident = sql.Identifier(relation.schema, WATERMARK_TABLE)
        self.row_key = [params['bucket'], params['prefix'], params['database'], relation.schema, relation.name]

    @property
    def uses_database(self):
        """True for ``database`` and ``both``."""
        return self.storage in ('database', 'both')

    @property
    def uses_s3(self):
        """True for ``s3`` and ``both``."""
        return self.storage in ('s3', 'both')

    def ensure_table(self, conn):
        """Create ``restore_watermarks`` when missing (committed on its own)."""
        with pg_errors('creating %s' % WATERMARK_TABLE), conn.cursor() as cursor:
            cursor.execute(sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} (bucket text NOT NULL, prefix text NOT NULL, database_name text NOT NULL,'
                ' schema_name text NOT NULL, table_name text NOT NULL, last_restored_key text NOT NULL,'
                ' last_restored_date date, total_archives_restored bigint NOT NULL DEFAULT 0,'
                ' updated_at timestamptz NOT NULL DEFAULT now(),'
                ' PRIMARY KEY (bucket, prefix, database_name, schema_name, table_name))').format(self.ident))
        conn.commit()

    def read(self, conn):
        """The current watermark document (dict) or ``None``."""
        if self.uses_database:
            with pg_errors('reading %s' % WATERMARK_TABLE), conn.cursor() as cursor:
                cursor.execute('SELECT pg_catalog.to_regclass(%s) IS NOT NULL', [self.ident.as_string(cursor)])
                if cursor.fetchone()[0]:
                    cursor.execute(sql.SQL(
                        'SELECT last_restored_key, last_restored_date::text, total_archives_restored, updated_at FROM {}'
                        ' WHERE bucket = %s AND prefix = %s AND database_name = %s AND schema_name = %s AND table_name = %s'
                    ).format(self.ident), self.row_key)
                    row = cursor.fetchone()
                    conn.commit()
                    if row:
                        return dict(last_restored_key=row[0], last_restored_date=row[1], total_archives_restored=row[2],
                                    updated_at=isoformat_z(row[3]), storage='database')
                conn.commit()
        if self.uses_s3:
            document = self.s3.read()
            if document is not None:
                document['storage'] = 's3'
            return document
        return None

    def document(self, archive, total):
        """The watermark document for ``archive`` (a dict from :func:`list_archives`) after ``total`` archives."""
        return dict(last_restored_key=archive['key'], last_restored_date=archive['date'].isoformat(),
                    total_archives_restored=total, updated_at=isoformat_z(utc_now()), database=self.params['database'],
                    schema=self.relation.schema, table=self.relation.name, bucket=self.params['bucket'],
                    prefix=self.params['prefix'])

    def write_database(self, cursor, document):
        """Upsert the database copy with ``cursor`` (inside the caller's transaction)."""
        cursor.execute(sql.SQL(
            'INSERT INTO {} AS w (bucket, prefix, database_name, schema_name, table_name, last_restored_key,'
            ' last_restored_date, total_archives_restored, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())'
            ' ON CONFLICT (bucket, prefix, database_name, schema_name, table_name) DO UPDATE SET'
            ' last_restored_key = EXCLUDED.last_restored_key, last_restored_date = EXCLUDED.last_restored_date,'
            ' total_archives_restored = EXCLUDED.total_archives_restored, updated_at = now()').format(self.ident),
            self.row_key + [document['last_restored_key'], document['last_restored_date'],
                            document['total_archives_restored']])


# --- loading -----------------------------------------------------------------------------------------

class Prepared:
    """One archive made ready by the background thread: ``archive`` (dict), ``sidecar`` (dict or None),
    ``plan`` (see :func:`plan_columns`), ``data`` (COPY text, bytes), ``records`` (int), or ``error`` (str)."""

    def __init__(self, archive, sidecar=None, plan=None, data=b'', records=0, error=None):
        self.archive = archive
        self.sidecar = sidecar
        self.plan = plan
        self.data = data
        self.records = records
        self.error = error


def _known_records(sidecar, text):
    """Rows of an archive that failed before loading: the lines of its decompressed ``text`` when it was
    read, else its sidecar's record count."""
    if text is not None:
        return fmt.line_count(text)
    try:
        return int((sidecar or {}).get('record_count') or 0)
    except (TypeError, ValueError):
        return 0


class Restorer:
    """Loads archives into one table; see the module docstring for the strategy.

    :param params: module parameters.
    :param conn: psycopg2 connection (autocommit off while loading).
    :param bucket: :class:`Bucket`.
    :param relation: the resolved table.
    """

    def __init__(self, params, conn, bucket, relation):
        self.params = params
        self.conn = conn
        self.bucket = bucket
        self.relation = relation
        with conn.cursor() as cursor:
            self.columns = table_columns(cursor, relation)
            self.conflict_columns = params.get('conflict_columns') or primary_key(cursor, relation)
        conn.commit()
        self.types = dict((c.name, c.type) for c in self.columns)
        self.identity_always = set(c.name for c in self.columns if c.identity == 'a')
        self.strategy = params['conflict_strategy']
        self.direct = self.strategy in ('skip', 'fail')  # skip tries COPY into the table first
        self._converters = {}
        if self.strategy in ('overwrite', 'upsert') and not self.conflict_columns:
            raise PgopsError('conflict_strategy %s needs conflict_columns: %s has no primary key.'
                             % (self.strategy, relation.display))
        unknown = [c for c in self.conflict_columns if c not in self.types]
        if unknown:
            raise PgopsError('conflict_columns %s: table %s has no such column.' % (', '.join(unknown), relation.display))

    # The background thread's side.

    def prepare(self, archive):
        """Download, verify, decompress and convert one archive; never raises (errors go into the result)."""
        key = archive['key']
        sidecar = text = None
        try:
            sidecar = self.bucket.json_object(key + fmt.SIDECAR_SUFFIX).read() if archive.get('has_sidecar', True) else None
            body = self.bucket.get(key)
            fmt.verify_body(key, body, sidecar)
            text = fmt.decompress(key, body)
            del body
            if sidecar and sidecar.get('columns'):
                archived = [(c['name'], c.get('type')) for c in sidecar['columns']]
            else:
                archived = [(name, None) for name in fmt.first_line_columns(key, fmt.first_line(text))]
            try:
                plan = plan_columns(self.params['schema_migration_strategy'], archived, self.columns)
            except fmt.ArchiveFileError as exc:
                raise fmt.ArchiveFileError('%s: %s' % (key, exc.msg))
            if plan['copy']:
                data, records = self._converter(plan['copy']).convert_text(key, text)
            else:
                data, records = b'', fmt.line_count(text)
            return Prepared(archive, sidecar, plan, data, records)
        except PgopsError as exc:
            return Prepared(archive, error=exc.msg, records=_known_records(sidecar, text))
        except Exception as exc:  # pylint: disable=broad-except  # one bad file must not stop the others
            return Prepared(archive, error='%s: %s: %s' % (key, type(exc).__name__, exc),
                            records=_known_records(sidecar, text))

    def _converter(self, columns):
        signature = tuple(columns)
        if signature not in self._converters:
            self._converters[signature] = fmt.CopyConverter(columns, [c.name for c in self.columns if c.not_null])
        return self._converters[signature]

    # The main thread's side.

    def load(self, cursor, item):
        """Load one prepared archive inside the caller's savepoint ``pgops_file``.

        :returns: tuple ``(records restored, records skipped)``.
        :raises psycopg2.Error: when PostgreSQL refuses the data (the caller rolls the savepoint back).
        """
        if not item.records or not item.plan['copy']:
            return 0, item.records
        names = [name for name, pg_type in item.plan['copy']]
        direct = self.direct and not item.plan['casts']
        if not self.direct and self.strategy == 'skip' and not item.plan['casts'] and self.conflict_columns and \
                set(self.conflict_columns) <= set(names):
            # After a file that met existing rows: COPY straight into the table again when neither the first nor
            # the last row of this file is there (archives hold rows in key order, so files tend to be present
            # or missing as a whole); a duplicate in between still falls back to the staging table below.
            edges = fmt.edge_rows(item.data, [names.index(c) for c in self.conflict_columns])
            if edges is not None:
                row = sql.SQL('({})').format(sql.SQL(', ').join(
                    sql.SQL('%s::' + self.types[c]) for c in self.conflict_columns))
                try:
                    cursor.execute(sql.SQL('SELECT NOT EXISTS (SELECT 1 FROM {} WHERE ({}) IN ({}, {}))').format(
                        self.relation.ident, sql.SQL(', ').join(sql.Identifier(c) for c in self.conflict_columns),
                        row, row), edges[0] + edges[1])
                    direct = cursor.fetchone()[0]
                except psycopg2.Error:  # a key that does not cast: the staging table reports it
                    cursor.execute('ROLLBACK TO SAVEPOINT pgops_file')
        if direct:
            try:
                self._copy(cursor, self.relation.ident, names, item.data)
                self.direct = True
                return item.records, 0
            except psycopg2.errors.UniqueViolation:
                if self.strategy == 'fail':
                    raise
                cursor.execute('ROLLBACK TO SAVEPOINT pgops_file')
        restored = self._staged(cursor, item)
        # Back to the direct path once a file no longer meets existing rows.
        self.direct = self.strategy in ('skip', 'fail') and restored == item.records
        return restored, item.records - restored

    @staticmethod
    def _copy(cursor, target, names, data):
        query = sql.SQL('COPY {} ({}) FROM STDIN').format(target, sql.SQL(', ').join(sql.Identifier(n) for n in names))
        # One read of the whole buffer: BytesIO hands back the bytes object itself, uncopied, and psycopg2 sends
        # it in one PQputCopyData call with the GIL released.
        cursor.copy_expert(query.as_string(cursor), io.BytesIO(data), size=min(max(len(data), 1 << 16), 1 << 30))

    def _staged(self, cursor, item):
        names = [name for name, pg_type in item.plan['copy']]
        casts = item.plan['casts']
        stage_types = []
        for name in names:
            if name in casts:
                cursor.execute('SELECT pg_catalog.to_regtype(%s)::text', [casts[name][0]])
                archived_type = cursor.fetchone()[0]
                if archived_type is None:
                    raise fmt.ArchiveFileError('%s: column %s was archived as type %r, which this database does not know.'
                                               % (item.archive['key'], name, casts[name][0]))
                stage_types.append(archived_type)
            else:
                stage_types.append(self.types.get(name, 'text'))
        stage = sql.Identifier(STAGE)
        cursor.execute(sql.SQL('DROP TABLE IF EXISTS pg_temp.{}').format(stage))
        # Types come from format_type / to_regtype, which print valid type names.
        cursor.execute(sql.SQL('CREATE TEMP TABLE {} ({})').format(stage, sql.SQL(', ').join(
            sql.SQL('{} ' + t).format(sql.Identifier(n)) for n, t in zip(names, stage_types))))
        self._copy(cursor, stage, names, item.data)
        values = sql.SQL(', ').join(
            sql.SQL('CAST(s.{} AS ' + self.types[n] + ')').format(sql.Identifier(n)) if n in casts
            else sql.SQL('s.{}').format(sql.Identifier(n)) for n in names)
        query = sql.SQL('INSERT INTO {} AS t ({}){} SELECT {} FROM {} AS s{}').format(
            self.relation.ident, sql.SQL(', ').join(sql.Identifier(n) for n in names),
            sql.SQL(' OVERRIDING SYSTEM VALUE') if self.identity_always.intersection(names) else sql.SQL(''),
            values, stage, self._on_conflict(names))
        if casts:
            self._find_bad_cast(cursor, item, names, casts)
        cursor.execute(query)
        return cursor.rowcount

    def _find_bad_cast(self, cursor, item, names, casts):
        """Name the column whose archived values do not cast to the table's type (transform strategy)."""
        for name in names:
            if name not in casts:
                continue
            cursor.execute('SAVEPOINT pgops_cast')
            try:
                cursor.execute(sql.SQL('SELECT count(CAST(s.{0} AS ' + self.types[name] + ')) FROM {1} AS s').format(
                    sql.Identifier(name), sql.Identifier(STAGE)))
                cursor.execute('RELEASE SAVEPOINT pgops_cast')
            except psycopg2.Error as exc:
                cursor.execute('ROLLBACK TO SAVEPOINT pgops_cast')
                raise fmt.ArchiveFileError('%s: column %s was archived as %s and does not cast to %s: %s'
                                           % (item.archive['key'], name, casts[name][0], casts[name][1], pg_error_text(exc)))

    def _on_conflict(self, names):
        if self.strategy == 'fail':
            return sql.SQL('')
        target = sql.SQL(', ').join(sql.Identifier(c) for c in self.conflict_columns)
        if self.strategy == 'skip':
            return sql.SQL(' ON CONFLICT ({}) DO NOTHING').format(target) if self.conflict_columns else sql.SQL(' ON CONFLICT DO NOTHING')
        updated = [n for n in names if n not in self.conflict_columns]
        if not updated:
            return sql.SQL(' ON CONFLICT ({}) DO NOTHING').format(target)
        clause = sql.SQL(' ON CONFLICT ({}) DO UPDATE SET {}').format(target, sql.SQL(', ').join(
            sql.SQL('{0} = EXCLUDED.{0}').format(sql.Identifier(n)) for n in updated))
        if self.strategy == 'upsert':
            # Only rows whose values differ are rewritten; unchanged ones count as skipped. Compared as text:
            # json, xml, point and other types have no equality operator, and every type has a text form.
            clause += sql.SQL(' WHERE ({}) IS DISTINCT FROM ({})').format(
                sql.SQL(', ').join(sql.SQL('t.{}::text').format(sql.Identifier(n)) for n in updated),
                sql.SQL(', ').join(sql.SQL('EXCLUDED.{}::text').format(sql.Identifier(n)) for n in updated))
        return clause


class _Prefetcher:
    """Runs :meth:`Restorer.prepare` on the archives in a background thread, at most :data:`PREFETCH` ahead.

    The two threads share the GIL, and each libpq call of the main thread (psycopg2 releases the GIL in
    it) must take the GIL back when it returns, while the server waits for the next statement. With
    Python's default switch interval of 5 ms a busy background thread makes it wait up to that long each
    time, several times per archive; while the restore runs the interval is 0.1 ms (measured: 0.5 ms left
    the COPY thread waiting about 0.1 s longer per million rows).
    """

    SWITCH_INTERVAL = 0.0001  # seconds

    def __init__(self, restorer, archives):
        self.queue = queue.Queue(PREFETCH)
        self.stop = threading.Event()
        self.interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self.interval, self.SWITCH_INTERVAL))
        self.thread = threading.Thread(target=self._run, args=(restorer, archives), name='archive-prefetch', daemon=True)
        self.thread.start()

    def _run(self, restorer, archives):
        for archive in archives:
            item = restorer.prepare(archive)
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    continue
            if self.stop.is_set():
                return

    def __iter__(self):
        return self

    def __next__(self):
        return self.queue.get()

    def close(self):
        """Stop the thread (it finishes the archive in hand)."""
        self.stop.set()
        self.thread.join(timeout=60)
        sys.setswitchinterval(self.interval)


class _WatermarkWriter:
    """Writes the S3 watermark from a background thread, so that the load does not wait on S3.

    While the restore runs, a new document is taken at most once per :data:`INTERVAL` (a PUT costs about as
    much as copying a thousand rows, and moto or a real endpoint is billed per request): the caller asks
    :meth:`due`, and when it is, commits durably and hands the document over with :meth:`submit`. The S3
    watermark therefore trails the committed data by at most about a second of work while the restore
    runs, and never leads it. :meth:`close` writes the last document submitted and waits for it.

    :param target: :class:`JsonObject`, the watermark object.
    """

    INTERVAL = 1.0  # seconds between documents taken while the restore runs

    def __init__(self, target):
        self.target = target
        self.condition = threading.Condition()
        self.waiting = None
        self.busy = False
        self.closing = False
        self.error = None
        self.written = None
        self.submitted = None
        self.submitted_at = None
        self.thread = threading.Thread(target=self._run, name='watermark-writer', daemon=True)
        self.thread.start()

    def due(self):
        """True when a document submitted now would be written at once, and :data:`INTERVAL` has passed
        since the last one (also true after a failed write, so that :meth:`submit` reports it)."""
        with self.condition:
            if self.error is not None:
                return True
            return self.waiting is None and not self.busy and (
                self.submitted_at is None or time.monotonic() - self.submitted_at >= self.INTERVAL)

    def submit(self, document):
        """Hand over ``document`` (dict), whose transaction has committed durably, replacing one not written
        yet (the same document again is ignored).

        :raises PgopsError: when an earlier write failed.
        """
        with self.condition:
            if self.error is not None:
                raise self.error
            if document is self.submitted:
                return
            self.waiting = self.submitted = document
            self.submitted_at = time.monotonic()
            self.condition.notify()

    def _run(self):
        while True:
            with self.condition:
                while self.waiting is None and not self.closing:
                    self.condition.wait()
                document, self.waiting = self.waiting, None
                self.busy = document is not None
            if document is None:
                return
            try:
                self.target.write(document)
            except Exception as exc:  # pylint: disable=broad-except  # reported to the main thread
                with self.condition:
                    self.busy = False
                    self.error = exc if isinstance(exc, PgopsError) else PgopsError(
                        'Could not write the restore watermark %s: %s: %s' % (self.target.url, type(exc).__name__, exc))
                return
            with self.condition:
                self.busy = False
                self.written = document

    def close(self, check=True):
        """Write the last document submitted, stop the thread and return the last document written (or None).

        :param check: raise when a write failed (False while another error is already on its way).
        :raises PgopsError: when a write failed.
        """
        with self.condition:
            self.closing = True
            self.condition.notify()
        self.thread.join()
        if check and self.error is not None:
            raise self.error
        return self.written


# --- indexes -------------------------------------------------------------------------------------------

def droppable_indexes(cursor, relation):
    """Indexes that a bulk load can do without: not unique, not backing a constraint (primary keys, unique
    and exclusion constraints stay, since conflict handling needs them).

    :returns: list of ``(name as regclass text, CREATE INDEX statement)``.
    """
    cursor.execute('SELECT i.indexrelid::pg_catalog.regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid)'
                   ' FROM pg_catalog.pg_index i WHERE i.indrelid = pg_catalog.to_regclass(%s) AND NOT i.indisunique'
                   ' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid)'
                   ' ORDER BY 1', [relation.ident.as_string(cursor)])
    return cursor.fetchall()


def recreate_indexes(conn, indexes):
    """Run each saved ``CREATE INDEX`` in its own transaction.

    :returns: list of the names recreated.
    :raises PgopsError: listing the statements that failed, so they can be run by hand.
    """
    done, failed = [], []
    for name, definition in indexes:
        try:
            with conn.cursor() as cursor:
                cursor.execute(definition)
            conn.commit()
            done.append(name)
        except psycopg2.Error as exc:
            conn.rollback()
            failed.append('%s (%s)' % (definition, pg_error_text(exc)))
    if failed:
        raise PgopsError('Could not recreate dropped indexes; run these statements: %s' % '; '.join(failed))
    return done


# --- the run -----------------------------------------------------------------------------------------

def run(params, check_mode=False):
    """Run ``archive_restore``: see the module's documentation for options and return values.

    :returns: dict, the module result (the guide's summary and per-file results).
    :raises PgopsError: for bad options, a missing table or key, connection or S3 failures, and at the end
        when any file failed (with the summary in the details).
    """
    start, end = validate(params)
    fmt.require_msgspec()
    started = time.monotonic()
    params = dict(params, login_db=params.get('login_db') or params['database'])
    conn = connect(params, autocommit=False)
    try:
        bucket = Bucket(client_from_params(params), params['bucket'], params.get('endpoint_url'))
        with pg_errors('looking up the table'), conn.cursor() as cursor:
            relation = resolve_schema_table(cursor, params['schema'], params['table'])
        conn.commit()
        prefix = fmt.table_prefix(params['prefix'], params['database'], params['table'])
        watermark = Watermark(params, bucket, relation, prefix)
        result = dict(changed=False, table=relation.display, bucket=params['bucket'], prefix=prefix,
                      dry_run=bool(params['dry_run'] or check_mode))
        if not params.get('s3_key') and not params['restore_all']:
            return _list(result, bucket, prefix, watermark, conn)
        return _restore(result, params, conn, bucket, relation, watermark, prefix, (start, end), started)
    finally:
        conn.close()


def _list(result, bucket, prefix, watermark, conn):
    previous = watermark.read(conn)
    mark = watermark_order(previous)
    archives = list_archives(bucket, prefix)
    result.update(mode='list', watermark=previous, archives=[
        dict(key=a['key'], date=a['date'].isoformat(), size_bytes=a['size'], has_sidecar=a['has_sidecar'],
             pending=a['pending'], restored=bool(mark and a['order'] <= mark)) for a in archives])
    result['archive_count'] = len(archives)
    return result


def _plan(params, bucket, prefix, dates, previous):
    """Archives to restore, those skipped (with why), and the archives before ``start_date`` that the
    recorded watermark does not cover yet (from one listing of the table's objects)."""
    if params.get('s3_key'):
        key = params['s3_key']
        parsed = fmt.parse_key(key) or dict(date=None, order=('', '', 0, key))
        if not bucket.exists(key):
            raise PgopsError('s3_key %s does not exist in bucket %s. List the archives (leave out s3_key and '
                             'restore_all) to see the keys.' % (key, params['bucket']))
        archive = dict(key=key, date=parsed['date'], order=parsed['order'], has_sidecar=bucket.exists(key + fmt.SIDECAR_SUFFIX),
                       pending=bucket.exists(key + fmt.PENDING_SUFFIX))
        return ([], [archive], []) if not archive['pending'] else ([(archive, 'pending')], [], [])
    mark = None if params['ignore_watermark'] or not params['restore_watermark'] else watermark_order(previous)
    recorded = watermark_order(previous)
    start, end = dates
    skipped, todo, earlier = [], [], []
    for archive in list_archives(bucket, prefix):
        if start and archive['date'] < start:
            if recorded is None or archive['order'] > recorded:
                earlier.append(archive)
            continue
        if end and archive['date'] > end:
            continue
        if archive['pending']:
            skipped.append((archive, 'pending'))
        elif mark and archive['order'] <= mark:
            skipped.append((archive, 'watermark'))
        else:
            todo.append(archive)
    return skipped, todo, earlier


def _restore(result, params, conn, bucket, relation, watermark, prefix, dates, started):
    tracking = params['restore_watermark'] and params['restore_all']
    previous = watermark.read(conn) if tracking else None
    skipped, todo, earlier = _plan(params, bucket, prefix, dates, previous)
    files = [dict(key=a['key'], status='skipped', reason=why) for a, why in skipped]
    summary = dict(mode='restore_all' if params['restore_all'] else 's3_key', files_processed=0, files_failed=0,
                   files_skipped=len(skipped), records_restored=0, records_skipped=0, records_failed=0,
                   watermark=dict(previous=previous, storage_type=params['storage_type'], written=False) if tracking else None,
                   files=files, indexes_dropped=[], indexes_recreated=[])
    result.update(summary)
    if result['dry_run']:
        for archive in todo:
            sidecar = bucket.json_object(archive['key'] + fmt.SIDECAR_SUFFIX).read() if archive['has_sidecar'] else None
            files.append(dict(key=archive['key'], status='would_restore', verified=sidecar is not None,
                              records=(sidecar or {}).get('record_count')))
        result['would_restore_files'] = len(todo)
        # Archives without a sidecar are counted as unknown (None) rather than downloaded.
        result['would_restore_records'] = sum(f.get('records') or 0 for f in files if f['status'] == 'would_restore')
        result['duration_ms'] = int((time.monotonic() - started) * 1000)
        return result
    restorer = Restorer(params, conn, bucket, relation)
    if tracking and watermark.uses_database:
        watermark.ensure_table(conn)
    saved = bucket.json_object('%s.dropped_indexes.%s.json' % (prefix, relation.schema))
    result['indexes_recreated'] = _recreate_saved_indexes(conn, bucket, saved)
    indexes = []
    if params['drop_indexes'] and todo:
        with pg_errors('dropping indexes of %s' % relation.display), conn.cursor() as cursor:
            indexes = droppable_indexes(cursor, relation)
            if indexes:
                # Saved before they are dropped: a run killed before it recreates them leaves them here.
                saved.write(dict(table=relation.display, indexes=[list(index) for index in indexes]))
            for name, definition in indexes:
                cursor.execute(sql.SQL('DROP INDEX ' + name))
        conn.commit()
        result['indexes_dropped'] = [name for name, definition in indexes]
    try:
        _load_all(result, params, conn, restorer, watermark if tracking else None, previous, todo,
                  _watermark_barrier(skipped, earlier))
    finally:
        if indexes:
            conn.rollback()
            result['indexes_recreated'] += recreate_indexes(conn, indexes)
            bucket.delete(saved.key)
    result['changed'] = bool(result['records_restored'] > 0 or result['indexes_dropped'] or
                             (result['watermark'] and result['watermark']['written']))
    result['duration_ms'] = int((time.monotonic() - started) * 1000)
    if result['files_failed']:
        failed = [f for f in files if f['status'] == 'failed']
        raise PgopsError('%d of %d archive files failed and were rolled back; the others were restored. First: %s'
                         % (result['files_failed'], result['files_processed'], failed[0]['error']),
                         **dict((k, v) for k, v in result.items() if k != 'changed'))
    return result


def _recreate_saved_indexes(conn, bucket, saved):
    """Recreate the indexes an interrupted run dropped (saved in S3 before dropping), then forget them."""
    document = saved.read()
    if not document:
        return []
    missing = []
    with conn.cursor() as cursor:
        for name, definition in document.get('indexes', []):
            cursor.execute('SELECT pg_catalog.to_regclass(%s) IS NULL', [name])
            if cursor.fetchone()[0]:
                missing.append((name, definition))
    conn.commit()
    done = recreate_indexes(conn, missing)
    bucket.delete(saved.key)
    return done


def _watermark_barrier(skipped, earlier):
    """The first archive the watermark must not move past (or ``None``): a pending archive (an interrupted
    table_archive run may still complete it), or, with ``start_date``, an earlier archive not restored yet."""
    orders = [a['order'] for a, why in skipped if why == 'pending'] + [a['order'] for a in earlier]
    return min(orders) if orders else None


def _load_all(result, params, conn, restorer, watermark, previous, todo, barrier=None):
    """Copy every planned archive, committing every ``commit_frequency`` files and moving the watermark.

    Durability (see :func:`_commit`): transactions commit asynchronously, except the one that holds the last
    archive and those after which the S3 watermark is written; ``unflushed`` tracks whether rows committed
    asynchronously may still be only in memory, and the run waits for their WAL flush before it ends.
    """
    total = int((previous or {}).get('total_archives_restored') or 0)
    mark = watermark_order(previous)
    contiguous, pending_mark, in_transaction, wrote, unflushed = True, None, 0, False, False
    writer = _WatermarkWriter(watermark.s3) if watermark and watermark.uses_s3 else None
    prefetch = _Prefetcher(restorer, todo)
    finished = False
    try:
        cursor = conn.cursor()
        for position, archive in enumerate(todo):
            item = next(prefetch)
            if item.archive is not archive:
                raise AssertionError('the prefetch thread must keep the archive order')
            entry = dict(key=item.archive['key'], verified=item.sidecar is not None)
            result['files'].append(entry)
            result['files_processed'] += 1
            error = item.error
            if error is None:
                # A transaction commits asynchronously unless _commit makes it durable (one statement each).
                cursor.execute(('SAVEPOINT pgops_file' if conn.get_transaction_status() ==
                                psycopg2.extensions.TRANSACTION_STATUS_INTRANS
                                else 'SET LOCAL synchronous_commit TO off; SAVEPOINT pgops_file'))
                try:
                    restored, skipped = restorer.load(cursor, item)
                    if in_transaction + 1 < params['commit_frequency']:
                        cursor.execute('RELEASE SAVEPOINT pgops_file')  # else the commit just after releases it
                except (psycopg2.Error, PgopsError) as exc:
                    # Only a connection in an unknown state is lost; an OperationalError such as a program limit
                    # (SQLSTATE class 54) leaves the transaction in error, and the file is rolled back alone.
                    if conn.closed or conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:
                        raise PgopsError('Lost the connection while restoring %s: %s' % (item.archive['key'], pg_error_text(exc)))
                    cursor.execute('ROLLBACK TO SAVEPOINT pgops_file; RELEASE SAVEPOINT pgops_file')
                    error = _file_error(item.archive['key'], exc)
            if error is not None:
                contiguous = False
                entry.update(status='failed', error=error, records=item.records)
                result['files_failed'] += 1
                result['records_failed'] += item.records
                continue
            entry.update(status='restored', records=item.records, restored=restored, skipped=skipped)
            if item.plan['dropped']:
                entry['dropped_columns'] = item.plan['dropped']
            if item.plan['defaulted'] and params['schema_migration_strategy'] != 'none':
                entry['defaulted_columns'] = item.plan['defaulted']
            result['records_restored'] += restored
            result['records_skipped'] += skipped
            wrote = wrote or restored > 0
            total += 1
            if watermark and contiguous and (mark is None or item.archive['order'] > mark) and \
                    (barrier is None or item.archive['order'] < barrier):
                pending_mark = watermark.document(item.archive, total)
                if watermark.uses_database and params['update_after_each_archive']:
                    watermark.write_database(cursor, pending_mark)
            in_transaction += 1
            if in_transaction >= params['commit_frequency']:
                # A durable commit that wrote rows flushes every earlier one too; the S3 watermark is handed
                # over only when nothing committed before it can still be lost.
                last = position == len(todo) - 1
                s3_now = writer is not None and params['update_after_each_archive'] and pending_mark is not None \
                    and (wrote or not unflushed) and writer.due()
                _commit(conn, cursor, durable=s3_now or last)
                if wrote:
                    unflushed = not (s3_now or last)
                _publish(result, watermark, pending_mark, writer if s3_now else None)
                in_transaction, wrote = 0, False
        if in_transaction or (watermark and pending_mark is not None and watermark.uses_database):
            if watermark and pending_mark is not None and watermark.uses_database:
                watermark.write_database(cursor, pending_mark)
                wrote = True
            _commit(conn, cursor, durable=True)
            if wrote:
                unflushed = False
        if unflushed:
            _wait_for_wal_flush(conn)
        _publish(result, watermark, pending_mark, writer)
        finished = True
    finally:
        prefetch.close()
        if writer is not None:
            # After a failure the documents already handed over still describe durable commits: written too.
            if writer.close(check=finished) is not None:
                result['watermark']['written'] = True


def _commit(conn, cursor, durable):
    """Commit the load's current transaction.

    Each transaction of the load starts with ``SET LOCAL synchronous_commit TO off`` (PostgreSQL docs, 30.4
    "Asynchronous Commit"); a ``durable`` commit sets it back to the server's, role's or database's setting
    first. An asynchronous commit is atomic and visible at once, and its WAL reaches disk within a few
    hundred milliseconds instead of the restore waiting for each flush. A crash of the server in that
    window can lose those last transactions together with the database watermark written in them, so the
    next run restores them again. A durable commit of a transaction that wrote WAL flushes everything up to
    its commit record, the earlier asynchronous commits included (WAL is flushed in order); one that wrote
    nothing flushes nothing (``RecordTransactionCommit`` in PostgreSQL's ``xact.c``), which the caller
    tracks.
    """
    if durable:
        cursor.execute('SET LOCAL synchronous_commit TO DEFAULT')
    conn.commit()


def _publish(result, watermark, document, writer):
    """Record ``document`` (committed durably when ``writer`` is given) in the result, and hand it to the S3
    writer: the S3 watermark must never describe rows that could still be lost."""
    if watermark is None or document is None:
        return
    result['watermark']['current'] = document
    if watermark.uses_database:
        result['watermark']['written'] = True
    if writer is not None:
        writer.submit(document)


def _wait_for_wal_flush(conn, timeout=60):
    """Wait until the WAL written so far is flushed to disk (``pg_current_wal_flush_lsn()`` reaches the
    insert position read first): the end of a run whose last rows were committed asynchronously, when no
    later transaction wrote WAL to flush them with. The WAL writer flushes within three times
    ``wal_writer_delay`` (PostgreSQL docs, 30.4).

    :raises PgopsError: when the flush does not get there within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    with pg_errors('waiting for the WAL flush'), conn.cursor() as cursor:
        cursor.execute('SELECT pg_catalog.pg_current_wal_insert_lsn()')
        target = cursor.fetchone()[0]
        while True:
            cursor.execute('SELECT pg_catalog.pg_current_wal_flush_lsn() >= %s::pg_lsn', [target])
            if cursor.fetchone()[0]:
                break
            if time.monotonic() > deadline:
                raise PgopsError('The restored rows are committed but their WAL was not flushed to disk within %d s '
                                 '(WAL position %s); check the server, then run the restore again.' % (timeout, target))
            time.sleep(0.01)
    conn.commit()


def _file_error(key, exc):
    if isinstance(exc, PgopsError):
        return exc.msg
    text = pg_error_text(exc)
    context = getattr(getattr(exc, 'diag', None), 'context', None)
    if context:
        text += ' (%s)' % ' '.join(context.split())
    return '%s: %s. The file was rolled back.' % (key, text)
