# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Detect that an UNLOGGED cache table came back empty and rebuild it once; record a watermark in S3.

UNLOGGED tables are not written to WAL: crash recovery truncates them, and a standby (so a newly
promoted primary) has them empty (PostgreSQL docs, CREATE TABLE, "UNLOGGED"). The rule implemented here
is the one of the "UNLOGGED Table Restorer" runbook: on a primary, when the target is empty and any
source (entity) table has rows, call the rebuild function, under an advisory lock, in one transaction,
then push a watermark describing what was committed.
"""

from __future__ import annotations

import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.jsonable import jsonable
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import has_column, server_identity
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    StandbyRefusesConnections, connect)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text, pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import (
    advisory_lock_key, transaction, try_advisory_lock, validate_lock_key)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import resolve_function, resolve_table
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged.watermark import (
    PRIMARY_FIELD, watermark_spec, watermark_store)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    psycopg2 = None
    sql = None


WATERMARK_FORMAT = 1
STATES = ('checked', 'rebuilt', 'snapshot')
# Identity fields compared between runs, and the event a change of each one means, most telling first.
_EVENT_FIELDS = (
    ('system_identifier', 'system_changed'),  # another cluster altogether (initdb, or restored from elsewhere)
    ('timeline', 'failover'),                 # a promotion: failover, switchover or PITR
    ('postmaster_start_time', 'restart'),     # same cluster and timeline, server restarted (or crashed)
)


# state=snapshot only writes the watermark, so it needs one.
REQUIRED_IF = [('state', 'snapshot', ['watermark'])]


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(dict(argument_spec=argument_spec(), required_if=REQUIRED_IF))


def argument_spec():
    """The module-specific options of ``pg_unlogged_rebuild`` (the connection options come from
    :func:`~ansible_collections.pgops.resilience.plugins.module_utils._pg.connection.postgres_argument_spec`)."""
    spec = dict(
        state=dict(type='str', default='checked', choices=list(STATES)),
        target_table=dict(type='str', default='kv_store'),
        source_tables=dict(type='list', elements='str', required=True),
        rebuild_function=dict(type='str', default='rebuild_kv_store'),
        lock_key=dict(type='int', no_log=False),
        lock_timeout=dict(type='int', default=30),
        updated_at_column=dict(type='str', default='updated_at'),
        watermark_required=dict(type='bool', default=False),
        current_primary=dict(type='str'),
    )
    spec.update(watermark_spec())
    return spec


def default_lock_key(target):
    """The advisory lock key for a target table when ``lock_key`` is not given.

    Derived from the resolved schema and table name, so ``kv_store`` and ``public.kv_store`` share it;
    advisory locks are already scoped to the current database by PostgreSQL.
    """
    return advisory_lock_key('pgops.resilience', 'pg_unlogged_rebuild', target.schema, target.name)


def identity_record(identity):
    """The JSON-safe part of :func:`server_identity` stored in the watermark."""
    keys = ('system_identifier', 'timeline', 'postmaster_start_time', 'primary_instance', 'lsn', 'server_version', 'database')
    return dict((k, jsonable(identity.get(k))) for k in keys)


def detect_events(previous, current):
    """What happened to the server since the previous watermark.

    :param previous: the previous watermark (dict) or ``None``; fields it lacks (older formats) are not compared.
    :param current: :func:`identity_record` of now, plus ``current_primary`` (str or ``None``) when the
        orchestrator's name of the primary is known.
    :returns: list of str, from ``system_changed``, ``failover`` (timeline changed), ``restart`` (postmaster
        start time changed on the same timeline) and ``primary_changed``: the address serving as primary
        changed, or both the previous watermark and this run name the orchestrator's primary
        (``current_primary``, such as CloudNativePG's ``status.currentPrimary`` pod) and the names differ.
        ``[]`` when nothing changed or there is no previous watermark.
    """
    if not previous:
        return []
    events = []
    for field, event in _EVENT_FIELDS:
        before, now = previous.get(field), current.get(field)
        if before is not None and now is not None and str(before) != str(now):
            events.append(event)
            break  # the most telling change explains the others (a failover also restarts a postmaster)
    address_changed = previous.get('primary_instance') and previous.get('primary_instance') != current.get('primary_instance')
    # Behind a stable service address (CloudNativePG's <cluster>-rw) only the orchestrator's name changes.
    before, now = previous.get(PRIMARY_FIELD), current.get(PRIMARY_FIELD)
    name_changed = before and now and str(before) != str(now)
    if address_changed or name_changed:
        events.append('primary_changed')
    return events


def emptiness(cursor, target, sources):
    """Whether ``target`` is empty and which ``sources`` have rows, in one statement.

    ``EXISTS`` stops at the first visible row, so the check costs the same at 10 rows and at 10 million;
    ``count(*)`` would read every row.

    :returns: tuple ``(target_empty: bool, sources_with_rows: list of Relation)``.
    :raises psycopg2.Error: when the query fails (no SELECT privilege, lock_timeout, ...).
    """
    cursor.execute(emptiness_query(target, sources))
    row = cursor.fetchone()
    return bool(row[0]), [s for s, has_rows in zip(sources, row[1:]) if has_rows]


def emptiness_query(target, sources):
    """The statement of :func:`emptiness`: ``SELECT NOT EXISTS (SELECT 1 FROM target), EXISTS (SELECT 1 FROM source), ...``."""
    probes = [sql.SQL('NOT EXISTS (SELECT 1 FROM {})').format(target.ident)]
    probes += [sql.SQL('EXISTS (SELECT 1 FROM {})').format(s.ident) for s in sources]
    return sql.SQL('SELECT ') + sql.SQL(', ').join(probes)


def count_rows(cursor, relation):
    """Exact ``count(*)`` of a table (rows). Only used on the rebuild and watermark paths, never by the check.

    :raises psycopg2.Error: when the query fails.
    """
    cursor.execute(sql.SQL('SELECT count(*) FROM {}').format(relation.ident))
    return cursor.fetchone()[0]


def table_stats(cursor, relations, updated_at_column):
    """Per-table ``{display name: {count, max_updated_at}}`` as the runbook's watermark records them.

    ``max_updated_at`` is ``None`` for a table without ``updated_at_column``.

    :raises psycopg2.Error: when a query fails.
    """
    stats = {}
    for rel in relations:
        if updated_at_column and has_column(cursor, rel, updated_at_column):
            query = sql.SQL('SELECT count(*), max({}) FROM {}').format(sql.Identifier(updated_at_column), rel.ident)
        else:
            query = sql.SQL('SELECT count(*), NULL FROM {}').format(rel.ident)
        cursor.execute(query)
        count, newest = cursor.fetchone()
        stats[rel.display] = dict(count=count, max_updated_at=jsonable(newest))
    return stats


def call_rebuild_function(cursor, function):
    """Call the rebuild function as ``SELECT * FROM fn()``, which fits every shape it may have.

    :returns: tuple ``(function_result, tables)``: for ``RETURNS void`` ``(None, [])``; for a scalar
        ``(value, [])``; for a set or ``TABLE(...)`` result ``(None, [row dicts])``, e.g.
        ``[{'table_name': 'resources', 'rows_inserted': 5000}]``.
    :raises psycopg2.Error: when the function fails.
    """
    cursor.execute(sql.SQL('SELECT * FROM {}()').format(function.ident))
    if function.shape == 'void':
        return None, []
    rows = cursor.fetchall()
    if function.shape == 'count':
        return (jsonable(rows[0][0]) if rows else None), []
    names = [column.name for column in cursor.description]
    return None, [dict(zip(names, (jsonable(v) for v in row))) for row in rows]


class UnloggedRebuild:
    """One run of ``pg_unlogged_rebuild`` over an open connection.

    The order matters: the server identity is read first; a standby stops there; the rebuild (urgent:
    the application is serving an empty cache) comes before any S3 request, so a slow or unreachable
    store never delays it; the watermark is written last, after the commit it describes.

    :param conn: psycopg2 connection in autocommit mode.
    :param params: dict of module parameters (see :func:`argument_spec`).
    :param check_mode: bool; when true nothing is written to the database or to S3.
    :param warn: callable taking a warning message (``AnsibleModule.warn``).
    """

    def __init__(self, conn, params, check_mode=False, warn=None):
        self.conn = conn
        self.params = params
        self.check_mode = check_mode
        self.warn = warn or (lambda msg: None)
        self.started = time.monotonic()
        self.store = None
        self.watermark_read_failed = False
        self.identity = self.target = self.sources = self.function = self.lock_key = None
        self.result = dict(changed=False, rebuild_needed=False, rebuilt=False, reason=None, skipped_reason=None,
                           is_primary=None, target_rows_before=None, target_rows_after=None, tables=[],
                           function_result=None, duration_ms=0, watermark=None, events=[], server=None,
                           previous_watermark=None, current_primary=params.get('current_primary') or None)

    def perform(self):
        """Check the target and rebuild it when it came back empty; return the module result dict (see the module's
        RETURN).

        :raises PgopsError: see the module function :func:`check_and_rebuild`.
        """
        with pg_errors('reading the server identity'):
            identity = server_identity(self.conn)
        self.identity = identity_record(identity)
        self.result.update(is_primary=identity['is_primary'], server=self.identity)
        if not identity['is_primary']:
            # A standby cannot read UNLOGGED tables at all, and must never be written to.
            return self.finish(reason='connected to a standby (pg_is_in_recovery() is true)', skipped_reason='standby')
        self.store = watermark_store(self.params.get('watermark'))
        with pg_errors('looking up target_table, source_tables and rebuild_function'):
            self._resolve()
        state = self.params['state']
        if state == 'snapshot':
            self.result['reason'] = 'snapshot requested (state=snapshot)'
            if self.check_mode:
                return self._finish_check_mode(would_write=True)
            self._compare_with_previous_watermark()
            return self._finish_with_watermark(reason=self.result['reason'], stats=None)
        with pg_errors('checking whether %s is empty' % self.target.display):
            needed, reason = self._decide(state)
        self.result.update(rebuild_needed=needed, reason=reason)
        if self.check_mode:
            return self._finish_check_mode(would_write=needed)
        stats = None
        if needed:
            outcome = self._rebuild(forced=(state == 'rebuilt'))
            if outcome.get('skipped_reason'):
                return self.finish(**outcome)  # the run holding the lock writes the watermark
            stats = outcome.pop('stats')
            self.result.update(outcome)
        previous = self._compare_with_previous_watermark()
        if self.result['rebuilt'] or self._watermark_due(previous):
            return self._finish_with_watermark(reason=reason, stats=stats)
        return self.finish()

    def _resolve(self):
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT pg_catalog.set_config('lock_timeout', %s, false)", ['%ds' % self.params['lock_timeout']])
            self.target = resolve_table(cursor, self.params['target_table'], 'target_table')
            self.sources = [resolve_table(cursor, name, 'source_tables') for name in self.params['source_tables']]
            if self.params['state'] != 'snapshot':
                self.function = resolve_function(cursor, self.params['rebuild_function'], 'rebuild_function')
        key = self.params.get('lock_key')
        self.lock_key = default_lock_key(self.target) if key is None else validate_lock_key(key)
        self.result.update(target_table=self.target.display, lock_key=self.lock_key, target_unlogged=self.target.unlogged)

    def _decide(self, state):
        with self.conn.cursor() as cursor:
            empty, with_rows = emptiness(cursor, self.target, self.sources)
        if empty:
            self.result['target_rows_before'] = 0
        if state == 'rebuilt':
            return True, 'rebuild forced (state=rebuilt)'
        if not empty:
            return False, '%s has rows' % self.target.display
        if not with_rows:
            return False, '%s is empty, and so are the source tables: nothing to rebuild from' % self.target.display
        return True, '%s is empty while %s %s rows' % (self.target.display, ', '.join(s.display for s in with_rows),
                                                       'has' if len(with_rows) == 1 else 'have')

    def _rebuild(self, forced):
        """Rebuild in one transaction under the advisory lock; return what was committed."""
        body_done = False
        try:
            with try_advisory_lock(self.conn, self.lock_key) as (cursor, acquired):
                if not acquired:
                    return dict(skipped_reason='locked', reason='another run holds advisory lock %d' % self.lock_key)
                # Checked again under the lock: a run that decided before another run's rebuild committed
                # must not rebuild a second time.
                empty, with_rows = emptiness(cursor, self.target, self.sources)
                if not forced and not (empty and with_rows):
                    return dict(skipped_reason='already_rebuilt', rebuild_needed=False,
                                reason='%s was rebuilt by another run before this one took the lock' % self.target.display)
                before = 0 if empty else count_rows(cursor, self.target)
                function_result, tables = call_rebuild_function(cursor, self.function)
                after = count_rows(cursor, self.target)
                if after == 0 and with_rows:
                    raise PgopsError('rebuild_function %s ran but %s is still empty although %s have rows; nothing was '
                                     'committed. Check that the function fills the target table.'
                                     % (self.function.display, self.target.display, ', '.join(s.display for s in with_rows)))
                stats = table_stats(cursor, self.sources, self.params['updated_at_column'])
                body_done = True
        except psycopg2.Error as exc:
            if body_done:
                raise PgopsError('The COMMIT of the rebuild of %s failed: %s. It may or may not have been committed; '
                                 'the next run checks again.' % (self.target.display, pg_error_text(exc)))
            raise PgopsError('Rebuilding %s with %s failed and was rolled back: %s'
                             % (self.target.display, self.function.display, pg_error_text(exc)))
        return dict(rebuilt=True, target_rows_before=before, target_rows_after=after, function_result=function_result,
                    tables=tables, stats=stats)

    def _committed_note(self):
        if not self.result['rebuilt']:
            return ''
        return 'The rebuild itself was committed (%s rows in %s). ' % (self.result['target_rows_after'], self.target.display)

    def _compare_with_previous_watermark(self):
        """Read the previous watermark and set ``events``; return the document (or ``None``)."""
        if self.store is None:
            return None
        try:
            previous = self.store.read()
        except PgopsError as exc:
            message = '%sCould not read the previous watermark: %s' % (self._committed_note(), exc.msg)
            if self.params.get('watermark_required'):
                raise PgopsError(message, **self.finish(changed=self.result['rebuilt']))
            self.warn(message + ' Failovers and restarts are not detected in this run.')
            self.watermark_read_failed = True
            return None
        if previous:
            keys = ('snapshot_ts', 'primary_instance', 'timeline', 'system_identifier', 'postmaster_start_time', 'kv_store_count',
                    PRIMARY_FIELD)
            self.result['previous_watermark'] = dict((k, previous.get(k)) for k in keys)
        self.result['events'] = detect_events(previous, dict(self.identity, **{PRIMARY_FIELD: self.result['current_primary']}))
        return previous

    def _watermark_due(self, previous):
        """A run that rebuilt nothing still records a watermark when none exists yet or the server changed,
        so the next run compares against the present server and reports each event once."""
        if self.store is None or self.watermark_read_failed:
            return False
        return previous is None or bool(self.result['events'])

    def _finish_check_mode(self, would_write):
        """Report what a real run would change, touching nothing: ``would_write`` is true when it would
        rebuild or (``state=snapshot``) write the watermark whatever the previous one says."""
        previous = self._compare_with_previous_watermark()
        watermark_due = self.store is not None and (would_write or self._watermark_due(previous))
        if watermark_due:
            self.result['watermark'] = dict(bucket=self.store.bucket, key=self.store.key, written=False, document=None)
        return self.finish(changed=would_write or watermark_due)

    def _finish_with_watermark(self, reason, stats):
        """Write the watermark (after the data it describes is committed) and finish."""
        self.result['reason'] = self.result['reason'] or reason
        if self.store is None:
            return self.finish(changed=self.result['rebuilt'])
        info = dict(bucket=self.store.bucket, key=self.store.key, written=False, document=None)
        self.result['watermark'] = info
        if stats is None:
            with pg_errors('counting rows for the watermark'):
                stats = self._read_stats()
        document = self._watermark_document(stats)
        try:
            info.update(self.store.write(document))
        except PgopsError as exc:
            message = '%sThe watermark was not written: %s' % (self._committed_note(), exc.msg)
            if self.params.get('watermark_required'):
                raise PgopsError(message, **self.finish(changed=self.result['rebuilt']))
            self.warn(message)
            info['error'] = exc.msg
            return self.finish(changed=self.result['rebuilt'])
        info.update(written=True, document=document)
        return self.finish(changed=True)

    def _read_stats(self):
        """Counts for the watermark in one consistent snapshot, read-only."""
        with transaction(self.conn, read_only_snapshot=True) as cursor:
            stats = table_stats(cursor, self.sources, self.params['updated_at_column'])
            self.result['target_rows_after'] = count_rows(cursor, self.target)
        return stats

    def _watermark_document(self, stats):
        document = dict(
            format_version=WATERMARK_FORMAT,
            written_by='pgops.resilience.pg_unlogged_rebuild',
            snapshot_ts=isoformat_z(utc_now()),
            target_table=self.target.display,
            # The runbook's field name, kept so existing dashboards and alerts keep working.
            kv_store_count=self.result['target_rows_after'],
            tables=stats,
            last_run=dict(state=self.params['state'], rebuilt=self.result['rebuilt'], reason=self.result['reason'],
                          events=self.result['events'], function_rows=self.result['tables'],
                          duration_ms=self._elapsed_ms()),
        )
        document.update(self.identity)
        if self.result['current_primary']:
            document[PRIMARY_FIELD] = self.result['current_primary']
        return document

    def _elapsed_ms(self):
        return int((time.monotonic() - self.started) * 1000)

    def finish(self, **updates):
        """Update the result with ``updates``, stamp ``duration_ms`` and return the result dict."""
        self.result.update(updates)
        self.result['duration_ms'] = self._elapsed_ms()
        return self.result


def check_and_rebuild(params, check_mode=False):
    """Connect with the module parameters and do one run of :class:`UnloggedRebuild`.

    :returns: the module result dict, with ``warnings`` (a watermark that could not be read or written, when it is
        not required).
    :raises PgopsError: for bad input (missing table or function, malformed name, invalid S3 endpoint or
        region), connection failures, a PostgreSQL error in any step (named in the message), a failed
        rebuild (rolled back), and, when ``watermark_required`` is true, a watermark that cannot be read or
        written (the message says whether the rebuild was committed).
    """
    try:
        # Check mode only reads: every transaction of its session is READ ONLY.
        conn = connect(params, autocommit=True, read_only=check_mode)
    except StandbyRefusesConnections as exc:
        return UnloggedRebuild(None, params).finish(is_primary=False, skipped_reason='standby', reason=exc.msg)
    warnings = []
    try:
        return dict(UnloggedRebuild(conn, params, check_mode, warnings.append).perform(), warnings=warnings)
    except PgopsError as exc:
        exc.details['warnings'] = list(exc.details.get('warnings') or ()) + warnings
        raise
    finally:
        conn.close()
