# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the ``table_archive`` module: move rows older than a cutoff to S3, one verified batch at a time.

Each batch is one transaction that locks its rows (``SELECT ... FOR UPDATE``), uploads them, and deletes
them only after the upload is verified. A ``<key>.pending`` marker written before the upload and removed
after the commit lets the next run finish or undo a batch that a crash interrupted, so no row is lost
and none is archived twice (see :meth:`Archiver.recover_pending`).

Keys hold the database, schema and table (format 2 of ``docs/archive-format.md``), one run per table holds a
session advisory lock, and the marker, the batch and its sidecar are written with ``If-None-Match: *``: two runs,
on any two tables, never write one key, and a run only ever deletes objects it wrote itself or that a marker
under its own table's prefix names.
"""

from __future__ import annotations

import time

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive.recovery import Recovery
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import (
    primary_key, system_identifier, table_columns)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text, pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import advisory_lock_key, transaction
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import resolve_schema_table
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import ObjectExists, client_from_params
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec
from ansible_collections.pgops.resilience.plugins.module_utils._pg.expression import (
    check_boolean_expression, expression_sql)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # reported by connect()
    psycopg2 = None
    sql = None

# Session settings that make row_to_json's text the same whatever the role's defaults are: timestamps
# with a +00:00 offset, bytea as \x hex, floats with the shortest exact digits (PostgreSQL docs,
# "Client Connection Defaults").
# standard_conforming_strings: the where expression was checked reading '...' as standard strings, and a where that
# switched the session's setting off (set_config) could otherwise have the next batch's statement read differently.
_SESSION = ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL bytea_output = 'hex'", 'SET LOCAL extra_float_digits = 1',
            "SET LOCAL IntervalStyle = 'postgres'", 'SET LOCAL standard_conforming_strings = on')


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


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(dict(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE))


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


# Column types whose row_to_json value is not their text output, so archive_restore could not read them back:
# composite types (and domains over them, and arrays of either), written as JSON objects, and types with a cast to
# json or jsonb, which to_json uses (PostgreSQL docs, "JSON Functions and Operators", to_json; hstore has one).
_UNRESTORABLE_COLUMNS = """
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem AND t.typcategory = 'A'
WHERE a.attrelid = pg_catalog.to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
  AND EXISTS (
    SELECT 1 FROM pg_catalog.pg_type x
    WHERE x.oid IN (t.oid, t.typbasetype, e.oid, e.typbasetype)
      AND x.oid NOT IN ('json'::pg_catalog.regtype, 'jsonb'::pg_catalog.regtype)
      AND (x.typtype = 'c' OR EXISTS (
        SELECT 1 FROM pg_catalog.pg_cast c
        WHERE c.castsource = x.oid AND c.casttarget IN ('json'::pg_catalog.regtype, 'jsonb'::pg_catalog.regtype))))
ORDER BY a.attnum
"""
# Foreign keys whose ON DELETE action would change rows of another table when a batch's rows are deleted (CASCADE,
# SET NULL, SET DEFAULT), those rows not being in the archive; with the leaf tables whose counters show it
# (pg_stat_xact_user_tables counts per leaf partition; pg_partition_tree lists nothing for a table that is not
# partitioned). PostgreSQL docs, 5.4.5 "Foreign Keys".
_CASCADING_REFERENCES = """
SELECT c.conrelid::pg_catalog.regclass::text, c.confdeltype,
       ARRAY(SELECT c.conrelid UNION
             SELECT p.relid FROM pg_catalog.pg_partition_tree(c.conrelid) AS p WHERE p.isleaf)::pg_catalog.oid[]
FROM pg_catalog.pg_constraint AS c
WHERE c.contype = 'f' AND c.conparentid = 0 AND c.confdeltype IN ('c', 'n', 'd')
  AND c.confrelid IN (SELECT pg_catalog.to_regclass(%(table)s) UNION
                      SELECT p.relid FROM pg_catalog.pg_partition_tree(pg_catalog.to_regclass(%(table)s)) AS p)
