# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the ``table_archive`` module: move rows older than a cutoff to S3, one verified batch at a time.

Each batch is one transaction that locks its rows (``SELECT ... FOR UPDATE``), uploads them, and deletes
them only after the upload is verified. A ``<key>.pending`` marker written before the upload and removed
after the commit lets the next run finish or undo a batch that a crash interrupted, so no row is lost
and none is archived twice (see :func:`recover_pending`).
"""

from __future__ import annotations

import time

from ansible_collections.pgops.resilience.plugins.module_utils import archive_format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import (
    advisory_lock_key, connect, pg_errors, primary_key, resolve_schema_table, table_columns, transaction)
from ansible_collections.pgops.resilience.plugins.module_utils.s3 import Bucket, client_from_params, s3_connection_spec

try:
    from psycopg2 import sql
except ImportError:  # reported by connect()
    sql = None

# Session settings that make row_to_json's text the same whatever the role's defaults are: timestamps
# with a +00:00 offset, bytea as \x hex, floats with the shortest exact digits (PostgreSQL docs,
# "Client Connection Defaults").
_SESSION = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL bytea_output = 'hex'", 'SET LOCAL extra_float_digits = 1',
            "SET LOCAL IntervalStyle = 'postgres'")


def argument_spec():
    """The module's own options (connection and S3 options are added by the module).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    spec = dict(
        table=dict(type='str', required=True),
        schema=dict(type='str', default='public'),
        database=dict(type='str'),
        bucket=dict(type='str', required=True),
        prefix=dict(type='str', default=fmt.DEFAULT_PREFIX),
        date_column=dict(type='str'),
        older_than=dict(type='str'),
        before=dict(type='str'),
        where=dict(type='str'),
        batch_size=dict(type='int', default=10000),
        max_batches=dict(type='int'),
        key_columns=dict(type='list', elements='str', no_log=False),
        lock_timeout=dict(type='int', default=30),
    )
    spec.update(s3_connection_spec())
    return spec


MUTUALLY_EXCLUSIVE = [('older_than', 'before')]


def validate(params):
    """Check option combinations that the argument spec cannot express.

    :raises PgopsError: naming the options.
    """
    cutoff = params.get('older_than') or params.get('before')
    if params.get('date_column') and not cutoff:
        raise PgopsError('date_column needs older_than (an interval such as "90 days") or before (a date or timestamp).')
    if cutoff and not params.get('date_column'):
        raise PgopsError('older_than and before compare date_column with the cutoff: set date_column too.')
    if not cutoff and not params.get('where'):
        raise PgopsError('Say which rows to archive: date_column with older_than or before, or a where expression '
                         '(where: "true" archives every row).')
    if params['batch_size'] < 1:
        raise PgopsError('batch_size must be at least 1 (rows per archive object); the default is 10000.')
    if params.get('max_batches') is not None and params['max_batches'] < 1:
        raise PgopsError('max_batches must be at least 1, or left unset to archive every matching row.')


