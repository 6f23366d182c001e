# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running a PostgreSQL server on a data directory with ``pg_ctl``, as the server user (:mod:`.server_user`): start
it and watch it recover (:func:`start_server`, :class:`StartWatch`, :class:`LogFollower`), read its control file
(:func:`read_controldata`), stop it (:func:`stop_server`). The pieces a restore drill and a bootstrap from a base
backup compose; every program runs through :mod:`~.._core.process`.

The rules followed are those of the PostgreSQL 15 documentation: "pg_ctl" (``start -w -t``, ``stop -m fast`` then
``-m immediate``), "pg_controldata", 19.3 "Starting the Database Server" (never as root), 26.3.4 "Recovering Using
a Continuous Archive Backup" (the server log says how recovery went).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError, phase_error
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program, program_output, run_program
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive, postmaster_pid, works_in

LOG_TAIL_LINES = 30
POLL_INTERVAL = 0.2  # seconds between two looks at the log, pg_ctl, the postmaster and the caller's probe
STOP_TIMEOUT = 60  # seconds pg_ctl stop -m fast may take before -m immediate
CONTROLDATA_TIMEOUT = 30  # seconds for pg_controldata
# Server log lines followed (lc_messages = 'C' makes them English), PostgreSQL 15 wording (xlogrecovery.c, xlog.c).
LOG_MARKS = (
    ('consistent', re.compile(r'consistent recovery state reached(?: at ([0-9A-F]+/[0-9A-F]+))?')),
    ('redo_done', re.compile(r'redo done at ([0-9A-F]+/[0-9A-F]+)')),
    ('stop', re.compile(r'(recovery stopping (?:before|after|at) .*)')),
    ('last_transaction', re.compile(r'last completed transaction was at log time (.*)')),
    ('timeline', re.compile(r'selected new timeline ID: (\d+)')),
    ('archive_complete', re.compile(r'(archive recovery complete)')),
)
_FATAL = re.compile(r'\b(?:FATAL|PANIC):\s+(.*)')
# FATAL lines that only answer connection attempts while the server starts or stops.
_CONNECTION_REFUSALS = re.compile(r'the database system is (starting up|not yet accepting connections|not accepting connections|shutting down)'
                                  r'|Hot standby mode is disabled|terminating connection due to administrator command')


def server_environment(extra=None):
    """This process's environment without its libpq variables (``PG*``: PGPASSWORD, PGHOST, PGPORT...), plus
    ``extra`` (dict or None): the environment of a server started here, of the programs it runs (``restore_command``)
    and of the server programs (pg_ctl, pg_controldata, initdb, pg_basebackup). runuser keeps the environment it is
    given, so a PGPORT or PGPASSWORD of the caller would otherwise reach the server and what it writes.

    :returns: dict.
    """
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith('PG'))
    env.update(extra or {})
    return env


def free_port(exclude=()):
    """A TCP port number (int) free on 127.0.0.1 right now and not in ``exclude`` (bind to port 0). Another process
    may still take it before the caller does.

    :raises PgopsError: when 50 tries found none.
    """
    for dummy in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise PgopsError('could not find a free TCP port on 127.0.0.1; pass port.')


def read_tail(path, lines=LOG_TAIL_LINES):
    """The last ``lines`` lines (str) of the text file ``path`` (at most its last 64 KiB), or a note why it cannot be
    read."""
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            data = handle.read().decode('utf-8', 'replace')
    except OSError as exc:
        return '(cannot read %s: %s)' % (path, exc.strerror)
    return '\n'.join(data.splitlines()[-lines:])


