# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a PostgreSQL server runs on a data directory: its ``postmaster.pid`` and the process it names.

The first line of ``postmaster.pid`` is the postmaster's PID (PostgreSQL 15 docs, 73.1 "Database File Layout"). A
copied ``postmaster.pid`` (in a base backup, on a volume a pod left) names a process of another host or container,
so a live PID alone proves nothing: only a process that works in the data directory is its postmaster.
"""

from __future__ import annotations

import os


def pid_alive(pid):
    """True when process ``pid`` exists and is not a zombie.

    Read from ``/proc/<pid>/stat`` on Linux; where it cannot be read (no /proc, or hidden), ``kill(pid, 0)`` decides,
    and a process this one may not signal (EPERM) IS alive: it exists, it only belongs to another user.

    :param pid: int or None (None and 0 are never alive).
    """
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % int(pid), encoding='utf-8', errors='replace') as handle:
            # The state letter follows the command name, which is in parentheses and may itself hold ')'.
            return handle.read().rpartition(')')[2].split()[:1] != ['Z']
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def works_in(pid, datadir):
    """True when live process ``pid`` has ``datadir`` as its working directory (a postmaster and its children do:
    the server changes into its data directory at start); False when it does not; None when /proc cannot tell (no
    /proc, or not allowed to look)."""
    try:
        return os.readlink('/proc/%d/cwd' % int(pid)) == os.path.realpath(datadir)
    except FileNotFoundError:
        return False if os.path.isdir('/proc/%d' % int(pid)) else None
    except OSError:
        return None


def postmaster_pid(datadir):
    """The PID (int) in ``datadir/postmaster.pid``, or None when there is no such file or it holds no number. Says
    nothing of whether that process lives: see :func:`postmaster_of`."""
    try:
        with open(os.path.join(datadir, 'postmaster.pid'), encoding='utf-8') as handle:
            return int(handle.readline().strip())
    except (OSError, ValueError):
        return None


def postmaster_of(datadir, unknown_is_live=False):
    """The PID of a live postmaster that runs on ``datadir``, or None.

    A copied ``postmaster.pid`` names a process of the backed-up host: its PID means nothing here unless that process
    works in this very directory. (In a container, the postmaster.pid a server pod left on a volume names PID 1, which
    is alive in every other pod too: only the working directory tells them apart.)

    :param datadir: str, the data directory.
    :param unknown_is_live: bool, the answer when the PID is alive but /proc cannot tell its working directory (no
        /proc, or not allowed to look): False for a drill (its copy's postmaster.pid is foreign anyway), True before
        deleting a data directory (refuse rather than guess).
    :returns: int or None.
    """
    pid = postmaster_pid(datadir)
    if not pid or not pid_alive(pid):
        return None
    inside = works_in(pid, datadir)
    return pid if inside or (inside is None and unknown_is_live) else None
