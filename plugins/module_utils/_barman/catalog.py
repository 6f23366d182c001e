# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a barman-cloud catalog in S3 (boto3 only), and the health check and storage report built on it.

The catalog of barman server ``<server>`` under destination path ``s3://<bucket>/<prefix>`` is, as
barman-cloud-backup and barman-cloud-wal-archive write it::

    <prefix>/<server>/base/<backup_id>/backup.info         key=value text (status, begin_wal, end_time, ...)
    <prefix>/<server>/base/<backup_id>/data.tar[.gz|...]   the data directory (and <oid>.tar per tablespace)
    <prefix>/<server>/base/<backup_id>/annotations/keep    "full" or "standalone": kept beyond any retention policy
    <prefix>/<server>/wals/<TTTTTTTTLLLLLLLL>/<segment>[.gz|.bz2|.xz|.snappy|.zst|.lz4]
    <prefix>/<server>/wals/<TTTTTTTT>.history[.gz|...]     timeline history files

WAL segment names are ``TTTTTTTTLLLLLLLLSSSSSSSS`` (timeline, log id, segment within the log id, in
hexadecimal); ``<segment>.<offset>.backup`` and ``<segment>.partial`` live beside the segments. Per log id
there are ``0x100000000 // xlog_segment_size`` segments (256 for 16 MiB segments, numbered 00 to FF).

:class:`BarmanCatalog` is the reader (also used by ``barman_retention``); :func:`run` is the
``barman_catalog_info`` module. Everything is streamed from ``ListObjectsV2`` pages, so memory does not grow
with the number of WAL objects.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import math
import os
import re
import tempfile

from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import (
    client_from_params, s3_connection_spec, s3_error)
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

try:
    import botocore.exceptions
    S3_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError)
except ImportError:  # pragma: no cover - require_boto3() reports it
    S3_ERRORS = ()

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024  # bytes
MIN_SEGMENT_SIZE = 1024 * 1024  # PostgreSQL's --wal-segsize range: 1 MiB to 1 GiB, a power of two
MAX_SEGMENT_SIZE = 1024 * 1024 * 1024
COMPRESSION_SUFFIXES = ('.gz', '.bz2', '.xz', '.snappy', '.zst', '.lz4')
KEEP_TARGETS = ('full', 'standalone')
MAX_INFO_BYTES = 1024 * 1024  # a backup.info is about 1.5 KB; larger is not one
INFO_READERS = 8  # backup.info objects read in parallel
MISSING = 'it does not exist (deleted while the catalog was read?)'

# The WAL file names barman accepts (barman.xlog): a segment, a .backup label, a .partial segment, a .history file.
_WAL_NAME = re.compile(r'^(?P<tli>[0-9A-Fa-f]{8})(?:(?P<log>[0-9A-Fa-f]{8})(?P<seg>[0-9A-Fa-f]{8})'
                       r'(?:\.(?P<offset>[0-9A-Fa-f]{8})\.backup|(?P<partial>\.partial))?|(?P<history>\.history))$')
_BACKUP_INFO_INTS = ('timeline', 'size', 'deduplicated_size', 'cluster_size', 'xlog_segment_size', 'version',
                     'begin_offset', 'end_offset')
_BACKUP_INFO_TIMES = ('begin_time', 'end_time')

# Verdict thresholds that are not options.
WAL_LAG_TOLERANCE = 3600  # seconds the newest WAL may lag behind the end of the newest backup
VERDICTS = ('ok', 'warning', 'critical')


# -- names and files ---------------------------------------------------------------------------------------------

def parse_destination_path(destination_path):
    """Split a barman destination path into bucket and key prefix.

    ``'s3://bucket/a/b/'`` gives ``('bucket', 'a/b')``; ``'s3://bucket'`` gives ``('bucket', '')``. As barman does,
    only the slashes at the ends of the path are dropped.

    :returns: tuple ``(bucket, prefix)`` of str.
    :raises PgopsError: naming ``destination_path`` when it is not ``s3://<bucket>[/<prefix>]``.
    """
    text = destination_path if isinstance(destination_path, str) else ''
    match = re.match(r'^s3://([^/?#]+)(/[^?#]*)?$', text.strip())
    if not match or not re.match(r'^[a-z0-9][a-z0-9.\-_]{1,254}$', match.group(1), re.IGNORECASE):
        raise PgopsError('destination_path must look like s3://<bucket>/<prefix>, as in the ObjectStore or barman '
                         'configuration (destinationPath); got %r.' % (destination_path,))
    return match.group(1), (match.group(2) or '').strip('/')


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


