# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection runs a program: an argument list, a private umask, the environment it is given, a
timeout, stderr read from a pipe (its tail kept, secrets masked), and a failure that says what happened.

- :func:`run_program`: run to the end, return its stderr (pg_dump, pg_restore, psql, pg_basebackup);
- :func:`program_output`: run to the end, return its stdout (pg_controldata, pg_config, ``--version``);
- :func:`spooled_output`: the same for a long answer, spooled through a temporary file (barman-cloud-*, wal-g);
- :class:`Program`: start it and follow it (a pipe to or from it, or ``pg_ctl start -w`` watched while the server
  recovers: :class:`~.._pg.server.StartWatch`).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import tempfile
import threading

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact


STDERR_TAIL = 4000  # characters of a failed program's stderr put in the error message


STDERR_KEEP = 1024 * 1024  # bytes of a program's stderr kept while it runs (its last ones), in memory


STDERR_WAIT = 10  # seconds to wait, once a program has exited, for the end of its stderr


# A file system is nearly full below this many free bytes, or this share of its size, whichever is less: what is
# left after a write failed for want of room.
NEARLY_FULL_BYTES = 64 * 1024 * 1024


NEARLY_FULL_SHARE = 0.05


PRIVATE_UMASK = 0o077  # files the client programs create: 0600, directories 0700


def failure(what, returncode, stderr, secrets=(), target=None):
    """The :class:`PgopsError` of a client program that failed: what it was doing, its exit status and the end of
    its stderr (secrets masked). When it printed nothing, what else is known: the signal that ended it, and the free
    space of ``target`` when its file system is nearly full (:func:`nearly_full`).

    :param what: str, such as ``'pg_dump of database app'``.
    :param returncode: int, the exit status (negative: ended by that signal, as ``subprocess`` reports it).
    :param stderr: str or None.
    :param secrets: strings to mask.
    :param target: str or None, the directory the program was writing into.
    :returns: :class:`PgopsError` with ``stderr`` (the masked tail) and ``rc`` in its details.
    """
    text = redact((stderr or '').strip(), secrets)
    if len(text) > STDERR_TAIL:
        text = '...' + text[-STDERR_TAIL:]
    details = dict(stderr=text, rc=returncode)
    said = text
    if not said:
        said = 'it printed nothing on stderr'
        if returncode is not None and returncode < 0:
            said += '; it was ended by signal %s' % _signal_name(-returncode)
        space = nearly_full(target) if target else None
        if space:
            details.update(free_bytes=space['available_bytes'], total_bytes=space['total_bytes'])
            said += ('; the file system of %s is nearly full: %s bytes of free space left of %s, so a write may have '
                     'failed. Free space there (or give another scratch_dir) and run again'
                     % (space['path'], format(space['available_bytes'], ','), format(space['total_bytes'], ',')))
    return PgopsError('%s failed (exit status %s): %s' % (what, returncode, said), **details)


def _signal_name(number):
    try:
        return '%d (%s)' % (number, signal.Signals(number).name)
    except ValueError:
        return str(number)


def nearly_full(path):
    """The free space of the file system holding ``path`` (or its nearest existing parent) when it is nearly full:
    less than :data:`NEARLY_FULL_BYTES` or :data:`NEARLY_FULL_SHARE` of its size (whichever is less) left to an
    unprivileged writer (``statvfs(3)`` ``f_bavail``), as after a write failed for want of room.

    :param path: str.
    :returns: dict ``{'path', 'available_bytes', 'total_bytes'}`` (``path``: the directory examined), or None when
        there is room or the file system cannot be examined.
    """
    probe = os.path.abspath(path)
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    try:
        info = os.statvfs(probe)
    except OSError:
        return None
    total = info.f_blocks * info.f_frsize
    available = info.f_bavail * info.f_frsize
    if not total or available >= min(NEARLY_FULL_BYTES, total * NEARLY_FULL_SHARE):
        return None
    return dict(path=probe, available_bytes=available, total_bytes=total)


_PR_SET_PDEATHSIG = 1  # prctl(2), linux/prctl.h


_PRCTL = []  # libc's prctl, looked up once (find_library runs ldconfig)


