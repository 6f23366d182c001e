# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logic of the ``archive_restore`` module: bring archived rows back from S3 (the Restore Guide's tool): options,
which archives to restore (the table's format 2 prefix and its format 1 prefix, the watermark, dates), indexes
and the run. Loading is :mod:`.load`'s; the watermark :mod:`.watermark`'s; the indexes dropped for the
load :mod:`.indexes`'s.
"""

from __future__ import annotations

import datetime
import re
import time

from ansible_collections.pgops.resilience.plugins.module_utils._archive import copy_text as archive_copy
from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive.indexes import DroppedIndexes, legacy_warnings
from ansible_collections.pgops.resilience.plugins.module_utils._archive.load import (
    Restorer, connection_lost, load_all, lost_connection_error)
from ansible_collections.pgops.resilience.plugins.module_utils._archive.watermark import Watermark, watermark_order
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import display_name, resolve_schema_table
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
except ImportError:  # reported by connect()
    psycopg2 = None

CONFLICT_STRATEGIES = ['skip', 'overwrite', 'fail', 'upsert']
SCHEMA_STRATEGIES = ['strict', 'lenient', 'transform', 'none']
STORAGE_TYPES = ['s3', 'database', 'both']
MIN_LIMIT = 1 << 20  # bytes: the smallest max_archive_bytes / max_record_bytes (a record limit must exceed a chunk)
_DATE_RE = re.compile(r'\d{4}-\d{2}-\d{2}\Z')


def argument_spec():
    """The module's own options (the PostgreSQL connection options are added by the module).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    spec = dict(
        database=dict(type='str', required=True),
        table=dict(type='str', required=True),
        schema=dict(type='str', default='public'),
        source_schema=dict(type='str'),
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
        max_archive_bytes=dict(type='int', default=fmt.DEFAULT_MAX_ARCHIVE_BYTES),
        max_record_bytes=dict(type='int', default=archive_copy.DEFAULT_MAX_RECORD_BYTES),
    )
    spec.update(s3_connection_spec())
    # The database connected to is ``database`` unless login_db is given: without PGDATABASE's fallback, which
    # would otherwise connect to whatever database the environment names (often postgres).
    spec['login_db'] = dict(type='str')
    return spec


MUTUALLY_EXCLUSIVE = [('s3_key', 'restore_all')]


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(dict(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE))


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
    for option, default in (('max_archive_bytes', fmt.DEFAULT_MAX_ARCHIVE_BYTES),
                            ('max_record_bytes', archive_copy.DEFAULT_MAX_RECORD_BYTES)):
        if params.get(option) is not None and params[option] < MIN_LIMIT:
            raise PgopsError('%s must be at least %d bytes (1 MiB), not %d; the default is %d.'
                             % (option, MIN_LIMIT, params[option], default))
    return start, end


# --- planning ----------------------------------------------------------------------------------------

class ArchiveSource:
    """The table whose archives are read: ``database`` (the keys' database part), ``schema`` (``source_schema``,
    default the target schema) and ``table``, with ``prefix`` (format 2, :func:`fmt.table_prefix`) and
    ``legacy_prefix`` (format 1, :func:`fmt.legacy_table_prefix`, shared by the same-named tables of every schema).

    :param params: the module parameters.
    """

    def __init__(self, params):
        self.database = params['database']
        self.schema = params.get('source_schema') or params['schema']
        self.table = params['table']
        self.prefix = fmt.table_prefix(params['prefix'], self.database, self.schema, self.table)
        self.legacy_prefix = fmt.legacy_table_prefix(params['prefix'], self.database, self.table)

    def verify(self, key, sidecar):
        """:func:`fmt.verify_sidecar` for this table."""
        fmt.verify_sidecar(key, sidecar, self.database, self.schema, self.table)


