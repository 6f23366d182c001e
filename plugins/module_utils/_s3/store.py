# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""An object store: named files kept in a local directory (a mounted volume, a backup disk) or under an S3 prefix,
behind one set of operations, so that what is kept there (bundles) is written once for both places.

- :class:`ObjectStore` says what every store does: list (names matching a pattern, with size and modification
  time), exists, put a local file verified, fetch to a local file, read a small object, stream an object, delete.
- :class:`DirectoryStore` keeps the objects as files of one directory, :class:`S3Store` as the keys
  ``<prefix>/<name>`` of a bucket (through :class:`~.objects.Bucket`, the one S3 wrapper).

A name is one path element: objects further down (``<prefix>/a/b``, a subdirectory) are not listed, and are never
touched.
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import (
    FILE_MODE, partial_path, place_new, private_file, remove_quietly, sha256_file)
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket

CHUNK = 1024 * 1024  # bytes per read while copying


class ObjectStore:
    """What every object store does; see :class:`DirectoryStore` and :class:`S3Store`.

    Attributes: ``local_directory`` (str: the directory whose files are the objects, or None when they are not
    local files) and ``location`` (str: where the objects are, for messages and results).
    """

    local_directory = None

    @property
    def location(self):
        """Where the objects are: a path or ``s3://bucket/prefix``."""
        raise NotImplementedError

    def url(self, name):
        """Where the object ``name`` is: a path or an ``s3://`` URL (str)."""
        raise NotImplementedError

    def list(self, pattern=None):
        """The objects here, by name.

        :param pattern: a compiled regular expression whose ``match`` a name must pass, or None for every object.
        :returns: list of dicts ``name`` (str), ``size`` (bytes), ``last_modified`` (aware datetime), sorted by name.
        :raises PgopsError: when the place cannot be listed.
        """
        raise NotImplementedError

    def exists(self, name):
        """True when an object called ``name`` is here.

        :raises PgopsError: when the place cannot answer.
        """
        raise NotImplementedError

    def put_file(self, path, name, sha256=None):
        """Make the finished local file ``path`` the object ``name`` and verify what is stored.

        A directory store never replaces an object (the name is taken with a hard link, :func:`place_new`); S3's
        multipart upload has no such condition, so a caller checks :meth:`exists` first (bundle names carry a random
        run id besides).

        :param sha256: str (hex) or None: what ``path`` holds, checked against the stored bytes where they can be
            read back cheaply (a directory store); an S3 store checks the size.
        :returns: dict ``name``, ``url``, ``size`` (bytes).
        :raises PgopsError: when it cannot be stored, or what is stored differs (it is left for the caller to delete).
        """
        raise NotImplementedError

    def fetch(self, name, scratch_dir, missing_ok=False):
        """A local path holding the object ``name``: its own file (directory store) or a download, 0600, into
        ``scratch_dir`` (S3 store; the caller removes ``scratch_dir``).

        :returns: str, or None when it does not exist and ``missing_ok``.
        :raises PgopsError: when it does not exist (unless ``missing_ok``) or cannot be fetched.
        """
        raise NotImplementedError

    def read(self, name, limit, missing_ok=False):
        """At most ``limit + 1`` bytes of the object ``name`` (a small one: a checksum file), or None when it does
        not exist and ``missing_ok``.

        :raises PgopsError: when it does not exist (unless ``missing_ok``) or cannot be read.
        """
        raise NotImplementedError

    def reading(self, name):
        """A context giving the object ``name`` as a readable binary stream, read once from the start.

        :raises PgopsError: when it cannot be opened or read.
        """
        raise NotImplementedError

    def delete(self, name):
        """Delete the object ``name``; one that is not there is no error.

        :raises PgopsError: when the deletion fails.
        """
        raise NotImplementedError

    def staging_directory(self, scratch_dir=None):
        """Where to build a file before :meth:`put_file` makes it an object: the store's own directory (so that the
        final step is a link on one file system), or ``scratch_dir`` / ``$TMPDIR`` / ``/tmp`` for a remote store."""
        raise NotImplementedError


def _missing_object(url):
    return PgopsError('%s does not exist (deleted while it was in use?).' % url)


