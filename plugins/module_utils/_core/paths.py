# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where destructive code may delete: the system-directory rule."""

from __future__ import annotations

import contextlib
import os

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


SYSTEM_TREES = ('/bin', '/boot', '/dev', '/etc', '/lib', '/lib32', '/lib64', '/libx32', '/proc', '/run', '/sbin', '/snap', '/sys',
                '/usr', '/var/backups', '/var/cache', '/var/lock', '/var/log', '/var/mail', '/var/run', '/var/spool',
                '/var/lib/apt', '/var/lib/dnf', '/var/lib/dpkg', '/var/lib/rpm', '/var/lib/systemd', '/var/lib/yum')


SYSTEM_DIRECTORIES = ('/', '/home', '/media', '/mnt', '/opt', '/srv', '/tmp', '/var', '/var/lib', '/var/local', '/var/opt',
                      '/var/tmp')


HOMES = '/home'  # every directory directly in it is a user's home


ROOT_HOME = '/root'


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
