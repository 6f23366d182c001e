# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Files that can hold data: created 0600 (directories 0700), written durably and atomically, never replacing what is
there unless asked.
"""

from __future__ import annotations

import errno
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
    """Move the finished ``temp`` to ``dest`` without ever replacing a file there (a hard link fails when ``dest``
    exists); where the file system has no hard links, a rename after a check."""
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
        return
    os.unlink(temp)


def write_durably(path, data, mode=FILE_MODE):
    """Write ``data`` (bytes) to ``path`` with permissions ``mode``: into a new private file beside it, flushed to disk,
    then renamed over it."""
    temp = partial_path(os.path.dirname(os.path.abspath(path)), os.path.basename(path))
    try:
        with private_file(temp) as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except OSError:
        remove_quietly(temp)
        raise


def fsync_directory(directory):
    """Flush ``directory`` (its entries: a rename into it) to disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