def parse_time(value):
    """A backup.info or option time (``2025-11-26 09:15:49.123456+00:00``, ISO 8601, ``Z`` allowed) as an aware datetime.

    A time without offset is taken as UTC (barman-cloud always writes the offset).

    :raises ValueError: when ``value`` is not such a time.
    """
    text = value.strip()
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    # Python before 3.11 reads only the shapes isoformat() writes: 6-digit fractions, +HH:MM offsets.
    match = re.match(r'^(.*?[T ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([+-]\d{2}(?::?\d{2})?)?$', text)
    if match:
        fraction = ('.' + (match.group(2) + '000000')[:6]) if match.group(2) else ''
        offset = match.group(3) or ''
        if len(offset) == 3:
            offset += ':00'
        elif len(offset) == 5:
            offset = offset[:3] + ':' + offset[3:]
        text = match.group(1) + fraction + offset
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment


def parse_backup_info(text):
    """Parse a barman ``backup.info`` (``key=value`` lines; blank lines and ``#`` comments skipped).

    Every field is returned as written (str), the literal ``None`` as ``None``, except: ``begin_time`` and
    ``end_time`` become aware datetimes, and ``timeline``, ``size``, ``deduplicated_size``, ``cluster_size``,
    ``xlog_segment_size`` (bytes), ``version``, ``begin_offset`` and ``end_offset`` ints. Absent fields among
    these are ``None``. barman-cloud-backup records ``size`` as ``None``; ``cluster_size`` is the size of the
    data directory in bytes.

    :param text: str or bytes (UTF-8).
    :returns: dict.
    :raises PgopsError: when a line has no ``=``, or a time or number cannot be read (the message names the field).
    """
    if isinstance(text, bytes):
        try:
            text = text.decode('utf-8')
        except UnicodeDecodeError as exc:
            raise PgopsError('backup.info is not UTF-8 text: %s' % exc)
    fields = dict((name, None) for name in _BACKUP_INFO_INTS + _BACKUP_INFO_TIMES)
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith('#'):
            continue
        name, equals, value = line.partition('=')
        if not equals or not name.strip():
            raise PgopsError('backup.info line %d is not key=value: %r' % (number, line[:200]))
        value = value.strip()
        fields[name.strip()] = None if value == 'None' else value
    for name in _BACKUP_INFO_TIMES:
        if fields[name] is not None:
            try:
                fields[name] = parse_time(fields[name])
            except ValueError:
                raise PgopsError('backup.info field %s is not a time: %r' % (name, fields[name]))
    for name in _BACKUP_INFO_INTS:
        if fields[name] is not None:
            try:
                fields[name] = int(fields[name])
            except ValueError:
                raise PgopsError('backup.info field %s is not a whole number: %r' % (name, fields[name]))
    return fields


def keep_target(annotation):
    """The keep request of a ``annotations/keep`` object, as barman's retention reads it.

    :param annotation: its text (str), or ``None`` when the object does not exist.
    :returns: ``None`` (no keep annotation), ``'standalone'``, or ``'full'``. barman treats any other content as
        ``full`` (an annotation object exists: the backup is kept with its WAL); so does this function, including
        empty content, which barman's retention would not keep but its delete command refuses to delete.
    """
    if annotation is None:
        return None
    return 'standalone' if annotation.strip() == 'standalone' else 'full'


# -- the reader --------------------------------------------------------------------------------------------------

