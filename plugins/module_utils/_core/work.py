# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Work in progress that a killed run leaves behind (staging and scratch directories named with the run that made
them), and how the next run tells which are over.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import (
    DIRECTORY_MODE, PARTIAL_PREFIX, RUN_TAG, _UNKNOWN_NAMESPACE, _host, partial_path)


# What follows the bundle name in a .partial- entry: ".sha256" for a checksum file being written, then the run's
# ".pid<pid>@<host>.<hex>", or (older versions) tempfile.mkdtemp's "-<random>" or ".<hex>".
_PARTIAL_REST = re.compile(r'(?:\.sha256)?(?:\.%s|[.-][A-Za-z0-9_]{6,})\Z' % RUN_TAG)


def make_staging_directory(directory, name):
    """Create (0700) and return this run's staging directory for the bundle ``name`` in ``directory``.

    :raises PgopsError: when it cannot be created.
    """
    return make_work_directory(partial_path(directory, name), 'staging directory')


def make_work_directory(path, what='scratch directory'):
    """Create (0700, whatever the umask) and return the new directory ``path`` of this run.

    :param what: str, what it is, for the error.
    :raises PgopsError: when it cannot be created (it exists, or its parent is missing or not writable).
    """
    try:
        os.mkdir(path, DIRECTORY_MODE)
        os.chmod(path, DIRECTORY_MODE)
    except OSError as exc:
        raise PgopsError('cannot create the %s %s: %s. Check that %s exists and is writable.'
                         % (what, path, exc, os.path.dirname(path)))
    return path


def partial_pattern(name_regex):
    """A compiled regular expression matching the ``.partial-`` entries of the bundles whose names match
    ``name_regex`` (a regular expression without anchors); group ``bundle`` is the bundle's name. What follows the
    name is checked by :func:`_partial_owner`."""
    return re.compile(r'%s(?P<bundle>%s)(?P<rest>[.-].*)\Z' % (re.escape(PARTIAL_PREFIX), name_regex), re.DOTALL)


def _partial_owner(rest):
    """``(pid, host)`` of the run named in the tail of a partial name, ``(None, None)`` for an older unnamed one, or
    None when the tail is not one this module writes."""
    match = _PARTIAL_REST.match(rest)
    if not match:
        return None
    return (int(match.group('pid')), match.group('host')) if match.group('pid') else (None, None)


def _newest_mtime(path, st):
    """The newest modification time (seconds) of ``path`` and, for a directory, of everything under it (links not
    followed): a run that is still writing keeps it recent."""
    newest = st.st_mtime
    if stat.S_ISDIR(st.st_mode):
        for top, dirs, files in os.walk(path):
            for name in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(top, name)).st_mtime)
                except OSError:
                    pass
    return newest