class LogFollower:
    """Reads a server log as it grows and notes when each line of :data:`LOG_MARKS` first appears (:meth:`poll`,
    :meth:`time_of`, :meth:`value_of`), and collects its FATAL / PANIC messages (``fatal``, a list of str), but the
    ones that only refuse a connection while the server starts or stops.

    :param path: str, the log file (``pg_ctl -l``).
    :param offset: int, bytes of it to skip (what an earlier run wrote into a log that is appended to).
    """

    def __init__(self, path, offset=0):
        self.path = path
        self.offset = offset
        self.partial = ''
        self.seen = {}  # mark -> (monotonic time, first group)
        self.fatal = []

    def poll(self):
        """Read what was added since the last call; note the marks and FATAL lines of its complete lines."""
        try:
            with open(self.path, 'rb') as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        if not data:
            return
        self.offset += len(data)
        text = self.partial + data.decode('utf-8', 'replace')
        lines = text.split('\n')
        self.partial = lines.pop()
        now = time.monotonic()
        for line in lines:
            for mark, pattern in LOG_MARKS:
                match = pattern.search(line)
                if match and mark not in self.seen:
                    self.seen[mark] = (now, match.group(1) if match.groups() else None)
            fatal = _FATAL.search(line)
            if fatal and not _CONNECTION_REFUSALS.search(line) and fatal.group(1).strip() not in self.fatal:
                self.fatal.append(fatal.group(1).strip())

    def time_of(self, mark):
        """The ``time.monotonic()`` seconds when ``mark`` was first seen, or None."""
        return self.seen[mark][0] if mark in self.seen else None

    def value_of(self, mark):
        """What ``mark``'s line said (its first group: an LSN, a time, a timeline number as str), or None."""
        return self.seen[mark][1] if mark in self.seen else None


def follow_log(path, server):
    """Make the server log file ``path`` ready for ``pg_ctl -l``: created 0600 when missing (it is appended to
    otherwise), given to the server user; return a :class:`LogFollower` that starts at its current end.

    :param server: :class:`~.server_user.ServerUser`.
    :raises OSError: when it cannot be created or given away.
    """
    if not os.path.exists(path):
        with private_file(path):
            pass
    server.chown(path)
    return LogFollower(path, os.path.getsize(path))


def start_server(bindir, datadir, server, log_file, wait_seconds, env, options=None):
    """Start ``pg_ctl start -w`` on ``datadir`` as the server user, in a session of its own, and return it at once
    (a :class:`~.._core.process.Program`) for :class:`StartWatch` to follow.

    pg_ctl starts the postmaster in a session of its own with its output in ``log_file``: the postmaster outlives
    pg_ctl (and this process), and signals to pg_ctl's process group never reach it.

    :param bindir: str, the directory of pg_ctl (:func:`~.programs.find_bindir`).
    :param log_file: str, ``pg_ctl -l`` (see :func:`follow_log`).
    :param wait_seconds: int, ``pg_ctl -t``: how long pg_ctl itself waits for the server.
    :param env: dict, the environment of pg_ctl and so of the server and its ``restore_command``
        (:func:`server_environment`).
    :param options: str or None, ``pg_ctl -o``: options for the postgres command line (``-c name=value``, which beats
        every configuration file: PostgreSQL 15 docs, 20.1.4 "Parameter Interaction via the Shell").
    :raises PgopsError: when pg_ctl cannot be started.
    """
    cmd = [os.path.join(bindir, 'pg_ctl'), 'start', '-D', datadir, '-l', log_file, '-w', '-t', str(max(int(wait_seconds), 1))]
    if options:
        cmd += ['-o', options]
    return Program(server.command(cmd), env, 'pg_ctl start -D %s' % datadir, cwd='/', new_session=True)


class StartWatch:
    """Watches a server that ``pg_ctl start -w`` (``ctl``, from :func:`start_server`) brings up on ``datadir``, until
    the caller's probe says what it waits for has happened (a drill: promoted; a bootstrap: recovery ended).

    :param ctl: :class:`~.._core.process.Program` of ``pg_ctl start``.
    :param datadir: str, the data directory (its ``postmaster.pid`` names the postmaster).
    :param log: :class:`LogFollower` or None, polled on every round so that its marks get their times.

    ``pid`` is the postmaster's PID once seen (also after a failure, so that the caller can stop it).
    """

    def __init__(self, ctl, datadir, log=None):
        self.ctl = ctl
        self.datadir = datadir
        self.log = log
        self.pid = None

    def wait(self, probe, deadline, timeout_message):
        """Poll every :data:`POLL_INTERVAL` seconds: the log, pg_ctl, the postmaster, then ``probe(deadline)`` once
        the postmaster is up (a PID in postmaster.pid, or pg_ctl has returned 0).

        :param probe: callable taking the deadline (``time.monotonic()`` seconds) and returning a true value when the
            wait is over (that value is returned), a false one to be asked again; it may raise PgopsError to stop.
        :param deadline: float, ``time.monotonic()`` seconds.
        :param timeout_message: callable returning the message (str) of the timeout error.
        :raises PgopsError: with ``phase = 'recovery'``, when pg_ctl start exits non-zero (quoting its ``pg_ctl:``
            lines), the postmaster exits, or ``deadline`` passes.
        """
        while True:
            if self.log is not None:
                self.log.poll()
            rc = self.ctl.poll()
            pid = postmaster_pid(self.datadir)
            if pid:
                self.pid = pid
            if rc is not None and rc != 0:
                said = [line.strip() for line in self.ctl.stderr.text(wait=1).splitlines() if line.startswith('pg_ctl:')]
                raise phase_error('recovery', 'the server stopped during start or recovery (pg_ctl start: exit code %d%s)'
                                  % (rc, ', ' + ' '.join(said) if said else ''))
            if self.pid and not pid_alive(self.pid):
                raise phase_error('recovery', 'the server (PID %d) exited during recovery' % self.pid)
            if rc == 0 and not pid:
                raise phase_error('recovery', 'the server exited during recovery (postmaster.pid is gone)')
            if self.pid or rc == 0:
                value = probe(deadline)
                if value:
                    return value
            if time.monotonic() >= deadline:
                raise phase_error('recovery', timeout_message())
            time.sleep(POLL_INTERVAL)


