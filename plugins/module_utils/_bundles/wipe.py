# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``pgdata-wipe-full`` job of the reference runbook ``postgres-infra-setup.md`` (``pg_wipe_data_directory``):
:func:`wipe` empties a data directory (and, with ``clear_parent``, the volume around it) and recreates it 0700 for
the server user, under the safety rules of :mod:`~.._pg.datadir` (``confirm``, no running server, no system directory,
no other volume) and, for ``clear_parent``, no other cluster in the parent. Plain Python over the file system; no Ansible.

The rules followed are those of the PostgreSQL 15 documentation: 19.2 "Creating a Database Cluster" (the data
directory is 0700 or 0750, owned by the server's user) and 26.3.4 "Recovering Using a Continuous Archive Backup"
(stop the server, then empty the data directory).
"""

from __future__ import annotations

import os
import stat

from ansible_collections.pgops.resilience.plugins.module_utils._pg import datadir as data_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._pg.datadir import INCOMPLETE_MARKER, clear_incomplete
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive, postmaster_pid

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


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=wipe_argument_spec())


def check_clear_parent(parent):
    """Refuse a parent directory that is a system directory (:func:`refuse_system_directory`) rather than a
    volume's mount point (such as /var/lib/postgresql with PGDATA /var/lib/postgresql/data).

    :raises PgopsError: naming it.
    """
    refuse_system_directory(parent, 'clear_parent on the parent directory')


def _cluster_note(path, top):
    """What makes directory ``path`` a cluster that must not go (str), or None: a data directory (``PG_VERSION``;
    below the entry ``top`` of the parent also ``global/``, since a tablespace's database directories and
    ``base/<oid>`` hold a ``PG_VERSION`` of their own), or a ``postmaster.pid`` naming a live process."""
    pid = postmaster_pid(path)
    live = pid if pid and pid_alive(pid) else None
    if os.path.isfile(os.path.join(path, 'PG_VERSION')) and (path == top or os.path.isdir(os.path.join(path, 'global'))):
        return 'a PostgreSQL data directory' + (', its postmaster.pid names PID %d, which is alive' % live if live else '')
    if live:
        return 'its postmaster.pid names PID %d, which is alive' % live
    return None


def other_clusters(parent, keep=()):
    """The PostgreSQL clusters that emptying ``parent`` (but the entries named in ``keep``) would delete: ``parent``
    itself when it is one (the data directory would be a directory inside another cluster), and every directory in
    the other entries, at any depth, that is one (see :func:`_cluster_note`). Symbolic links are not followed: only
    the link would be removed. Checked before anything is removed, in check mode too.

    :param parent: str, the parent directory of the data directory.
    :param keep: names of entries left in place (the data directory, ``lost+found``).
    :returns: list of ``(path, what)`` str pairs, in path order; ``[]`` when there is none.
    """
    found = []
    note = _cluster_note(parent, parent)
    if note:
        found.append((parent, note + '; data_directory is inside it'))
    for name in sorted(os.listdir(parent)) if os.path.isdir(parent) else ():
        top = os.path.join(parent, name)
        if name in keep or os.path.islink(top) or not os.path.isdir(top):
            continue
        for path, dirs, dummy in os.walk(top):
            note = _cluster_note(path, top)
            if note:
                found.append((path, note))
                dirs[:] = []  # the cluster's own directories (base/<oid>, pg_tblspc) are part of it
            else:
                dirs.sort()
    return found


def refuse_other_clusters(parent, datadir, keep=()):
    """Refuse ``clear_parent`` when emptying ``parent`` would delete another PostgreSQL cluster than ``datadir``
    (:func:`other_clusters`): ``confirm`` names only the data directory, so it never stands for the clusters beside
    it (such as Debian's ``/var/lib/postgresql/16/replica`` beside ``/var/lib/postgresql/16/main``).

    :raises PgopsError: naming each cluster and what to do; nothing has been touched.
    """
    found = other_clusters(parent, keep)
    if found:
        raise PgopsError('Refusing clear_parent: emptying %s would also delete other PostgreSQL clusters than data_directory '
                         '%s: %s. confirm names only %s. To empty only the data directory, set clear_parent to false; to '
                         'remove the others too, stop their servers and remove them by hand (or wipe each as '
                         'data_directory) first; a postmaster.pid whose server is gone (its PID now another process\'s) '
                         'goes by hand too. Nothing was changed.'
                         % (parent, datadir, '; '.join('%s (%s)' % item for item in found), datadir),
                         clusters=[path for path, dummy in found])


def _owned_0700(path, server):
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode) == 0o700 and (not server.as_root or (info.st_uid, info.st_gid) == (server.uid, server.gid))


def wipe_data_directory(params, check_mode=False):
    """Empty a data directory (the runbook's ``pgdata-wipe-full`` job) and recreate it 0700 for the server user.

    With ``clear_parent`` everything else in the parent directory (the volume's mount point, where the runbook mounts
    the PVC) goes too, except ``lost+found``; the parent itself stays. It is refused while the parent holds another
    cluster (:func:`refuse_other_clusters`).

    :param params: dict with ``data_directory``, ``confirm``, ``clear_parent``, ``server_user``.
    :param check_mode: bool: report what would be removed, remove nothing.
    :returns: dict: ``changed``, ``data_directory``, ``parent``, ``before`` and ``after`` (``{'data_directory':
        listing, 'parent': listing}``, see :func:`data_directory.directory_listing`; ``parent`` holds the other
        entries of the parent, only with ``clear_parent``), ``removed`` (paths), ``bytes_removed``, ``server_user``.
    :raises PgopsError: without the right ``confirm``, while a server runs there, for a system directory as data
        directory or parent, with ``clear_parent`` for a parent holding (or being) another cluster, a data directory
        that holds other files (:func:`refuse_foreign_directory`), or when something cannot be removed.
    """
    datadir = data_directory.check_confirm(params['data_directory'], params.get('confirm'))
    parent = os.path.dirname(datadir)
    clear_parent = bool(params.get('clear_parent'))
    data_directory.check_replaceable(datadir)
    exclude = (os.path.basename(datadir),) + KEPT_IN_PARENT
    if clear_parent:
        check_clear_parent(parent)
        refuse_other_clusters(parent, datadir, exclude)
    data_directory.refuse_running_server(datadir)
    server = data_directory.server_user(params.get('server_user'), datadir, False)

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
        data_directory.empty_directory(datadir, keep=(INCOMPLETE_MARKER,))
        clear_incomplete(datadir)
    data_directory.make_data_directory(datadir, server)
    result['after'] = listings()
    return result