ORDER BY 1
"""
_DELETE_ACTIONS = dict(c='ON DELETE CASCADE', n='ON DELETE SET NULL', d='ON DELETE SET DEFAULT')


class Archiver:
    """One run of ``table_archive`` on one table.

    :param params: the module parameters.
    :param conn: psycopg2 connection (autocommit on).
    :param bucket: :class:`Bucket`.
    :raises PgopsError: before any row is touched, for a table or column that ``archive_restore`` could not bring
        back (a column named like a metadata field, a type whose JSON is not its text), a missing key, or a ``where``
        that is not one boolean expression.
    """

    def __init__(self, params, conn, bucket):
        self.params = params
        self.conn = conn
        self.bucket = bucket
        with pg_errors('reading the definition of %s' % params['table']), conn.cursor() as cursor:
            self.relation = resolve_schema_table(cursor, params['schema'], params['table'])
            self.columns = [c for c in table_columns(cursor, self.relation) if not c.generated]
            self.key_columns = params.get('key_columns') or primary_key(cursor, self.relation)
            cursor.execute('SELECT pg_catalog.current_database()')
            self.database = params.get('database') or cursor.fetchone()[0]
            cursor.execute(_UNRESTORABLE_COLUMNS, [self.relation.ident.as_string(cursor)])
            unrestorable = cursor.fetchall()
            cursor.execute(_CASCADING_REFERENCES, dict(table=self.relation.ident.as_string(cursor)))
            self.cascading = cursor.fetchall()
            # Rows of inheritance children have columns the parent's archive would not hold: the parent's own only.
            cursor.execute("SELECT c.relkind = 'r' AND EXISTS (SELECT 1 FROM pg_catalog.pg_inherits AS i WHERE i.inhparent = c.oid),"
                           " pg_catalog.current_setting('track_counts')::boolean, pg_catalog.current_database()"
                           ' FROM pg_catalog.pg_class AS c WHERE c.oid = pg_catalog.to_regclass(%s)',
                           [self.relation.ident.as_string(cursor)])
            self.only, track_counts, self.current_database = cursor.fetchone()
            self.system_identifier = system_identifier(conn)
        self.table = sql.SQL('ONLY {}').format(self.relation.ident) if self.only else self.relation.ident
        self._refuse_unrestorable(unrestorable)
        if self.cascading and not track_counts:
            raise PgopsError('table %s is referenced with %s, and with track_counts off the rows those deletions would '
                             'change in other tables cannot be seen; nothing was archived.'
                             % (self.relation.display, _references_text(self.cascading)))
        if params.get('where'):
            check_boolean_expression(conn, self.relation, params['where'], 'where')
        types = dict((c.name, c.type) for c in self.columns)
        if not self.key_columns:
            raise PgopsError('table %s has no primary key: give key_columns, columns that identify a row, so that '
                             'exactly the archived rows are deleted.' % self.relation.display)
        for name in self.key_columns + ([params['date_column']] if params.get('date_column') else []):
            if name not in types:
                raise PgopsError('table %s has no column %r (key_columns / date_column); its columns are: %s.'
                                 % (self.relation.display, name, ', '.join(sorted(types))))
        self.key_types = [types[name] for name in self.key_columns]
        self.prefix = fmt.table_prefix(params['prefix'], self.database, self.relation.schema, self.relation.name)
        self.legacy_prefix = fmt.legacy_table_prefix(params['prefix'], self.database, self.relation.name)

    def _refuse_unrestorable(self, unrestorable):
        """Refuse columns ``archive_restore`` could not bring back, before a row is touched."""
        clashing = [c.name for c in self.columns if c.name in fmt.METADATA_COLUMNS]
        if clashing:
            raise PgopsError('table %s has column(s) %s, named like the metadata fields every archived row carries (%s), '
                             'so their values could not be told apart on restore. Rename the column(s) or archive the '
                             'table another way; nothing was archived.'
                             % (self.relation.display, ', '.join(clashing), ', '.join(fmt.METADATA_COLUMNS)))
        if unrestorable:
            raise PgopsError('table %s has column(s) whose JSON form is not their text form, which archive_restore could '
                             'not read back: %s. Composite types and types with a cast to json (such as hstore) are not '
                             'supported; nothing was archived.'
                             % (self.relation.display, ', '.join('%s (%s)' % (fmt.json_text(n), t) for n, t in unrestorable)))

    # Values go into these statements as sql.Literal, and they are run without a parameter list: psycopg2 would
    # otherwise read a % in a quoted identifier (a column named "50%") as the start of a placeholder.

    def condition(self):
        """The WHERE clause for the rows to archive (``sql.Composed``, values as literals)."""
        params = self.params
        parts = []
        if params.get('older_than'):
            parts.append(sql.SQL('t.{} < pg_catalog.now() - {}::interval').format(
                sql.Identifier(params['date_column']), sql.Literal(params['older_than'])))
        elif params.get('before'):
            parts.append(sql.SQL('t.{} < {}::timestamptz').format(
                sql.Identifier(params['date_column']), sql.Literal(params['before'])))
        if params.get('where'):
            # Checked by check_boolean_expression in __init__: one boolean expression, no ; or unbalanced ).
            parts.append(expression_sql(params['where']))
        return sql.SQL(' AND ').join(parts)

    def count(self):
        """Rows that match the cutoff now (int), under the session settings of a batch (``before`` is read in
        UTC there, so check mode counts the rows a run would archive)."""
        with pg_errors('counting the rows to archive in %s' % self.relation.display), transaction(self.conn) as cursor:
            for statement in _SESSION:
                cursor.execute(statement)
            cursor.execute(sql.SQL('SELECT count(*) FROM {} AS t WHERE ').format(self.table) + self.condition())
            return cursor.fetchone()[0]

    def _select(self):
        where = self.condition()
        names = [sql.Identifier(c.name) for c in self.columns]
        date = self.params.get('date_column')
        # x.* is the whole row even when the table has a column named x (a bare x would be that column).
        query = sql.SQL('SELECT pg_catalog.row_to_json(x.*)::text, {keys}, {date} FROM (SELECT {cols} FROM {table} AS t'
                        ' WHERE {where} ORDER BY {order} LIMIT {limit} FOR UPDATE OF t) AS x').format(
            keys=sql.SQL(', ').join(sql.SQL('x.{}::text').format(sql.Identifier(k)) for k in self.key_columns),
            date=sql.SQL('x.{}').format(sql.Identifier(date)) if date else sql.SQL('NULL'),
            cols=sql.SQL(', ').join(sql.SQL('t.{}').format(n) for n in names), table=self.table, where=where,
            order=sql.SQL(', ').join(sql.SQL('t.{}').format(sql.Identifier(k)) for k in self.key_columns),
            limit=sql.Literal(self.params['batch_size']))
        return query

    # The key values come as one text[] per key column, zipped by ROWS FROM: the multi-array form of unnest
    # only exists unqualified (PostgreSQL docs, "Table Functions"), and pg_catalog.unnest(a, b) does not.

    def _key_match(self, key_values):
        """``(key columns) IN (...)`` for ``key_values`` (one list of text per key column), as ``sql.Composed``."""
        aliases = [sql.Identifier('k%d' % i) for i in range(len(self.key_columns))]
        return sql.SQL('({cols}) IN (SELECT {casts} FROM ROWS FROM ({arrays}) AS u({aliases}))').format(
            cols=sql.SQL(', ').join(sql.Identifier(k) for k in self.key_columns),
            casts=sql.SQL(', ').join(sql.SQL('u.{}::{}').format(a, sql.SQL(t)) for a, t in zip(aliases, self.key_types)),
            arrays=sql.SQL(', ').join(sql.SQL('pg_catalog.unnest({}::text[])').format(sql.Literal(values))
                                      for values in key_values),
            aliases=sql.SQL(', ').join(aliases))

    def _delete(self, cursor, key_values):
        """Delete the rows whose key columns hold ``key_values`` (one list of text per key column)."""
        cursor.execute(sql.SQL('DELETE FROM {} WHERE ').format(self.table) + self._key_match(key_values))
        return cursor.rowcount

    def count_keys(self, cursor, key_values):
        """How many of the rows named by ``key_values`` (one list of text per key column) exist (int)."""
        cursor.execute(sql.SQL('SELECT count(*) FROM {} WHERE ').format(self.table) + self._key_match(key_values))
        return cursor.fetchone()[0]

    def _referencing_changes(self, cursor):
        """Rows deleted or updated so far in this transaction in the tables whose foreign keys cascade from this one
        (dict table -> count; empty when there are none)."""
        if not self.cascading:
            return {}
        leaves = dict((oid, name) for name, action, oids in self.cascading for oid in oids)
        cursor.execute('SELECT relid, n_tup_del + n_tup_upd FROM pg_catalog.pg_stat_xact_user_tables'
                       ' WHERE relid = ANY(%s::pg_catalog.oid[])', [list(leaves)])
        changes = {}
        for oid, count in cursor.fetchall():
            changes[leaves[oid]] = changes.get(leaves[oid], 0) + count
        return changes

    def _refuse_cascades(self, before, after):
        """Refuse a batch whose deletion changed rows of other tables through their foreign keys: those rows are in
        no archive (the batch is rolled back by the caller)."""
        changed = dict((name, after.get(name, 0) - before.get(name, 0)) for name in after)
        changed = dict((name, count) for name, count in changed.items() if count)
        if changed:
            raise PgopsError('deleting these rows would also delete or change %s through %s; those rows are in no '
                             'archive, so nothing was deleted. Archive the referencing table(s) first, or change the '
                             'foreign key.' % (', '.join('%d row(s) of %s' % (n, t) for t, n in sorted(changed.items())),
                                               _references_text(self.cascading)))

    def archive_batch(self, archived_at, number):
        """Archive one batch: lock its rows, write the marker, upload and verify the batch and its sidecar, delete
        the rows, commit, remove the marker.

        :returns: dict describing the batch, or ``None`` when no row matches any more.
        :raises KeyTaken: when another run already wrote this batch's key (nothing was changed).
        :raises BatchError: when a step fails; before the commit the transaction is rolled back and the objects
            this batch wrote are removed (or, when that fails too, left with their marker for the next run); a
            failed commit leaves the batch in doubt, with its marker, for the next run to resolve.
        """
        stamp = isoformat_z(archived_at)
        key = fmt.batch_key(self.params['prefix'], self.database, self.relation.schema, self.relation.name, archived_at,
                            number)
        batch_id = fmt.batch_id(self.database, self.relation.schema, self.relation.name, archived_at, number)
        marker = key + fmt.PENDING_SUFFIX
        what = 'batch %d of %s' % (number, self.relation.display)
        created = []
        try:
            try:
                # Inside the guard: with the server gone, psycopg2 raises here already.
                self.conn.autocommit = False
                with self.conn.cursor() as cursor:
                    rows = self._lock_rows(cursor)
                    if not rows:
                        self.conn.rollback()
                        return None
                    body, count, sidecar = self._encode(key, batch_id, stamp, rows)
                    # The marker first: whatever happens after it, the next run knows this batch was under way, and by
                    # which transaction (its fate tells the next run whether the batch committed).
                    cursor.execute('SELECT pg_catalog.txid_current()::text')
                    document = dict(batch_id=batch_id, started_at=stamp, xid=cursor.fetchone()[0],
                                    database=self.current_database, system_identifier=self.system_identifier)
                    _write_new(created, marker, lambda: self.bucket.json_object(marker).write(document, only_if_absent=True))
                    _write_new(created, key, lambda: self.bucket.put_verified(key, body, 'application/gzip',
                                                                              only_if_absent=True))
                    _write_new(created, key + fmt.SIDECAR_SUFFIX, lambda: self.bucket.json_object(
                        key + fmt.SIDECAR_SUFFIX).write(sidecar, only_if_absent=True))
                    width = len(self.key_columns)
                    before = self._referencing_changes(cursor)
                    deleted = self._delete(cursor, [[r[1 + i] for r in rows] for i in range(width)])
                    self._refuse_cascades(before, self._referencing_changes(cursor))
                    if deleted != count:
                        raise PgopsError('deleted %d rows but archived %d; rolled back. Do key_columns (%s) identify one '
                                         'row each?' % (deleted, count, ', '.join(self.key_columns)))
            except BaseException as exc:
                # The marker last: while any object of the batch may be left, the marker says whose it is.
                left = self._abandon(created[1:] + created[:1])
                if isinstance(exc, ObjectExists) and not created:
                    raise KeyTaken(exc.msg)
                raise self._batch_error(what, exc, left)
            try:
                self.conn.commit()
            except psycopg2.Error as exc:
                raise BatchError('Committing %s failed: %s. Whether it committed is not known: its objects and the '
                                 'marker %s stay, and the next run completes or undoes it.' % (what, pg_error_text(exc), marker),
                                 connection_lost=self._lost(), in_doubt=key)
        finally:
            if not self._lost():
                self.conn.autocommit = True
        # Committed: the rows live only in the archive now.
        batch = dict(key=key, records=count, sha256=sidecar['sha256'], size_bytes=sidecar['size_bytes'],
                     date_min=sidecar['date_min'], date_max=sidecar['date_max'])
        try:
            self.bucket.delete(marker)
        except PgopsError as exc:
            raise BatchError('%s was committed, but its marker could not be removed (%s); the next run removes it.'
                             % (what, exc.msg), committed=batch)
        return batch

    def _lock_rows(self, cursor):
        """Run the batch's ``SELECT ... FOR UPDATE`` under the session settings of :data:`_SESSION` (list of rows)."""
        for statement in _SESSION:
            cursor.execute(statement)
        cursor.execute('SELECT pg_catalog.set_config(%s, %s, true)', ['lock_timeout', '%ds' % self.params['lock_timeout']])
        cursor.execute(self._select())
        return cursor.fetchall()

    def _encode(self, key, batch_id, stamp, rows):
        """``(body, record count, sidecar document)`` of the locked ``rows``."""
        width = len(self.key_columns)
        suffix = fmt.metadata_suffix(stamp, batch_id, self.database, self.relation.name)
        body, count, size = fmt.encode_batch((r[0] for r in rows), suffix)
        dates = [r[1 + width] for r in rows if r[1 + width] is not None]
        sidecar = fmt.sidecar_document(
            key, body, count, [(c.name, c.type) for c in self.columns],
            dict(database=self.database, schema=self.relation.schema, table=self.relation.name), batch_id, stamp,
            self.params.get('date_column'), _iso(min(dates)) if dates else None, _iso(max(dates)) if dates else None,
            self.key_columns, uncompressed_bytes=size)
        return body, count, sidecar

    def _lost(self):
        """True when the connection to PostgreSQL is gone (closed, or in an unknown state)."""
        return bool(self.conn.closed) or \
            self.conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN

    def _abandon(self, created):
        """Roll the batch's transaction back and delete the objects it wrote (the marker last).

        The transaction cannot have committed, even when the connection is gone: COMMIT was not sent.

        :returns: the keys left in S3 because deleting them failed (the marker among them, so the next run removes
            them).
        """
        if not self._lost():
            try:
                self.conn.rollback()
            except psycopg2.Error:
                pass  # the connection went away just now: the server rolls back by itself
        for index, key in enumerate(created):
            try:
                self.bucket.delete(key)
            except PgopsError:
                return created[index:]
        return []

    def _batch_error(self, what, exc, left):
        """A :class:`BatchError` for ``exc`` raised while archiving ``what`` (rolled back)."""
        if isinstance(exc, psycopg2.Error):
            reason = 'PostgreSQL error: %s' % pg_error_text(exc)
        elif isinstance(exc, PgopsError):
            reason = exc.msg
        elif isinstance(exc, Exception):
            reason = '%s: %s' % (type(exc).__name__, exc)
        else:
            raise exc  # KeyboardInterrupt, SystemExit: after the clean-up above
        note = ' Could not remove %s; the next run does.' % ', '.join(left) if left else ''
        return BatchError('%s failed and was rolled back: %s.%s' % (what, reason.rstrip('.'), note),
                          connection_lost=self._lost())


