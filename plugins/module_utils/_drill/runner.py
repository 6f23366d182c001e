# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore drill runner: prove that a restored physical base backup really starts, recovers and answers.

Something else (barman-cloud-restore, wal-g backup-fetch, tar extraction of a pg_basebackup) has already put a
restored data directory in a scratch area. The runner composes the pieces of a recovery: it checks the data
directory (:func:`~.._pg.backup_label.check_data_directory`), configures it for an isolated archive recovery
(:mod:`.config`, :func:`~.._pg.recovery.prepare_archive_recovery`: no TCP, a private Unix socket directory,
archiving off, the caller's ``restore_command``), runs its server (:mod:`~.._pg.server`: ``pg_ctl start`` watched
until archive recovery has reached a consistent state and the server is promoted), checks it (:mod:`.checks`:
read-only SQL; with ``amcheck``, :mod:`.amcheck`: pg_amcheck over every database), times every phase, stops the
server (always) and removes the scratch area it was given (unless ``keep``: :mod:`.workspace`). A drill over a broken
backup fails loudly with the server's own words (the tail of its log), never passes.

The rules followed are those of the PostgreSQL 15 documentation: 26.3.4 "Recovering Using a Continuous Archive
Backup", 26.3.5 "Timelines", 20.5.4 "Archive Recovery", 20.5.5 "Recovery Target", 20.1.2 "Parameter
Interaction via the Configuration File" (postgresql.auto.conf is read last; the last value of a setting wins),
20.1.4 "Parameter Interaction via the Shell" (``-c`` on the command line beats every file), 21.1 "The pg_hba.conf
File", 19.3 "Starting the Database Server" (the server refuses to run as root), 9.27.4 "Recovery Control Functions".

Public API (plain Python; no Ansible)::

    Drill(datadir, restore_command, scratch_dir=None, bindir=None, server_user=None, port=None, env=None,
          recovery_target=None, checks=None, row_counts=None, database='postgres', user='postgres', timeout=600,
          keep=False, fetch_seconds=None, settings=None, secrets=(), amcheck=False).perform() -> dict
    run_drill(datadir, restore_command, **options) -> dict          # Drill(...).perform()

    The result (JSON-serialisable)::

        dict(verdict='passed', pg_version='15',
             timeline=2,                      # the new timeline the promotion chose (from pg_walfile_name)
             backup_timeline=1, start_wal_file='000000010000000000000004',      # from backup_label
             port=54321, datadir='/scratch/data', scratch_dir='/scratch' or None, server_user='postgres',
             backup_label={'START WAL LOCATION': ..., ...},
             recovery_target=None or {'time': '...', 'inclusive': True, 'timeline': 'latest'},
             recovery=dict(consistent_lsn='0/4000100' or None, redo_done_lsn='0/4000100' or None,
                           stop='recovery stopping before commit of transaction 740, time ...' or None,
                           last_transaction_time='2025-01-29 10:00:03.1+00' or None,   # these four from the server log
                           end_lsn='0/50000A0'),      # pg_current_wal_lsn() right after the promotion
                           # (+ logged_timeline when the log's "selected new timeline ID" differs, which it should not)
             checks=[dict(name='catalog', query='SELECT ...', database='postgres', expected=True, value=True, passed=True,
                          error=None), ...],     # the default checks end with one named 'row counts'
             row_counts={'public.orders': 2000, ...},   # {} when not counted
             row_counts_truncated=False,                  # True when more than 1000 tables (1000 counted)
             amcheck=dict(databases=['app', 'postgres', 'template1'], relations_checked=814, pages_checked=2408,
                          options=['--all', ...], corruption=[], corruption_count=0, corrupt_relations=[],
                          seconds=0.3),                   # only with amcheck=True (see .amcheck.run_amcheck)
             seconds=dict(prepare=0.03, start_to_consistent=0.2, recovery=0.4, checks=0.01, stop=0.1, total=0.7,
                          fetch=12.0, amcheck=0.3),      # fetch only when fetch_seconds is given, amcheck only with
                                                         # amcheck=True; all floats, 3 decimals
             rto_seconds=12.41,                           # fetch_seconds (or 0) + recovery + checks (not amcheck)
             log_tail='the last 30 lines of the server log (secrets masked)',
             log_file='/scratch/pgops-drill-xxxx/drill.log' or None,  # None once removed (unless keep)
             kept=False)

    A failed drill raises ``PgopsError(msg, **result)`` with ``verdict='failed'``, ``phase`` (prepare, start,
    recovery, checks, amcheck, stop) and everything known so far, the log tail among it; the message names the failure,
    quotes the server's FATAL/PANIC lines and says where the log was. The server is stopped first, always.

