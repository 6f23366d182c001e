# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who runs PostgreSQL and owns its files: :class:`ServerUser`.

PostgreSQL refuses to run as root (PostgreSQL 15 docs, 19.3 "Starting the Database Server"), so when this process is
root the server programs run as a non-root system user through ``runuser`` (util-linux), and the files the server
needs are given to that user. Used by every piece that starts a server or prepares a data directory (a drill, a
bootstrap from a base backup, a wipe, the sandbox).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import tempfile

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


def _user_name(uid):
    """The name of user ``uid``, or the number as text when it has no passwd entry (containers)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class ServerUser:
    """Who runs PostgreSQL: as root, a non-root system user through ``runuser``; otherwise the current user.

    :param name: str or None: the system user when this process is root (default: the owner of ``datadir``, or
        ``postgres`` when root owns it); must be unset or the current user otherwise.
    :param datadir: str, an existing path whose owner is the default server user.
    :raises PgopsError: for a user that does not exist, is root, or cannot be switched to.

    ``command(cmd)`` wraps an argument list to run as that user, ``chown`` / ``chown_tree`` give files to it,
    ``require_traversable(path, option)`` refuses a path the user cannot reach.
    """

    def __init__(self, name, datadir):
        self.as_root = os.geteuid() == 0
        if self.as_root:
            if not name:
                owner = os.stat(datadir).st_uid
                try:
                    name = pwd.getpwuid(owner).pw_name if owner != 0 else 'postgres'
                except KeyError:
                    name = 'postgres'
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise PgopsError('server_user %r does not exist on this host. PostgreSQL refuses to run as root; name the '
                                 'system user that runs PostgreSQL (usually postgres).' % name)
            if entry.pw_uid == 0:
                raise PgopsError('server_user %r is root, and PostgreSQL refuses to run as root (PostgreSQL 15 docs, 19.3); '
                                 'name a non-root user such as postgres.' % name)
            if shutil.which('runuser') is None:
                raise PgopsError('running as root needs runuser (util-linux) to start PostgreSQL as %s: install util-linux.' % name)
            self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        else:
            entry = pwd.getpwuid(os.geteuid())
            if name and name != entry.pw_name:
                raise PgopsError('server_user %r: only root can run PostgreSQL as another user; this process runs as %s. '
                                 'Leave server_user unset or run as root.' % (name, entry.pw_name))
            self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        self.groups = set(os.getgrouplist(self.name, self.gid))

    @classmethod
    def file_owner(cls, name, path):
        """A ServerUser that only receives files (``chown``, ``chown_tree``), for work that runs no program as it:
        preparing a data directory that a server elsewhere (a Kubernetes pod) will start.

        Unlike the constructor it needs no passwd entry and no runuser, as in containers running under an arbitrary
        UID: as root, ``name`` may be ``uid`` or ``uid:gid``, and without ``name`` a non-root owner of ``path`` keeps
        it (else ``postgres``); otherwise the files stay the current user's (``name`` must be unset or that user).

        :raises PgopsError: for an unknown user name, root, or another user when not root.
        """
        self = cls.__new__(cls)
        self.as_root = os.geteuid() == 0
        numeric = re.match(r'(\d+)(?::(\d+))?\Z', name or '')
        if not self.as_root:
            uid, gid = os.geteuid(), os.getegid()
            if name and not numeric and name != _user_name(uid):
                raise PgopsError('server_user %r: only root can give files to another user; this process runs as %s. Leave '
                                 'server_user unset or run as root.' % (name, _user_name(uid)))
            if numeric and int(numeric.group(1)) != uid:
                raise PgopsError('server_user %r: only root can give files to another user; this process runs as UID %d.'
                                 % (name, uid))
        elif numeric:
            uid = int(numeric.group(1))
            gid = int(numeric.group(2)) if numeric.group(2) else uid
        elif name:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise PgopsError('server_user %r does not exist on this host; name the user that runs PostgreSQL, or give '
                                 'its numbers as uid:gid (999:999).' % name)
            uid, gid = entry.pw_uid, entry.pw_gid
        else:
            info = os.stat(path)
            if info.st_uid != 0:
                uid, gid = info.st_uid, info.st_gid
            else:
                try:
                    entry = pwd.getpwnam('postgres')
                except KeyError:
                    raise PgopsError('%s belongs to root and there is no postgres user here: set server_user to the user '
                                     'that runs PostgreSQL, or its numbers as uid:gid (999:999).' % path)
                uid, gid = entry.pw_uid, entry.pw_gid
        if self.as_root and uid == 0:
            raise PgopsError('server_user %r is root, and PostgreSQL refuses to run as root (PostgreSQL 15 docs, 19.3); '
                             'name a non-root user such as postgres.' % (name or 'root'))
        self.name, self.uid, self.gid, self.groups = _user_name(uid), uid, gid, {gid}
        return self

    def command(self, cmd):
        """``cmd`` (a list) wrapped to run as the server user: ``runuser -u <name> --`` as root, else unchanged. runuser
        keeps the environment it is given (only HOME, SHELL, USER and LOGNAME change)."""
        return (['runuser', '-u', self.name, '--'] if self.as_root else []) + list(cmd)

    def chown(self, path):
        """Give ``path`` (never a link's target) to the server user and its group; nothing when not root."""
        if self.as_root:
            os.lchown(path, self.uid, self.gid)

    def chown_tree(self, top):
        """chown -R without following links (a link's target is not ours to give away)."""
        if not self.as_root:
            return
        self.chown(top)
        for root, dirs, files in os.walk(top):
            for name in dirs + files:
                self.chown(os.path.join(root, name))

    def can_traverse(self, path):
        """Whether the server user may enter (search) directory ``path``, by its owner, group and mode bits."""
        info = os.stat(path)
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)

    def require_traversable(self, path, option):
        """Refuse ``path`` when the server user cannot enter it or one of the directories above it.

        :param option: str, the option or thing named in the error (``'datadir'``, ``'wal_archive_directory'``).
        :raises PgopsError: naming the directory and how to open it (chmod o+x) or where else to go.
        """
        current = os.sep
        for part in os.path.abspath(path).strip(os.sep).split(os.sep):
            current = os.path.join(current, part)
            if os.path.isdir(current) and not self.can_traverse(current):
                raise PgopsError('%s %s: the server user %s cannot enter %s. Make it searchable (chmod o+x %s) or use a '
                                 'directory under %s.' % (option, path, self.name, current, current, tempfile.gettempdir()))