class KeyTaken(PgopsError):
    """Another run already wrote the first object of a batch key; nothing was changed."""


class BatchError(PgopsError):
    """A batch failed: ``committed`` (the batch dict, when it committed before a later step failed), ``in_doubt``
    (its key, when the commit itself failed) and ``connection_lost`` (bool)."""

    def __init__(self, msg, committed=None, in_doubt=None, connection_lost=False):
        super().__init__(msg)
        self.committed = committed
        self.in_doubt = in_doubt
        self.connection_lost = connection_lost


def _write_new(created, key, write):
    """Run ``write()``, which puts the object ``key`` only if absent, with ``key`` in ``created`` first: a write that
    fails after the store took the object (a lost answer, a failed check) still leaves it to be removed. An object that
    was there already (``ObjectExists``) is not this run's, and is never removed."""
    created.append(key)
    try:
        write()
    except ObjectExists:
        created.remove(key)
        raise


def _references_text(cascading):
    """``ON DELETE CASCADE of public.items, ...`` for the rows of :data:`_CASCADING_REFERENCES`."""
    return ', '.join('%s of %s' % (_DELETE_ACTIONS[action], name) for name, action, oids in cascading)


def _iso(value):
    return value.isoformat() if hasattr(value, 'isoformat') else str(value)


