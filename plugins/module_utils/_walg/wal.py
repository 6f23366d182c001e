# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL segments of a wal-g storage: their names, the segments an LSN range spans, and ranges of segments.

A WAL file name is ``TTTTTTTTXXXXXXXXYYYYYYYY``: the timeline, then the segment number split in two (PostgreSQL docs
30.6 "WAL Internals"; ``XLogFileName`` in ``xlog_internal.h``). wal-g stores each segment under ``wal_005/`` as
``<name>.<compression>`` (and the backup history file ``<name>.<offset>.backup.<compression>`` beside it) and, like
wal-g 3.0.9 (``internal/databases/postgres/timeline.go``), this assumes 16 MiB segments.
"""

from __future__ import annotations

import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

WAL_FOLDER = 'wal_005'
SEGMENT_SIZE = 16 * 1024 * 1024  # bytes
_SEGMENTS_PER_XLOGID = 0x100000000 // SEGMENT_SIZE
_SEGMENT = re.compile(r'([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(?![0-9A-F])')
_LSN = re.compile(r'([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\Z')


def segment_of(name):
    """``(timeline, segment number)`` of a WAL object named ``name`` (its base name starts with a WAL file name: a
    segment, ``.partial`` or a backup history file), or None for anything else (a timeline history file,
    ``00000002.history``, which following a timeline needs)."""
    base = name.rsplit('/', 1)[-1]
    match = _SEGMENT.match(base)
    if not match:
        return None
    timeline, log, seg = (int(group, 16) for group in match.groups())
    return timeline, log * _SEGMENTS_PER_XLOGID + seg


def segment_name(timeline, number):
    """The WAL file name (str) of segment ``number`` on ``timeline``."""
    return '%08X%08X%08X' % (timeline, number // _SEGMENTS_PER_XLOGID, number % _SEGMENTS_PER_XLOGID)


def lsn_value(text):
    """An LSN ``X/Y`` as an int (bytes).

    :raises PgopsError: for text that is not an LSN.
    """
    match = _LSN.match(str(text or '').strip())
    if not match:
        raise PgopsError('%r is not an LSN (X/Y).' % (text,))
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def backup_segments(backup):
    """The segments a base backup needs to become consistent: ``(timeline, first, last)``, from its start to its
    finish LSN. The first is the segment holding the byte before the start LSN, as wal-g counts a permanent backup's
    WAL (``GetPermanentBackupsAndWals``, ``NewWalSegmentNo(StartLsn - 1)``); the last holds the finish LSN itself.

    :param backup: dict with ``timeline``, ``start_lsn``, ``finish_lsn`` (``X/Y``), as ``walg_backup_info`` lists it.
    """
    start = lsn_value(backup['start_lsn'])
    finish = lsn_value(backup['finish_lsn'])
    return backup['timeline'], max(start - 1, 0) // SEGMENT_SIZE, finish // SEGMENT_SIZE


class WalNeeds:
    """Which WAL segments recovery needs, given the backups kept and the base of the recovery window (the backup a
    recovery to the window's first moment starts from):

    * each backup's own start-to-finish range on its timeline (:func:`backup_segments`), to become consistent;
    * from the base on, every segment numbered at or after the base's first, on any timeline;
    * every segment of a timeline newer than the base's. A later promotion, or a restore to an older point that
      forked below the base's start and went on archiving, numbers its WAL below the base's first segment: that WAL
      is the database's present history, and LATEST rolls forward through it.

    :param backups: list of backup dicts (``timeline``, ``start_lsn``, ``finish_lsn``).
    :param base: the window base backup dict, or None (then only the backups' ranges are needed).
    """

    def __init__(self, backups, base):
        self.ranges = [backup_segments(b) for b in backups]
        self.base = backup_segments(base)[:2] if base is not None else None

    def run(self, timeline, first, last):
        """Whether a segment of ``first``..``last`` (segment numbers) on ``timeline`` is needed."""
        if self.base is not None and (timeline > self.base[0] or last >= self.base[1]):
            return True
        return any(t == timeline and start <= last and first <= end for t, start, end in self.ranges)

    def segment(self, timeline, number):
        """Whether segment ``number`` on ``timeline`` is needed."""
        return self.run(timeline, number, number)


def segment_ranges(objects):
    """Runs of consecutive segments per timeline (list of dicts ``timeline``, ``first``, ``last`` (WAL file names),
    ``segments`` (count), ``bytes``), ordered by timeline then segment.

    :param objects: iterable of dicts with ``name`` and ``size`` (bytes) of WAL objects; several objects of one
        segment (the segment and a backup history file) count as one segment.
    """
    sizes = {}
    for obj in objects:
        where = segment_of(obj['name'])
        if where is not None:
            sizes[where] = sizes.get(where, 0) + int(obj.get('size') or 0)
    ranges = []
    for timeline, number in sorted(sizes):
        last = ranges[-1] if ranges else None
        if last and last['timeline'] == timeline and last['_last'] == number - 1:
            last.update(_last=number, last=segment_name(timeline, number), segments=last['segments'] + 1,
                        bytes=last['bytes'] + sizes[(timeline, number)])
        else:
            ranges.append(dict(timeline=timeline, first=segment_name(timeline, number), last=segment_name(timeline, number),
                               segments=1, bytes=sizes[(timeline, number)], _last=number))
    for item in ranges:
        del item['_last']
    return ranges
