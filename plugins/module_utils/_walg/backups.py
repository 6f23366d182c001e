# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The base backups of a wal-g storage, as the ``walg_backup_info`` module returns them.

What wal-g 3.0.9 says, and where (measured against its output): ``backup-list --detail --json`` gives each backup's
name, start and finish time, LSNs as integers, ``is_permanent`` (from ``basebackups_005/<name>/metadata.json``, the
file ``backup-mark`` updates), PostgreSQL's version number, the system identifier (beyond 2^53: kept exact, as text)
and sizes. It has no timeline (the backup's name holds it: ``base_<timeline><log><segment>``, the WAL file of the
start LSN, PostgreSQL docs 30.6 "WAL Internals") and no delta origin: the stop sentinel,
``basebackups_005/<name>_backup_stop_sentinel.json``, says ``DeltaFrom`` (the backup a delta was taken against) and
``DeltaFullName`` (the full backup its chain starts from).
"""

from __future__ import annotations

import datetime
import json
import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import lsn_value

SENTINEL_SUFFIX = '_backup_stop_sentinel.json'
BACKUPS_FOLDER = 'basebackups_005'
_NAME = re.compile(r'base_([0-9A-F]{8})([0-9A-F]{16})(?:_D_([0-9A-F]{24}))?\Z')


def lsn_text(value, field='lsn'):
    """An LSN in PostgreSQL's text form ``X/Y`` (upper-case hexadecimal), from wal-g's integer or from text.

    :param value: int (wal-g 3.0.9's JSON), or str ``'0/2000028'`` (other versions), or None.
    :returns: str or None.
    :raises PgopsError: for anything else, naming ``field``.
    """
    if value is None:
        return None
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = lsn_value(value)
        except PgopsError:
            number = None
    if number is None or not 0 <= number < 1 << 64:
        raise PgopsError('wal-g reported %s=%r, which is not an LSN.' % (field, value))
    return '%X/%X' % (number >> 32, number & 0xFFFFFFFF)


def timeline_of(name):
    """The timeline (int) of the backup named ``name``: the first 8 hexadecimal digits of the WAL file in its name.

    :raises PgopsError: for a name wal-g does not give a base backup.
    """
    match = _NAME.match(name or '')
    if not match:
        raise PgopsError('%r is not the name of a wal-g base backup (base_<WAL file>[_D_<WAL file>]).' % (name,))
    return int(match.group(1), 16)


def utc_text(value, field):
    """wal-g's time (RFC 3339 text, nanoseconds possible) as ISO 8601 in UTC with ``Z``, microseconds kept.

    :raises PgopsError: for text that is not such a time, naming ``field``.
    """
    if value is None:
        return None
    text = str(value).strip()
    match = re.match(r'(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})\Z', text)
    if not match:
        raise PgopsError('wal-g reported %s=%r, which is not a time.' % (field, value))
    fraction = (match.group(2) or '.0')[1:7].ljust(6, '0')
    zone = '+00:00' if match.group(3) == 'Z' else match.group(3)
    moment = datetime.datetime.fromisoformat('%s.%s%s' % (match.group(1), fraction, zone))
    return isoformat_z(moment)


def parse_backup_list(text):
    """The entries of ``wal-g backup-list --detail --json`` (list of dicts, as wal-g wrote them).

    Big integers stay exact: Python's JSON reader makes them ints, never floats. wal-g prints nothing, or ``[]``, for
    an empty storage; older versions say "No backups found" on stderr.

    :raises PgopsError: when the output is not a JSON list of objects.
    """
    stripped = (text or '').strip()
    if not stripped:
        return []
    try:
        entries = json.loads(stripped)
    except ValueError as exc:
        raise PgopsError('wal-g backup-list --detail --json printed something that is not JSON (%s): %s'
                         % (exc, stripped[:200]))
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise PgopsError('wal-g backup-list --detail --json printed %s, not a list of backups.' % type(entries).__name__)
    return entries


def backup_record(entry, sentinel=None):
    """One backup as ``walg_backup_info`` returns it, from a ``backup-list --detail --json`` entry and its stop
    sentinel (dict, or None when it was not read: then ``is_full`` comes from the name and ``delta_origin`` is None).

    :returns: dict ``name``, ``start_time``, ``finish_time`` (ISO 8601, UTC), ``start_lsn``, ``finish_lsn`` (``X/Y``),
        ``timeline`` (int), ``is_permanent`` (bool), ``is_full`` (bool), ``delta_origin`` (name or None),
        ``delta_full_name`` (name or None), ``compressed_size``, ``uncompressed_size`` (bytes), ``pg_version`` (int,
        ``server_version_num``), ``system_identifier`` (str, exact), ``user_data`` (any JSON value or None).
    :raises PgopsError: for an entry without a backup name, or fields that are not what they should be.
    """
    name = entry.get('backup_name')
    if not isinstance(name, str):
        raise PgopsError('wal-g listed a backup without a name: %s' % json.dumps(entry, default=str)[:200])
    timeline = timeline_of(name)
    sentinel = sentinel or {}
    delta_from = sentinel.get('DeltaFrom') or None
    # Without the sentinel only the name tells a delta (its _D_ part is the origin's WAL file, not its name).
    is_full = delta_from is None if sentinel else _NAME.match(name).group(3) is None
    identifier = entry.get('system_identifier', sentinel.get('SystemIdentifier'))
    return dict(
        name=name,
        start_time=utc_text(entry.get('start_time'), 'start_time'),
        finish_time=utc_text(entry.get('finish_time') or entry.get('time'), 'finish_time'),
        start_lsn=lsn_text(entry.get('start_lsn'), 'start_lsn'),
        finish_lsn=lsn_text(entry.get('finish_lsn'), 'finish_lsn'),
        timeline=timeline,
        is_permanent=bool(entry.get('is_permanent')),
        is_full=is_full,
        delta_origin=delta_from,
        delta_full_name=sentinel.get('DeltaFullName') or None,
        compressed_size=entry.get('compressed_size'),
        uncompressed_size=entry.get('uncompressed_size'),
        pg_version=entry.get('pg_version'),
        system_identifier=None if identifier is None else str(identifier),
        user_data=entry.get('user_data', sentinel.get('UserData')),
    )


def moment(text):
    """An aware ``datetime`` from a time of :func:`utc_text` (or wal-g's own text), for comparing: the texts differ in
    their number of fraction digits, so they do not sort as text. None sorts first."""
    if not text:
        return datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.fromisoformat(utc_text(text, 'time').replace('Z', '+00:00'))


def oldest_first(records):
    """``records`` ordered by their times (start, then finish), never by name or LSN: a promoted standby's new
    timeline or a restored cluster can give a newer backup a smaller name or LSN (list of dicts, a new list)."""
    return sorted(records, key=lambda r: (moment(r['start_time']), moment(r['finish_time']), r['name']))


def latest_entry(entries):
    """The backup wal-g calls LATEST among ``backup-list --detail --json`` entries: the one whose stop sentinel was
    written last (its ``time``), as ``backup-push`` picks a delta's origin; None when there is none."""
    return max(entries, key=lambda e: moment(e.get('time'))) if entries else None