def archive_rows(params, check_mode=False):
    """Run ``table_archive``: see the module's documentation for options and return values.

    :returns: dict, the module result.
    :raises PgopsError: for bad options, connection and S3 failures, and failed batches; then the details hold the
        batches already committed (``batches``), ``changed`` (true when any did), ``connection_lost`` and, when the
        connection went away during a commit, the batch ``in_doubt``.
    """
    validate(params)
    fmt.require_msgspec()
    started = time.monotonic()
    # Check mode counts rows only: every transaction of its session is READ ONLY.
    conn = connect(params, read_only=check_mode)
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
            recovery = Recovery(archiver)
            result['unresolved_markers'], result['warnings'] = recovery.unresolved_markers()
            result.update(would_archive_records=rows, would_write_batches=batches,
                          pending_markers=[m for m in recovery.pending_markers() if m not in result['unresolved_markers']])
            # What a run would do: archive rows, or resolve interrupted batches.
            result['changed'] = bool(rows or result['pending_markers'])
            return result
        with _table_lock(conn, archiver):
            try:
                _archive(archiver, result)
            except BatchError as exc:
                raise _failed(result, exc, started)
            except PgopsError as exc:
                raise PgopsError(exc.msg, **_partial(result, started, connection_lost=archiver._lost()))
        result['duration_ms'] = int((time.monotonic() - started) * 1000)
        return result
    finally:
        conn.close()