def _parent_death_signal():
    """A function for ``preexec_fn`` that makes the child receive SIGKILL when the thread that started it ends (Linux
    ``prctl(PR_SET_PDEATHSIG)``), or None where there is no such call. libc is loaded here, in the parent: the child
    only calls it, between fork and exec, where loading a library could deadlock. A parent that died between the fork
    and the call is seen by the parent's pid having changed: the child exits at once."""
    if not _PRCTL:
        try:
            _PRCTL.append(ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True).prctl)
        except (OSError, AttributeError):
            _PRCTL.append(None)
    prctl = _PRCTL[0]
    if prctl is None:
        return None
    parent = os.getpid()

    def set_signal():
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)  # pylint: disable=protected-access
    return set_signal


class StderrTail:
    """The stderr (or, with :class:`Program`'s ``capture``, the stdout) of a running program, read from its pipe by a
    thread of its own as it comes, its last ``keep`` bytes kept in memory.

    Not a file: a temporary file on the volume the program fills (pg_dump's staging directory) takes nothing more
    once that volume is full, and the program's "No space left on device" would be lost. Read as it comes: a pipe
    nobody reads fills up (64 KiB on Linux) and stalls the program.

    :param pipe: the readable end (``Popen.stderr``); the thread closes it at its end.
    :param keep: int, bytes kept; older ones are left out and counted in ``dropped`` (int).
    """

    def __init__(self, pipe, keep=STDERR_KEEP):
        self._pipe = pipe
        self.keep = keep
        self._kept = bytearray()
        self._lock = threading.Lock()
        self.dropped = 0
        self._thread = threading.Thread(target=self._read, name='stderr-tail', daemon=True)
        self._thread.start()

    def _read(self):
        try:
            while True:
                block = os.read(self._pipe.fileno(), 65536)
                if not block:
                    break
                with self._lock:
                    self._kept += block
                    extra = len(self._kept) - self.keep
                    if extra > 0:
                        del self._kept[:extra]
                        self.dropped += extra
        except OSError:
            pass  # the pipe broke: what was read is all there is
        finally:
            self._pipe.close()

    def text(self, wait=STDERR_WAIT):
        """What was kept, as text (UTF-8, undecodable bytes replaced), from the start of a line when older output was
        left out. Call it once the program has exited; it waits up to ``wait`` seconds for the end of the pipe (a
        child the program started may hold it a little longer)."""
        self._thread.join(wait)
        with self._lock:
            data = bytes(self._kept)
            dropped = self.dropped
        if dropped:
            data = data.partition(b'\n')[2]
        return data.decode('utf-8', 'replace')


