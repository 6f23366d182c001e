# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data directory that ``pg_wipe_data_directory`` (``_bundles.wipe``) empties and ``pg_bootstrap_basebackup``
(``_bundles.bootstrap``) replaces: the checks both make before they delete anything, and the deletion itself.

Safety rules: nothing is deleted while a server runs on the data directory (a ``postmaster.pid`` whose process is
alive and works in that directory: :func:`refuse_running_server`); nothing is deleted without ``confirm`` equal to
the data directory (:func:`check_confirm`); another volume mounted inside is never emptied
(:func:`refuse_mount_points`). The data directory (and ``clear_parent``'s parent, and the scratch directories) is
never a system directory, by name, through a symbolic link or a bind mount, and it is emptied only when it is empty,
a PostgreSQL data directory or one an interrupted run of ours left (:func:`check_replaceable`, :mod:`paths`; checked
in check mode too). A run writes :data:`INCOMPLETE_MARKER` before its first deletion
(:func:`mark_before_deleting`), so that a run that stops half-way leaves a directory a run again accepts.

The rules followed are those of the PostgreSQL 15 documentation: 19.2 "Creating a Database Cluster" (the data
directory is 0700 or 0750, owned by the server's user: :func:`make_data_directory`), 19.3 "Starting the Database
Server" (never as root: :func:`server_user`), 26.3.4 "Recovering Using a Continuous Archive Backup" (stop the server,
then empty the data directory).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import postmaster_of
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server_user import ServerUser


def data_directory_path(path):
    """``path`` made absolute and normal (no trailing slash, no ``..``).

    :raises PgopsError: for an empty path, ``/``, or a relative one (a job's working directory is no place to wipe).
    """
    if not path or not str(path).strip():
        raise PgopsError('data_directory is required: the PostgreSQL data directory (PGDATA), such as /var/lib/postgresql/data.')
    if not os.path.isabs(path):
        raise PgopsError('data_directory %r must be an absolute path, such as /var/lib/postgresql/data.' % (path,))
    normal = os.path.normpath(path)
    if normal == os.sep:
        raise PgopsError('data_directory is /, which is never a data directory; give PGDATA, such as /var/lib/postgresql/data.')
    return normal


def check_confirm(data_directory, confirm, option='confirm'):
    """Refuse unless ``confirm`` names the same directory as ``data_directory`` (both normalised: a trailing slash
    does not matter, another spelling of the path does).

    :raises PgopsError: saying what to set ``option`` to; nothing has been touched.
    """
    wanted = data_directory_path(data_directory)
    if confirm is None or not str(confirm).strip():
        raise PgopsError('Refusing to delete the contents of %s without confirmation: set %s to exactly %s. Nothing was changed.'
                         % (wanted, option, wanted))
    given = str(confirm)
    if not os.path.isabs(given) or os.path.normpath(given) != wanted:
        raise PgopsError('Refusing to delete the contents of %s: %s is %r, not the data directory. Set %s to exactly %s. '
                         'Nothing was changed.' % (wanted, option, given, option, wanted))
    return wanted


def refuse_running_server(datadir):
    """Refuse when a server runs on ``datadir``: its ``postmaster.pid`` names a live process working in it (or one
    whose working directory cannot be seen: better refuse than guess).

    :raises PgopsError: naming the PID and what to do.
    """
    pid = postmaster_of(datadir)
    if pid:
        raise PgopsError('a PostgreSQL server (PID %d) is running on %s: stop it first (pg_ctl stop -D %s, or scale its '
                         'Deployment to 0). Nothing was changed.' % (pid, datadir, datadir))
    pid = postmaster_of(datadir, unknown_is_live=True)
    if pid:
        raise PgopsError('%s/postmaster.pid names PID %d, which is alive, but this process may not see whether it works in '
                         '%s, so a server may be running on it. Stop it first; if none runs there (the file was left by a '
                         'server on another host or pod), remove %s/postmaster.pid and run again. Nothing was changed.'
                         % (datadir, pid, datadir, datadir))


def _entry_bytes(path):
    """Bytes of the files under ``path`` (``lstat`` sizes; links are not followed)."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size
    total = 0
    for top, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _entry_type(path):
    mode = os.lstat(path).st_mode
    return 'link' if stat.S_ISLNK(mode) else 'directory' if stat.S_ISDIR(mode) else 'file' if stat.S_ISREG(mode) else 'other'


def directory_listing(path, exclude=()):
    """The entries of directory ``path`` with their sizes: a list (sorted by name) of dicts ``{'name', 'type'
    ('directory', 'file', 'link', 'other'), 'bytes'}``; ``[]`` when ``path`` does not exist."""
    if not os.path.isdir(path):
        return []
    return [dict(name=name, type=_entry_type(os.path.join(path, name)), bytes=_entry_bytes(os.path.join(path, name)))
            for name in sorted(os.listdir(path)) if name not in exclude]


def _remove(path):
    """Remove ``path`` (a file, a link, or a directory tree, links never followed).

    :raises PgopsError: naming what could not be removed.
    """
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise PgopsError('cannot remove %s: %s. Remove it by hand (as the owner of the volume) and run again.' % (path, exc))


def refuse_mount_points(path, keep=()):
    """Refuse when an entry of directory ``path`` (but the names in ``keep``) is a mount point: another volume is
    never emptied as part of this one. Checked before anything is removed.

    :raises PgopsError: naming the mount points.
    """
    if not os.path.isdir(path):
        return
    mounts = [os.path.join(path, n) for n in sorted(os.listdir(path))
              if n not in keep and not os.path.islink(os.path.join(path, n)) and os.path.ismount(os.path.join(path, n))]
    if mounts:
        raise PgopsError('%s: mount point(s) %s, another volume, would be emptied. Unmount them (or remove them from the '
                         'pod spec) first. Nothing was changed.' % (path, ', '.join(mounts)))


def empty_directory(path, keep=()):
    """Remove every entry of directory ``path`` except the names in ``keep``; returns the names removed.

    :raises PgopsError: for a mount point among them (nothing removed then, see :func:`refuse_mount_points`), or an
        entry that cannot be removed.
    """
    refuse_mount_points(path, keep)
    removed = []
    for name in sorted(os.listdir(path)):
        if name not in keep:
            _remove(os.path.join(path, name))
            removed.append(name)
    return removed


def _refuse_link(path, option):
    if os.path.islink(path):
        raise PgopsError('%s %s is a symbolic link; give the directory it points to (%s).' % (option, path, os.path.realpath(path)))


def check_replaceable(datadir):
    """What wipe and bootstrap require of ``datadir`` before anything else (check mode too): no system directory
    (by name, link or bind mount), no symbolic link, a directory or nothing, an existing parent, and empty or a data
    directory (:func:`refuse_foreign_directory`).

    :raises PgopsError: naming the problem; nothing has been touched.
    """
    refuse_system_directory(datadir, 'data_directory')
    _refuse_link(datadir, 'data_directory')
    if os.path.exists(datadir) and not os.path.isdir(datadir):
        raise PgopsError('data_directory %s exists and is not a directory. Nothing was changed.' % datadir)
    parent = os.path.dirname(datadir)
    if not os.path.isdir(parent):
        raise PgopsError('the parent directory %s of data_directory does not exist: mount the data volume first.' % parent)
    refuse_foreign_directory(datadir)


def mark_before_deleting(datadir, what):
    """:func:`mark_incomplete` (``what``: str, the operation, such as ``'pg_wipe_data_directory'``), called
    before the first deletion.

    :raises PgopsError: when the marker cannot be written (permissions, a full volume): nothing was deleted.
    """
    try:
        mark_incomplete(datadir, what)
    except OSError as exc:
        raise PgopsError('cannot write %s into %s (%s), so nothing was deleted. Check the volume\'s permissions and free '
                         'space, then run again.' % (INCOMPLETE_MARKER, datadir, exc.strerror or exc))


def make_data_directory(path, server):
    """Create (or keep) ``path`` as an empty-ready data directory: 0700, owned by the server user (19.2).

    :param server: :class:`~.server_user.ServerUser` (see :func:`server_user`).
    :raises OSError: as ``os.mkdir``, ``os.chown`` and ``os.chmod`` do.
    """
    if not os.path.isdir(path):
        os.mkdir(path, 0o700)
    server.chown(path)
    os.chmod(path, 0o700)


def server_user(name, datadir, runs_server):
    """:class:`~.server_user.ServerUser` for ``datadir`` (or for its parent while it does not exist yet): one that can run
    the server (``runs_server``), else one that only receives the files (no passwd entry or runuser needed).

    :param name: str or None (the owner of the directory, or ``postgres`` when root owns it: see
        :class:`~.server_user.ServerUser`).
    :raises PgopsError: as :class:`~.server_user.ServerUser` does, for an unknown user or one that cannot run the server.
    """
    path = datadir if os.path.isdir(datadir) else os.path.dirname(datadir)
    return ServerUser(name, path) if runs_server else ServerUser.file_owner(name, path)


INCOMPLETE_MARKER = 'pgops.resilience-incomplete'


# Entries that hold nothing worth keeping: a directory holding only these counts as empty.
LEFTOVER_NAMES = frozenset((INCOMPLETE_MARKER, 'lost+found', 'postmaster.opts', 'postmaster.pid', 'recovery.signal',
                            'standby.signal'))


IDENTIFYING_FILES = ('PG_VERSION', 'global/pg_control')


SHOWN_ENTRIES = 8  # names of a refused directory's entries put in the error


def data_directory_state(path):
    """What ``path`` is to a wipe or a restore that empties it.

    :returns: tuple ``(state, names)``: ``state`` one of ``'missing'``, ``'empty'`` (nothing, or only
        :data:`LEFTOVER_NAMES`), ``'data directory'`` (``PG_VERSION`` and ``global/pg_control`` are files),
        ``'incomplete'`` (holds :data:`INCOMPLETE_MARKER`), ``'foreign'`` (anything else); ``names`` the sorted
        entries (``[]`` when missing).
    :raises OSError: when the directory cannot be listed.
    """
    if not os.path.lexists(path):
        return 'missing', []
    names = sorted(os.listdir(path))
    if all(name in LEFTOVER_NAMES for name in names):
        return 'empty', names
    if all(os.path.isfile(os.path.join(path, name)) for name in IDENTIFYING_FILES):
        return 'data directory', names
    if os.path.isfile(os.path.join(path, INCOMPLETE_MARKER)):
        return 'incomplete', names
    return 'foreign', names


def refuse_foreign_directory(path, option='data_directory'):
    """Refuse to empty ``path`` unless it is missing, empty, a PostgreSQL data directory, or left incomplete by an
    interrupted wipe or bootstrap of ours (:func:`data_directory_state`). Call it in check mode too.

    :returns: str, the state.
    :raises PgopsError: naming the option, the path, what it holds and what to do; nothing has been touched.
    """
    try:
        state, names = data_directory_state(path)
    except OSError as exc:
        raise PgopsError('%s %s cannot be listed: %s. Nothing was changed.' % (option, path, exc.strerror or exc))
    if state != 'foreign':
        return state
    missing = [name for name in IDENTIFYING_FILES if not os.path.isfile(os.path.join(path, name))]
    shown = ', '.join(names[:SHOWN_ENTRIES]) + (' and %d more' % (len(names) - SHOWN_ENTRIES) if len(names) > SHOWN_ENTRIES else '')
    raise PgopsError('Refusing to empty %s %s: it is neither empty nor a PostgreSQL data directory (one has PG_VERSION '
                     'and global/pg_control; this one has no %s, and holds %s). Check that %s names the data directory; '
                     'if it does and what it holds may go, empty it by hand and run again. Nothing was changed.'
                     % (option, path, ' and no '.join(missing), shown, option), state=state)


def mark_incomplete(path, what):
    """Write :data:`INCOMPLETE_MARKER` into the directory ``path`` (0600) before anything in it is deleted, so that
    a run interrupted half-way leaves a directory :func:`refuse_foreign_directory` accepts again.

    :param what: str, the operation (such as ``'pg_bootstrap_basebackup'``), written into the file for a person.
    :raises OSError: when it cannot be written (nothing has been deleted then).
    """
    with private_file(os.path.join(path, INCOMPLETE_MARKER), 'w') as handle:
        handle.write('%s began emptying this directory at %s and has not completed. Run it again to finish; until '
                     'then this is not a usable data directory.\n' % (what, isoformat_z(utc_now())))


def clear_incomplete(path):
    """Remove :data:`INCOMPLETE_MARKER` from ``path`` once the wipe or restore has completed.

    :raises OSError: when it exists and cannot be removed.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(path, INCOMPLETE_MARKER))