def _archive(archiver, result):
    """Resolve interrupted batches, then archive batch after batch into ``result`` until no row matches or
    ``max_batches`` is reached."""
    params = archiver.params
    recovery = Recovery(archiver)
    result['recovered'] = recovery.recover_pending()
    result['changed'] = bool(result['recovered'])
    result['unresolved_markers'], result['warnings'] = recovery.unresolved_markers()
    archived_at = _fresh_run_time(archiver)
    number = 0
    while params.get('max_batches') is None or number < params['max_batches']:
        number += 1
        try:
            batch = archiver.archive_batch(archived_at, number)
        except KeyTaken:
            if number > 1:
                raise
            # Another writer took this second's first key between the check and the marker: take the next second.
            archived_at, number = _fresh_run_time(archiver, after=archived_at), 0
            continue
        if batch is None:
            break
        _add_batch(result, batch)


def _add_batch(result, batch):
    result['batches'].append(batch)
    result['keys'].append(batch['key'])
    result['records_archived'] += batch['records']
    result['changed'] = True


def _failed(result, exc, started):
    """The :class:`PgopsError` of a run stopped by the :class:`BatchError` ``exc``, with what committed before."""
    if exc.committed:
        _add_batch(result, exc.committed)
    done = '%d batch(es), %d row(s), were archived and committed before it' % (len(result['batches']),
                                                                               result['records_archived'])
    if exc.connection_lost:
        msg = 'Lost the connection to PostgreSQL: %s %s; they are listed in batches. Run table_archive again when the ' \
              'server is back: it resolves any interrupted batch from its .pending marker.' % (exc.msg, done)
    else:
        msg = '%s %s (listed in batches).' % (exc.msg, done)
    return PgopsError(msg, **_partial(result, started, connection_lost=exc.connection_lost, in_doubt=exc.in_doubt))