def list_archives(bucket, source):
    """The archives of one table in the order they were written: those under its format 2 prefix, and those
    under its format 1 prefix whose sidecar names its schema (or that have no sidecar, which cannot say).

    :param source: :class:`ArchiveSource`.
    :returns: tuple ``(archives, other_schemas)``: a list of dicts with ``key``, ``date`` (``datetime.date``),
        ``order``, ``size`` (bytes), ``has_sidecar`` (bool), ``pending`` (bool: a ``table_archive`` run was
        interrupted on it) and ``legacy`` (bool, format 1 key), and the number of format 1 archives left out
        because their sidecar names another schema.
    :raises PgopsError: when listing or reading a format 1 sidecar fails.
    """
    archives, other_schemas = [], 0
    for prefix, legacy in ((source.prefix, False), (source.legacy_prefix, True)):
        objects = bucket.list(prefix)
        present = set(o['key'] for o in objects)
        for obj in objects:
            parsed = fmt.parse_key(obj['key'], under=prefix)
            if parsed is None:
                continue
            archive = dict(key=obj['key'], date=parsed['date'], order=parsed['order'], size=obj['size'],
                           has_sidecar=obj['key'] + fmt.SIDECAR_SUFFIX in present,
                           pending=obj['key'] + fmt.PENDING_SUFFIX in present, legacy=legacy)
            if legacy and archive['has_sidecar'] and not _names_source(bucket, archive['key'], source):
                other_schemas += 1
                continue
            archives.append(archive)
    return sorted(archives, key=lambda a: a['order']), other_schemas


def _names_source(bucket, key, source):
    """True when the sidecar of the format 1 archive ``key`` names ``source``'s database, schema and table, or
    cannot be read (then the archive is taken, and fails alone with the reason when it is prepared)."""
    try:
        sidecar = bucket.json_object(key + fmt.SIDECAR_SUFFIX).read()
    except PgopsError:
        return True
    try:
        source.verify(key, sidecar)
    except fmt.ArchiveFileError:
        return False
    return True


# --- the run -----------------------------------------------------------------------------------------

def restore_archives(params, check_mode=False):
    """Run ``archive_restore``: see the module's documentation for options and return values.

    :returns: dict, the module result (the guide's summary and per-file results).
    :raises PgopsError: for bad options, a missing table or key, connection or S3 failures, and at the end
        when any file failed (with the summary in the details).
    """
    start, end = validate(params)
    fmt.require_msgspec()
    started = time.monotonic()
    params = dict(params, login_db=params.get('login_db') or params['database'])
    # Check mode, a dry run and a listing only read: every transaction of the session is READ ONLY.
    read_only = bool(check_mode or params['dry_run'])
    conn = connect(params, autocommit=False, read_only=read_only or not (params.get('s3_key') or params['restore_all']))
    try:
        bucket = Bucket(client_from_params(params), params['bucket'], params.get('endpoint_url'))
        with pg_errors('looking up the table'), conn.cursor() as cursor:
            relation = resolve_schema_table(cursor, params['schema'], params['table'])
        conn.commit()
        source = ArchiveSource(params)
        watermark = Watermark(params, bucket, relation, source)
        result = dict(changed=False, table=relation.display, bucket=params['bucket'], prefix=source.prefix,
                      source=dict(database=source.database, schema=source.schema, table=source.table),
                      dry_run=read_only)
        if not params.get('s3_key') and not params['restore_all']:
            return _list(result, bucket, source, watermark, conn)
        result = _restore(result, params, conn, bucket, relation, watermark, source, (start, end), started)
        # Check mode says what a run would do (a dry run asked for with dry_run changes nothing, and says so).
        would = result.get('would_restore_files') or result.get('would_recreate_indexes')
        result['changed'] = result['changed'] or bool(check_mode and would)
        return result
    finally:
        conn.close()


def _list(result, bucket, source, watermark, conn):
    previous = watermark.read(conn, source)
    mark = watermark_order(previous)
    archives, result['other_schema_archives'] = list_archives(bucket, source)
    result.update(mode='list', watermark=previous, archives=[
        dict(key=a['key'], date=a['date'].isoformat(), size_bytes=a['size'], has_sidecar=a['has_sidecar'],
             pending=a['pending'], restored=bool(mark and a['order'] <= mark)) for a in archives])
    result['archive_count'] = len(archives)
    return result


