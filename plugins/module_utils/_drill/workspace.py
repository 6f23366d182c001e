# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The work area of a restore drill: where its server log, its private socket directory, its pg_hba.conf and its
``external_pid_file`` go, made for the server user (:meth:`WorkArea.create`) and removed at the end
(:meth:`WorkArea.remove`).

Ownership: the drill deletes only what it owns. A ``scratch_dir`` is a directory the caller hands over: the work
area is made in it, and the whole ``scratch_dir`` is deleted at the end unless ``keep`` (a data directory inside
goes with it). Without one the work area is a temporary directory of its own, and only that is deleted. A socket
directory path too long for a Unix socket is made under the system temp directory instead, and deleted too.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file
from ansible_collections.pgops.resilience.plugins.module_utils._drill.config import HBA_TEXT

SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
WORK_PREFIX = 'pgops-drill-'
LOG_NAME = 'drill.log'
HBA_NAME = 'pg_hba.drill.conf'
PID_NAME = 'postmaster.external.pid'
SOCKET_DIR_NAME = 'socket'


class WorkArea:
    """The drill's work files, for one drill.

    :param scratch_dir: str or None, an existing directory handed over (see the module docstring).

    After :meth:`create`: ``work_dir``, ``socket_dir``, ``log_file``, ``hba_file``, ``pid_file`` (str paths).
    """

    def __init__(self, scratch_dir=None):
        self.scratch_dir = scratch_dir
        self.work_dir = None
        self.own_work_dir = False
        self.socket_dir = None
        self.own_socket_dir = False
        self.log_file = None
        self.hba_file = None
        self.pid_file = None

    def create(self, server, port):
        """Make the work directory, the socket directory (0700), the pg_hba.conf and the (empty) log (0600), all the
        server user's; ``scratch_dir`` becomes the server user's too, 0700.

        :param server: :class:`~.._pg.server_user.ServerUser`.
        :param port: int, the server's port (it names the socket file ``.s.PGSQL.<port>``).
        :raises PgopsError: when the server user cannot enter them (:meth:`ServerUser.require_traversable`).
        :raises OSError: when they cannot be made.
        """
        if self.scratch_dir:
            server.chown(self.scratch_dir)
            os.chmod(self.scratch_dir, 0o700)
            self.work_dir = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.scratch_dir)
        else:
            self.work_dir = tempfile.mkdtemp(prefix=WORK_PREFIX)
            self.own_work_dir = True
        server.chown(self.work_dir)
        self.socket_dir = os.path.join(self.work_dir, SOCKET_DIR_NAME)
        if len(self.socket_dir) + len('/.s.PGSQL.%d' % port) > SOCKET_PATH_MAX:
            self.socket_dir = tempfile.mkdtemp(prefix=WORK_PREFIX + 'sock-')
            self.own_socket_dir = True
        else:
            os.mkdir(self.socket_dir, 0o700)
        server.chown(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        server.require_traversable(self.work_dir, 'scratch area')
        server.require_traversable(self.socket_dir, 'socket directory')
        self.log_file = os.path.join(self.work_dir, LOG_NAME)
        self.hba_file = os.path.join(self.work_dir, HBA_NAME)
        self.pid_file = os.path.join(self.work_dir, PID_NAME)
        with private_file(self.hba_file, 'w') as handle:
            handle.write(HBA_TEXT)
        server.chown(self.hba_file)

    def remove(self, keep):
        """Remove what the drill owns: a socket directory of its own outside the work directory (empty once the server
        stopped) always; unless ``keep``, ``scratch_dir`` (handed over) or else its own work directory.

        :returns: list of the paths removed.
        """
        targets = []
        if self.own_socket_dir and self.socket_dir:
            targets.append(self.socket_dir)
        if keep:
            pass
        elif self.scratch_dir:
            targets.append(self.scratch_dir)
        elif self.own_work_dir and self.work_dir:
            targets.append(self.work_dir)
        removed = []
        for path in targets:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed
