# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL file names and segment arithmetic of a barman WAL archive, and :class:`WalScan`, the running counters over its
listing that find gaps.

WAL segment names are ``TTTTTTTTLLLLLLLLSSSSSSSS`` (timeline, log id, segment within the log id, in hexadecimal);
``<segment>.<offset>.backup`` and ``<segment>.partial`` live beside the segments, ``<TTTTTTTT>.history`` files hold
the timeline history (PostgreSQL docs, "WAL Internals"; barman's ``barman.xlog``). Per log id there are
``0x100000000 // xlog_segment_size`` segments (256 for 16 MiB segments, numbered 00 to FF).
"""

from __future__ import annotations

import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024  # bytes
MIN_SEGMENT_SIZE = 1024 * 1024  # PostgreSQL's --wal-segsize range: 1 MiB to 1 GiB, a power of two
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024
COMPRESSION_SUFFIXES = ('.gz', '.bz2', '.xz', '.snappy', '.zst', '.lz4')

# The WAL file names barman accepts (barman.xlog): a segment, a .backup label, a .partial segment, a .history file.
_WAL_NAME = re.compile(r'^(?P<tli>[0-9A-Fa-f]{8})(?:(?P<log>[0-9A-Fa-f]{8})(?P<seg>[0-9A-Fa-f]{8})'
                       r'(?:\.(?P<offset>[0-9A-Fa-f]{8})\.backup|(?P<partial>\.partial))?|(?P<history>\.history))$')


def parse_wal_name(name):
    """What a file name in a barman WAL archive is.

    One compression suffix (``.gz``, ``.bz2``, ``.xz``, ``.snappy``, ``.zst``, ``.lz4``) is allowed, as barman
    allows it; a key with directories is reduced to its last part.

    :param name: str, such as ``000000010000000A000000FF.gz`` or ``00000002.history``.
    :returns: ``None`` when it is not a WAL file, else a dict: ``name`` (without the compression suffix),
        ``compression`` (the suffix without its dot, or ``None``), ``kind`` (``segment``, ``history``, ``backup``
        or ``partial``), ``timeline`` (int), and for every kind but ``history`` ``log`` and ``seg`` (int; else
        ``None``).
    """
    base = name.rsplit('/', 1)[-1]
    compression = None
    match = _WAL_NAME.match(base)
    if match is None:
        stem, dot, suffix = base.rpartition('.')
        if not dot or '.' + suffix not in COMPRESSION_SUFFIXES:
            return None
        match = _WAL_NAME.match(stem)
        if match is None:
            return None
        base, compression = stem, suffix
    if match.group('history'):
        kind = 'history'
    elif match.group('offset'):
        kind = 'backup'
    elif match.group('partial'):
        kind = 'partial'
    else:
        kind = 'segment'
    history = kind == 'history'
    return dict(name=base, compression=compression, kind=kind, timeline=int(match.group('tli'), 16),
                log=None if history else int(match.group('log'), 16), seg=None if history else int(match.group('seg'), 16))


def segments_per_log(segment_size):
    """Segments per log id (the middle 8 hex digits of a name): ``0x100000000 // segment_size`` (256 for 16 MiB)."""
    return 0x100000000 // segment_size


def valid_segment_size(value):
    """True for a WAL segment size PostgreSQL accepts (a power of two from 1 MiB to 1 GiB, in bytes)."""
    return isinstance(value, int) and MIN_SEGMENT_SIZE <= value <= MAX_SEGMENT_SIZE and value & (value - 1) == 0


def segment_position(wal, per_log):
    """A segment's number counted from 0/0 (``log * per_log + seg``), the same on every timeline."""
    return wal['log'] * per_log + wal['seg']


def segment_name(timeline, position, per_log):
    """The segment file name of ``position`` (see :func:`segment_position`) on ``timeline``."""
    return '%08X%08X%08X' % (timeline, position // per_log, position % per_log)


def segment_size_of(backups):
    """``xlog_segment_size`` (bytes) of the newest readable backup that records a valid one; 16 MiB otherwise."""
    for backup in sorted(backups, key=lambda b: b['backup_id'], reverse=True):
        if backup.get('readable') and valid_segment_size(backup.get('xlog_segment_size')):
            return backup['xlog_segment_size']
    return DEFAULT_SEGMENT_SIZE


class WalScan:
    """Running counters over a WAL listing in key order: totals, first and last segment, timelines, and the gaps
    between consecutive segments of the same timeline (at most ``gap_limit`` kept, all counted).

    Memory holds one entry per timeline and per DONE backup, plus the kept gaps: not one per WAL object.

    :param segment_size: WAL segment size in bytes (see :func:`segment_size_of`).
    :param backups: the catalog's backups (see :meth:`.catalog.BarmanCatalog.backups`); the WAL ranges of the readable DONE
        ones (``begin_wal`` .. ``end_wal``) are checked for completeness and give each gap its impact.
    :param gap_limit: how many gaps to keep in :attr:`gaps` (int >= 0).

    A gap's ``impact`` is ``backup`` when it removes segments a DONE backup needs to be consistent (between its
    begin_wal and end_wal), ``pitr`` when it lies after the begin_wal of the oldest DONE backup that is not a
    standalone archival one (point-in-time recovery cannot cross it), and ``none`` when every backup that can
    serve PITR is newer (such segments are only retention leftovers).
    """

    def __init__(self, segment_size=DEFAULT_SEGMENT_SIZE, backups=(), gap_limit=100):
        self.per_log = segments_per_log(segment_size)
        self.gap_limit = gap_limit
        self.count = 0  # WAL files of every kind
        self.bytes = 0
        self.segments = 0
        self.kinds = dict(segment=0, history=0, backup=0, partial=0)
        self.other_objects = 0
        self.other_bytes = 0
        self.first = None  # (timeline, position) of the smallest segment
        self.last = None
        self.newest_modified = None
        self.timelines = set()
        self.history_files = []
        self.gaps = []
        self.gap_count = 0
        self.missing_segments = 0
        self.gap_impacts = dict(backup=0, pitr=0, none=0)
        self._last_pos = {}  # timeline -> last segment position seen
        self._first_pos = {}  # timeline -> first segment position seen
        self.ranges = []  # [backup_id, timeline, begin, end, missing inside gaps]
        pitr_from = None
        for backup in backups:
            if not (backup.get('readable') and backup.get('status') == 'DONE'):
                continue
            begin, end = parse_wal_name(backup.get('begin_wal') or ''), parse_wal_name(backup.get('end_wal') or '')
            if not begin or not end or begin['kind'] != 'segment' or end['kind'] != 'segment':
                continue
            first, last = segment_position(begin, self.per_log), segment_position(end, self.per_log)
            self.ranges.append([backup['backup_id'], begin['timeline'], first, max(first, last), 0])
            if backup.get('keep') != 'standalone' and (pitr_from is None or first < pitr_from):
                pitr_from = first
        self.pitr_from = pitr_from

    def add(self, wal):
        """Count one object of :meth:`.catalog.BarmanCatalog.iter_wal_objects` (``kind`` None: not a WAL file)."""
        kind = wal.get('kind')
        if kind is None:
            self.other_objects += 1
            self.other_bytes += wal['size']
            return
        self.count += 1
        self.bytes += wal['size']
        self.kinds[kind] += 1
        self.timelines.add(wal['timeline'])
        modified = wal.get('last_modified')
        if modified is not None and (self.newest_modified is None or modified > self.newest_modified):
            self.newest_modified = modified
        if kind == 'history':
            if len(self.history_files) < 1000:
                self.history_files.append(wal['name'])
            return
        if kind != 'segment':
            return
        self.segments += 1
        timeline = wal['timeline']
        position = segment_position(wal, self.per_log)
        point = (timeline, position)
        if self.first is None or point < self.first:
            self.first = point
        if self.last is None or point > self.last:
            self.last = point
        previous = self._last_pos.get(timeline)
        if previous is None:
            self._first_pos[timeline] = position
        elif position > previous + 1:
            self._gap(timeline, previous, position)
        if previous is None or position > previous:
            self._last_pos[timeline] = position
        elif position < self._first_pos[timeline]:
            self._first_pos[timeline] = position  # out of key order: no gap is inferred from it

    def _gap(self, timeline, previous, position):
        missing = position - previous - 1
        low, high = previous + 1, position - 1
        impact = 'none'
        for item in self.ranges:
            if item[1] == timeline and item[2] <= high and low <= item[3]:
                item[4] += min(high, item[3]) - max(low, item[2]) + 1
                impact = 'backup'
        if impact == 'none' and self.pitr_from is not None and high >= self.pitr_from:
            impact = 'pitr'
        self.gap_count += 1
        self.missing_segments += missing
        self.gap_impacts[impact] += 1
        if len(self.gaps) < self.gap_limit:
            self.gaps.append(dict(timeline=timeline, after=segment_name(timeline, previous, self.per_log),
                                  before=segment_name(timeline, position, self.per_log), missing=missing, impact=impact))

    def backup_wal_missing(self):
        """Per DONE backup id, how many of its segments begin_wal .. end_wal the archive lacks (after the scan)."""
        result = {}
        for backup_id, timeline, begin, end, inside in self.ranges:
            first, last = self._first_pos.get(timeline), self._last_pos.get(timeline)
            if first is None:
                result[backup_id] = end - begin + 1
                continue
            outside = max(0, min(end, first - 1) - begin + 1) + max(0, end - max(begin, last + 1) + 1)
            result[backup_id] = min(end - begin + 1, inside + outside)
        return result

    def summary(self):
        """The ``wal`` result of the module (datetimes as ISO 8601 strings)."""
        return dict(
            count=self.count, bytes=self.bytes, segments=self.segments, backup_labels=self.kinds['backup'],
            partial_files=self.kinds['partial'], other_objects=self.other_objects, other_bytes=self.other_bytes,
            first_segment=segment_name(self.first[0], self.first[1], self.per_log) if self.first else None,
            last_segment=segment_name(self.last[0], self.last[1], self.per_log) if self.last else None,
            newest_modified=isoformat_z(self.newest_modified), timelines=sorted(self.timelines),
            history_files=sorted(self.history_files), segments_per_log=self.per_log,
            gaps=list(self.gaps), gap_count=self.gap_count, gaps_listed=len(self.gaps),
            missing_segments=self.missing_segments, gap_impacts=dict(self.gap_impacts))