def _plan(params, bucket, source, dates, previous):
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
        return ([], [archive], [], 0) if not archive['pending'] else ([(archive, 'pending')], [], [], 0)
    mark = None if params['ignore_watermark'] or not params['restore_watermark'] else watermark_order(previous)
    recorded = watermark_order(previous)
    start, end = dates
    skipped, todo, earlier = [], [], []
    archives, other_schemas = list_archives(bucket, source)
    for archive in archives:
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
    return skipped, todo, earlier, other_schemas


def _restore(result, params, conn, bucket, relation, watermark, source, dates, started):
    tracking = params['restore_watermark'] and params['restore_all']
    previous = watermark.read(conn, source) if tracking else None
    skipped, todo, earlier, result['other_schema_archives'] = _plan(params, bucket, source, dates, previous)
    files = [dict(key=a['key'], status='skipped', reason=why) for a, why in skipped]
    summary = dict(mode='restore_all' if params['restore_all'] else 's3_key', files_processed=0, files_failed=0,
                   files_skipped=len(skipped), records_restored=0, records_skipped=0, records_failed=0,
                   watermark=dict(previous=previous, storage_type=params['storage_type'], written=False) if tracking else None,
                   files=files, indexes_dropped=[], indexes_recreated=[])
    result.update(summary)
    # Definitions of dropped indexes that earlier versions left in S3 are reported, never run.
    warnings = legacy_warnings(bucket, source, relation)
    if warnings:
        result.setdefault('warnings', []).extend(warnings)
    store = DroppedIndexes(relation)
    if result['dry_run']:
        result['would_recreate_indexes'] = store.pending(conn)
        for archive in todo:
            sidecar = bucket.json_object(archive['key'] + fmt.SIDECAR_SUFFIX).read() if archive['has_sidecar'] else None
            files.append(dict(key=archive['key'], status='would_restore', verified=sidecar is not None,
                              records=(sidecar or {}).get('record_count')))
        result['would_restore_files'] = len(todo)
        # Archives without a sidecar are counted as unknown (None) rather than downloaded.
        result['would_restore_records'] = sum(f.get('records') or 0 for f in files if f['status'] == 'would_restore')
        result['duration_ms'] = int((time.monotonic() - started) * 1000)
        return result
    restorer = Restorer(params, conn, bucket, relation, source)
    if tracking and watermark.uses_database:
        watermark.ensure_table(conn)
    # Indexes an interrupted run dropped (recorded in the database with the DROP INDEX) come back first.
    result['indexes_recreated'] = store.recreate_recorded(conn)
    indexes = store.drop(conn) if params['drop_indexes'] and todo else []
    result['indexes_dropped'] = [display_name(relation.schema, name) for name, definition in indexes]
    try:
        load_all(result, params, conn, restorer, watermark if tracking else None, previous, todo,
                 _watermark_barrier(skipped, earlier))
    except (psycopg2.Error, PgopsError) as exc:
        if not connection_lost(conn):
            raise
        # The dropped indexes stay recorded in the database: the next run recreates them before it loads anything.
        raise lost_connection_error(result, exc, started)
    finally:
        if indexes and not connection_lost(conn):
            conn.rollback()
            result['indexes_recreated'] += store.recreate(conn, indexes, check=False)
    result['changed'] = bool(result['records_restored'] > 0 or result['indexes_dropped'] or result['indexes_recreated'] or
                             (result['watermark'] and result['watermark']['written']))
    result['duration_ms'] = int((time.monotonic() - started) * 1000)
    if result['files_failed']:
        failed = [f for f in files if f['status'] == 'failed']
        raise PgopsError('%d of %d archive files failed and were rolled back; the others were restored. First: %s'
                         % (result['files_failed'], result['files_processed'], failed[0]['error']),
                         **dict((k, v) for k, v in result.items() if k != 'changed'))
    return result


def _watermark_barrier(skipped, earlier):
    """The first archive the watermark must not move past (or ``None``): a pending archive (an interrupted
    table_archive run may still complete it), or, with ``start_date``, an earlier archive not restored yet."""
    orders = [a['order'] for a, why in skipped if why == 'pending'] + [a['order'] for a in earlier]
    return min(orders) if orders else None
