# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tar archives the collection reads and writes (bundles, pg_basebackup's tar format): the one check of where a
member may be extracted, and file objects that hash what passes through them, so that an archive is verified in the
same single pass that writes or extracts it.
"""

from __future__ import annotations

import hashlib
import os

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


class HashingWriter:
    """A write-only file object that passes bytes to ``target`` and hashes them (sha256) on the way.

    Attributes: ``digest`` (a ``hashlib`` sha256 object), ``bytes`` (int, bytes written).
    """

    def __init__(self, target):
        self.target = target
        self.digest = hashlib.sha256()
        self.bytes = 0

    def write(self, data):
        """Hash ``data`` (bytes) and write it to the target; returns what the target's ``write`` returns."""
        self.digest.update(data)
        self.bytes += len(data)
        return self.target.write(data)

    def flush(self):
        """Flush the target."""
        self.target.flush()


class HashingReader:
    """A read-only file object over ``source`` that hashes (sha256) what is read from it.

    Attributes: ``digest`` (a ``hashlib`` sha256 object), ``bytes`` (int, bytes read).
    """

    def __init__(self, source):
        self.source = source
        self.digest = hashlib.sha256()
        self.bytes = 0

    def read(self, size=-1):
        """Read up to ``size`` bytes (all with -1) from the source, hashing them."""
        data = self.source.read(size)
        self.digest.update(data)
        self.bytes += len(data)
        return data


def member_path(member, dest, place, holds, link_hint=None):
    """Where the tar member ``member`` may be extracted under ``dest``: the one check, for bundles and base backups,
    that an archive writes nothing but plain files and directories inside its destination: no absolute name, no
    ``..``, no link, no device (the dangers the Python ``tarfile`` documentation's "Extraction filters" section lists;
    the members are checked here, one by one, because bundles are extracted from a stream as they are hashed).

    A leading ``./`` (as pg_basebackup writes names) and empty or ``.`` parts are dropped.

    :param member: ``tarfile.TarInfo``.
    :param dest: str, the destination directory (absolute, existing, its links resolved: ``os.path.realpath``), or
        None to check the member alone (verification without extraction).
    :param place: str, the destination as messages name it (``'the extraction directory'``, ``'the data directory'``).
    :param holds: str, what the archive is (``'a bundle'``, ``'a base backup'``), for the message refusing a special file.
    :param link_hint: str or None, what to say of a link (why the archive has one and what to do); without it a link
        is refused as a special file is.
    :returns: str, the path to write (``dest`` itself for the member ``.``), or None when ``dest`` is None.
    :raises PgopsError: naming the member when it would be written outside ``dest``, or is a link or a special file.
    """
    name = member.name
    parts = [part for part in name.split('/') if part not in ('', '.')]
    if name.startswith('/') or os.path.isabs(name) or '..' in parts:
        raise PgopsError('member %r would be written outside %s' % (name, place))
    if link_hint and (member.issym() or member.islnk()):
        raise PgopsError('member %r is a link (%s): %s' % (name, member.linkname, link_hint))
    if not (member.isfile() or member.isdir()):
        raise PgopsError('member %r is a link or special file; %s holds only files and directories' % (name, holds))
    if dest is None:
        return None
    target = os.path.join(dest, *parts) if parts else dest
    real = os.path.realpath(target)  # a link already in dest must not lead the member out
    if not (real == dest or real.startswith(dest + os.sep)):
        raise PgopsError('member %r would be written outside %s' % (name, place))
    return target