def read_controldata(bindir, datadir, server):
    """``pg_controldata`` of ``datadir`` (run as the server user, in English) as a dict of its labels
    (``Database cluster state``, ``Latest checkpoint's TimeLineID``...), or None when it cannot be read right now."""
    cmd = server.command([os.path.join(bindir, 'pg_controldata'), '-D', datadir])
    try:
        out = program_output(cmd, server_environment(dict(LC_ALL='C', LANG='C')), 'pg_controldata', timeout=CONTROLDATA_TIMEOUT, cwd='/')
    except PgopsError:
        return None
    values = {}
    for line in out.splitlines():
        key, sep, value = line.partition(':')
        if sep:
            values[key.strip()] = value.strip()
    return values


def end_start(ctl):
    """End a ``pg_ctl start`` (:func:`start_server`) still waiting: SIGTERM to its process group, then SIGKILL;
    close what is left of it. The postmaster, in a session of its own, is not touched.

    :returns: str note when it would not end, else None.
    """
    if ctl.poll() is None and not ctl.signal_group(signal.SIGTERM, 10) and not ctl.signal_group(signal.SIGKILL, 10):
        # Not waited for any longer: a process stuck in the kernel (an NFS scratch directory) would hang the module.
        return 'pg_ctl start (PID %d) did not end' % ctl.pid
    ctl.stop()
    return None


def _pg_ctl_stop(bindir, datadir, server, env, mode, seconds):
    """``pg_ctl stop -m <mode> -w -t <seconds>`` as the server user; what went wrong (str), or None."""
    cmd = server.command([os.path.join(bindir, 'pg_ctl'), 'stop', '-D', datadir, '-m', mode, '-w', '-t', str(seconds)])
    try:
        run_program(cmd, env, 'pg_ctl stop -m %s' % mode, timeout=seconds + 30, cwd='/')
    except PgopsError as exc:
        return exc.msg
    return None


def server_is(pid, datadir):
    """Whether ``pid`` is alive and is the postmaster of ``datadir``: it works in the data directory, or /proc cannot
    tell (then the PID of a postmaster.pid this very start wrote is trusted)."""
    return pid_alive(pid) and works_in(pid, datadir) is not False


def stop_server(bindir, datadir, server, pid, env):
    """Stop the postmaster ``pid`` of ``datadir``: ``pg_ctl stop -m fast`` (waiting :data:`STOP_TIMEOUT` seconds),
    then ``-m immediate``, then SIGKILL; each only while :func:`server_is` still says it runs.

    :param pid: int, the postmaster's PID (from the postmaster.pid its start wrote).
    :param env: dict, pg_ctl's environment (:func:`server_environment`).
    :returns: tuple ``(note, live)``: ``note`` (str or None) says what did not go as planned; ``live`` is the PID when
        it still runs after all that (its files must stay where they are), else None.
    """
    if not pid or not server_is(pid, datadir):
        return None, None
    note = None
    said = _pg_ctl_stop(bindir, datadir, server, env, 'fast', STOP_TIMEOUT)
    if server_is(pid, datadir):
        said = _pg_ctl_stop(bindir, datadir, server, env, 'immediate', 30)
    if server_is(pid, datadir):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        note = 'the server (PID %d) did not stop with pg_ctl stop -m fast or -m immediate%s; it was killed' % (
            pid, ': ' + ' '.join(said.split()) if said else '')
    if pid_alive(pid):
        return 'the server (PID %d) on %s could not be stopped' % (pid, datadir), pid
    return note, None
