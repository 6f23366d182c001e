# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup bundles: one ``.tar.gz`` holding a manifest with the sha256 of every member, kept in a directory or
under an S3 prefix, with a ``<bundle>.sha256`` file beside it (``sha256sum`` format) for the whole archive.

The logical dump bundles (``nightly-...tar.gz``) and the base backup bundles (``basebackup-...bundle.tar.gz``) of the
reference runbook ``postgres-infra-setup.md`` both use it. A name is ``<kind>-YYYYMMDD-HHMMSSmmm-<run>`` and the suffix:
the UTC time the run started, then 8 hex digits each run draws at random, so runs started together never share a
name. Bundles named ``<kind>-YYYYMMDD-HHMM`` by earlier versions are still listed, restored and expired; sorted as text,
both forms are in time order (:func:`bundle_sort_key`).

- :func:`pack` writes the archive in one pass over the members: each one is hashed while it is added, the
  manifest goes in last, and the whole archive is hashed while it is written. Every file is created 0600 (the
  archive and its checksum file: ``mode``), every directory 0700, members are recorded 0600: a dump holds the data
  and the roles' password hashes. Work in progress has hidden ``.partial-*`` names (``_core.files.partial_path``), and
  :func:`remove_stale_partials` removes what a killed run left.
- :func:`extract_verified` refuses an archive whose sha256 differs from its ``.sha256`` file, a member whose sha256
  differs from the manifest, a member missing from it or not in it, and any member that is not a plain file or
  directory inside the destination (absolute paths, ``..``, links, devices); :func:`verify_stream` checks the same
  without writing anything.
- :class:`BundleStore` lists, stores, fetches, verifies and deletes bundles in an object store (a directory or an S3
  prefix, ``_s3.store``); :func:`select_bundle` picks the newest or a named one and :func:`expired_bundles` applies
  "keep the newest N".
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import shutil
import tarfile
import zlib

from ansible_collections.pgops.resilience.plugins.module_utils._core import work
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import (
    DIRECTORY_MODE, FILE_MODE, partial_path, place_new, private_directories, private_file, remove_quietly, write_durably)
from ansible_collections.pgops.resilience.plugins.module_utils._core.tarfiles import HashingReader, HashingWriter, member_path
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec
from ansible_collections.pgops.resilience.plugins.module_utils._s3.store import DirectoryStore, S3Store


MANIFEST_NAME = 'manifest.json'
MANIFEST_FORMAT = 'pgops.resilience/bundle/1'
CHECKSUM_SUFFIX = '.sha256'
TIME_FORMAT = '%Y%m%d-%H%M%S'  # then milliseconds, in new names; older bundles have minutes only ('%Y%m%d-%H%M')
# A bundle name without its anchors: the time (minutes; or seconds, with or without milliseconds, followed by the run's
# 8 hex digits).
_NAME = r'%s-(?P<time>\d{8}-\d{4}(?P<seconds>\d{2}(?:\d{3})?)?)(?(seconds)-[0-9a-f]{8})%s'
CHUNK = 1024 * 1024  # bytes per read while hashing and copying
# gzip level of the outer archive: 0 (stored blocks, still a valid .tar.gz). Its members are compressed already
# (pg_dump's directory format, .sql.gz, pg_basebackup -z): level 1 cost 1.2 s per 57 MB for next to no saving
# (benchmarks/dump_bundle.py), and the restore's gunzip is faster too.
COMPRESS_LEVEL = 0


def store_argument_spec():
    """Argument spec of the options documented in the ``pgops.resilience.bundle_store`` doc fragment: ``directory``
    or ``bucket`` (with ``prefix`` and the S3 connection options).

    :returns: dict for an ``AnsibleModule`` argument_spec; use with :data:`STORE_MUTUALLY_EXCLUSIVE` and
        :data:`STORE_REQUIRED_ONE_OF`.
    """
    spec = dict(directory=dict(type='path'), bucket=dict(type='str'), prefix=dict(type='str', default=''))
    spec.update(s3_connection_spec())
    return spec