Typical use (a barman-cloud drill)::

    scratch = tempfile.mkdtemp(prefix='pgops-drill-')          # handed over to the runner below
    ... barman-cloud-restore ... <scratch>/data, timed as fetch ...
    result = run_drill(os.path.join(scratch, 'data'),
                       'barman-cloud-wal-restore --cloud-provider aws-s3 s3://bucket/prefix server-name %f %p',
                       scratch_dir=scratch, env={'AWS_ACCESS_KEY_ID': ..., 'AWS_SECRET_ACCESS_KEY': ...,
                                                 'AWS_ENDPOINT_URL': ...}, fetch_seconds=fetch, timeout=1800)

The programs ``restore_command`` calls run as the server user (``postgres`` when this process is root), with the
postmaster's environment: they must be reachable by that user (a virtual environment under /root is not).

Ownership and clean-up: see :mod:`.workspace` (``scratch_dir`` is handed over and deleted unless ``keep``; without
it only the runner's own work directory goes, and the data directory is left, stopped, recovered and promoted).
Isolation: see :mod:`.config`; besides, ``data_directory`` and ``archive_mode = off`` are pinned on the command line
(a restored postgresql.conf naming another data directory would otherwise start the server on that one). Links
(``pg_wal``, ``pg_tblspc/*``, ``tablespace_map``) pointing outside the data directory and the scratch directory are
refused: the drill would write into them. Secrets travel in ``env`` only (inherited by the postmaster and so by
``restore_command``), never in a file or a command line; ``secrets`` and the values of ``env`` variables whose names
look secret are masked in every message.
"""

from __future__ import annotations

import datetime
import os
import re
import shlex
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError, phase_error
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact
from ansible_collections.pgops.resilience.plugins.module_utils._drill import amcheck as physical
from ansible_collections.pgops.resilience.plugins.module_utils._drill.checks import check_server, normalize_checks
from ansible_collections.pgops.resilience.plugins.module_utils._drill.config import drill_settings, render_drill_settings
from ansible_collections.pgops.resilience.plugins.module_utils._drill.workspace import WorkArea
from ansible_collections.pgops.resilience.plugins.module_utils._pg.backup_label import check_data_directory, inside
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import require_psycopg2
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import postmaster_of, postmaster_pid
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import SERVER_PROGRAMS, find_bindir, major_number
from ansible_collections.pgops.resilience.plugins.module_utils._pg.recovery import (
    conf_literal, normalize_recovery_target, prepare_archive_recovery)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import (
    StartWatch, end_start, follow_log, free_port, read_tail, server_environment, start_server, stop_server)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server_user import ServerUser

try:
    import psycopg2
except ImportError:  # reported by Drill.perform()
    psycopg2 = None

APPLICATION_NAME = 'pgops.resilience drill'
MIN_MAJOR = 12  # recovery.signal and recovery settings in postgresql.conf: PostgreSQL 12 and later
_SECRET_ENV_NAME = re.compile(r'SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL', re.IGNORECASE)


def _seconds(start, end):
    return None if start is None or end is None else round(max(end - start, 0.0), 3)


class Drill:  # pylint: disable=too-many-instance-attributes
    """One restore drill over a restored data directory. Build it (inputs are validated, nothing is touched), then
    call :meth:`perform` once.

    :param datadir: str, the restored data directory (see :func:`~.._pg.backup_label.check_data_directory`).
    :param restore_command: str, the shell command that fetches a WAL file (``%f``) to a path (``%p``), such as
        ``barman-cloud-wal-restore s3://bucket/path server %f %p`` (20.5.4 "Archive Recovery"). No secrets: give those
        in ``env``.
    :param scratch_dir: str or None, a directory handed over to the runner: its work files go in it and it is
        deleted at the end (unless ``keep``), with the data directory when that is inside it.
    :param bindir: str or None, see :func:`~.._pg.programs.find_bindir`.
    :param server_user: str or None: the system user that runs the server when this process is root (default:
        the data directory's owner, or ``postgres`` when root owns it); must be unset or the current user otherwise.
    :param port: int or None (default :func:`~.._pg.server.free_port`).
    :param env: dict of environment variables for the server and so ``restore_command`` (AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), added to this process's environment without its PG* variables.
    :param recovery_target: dict, see :func:`~.._pg.recovery.normalize_recovery_target`; None replays the whole archive.
    :param checks: list of dicts, see :func:`~.checks.normalize_checks`; None runs the default checks (the catalog answers,
        every database that allows connections accepts one).
    :param row_counts: bool or None: count the rows of every user table of ``database`` (at most
        :data:`~.checks.MAX_ROW_COUNT_TABLES`); None counts them only with the default checks. ``count(*)`` reads every page,
        so a damaged table fails the drill.
    :param database: str, the database connected to for the checks and row counts. ``user``: str, the role.
    :param timeout: seconds (int/float) for start + recovery + promotion, and for each check statement.
    :param keep: bool, keep the scratch directory (and work files) for inspection; the server is stopped anyway.
    :param fetch_seconds: float or None, the caller's time to fetch/restore the base backup, added into
        ``rto_seconds``.
    :param settings: dict of further postgresql.conf settings for the drill instance (``shared_buffers``,
        ``huge_pages``, ``shared_preload_libraries``, ...); the ones the drill owns are refused.
    :param secrets: iterable of literal secrets to mask in messages and the log tail.
    :param amcheck: bool, after the checks run pg_amcheck (:mod:`.amcheck`) over every database that allows
        connections, as ``user`` (a superuser), bounded by ``timeout``; corruption fails the drill (phase
        ``amcheck``). Needs PostgreSQL 14 or later and pg_amcheck in the bindir, which is then chosen with it.
    :raises PgopsError: for an invalid option.
    """

    def __init__(self, datadir, restore_command, scratch_dir=None, bindir=None, server_user=None, port=None, env=None,
                 recovery_target=None, checks=None, row_counts=None, database='postgres', user='postgres', timeout=600,
                 keep=False, fetch_seconds=None, settings=None, secrets=(), amcheck=False):
        if not datadir:
            raise PgopsError('datadir is required: the directory the base backup was restored into.')
        self.datadir = os.path.abspath(datadir)
        if not isinstance(restore_command, str) or not restore_command.strip():
            raise PgopsError('restore_command is required: the shell command that copies WAL file %f to %p.')
        if '%p' not in restore_command or '%f' not in restore_command:
            raise PgopsError('restore_command %r must contain %%f (the WAL file name) and %%p (where to put it).' % restore_command)
        conf_literal('restore_command', restore_command)
        self.restore_command = restore_command
        self.scratch_dir = os.path.abspath(scratch_dir) if scratch_dir else None
        if self.scratch_dir:
            refuse_system_directory(self.scratch_dir, 'scratch_dir')  # the runner deletes it at the end
            if self.scratch_dir == os.sep or os.path.islink(self.scratch_dir) or not os.path.isdir(self.scratch_dir):
                raise PgopsError('scratch_dir %r must be an existing directory (not / and not a symbolic link): the runner '
                                 'deletes it at the end.' % (scratch_dir,))
            if inside(os.path.realpath(self.scratch_dir), self.datadir):
                raise PgopsError('scratch_dir %s must not be the data directory or inside it; give its parent.' % self.scratch_dir)
        self.bindir = bindir
        self.server_user_name = server_user
        if port is not None and not (isinstance(port, int) and 1 <= port <= 65535):
            raise PgopsError('port %r must be a number from 1 to 65535.' % (port,))
        self.port = port
        self.env = dict((str(k), str(v)) for k, v in (env or {}).items())
        self.recovery_target = normalize_recovery_target(recovery_target)
        self.checks = normalize_checks(checks)
        self.row_counts = (checks is None) if row_counts is None else bool(row_counts)
        self.database = database or 'postgres'
        self.user = user or 'postgres'
        try:
            self.timeout = float(timeout)
        except (TypeError, ValueError):
            raise PgopsError('timeout %r must be a number of seconds.' % (timeout,))
        if self.timeout <= 0:
            raise PgopsError('timeout must be more than 0 seconds.')
        self.keep = bool(keep)
        self.amcheck = bool(amcheck)
        self.fetch_seconds = None if fetch_seconds is None else float(fetch_seconds)
        self.settings = dict(settings or {})
        self.secrets = [s for s in secrets or () if s]
        self.secrets += [v for k, v in self.env.items() if _SECRET_ENV_NAME.search(k) and v]
        # Set by perform():
        self.server = None
        self.work = WorkArea(self.scratch_dir)
        self.ctl = None
        self.pid = None
        self.log = None
        self.ran = False
        self.live_server = None  # a server found running on datadir, or one that would not stop: nothing is deleted

    @property
    def log_file(self):
        """The server log (str), once the work area is made; else None."""
        return self.work.log_file

    def _redact(self, text):
        return redact(text, self.secrets)

    def _connect(self, database, timeout=5):
        return psycopg2.connect(host=self.work.socket_dir, port=self.port, user=self.user, dbname=database, connect_timeout=timeout,
                                application_name=APPLICATION_NAME, sslmode='disable',
                                options='-c statement_timeout=%d' % int(self.timeout * 1000))

    # -- the pieces: restored data directory, configuration, server, checks ------------------------------------

    def _check_restored(self, result):
        """The restored data directory: a base backup of PostgreSQL 12 or later, no live server on it, no link out."""
        info = check_data_directory(self.datadir)
        result['pg_version'] = info['pg_version']
        result['backup_label'] = info['backup_label']
        result['backup_timeline'] = info['start_timeline']
        result['start_wal_file'] = info['start_wal_file']
        if major_number(info['pg_version']) < MIN_MAJOR:
            raise PgopsError('%s is PostgreSQL %s; the drill runner needs PostgreSQL %d or later (recovery.signal).'
                             % (self.datadir, info['pg_version'], MIN_MAJOR))
        running = postmaster_of(self.datadir)
        if running:
            self.live_server = running  # nothing of it is ours to stop or delete
            raise PgopsError('a server (PID %d) is running on %s: a drill needs a restored copy, never a live data directory.'
                             % (running, self.datadir))
        allowed = [self.datadir] + ([self.scratch_dir] if self.scratch_dir else [])
        for link, target in sorted(info['links'].items()):
            if target and not any(inside(target, top) for top in allowed):
                raise PgopsError('%s/%s points to %s, outside the data directory%s: the drill would write there. Restore the '
                                 'tablespaces and WAL directory into the scratch area (barman-cloud-restore --tablespace '
                                 'NAME:LOCATION, pg_basebackup --tablespace-mapping / --waldir) and run the drill again.'
                                 % (self.datadir, link, target, ' and scratch_dir' if self.scratch_dir else ''))
        return info

    def _prepare(self, result):
        """Check the restored data directory, find the programs and the user, make the work area, configure."""
        info = self._check_restored(result)
        programs = SERVER_PROGRAMS
        if self.amcheck:
            if major_number(info['pg_version']) < physical.MIN_MAJOR:
                raise PgopsError('amcheck needs pg_amcheck, which PostgreSQL %d introduced; %s is PostgreSQL %s: run the drill '
                                 'with amcheck=false.' % (physical.MIN_MAJOR, self.datadir, info['pg_version']))
            programs += (physical.PROGRAM,)  # of the restored server's major version, from the same directory
        self.bindir = find_bindir(self.bindir, info['pg_version'], programs)
        self.server = ServerUser(self.server_user_name, self.datadir)
        result['server_user'] = self.server.name
        if self.port is None:
            self.port = free_port()
        result['port'] = self.port
        self.work.create(self.server, self.port)
        # The data directory becomes the server user's; its parents must let it in.
        self.server.require_traversable(os.path.dirname(self.datadir), 'datadir')
        result['log_file'] = self.work.log_file
        self.log = follow_log(self.work.log_file, self.server)
        settings = drill_settings(info['pg_version'], self.port, self.work.socket_dir, self.work.hba_file, self.restore_command,
                                  self.recovery_target, self.settings, self.work.pid_file)
        block = render_drill_settings(settings, 'appended %s' % isoformat_z(datetime.datetime.now(datetime.timezone.utc)))
        prepare_archive_recovery(self.datadir, block, self.server, 'the pgops.resilience restore drill', info['links'])

    def _start(self):
        # -c on the postmaster's command line beats every configuration file (20.1.4): no file can point the server at
        # another data directory or turn archiving on. The postmaster inherits the environment, restore_command with it.
        options = '-c data_directory=%s -c archive_mode=off' % shlex.quote(self.datadir)
        self.ctl = start_server(self.bindir, self.datadir, self.server, self.work.log_file, self.timeout,
                                server_environment(self.env), options)

    def _wait_promoted(self, result, started):
        """Wait (see :class:`StartWatch`) until ``pg_is_in_recovery()`` answers false on the drill's socket."""
        deadline = started + self.timeout
        conn = None
        first_connect = None
        last_error = None

        def promoted_yet(deadline):
            nonlocal conn, first_connect, last_error
            if conn is None:
                try:
                    conn = self._connect(self.database, timeout=max(1, min(5, int(deadline - time.monotonic()))))
                    conn.autocommit = True
                    if first_connect is None:
                        first_connect = time.monotonic()
                except psycopg2.Error as exc:
                    last_error = ' '.join(str(exc).split())
                    if 'does not exist' in last_error:
                        raise phase_error('recovery', 'cannot connect to the drill instance as user %s to database %s: %s. '
                                          'Set user and database to a role and a database of the backup'
                                          % (self.user, self.database, last_error))
                    return False
            try:
                with conn.cursor() as cur:
                    cur.execute('SELECT pg_is_in_recovery()')
                    return not cur.fetchone()[0]
            except psycopg2.Error as exc:
                last_error = ' '.join(str(exc).split())
                conn.close()
                conn = None
                return False

        def not_promoted():
            detail = '; last connection error: ' + last_error if last_error else ''
            return 'the server was not promoted within timeout=%.0f s (still in recovery%s); raise timeout for a longer archive' % (
                self.timeout, detail)

        watch = StartWatch(self.ctl, self.datadir, self.log)
        try:
            try:
                watch.wait(promoted_yet, deadline, not_promoted)
            finally:
                self.pid = watch.pid or self.pid
            promoted = time.monotonic()
            self.log.poll()
            try:
                with conn.cursor() as cur:
                    cur.execute('SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())')
                    end_lsn, walfile = cur.fetchone()
            except psycopg2.Error as exc:
                raise phase_error('recovery', 'the promoted server stopped answering: %s' % ' '.join(str(exc).split()))
            result['timeline'] = int(walfile[:8], 16)
            result['recovery']['end_lsn'] = end_lsn
        finally:
            if conn is not None:
                conn.close()
        consistent = [t for t in (self.log.time_of('consistent'), first_connect) if t is not None]
        result['seconds']['start_to_consistent'] = _seconds(started, min(consistent) if consistent else promoted)
        result['seconds']['recovery'] = _seconds(started, promoted)
        result['recovery'].update(consistent_lsn=self.log.value_of('consistent'), redo_done_lsn=self.log.value_of('redo_done'),
                                  stop=self.log.value_of('stop'), last_transaction_time=self.log.value_of('last_transaction'))
        logged = self.log.value_of('timeline')
        if logged and int(logged) != result['timeline']:
            result['recovery']['logged_timeline'] = int(logged)
        # pg_ctl -w returns when the server is ready; it has nothing left to wait for. Not killed here when it does
        # not end: _stop ends its whole process group (runuser and pg_ctl), not only the first process.
        self.ctl.exited_within(10)

    def _checks(self, result):
        check_server(self._connect, self.database, self.checks, self.row_counts, result)

    def _amcheck(self, result):
        """pg_amcheck over the databases that allow connections (:func:`~.amcheck.run_amcheck`), into
        ``result['amcheck']``, failed or not."""
        conn = self._connect(self.database)
        try:
            with conn.cursor() as cur:
                cur.execute(physical.DATABASES_SQL)
                databases = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        program = os.path.join(self.bindir, physical.PROGRAM)
        try:
            result['amcheck'] = physical.run_amcheck(program, self.work.socket_dir, self.port, self.user, self.database,
                                                     databases, self.timeout, result['pg_version'])
        except PgopsError as exc:
            result['amcheck'] = exc.details.pop('amcheck', None)
            raise

    def _stop(self):
        """Stop the pg_ctl start waiter and the server (:func:`~.._pg.server.stop_server`). Returns a note or None."""
        if self.ctl is None:
            return None  # never started: any postmaster.pid is the backup's copy, naming a process of another host
        note = end_start(self.ctl)
        pid = postmaster_pid(self.datadir) or self.pid
        stopped, live = stop_server(self.bindir, self.datadir, self.server, pid, server_environment())
        if live:
            self.live_server = live  # its files stay where they are
            return '%s; stop it by hand and remove %s' % (stopped, self.scratch_dir or self.work.work_dir)
        return stopped or note

    def perform(self):
        """Carry out the drill once: prepare, start, wait for promotion, check, stop, clean up.

        :returns: dict, the result described in the module docstring (``verdict='passed'``).
        :raises PgopsError: when any phase fails; ``details`` hold the same result with ``verdict='failed'``,
            ``phase`` and ``log_tail``. The server is stopped and the scratch area removed (unless ``keep``) first.
        """
        if self.ran:
            raise PgopsError('a Drill runs once; build a new one for another drill.')
        self.ran = True
        require_psycopg2()
        began = time.monotonic()
        result = dict(verdict='failed', phase='prepare', pg_version=None, timeline=None, backup_timeline=None, start_wal_file=None,
                      port=self.port, datadir=self.datadir, scratch_dir=self.scratch_dir, server_user=None, backup_label=None,
                      recovery_target=self.recovery_target, recovery=dict(consistent_lsn=None, redo_done_lsn=None, stop=None,
                                                                          last_transaction_time=None, end_lsn=None),
                      checks=[], row_counts={}, row_counts_truncated=False,
                      seconds=dict(prepare=None, start_to_consistent=None, recovery=None, checks=None, stop=None, total=None),
                      rto_seconds=None, log_tail=None, log_file=None, kept=self.keep)
        if self.fetch_seconds is not None:
            result['seconds']['fetch'] = round(self.fetch_seconds, 3)
        if self.amcheck:
            result.update(amcheck=None)
            result['seconds']['amcheck'] = None
        error = None
        try:
            try:
                self._prepare(result)
            except OSError as exc:
                raise phase_error('prepare', 'preparing %s for the drill failed: %s' % (self.datadir, exc))
            prepared = time.monotonic()
            result['seconds']['prepare'] = _seconds(began, prepared)
            result['phase'] = 'start'
            self._start()
            result['phase'] = 'recovery'
            self._wait_promoted(result, prepared)
            result['phase'] = 'checks'
            checks_began = time.monotonic()
            try:
                self._checks(result)
            finally:
                result['seconds']['checks'] = _seconds(checks_began, time.monotonic())
            if self.amcheck:
                result['phase'] = 'amcheck'
                amcheck_began = time.monotonic()
                try:
                    self._amcheck(result)
                finally:
                    result['seconds']['amcheck'] = _seconds(amcheck_began, time.monotonic())
            result['phase'] = 'stop'
        except PgopsError as exc:
            error = exc
        except (OSError, psycopg2.Error) as exc:
            error = phase_error(result['phase'], '%s: %s' % (type(exc).__name__, ' '.join(str(exc).split())))
        finally:
            stop_began = time.monotonic()
            stop_note = self._stop()
            result['seconds']['stop'] = _seconds(stop_began, time.monotonic())
            if self.log is not None:
                self.log.poll()
            if self.log_file and os.path.exists(self.log_file):
                result['log_tail'] = self._redact(read_tail(self.log_file))
            removed = [] if self.live_server else self.work.remove(self.keep)
            if self.log_file and any(inside(os.path.realpath(self.log_file), path) for path in removed):
                result['log_file'] = None
            result['seconds']['total'] = _seconds(began, time.monotonic())
        if error is None and stop_note:
            error = phase_error('stop', stop_note)
        elif error is not None and stop_note:
            error.msg += '; and ' + stop_note
        seconds = result['seconds']
        if seconds['recovery'] is not None:
            result['rto_seconds'] = round((self.fetch_seconds or 0.0) + seconds['recovery'] + (seconds['checks'] or 0.0), 3)
        if error is not None:
            raise self._failure(error, result)
        result['verdict'] = 'passed'
        del result['phase']
        return result

    def _failure(self, error, result):
        phase = getattr(error, 'phase', result.get('phase'))
        result['phase'] = phase
        result['verdict'] = 'failed'
        msg = 'Restore drill of %s failed (%s): %s.' % (self.datadir, phase, error.msg.rstrip('.'))
        fatal = self.log.fatal if self.log is not None else []
        if fatal:
            msg += ' The server said: %s.' % ' | '.join(f.rstrip('.') for f in fatal[:5])
        if phase == 'recovery' and result.get('start_wal_file') and result.get('timeline') is None:
            msg += (' The backup needs every WAL segment from %s on: check that restore_command fetches them (its errors are '
                    'in the log) and that the archive is complete.' % result['start_wal_file'])
        if self.log_file:
            if result['log_file']:
                msg += ' Server log: %s.' % self.log_file
            else:
                msg += ' The server log (%s) was removed with the scratch area; keep=true keeps it.' % self.log_file
        check_errors = phase == 'checks' and any(c['error'] for c in result['checks'])
        if result['log_tail'] and (phase in ('start', 'recovery', 'stop') or check_errors):
            msg += '\n--- last lines of the server log ---\n' + result['log_tail']
        details = dict(error.details)
        details.update(result)
        return PgopsError(self._redact(msg), **details)


def run_drill(datadir, restore_command, **options):
    """Carry out one drill: ``Drill(datadir, restore_command, **options).perform()``. See :class:`Drill` for the
    options and the module docstring for the result."""
    return Drill(datadir, restore_command, **options).perform()
