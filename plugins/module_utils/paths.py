# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where destructive code may delete: the system-directory rule and the data-directory rule, one place for every
module that empties, replaces or removes a directory the user names (``pg_wipe_data_directory``,
``pg_bootstrap_basebackup``, the drill runner's ``scratch_dir``, the barman drill's ``scratch_parent``).

**System directories** (:func:`refuse_system_directory`). A path is refused when it, or where it leads, is one of
these:

- :data:`SYSTEM_TREES`, refused with everything beneath them: the operating system's programs, libraries,
  configuration, kernel and runtime file systems, logs, caches, spools and package databases (``/bin``, ``/boot``,
  ``/dev``, ``/etc``, ``/lib*``, ``/proc``, ``/run``, ``/sbin``, ``/snap``, ``/sys``, ``/usr`` and all of ``/usr``,
  ``/var/backups``, ``/var/cache``, ``/var/lock``, ``/var/log``, ``/var/mail``, ``/var/run``, ``/var/spool``,
  ``/var/lib/apt``, ``/var/lib/dpkg``, ``/var/lib/dnf``, ``/var/lib/rpm``, ``/var/lib/systemd``, ``/var/lib/yum``).
  No data directory or scratch area belongs there.
- :data:`SYSTEM_DIRECTORIES`, refused themselves only: ``/``, ``/home``, ``/media``, ``/mnt``, ``/opt``, ``/srv``,
  ``/tmp``, ``/var``, ``/var/lib``, ``/var/local``, ``/var/opt``, ``/var/tmp``. Data directories and volumes live
  below them (``/var/lib/postgresql/15/main``, ``/var/lib/pgsql/15/data``, ``/srv/pgdata/main``,
  ``/opt/PostgreSQL/15/data``, ``/mnt/pgdata``), so a path below one is allowed.
- home directories, refused themselves only: ``/root`` and every ``/home/<name>``. A service account's home
  elsewhere is not refused: the ``postgres`` user's home is ``/var/lib/postgresql`` (Debian) or ``/var/lib/pgsql``
  (Red Hat), which in the runbook's layout is the data volume's mount point, the parent that ``clear_parent``
  empties; the data-directory rule below keeps a wipe off it.

