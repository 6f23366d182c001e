# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files that can hold data: created 0600 (directories 0700), written durably and atomically, never replacing what is
there unless asked.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import socket

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


def private_file(path, mode='wb'):
    """Open a new file at ``path`` that only its owner may read and write (0600, whatever the umask), for
    anything that can hold data or settings: bundles, checksums, dumps, metrics, logs.

    :param path: str; an existing file is truncated and its mode set to 0600 as well.
    :param mode: ``'wb'`` or ``'w'``.
    :returns: an open file object.
    :raises OSError: as ``os.open`` does.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


PARTIAL_PREFIX = '.partial-'


FILE_MODE = 0o600  # bundles, checksum files, members, everything written: a dump holds data and password hashes


DIRECTORY_MODE = 0o700


# The run_tag() at the end of a work-in-progress name: "pid<pid>@<host>.<8 hex digits>"; groups pid and host. The
# host is "<host name>.pidns<inode>" (_host()), or, written by earlier versions, the host name alone.
RUN_TAG = r'pid(?P<pid>\d+)@(?P<host>[A-Za-z0-9.-]+)\.[0-9a-f]{8}'


def check_file_mode(value, option='mode'):
    """The permissions (int) of bundle files from an option: 0600 (the default), 0640 or 0660 - never readable by
    others, since a bundle holds the data and the roles' password hashes.

    :param value: None, an octal str (``'0640'``) or an int (YAML reads an unquoted ``0640`` as octal).
    :raises PgopsError: for anything else.
    """
    if value is None or value == '':
        return FILE_MODE
    try:
        mode = value if isinstance(value, int) else int(str(value).strip().lower().replace('0o', '', 1) or 'x', 8)
    except ValueError:
        mode = None
    if mode not in (0o600, 0o640, 0o660):
        raise PgopsError("%s must be '0600', '0640' or '0660' (quoted, octal), not %r: a bundle holds the data and the "
                         'password hashes of the roles, so others may never read it.' % (option, value))
    return mode


def place_new(temp, dest):
    """Move the finished ``temp`` to ``dest`` (same directory) without ever replacing a file there, durably.

    A hard link fails when ``dest`` exists; where the file system has no hard links, a rename after a check. The
    directory is flushed afterwards (:func:`fsync_directory`): a new name survives a crash only once its directory is
    on disk (fsync(2), "Calling fsync() does not necessarily ensure that the entry in the directory containing the
    file has also reached disk").

    :param temp: str, a finished file, flushed to disk (see :func:`write_durably` for the usual way to write one).
    :param dest: str, its final path, in the same directory (a link or rename never crosses file systems).
    :raises PgopsError: when ``dest`` exists.
    :raises OSError: when the link, rename or flush fails; ``dest`` is not left behind then.
    """
    try:
        os.link(temp, dest)
    except FileExistsError:
        raise PgopsError('%s already exists; a bundle is never overwritten. Run again for a new name.' % dest)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS, errno.EACCES):
            raise
        if os.path.lexists(dest):
            raise PgopsError('%s already exists; a bundle is never overwritten. Run again for a new name.' % dest)
        os.replace(temp, dest)
    else:
        os.unlink(temp)
    try:
        fsync_directory(os.path.dirname(os.path.abspath(dest)))
    except OSError:
        remove_quietly(dest)  # the name was free: what is there is ours, and not known to be durable
        raise


def write_durably(path, data, mode=FILE_MODE, owner=None):
    """Replace ``path`` with ``data`` atomically and durably: the one way the collection writes a whole small file
    (checksum files, ``postgresql.auto.conf``).

    The data goes into a new private file beside it (:func:`partial_path`, created 0600), is flushed to disk, given
    ``mode`` (and ``owner``), renamed over ``path``, and the directory is flushed (:func:`fsync_directory`). A reader
    sees the old file or the new one, never half of one, and after a crash the new one is there once this returns.

    :param path: str, the file to write (it may exist: it is replaced).
    :param data: bytes.
    :param mode: int, the permissions of the file (0600 unless the caller keeps another one, such as the mode an
        existing ``postgresql.auto.conf`` had).
    :param owner: ``(uid, gid)`` (ints) to give the file before it is renamed, or None to leave it this process's (a
        file written as root for the PostgreSQL server user).
    :returns: ``path``.
    :raises OSError: when the directory does not exist or cannot be written, or the disk is full; the temporary file
        is removed then.
    """
    temp = partial_path(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    try:
        with private_file(temp) as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if owner is not None:
                os.fchown(handle.fileno(), owner[0], owner[1])
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError:
        remove_quietly(temp)
        raise
    fsync_directory(os.path.dirname(os.path.abspath(path)))
    return path


def fsync_directory(directory):
    """Flush ``directory`` (its entries: a file created, linked or renamed into it) to disk.

    :raises OSError: when it cannot be opened or flushed.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path, chunk=1024 * 1024):
    """``(hex digest, size in bytes)`` of the file at ``path``, read in blocks of ``chunk`` bytes.

    :raises OSError: when it cannot be read.
    """
    digest, size = hashlib.sha256(), 0
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(chunk), b''):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def remove_quietly(path):
    """Remove the file ``path``; one that is not there is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def private_directories(path, dest):
    """Create ``path`` and its missing parents below ``dest`` (which exists), each 0700."""
    if path == dest or os.path.isdir(path):
        return
    private_directories(os.path.dirname(path), dest)
    try:
        os.mkdir(path, DIRECTORY_MODE)
    except FileExistsError:
        pass


# The namespace part of _host() when /proc/self/ns/pid cannot be read: such a run is judged by age only.
_UNKNOWN_NAMESPACE = '.pidns0'


def _pid_namespace():
    """The inode number (int) of this process's PID namespace, ``/proc/self/ns/pid`` (namespaces(7): two processes
    are in the same namespace when these are the same), or 0 when it cannot be read (no /proc)."""
    try:
        return os.stat('/proc/self/ns/pid').st_ino
    except OSError:
        return 0


def _host():
    """Where this process's PID means this process, as work-in-progress names carry it: ``<host name>.pidns<inode of
    its PID namespace>`` (letters, digits, dots and hyphens; the host name at most 64, a pod's name), such as
    ``db-0.pidns4026532513``; ``.pidns0`` when the namespace cannot be known (see :func:`partial_is_stale`)."""
    name = re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname() or '')[:64] or 'localhost'
    return '%s.pidns%d' % (name, _pid_namespace())


def run_tag():
    """``pid<pid>@<host>.<8 hex digits>`` (:data:`RUN_TAG`, ``<host>`` from :func:`_host`): the end of a
    work-in-progress name, saying which process of which host and PID namespace made it, so that
    :func:`remove_stale_entries` can tell whose it is; the hex digits keep two names of one process apart."""
    return 'pid%d@%s.%s' % (os.getpid(), _host(), os.urandom(4).hex())


def partial_path(directory, name):
    """A path in ``directory`` for work in progress on ``name`` (a bundle or checksum file name) by this process:
    ``.partial-<name>.pid<pid>@<host>.<8 hex digits>``, so :func:`remove_stale_partials` can tell whose it is."""
    return os.path.join(directory, '%s%s.%s' % (PARTIAL_PREFIX, name, run_tag()))