class BarmanCatalog:
    """The barman-cloud catalog of one server in S3.

    :param client: boto3 S3 client (see :func:`~ansible_collections.pgops.resilience.plugins.module_utils.s3.s3_client`).
    :param destination_path: ``s3://bucket/prefix`` (str), as given to barman-cloud.
    :param server_name: the barman server name (str; CloudNativePG's ``serverName``, by default the Cluster name).
    :param endpoint_url: str or None, only for error messages.
    :raises PgopsError: when ``destination_path`` is not valid or ``server_name`` is empty or holds ``/``.

    Attributes: ``bucket``, ``prefix`` (the destination's key prefix, without slashes at its ends), ``root_prefix``
    (``'prefix/'``, or ``''`` for a bucket root), ``server_prefix`` (``'prefix/server/'``), ``base_prefix``
    and ``wal_prefix`` (``server_prefix`` + ``base/`` and ``wals/``).
    """

    def __init__(self, client, destination_path, server_name, endpoint_url=None):
        self.bucket, self.prefix = parse_destination_path(destination_path)
        if not server_name or '/' in server_name or server_name != server_name.strip():
            raise PgopsError('server_name must be the barman server name (a directory under %s), without "/" or '
                             'surrounding spaces; got %r.' % (destination_path, server_name))
        self.client = client
        self.destination_path = destination_path
        self.server_name = server_name
        self.endpoint_url = endpoint_url
        self.root_prefix = self.prefix + '/' if self.prefix else ''
        self.server_prefix = self.root_prefix + server_name + '/'
        self.base_prefix = self.server_prefix + 'base/'
        self.wal_prefix = self.server_prefix + 'wals/'
        self._base_usage = None

    # -- listing

    def _pages(self, prefix, delimiter=None):
        """``ListObjectsV2`` pages under ``prefix``, one at a time (a page holds at most 1,000 keys)."""
        kwargs = dict(Bucket=self.bucket, Prefix=prefix)
        if delimiter:
            kwargs['Delimiter'] = delimiter
        try:
            yield from self.client.get_paginator('list_objects_v2').paginate(**kwargs)
        except S3_ERRORS as exc:
            raise s3_error(exc, 'listing', self.bucket, prefix, self.endpoint_url)

    def iter_objects(self, prefix):
        """Every object under ``prefix`` (a key prefix), in key order, streamed page by page.

        :returns: iterator of dicts ``key`` (str), ``size`` (bytes), ``last_modified`` (aware datetime).
        :raises PgopsError: naming the prefix and the endpoint when the listing fails.
        """
        for page in self._pages(prefix):
            for item in page.get('Contents', ()):
                yield dict(key=item['Key'], size=item['Size'], last_modified=item['LastModified'])

    def list_level(self, prefix):
        """One level under ``prefix`` (a key prefix ending with ``/``, or ``''``), as ``ListObjectsV2`` with ``Delimiter='/'``.

        :returns: dict ``directories`` (sorted names of the "directories" directly under it) and ``files`` (usage
            dict of the objects directly under it, see :func:`new_usage`).
        :raises PgopsError: when the listing fails.
        """
        directories = []
        files = new_usage()
        for page in self._pages(prefix, delimiter='/'):
            directories.extend(entry['Prefix'][len(prefix):].rstrip('/') for entry in page.get('CommonPrefixes', ()))
            for item in page.get('Contents', ()):
                add_usage(files, item['Size'], item['LastModified'])
        return dict(directories=sorted(directories), files=files)

    def server_directories(self):
        """Names of the directories directly under the destination path: barman servers, this one among them.

        :returns: sorted list of str.
        :raises PgopsError: when the listing fails.
        """
        return self.list_level(self.root_prefix)['directories']

    def usage(self, prefix):
        """Bytes and objects under ``prefix`` (streamed; see :func:`new_usage` for the dict)."""
        total = new_usage()
        for item in self.iter_objects(prefix):
            add_usage(total, item['size'], item['last_modified'])
        return total

    # -- backups

    def backups(self):
        """The backups of this server, read from ``base/``: one listing and one GET per ``backup.info``.

        :returns: list sorted by ``backup_id``, of dicts:

            - ``backup_id``, ``backup_name`` (str or None), ``status`` (``DONE``, ``FAILED``, ``STARTED``, ... or
              ``None`` when unreadable), ``error`` (barman's error text or None);
            - ``begin_time``, ``end_time`` (aware datetimes or None); ``begin_wal``, ``end_wal`` (segment names),
              ``begin_lsn``, ``end_lsn`` (``'0/5000028'``), ``timeline`` (int), ``size`` (bytes as recorded,
              None for barman-cloud), ``cluster_size`` (bytes of the data directory), ``xlog_segment_size``
              (bytes), ``version`` (PostgreSQL, int such as 150018), ``systemid``;
            - ``keep`` (None, ``'full'`` or ``'standalone'``, see :func:`keep_target`);
            - ``prefix`` (``'prefix/server/base/<id>/'``: everything the backup holds is under it),
              ``stored_bytes`` and ``objects`` (what is under ``prefix``), ``info_modified`` (aware datetime of
              the ``backup.info`` object, or None);
            - ``readable`` (bool): False when there is no ``backup.info`` or it cannot be read or parsed;
              ``unreadable_reason`` says why (None when readable). Nothing is guessed for those: their
              backup.info fields are None.

        :raises PgopsError: when the listing fails (a backup.info that cannot be read makes that backup unreadable).
        """
        found = {}
        usage = new_usage()
        for item in self.iter_objects(self.base_prefix):
            add_usage(usage, item['size'], item['last_modified'])
            rest = item['key'][len(self.base_prefix):]
            backup_id, slash, inner = rest.partition('/')
            if not slash or not backup_id:
                continue  # an object directly under base/: counted in the usage, not a backup
            entry = found.get(backup_id)
            if entry is None:
                entry = found[backup_id] = dict(stored_bytes=0, objects=0, info=None, keep=False)
            entry['stored_bytes'] += item['size']
            entry['objects'] += 1
            if inner == 'backup.info':
                entry['info'] = item['last_modified']
            elif inner == 'annotations/keep':
                entry['keep'] = True
        self._base_usage = usage
        ids = sorted(found)
        if not ids:
            return []
        workers = min(INFO_READERS, len(ids))
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda backup_id: self._backup(backup_id, found[backup_id]), ids))

    def base_usage(self):
        """Bytes and objects under ``base/`` (from the listing of :meth:`backups` when it ran, else listed now)."""
        if self._base_usage is None:
            self._base_usage = self.usage(self.base_prefix)
        return self._base_usage

    def _read_small(self, key):
        """``(bytes, None)`` of a small object, or ``(None, reason)``; the reason is :data:`MISSING` when it does not exist."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)['Body']
            try:
                data = body.read(MAX_INFO_BYTES + 1)
            finally:
                body.close()
        except S3_ERRORS as exc:
            if (getattr(exc, 'response', None) or {}).get('Error', {}).get('Code') in ('NoSuchKey', '404', 'NotFound'):
                return None, MISSING
            return None, s3_error(exc, 'download', self.bucket, key, self.endpoint_url).msg
        if len(data) > MAX_INFO_BYTES:
            return None, 'it is larger than %d bytes' % MAX_INFO_BYTES
        return data, None

    def _backup(self, backup_id, entry):
        prefix = self.base_prefix + backup_id + '/'
        backup = dict(backup_id=backup_id, backup_name=None, status=None, error=None, begin_time=None, end_time=None,
                      begin_wal=None, end_wal=None, begin_lsn=None, end_lsn=None, timeline=None, size=None,
                      cluster_size=None, xlog_segment_size=None, version=None, systemid=None, keep=None,
                      prefix=prefix, stored_bytes=entry['stored_bytes'], objects=entry['objects'],
                      info_modified=entry['info'], readable=False, unreadable_reason=None)
        if entry['keep']:
            data, reason = self._read_small(prefix + 'annotations/keep')
            if data is not None:
                backup['keep'] = keep_target(data.decode('utf-8', 'replace'))
            elif reason != MISSING:
                backup['keep'] = 'full'  # listed but unreadable: barman keeps a backup whose annotation object exists
        if entry['info'] is None:
            backup['unreadable_reason'] = 'there is no %sbackup.info' % prefix
            return backup
        data, reason = self._read_small(prefix + 'backup.info')
        if data is None:
            backup['unreadable_reason'] = 'backup.info cannot be read: %s' % reason
            return backup
        try:
            info = parse_backup_info(data)
        except PgopsError as exc:
            backup['unreadable_reason'] = exc.msg
            return backup
        backup.update(backup_name=info.get('backup_name'), status=info.get('status'), error=info.get('error'),
                      begin_time=info['begin_time'], end_time=info['end_time'], begin_wal=info.get('begin_wal'),
                      end_wal=info.get('end_wal'), begin_lsn=info.get('begin_xlog'), end_lsn=info.get('end_xlog'),
                      timeline=info['timeline'], size=info['size'], cluster_size=info['cluster_size'],
                      xlog_segment_size=info['xlog_segment_size'], version=info['version'],
                      systemid=info.get('systemid'), readable=True)
        if backup['status'] is None:
            backup.update(readable=False, unreadable_reason='backup.info has no status')
        return backup

    # -- WAL

    def iter_wal_objects(self, include_other=False):
        """The WAL archive of this server, in key order, streamed page by page (never the whole listing in memory).

        :param include_other: also yield the objects under ``wals/`` that are not WAL files (``kind`` None).
        :returns: iterator of dicts ``key``, ``name`` (base name without the compression suffix), ``size``
            (bytes), ``last_modified`` (aware datetime), and from :func:`parse_wal_name` ``kind``, ``timeline``,
            ``log``, ``seg``, ``compression`` (all None for other objects).
        :raises PgopsError: when the listing fails.
        """
        for item in self.iter_objects(self.wal_prefix):
            wal = parse_wal_name(item['key'])
            if wal is None:
                if not include_other:
                    continue
                wal = dict(name=item['key'].rsplit('/', 1)[-1], compression=None, kind=None, timeline=None, log=None, seg=None)
            wal.update(item)
            yield wal


# -- usage counters ----------------------------------------------------------------------------------------------

def new_usage():
    """An empty usage counter: dict ``bytes``, ``objects``, ``last_modified`` (newest, aware datetime or None)."""
    return dict(bytes=0, objects=0, last_modified=None)


def add_usage(usage, size, last_modified):
    """Count one object of ``size`` bytes into ``usage``."""
    usage['bytes'] += size
    usage['objects'] += 1
    if last_modified is not None and (usage['last_modified'] is None or last_modified > usage['last_modified']):
        usage['last_modified'] = last_modified


# -- the analysis ------------------------------------------------------------------------------------------------

def segment_size_of(backups):
    """``xlog_segment_size`` (bytes) of the newest readable backup that records a valid one; 16 MiB otherwise."""
    for backup in sorted(backups, key=lambda b: b['backup_id'], reverse=True):
        if backup.get('readable') and valid_segment_size(backup.get('xlog_segment_size')):
            return backup['xlog_segment_size']
    return DEFAULT_SEGMENT_SIZE


def backup_moment(backup):
    """When a backup ended: ``end_time``, else ``begin_time``, else the time its backup.info was written (or None)."""
    return backup.get('end_time') or backup.get('begin_time') or backup.get('info_modified')


def latest_done(backups):
    """The newest ``DONE`` backup by :func:`backup_moment` (ties by backup_id), or None."""
    done = [b for b in backups if b.get('readable') and b.get('status') == 'DONE' and backup_moment(b) is not None]
    if not done:
        return None
    return max(done, key=lambda b: (backup_moment(b), b['backup_id']))


def stale_backups(backups, now, stale_started_hours):
    """Backups barman's retention never removes and nobody finishes: ``FAILED``, or ``STARTED`` for longer than
    ``stale_started_hours`` (from ``begin_time``, else the backup.info's time).

    :returns: list of dicts ``backup_id``, ``status``, ``begin_time`` (datetime or None), ``age_seconds`` (int or
        None), ``reason``, ``prefix``, ``stored_bytes``.
    """
    stale = []
    for backup in backups:
        status = backup.get('status')
        since = backup.get('begin_time') or backup.get('info_modified')
        age = int((now - since).total_seconds()) if since is not None else None
        if status == 'FAILED':
            reason = 'FAILED%s' % (': %s' % backup['error'] if backup.get('error') else '')
        elif status == 'STARTED' and age is not None and age > stale_started_hours * 3600:
            reason = 'STARTED %.1f hours ago and not finished (limit %s hours)' % (age / 3600.0, stale_started_hours)
        else:
            continue
        stale.append(dict(backup_id=backup['backup_id'], status=status, begin_time=backup.get('begin_time'),
                          age_seconds=age, reason=reason, prefix=backup['prefix'], stored_bytes=backup['stored_bytes']))
    return stale


class WalScan:
    """Running counters over a WAL listing in key order: totals, first and last segment, timelines, and the gaps
    between consecutive segments of the same timeline (at most ``gap_limit`` kept, all counted).

    Memory holds one entry per timeline and per DONE backup, plus the kept gaps: not one per WAL object.

    :param segment_size: WAL segment size in bytes (see :func:`segment_size_of`).
    :param backups: the catalog's backups (see :meth:`BarmanCatalog.backups`); the WAL ranges of the readable DONE
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
        """Count one object of :meth:`BarmanCatalog.iter_wal_objects` (``kind`` None: not a WAL file)."""
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


def assess(backups, scan, stale, now, warning_hours, critical_hours, unreadable=0):
    """The health verdict and its reasons.

    critical: no DONE backup; the newest DONE backup is older than ``critical_hours``; or the archive lacks WAL
    segments the newest DONE backup needs to be consistent (begin_wal .. end_wal).
    warning: the newest DONE backup is older than ``warning_hours``; no WAL file at all; the newest WAL file is older
    than ``warning_hours`` (archiving stopped?) or more than an hour older than the end of the newest backup;
    an older DONE backup lacks some of its WAL; gaps after the oldest backup that can serve point-in-time recovery;
    stale backups (FAILED, or STARTED for too long); backup directories whose backup.info cannot be read.

    :param backups: the catalog's backups.
    :param scan: a finished :class:`WalScan`.
    :param stale: the result of :func:`stale_backups`.
    :param now: aware datetime.
    :returns: tuple ``(verdict, reasons, latest)``: verdict ``'ok'``, ``'warning'`` or ``'critical'``; reasons a
        list of str, most severe first; latest the newest DONE backup dict or None.
    """
    critical, warning = [], []
    latest = latest_done(backups)
    missing = scan.backup_wal_missing()
    if latest is None:
        critical.append('no completed (DONE) backup in the catalog: %d backup(s) found, none DONE and readable'
                        % len(backups))
    else:
        age = (now - backup_moment(latest)).total_seconds()
        text = 'the newest DONE backup %s is %.1f hours old' % (latest['backup_id'], age / 3600.0)
        if age > critical_hours * 3600:
            critical.append('%s (critical above %s hours)' % (text, critical_hours))
        elif age > warning_hours * 3600:
            warning.append('%s (warning above %s hours)' % (text, warning_hours))
        if missing.get(latest['backup_id']):
            critical.append('the newest DONE backup %s cannot be restored: %d WAL segment(s) between its begin_wal %s and '
                            'end_wal %s are not in the archive' % (latest['backup_id'], missing[latest['backup_id']],
                                                                   latest['begin_wal'], latest['end_wal']))
    older = sorted(backup_id for backup_id, count in missing.items() if count and (latest is None or backup_id != latest['backup_id']))
    if older:
        warning.append('%d older DONE backup(s) lack WAL segments between their begin_wal and end_wal and cannot be '
                       'restored: %s' % (len(older), ', '.join(older[:10]) + (' ...' if len(older) > 10 else '')))
    if scan.count == 0:
        warning.append('no WAL file in the archive: WAL archiving is not writing to this server directory')
    elif scan.newest_modified is not None:
        wal_age = (now - scan.newest_modified).total_seconds()
        if wal_age > warning_hours * 3600:
            warning.append('the newest WAL file was archived %.1f hours ago (warning above %s hours): is WAL archiving '
                           'still running?' % (wal_age / 3600.0, warning_hours))
        elif latest is not None and backup_moment(latest) - scan.newest_modified > datetime.timedelta(seconds=WAL_LAG_TOLERANCE):
            warning.append('the newest WAL file (%s) is older than the end of the newest backup %s by more than %d minutes: '
                           'WAL archiving lags behind' % (isoformat_z(scan.newest_modified), latest['backup_id'],
                                                          WAL_LAG_TOLERANCE // 60))
    if scan.gap_impacts['pitr']:
        warning.append('%d gap(s) in the WAL archive after the oldest backup usable for point-in-time recovery: recovery '
                       'cannot replay across them' % scan.gap_impacts['pitr'])
    if stale:
        warning.append('%d stale backup(s) (FAILED, or STARTED and never finished), which retention does not remove: %s'
                       % (len(stale), ', '.join(s['backup_id'] for s in stale[:10]) + (' ...' if len(stale) > 10 else '')))
    if unreadable:
        warning.append('%d backup director%s without a readable backup.info' % (unreadable, 'y' if unreadable == 1 else 'ies'))
    verdict = 'critical' if critical else 'warning' if warning else 'ok'
    return verdict, critical + warning, latest


# -- Prometheus textfile -----------------------------------------------------------------------------------------

def _label_value(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _number(value):
    if value is None:
        return 'NaN'
    if isinstance(value, float):
        if math.isinf(value):
            return '+Inf' if value > 0 else '-Inf'
        if math.isnan(value):
            return 'NaN'
        return repr(value)
    return str(int(value))


METRICS = (
    ('pgops_barman_check_timestamp_seconds', 'gauge', 'When the catalog was checked (Unix time).'),
    ('pgops_barman_verdict', 'gauge', 'Health verdict of the catalog: 0 ok, 1 warning, 2 critical.'),
    ('pgops_barman_last_backup_timestamp_seconds', 'gauge', 'End time of the newest DONE backup (Unix time; 0 when there is none).'),
    ('pgops_barman_backup_age_seconds', 'gauge', 'Age of the newest DONE backup in seconds (+Inf when there is none).'),
    ('pgops_barman_backups', 'gauge', 'Backups in the catalog by status (UNREADABLE: no readable backup.info).'),
    ('pgops_barman_stale_backups', 'gauge', 'FAILED backups, and STARTED ones never finished.'),
    ('pgops_barman_wal_objects', 'gauge', 'WAL files in the archive (segments, history, backup labels, partial).'),
    ('pgops_barman_wal_bytes', 'gauge', 'Bytes of the WAL files in the archive.'),
    ('pgops_barman_last_wal_timestamp_seconds', 'gauge', 'When the newest WAL file was written (Unix time; 0 when none).'),
    ('pgops_barman_wal_gaps', 'gauge', 'Gaps between consecutive WAL segments of the same timeline.'),
    ('pgops_barman_wal_missing_segments', 'gauge', 'WAL segments missing inside the gaps.'),
    ('pgops_barman_storage_bytes', 'gauge', 'Bytes under the destination path by directory kind (base, wals, other).'),
    ('pgops_barman_storage_objects', 'gauge', 'Objects under the destination path by directory kind (base, wals, other).'),
    ('pgops_barman_other_servers', 'gauge', 'Other server directories under the destination path (orphan candidates).'),
)


def prometheus_text(result, server_name, now):
    """The module result as Prometheus text exposition format (node_exporter's textfile collector).

    Every sample carries ``server="<server_name>"``; ``pgops_barman_backups`` adds ``status``, the storage metrics
    ``directory`` (``base``, ``wals`` or ``other``, the last summing every other directory, this server's others and
    other servers').

    :param result: dict with the module's ``verdict``, ``latest_backup``, ``backups``, ``stale_backups``, ``wal``,
        ``storage`` and ``other_servers`` (see :func:`run`).
    :param now: aware datetime of the check.
    :returns: str ending with a newline.
    """
    server = 'server="%s"' % _label_value(server_name)
    samples = dict((name, []) for name, kind, text in METRICS)
    samples['pgops_barman_check_timestamp_seconds'].append((server, now.timestamp()))
    samples['pgops_barman_verdict'].append((server, VERDICTS.index(result['verdict'])))
    latest = result.get('latest_backup')
    if latest:
        samples['pgops_barman_last_backup_timestamp_seconds'].append((server, float(latest['timestamp'])))
        samples['pgops_barman_backup_age_seconds'].append((server, float(latest['age_seconds'])))
    else:
        samples['pgops_barman_last_backup_timestamp_seconds'].append((server, 0))
        samples['pgops_barman_backup_age_seconds'].append((server, float('inf')))
    statuses = dict(DONE=0, FAILED=0)
    for backup in result['backups']:
        status = backup['status'] if backup['readable'] else 'UNREADABLE'
        statuses[status] = statuses.get(status, 0) + 1
    for status in sorted(statuses):
        samples['pgops_barman_backups'].append(('%s,status="%s"' % (server, _label_value(status)), statuses[status]))
    samples['pgops_barman_stale_backups'].append((server, len(result['stale_backups'])))
    wal = result['wal']
    samples['pgops_barman_wal_objects'].append((server, wal['count']))
    samples['pgops_barman_wal_bytes'].append((server, wal['bytes']))
    newest = parse_time(wal['newest_modified']).timestamp() if wal['newest_modified'] else 0
    samples['pgops_barman_last_wal_timestamp_seconds'].append((server, newest))
    samples['pgops_barman_wal_gaps'].append((server, wal['gap_count']))
    samples['pgops_barman_wal_missing_segments'].append((server, wal['missing_segments']))
    kinds = dict((kind, [0, 0]) for kind in ('base', 'wals', 'other'))
    for directory in result['storage']['directories']:
        kinds[directory['kind']][0] += directory['bytes']
        kinds[directory['kind']][1] += directory['objects']
    for kind in ('base', 'wals', 'other'):
        labels = '%s,directory="%s"' % (server, kind)
        samples['pgops_barman_storage_bytes'].append((labels, kinds[kind][0]))
        samples['pgops_barman_storage_objects'].append((labels, kinds[kind][1]))
    samples['pgops_barman_other_servers'].append((server, len(result['other_servers'])))
    lines = []
    for name, kind, text in METRICS:
        lines.append('# HELP %s %s' % (name, text))
        lines.append('# TYPE %s %s' % (name, kind))
        lines.extend('%s{%s} %s' % (name, labels, _number(value)) for labels, value in samples[name])
    return '\n'.join(lines) + '\n'


def write_atomically(path, text, mode=0o600):
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename, so a reader (the
    textfile collector) never sees half a file. The temporary name does not end with ``.prom``; the file gets ``mode``
    (int; 0600 by default: only its owner reads it unless the metrics_file_mode option says otherwise).

    :returns: the absolute path written.
    :raises PgopsError: naming the path when the directory does not exist or cannot be written.
    """
    path = os.path.abspath(os.path.expanduser(path))
    directory = os.path.dirname(path)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), suffix='.tmp', dir=directory)
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        raise PgopsError('Cannot write the metrics file %s: %s. Its directory must exist and be writable '
                         '(node_exporter --collector.textfile.directory).' % (path, exc))
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    return path


# -- the module --------------------------------------------------------------------------------------------------

def argument_spec():
    """The options of ``barman_catalog_info`` (with the S3 connection options of ``s3_connection_spec``)."""
    spec = dict(
        destination_path=dict(type='str', required=True),
        server_name=dict(type='str', required=True),
        backup_age_warning=dict(type='float', default=48),
        backup_age_critical=dict(type='float', default=168),
        stale_started_hours=dict(type='float', default=24),
        wal_gap_limit=dict(type='int', default=100),
        metrics_file=dict(type='path'),
        metrics_file_mode=dict(type='str', default='0600', choices=['0600', '0640', '0644']),
        now=dict(type='str'),
    )
    spec.update(s3_connection_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=argument_spec())


def _check_params(params):
    for option in ('backup_age_warning', 'backup_age_critical', 'stale_started_hours'):
        if params[option] is None or params[option] <= 0:
            raise PgopsError('%s must be a number of hours above 0, got %r.' % (option, params[option]))
    if params['backup_age_warning'] > params['backup_age_critical']:
        raise PgopsError('backup_age_warning (%s hours) must not exceed backup_age_critical (%s hours).'
                         % (params['backup_age_warning'], params['backup_age_critical']))
    if params['wal_gap_limit'] is None or params['wal_gap_limit'] < 0:
        raise PgopsError('wal_gap_limit must be 0 or more, got %r.' % (params['wal_gap_limit'],))
    if not params.get('now'):
        return utc_now()
    try:
        return parse_time(params['now'])
    except (ValueError, AttributeError):
        raise PgopsError('now must be an ISO 8601 time such as 2026-01-31T06:00:00Z, got %r.' % (params['now'],))


def _backup_result(backup, wal_missing):
    out = dict(backup)
    for name in ('begin_time', 'end_time', 'info_modified'):
        out[name] = isoformat_z(out[name])
    out['wal_missing'] = wal_missing.get(backup['backup_id'])
    return out


def storage_report(catalog, base, wal_usage, level):
    """The ``storage`` and ``other_servers`` results: this server's ``base/`` and ``wals/``, anything else under it,
    each other directory under the destination path, and objects lying directly under the destination path.

    :param catalog: :class:`BarmanCatalog`.
    :param base: usage dict of ``base/``; ``wal_usage`` the same for ``wals/``.
    :param level: :meth:`BarmanCatalog.list_level` of the destination path.
    :returns: tuple ``(storage, other_servers)``.
    """
    directories = [dict(path=catalog.base_prefix, kind='base', server=catalog.server_name, **base),
                   dict(path=catalog.wal_prefix, kind='wals', server=catalog.server_name, **wal_usage)]
    own = catalog.list_level(catalog.server_prefix)
    for name in own['directories']:
        if name not in ('base', 'wals'):
            usage = catalog.usage(catalog.server_prefix + name + '/')
            directories.append(dict(path=catalog.server_prefix + name + '/', kind='other', server=catalog.server_name, **usage))
    if own['files']['objects']:
        directories.append(dict(path=catalog.server_prefix, kind='other', server=catalog.server_name, **own['files']))
    others = []
    for name in level['directories']:
        if name == catalog.server_name:
            continue
        path = catalog.root_prefix + name + '/'
        usage, backups, layout = new_usage(), 0, False
        for item in catalog.iter_objects(path):
            add_usage(usage, item['size'], item['last_modified'])
            rest = item['key'][len(path):]
            if rest.startswith(('base/', 'wals/')):
                layout = True
                if rest.startswith('base/') and rest.endswith('/backup.info') and rest.count('/') == 2:
                    backups += 1
        directories.append(dict(path=path, kind='other', server=name, **usage))
        others.append(dict(name=name, path=path, barman_layout=layout, backup_count=backups, **usage))
    if level['files']['objects']:
        directories.append(dict(path=catalog.root_prefix, kind='other', server=None, **level['files']))
    total_bytes = sum(d['bytes'] for d in directories)
    total_objects = sum(d['objects'] for d in directories)
    for item in directories + others:
        item['last_modified'] = isoformat_z(item['last_modified'])
    for item in directories:
        item['percent'] = round(100.0 * item['bytes'] / total_bytes, 1) if total_bytes else 0.0
    storage = dict(total_bytes=total_bytes, total_objects=total_objects, directories=directories,
                   location='s3://%s/%s' % (catalog.bucket, catalog.root_prefix))
    return storage, others


def report_catalog(params, check_mode=False, client=None):
    """The ``barman_catalog_info`` module: read the catalog, check its health, report its storage.

    :param params: dict of the options of :func:`argument_spec` (all present, as AnsibleModule fills them in).
    :param check_mode: when True the metrics file is not written.
    :param client: a boto3 S3 client to use instead of one built from ``params``.
    :returns: the module result (see the module's RETURN); ``changed`` is always False.
    :raises PgopsError: for invalid options, and when S3 cannot be listed (the message names the prefix and endpoint).
    """
    now = _check_params(params)
    if client is None:
        client = client_from_params(params)
    catalog = BarmanCatalog(client, params['destination_path'], params['server_name'], params.get('endpoint_url'))
    level = catalog.list_level(catalog.root_prefix)
    backups = catalog.backups()
    scan = WalScan(segment_size_of(backups), backups, params['wal_gap_limit'])
    wal_usage = new_usage()
    for wal in catalog.iter_wal_objects(include_other=True):
        add_usage(wal_usage, wal['size'], wal['last_modified'])
        scan.add(wal)
    stale = stale_backups(backups, now, params['stale_started_hours'])
    unreadable = sum(1 for b in backups if not b['readable'])
    verdict, reasons, latest = assess(backups, scan, stale, now, params['backup_age_warning'],
                                      params['backup_age_critical'], unreadable)
    server_found = params['server_name'] in level['directories']
    if not server_found:
        verdict = 'critical'
        reasons.insert(0, 'there is no directory %s/ under %s (directories there: %s): check server_name (CloudNativePG: '
                          'serverName, by default the Cluster name) and destination_path'
                       % (params['server_name'], params['destination_path'], ', '.join(level['directories'][:20]) or 'none'))
    storage, others = storage_report(catalog, catalog.base_usage(), wal_usage, level)
    wal_missing = scan.backup_wal_missing()
    latest_result = None
    if latest is not None:
        moment = backup_moment(latest)
        latest_result = dict(backup_id=latest['backup_id'], backup_name=latest['backup_name'],
                             end_time=isoformat_z(moment), timestamp=moment.timestamp(),
                             age_seconds=int((now - moment).total_seconds()), begin_wal=latest['begin_wal'],
                             end_wal=latest['end_wal'], timeline=latest['timeline'])
    for item in stale:
        item['begin_time'] = isoformat_z(item['begin_time'])
    result = dict(
        changed=False, destination_path=params['destination_path'], server_name=params['server_name'],
        bucket=catalog.bucket, server_prefix=catalog.server_prefix, now=isoformat_z(now),
        backups=[_backup_result(b, wal_missing) for b in backups], backup_count=len(backups),
        backup_counts=_status_counts(backups), latest_backup=latest_result, verdict=verdict,
        verdict_reasons=reasons, wal=scan.summary(), storage=storage, other_servers=others,
        stale_backups=stale, server_found=server_found, metrics_file=None)
    if params.get('metrics_file') and not check_mode:
        result['metrics_file'] = write_atomically(params['metrics_file'], prometheus_text(result, params['server_name'], now),
                                                  int(params.get('metrics_file_mode') or '0600', 8))
    return result


def _status_counts(backups):
    counts = {}
    for backup in backups:
        status = backup['status'] if backup['readable'] else 'UNREADABLE'
        counts[status] = counts.get(status, 0) + 1
    return counts
