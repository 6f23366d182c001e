# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a barman-cloud catalog in S3 (boto3 only): its backups, their ``backup.info`` and keep annotations, its WAL
archive and the storage under it.

The catalog of barman server ``<server>`` under destination path ``s3://<bucket>/<prefix>`` is, as
barman-cloud-backup and barman-cloud-wal-archive write it::

    <prefix>/<server>/base/<backup_id>/backup.info         key=value text (status, begin_wal, end_time, ...)
    <prefix>/<server>/base/<backup_id>/data.tar[.gz|...]   the data directory (and <oid>.tar per tablespace)
    <prefix>/<server>/base/<backup_id>/annotations/keep    "full" or "standalone": kept beyond any retention policy
    <prefix>/<server>/wals/<TTTTTTTTLLLLLLLL>/<segment>[.gz|.bz2|.xz|.snappy|.zst|.lz4]
    <prefix>/<server>/wals/<TTTTTTTT>.history[.gz|...]     timeline history files

(WAL names: :mod:`.wal`.) :class:`BarmanCatalog` is the reader of ``barman_catalog_info`` (:mod:`.health`),
``barman_retention`` and ``barman_restore_drill``. Everything is streamed from ``ListObjectsV2`` pages
(:meth:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.objects.Bucket.pages`), so memory does not
grow with the number of WAL objects.
"""

from __future__ import annotations

import concurrent.futures
import re

from ansible_collections.pgops.resilience.plugins.module_utils._barman.wal import parse_wal_name
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import parse_time
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket

KEEP_TARGETS = ('full', 'standalone')
MAX_INFO_BYTES = 1024 * 1024  # a backup.info is about 1.5 KB; larger is not one
INFO_READERS = 8  # backup.info objects read in parallel
MISSING = 'it does not exist (deleted while the catalog was read?)'

_BACKUP_INFO_INTS = ('timeline', 'size', 'deduplicated_size', 'cluster_size', 'xlog_segment_size', 'version',
                     'begin_offset', 'end_offset')
_BACKUP_INFO_TIMES = ('begin_time', 'end_time')


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

    :param client: boto3 S3 client (see :func:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.client.s3_client`).
    :param destination_path: ``s3://bucket/prefix`` (str), as given to barman-cloud.
    :param server_name: the barman server name (str; CloudNativePG's ``serverName``, by default the Cluster name).
    :param endpoint_url: str or None, only for error messages.
    :raises PgopsError: when ``destination_path`` is not valid or ``server_name`` is empty or holds ``/``.

    Attributes: ``bucket``, ``objects`` (the :class:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.objects.Bucket`
    every request goes through), ``prefix`` (the destination's key prefix, without slashes at its ends), ``root_prefix``
    (``'prefix/'``, or ``''`` for a bucket root), ``server_prefix`` (``'prefix/server/'``), ``base_prefix``
    and ``wal_prefix`` (``server_prefix`` + ``base/`` and ``wals/``).
    """

    def __init__(self, client, destination_path, server_name, endpoint_url=None):
        self.bucket, self.prefix = parse_destination_path(destination_path)
        if not server_name or '/' in server_name or server_name != server_name.strip():
            raise PgopsError('server_name must be the barman server name (a directory under %s), without "/" or '
                             'surrounding spaces; got %r.' % (destination_path, server_name))
        self.objects = Bucket(client, self.bucket, endpoint_url)
        self.destination_path = destination_path
        self.server_name = server_name
        self.endpoint_url = endpoint_url
        self.root_prefix = self.prefix + '/' if self.prefix else ''
        self.server_prefix = self.root_prefix + server_name + '/'
        self.base_prefix = self.server_prefix + 'base/'
        self.wal_prefix = self.server_prefix + 'wals/'
        self._base_usage = None

    # -- listing

    def iter_objects(self, prefix):
        """Every object under ``prefix`` (a key prefix), in key order, streamed page by page.

        :returns: iterator of dicts ``key`` (str), ``size`` (bytes), ``last_modified`` (aware datetime).
        :raises PgopsError: naming the prefix and the endpoint when the listing fails.
        """
        return self.objects.iter_objects(prefix)

    def list_level(self, prefix):
        """One level under ``prefix`` (a key prefix ending with ``/``, or ``''``), as ``ListObjectsV2`` with ``Delimiter='/'``.

        :returns: dict ``directories`` (sorted names of the "directories" directly under it) and ``files`` (usage
            dict of the objects directly under it, see :func:`new_usage`).
        :raises PgopsError: when the listing fails.
        """
        directories = []
        files = new_usage()
        for page in self.objects.pages(prefix, delimiter='/'):
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
            data = self.objects.get(key, missing_ok=True, limit=MAX_INFO_BYTES)
        except PgopsError as exc:
            return None, exc.msg
        if data is None:
            return None, MISSING
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
