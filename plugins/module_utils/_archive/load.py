# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Loading archives into a table for ``archive_restore``: which columns to load (:func:`plan_columns`), the
background thread that downloads, verifies, decompresses and converts the next archives (:class:`Restorer`,
:class:`Prefetcher`), and the main thread's loop that copies them under savepoints, commits, and moves the
watermark (:func:`load_all`).

Speed: a background thread prepares the next archives while the main thread streams the current one with
``COPY ... FROM STDIN`` (psycopg2 releases the GIL while libpq sends), so the two cores overlap. With
``conflict_strategy: skip`` a file is first copied straight into the table; only when that meets a duplicate key
is the file rolled back to its savepoint and loaded through a temporary staging table with ``INSERT ... ON
CONFLICT DO NOTHING``.

Safety: every file runs under its own savepoint, so a bad file is rolled back alone. The restore watermark only
advances over files restored without a failed file before them, and it never points past committed data: in the
database it is written in the transaction of the files it covers, in S3 after a durable commit (see
:func:`load_all`, :func:`commit` and :class:`~.watermark.WatermarkWriter`).
"""

from __future__ import annotations

import io
import queue
import sys
import threading
import time

from ansible_collections.pgops.resilience.plugins.module_utils._archive import copy_text as archive_copy
from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive.watermark import (
    WatermarkWriter, watermark_order)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import primary_key, table_columns
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text, pg_errors

try:
    import psycopg2
    import psycopg2.errors
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # reported by connect()
    psycopg2 = None
    sql = None

PREFETCH = 2  # archives converted ahead of the one being copied; bounds memory to a few batches
STAGE = 'pgops_restore_stage'


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


def msgspec_decode(raw):
    """The Python value of one JSON value (``msgspec.Raw`` or bytes)."""
    return fmt.msgspec.json.decode(bytes(raw))


def _known_records(sidecar, text):
    """Rows of an archive that failed before loading: the lines of its decompressed ``text`` when it was
    read, else its sidecar's record count."""
    if text is not None:
        return archive_copy.line_count(text)
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
    :param source: :class:`ArchiveSource`, the table the archives must come from.
    """

    def __init__(self, params, conn, bucket, relation, source):
        self.params = params
        self.conn = conn
        self.bucket = bucket
        self.relation = relation
        self.source = source
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
        """Download, verify, decompress and convert one archive; never raises (errors go into the result).

        Before any row is read: the sidecar must name this table (:meth:`ArchiveSource.verify`), and the object must
        have the sidecar's size and sha256 and decompress to its ``uncompressed_bytes`` within ``max_archive_bytes``;
        after converting, the rows must number the sidecar's ``record_count``.
        """
        key = archive['key']
        sidecar = text = None
        try:
            sidecar = self.bucket.json_object(key + fmt.SIDECAR_SUFFIX).read() if archive.get('has_sidecar', True) else None
            self.source.verify(key, sidecar)
            expected_records = fmt.sidecar_int(key, sidecar, 'record_count')
            body = self.bucket.get(key)
            fmt.verify_body(key, body, sidecar)
            text = fmt.decompress(key, body, self.params['max_archive_bytes'],
                                  fmt.sidecar_int(key, sidecar, 'uncompressed_bytes'), self.params['max_record_bytes'])
            del body
            if sidecar and sidecar.get('columns'):
                archived = [(c['name'], c.get('type')) for c in sidecar['columns']]
            else:
                lines = archive_copy.first_line(text)
                archived = [(name, None) for name in archive_copy.first_line_columns(key, lines)]
                self._check_metadata(key, lines)
            try:
                plan = plan_columns(self.params['schema_migration_strategy'], archived, self.columns)
            except fmt.ArchiveFileError as exc:
                raise fmt.ArchiveFileError('%s: %s' % (key, exc.msg))
            converter = self._converter(plan['copy'], [name for name, archived_type in archived])
            data, records = converter.convert_text(key, text)
            if expected_records is not None and records != expected_records:
                raise fmt.ArchiveFileError('%s holds %d rows, its sidecar says %d; the object is damaged or was replaced. '
                                           'No row of it was written.' % (key, records, expected_records))
            return Prepared(archive, sidecar, plan, data, records)
        except PgopsError as exc:
            return Prepared(archive, error=exc.msg, records=_known_records(sidecar, text))
        except Exception as exc:  # pylint: disable=broad-except  # one bad file must not stop the others
            return Prepared(archive, error='%s: %s: %s' % (key, type(exc).__name__, exc),
                            records=_known_records(sidecar, text))

    def _converter(self, columns, archived):
        signature = (tuple(columns), tuple(archived))
        if signature not in self._converters:
            self._converters[signature] = archive_copy.CopyConverter(
                columns, [c.name for c in self.columns if c.not_null], archived,
                known_only=self.params['schema_migration_strategy'] == 'strict',
                max_record_bytes=self.params['max_record_bytes'])
        return self._converters[signature]

    def _check_metadata(self, key, lines):
        """An archive without a sidecar says which table it came from only in its rows' metadata fields: refuse one
        whose first row names another database or table."""
        if not lines:
            return
        row = archive_copy.decode_object(key, lines[0], 1)
        for field, wanted in (('_source_database', self.source.database), ('_source_table', self.source.table)):
            raw = row.get(field)
            if raw is not None and bytes(raw) != b'null' and msgspec_decode(raw) != wanted:
                raise fmt.ArchiveFileError('%s: archived from another table: its rows say %s %s (not %s). No row of it '
                                           'was written.' % (key, field, fmt.json_text(msgspec_decode(raw)),
                                                             fmt.json_text(wanted)))

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
            edges = archive_copy.edge_rows(item.data, [names.index(c) for c in self.conflict_columns])
            if edges is not None:
                rows = [sql.SQL('({})').format(sql.SQL(', ').join(
                    sql.SQL('{}::{}').format(sql.Literal(value), sql.SQL(self.types[c]))
                    for value, c in zip(edge, self.conflict_columns))) for edge in edges]
                try:
                    cursor.execute(sql.SQL('SELECT NOT EXISTS (SELECT 1 FROM {} WHERE ({}) IN ({}, {}))').format(
                        self.relation.ident, sql.SQL(', ').join(sql.Identifier(c) for c in self.conflict_columns),
                        *rows))
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
            sql.SQL('{} {}').format(sql.Identifier(n), sql.SQL(t)) for n, t in zip(names, stage_types))))
        self._copy(cursor, stage, names, item.data)
        values = sql.SQL(', ').join(
            sql.SQL('CAST(s.{} AS {})').format(sql.Identifier(n), sql.SQL(self.types[n])) if n in casts
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
                cursor.execute(sql.SQL('SELECT count(CAST(s.{} AS {})) FROM {} AS s').format(
                    sql.Identifier(name), sql.SQL(self.types[name]), sql.Identifier(STAGE)))
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


class Prefetcher:
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


def load_all(result, params, conn, restorer, watermark, previous, todo, barrier=None):
    """Copy every planned archive, committing every ``commit_frequency`` files and moving the watermark.

    Durability (see :func:`commit`): transactions commit asynchronously, except the one that holds the last
    archive and those after which the S3 watermark is written; ``unflushed`` tracks whether rows committed
    asynchronously may still be only in memory, and the run waits for their WAL flush before it ends.
    """
    total = int((previous or {}).get('total_archives_restored') or 0)
    mark = watermark_order(previous)
    contiguous, pending_mark, in_transaction, wrote, unflushed = True, None, 0, False, False
    writer = WatermarkWriter(watermark.s3) if watermark and watermark.uses_s3 else None
    prefetch = Prefetcher(restorer, todo)
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
                    if connection_lost(conn):
                        raise
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
                commit(conn, cursor, durable=s3_now or last)
                _note_committed(result)
                if wrote:
                    unflushed = not (s3_now or last)
                _publish(result, watermark, pending_mark, writer if s3_now else None)
                in_transaction, wrote = 0, False
        if in_transaction or (watermark and pending_mark is not None and watermark.uses_database):
            if watermark and pending_mark is not None and watermark.uses_database:
                watermark.write_database(cursor, pending_mark)
                wrote = True
            commit(conn, cursor, durable=True)
            _note_committed(result)
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


def _note_committed(result):
    """Copy the counters of what the transactions so far committed into ``result['committed']`` (what a run that
    loses its connection later reports)."""
    result['committed'] = dict(files=sum(1 for f in result['files'] if f.get('status') == 'restored'),
                               records_restored=result['records_restored'], records_skipped=result['records_skipped'])


def lost_connection_error(result, exc, started):
    """The :class:`PgopsError` of a run whose connection to PostgreSQL was lost while loading: it says what had
    committed (``changed`` when any row had) and that the files in the open transaction were rolled back."""
    committed = result.get('committed') or dict(files=0, records_restored=0, records_skipped=0)
    current = [f for f in result['files'] if f.get('status') in ('restored', None)][committed['files']:]
    for entry in current:
        entry.update(status='rolled_back', restored=0, skipped=0)
    details = dict((k, v) for k, v in result.items() if k != 'changed')
    details.update(changed=committed['records_restored'] > 0, connection_lost=True,
                   records_restored=committed['records_restored'], records_skipped=committed['records_skipped'],
                   duration_ms=int((time.monotonic() - started) * 1000))
    return PgopsError('Lost the connection to PostgreSQL while restoring (%s). Committed before that: %d file(s), %d '
                      'row(s) restored; the open transaction (%d file(s)) was rolled back. If the server itself crashed, '
                      'the last second of asynchronous commits may be lost with it. Run the restore again: the '
                      'watermark and conflict_strategy skip bring back exactly what is missing.'
                      % (pg_error_text(exc) if isinstance(exc, psycopg2.Error) else exc, committed['files'],
                         committed['records_restored'], len(current)), **details)


def connection_lost(conn):
    """True when ``conn`` is closed or in an unknown state (the server went away), not merely in a failed
    transaction (an error such as a program limit, SQLSTATE class 54, leaves it usable after a rollback)."""
    return bool(conn.closed) or conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN


def commit(conn, cursor, durable):
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
