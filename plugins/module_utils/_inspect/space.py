# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the space of a PostgreSQL server goes, and whether its disks are about to fill up.

This is the runbook's ``make pg.space`` (``postgres-infra-setup.md``, "Out of Space") as plain Python: database
and table sizes from the server (PostgreSQL docs, "9.27.7 Database Object Management Functions"), the WAL in
``pg_wal`` (``pg_ls_waldir``, "9.27.9 Generic File Access Functions"), and the free space of the file systems
holding the data directory, ``pg_wal`` (when it is on a file system of its own) and the WAL archive
(``statvfs(3)``), judged against thresholds by :func:`judge`. :func:`measure_space` backs the module ``pg_space_info``.
"""

from __future__ import annotations

import os
import socket
import sys

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import server_facts, system_identifier
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
except ImportError:  # pragma: no cover - connect() reports it
    psycopg2 = None

VERDICTS = ('ok', 'warning', 'critical')
# pg_size_pretty's units (PostgreSQL 15, src/backend/utils/adt/dbsize.c): name, limit, half-rounded, bits.
_PRETTY_UNITS = (('bytes', 10 * 1024, False, 0), ('kB', 20 * 1024 - 1, True, 10), ('MB', 20 * 1024 - 1, True, 20),
                 ('GB', 20 * 1024 - 1, True, 30), ('TB', 20 * 1024 - 1, True, 40), ('PB', 20 * 1024 - 1, True, 50))


def argument_spec():
    """The module's own options (the PostgreSQL connection options are added by ``run_postgres_module``).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(
        data_directory=dict(type='path'),
        wal_archive_directory=dict(type='path'),
        warning_free_percent=dict(type='float', default=20.0),
        critical_free_percent=dict(type='float', default=10.0),
        warning_free_bytes=dict(type='int'),
        critical_free_bytes=dict(type='int'),
        top_tables=dict(type='int', default=20),
    )


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(dict(argument_spec=argument_spec()))


def _trunc_div(value, divisor):
    """C's integer division (towards zero), as ``int64 / int64`` in dbsize.c."""
    quotient = abs(value) // divisor
    return quotient if value >= 0 else -quotient


def size_pretty(size):
    """``pg_size_pretty(bigint)`` of PostgreSQL 15 in Python: ``10239 bytes``, ``10 kB``, ``20 MB``, ``30 PB``.

    Units are powers of 1024; below 10240 bytes the size is given in bytes, then each unit is used below 20480
    of it, rounded half away from zero (PostgreSQL docs, "9.27.7 Database Object Management Functions").

    :param size: int (bytes) or None.
    :returns: str, or None for None.
    """
    if size is None:
        return None
    size = int(size)
    for index, (name, limit, rounded, bits) in enumerate(_PRETTY_UNITS):
        last = index == len(_PRETTY_UNITS) - 1
        if last or abs(size) < limit:
            if rounded:
                size = _trunc_div(size + (-1 if size < 0 else 1), 2)
            return '%d %s' % (size, name)
        following = _PRETTY_UNITS[index + 1]
        size = _trunc_div(size, 1 << (following[3] - bits - int(following[2]) + int(rounded)))
    return None  # pragma: no cover - the last unit always returns


def validate_thresholds(warning_free_percent=20.0, critical_free_percent=10.0, warning_free_bytes=None, critical_free_bytes=None):
    """Check the thresholds and return them as a dict with the same keys.

    Percentages are of a file system's total size, from 0 to 100; byte thresholds are optional and at least 0.
    A critical threshold must not be above its warning threshold (equal ones leave no warning band).

    :raises PgopsError: naming the option at fault.
    """
    for option, value in (('warning_free_percent', warning_free_percent), ('critical_free_percent', critical_free_percent)):
        if value is None or not 0 <= value <= 100:
            raise PgopsError('%s must be a percentage from 0 to 100, not %r.' % (option, value))
    if critical_free_percent > warning_free_percent:
        raise PgopsError('critical_free_percent (%g) must not be above warning_free_percent (%g): the verdict is critical '
                         'when less space than the critical threshold is free.' % (critical_free_percent, warning_free_percent))
    for option, value in (('warning_free_bytes', warning_free_bytes), ('critical_free_bytes', critical_free_bytes)):
        if value is not None and value < 0:
            raise PgopsError('%s must be a number of bytes, 0 or more, not %r.' % (option, value))
    if None not in (warning_free_bytes, critical_free_bytes) and critical_free_bytes > warning_free_bytes:
        raise PgopsError('critical_free_bytes (%d) must not be above warning_free_bytes (%d).' % (critical_free_bytes, warning_free_bytes))
    return dict(warning_free_percent=float(warning_free_percent), critical_free_percent=float(critical_free_percent),
                warning_free_bytes=warning_free_bytes, critical_free_bytes=critical_free_bytes)