def file_mode_argument_spec():
    """Argument spec of ``mode``, documented in the ``pgops.resilience.bundle_store.file_mode`` doc fragment: the
    permissions of the bundle and its checksum file (see :func:`check_file_mode`), for the modules that write bundles.

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(mode=dict(type='raw', default='0600'))


STORE_MUTUALLY_EXCLUSIVE = [('directory', 'bucket')]
STORE_REQUIRED_ONE_OF = [('directory', 'bucket')]


def store_module_spec(argument_spec):
    """The ``AnsibleModule`` arguments of a module that keeps bundles in a store: ``argument_spec`` (holding
    :func:`store_argument_spec`) with the store's constraints, exactly one of ``directory`` and ``bucket``.

    :returns: dict with ``argument_spec``, ``mutually_exclusive`` and ``required_one_of``.
    """
    return dict(argument_spec=argument_spec, mutually_exclusive=list(STORE_MUTUALLY_EXCLUSIVE),
                required_one_of=list(STORE_REQUIRED_ONE_OF))


def bundle_name(kind_prefix, when=None, suffix='.tar.gz', run_id=None):
    """The file name of a bundle made at ``when`` by one run: ``nightly-20261121-060012345-3fa85f64.tar.gz``.

    :param kind_prefix: str, ``nightly`` or ``basebackup``.
    :param when: aware datetime (default now); the name uses UTC, to the millisecond, so that "newest" is the last
        started even for runs of the same second.
    :param suffix: str, ``.tar.gz`` or ``.bundle.tar.gz``.
    :param run_id: 8 lowercase hex digits, or None for random ones: runs started in the same second (two CronJob
        pods, a manual run beside the scheduled one) get different names, so none overwrites another's bundle.
    """
    when = (when or utc_now()).astimezone(datetime.timezone.utc)
    run_id = run_id or os.urandom(4).hex()
    if not re.match(r'[0-9a-f]{8}\Z', run_id):
        raise PgopsError('a bundle run id is 8 lowercase hex digits, not %r.' % (run_id,))
    return '%s-%s%03d-%s%s' % (kind_prefix, when.strftime(TIME_FORMAT), when.microsecond // 1000, run_id, suffix)


def name_pattern(kind_prefix, suffix='.tar.gz'):
    """A compiled regular expression matching the names :func:`bundle_name` makes and the older
    ``<kind>-YYYYMMDD-HHMM<suffix>`` ones; its group 1 (``time``) is ``YYYYMMDD-HHMMSSmmm``, ``YYYYMMDD-HHMMSS`` or
    ``YYYYMMDD-HHMM``."""
    return re.compile(_NAME % (re.escape(kind_prefix), re.escape(suffix)) + r'\Z')


def bundle_sort_key(entry):
    """The key that orders bundles (dicts with ``name`` and ``time``, as :meth:`BundleStore.list` returns them) from
    oldest to newest: the time to the millisecond (an older name's minute counts as its second 00, its millisecond
    000), then the name."""
    return (entry['time'].ljust(18, '0'), entry['name'])


def remove_stale_partials(directory, kind_prefix, suffix, max_age, check_mode=False):
    """Remove from ``directory`` the work in progress (``.partial-*``) of the runs of bundles named like
    ``kind_prefix``/``suffix`` ones that are over: see ``work.remove_stale_partials``.

    :returns: ``(removed, problems)``, lists of str (paths, messages).
    """
    return work.remove_stale_partials(directory, _NAME % (re.escape(kind_prefix), re.escape(suffix)), max_age, check_mode)


def _members(root):
    """Relative paths (posix, sorted) of the regular files under ``root``.

    :raises PgopsError: for anything else than directories and regular files (a link would be archived as a link).
    """
    found = []
    for top, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            if os.path.islink(path) or not os.path.isfile(path):
                raise PgopsError('%s is not a regular file; a bundle holds only files and directories.' % path)
            found.append(os.path.relpath(path, root).replace(os.sep, '/'))
    return found


def pack(root, dest_path, kind, info=None, mode=FILE_MODE):
    """Pack every file under ``root`` into the gzip tar ``dest_path`` with a manifest, then write
    ``dest_path + '.sha256'``. Both are written under temporary names in the same directory (:func:`partial_path`),
    flushed to disk and moved into place (the archive first), so a reader never sees a partial bundle; the archive
    never replaces an existing file.

    :param root: str, the directory whose files become the members (relative paths), recorded 0600 in the archive.
    :param dest_path: str, the archive to write.
    :param kind: str, what the bundle holds (``logical-dump``, ``base-backup``), recorded in the manifest.
    :param info: dict, more to record in the manifest (server version, database, tool versions...).
    :param mode: int, the permissions of the archive and its checksum file (0600; see :func:`check_file_mode`).
    :returns: dict ``{'path', 'sha256', 'bytes', 'manifest'}``; ``manifest`` is the dict written as
        ``manifest.json``: ``{'format', 'kind', 'created', 'info', 'members': {relpath: {'sha256', 'bytes'}}}``.
    :raises PgopsError: when a member is not a regular file, ``dest_path`` exists, or the archive cannot be written.
    """
    members = _members(root)
    if MANIFEST_NAME in members:
        raise PgopsError('%s already holds a %s; it is reserved for the bundle manifest.' % (root, MANIFEST_NAME))
    manifest = dict(format=MANIFEST_FORMAT, kind=kind, created=isoformat_z(utc_now()), info=info or {}, members={})
    directory = os.path.dirname(os.path.abspath(dest_path))
    temp = partial_path(directory, os.path.basename(dest_path))
    placed = False
    try:
        with private_file(temp) as raw:
            writer = HashingWriter(raw)
            with tarfile.open(fileobj=writer, mode='w:gz', compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT) as tar:
                for member in members:
                    path = os.path.join(root, member)
                    tarinfo = tar.gettarinfo(path, arcname=member)
                    tarinfo.uid = tarinfo.gid = 0
                    tarinfo.uname = tarinfo.gname = ''
                    tarinfo.mode = FILE_MODE  # whatever the umask gave the file: it holds data
                    with open(path, 'rb') as handle:
                        reader = HashingReader(handle)
                        tar.addfile(tarinfo, reader)
                    manifest['members'][member] = dict(sha256=reader.digest.hexdigest(), bytes=reader.bytes)
                _add_bytes(tar, MANIFEST_NAME, (json.dumps(manifest, indent=2, sort_keys=True) + '\n').encode('utf-8'))
            raw.flush()
            os.fchmod(raw.fileno(), mode)
            os.fsync(raw.fileno())
        digest = writer.digest.hexdigest()
        # The archive first: an archive without its checksum file is refused by readers, never trusted. Both
        # flush the directory, so the two names are on disk when this returns.
        place_new(temp, dest_path)
        placed = True
        write_durably(dest_path + CHECKSUM_SUFFIX, ('%s  %s\n' % (digest, os.path.basename(dest_path))).encode('ascii'), mode)
    except (OSError, PgopsError) as exc:
        remove_quietly(temp)
        if placed:  # ours: the name was free when the archive took it
            remove_quietly(dest_path)
            remove_quietly(dest_path + CHECKSUM_SUFFIX)
        if isinstance(exc, PgopsError):
            raise
        raise PgopsError('cannot write the bundle %s: %s. Check the free space and permissions of %s.'
                         % (dest_path, exc, directory))
    return dict(path=dest_path, sha256=digest, bytes=writer.bytes, manifest=manifest)


def _add_bytes(tar, name, data):
    tarinfo = tarfile.TarInfo(name)
    tarinfo.size = len(data)
    tarinfo.mode = FILE_MODE
    tarinfo.mtime = int(utc_now().timestamp())
    tar.addfile(tarinfo, io.BytesIO(data))


def read_checksum_file(path):
    """The sha256 (hex) recorded in a ``sha256sum``-style file, or None when the file does not exist.

    :raises PgopsError: when the file does not hold a sha256.
    """
    try:
        with open(path, 'r', encoding='ascii', errors='replace') as handle:
            text = handle.read(4096)
    except FileNotFoundError:
        return None
    return parse_checksum(text, path)


def parse_checksum(text, where):
    """The sha256 (hex, lowercase) at the start of ``text``, the content of the checksum file ``where``.

    :raises PgopsError: when it holds none.
    """
    match = re.match(r'\s*([0-9a-fA-F]{64})\b', text)
    if not match:
        raise PgopsError('%s does not hold a sha256 checksum; the bundle cannot be verified. Restore it from another '
                         'copy or pick another bundle.' % where)
    return match.group(1).lower()


def _no_checksum_file(name):
    return PgopsError('bundle %s has no %s beside it, so it cannot be verified. Copy it from where it was made, '
                      'or pick another bundle.' % (name, name + CHECKSUM_SUFFIX))


def extract_verified(archive_path, dest, require_checksum_file=True, hash_only=()):
    """Verify the bundle ``archive_path`` and extract it into ``dest`` (which must be empty or absent; created 0700),
    reading the archive once. Files are written 0600 and directories 0700, whatever the archive records.

    Checks: every member is a plain file or directory inside ``dest``; the manifest lists exactly the files found,
    with the same sha256 and size; the archive's sha256 equals the one in ``<archive>.sha256`` (when that file
    exists; its absence is an error when ``require_checksum_file``).

    :param hash_only: member names (relative paths) to verify without writing, such as a form of the dump that
        will not be restored.
    :returns: dict, the manifest.
    :raises PgopsError: naming the bundle and the member (or checksum) that differs; ``dest`` is emptied again.
    """
    name = os.path.basename(archive_path)
    expected = read_checksum_file(archive_path + CHECKSUM_SUFFIX)
    if expected is None and require_checksum_file:
        raise _no_checksum_file(name)
    os.makedirs(dest, mode=DIRECTORY_MODE, exist_ok=True)
    if os.listdir(dest):
        raise PgopsError('cannot extract bundle %s into %s: the directory is not empty.' % (name, dest))
    dest = os.path.realpath(dest)
    with open(archive_path, 'rb') as raw:
        return verify_stream(raw, name, expected, dest, hash_only)


def verify_stream(raw, name, expected, dest=None, hash_only=()):
    """Verify the bundle read from the file object ``raw`` (a file, an S3 object's body), reading it once; with
    ``dest`` extract it there too (see :func:`extract_verified`), without it write nothing (check mode).

    :param name: str, the bundle's name, for messages; :param expected: str, the sha256 of its checksum file, or None.
    :returns: dict, the manifest.
    :raises PgopsError: as :func:`extract_verified` (``dest`` is emptied again).
    """
    corrupt = PgopsError('bundle %s is corrupt: its sha256 differs from the one %s records (%s). Do not restore it; '
                         'pick another bundle or restore it from another copy.' % (name, name + CHECKSUM_SUFFIX, expected))
    reader = HashingReader(raw)
    try:
        try:
            found, manifest = _extract_members(reader, dest, set(hash_only))
        finally:
            for dummy in iter(lambda: reader.read(CHUNK), b''):
                pass  # the rest of the archive (tar padding, or what a failed read left): the hash covers it all
        if expected is not None and reader.digest.hexdigest() != expected:
            raise corrupt
        _compare_with_manifest(manifest, found)
    except (PgopsError, tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exc:
        if dest is not None:
            _empty_directory(dest)
        # A damaged archive often breaks the tar or gzip structure first: its checksum says what happened.
        if exc is corrupt or (expected is not None and reader.digest.hexdigest() != expected):
            raise corrupt
        if isinstance(exc, PgopsError):
            raise PgopsError('bundle %s is refused: %s. Nothing was restored from it; pick another bundle.' % (name, exc.msg))
        raise PgopsError('bundle %s is refused: it is not a readable gzip tar archive (%s). Nothing was restored from '
                         'it; pick another bundle.' % (name, exc))
    return manifest


def _extract_members(fileobj, dest, hash_only):
    found, manifest = {}, None
    # Stream mode ("r|gz"): one sequential read, so the archive's own sha256 is computed on the way.
    with tarfile.open(fileobj=fileobj, mode='r|gz') as tar:
        for member in tar:
            target = member_path(member, dest, 'the extraction directory', 'a bundle')
            if member.isdir():
                if target is not None:
                    private_directories(target, dest)
                continue
            source = tar.extractfile(member)
            if member.name == MANIFEST_NAME:
                manifest = _parse_manifest(source.read(16 * CHUNK))
                continue
            reader = HashingReader(source)
            if target is None or member.name in hash_only:
                for dummy in iter(lambda: reader.read(CHUNK), b''):
                    pass
            else:
                private_directories(os.path.dirname(target), dest)
                with private_file(target) as out:
                    shutil.copyfileobj(reader, out, CHUNK)
            found[member.name] = dict(sha256=reader.digest.hexdigest(), bytes=reader.bytes)
    if manifest is None:
        raise PgopsError('it holds no %s' % MANIFEST_NAME)
    return found, manifest


def _parse_manifest(data):
    try:
        manifest = json.loads(data.decode('utf-8'))
    except ValueError as exc:
        raise PgopsError('its %s is not JSON (%s)' % (MANIFEST_NAME, exc))
    if not isinstance(manifest, dict) or manifest.get('format') != MANIFEST_FORMAT or \
            not isinstance(manifest.get('members'), dict):
        raise PgopsError('its %s is not a %s manifest' % (MANIFEST_NAME, MANIFEST_FORMAT))
    return manifest


def _compare_with_manifest(manifest, found):
    """Raise a PgopsError naming the first member that is missing, extra, or differs from the manifest."""
    listed = manifest['members']
    for member in sorted(set(listed) | set(found)):
        if member not in found:
            raise PgopsError('member %s is listed in the manifest but missing from the archive' % member)
        if member not in listed:
            raise PgopsError('member %s is in the archive but not in the manifest' % member)
        want, got = listed[member], found[member]
        if want.get('sha256') != got['sha256'] or want.get('bytes') != got['bytes']:
            raise PgopsError('member %s differs from the manifest: sha256 %s (%d bytes), the manifest says %s (%s bytes)'
                             % (member, got['sha256'], got['bytes'], want.get('sha256'), want.get('bytes')))


def _empty_directory(path):
    for entry in os.listdir(path):
        full = os.path.join(path, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            remove_quietly(full)


def select_bundle(bundles, name=None, where=''):
    """The bundle to restore: the one called ``name``, or the newest.

    :param bundles: list of dicts from :meth:`BundleStore.list` (oldest first).
    :param name: str or None/'' for the newest.
    :param where: str, the store's location, for messages.
    :returns: dict, one of ``bundles``.
    :raises PgopsError: when there is none, or none of that name (listing the ones there are).
    """
    if not bundles:
        raise PgopsError('no bundle found in %s; check the location (directory or bucket and prefix) and that the '
                         'backup job has run.' % where)
    if not name:
        return bundles[-1]
    for bundle in bundles:
        if bundle['name'] == name:
            return bundle
    raise PgopsError('bundle %s is not in %s; the newest there are: %s.'
                     % (name, where, ', '.join(b['name'] for b in bundles[-5:][::-1])))


def expired_bundles(bundles, keep):
    """The bundles that "keep the newest ``keep``" removes: all but the newest ``keep`` (none when ``keep`` is 0,
    which keeps everything).

    :param bundles: list of dicts from :meth:`BundleStore.list` (oldest first).
    :param keep: int >= 0.
    :returns: list of dicts (oldest first).
    :raises PgopsError: when ``keep`` is negative.
    """
    if keep < 0:
        raise PgopsError('keep must be 0 (keep every bundle) or a positive number of bundles, not %d.' % keep)
    if keep == 0:
        return []
    return bundles[:-keep] if len(bundles) > keep else []


class BundleStore:
    """Where bundles live: a local directory (a mounted PVC, a backup disk) or ``s3://bucket/prefix``, an object store
    (:class:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.store.ObjectStore`) that this class adds
    the bundle rules to: a bundle is the archive plus its ``.sha256`` file, stored verified, removed together, kept
    by "the newest N".

    Build it with :meth:`from_params`. Only names matching the ``pattern`` given to :meth:`list` count as bundles, so
    other files in the same place are never touched.

    :param objects: the :class:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.store.ObjectStore`.
    """

    def __init__(self, objects):
        self.objects = objects

    @classmethod
    def from_params(cls, params):
        """A store from module parameters (the options of :func:`store_argument_spec`).

        :raises PgopsError: when neither or both of ``directory`` and ``bucket`` are set, or the directory does not
            exist.
        """
        directory, bucket = params.get('directory'), params.get('bucket')
        if bool(directory) == bool(bucket):
            raise PgopsError('give exactly one of directory (a local directory) and bucket (S3) for the bundles.')
        if directory:
            if not os.path.isdir(directory):
                raise PgopsError('directory %s does not exist or is not a directory; create it (or mount the backups '
                                 'volume there) first.' % directory)
            return cls(DirectoryStore(os.path.abspath(directory)))
        return cls(S3Store(bucket, params.get('prefix') or '', params))

    @property
    def is_local(self):
        """True for a directory store."""
        return self.objects.local_directory is not None

    @property
    def directory(self):
        """The directory of a directory store (absolute path), None for S3."""
        return self.objects.local_directory

    @property
    def location(self):
        """Where the bundles are, for messages and results: a path or ``s3://bucket/prefix``."""
        return self.objects.location

    def url(self, name):
        """Where the bundle ``name`` is (path or ``s3://`` URL)."""
        return self.objects.url(name)

    def list(self, pattern):
        """The bundles here whose names match ``pattern`` (see :func:`name_pattern`), oldest first.

        :returns: list of dicts ``{'name', 'url', 'bytes', 'time'}``, ``time`` the ``YYYYMMDD-HHMMSS`` (older names:
            ``YYYYMMDD-HHMM``) of the name, sorted by :func:`bundle_sort_key`.
        :raises PgopsError: when the place cannot be listed.
        """
        found = [dict(name=o['name'], url=self.url(o['name']), time=pattern.match(o['name']).group(1), bytes=o['size'])
                 for o in self.objects.list(pattern)]
        return sorted(found, key=bundle_sort_key)

    def exists(self, name):
        """True when a bundle (or its checksum file) called ``name`` is already here."""
        return self.objects.exists(name) or self.objects.exists(name + CHECKSUM_SUFFIX)

    def staging_directory(self, scratch_dir=None):
        """Where to build a new bundle before :meth:`store` moves it here: the store's own directory (so the final
        rename stays on one filesystem), or ``scratch_dir`` / the system temporary directory for S3."""
        return self.objects.staging_directory(scratch_dir)

    def store(self, packed):
        """Make the bundle that :func:`pack` wrote (``packed``, its result) part of this store and verify it.

        Directory: it was packed in place; it is read back and its sha256 must equal the one written, since
        retention may only follow a bundle that is really on the volume. S3: the archive is uploaded (multipart for
        large ones), then the checksum file; the stored size must equal the local one, and the local copy is
        removed. Either way the stored checksum file must name the sha256 written. A bundle that fails a check is
        deleted: it must not become "the newest" nor count towards keep.

        :returns: dict ``{'name', 'url', 'bytes', 'sha256'}``.
        :raises PgopsError: when the upload fails or what is stored differs.
        """
        path, name = packed['path'], os.path.basename(packed['path'])
        try:
            self.objects.put_file(path, name, packed['sha256'])
            self.objects.put_file(path + CHECKSUM_SUFFIX, name + CHECKSUM_SUFFIX)
            recorded = self.objects.read(name + CHECKSUM_SUFFIX, 4096)
            if parse_checksum(recorded.decode('ascii', 'replace'), self.url(name + CHECKSUM_SUFFIX)) != packed['sha256']:
                raise PgopsError('%s does not hold the sha256 %s written.' % (self.url(name + CHECKSUM_SUFFIX), packed['sha256']))
        except PgopsError as exc:
            try:
                self.delete(name)
            except PgopsError:
                pass
            raise PgopsError('bundle %s could not be stored and verified, and what was stored of it was deleted: %s'
                             % (name, exc.msg))
        if not self.is_local:
            remove_quietly(path)
            remove_quietly(path + CHECKSUM_SUFFIX)
        return dict(name=name, url=self.url(name), bytes=packed['bytes'], sha256=packed['sha256'])

    def fetch(self, name, scratch_dir):
        """A local path of the bundle ``name`` with its checksum file beside it (when it has one): the file itself for a
        directory store, a download (0600) into ``scratch_dir`` for S3 (the caller removes ``scratch_dir``).

        :raises PgopsError: when it cannot be downloaded.
        """
        local = self.objects.fetch(name, scratch_dir)
        self.objects.fetch(name + CHECKSUM_SUFFIX, scratch_dir, missing_ok=True)
        return local

    def verify(self, name, require_checksum_file=True):
        """Verify the bundle ``name`` where it is, reading it once and writing nothing (check mode): its sha256
        against its checksum file, every member against the manifest (see :func:`verify_stream`).

        :returns: dict, the manifest.
        :raises PgopsError: when it is refused, or cannot be read.
        """
        text = self.objects.read(name + CHECKSUM_SUFFIX, 4096, missing_ok=True)
        expected = None if text is None else parse_checksum(text.decode('ascii', 'replace'), self.url(name + CHECKSUM_SUFFIX))
        if expected is None and require_checksum_file:
            raise _no_checksum_file(name)
        with self.objects.reading(name) as raw:
            return verify_stream(raw, name, expected)

    def delete(self, name):
        """Delete the bundle ``name`` and its checksum file (missing ones are not an error).

        :raises PgopsError: when a deletion fails.
        """
        for item in (name, name + CHECKSUM_SUFFIX):
            self.objects.delete(item)

    def apply_retention(self, pattern, keep, check_mode=False, own=None):
        """Delete all but the newest ``keep`` bundles matching ``pattern`` (see :func:`expired_bundles`). Call it
        only after the newest bundle has been stored and verified, so a failed run never costs an old bundle.

        :param own: str, the name of the bundle this run stored, or None. A run deletes neither its own bundle nor
            one newer than it: a run that finishes later than a concurrent one never deletes the bundle that run
            reports; with ``keep=1`` a newer run's retention removes the older one.
        :returns: list of the names deleted (or that would be, in check mode), oldest first.
        """
        bundles = self.list(pattern)
        expired = bundles[:0]
        for entry in expired_bundles(bundles, keep):
            if own is None or bundle_sort_key(entry) < bundle_sort_key(dict(name=own, time=pattern.match(own).group(1))):
                expired.append(entry)
        names = [b['name'] for b in expired]
        if not check_mode:
            for name in names:
                self.delete(name)
        return names