def _partial(result, started, **extra):
    details = dict(changed=result['changed'], batches=result['batches'], keys=result['keys'],
                   records_archived=result['records_archived'], recovered=result.get('recovered', []),
                   duration_ms=int((time.monotonic() - started) * 1000))
    details.update(extra)
    return details


class _table_lock:
    """Session-level advisory lock on the table for the whole run: two archivers of one table would
    otherwise race for the same key names and pending markers. Released by the session's end when the
    connection is gone, so leaving never hides the error that is on its way."""

    def __init__(self, conn, archiver):
        self.conn = conn
        self.archiver = archiver
        self.key = advisory_lock_key('pgops.resilience.table_archive', archiver.database, archiver.relation.schema,
                                     archiver.relation.name)
        self.display = archiver.relation.display

    def __enter__(self):
        with pg_errors('taking the advisory lock of %s' % self.display), self.conn.cursor() as cursor:
            cursor.execute('SELECT pg_catalog.pg_try_advisory_lock(%s)', [self.key])
            if not cursor.fetchone()[0]:
                raise PgopsError('Another table_archive run holds the lock of %s (advisory lock %d); try again when it '
                                 'has finished.' % (self.display, self.key))
        return self

    def __exit__(self, exc_type, exc, traceback):
        if self.archiver._lost():
            return
        try:
            with self.conn.cursor() as cursor:
                cursor.execute('SELECT pg_catalog.pg_advisory_unlock(%s)', [self.key])
        except psycopg2.Error as error:
            if exc_type is None:
                raise PgopsError('Could not release the advisory lock of %s: %s' % (self.display, pg_error_text(error)))


def _fresh_run_time(archiver, after=None):
    """The run's timestamp (whole seconds, UTC, later than ``after``), moved on until no object of this table
    carries it: two runs in the same second would otherwise write the same keys."""
    while True:
        archived_at = utc_now().replace(microsecond=0)
        if after is not None and archived_at <= after:
            time.sleep(0.2)
            continue
        first = fmt.batch_key(archiver.params['prefix'], archiver.database, archiver.relation.schema,
                              archiver.relation.name, archived_at, 1)
        if not archiver.bucket.exists(first) and not archiver.bucket.exists(first + fmt.PENDING_SUFFIX):
            return archived_at
        time.sleep(1)