class Archiver:
    """One run of ``table_archive`` on one table.

    :param params: the module parameters.
    :param conn: psycopg2 connection (autocommit on).
    :param bucket: :class:`Bucket`.
    """

    def __init__(self, params, conn, bucket):
        self.params = params
        self.conn = conn
        self.bucket = bucket
        with conn.cursor() as cursor:
            self.relation = resolve_schema_table(cursor, params['schema'], params['table'])
            self.columns = [c for c in table_columns(cursor, self.relation) if not c.generated]
            self.key_columns = params.get('key_columns') or primary_key(cursor, self.relation)
            cursor.execute('SELECT pg_catalog.current_database()')
            self.database = params.get('database') or cursor.fetchone()[0]
        types = dict((c.name, c.type) for c in self.columns)
        if not self.key_columns:
            raise PgopsError('table %s has no primary key: give key_columns, columns that identify a row, so that '
                             'exactly the archived rows are deleted.' % self.relation.display)
        for name in self.key_columns + ([params['date_column']] if params.get('date_column') else []):
            if name not in types:
                raise PgopsError('table %s has no column %r (key_columns / date_column); its columns are: %s.'
                                 % (self.relation.display, name, ', '.join(sorted(types))))
        self.key_types = [types[name] for name in self.key_columns]
        self.prefix = fmt.table_prefix(params['prefix'], self.database, params['table'])

    def condition(self):
        """The WHERE clause (``sql.Composed``) and its parameters for the rows to archive."""
        params = self.params
        parts, args = [], []
        if params.get('older_than'):
            parts.append(sql.SQL('t.{} < pg_catalog.now() - %s::interval').format(sql.Identifier(params['date_column'])))
            args.append(params['older_than'])
        elif params.get('before'):
            parts.append(sql.SQL('t.{} < %s::timestamptz').format(sql.Identifier(params['date_column'])))
            args.append(params['before'])
        if params.get('where'):
            # An operator-written SQL expression, like the WHERE of a runbook's DELETE: trusted input. Its %
            # (modulo, LIKE patterns) is doubled: the query is run with parameters, where % starts a placeholder.
            parts.append(sql.SQL('(') + sql.SQL(params['where'].replace('%', '%%')) + sql.SQL(')'))
        return sql.SQL(' AND ').join(parts), args

    def count(self):
        """Rows that match the cutoff now (int), under the session settings of a batch (``before`` is read in
        UTC there, so check mode counts the rows a run would archive)."""
        where, args = self.condition()
        with pg_errors('counting the rows to archive in %s' % self.relation.display), transaction(self.conn) as cursor:
            for statement in _SESSION:
                cursor.execute(statement)
            cursor.execute(sql.SQL('SELECT count(*) FROM {} AS t WHERE ').format(self.relation.ident) + where, args)
            return cursor.fetchone()[0]

    def _select(self):
        where, args = self.condition()
        names = [sql.Identifier(c.name) for c in self.columns]
        date = self.params.get('date_column')
        query = sql.SQL('SELECT pg_catalog.row_to_json(x)::text, {keys}, {date} FROM (SELECT {cols} FROM {table} AS t'
                        ' WHERE {where} ORDER BY {order} LIMIT %s FOR UPDATE OF t) AS x').format(
            keys=sql.SQL(', ').join(sql.SQL('x.{}::text').format(sql.Identifier(k)) for k in self.key_columns),
            date=sql.SQL('x.{}').format(sql.Identifier(date)) if date else sql.SQL('NULL'),
            cols=sql.SQL(', ').join(sql.SQL('t.{}').format(n) for n in names), table=self.relation.ident, where=where,
            order=sql.SQL(', ').join(sql.SQL('t.{}').format(sql.Identifier(k)) for k in self.key_columns))
        return query, args + [self.params['batch_size']]

    # The key values come as one text[] per key column, zipped by ROWS FROM: the multi-array form of unnest
    # only exists unqualified (PostgreSQL docs, "Table Functions"), and pg_catalog.unnest(a, b) does not.

    def _key_match(self):
        """``(key columns) IN (...)`` for one ``%s::text[]`` parameter per key column (``sql.Composed``)."""
        aliases = [sql.Identifier('k%d' % i) for i in range(len(self.key_columns))]
        return sql.SQL('({cols}) IN (SELECT {casts} FROM ROWS FROM ({arrays}) AS u({aliases}))').format(
            cols=sql.SQL(', ').join(sql.Identifier(k) for k in self.key_columns),
            casts=sql.SQL(', ').join(sql.SQL('u.{}::' + t).format(a) for a, t in zip(aliases, self.key_types)),
            arrays=sql.SQL(', ').join(sql.SQL('pg_catalog.unnest(%s::text[])') for alias in aliases),
            aliases=sql.SQL(', ').join(aliases))

    def _delete(self, cursor, key_values):
        """Delete the rows whose key columns hold ``key_values`` (one list of text per key column)."""
        cursor.execute(sql.SQL('DELETE FROM {} WHERE ').format(self.relation.ident) + self._key_match(), key_values)
        return cursor.rowcount

    def count_keys(self, cursor, key_values):
        """How many of the rows named by ``key_values`` (one list of text per key column) exist (int)."""
        cursor.execute(sql.SQL('SELECT count(*) FROM {} WHERE ').format(self.relation.ident) + self._key_match(), key_values)
        return cursor.fetchone()[0]

    def archive_batch(self, archived_at, number):
        """Archive one batch: lock, upload, verify, delete, commit.

        :returns: dict describing the batch, or ``None`` when no row matches any more.
        :raises PgopsError: when a step fails; the transaction is rolled back and the uploaded objects are
            removed, so the rows stay in the table.
        """
        stamp = isoformat_z(archived_at)
        key = fmt.batch_key(self.params['prefix'], self.database, self.params['table'], archived_at, number)
        batch_id = '%s_%s_%s_%03d' % (self.database, self.params['table'], archived_at.strftime('%Y%m%dT%H%M%SZ'), number)
        marker = key + fmt.PENDING_SUFFIX
        with pg_errors('archiving batch %d of %s' % (number, self.relation.display)), transaction(self.conn) as cursor:
            for statement in _SESSION:
                cursor.execute(statement)
            cursor.execute('SELECT pg_catalog.set_config(%s, %s, true)', ['lock_timeout', '%ds' % self.params['lock_timeout']])
            query, args = self._select()
            cursor.execute(query, args)
            rows = cursor.fetchall()
            if not rows:
                return None
            width = len(self.key_columns)
            suffix = fmt.metadata_suffix(stamp, batch_id, self.database, self.params['table'])
            body, count = fmt.encode_batch((r[0] for r in rows), suffix)
            dates = [r[1 + width] for r in rows if r[1 + width] is not None]
            sidecar = fmt.sidecar_document(
                key, body, count, [(c.name, c.type) for c in self.columns],
                dict(database=self.database, schema=self.relation.schema, table=self.relation.name), batch_id, stamp,
                self.params.get('date_column'), _iso(min(dates)) if dates else None, _iso(max(dates)) if dates else None,
                self.key_columns)
            # The marker first: whatever happens after it, the next run knows this batch was under way.
            self.bucket.json_object(marker).write(dict(batch_id=batch_id, started_at=stamp))
            try:
                self.bucket.put_verified(key, body, 'application/gzip')
                self.bucket.json_object(key + fmt.SIDECAR_SUFFIX).write(sidecar)
                deleted = self._delete(cursor, [[r[1 + i] for r in rows] for i in range(width)])
                if deleted != count:
                    raise PgopsError('batch %d of %s: deleted %d rows but archived %d; rolled back. Do key_columns (%s) '
                                     'identify one row each?' % (number, self.relation.display, deleted, count,
                                                                 ', '.join(self.key_columns)))
            except BaseException:
                cursor.connection.rollback()
                self.bucket.delete(key, key + fmt.SIDECAR_SUFFIX, marker)
                raise
        # Committed: the rows live only in the archive now.
        self.bucket.delete(marker)
        return dict(key=key, records=count, sha256=sidecar['sha256'], size_bytes=sidecar['size_bytes'],
                    date_min=sidecar['date_min'], date_max=sidecar['date_max'])

    def pending_markers(self):
        """Keys of the ``.pending`` markers left by interrupted runs (list of str)."""
        return [o['key'] for o in self.bucket.list(self.prefix) if o['key'].endswith(fmt.PENDING_SUFFIX)]

    def recover_pending(self):
        """Finish or undo the batches an interrupted run left behind.

        For each marker: when its object is missing or every row of it is still in the table, the batch did not
        commit, and its objects are removed (the rows are archived again by this run); when none of its rows
        is in the table, the batch committed, and only the marker is removed.

        :returns: list of dicts with ``key`` and ``outcome`` (``rolled_back`` or ``completed``).
        :raises PgopsError: when only some of a batch's rows are in the table, which needs a person to look.
        """
        outcomes = []
        for marker in self.pending_markers():
            key = marker[:-len(fmt.PENDING_SUFFIX)]
            body = self.bucket.get(key, missing_ok=True)
            if body is None:
                self.bucket.delete(key + fmt.SIDECAR_SUFFIX, marker)
                outcomes.append(dict(key=key, outcome='rolled_back'))
                continue
            lines = fmt.split_lines(key, fmt.decompress(key, body))
            values = fmt.key_values(key, lines, self.key_columns)
            with pg_errors('checking the interrupted batch %s' % key), transaction(self.conn) as cursor:
                present = self.count_keys(cursor, values)
            if present == len(lines):
                self.bucket.delete(key, key + fmt.SIDECAR_SUFFIX, marker)
                outcomes.append(dict(key=key, outcome='rolled_back'))
            elif present == 0:
                self.bucket.delete(marker)
                outcomes.append(dict(key=key, outcome='completed'))
            else:
                raise PgopsError('%s was interrupted and %d of its %d rows are still in %s: archive and table overlap. '
                                 'Compare them by hand, then delete the object or the rows, and the marker %s.'
                                 % (key, present, len(lines), self.relation.display, marker))
        return outcomes