class Program:
    """A client program started with an argument list (never a shell string) and umask 077 (:data:`PRIVATE_UMASK`),
    its stderr read into a :class:`StderrTail`. Call :meth:`stop` in a ``finally``, then :meth:`result`.

    :param cmd: list of str.
    :param env: dict, the complete environment (see :func:`~.._pg.connection.libpq_environment`).
    :param what: str, what it does, for errors (``'pg_dump of database app'``).
    :param stdin: a readable file object, ``subprocess.PIPE``, or None (no input).
    :param stdout: a writable file object, ``subprocess.PIPE``, or None (discarded).
    :param keep: int, bytes of stderr kept (its last ones).
    :param cwd: str or None, the working directory (``/`` for programs run as another user, who may not be allowed
        into ours).
    :param new_session: bool, start it in a session (and process group) of its own, so that :meth:`signal_group`
        reaches it and its children, and nothing else (``pg_ctl start``).
    :param capture: bool, read its stdout into :attr:`output` (a :class:`StderrTail` of ``keep`` bytes) instead of
        ``stdout``.
    :param die_with_parent: bool, the program is killed when the thread that starts it ends, also when the module is
        killed: for a program whose work must not go on unwatched (a ``wal-g backup-push`` that outlives the module
        would push beside the next run, after the module's advisory lock has gone). Start it from the main thread.
    :raises PgopsError: when the program cannot be started.
    """

    def __init__(self, cmd, env, what, stdin=None, stdout=None, keep=STDERR_KEEP, cwd=None, new_session=False,  # pylint: disable=too-many-arguments
                 capture=False, die_with_parent=False):
        self.what = what
        if capture:
            stdout = subprocess.PIPE
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL if stdin is None else stdin,
                                         stdout=subprocess.DEVNULL if stdout is None else stdout, stderr=subprocess.PIPE,
                                         umask=PRIVATE_UMASK, cwd=cwd, start_new_session=new_session,
                                         preexec_fn=_parent_death_signal() if die_with_parent else None)
        except OSError as exc:
            raise PgopsError('cannot run %s (%s): %s' % (what, cmd[0], exc))
        self.stderr = StderrTail(self.proc.stderr, keep)
        self.output = StderrTail(self.proc.stdout, keep) if capture else None

    @property
    def stdin(self):
        """The pipe to the program's stdin (with ``stdin=subprocess.PIPE``)."""
        return self.proc.stdin

    @property
    def stdout(self):
        """The pipe from the program's stdout (with ``stdout=subprocess.PIPE``)."""
        return self.proc.stdout

    @property
    def pid(self):
        """The program's process ID (int); with ``new_session`` also its process group's."""
        return self.proc.pid

    @property
    def returncode(self):
        """The exit status (int; negative: ended by that signal), or None while it runs."""
        return self.proc.returncode

    def poll(self):
        """The exit status once it has exited, else None; never waits."""
        return self.proc.poll()

    def wait(self, timeout=None):
        """Wait until the program exits; returns its exit status.

        :param timeout: seconds or None (no limit).
        :raises PgopsError: when it runs longer than ``timeout``; it is killed then.
        """
        if timeout is not None and not self.exited_within(timeout):
            self.stop()
            raise PgopsError('%s did not finish within %s seconds and was stopped.' % (self.what, timeout))
        return self.proc.wait()

    def exited_within(self, seconds):
        """Wait up to ``seconds`` for the program to exit, leaving it alone when it does not (unlike :meth:`wait`).

        A thread blocks in ``waitpid`` and this one waits for that thread, so the exit is seen at once:
        ``Popen.wait`` with a timeout polls, sleeping up to 50 ms between looks (CPython's ``subprocess``), which
        made a 40 ms wal-g call end some 20 ms late (benchmarks/walg.py). The thread ends with the program.

        :returns: bool, whether it has exited.
        """
        if seconds <= 0 or self.proc.poll() is not None:
            return self.proc.poll() is not None
        waiter = threading.Thread(target=self.proc.wait, name='wait-%d' % self.proc.pid, daemon=True)
        waiter.start()
        waiter.join(seconds)
        return not waiter.is_alive()

    def signal_group(self, signum, wait):
        """Send ``signum`` to the program's process group (it was started with ``new_session``) and wait up to
        ``wait`` seconds for the program to exit.

        :returns: bool, whether it has exited.
        """
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signum)
        return self.exited_within(wait)

    def stop(self):
        """Kill the program when it still runs, wait for it, and close the pipes to and from it (for a ``finally``)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pipes = (self.proc.stdin,) if self.output is not None else (self.proc.stdin, self.proc.stdout)
        for pipe in pipes:  # a captured stdout is closed by the thread that reads it
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def result(self, secrets=(), target=None, complete=False):
        """Once it has exited: its stderr (str); a non-zero exit status raises.

        :param secrets: strings to mask in the error.
        :param target: str or None, the directory it wrote into (see :func:`failure`).
        :param complete: bool: raise when part of stderr was left out (the caller reads every line of it).
        :raises PgopsError: via :func:`failure`, or for an incomplete stderr with ``complete``.
        """
        stderr = self.stderr.text()
        if self.proc.returncode != 0:
            raise failure(self.what, self.proc.returncode, stderr, secrets, target)
        if complete and self.stderr.dropped:
            raise PgopsError('%s printed more than %d bytes on stderr; only the last ones were kept, so what it reported '
                             'cannot all be checked.' % (self.what, self.stderr.keep), stderr=redact(stderr[-STDERR_TAIL:], secrets))
        return stderr


def _run_to_the_end(program, timeout, secrets):
    """Wait for ``program`` up to ``timeout`` seconds (None: no limit), and stop it whatever happens.

    :raises PgopsError: when it runs out of time, with the tail of its stderr (secrets masked) in ``stderr``: what it
        logged last often says why (an endpoint it keeps retrying, a disk it cannot write to).
    """
    try:
        if timeout is not None and not program.exited_within(timeout):
            program.stop()
            raise PgopsError('%s did not finish within %s seconds and was stopped.' % (program.what, timeout),
                             stderr=redact(program.stderr.text()[-STDERR_TAIL:], secrets))
        program.wait()
    finally:
        program.stop()


def run_program(cmd, env, what, secrets=(), timeout=None, stdin=None,  # pylint: disable=too-many-arguments
                target=None, keep=STDERR_KEEP, complete=False, cwd=None, die_with_parent=False):
    """Run ``cmd`` (an argument list, never a shell string) and return its stderr text; a non-zero exit status
    raises. Its stderr is read through a pipe (:class:`StderrTail`), never a file, so a full volume cannot swallow it.

    :param cmd: list of str.
    :param env: dict, the complete environment (see :func:`~.._pg.connection.libpq_environment`).
    :param what: str, such as ``'pg_dumpall --globals-only'``, for the error.
    :param secrets: strings to mask in the error.
    :param timeout: seconds or None.
    :param stdin: a readable file object or None (no input).
    :param target: str or None, the directory the program writes into, for the error (see :func:`failure`).
    :param keep: int, bytes of stderr kept (its last ones; :data:`STDERR_KEEP`).
    :param complete: bool: raise when stderr was longer than ``keep`` (see :meth:`Program.result`).
    :param cwd: str or None, the working directory (``/`` for a program run as another user).
    :param die_with_parent: bool, see :class:`Program`.
    :returns: str, the program's stderr (warnings). Files it creates are 0600 (:data:`PRIVATE_UMASK`).
    :raises PgopsError: via :func:`failure` on a non-zero exit status, a timeout (see :func:`_run_to_the_end`) or a
        program that cannot start.
    """
    program = Program(cmd, env, what, stdin=stdin, keep=keep, cwd=cwd, die_with_parent=die_with_parent)
    _run_to_the_end(program, timeout, secrets)
    return program.result(secrets, target, complete)


def program_output(cmd, env, what, secrets=(), timeout=None, cwd=None, keep=STDERR_KEEP):
    """Run ``cmd`` (an argument list) as :func:`run_program` does and return what it printed on stdout, for the
    programs that answer there (``pg_controldata``, ``pg_config --bindir``, ``postgres --version``).

    :param cwd: str or None, the working directory.
    :param keep: int, bytes of stdout (and of stderr) kept, their last ones.
    :returns: str, its stdout (UTF-8, undecodable bytes replaced).
    :raises PgopsError: via :func:`failure` on a non-zero exit status, a timeout or a program that cannot start.
    """
    program = Program(cmd, env, what, keep=keep, cwd=cwd, capture=True)
    _run_to_the_end(program, timeout, secrets)
    program.result(secrets)
    return program.output.text()


def spooled_output(cmd, env, what, secrets=(), timeout=None, cwd=None, die_with_parent=False):
    """Run ``cmd`` (an argument list) as :func:`run_program` does and return all it printed on stdout, spooled
    through an unnamed temporary file (0600, gone when closed) instead of memory or a pipe: for programs whose answer
    is a document read whole, megabytes for a large catalog (``barman-cloud-backup-delete --dry-run``,
    ``wal-g backup-list --detail --json``), while their log and errors go to stderr.

    :param timeout: seconds or None; the program is killed after it.
    :param die_with_parent: bool, see :class:`Program`.
    :returns: str, its stdout (UTF-8, undecodable bytes replaced).
    :raises PgopsError: via :func:`failure` on a non-zero exit status, a timeout (see :func:`_run_to_the_end`) or a
        program that cannot start.
    """
    with tempfile.TemporaryFile() as output:
        program = Program(cmd, env, what, stdout=output, cwd=cwd, die_with_parent=die_with_parent)
        _run_to_the_end(program, timeout, secrets)
        program.result(secrets)
        output.seek(0)
        return output.read().decode('utf-8', 'replace')


def warnings_of(stderr):
    """The non-empty lines of a successful program's stderr (list of str), to report as warnings."""
    return [line for line in (stderr or '').splitlines() if line.strip()]