def usage_from_statvfs(stat):
    """Sizes of a file system from an ``os.statvfs`` result (``statvfs(3)``), in bytes.

    ``free_bytes`` counts the blocks reserved for root; ``available_bytes`` does not, and is what PostgreSQL, an
    unprivileged user, can still write, so ``free_percent`` is ``available_bytes`` in percent of ``total_bytes``
    (two decimals; None for a file system reporting no size).

    :returns: dict with ``total_bytes``, ``used_bytes``, ``free_bytes``, ``available_bytes``, ``free_percent``.
    """
    total = stat.f_blocks * stat.f_frsize
    free = stat.f_bfree * stat.f_frsize
    available = stat.f_bavail * stat.f_frsize
    return dict(total_bytes=total, used_bytes=total - free, free_bytes=free, available_bytes=available,
                free_percent=round(available * 100.0 / total, 2) if total else None)


def _check_directory(path, option):
    if not os.path.exists(path):
        raise PgopsError('%s %s does not exist on %s. Give the directory as this host sees it (the module reads the local file '
                         'system: run it on the database host).' % (option, path, socket.gethostname()))
    if not os.path.isdir(path):
        raise PgopsError('%s %s is not a directory.' % (option, path))


def mount_point(path):
    """The mount point of the file system holding ``path`` (``/`` at the latest)."""
    path = os.path.realpath(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def filesystem(path, option):
    """Free space of the file system holding directory ``path``.

    :param option: the option (or role) naming the path, for messages and the result.
    :returns: dict with ``option``, ``path``, ``mount_point``, ``device`` and the sizes of :func:`usage_from_statvfs`,
        plus their ``*_pretty`` forms.
    :raises PgopsError: naming ``option`` when the path does not exist, is no directory or cannot be examined.
    """
    _check_directory(path, option)
    try:
        usage = usage_from_statvfs(os.statvfs(path))
        device = os.stat(path).st_dev
    except OSError as exc:
        raise PgopsError('%s %s: cannot read its file system: %s' % (option, path, exc))
    entry = dict(option=option, path=path, mount_point=mount_point(path), device=device)
    entry.update(usage)
    for field in ('total_bytes', 'used_bytes', 'available_bytes'):
        entry[field.replace('_bytes', '_pretty')] = size_pretty(usage[field])
    return entry


def directory_size(path, option):
    """Bytes and number of the regular files under ``path``, recursively, without following symbolic links.

    Files removed while the walk runs (an archive cleanup) are skipped.

    :returns: ``(bytes, files)``.
    :raises PgopsError: naming ``option`` when a directory cannot be read.
    """
    total = files = 0
    pending = [path]
    while pending:
        current = pending.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                            files += 1
                    except FileNotFoundError:
                        continue
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise PgopsError('%s %s: cannot read %s: %s' % (option, path, current, exc))
    return total, files


def judge(filesystems, thresholds):
    """The verdict on the free space of file systems.

    ``critical`` when a file system has less available space than ``critical_free_percent`` of its size, or than
    ``critical_free_bytes``; ``warning`` likewise with the warning thresholds; ``ok`` otherwise. A file system that
    reports no size is not judged.

    :param filesystems: list of dicts with ``option``, ``path``, ``available_bytes``, ``total_bytes``, ``free_percent``.
    :param thresholds: dict from :func:`validate_thresholds`.
    :returns: ``(verdict, reasons)``, reasons (list of str) most severe first.
    """
    found = {'critical': [], 'warning': []}
    for fs in filesystems:
        if fs.get('free_percent') is None:
            continue
        where = '%s %s: %.2f%% free (%s of %s available)' % (
            fs['option'], fs['path'], fs['free_percent'], size_pretty(fs['available_bytes']), size_pretty(fs['total_bytes']))
        for level in ('critical', 'warning'):
            limits = []
            if fs['free_percent'] < thresholds['%s_free_percent' % level]:
                limits.append('%s below %s%%' % (level, '%g' % thresholds['%s_free_percent' % level]))
            limit_bytes = thresholds.get('%s_free_bytes' % level)
            if limit_bytes is not None and fs['available_bytes'] < limit_bytes:
                limits.append('%s below %s' % (level, size_pretty(limit_bytes)))
            if limits:
                found[level].append('%s, %s' % (where, ' and '.join(limits)))
                break
    verdict = 'critical' if found['critical'] else 'warning' if found['warning'] else 'ok'
    return verdict, found['critical'] + found['warning']


def database_sizes(cursor):
    """Size of every database, largest first (``pg_database_size``; a database whose CONNECT privilege the user
    lacks, without ``pg_read_all_stats``, has ``bytes`` None).

    :returns: list of dicts with ``name``, ``bytes``, ``pretty``.
    """
    cursor.execute("SELECT d.datname, CASE WHEN pg_catalog.has_database_privilege(d.oid, 'CONNECT')"
                   " OR pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') THEN pg_catalog.pg_database_size(d.oid) END AS size"
                   ' FROM pg_catalog.pg_database d ORDER BY size DESC NULLS LAST, d.datname')
    return [dict(name=name, bytes=size, pretty=size_pretty(size)) for name, size in cursor.fetchall()]


def largest_tables(cursor, limit):
    """The ``limit`` largest tables and materialized views of the current database outside ``pg_catalog`` and
    ``information_schema``, by ``pg_total_relation_size``.

    ``total_bytes`` = ``table_bytes`` (the heap with its free space and visibility maps) + ``toast_bytes`` (the
    TOAST table with its index) + ``index_bytes`` (``pg_indexes_size``).

    :returns: list of dicts with ``schema``, ``name``, ``kind``, ``total_bytes``, ``table_bytes``, ``index_bytes``,
        ``toast_bytes`` and the same four as ``pg_size_pretty`` writes them (``total_pretty``, ...).
    """
    if limit <= 0:
        return []
    cursor.execute("SELECT n.nspname, c.relname, c.relkind, pg_catalog.pg_total_relation_size(c.oid) AS total,"
                   ' pg_catalog.pg_table_size(c.oid), pg_catalog.pg_indexes_size(c.oid),'
                   ' CASE WHEN c.reltoastrelid = 0 THEN 0 ELSE pg_catalog.pg_total_relation_size(c.reltoastrelid) END'
                   ' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace'
                   " WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                   " AND n.nspname !~ '^pg_(toast|temp_)' ORDER BY total DESC NULLS LAST, 1, 2 LIMIT %s", [limit])
    tables = []
    for schema, name, relkind, total, table, index, toast in cursor.fetchall():
        if total is None:
            continue  # dropped while reading
        entry = dict(schema=schema, name=name, kind='materialized view' if relkind == 'm' else 'table', total_bytes=total,
                     table_bytes=table - toast, index_bytes=index, toast_bytes=toast)
        for part in ('total', 'table', 'index', 'toast'):
            entry[part + '_pretty'] = size_pretty(entry[part + '_bytes'])
        tables.append(entry)
    return tables


def wal_usage(cursor, notes):
    """The WAL in ``pg_wal`` (``pg_ls_waldir``: superuser or ``pg_monitor``), the archiver's counters
    (``pg_stat_archiver``, docs "The Cumulative Statistics System") and the replication slots with the WAL each one retains
    (``pg_replication_slots``, docs "System Views > pg_replication_slots"), the usual reasons for ``pg_wal`` to grow.

    :returns: dict with ``readable``, ``files``, ``bytes``, ``pretty``, ``segment_size`` (bytes), ``archiver`` and ``slots``.
    """
    cursor.execute("SELECT pg_catalog.has_function_privilege('pg_catalog.pg_ls_waldir()', 'EXECUTE')")
    wal = dict(readable=bool(cursor.fetchone()[0]), files=None, bytes=None, pretty=None)
    cursor.execute("SELECT setting::int8 FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'")
    wal['segment_size'] = cursor.fetchone()[0]
    if wal['readable']:
        cursor.execute('SELECT pg_catalog.count(*), COALESCE(pg_catalog.sum(size), 0)::int8 FROM pg_catalog.pg_ls_waldir()')
        wal['files'], wal['bytes'] = cursor.fetchone()
        wal['pretty'] = size_pretty(wal['bytes'])
    else:
        notes.append('The size of pg_wal is unknown: pg_ls_waldir() needs superuser or membership in pg_monitor.')
    cursor.execute('SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time'
                   ' FROM pg_catalog.pg_stat_archiver')
    row = cursor.fetchone()
    wal['archiver'] = dict(archived_count=row[0], last_archived_wal=row[1], last_archived_time=isoformat_z(row[2]),
                           failed_count=row[3], last_failed_wal=row[4], last_failed_time=isoformat_z(row[5]))
    cursor.execute('SELECT s.slot_name, s.slot_type, s.active, pg_catalog.to_jsonb(s) ->> %s,'
                   ' pg_catalog.pg_wal_lsn_diff(CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()'
                   ' ELSE pg_catalog.pg_current_wal_lsn() END, s.restart_lsn)::int8'
                   ' FROM pg_catalog.pg_replication_slots s ORDER BY 1', ['wal_status'])
    wal['slots'] = [dict(name=name, type=kind, active=active, wal_status=status, retained_bytes=retained,
                         retained_pretty=size_pretty(retained)) for name, kind, active, status, retained in cursor.fetchall()]
    return wal


def server_data_directory(cursor):
    """``SHOW data_directory``: needs superuser or ``pg_read_all_settings``.

    :raises PgopsError: saying to set ``data_directory`` when the server does not reveal it.
    """
    try:
        cursor.execute('SHOW data_directory')
    except psycopg2.errors.InsufficientPrivilege:
        raise PgopsError('data_directory: the server does not reveal its data directory to this user (that needs superuser '
                         'or pg_read_all_settings); set data_directory.')
    return cursor.fetchone()[0]


def verify_data_directory(path, identifier):
    """Whether ``path`` is the data directory of the server connected to: the system identifier, the first field
    of ``global/pg_control`` (a native-endian ``uint64``), equals ``identifier`` (the server's, from :func:`postgres.system_identifier`).

    :returns: True, or None when either side cannot be read (as a user without access to the data directory).
    :raises PgopsError: when they differ: the path is another cluster's data directory.
    """
    if identifier is None:
        return None
    try:
        with open(os.path.join(path, 'global', 'pg_control'), 'rb') as handle:
            head = handle.read(8)
    except OSError:
        return None
    if len(head) < 8:
        return None
    local = int.from_bytes(head, sys.byteorder)
    if str(local) != str(identifier):
        raise PgopsError('data_directory %s belongs to another PostgreSQL cluster (system identifier %s, the server connected to '
                         'has %s). Run the module on the database host, or correct data_directory.' % (path, local, identifier))
    return True


def _pg_wal_filesystem(data_directory, data_fs, notes):
    """The file system of ``pg_wal`` when it is another one than the data directory's (a symbolic link to a WAL
    volume, ``initdb --waldir``), else None."""
    path = os.path.join(data_directory, 'pg_wal')
    try:
        real = os.path.realpath(path)
        if os.stat(real).st_dev == data_fs['device']:
            return None
    except OSError as exc:
        notes.append('pg_wal %s could not be examined (%s); only the data directory\'s file system is judged.' % (path, exc.strerror))
        return None
    return filesystem(real, 'pg_wal')


def measure_space(params, check_mode=False):
    """Run ``pg_space_info``: see the module's documentation for options and return values. It only reads, in
    READ ONLY sessions, so check mode changes nothing.

    :param params: the module parameters (connection options and the options of :func:`argument_spec`).
    :param check_mode: bool (the same run either way).
    :returns: dict, the module result (never changed).
    :raises PgopsError: for bad thresholds, missing directories, a failed connection or query.
    """
    thresholds = validate_thresholds(params.get('warning_free_percent'), params.get('critical_free_percent'),
                                     params.get('warning_free_bytes'), params.get('critical_free_bytes'))
    top = params.get('top_tables')
    if top is None or top < 0:
        raise PgopsError('top_tables must be 0 or more, not %r.' % (top,))
    for option in ('data_directory', 'wal_archive_directory'):
        if params.get(option):
            _check_directory(params[option], option)
    notes = []
    conn = connect(params, read_only=True)
    try:
        with conn.cursor() as cursor:
            with pg_errors('reading sizes'):
                facts = server_facts(cursor)
                result = dict((key, facts[key]) for key in ('server_version', 'database', 'in_recovery'))
                result['databases'] = database_sizes(cursor)
                result['tables'] = largest_tables(cursor, top)
                result['wal'] = wal_usage(cursor, notes)
                identifier = system_identifier(conn)
            with pg_errors('reading the data directory setting'):
                data_directory = params.get('data_directory') or server_data_directory(cursor)
    finally:
        conn.close()
    result['data_directory_source'] = 'option' if params.get('data_directory') else 'server'
    data_fs = filesystem(data_directory, 'data_directory')
    result['data_directory'] = data_directory
    result['data_directory_verified'] = verify_data_directory(data_directory, identifier)
    if result['data_directory_verified'] is None:
        notes.append('Could not check that %s is the data directory of the server connected to (global/pg_control or '
                     'pg_control_system() unreadable).' % data_directory)
    filesystems = [data_fs]
    wal_fs = _pg_wal_filesystem(data_directory, data_fs, notes)
    if wal_fs:
        filesystems.append(wal_fs)
    result['wal']['directory'] = os.path.join(data_directory, 'pg_wal')
    result['wal_archive'] = None
    if params.get('wal_archive_directory'):
        archive = params['wal_archive_directory']
        filesystems.append(filesystem(archive, 'wal_archive_directory'))
        size, files = directory_size(archive, 'wal_archive_directory')
        result['wal_archive'] = dict(path=archive, bytes=size, files=files, pretty=size_pretty(size))
    result['databases_total_bytes'] = sum(d['bytes'] or 0 for d in result['databases'])
    result['databases_total_pretty'] = size_pretty(result['databases_total_bytes'])
    verdict, reasons = judge(filesystems, thresholds)
    result.update(changed=False, filesystems=filesystems, thresholds=thresholds, verdict=verdict, verdict_reasons=reasons, notes=notes)
    return result