The path is compared three ways, so that another name of a system directory is refused as well: as given (made
absolute and lexically normal: ``/etc/../etc`` and ``//etc`` are ``/etc``), as resolved (:func:`os.path.realpath`,
every symbolic link followed, so a link to ``/etc`` or a path through one is ``/etc``), and by identity (device and
inode) with the listed directories, which recognises a bind mount of one (``mount --bind /etc /mnt/x``: ``/mnt/x``
and everything under it is ``/etc``'s). A bind mount of a directory below a listed one that is not listed itself
(``/usr/share`` mounted at ``/mnt/x``) cannot be recognised; the data-directory rule refuses it as a data directory.

``within=True`` is for a parent directory in which a directory of our own is created and later removed
(``scratch_parent``, a bootstrap's ``scratch_dir``): nothing already there is deleted, so only the trees are
refused and the system temporary directories (``/tmp``, ``/var/tmp``) stay usable.

**Data directories** (:func:`refuse_foreign_directory`). A directory is emptied only when it is:

- missing, or empty but for files that hold nothing: ``lost+found`` (a volume mounted at the data directory),
  ``recovery.signal``, ``standby.signal``, ``postmaster.pid``, ``postmaster.opts`` (left by a server or a restore
  that never got further), and our own :data:`INCOMPLETE_MARKER`;
- a PostgreSQL data directory: ``PG_VERSION`` and ``global/pg_control`` are there (PostgreSQL 15 docs, 73.1
  "Database File Layout"), the files ``initdb`` and every restore of a base backup create;
- one an interrupted wipe or bootstrap of this collection left: it holds :data:`INCOMPLETE_MARKER`, which is
  written only after the directory passed this check and removed only once the wipe or the restore has completed
  (:func:`mark_incomplete`, :func:`clear_incomplete`), so a run again finishes the job.

Anything else (a directory of other files, a data directory missing ``PG_VERSION`` or ``global/pg_control``) is
refused: the error names the option, the path and what it holds, and asks for it to be checked and emptied by hand.
"""

from __future__ import annotations

import contextlib
import os

from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, isoformat_z, private_file, utc_now

SYSTEM_TREES = ('/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/run', '/sbin', '/snap', '/sys',
                '/usr', '/var/backups', '/var/cache', '/var/lock', '/var/log', '/var/mail', '/var/run', '/var/spool',
                '/var/lib/apt', '/var/lib/dnf', '/var/lib/dpkg', '/var/lib/rpm', '/var/lib/systemd', '/var/lib/yum')
SYSTEM_DIRECTORIES = ('/', '/home', '/media', '/mnt', '/opt', '/srv', '/tmp', '/var', '/var/lib', '/var/local', '/var/opt',
                      '/var/tmp')
HOMES = '/home'  # every directory directly in it is a user's home
ROOT_HOME = '/root'

INCOMPLETE_MARKER = 'pgops.resilience-incomplete'
# Entries that hold nothing worth keeping: a directory holding only these counts as empty.
LEFTOVER_NAMES = frozenset((INCOMPLETE_MARKER, 'lost+found', 'postmaster.opts', 'postmaster.pid', 'recovery.signal',
                            'standby.signal'))
IDENTIFYING_FILES = ('PG_VERSION', 'global/pg_control')
SHOWN_ENTRIES = 8  # names of a refused directory's entries put in the error


# -- system directories ------------------------------------------------------------------------------------------


def normal_path(path):
    """``path`` made absolute and lexically normal (``..``, ``.`` and repeated slashes removed; POSIX's leading
    ``//`` too). Symbolic links are not followed (see :func:`os.path.realpath` for that)."""
    normal = os.path.normpath(os.path.abspath(str(path)))
    if normal.startswith('//'):
        normal = '/' + normal.lstrip('/')
    return normal


def _under(path, directory):
    return path == directory or path.startswith(directory.rstrip('/') + '/')


def _is_home(path):
    return path == ROOT_HOME or (path != HOMES and os.path.dirname(path) == HOMES)


def _listed_reason(path, within):
    """Why the normal path ``path`` is refused by the lists alone, or None."""
    for tree in SYSTEM_TREES:
        if _under(path, tree):
            return 'a system directory (%s and everything under it are refused)' % tree
    if within:
        return None
    if path in SYSTEM_DIRECTORIES:
        return 'a system directory (only directories below it are allowed)'
    if _is_home(path):
        return 'a home directory (only directories below it are allowed)'
    return None


def _identities(within):
    """``{(st_dev, st_ino): (listed path, is a tree)}`` of the listed directories that exist here."""
    listed = [(tree, True) for tree in SYSTEM_TREES]
    if not within:
        homes = []
        with contextlib.suppress(OSError):
            homes = [os.path.join(HOMES, name) for name in os.listdir(HOMES)]
        listed += [(path, False) for path in list(SYSTEM_DIRECTORIES) + [ROOT_HOME] + homes]
    found = {}
    for path, tree in listed:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            found.setdefault((info.st_dev, info.st_ino), (path, tree))
    return found


def _identity_reason(resolved, within):
    """Why ``resolved`` (a real path) is refused because it, or a directory above it, IS a listed directory under
    another name (a bind mount), or None."""
    identities = _identities(within)
    path = resolved
    while True:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            listed = identities.get((info.st_dev, info.st_ino))
            if listed and (path == resolved or listed[1]):
                kind = 'everything under it is refused' if listed[1] else 'only directories below it are allowed'
                where = '' if path == resolved else ' (%s, above it, is)' % path
                return 'the same directory as the system directory %s%s, through a bind mount (%s)' % (listed[0], where, kind)
        if path == '/':
            return None
        path = os.path.dirname(path)


def system_directory_reason(path, within=False):
    """Why ``path`` is a system directory that destructive code must leave alone, or None (see the module's
    docstring for the rule).

    :param path: str; relative paths are taken from the current directory.
    :param within: bool: ``path`` is only a parent in which a new directory of our own is made and later removed;
        then only :data:`SYSTEM_TREES` are refused.
    :returns: str (ends without a full stop) or None.
    """
    given = normal_path(path)
    resolved = normal_path(os.path.realpath(given))
    reason = _listed_reason(given, within)
    if reason:
        return 'it is %s' % reason
    reason = _listed_reason(resolved, within)
    if reason:
        return 'it resolves to %s, %s' % (resolved, reason)
    reason = _identity_reason(resolved, within)
    if reason:
        return 'it is %s' % reason
    return None


def refuse_system_directory(path, option, within=False):
    """Refuse a system directory (see the module's docstring): call it before anything is created or deleted in
    ``path``, in check mode too.

    :param path: str, the path as the user gave it.
    :param option: str, the option that gave it, named in the error.
    :param within: bool, see :func:`system_directory_reason`.
    :returns: str, the path made absolute and normal.
    :raises PgopsError: naming the option, the path and the rule; nothing has been touched.
    """
    if path is None or not str(path).strip():
        raise PgopsError('%s is empty: give a directory.' % option)
    reason = system_directory_reason(path, within)
    if reason:
        raise PgopsError('Refusing %s %s: %s. Nothing is ever %s there; give a directory of its own below the system '
                         'directories, such as %s (the refused directories are listed in the module documentation). '
                         'Nothing was changed.'
                         % (option, path, reason, 'created or deleted' if within else 'deleted',
                            '/var/tmp/pgops' if within else '/var/lib/postgresql/15/main or /srv/pgdata/main'))
    return normal_path(path)


# -- data directories --------------------------------------------------------------------------------------------


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