class DirectoryStore(ObjectStore):
    """The regular files of ``directory`` (an absolute path of an existing directory) are the objects; a symbolic
    link to a file counts as its target, anything else (directories, devices) is not an object."""

    def __init__(self, directory):
        self.local_directory = directory

    @property
    def location(self):
        return self.local_directory

    def url(self, name):
        return os.path.join(self.local_directory, name)

    def list(self, pattern=None):
        try:
            names = os.listdir(self.local_directory)
        except OSError as exc:
            raise PgopsError('cannot list %s: %s.' % (self.local_directory, exc))
        found = []
        for name in names:
            if pattern is not None and not pattern.match(name):
                continue
            try:
                info = os.stat(self.url(name))
            except FileNotFoundError:
                continue  # deleted since the listing (another run's retention)
            except OSError as exc:
                raise PgopsError('cannot read %s: %s.' % (self.url(name), exc))
            if stat.S_ISREG(info.st_mode):
                found.append(dict(name=name, size=info.st_size,
                                  last_modified=datetime.datetime.fromtimestamp(info.st_mtime, datetime.timezone.utc)))
        return sorted(found, key=lambda o: o['name'])

    def exists(self, name):
        return os.path.lexists(self.url(name))

    def put_file(self, path, name, sha256=None):
        """See :meth:`ObjectStore.put_file`. A file already at its place (built in :meth:`staging_directory`) is read
        back; another is copied in under a temporary name, flushed and linked into place (:func:`place_new`) first.
        Either way the stored file's size must equal the source's and its sha256 ``sha256`` (when given): retention
        may only follow an object that is really on the volume."""
        target = self.url(name)
        try:
            size = os.path.getsize(path)
            if os.path.abspath(path) != target:
                self._copy_in(path, target)
            digest, stored = sha256_file(target)
        except OSError as exc:
            raise PgopsError('cannot store %s as %s: %s. Check the free space and permissions of %s.'
                             % (path, target, exc, self.local_directory))
        if stored != size or (sha256 is not None and digest != sha256):
            raise PgopsError('%s reads back with sha256 %s (%d bytes), not the %s (%d bytes) written. Check the volume.'
                             % (target, digest, stored, sha256 or 'sha256 of %s' % path, size))
        return dict(name=name, url=target, size=stored)

    def _copy_in(self, path, target):
        temp = partial_path(self.local_directory, os.path.basename(target))
        try:
            with open(path, 'rb') as source, private_file(temp) as out:
                shutil.copyfileobj(source, out, CHUNK)
                out.flush()
                os.fchmod(out.fileno(), FILE_MODE)
                os.fsync(out.fileno())
            place_new(temp, target)
        finally:
            remove_quietly(temp)

    def fetch(self, name, scratch_dir, missing_ok=False):
        path = self.url(name)
        if os.path.lexists(path):
            return path
        if missing_ok:
            return None
        raise _missing_object(path)

    def read(self, name, limit, missing_ok=False):
        try:
            with open(self.url(name), 'rb') as handle:
                return handle.read(limit + 1)
        except FileNotFoundError:
            if missing_ok:
                return None
            raise _missing_object(self.url(name))
        except OSError as exc:
            raise PgopsError('cannot read %s: %s.' % (self.url(name), exc))

    def reading(self, name):
        try:
            return open(self.url(name), 'rb')
        except FileNotFoundError:
            raise _missing_object(self.url(name))
        except OSError as exc:
            raise PgopsError('cannot read %s: %s.' % (self.url(name), exc))

    def delete(self, name):
        try:
            remove_quietly(self.url(name))
        except OSError as exc:
            raise PgopsError('cannot delete %s: %s.' % (self.url(name), exc))

    def staging_directory(self, scratch_dir=None):
        return self.local_directory


class S3Store(ObjectStore):
    """The objects ``s3://<bucket>/<prefix>/<name>`` (``<name>`` without ``/``).

    :param bucket: str.
    :param prefix: str, the key prefix (slashes at its ends are dropped; ``''`` for the bucket's root).
    :param s3_params: dict with the options of ``s3_connection_spec`` (endpoint, region, credentials); the client is
        made on first use, so a store that is never used needs no boto3.
    """

    def __init__(self, bucket, prefix='', s3_params=None):
        self.bucket = bucket
        self.prefix = (prefix or '').strip('/')
        self.s3_params = s3_params or {}
        self._objects = None

    @property
    def objects(self):
        """The :class:`~.objects.Bucket` (its client made on first use).

        :raises PgopsError: when boto3 is missing or the S3 options are not valid.
        """
        if self._objects is None:
            self._objects = Bucket(client_from_params(self.s3_params), self.bucket, self.s3_params.get('endpoint_url'))
        return self._objects

    def key(self, name):
        """The key of the object ``name``: ``<prefix>/<name>``, or ``<name>`` at the bucket's root."""
        return '%s/%s' % (self.prefix, name) if self.prefix else name

    @property
    def location(self):
        return 's3://%s/%s' % (self.bucket, self.prefix)

    def url(self, name):
        return 's3://%s/%s' % (self.bucket, self.key(name))

    def list(self, pattern=None):
        prefix = self.key('')
        found = []
        for item in self.objects.iter_objects(prefix):
            name = item['key'][len(prefix):]
            if '/' in name or (pattern is not None and not pattern.match(name)):
                continue
            found.append(dict(name=name, size=item['size'], last_modified=item['last_modified']))
        return found  # in key order, which is name order under one prefix

    def exists(self, name):
        return self.objects.exists(self.key(name))

    def put_file(self, path, name, sha256=None):
        """See :meth:`ObjectStore.put_file`: uploaded (in parts when large) with :meth:`Bucket.put_file`, which checks
        the stored size. The sha256 is not compared here: reading the object back would double the transfer; a
        reader checks it against the checksum file stored beside it."""
        stored = self.objects.put_file(self.key(name), path)
        return dict(name=name, url=self.url(name), size=stored['size'])

    def fetch(self, name, scratch_dir, missing_ok=False):
        local = os.path.join(scratch_dir, name)
        return local if self.objects.download(self.key(name), local, missing_ok) else None

    def read(self, name, limit, missing_ok=False):
        data = self.objects.get(self.key(name), missing_ok=True, limit=limit)
        if data is None and not missing_ok:
            raise _missing_object(self.url(name))
        return data

    def reading(self, name):
        return self.objects.reading(self.key(name))

    def delete(self, name):
        self.objects.delete(self.key(name))

    def staging_directory(self, scratch_dir=None):
        return scratch_dir or os.environ.get('TMPDIR') or '/tmp'