def _process_start(pid):
    """When process ``pid`` of this host started (seconds since the epoch); 0 when it runs but /proc cannot say;
    None when there is no such process, or it is a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    try:
        with open('/proc/%d/stat' % pid, encoding='ascii', errors='replace') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        with open('/proc/stat', encoding='ascii', errors='replace') as handle:
            boot = int(next(line.split()[1] for line in handle if line.startswith('btime ')))
    except (OSError, IndexError, StopIteration, ValueError):
        return 0
    if fields[0] == 'Z':
        return None
    # proc(5): field 22 (the 20th after the command) is the start time in clock ticks after boot.
    return boot + int(fields[19]) / os.sysconf('SC_CLK_TCK')


def partial_is_stale(owner, newest_mtime, now, max_age, host=None, process_start=_process_start):
    """Whether the work in progress of a run is left over: the run is of this host and PID namespace and its process
    is gone (or the pid now belongs to a process started after the last write), or, for any other run (another host,
    another container's PID namespace on this host, an owner written by an earlier version as the host name alone,
    an unknown namespace, older entries without an owner), nothing under it has changed for more than ``max_age``
    seconds (None: never, by age). Another namespace's PID cannot be looked up from here: its live process would look
    gone.

    :param owner: ``(pid, host)`` from the name, or ``(None, None)``.
    :param newest_mtime: float, seconds since the epoch, the newest change in the run's entries.
    :param now: float, ``time.time()``.
    :param max_age: seconds or None.
    :param host: str, this process's ``<host>`` (default: :func:`_host`).
    :param process_start: callable ``pid -> start time, 0 (unknown) or None (no such process)``.
    :returns: bool.
    """
    pid, owner_host = owner
    host = host or _host()
    if pid is not None and owner_host == host and not host.endswith(_UNKNOWN_NAMESPACE):
        if pid == os.getpid():
            return False
        started = process_start(pid)
        # A process started after the last write cannot have made it: the pid was reused.
        return started is None or started > newest_mtime + 1
    return max_age is not None and now - newest_mtime > max_age


def remove_stale_partials(directory, name_regex, max_age, check_mode=False):
    """Remove the work in progress of bundle runs that are over (see :func:`partial_is_stale`) from ``directory``: a
    killed run leaves its staging directory, a full dump, or a half-written archive.

    Only entries whose whole name is one this module writes for bundles whose names match ``name_regex`` are
    considered (see :func:`remove_stale_entries` for the rest of the rule). The entries of one run (same bundle name
    and owner) are judged together, by the newest change in any.

    :param max_age: seconds (a run's ``timeout``), or None to judge by the owning process only.
    :param check_mode: bool; report without removing.
    :returns: ``(removed, problems)``: lists of str, the paths removed (or that would be) and what could not be.
    """
    pattern = partial_pattern(name_regex)

    def run_of(name):
        match = pattern.match(name)
        owner = _partial_owner(match.group('rest')) if match else None
        return None if owner is None else ((match.group('bundle'), owner), owner)

    return remove_stale_entries(directory, run_of, max_age, check_mode, 'left-over partial bundles')


def remove_stale_entries(directory, run_of, max_age, check_mode=False, what='left-over work', directories_only=False):
    """Remove from ``directory`` the entries that runs which are over left there (see :func:`partial_is_stale`).

    Only entries that ``run_of`` recognises, that are a plain directory (or, unless ``directories_only``, a plain
    file: never a link, which is not followed either), and that belong to this process's user are considered. The
    entries of one run are judged together, by the newest change in any of them.

    :param run_of: callable ``name -> None`` (not ours) ``or (run key, (pid, host))``: the key groups the entries of
        one run, ``(pid, host)`` is its owner from the name, ``(None, None)`` when the name has none.
    :param max_age: seconds, or None to judge by the owning process only.
    :param check_mode: bool; report without removing.
    :param what: str, what the entries are, for the problem messages.
    :param directories_only: bool, consider directories only.
    :returns: ``(removed, problems)``: lists of str, the paths removed (or that would be) and what could not be.
    """
    now, runs = time.time(), {}
    try:
        names = os.listdir(directory)
    except OSError as exc:
        return [], ['cannot list %s for %s: %s' % (directory, what, exc)]
    for name in sorted(names):
        run = run_of(name)
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        plain = stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and not directories_only)
        if run is None or st.st_uid != os.geteuid() or not plain:
            continue
        entry = runs.setdefault(run[0], dict(owner=run[1], paths=[], newest=0.0))
        entry['paths'].append(path)
        entry['newest'] = max(entry['newest'], _newest_mtime(path, st))
    removed, problems = [], []
    for entry in runs.values():
        if not partial_is_stale(entry['owner'], entry['newest'], now, max_age):
            continue
        for path in entry['paths']:
            if not check_mode:
                try:
                    st = os.lstat(path)  # again: never follow a link put there since
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(path)
                    elif stat.S_ISREG(st.st_mode):
                        os.unlink(path)
                    else:
                        continue
                except OSError as exc:
                    problems.append('cannot remove the left-over %s: %s' % (path, exc))
                    continue
            removed.append(path)
    return sorted(removed), problems
