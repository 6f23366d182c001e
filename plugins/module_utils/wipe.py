# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``pgdata-wipe-full`` job of the reference runbook ``postgres-infra-setup.md`` (``pg_wipe_data_directory``):
:func:`wipe` empties a data directory (and, with ``clear_parent``, the volume around it) and recreates it 0700 for
the server user, under the safety rules of :mod:`data_directory` (``confirm``, no running server, no system directory,
no other volume). Plain Python over the file system; no Ansible.

The rules followed are those of the PostgreSQL 15 documentation: 19.2 "Creating a Database Cluster" (the data
directory is 0700 or 0750, owned by the server's user) and 26.3.4 "Recovering Using a Continuous Archive Backup"
(stop the server, then empty the data directory).
"""

from __future__ import annotations

import os
import stat

from ansible_collections.pgops.resilience.plugins.module_utils import data_directory, paths

# An ext2/3/4 file system's fsck directory at the root of a volume: left where it is.
KEPT_IN_PARENT = ('lost+found',)


def wipe_argument_spec():
    """The options of ``pg_wipe_data_directory``."""
    return dict(
        data_directory=dict(type='path', required=True),
        confirm=dict(type='str'),
        clear_parent=dict(type='bool', default=False),
        server_user=dict(type='str'),
    )


def check_clear_parent(parent):
    """Refuse a parent directory that is a system directory (:func:`paths.refuse_system_directory`) rather than a
    volume's mount point (such as /var/lib/postgresql with PGDATA /var/lib/postgresql/data).

    :raises PgopsError: naming it.
    """
    paths.refuse_system_directory(parent, 'clear_parent on the parent directory')


def _owned_0700(path, server):
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode) == 0o700 and (not server.as_root or (info.st_uid, info.st_gid) == (server.uid, server.gid))


def wipe(params, check_mode=False):
    """Empty a data directory (the runbook's ``pgdata-wipe-full`` job) and recreate it 0700 for the server user.

    With ``clear_parent`` everything else in the parent directory (the volume's mount point, where the runbook mounts
    the PVC) goes too, except ``lost+found``; the parent itself stays.

    :param params: dict with ``data_directory``, ``confirm``, ``clear_parent``, ``server_user``.
    :param check_mode: bool: report what would be removed, remove nothing.
    :returns: dict: ``changed``, ``data_directory``, ``parent``, ``before`` and ``after`` (``{'data_directory':
        listing, 'parent': listing}``, see :func:`data_directory.directory_listing`; ``parent`` holds the other
        entries of the parent, only with ``clear_parent``), ``removed`` (paths), ``bytes_removed``, ``server_user``.
    :raises PgopsError: without the right ``confirm``, while a server runs there, for a system directory as data
        directory or parent, a data directory that holds other files (:func:`paths.refuse_foreign_directory`), or
        when something cannot be removed.
    """
    datadir = data_directory.check_confirm(params['data_directory'], params.get('confirm'))
    parent = os.path.dirname(datadir)
    clear_parent = bool(params.get('clear_parent'))
    data_directory.check_replaceable(datadir)
    if clear_parent:
        check_clear_parent(parent)
    data_directory.refuse_running_server(datadir)
    server = data_directory.server_user(params.get('server_user'), datadir, False)
    exclude = (os.path.basename(datadir),) + KEPT_IN_PARENT

    def listings():
        found = dict(data_directory=data_directory.directory_listing(datadir))
        if clear_parent:
            found['parent'] = data_directory.directory_listing(parent, exclude)
        return found

    data_directory.refuse_mount_points(datadir)
    if clear_parent:
        data_directory.refuse_mount_points(parent, exclude)
    before = listings()
    removed = [os.path.join(datadir, e['name']) for e in before['data_directory']]
    removed += [os.path.join(parent, e['name']) for e in before.get('parent', [])]
    result = dict(data_directory=datadir, parent=parent, clear_parent=clear_parent, server_user=server.name, before=before,
                  removed=removed, bytes_removed=sum(e['bytes'] for entries in before.values() for e in entries))
    result['changed'] = bool(removed) or not os.path.isdir(datadir) or not _owned_0700(datadir, server)
    if check_mode:
        result['after'] = dict((k, []) for k in before)
        return result
    if before['data_directory']:
        # Written first, removed last: a wipe that stops half-way leaves a directory a run again accepts.
        data_directory.mark_before_deleting(datadir, 'pg_wipe_data_directory')
    if clear_parent:
        data_directory.empty_directory(parent, keep=exclude)
    if os.path.isdir(datadir):
        data_directory.empty_directory(datadir, keep=(paths.INCOMPLETE_MARKER,))
        paths.clear_incomplete(datadir)
    data_directory.make_data_directory(datadir, server)
    result['after'] = listings()
    return result