def _iso(value):
    return value.isoformat() if hasattr(value, 'isoformat') else str(value)


def run(params, check_mode=False):
    """Run ``table_archive``: see the module's documentation for options and return values.

    :returns: dict, the module result.
    :raises PgopsError: for bad options, connection and S3 failures, and failed batches (with the batches
        already committed in ``batches``).
    """
    validate(params)
    fmt.require_msgspec()
    started = time.monotonic()
    conn = connect(params)
    try:
        bucket = Bucket(client_from_params(params), params['bucket'], params.get('endpoint_url'))
        archiver = Archiver(params, conn, bucket)
        result = dict(changed=False, table=archiver.relation.display, database=archiver.database,
                      bucket=params['bucket'], prefix=archiver.prefix, batches=[], keys=[], records_archived=0)
        if check_mode:
            rows = archiver.count()
            batches = -(-rows // params['batch_size'])
            if params.get('max_batches'):
                batches = min(batches, params['max_batches'])
                rows = min(rows, batches * params['batch_size'])
            result.update(would_archive_records=rows, would_write_batches=batches,
                          pending_markers=archiver.pending_markers())
            return result
        with _table_lock(conn, archiver):
            result['recovered'] = archiver.recover_pending()
            result['changed'] = bool(result['recovered'])
            archived_at = _fresh_run_time(archiver)
            number = 0
            while params.get('max_batches') is None or number < params['max_batches']:
                number += 1
                try:
                    batch = archiver.archive_batch(archived_at, number)
                except PgopsError as exc:
                    raise PgopsError(exc.msg, **_partial(result, started))
                if batch is None:
                    break
                result['batches'].append(batch)
                result['keys'].append(batch['key'])
                result['records_archived'] += batch['records']
                result['changed'] = True
        result['duration_ms'] = int((time.monotonic() - started) * 1000)
        return result
    finally:
        conn.close()


def _partial(result, started):
    return dict(batches=result['batches'], keys=result['keys'], records_archived=result['records_archived'],
                duration_ms=int((time.monotonic() - started) * 1000))


class _table_lock:
    """Session-level advisory lock on the table for the whole run: two archivers of one table would
    otherwise race for the same key names and pending markers."""

    def __init__(self, conn, archiver):
        self.conn = conn
        self.key = advisory_lock_key('pgops.resilience.table_archive', archiver.database, archiver.relation.schema,
                                     archiver.relation.name)
        self.display = archiver.relation.display

    def __enter__(self):
        with self.conn.cursor() as cursor:
            cursor.execute('SELECT pg_catalog.pg_try_advisory_lock(%s)', [self.key])
            if not cursor.fetchone()[0]:
                raise PgopsError('Another table_archive run holds the lock of %s (advisory lock %d); try again when it '
                                 'has finished.' % (self.display, self.key))
        return self

    def __exit__(self, *exc):
        with self.conn.cursor() as cursor:
            cursor.execute('SELECT pg_catalog.pg_advisory_unlock(%s)', [self.key])


def _fresh_run_time(archiver):
    """The run's timestamp (whole seconds, UTC), moved on until no object of this table carries it: two runs
    in the same second would otherwise write the same keys."""
    while True:
        archived_at = utc_now().replace(microsecond=0)
        first = fmt.batch_key(archiver.params['prefix'], archiver.database, archiver.params['table'], archived_at, 1)
        if not archiver.bucket.exists(first):
            return archived_at
        time.sleep(1)
