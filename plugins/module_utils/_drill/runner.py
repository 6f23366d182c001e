# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore drill runner: prove that a restored physical base backup really starts, recovers and answers.

Something else (barman-cloud-restore, wal-g backup-fetch, tar extraction of a pg_basebackup) has already put a
restored data directory in a scratch area. The runner then starts PostgreSQL on it, isolated (no TCP, a private
Unix socket directory, archiving off), with the caller's ``restore_command``; waits until archive recovery has
reached a consistent state and the server is promoted; runs read-only SQL checks; times every phase; stops the
server (always) and removes the scratch area it was given (unless ``keep``). A drill over a broken backup fails
loudly with the server's own words (the tail of its log), never passes.

The rules followed are those of the PostgreSQL 15 documentation: 26.3.4 "Recovering Using a Continuous Archive
Backup", 26.3.5 "Timelines", 20.5.4 "Archive Recovery", 20.5.5 "Recovery Target", 20.1.2 "Parameter
Interaction via the Configuration File" (postgresql.auto.conf is read last; the last value of a setting wins),
20.1.4 "Parameter Interaction via the Shell" (``-c`` on the command line beats every file), 21.1 "The pg_hba.conf
File", 19.3 "Starting the Database Server" (the server refuses to run as root), 9.27.4 "Recovery Control Functions".

Public API (plain Python; no Ansible)::

    check_data_directory(datadir, require_backup_label=True) -> dict
        dict(pg_version='15', backup_label={'START WAL LOCATION': '0/2000028 (file 000000010000000000000002)', ...},
             start_lsn='0/2000028', start_wal_file='000000010000000000000002', checkpoint_lsn='0/2000060',
             start_timeline=1, start_time='2025-01-29 10:00:00 UTC', label='...', backup_method='streamed',
             backup_from='primary', links={'pg_wal': None or target, 'pg_tblspc/16390': target, ...})
        raises PgopsError naming the missing or wrong file.

    Drill(datadir, restore_command, scratch_dir=None, bindir=None, server_user=None, port=None, env=None,
          recovery_target=None, checks=None, row_counts=None, database='postgres', user='postgres', timeout=600,
          keep=False, fetch_seconds=None, settings=None, secrets=()).run() -> dict
    run_drill(datadir, restore_command, **options) -> dict          # Drill(...).run()

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
             seconds=dict(prepare=0.03, start_to_consistent=0.2, recovery=0.4, checks=0.01, stop=0.1, total=0.7,
                          fetch=12.0),                   # fetch only when fetch_seconds is given; all floats, 3 decimals
             rto_seconds=12.41,                           # fetch_seconds (or 0) + recovery + checks
             log_tail='the last 30 lines of the server log (secrets masked)',
             log_file='/scratch/pgops-drill-xxxx/drill.log' or None,  # None once removed (unless keep)
             kept=False)

    A failed drill raises ``PgopsError(msg, **result)`` with ``verdict='failed'``, ``phase`` (prepare, start,
    recovery, checks, stop) and everything known so far, the log tail among it; the message names the failure,
    quotes the server's FATAL/PANIC lines and says where the log was. The server is stopped first, always.

    Also: find_bindir(explicit=None, pg_version=None), free_port(exclude=()), parse_backup_label(text),
    drill_settings(...), render_settings(settings), conf_literal(name, value), normalize_recovery_target(target),
    normalize_checks(checks), values_match(value, expected), jsonable(value), server_major(bindir).

    Pieces other runners share (the base backup bootstrap of bootstrap.py): ServerUser(name, datadir) (who runs the
    server; runuser as root), LogFollower(path) (marks and FATAL lines of a growing server log), StartWatch(ctl,
    datadir, log).wait(probe, deadline, timeout_message) (pg_ctl start watched until a probe says done),
    postmaster_pid(datadir), postmaster_of(datadir, unknown_is_live=False), pid_alive(pid), read_tail(path).

Typical use (a barman-cloud drill)::

    scratch = tempfile.mkdtemp(prefix='pgops-drill-')          # handed over to the runner below
    ... barman-cloud-restore ... <scratch>/data, timed as fetch ...
    result = run_drill(os.path.join(scratch, 'data'),
                       'barman-cloud-wal-restore --cloud-provider aws-s3 s3://bucket/prefix server-name %f %p',
                       scratch_dir=scratch, env={'AWS_ACCESS_KEY_ID': ..., 'AWS_SECRET_ACCESS_KEY': ...,
                                                 'AWS_ENDPOINT_URL': ...}, fetch_seconds=fetch, timeout=1800)

The programs ``restore_command`` calls run as the server user (``postgres`` when this process is root), with the
postmaster's environment: they must be reachable by that user (a virtual environment under /root is not).

Ownership and clean-up: the runner deletes only what it owns. ``scratch_dir`` (optional) is a directory the caller
hands over: the runner puts its work files in it (log, socket directory, drill-only pg_hba.conf) and deletes the
whole ``scratch_dir`` at the end unless ``keep``; a ``datadir`` inside it goes with it. Without ``scratch_dir`` the
runner makes its own temporary work directory and deletes only that; the data directory (not its to delete) is left,
stopped, recovered and promoted. A socket directory path too long for a Unix socket is made under the system temp
directory instead, and deleted too.

Isolation: ``listen_addresses = ''`` (no TCP at all), a 0700 socket directory owned by the server user, a drill-only
pg_hba.conf (``local all all trust``), ``archive_mode = off`` (also on the command line, which no file can override),
``archive_command``, ``archive_library``, ``archive_cleanup_command`` and ``recovery_end_command`` emptied (a
restored standby's ``archive_cleanup_command`` would delete segments from the production archive),
``external_pid_file`` moved into the work directory (the drill would otherwise overwrite and, at shutdown, delete the
production server's), ``ssl = off`` and ``unix_socket_group = ''`` (certificate files and groups of the production
host need not exist here), ``recovery_min_apply_delay = 0`` (a backup of a delayed standby), every recovery target
emptied but the drill's own (a target left over from an earlier PITR), ``synchronous_standby_names = ''``,
``max_logical_replication_workers = 0`` (a restored subscriber would otherwise connect to its publisher and consume
its slot), ``data_directory`` pinned on the command line (a restored postgresql.conf naming another data directory
would otherwise start the server on that one). Links (``pg_wal``, ``pg_tblspc/*``, ``tablespace_map``) pointing
outside the data directory and the scratch directory are refused: the drill would write into them.
Secrets travel in ``env`` only (inherited by the postmaster and so by ``restore_command``), never in a file or a
command line; ``secrets`` and the values of ``env`` variables whose names look secret are masked in every message.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import uuid

from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import program_version
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # reported by Drill.run()
    psycopg2 = None
    sql = None

DRILL_CLUSTER_NAME = 'pgops-drill'
APPLICATION_NAME = 'pgops.resilience drill'
DEFAULT_BINDIR = '/usr/lib/postgresql/15/bin'
BINDIR_ENV = 'PGOPS_PG_BINDIR'
REQUIRED_PROGRAMS = ('pg_ctl', 'postgres')
LOG_TAIL_LINES = 30
POLL_INTERVAL = 0.2  # seconds between two looks at the log, the postmaster and pg_is_in_recovery()
STOP_TIMEOUT = 60  # seconds pg_ctl stop -m fast may take before -m immediate
MAX_ROW_COUNT_TABLES = 1000
MIN_MAJOR = 12  # recovery.signal and recovery settings in postgresql.conf: PostgreSQL 12 and later
SOCKET_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
WORK_PREFIX = 'pgops-drill-'
LOG_NAME = 'drill.log'
HBA_NAME = 'pg_hba.drill.conf'
PID_NAME = 'postmaster.external.pid'
SOCKET_DIR_NAME = 'socket'
CONF_MARK = '# --- pgops.resilience restore drill ---'
HBA_TEXT = ('# pgops.resilience restore drill: only the drill runner connects, through its private (0700) socket directory.\n'
            'local all all trust\n')
CHECK_KEYS = ('name', 'query', 'expected', 'database')
TARGET_KINDS = ('time', 'lsn', 'xid', 'name', 'immediate')
TARGET_KEYS = TARGET_KINDS + ('inclusive', 'timeline')
_TARGET_SETTINGS = dict(time='recovery_target_time', lsn='recovery_target_lsn', xid='recovery_target_xid', name='recovery_target_name',
                        immediate='recovery_target')
# The settings the drill owns: ``settings`` may not name them.
OWNED_SETTINGS = frozenset((
    'port', 'listen_addresses', 'unix_socket_directories', 'unix_socket_group', 'hba_file', 'cluster_name', 'ssl',
    'logging_collector', 'log_destination', 'log_min_messages', 'lc_messages', 'external_pid_file',
    'archive_mode', 'archive_command', 'archive_library', 'archive_cleanup_command', 'recovery_end_command',
    'restore_command', 'recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time',
    'recovery_target_xid', 'recovery_target_inclusive', 'recovery_target_timeline', 'recovery_target_action',
    'recovery_min_apply_delay', 'primary_conninfo', 'primary_slot_name', 'promote_trigger_file',
    'synchronous_standby_names', 'max_logical_replication_workers', 'data_directory', 'config_file',
))
_SECRET_ENV_NAME = re.compile(r'SECRET|PASSWORD|PASSWD|TOKEN|KEY|CREDENTIAL', re.IGNORECASE)
_SETTING_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z')
_LSN = re.compile(r'[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}\Z')
_LABEL_LINE = re.compile(r'([A-Z][A-Z ]*[A-Z]):\s?(.*)\Z')
_START_WAL = re.compile(r'([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-Fa-f]{24})\)')
# Server log lines the runner follows (lc_messages = 'C' makes them English), PostgreSQL 15 wording.
_LOG_MARKS = (
    ('consistent', re.compile(r'consistent recovery state reached(?: at ([0-9A-F]+/[0-9A-F]+))?')),
    ('redo_done', re.compile(r'redo done at ([0-9A-F]+/[0-9A-F]+)')),
    ('stop', re.compile(r'(recovery stopping (?:before|after|at) .*)')),
    ('last_transaction', re.compile(r'last completed transaction was at log time (.*)')),
    ('timeline', re.compile(r'selected new timeline ID: (\d+)')),
    ('archive_complete', re.compile(r'(archive recovery complete)')),
)
_FATAL = re.compile(r'\b(?:FATAL|PANIC):\s+(.*)')
# FATAL lines that only answer the runner's own connection attempts while the server starts or stops.
_CONNECTION_REFUSALS = re.compile(r'the database system is (starting up|not yet accepting connections|not accepting connections|shutting down)'
                                  r'|Hot standby mode is disabled|terminating connection due to administrator command')


# -- inspecting the data directory ---------------------------------------------------------------------------


def parse_backup_label(text):
    """Parse the text of a ``backup_label`` file.

    The file is written by ``pg_backup_stop`` / the replication protocol's BASE_BACKUP (pg_basebackup,
    barman-cloud-backup, wal-g) and read at the start of archive recovery (PostgreSQL 15 docs, 26.3.3 "Making a
    Base Backup Using the Low Level API"). Lines look like ``START WAL LOCATION: 0/2000028 (file
    000000010000000000000002)``.

    :param text: str, the file's content.
    :returns: dict ``(raw, derived)``: ``raw`` maps each key as written (``'START WAL LOCATION'``,
        ``'CHECKPOINT LOCATION'``, ``'BACKUP METHOD'``, ``'BACKUP FROM'``, ``'START TIME'``, ``'LABEL'``,
        ``'START TIMELINE'``) to its text; ``derived`` holds ``start_lsn``, ``start_wal_file``,
        ``checkpoint_lsn``, ``start_timeline`` (int or None), ``start_time``, ``label``, ``backup_method``,
        ``backup_from`` (None when absent).
    :raises PgopsError: when no ``START WAL LOCATION`` line with a WAL file name is found.
    """
    raw = {}
    for line in (text or '').splitlines():
        match = _LABEL_LINE.match(line.strip())
        if match and match.group(1) not in raw:
            raw[match.group(1)] = match.group(2).strip()
    start = _START_WAL.match(raw.get('START WAL LOCATION', ''))
    if not start:
        raise PgopsError('backup_label has no "START WAL LOCATION: <lsn> (file <segment>)" line; it is not the label of a '
                         'physical base backup. Restore the backup again (the file comes with the base backup).')
    timeline = raw.get('START TIMELINE')
    derived = dict(
        start_lsn=start.group(1).upper(),
        start_wal_file=start.group(2).upper(),
        checkpoint_lsn=(raw.get('CHECKPOINT LOCATION') or '').upper() or None,
        start_timeline=int(timeline) if timeline and timeline.isdigit() else int(start.group(2)[:8], 16),
        start_time=raw.get('START TIME'),
        label=raw.get('LABEL'),
        backup_method=raw.get('BACKUP METHOD'),
        backup_from=raw.get('BACKUP FROM'),
    )
    return dict(raw=raw, derived=derived)


def _inside(path, directory):
    """True when ``path`` (already resolved) is ``directory`` or below it."""
    directory = os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def data_directory_links(datadir):
    """The links of a data directory that lead elsewhere: ``pg_wal`` when it is a symbolic link, every entry of
    ``pg_tblspc``, and the tablespace locations listed in ``tablespace_map`` (which the server turns into links at
    start; tar-format backups carry it).

    :returns: dict ``{'pg_wal': target or None, 'pg_tblspc/<oid>': target, ...}``, targets resolved to real paths.
    """
    links = {'pg_wal': None}
    wal = os.path.join(datadir, 'pg_wal')
    if os.path.islink(wal):
        links['pg_wal'] = os.path.realpath(wal)
    tblspc = os.path.join(datadir, 'pg_tblspc')
    if os.path.isdir(tblspc):
        for name in sorted(os.listdir(tblspc)):
            links['pg_tblspc/' + name] = os.path.realpath(os.path.join(tblspc, name))
    mapping = os.path.join(datadir, 'tablespace_map')
    if os.path.isfile(mapping):
        with open(mapping, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                oid, sep, location = line.rstrip('\n').partition(' ')
                if sep and oid.isdigit():
                    # tablespace_map escapes backslashes and newlines in the location with a backslash.
                    links['pg_tblspc/' + oid] = os.path.realpath(re.sub(r'\\(.)', r'\1', location))
    return links


def check_data_directory(datadir, require_backup_label=True):
    """Check that ``datadir`` holds a restored base backup a drill can start, and describe it.

    Needed: ``PG_VERSION`` (the major version), ``global/pg_control``, and (``require_backup_label``) a
    ``backup_label``, which every base backup restore has (pg_basebackup -Fp/-Ft, barman-cloud-restore, wal-g
    backup-fetch) and a live or crashed data directory never has (PostgreSQL 15 has no exclusive backups), so the
    check also keeps a drill off a production data directory.

    :param datadir: str, path of the data directory.
    :param require_backup_label: bool.
    :returns: dict, see the module docstring (``pg_version`` str, ``backup_label`` raw dict or None, the derived
        fields of :func:`parse_backup_label` or None, ``links`` of :func:`data_directory_links`).
    :raises PgopsError: naming the missing file and what to do.
    """
    if not datadir or not os.path.isdir(datadir):
        raise PgopsError('datadir %r is not a directory: restore the base backup into it first.' % (datadir,))
    version_file = os.path.join(datadir, 'PG_VERSION')
    try:
        with open(version_file, encoding='utf-8') as handle:
            pg_version = handle.read().strip()
    except OSError as exc:
        raise PgopsError('%s cannot be read (%s): %s is not a PostgreSQL data directory, or the restore did not complete. '
                         'Restore the base backup again.' % (version_file, exc.strerror, datadir))
    if not re.match(r'\d+(\.\d+)?\Z', pg_version):
        raise PgopsError('%s holds %r, not a PostgreSQL major version: the restore is damaged. Restore the base backup again.'
                         % (version_file, pg_version[:40]))
    control = os.path.join(datadir, 'global', 'pg_control')
    if not os.path.isfile(control):
        raise PgopsError('%s is missing: the restore of %s is incomplete (the control file comes with every base backup). '
                         'Restore the base backup again.' % (control, datadir))
    result = dict(pg_version=pg_version, backup_label=None, start_lsn=None, start_wal_file=None, checkpoint_lsn=None,
                  start_timeline=None, start_time=None, label=None, backup_method=None, backup_from=None)
    label_file = os.path.join(datadir, 'backup_label')
    if os.path.isfile(label_file):
        with open(label_file, encoding='utf-8', errors='replace') as handle:
            parsed = parse_backup_label(handle.read())
        result['backup_label'] = parsed['raw']
        result.update(parsed['derived'])
    elif require_backup_label:
        raise PgopsError('%s is missing: %s is not a restored base backup (pg_basebackup, barman-cloud-restore and wal-g '
                         'backup-fetch all write one). A drill needs the restored copy, never a running or crashed data '
                         'directory; restore the base backup again.' % (label_file, datadir))
    result['links'] = data_directory_links(datadir)
    return result


def _works_in(pid, datadir):
    """True when live process ``pid`` has ``datadir`` as its working directory (a postmaster and its children do);
    None when /proc cannot tell (no /proc, or not allowed to look)."""
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

    :param unknown_is_live: bool, the answer when the PID is alive but /proc cannot tell its working directory (no
        /proc, or not allowed to look): False for the drill (its copy's postmaster.pid is foreign anyway), True before
        deleting a data directory (refuse rather than guess).
    """
    pid = postmaster_pid(datadir)
    if not pid or not pid_alive(pid):
        return None
    works_in = _works_in(pid, datadir)
    return pid if works_in or (works_in is None and unknown_is_live) else None


def pid_alive(pid):
    """True when process ``pid`` exists and is not a zombie (``/proc`` on Linux; ``kill(pid, 0)`` elsewhere)."""
    if not pid:
        return False
    try:
        with open('/proc/%d/stat' % int(pid), encoding='utf-8', errors='replace') as handle:
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


# -- PostgreSQL programs -------------------------------------------------------------------------------------


def server_major(bindir):
    """The major version (str: ``'15'``, or ``'9.6'`` before 10) of the ``postgres`` program in ``bindir``.

    :raises PgopsError: when it cannot be run or its output is not understood (see :func:`program_version`).
    """
    major, minor = program_version(os.path.join(bindir, 'postgres'))
    return str(major) if major >= 10 else '%d.%s' % (major, minor or '0')


def _complete(directory):
    return bool(directory) and all(os.access(os.path.join(directory, p), os.X_OK) for p in REQUIRED_PROGRAMS)


def _pg_config_bindir():
    if shutil.which('pg_config') is None:
        return None
    try:
        out = subprocess.run(['pg_config', '--bindir'], capture_output=True, text=True, timeout=30, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def find_bindir(explicit=None, pg_version=None):
    """The directory of the PostgreSQL server programs (pg_ctl, postgres) for a data directory of ``pg_version``.

    Order: ``explicit`` (the ``bindir`` option), $PGOPS_PG_BINDIR, /usr/lib/postgresql/<pg_version>/bin (Debian,
    Ubuntu), /usr/pgsql-<pg_version>/bin (PGDG RPMs), /usr/lib/postgresql/15/bin, ``pg_config --bindir``, the
    directory of ``pg_ctl`` on PATH. The first complete directory whose ``postgres -V`` matches ``pg_version`` wins;
    an explicit directory (or $PGOPS_PG_BINDIR) must be complete and match, there is no fallback from it. (The same
    search as the sandbox's ``pgbin.find_bindir``, repeated here because module_utils stand alone.)

    :param explicit: str or None.
    :param pg_version: str such as ``'15'`` (PG_VERSION of the data directory), or None for any version.
    :returns: str.
    :raises PgopsError: naming what was searched and found, and the package to install.
    """
    forced = explicit or os.environ.get(BINDIR_ENV)
    if forced:
        source = 'bindir' if explicit else '$' + BINDIR_ENV
        if not _complete(forced):
            missing = [p for p in REQUIRED_PROGRAMS if not os.access(os.path.join(forced, p), os.X_OK)]
            raise PgopsError('%s %s lacks the PostgreSQL server programs %s; point it at the directory holding pg_ctl and '
                             'postgres (such as /usr/lib/postgresql/15/bin).' % (source, forced, ', '.join(missing)))
        found = server_major(forced)
        if pg_version and found != pg_version:
            raise PgopsError('%s %s holds PostgreSQL %s programs, but the data directory is PostgreSQL %s: point %s at the '
                             'PostgreSQL %s programs.' % (source, forced, found, pg_version, source, pg_version))
        return forced
    candidates = []
    if pg_version:
        candidates += ['/usr/lib/postgresql/%s/bin' % pg_version, '/usr/pgsql-%s/bin' % pg_version]
    candidates += [DEFAULT_BINDIR, _pg_config_bindir()]
    on_path = shutil.which('pg_ctl')
    candidates.append(os.path.dirname(os.path.realpath(on_path)) if on_path else None)
    seen, other = [], []
    for candidate in candidates:
        if not candidate or candidate in seen:
            continue
        seen.append(candidate)
        if not _complete(candidate):
            continue
        found = server_major(candidate)
        if not pg_version or found == pg_version:
            return candidate
        other.append('%s (PostgreSQL %s)' % (candidate, found))
    raise PgopsError('PostgreSQL %sserver programs (pg_ctl, postgres) not found (searched %s, pg_config --bindir, PATH%s). '
                     'Install them (apt-get install -y postgresql-%s) or pass bindir.'
                     % ('%s ' % pg_version if pg_version else '', ', '.join(seen) or 'nothing',
                        '; found only ' + ', '.join(other) if other else '', pg_version or '15'))


def free_port(exclude=()):
    """A TCP port number (int) free on 127.0.0.1 right now and not in ``exclude`` (bind to port 0).

    The drill listens on no TCP address, but the number names its socket file (``.s.PGSQL.<port>``); the socket
    directory is private, so a clash is impossible there anyway.
    """
    for dummy in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise PgopsError('could not find a free TCP port on 127.0.0.1; pass port.')


# -- configuration -------------------------------------------------------------------------------------------


def _major(pg_version):
    """The leading number of a major version string: ``'15'`` -> 15, ``'9.6'`` -> 9."""
    return int(str(pg_version).split('.', maxsplit=1)[0])


def conf_literal(name, value):
    """Render ``value`` as a postgresql.conf value for setting ``name``.

    Booleans become ``on`` / ``off``, integers stay bare, everything else is a string literal in single quotes
    with single quotes doubled and backslashes doubled (the configuration file parser reads backslash escapes;
    PostgreSQL 15 docs, 20.1.2).

    :raises PgopsError: for a value with a line break or NUL, which a configuration line cannot hold.
    """
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, int):
        return str(value)
    text = '' if value is None else str(value)
    if any(c in text for c in '\n\r\0'):
        raise PgopsError('%s: the value has a line break (or NUL), which postgresql.conf cannot hold; give it on one line.' % name)
    return "'" + text.replace('\\', '\\\\').replace("'", "''") + "'"


def normalize_recovery_target(target):
    """Validate a recovery target and return it in a canonical form (PostgreSQL 15 docs, 20.5.5 "Recovery Target").

    :param target: None, or a dict with exactly one of ``time`` (str or aware ``datetime``; a timestamp with time
        zone as PostgreSQL reads it), ``lsn`` (``'0/3000060'``), ``xid`` (int or digits), ``name`` (a restore point
        made with ``pg_create_restore_point``), ``immediate`` (true: stop at the end of the backup, the earliest
        consistent point); plus optional ``inclusive`` (bool, default true: stop just after the target) and
        ``timeline`` (``'latest'`` (default), ``'current'`` or a timeline number).
    :returns: None, or dict ``{kind: value, 'inclusive': bool, 'timeline': str}``.
    :raises PgopsError: for unknown keys, no or several kinds, or a malformed value.
    """
    if target is None:
        return None
    if not isinstance(target, dict):
        raise PgopsError('recovery_target must be a dict such as {time: "2025-01-29 10:30:00+00"}, not %r.' % (target,))
    unknown = sorted(set(target) - set(TARGET_KEYS))
    if unknown:
        raise PgopsError('recovery_target: unknown key(s) %s; use one of %s, plus inclusive and timeline.'
                         % (', '.join(unknown), ', '.join(TARGET_KINDS)))
    kinds = [k for k in TARGET_KINDS if target.get(k) not in (None, '', False)]
    timeline = target.get('timeline')
    if len(kinds) > 1:
        raise PgopsError('recovery_target names %s: give exactly one of %s.' % (' and '.join(kinds), ', '.join(TARGET_KINDS)))
    if not kinds and timeline in (None, ''):
        raise PgopsError('recovery_target is empty: give one of %s (or omit recovery_target to replay the whole archive).'
                         % ', '.join(TARGET_KINDS))
    out = {}
    if kinds:
        kind = kinds[0]
        value = target[kind]
        if kind == 'time':
            if isinstance(value, datetime.datetime):
                if value.tzinfo is None:
                    raise PgopsError('recovery_target.time %s has no time zone; give an aware datetime or a string with an offset.' % value)
                value = value.isoformat()
            value = str(value).strip()
        elif kind == 'lsn':
            value = str(value).strip().upper()
            if not _LSN.match(value):
                raise PgopsError('recovery_target.lsn %r is not an LSN such as 0/3000060.' % (target[kind],))
        elif kind == 'xid':
            value = str(value).strip()
            if not value.isdigit():
                raise PgopsError('recovery_target.xid %r is not a transaction ID (digits).' % (target[kind],))
        elif kind == 'immediate':
            if value is not True:
                raise PgopsError('recovery_target.immediate must be true (or absent).')
        else:
            value = str(value)
        out[kind] = value
        inclusive = target.get('inclusive')
        if inclusive is not None and not isinstance(inclusive, bool):
            raise PgopsError('recovery_target.inclusive must be true or false, not %r.' % (inclusive,))
        out['inclusive'] = True if inclusive is None else inclusive
    timeline = 'latest' if timeline in (None, '') else str(timeline).strip()
    if timeline not in ('latest', 'current') and not timeline.isdigit():
        raise PgopsError("recovery_target.timeline %r must be 'latest', 'current' or a timeline number." % (target.get('timeline'),))
    out['timeline'] = timeline
    return out


def drill_settings(pg_version, port, socket_dir, hba_file, restore_command, recovery_target=None, extra=None, pid_file=''):
    """The settings a drill appends to ``postgresql.auto.conf``, in order: ``extra`` first, then the drill's own.

    Order matters twice. Files: postgresql.auto.conf is read after postgresql.conf and every file that includes
    (include, include_if_exists, include_dir), and when a setting appears more than once the last one wins
    (PostgreSQL 15 docs, 20.1.2), so an included file of the restored configuration cannot turn archiving back on.
    Recovery targets: the server applies each setting at the place of its last occurrence, and naming a second
    kind of target while one is set is an error ("multiple recovery targets specified"), even with an empty value;
    so every kind is emptied first (a target left over from an earlier PITR in the restored configuration is gone),
    then the drill's one is set.

    :param pg_version: str, the data directory's major version (``archive_library`` exists from 15, and
        ``promote_trigger_file`` until 15; a setting the server does not know stops it).
    :param port: int; ``socket_dir``, ``hba_file``: str paths; ``restore_command``: str (20.5.4 "Archive Recovery").
    :param recovery_target: the output of :func:`normalize_recovery_target` or None.
    :param extra: dict of further settings (``shared_buffers`` for a smaller drill host, ...), names the drill
        owns excluded (:data:`OWNED_SETTINGS`).
    :param pid_file: str, the drill's ``external_pid_file`` in its work directory (a restored one may name the
        production server's, which the drill would overwrite and delete at shutdown); ``''`` only makes the server
        complain that it cannot write ``""``.
    :returns: list of ``(name, value)`` (Python values; see :func:`conf_literal`).
    :raises PgopsError: for an ``extra`` name that is malformed or owned by the drill.
    """
    major = _major(pg_version)
    settings = []
    for name, value in sorted((extra or {}).items()):
        if not _SETTING_NAME.match(str(name)):
            raise PgopsError('settings: %r is not a configuration parameter name.' % (name,))
        if str(name).lower() in OWNED_SETTINGS:
            raise PgopsError('settings: %s is set by the drill itself (isolation, recovery); remove it from settings.' % name)
        settings.append((str(name), value))
    target = recovery_target or {}
    settings += [
        # Reachable only through a private socket; no TCP at all (20.3.1 "Connection Settings").
        ('port', int(port)),
        ('listen_addresses', ''),
        ('unix_socket_directories', socket_dir),
        ('unix_socket_group', ''),
        ('hba_file', hba_file),
        ('ssl', False),
        ('cluster_name', DRILL_CLUSTER_NAME),
        # The whole log in the pg_ctl -l file, in English, with the LOG lines the runner follows.
        ('logging_collector', False),
        ('log_destination', 'stderr'),
        ('log_min_messages', 'warning'),
        ('lc_messages', 'C'),
        ('external_pid_file', pid_file),
        # NEVER archive into the production WAL location (archive_mode is also given on the command line).
        ('archive_mode', 'off'),
        ('archive_command', ''),
    ]
    if major >= 15:
        settings.append(('archive_library', ''))
    settings += [
        ('archive_cleanup_command', ''),
        ('recovery_end_command', ''),
        ('restore_command', restore_command),
        ('recovery_min_apply_delay', 0),
    ]
    chosen = [(_TARGET_SETTINGS[kind], 'immediate' if kind == 'immediate' else target[kind]) for kind in TARGET_KINDS if kind in target]
    settings += [(name, '') for name in sorted(_TARGET_SETTINGS.values()) if name not in dict(chosen)]
    settings += chosen
    settings += [
        ('recovery_target_inclusive', target.get('inclusive', True)),
        ('recovery_target_timeline', target.get('timeline', 'latest')),
        ('recovery_target_action', 'promote'),
        ('primary_conninfo', ''),
        ('primary_slot_name', ''),
    ]
    if major <= 15:
        settings.append(('promote_trigger_file', ''))
    settings += [
        ('synchronous_standby_names', ''),
        # A restored subscriber would connect to its publisher and consume the production subscription's slot.
        ('max_logical_replication_workers', 0),
    ]
    return settings


def render_settings(settings, note=None):
    """The text appended to ``postgresql.auto.conf``: a marked block of ``name = literal`` lines.

    :param settings: list of ``(name, value)`` from :func:`drill_settings`.
    :param note: optional str for the header comment (such as the time of the drill).
    :returns: str ending with a newline.
    """
    lines = [
        '',
        CONF_MARK + (' ' + note if note else ''),
        '# postgresql.auto.conf is read after postgresql.conf and every file it includes, and the last value of a setting',
        '# wins (PostgreSQL 15 docs, 20.1.2): these lines override the restored configuration, archive_mode and',
        '# archive_command in an included file among them. The drill must never archive into the production WAL location.',
    ]
    lines += ['%s = %s' % (name, conf_literal(name, value)) for name, value in settings]
    return '\n'.join(lines) + '\n'


# -- checks --------------------------------------------------------------------------------------------------


def normalize_checks(checks):
    """Validate user checks: a list of dicts ``{query, name?, expected?, database?}``.

    :returns: list of dicts with every key of :data:`CHECK_KEYS` (``name`` defaults to ``check <n>``).
    :raises PgopsError: naming the check and the problem.
    """
    if checks is None:
        return None
    if not isinstance(checks, (list, tuple)):
        raise PgopsError('checks must be a list of {name, query, expected, database}, not %s.' % type(checks).__name__)
    out = []
    for number, check in enumerate(checks, 1):
        if not isinstance(check, dict):
            raise PgopsError('checks[%d] must be a dict with at least query, not %r.' % (number - 1, check))
        unknown = sorted(set(check) - set(CHECK_KEYS))
        if unknown:
            raise PgopsError('checks[%d]: unknown key(s) %s; a check has %s.' % (number - 1, ', '.join(unknown), ', '.join(CHECK_KEYS)))
        query = check.get('query')
        if not isinstance(query, str) or not query.strip():
            raise PgopsError('checks[%d] (%s) has no query: give the SQL to run.' % (number - 1, check.get('name') or 'unnamed'))
        out.append(dict(name=str(check.get('name') or 'check %d' % number), query=query, expected=check.get('expected'),
                        database=check.get('database') or None))
    return out


def _text(value):
    """Text form of a value for comparison: bools ``true``/``false``, numbers by ``str()``, None ``null``."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return 'null'
    if isinstance(value, datetime.datetime):
        return jsonable(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def values_match(value, expected):
    """Whether a check's ``value`` matches its ``expected`` value.

    Lists (rows, or the values of a row) match element by element. Scalars match when they are equal as Python
    values (a bool only equals a bool: ``expected: 1`` does not match ``true``), or equal as text, where bools are
    ``true`` / ``false`` (either case in ``expected``), numbers are rendered by ``str()`` and datetimes as ISO 8601.
    So YAML ``expected: 42`` and ``expected: "42"`` both match ``count(*)`` 42, ``expected: true`` matches a boolean
    true, ``expected: "1.50"`` matches numeric 1.50.
    """
    if isinstance(value, (list, tuple)) or isinstance(expected, (list, tuple)):
        if not (isinstance(value, (list, tuple)) and isinstance(expected, (list, tuple))) or len(value) != len(expected):
            return False
        return all(values_match(v, e) for v, e in zip(value, expected))
    if isinstance(value, bool) == isinstance(expected, bool):
        try:
            if value == expected:
                return True
        except (TypeError, ValueError, decimal.InvalidOperation):
            pass
    if isinstance(value, bool) and isinstance(expected, str):
        return _text(value) == expected.strip().lower()
    return _text(value) == _text(expected)


def row_value(rows, description):
    """The value a check compares: ``rows[0][0]`` when the result is exactly one row of one column, None when
    the statement returned no result set, else the list of rows as lists."""
    if description is None:
        return None
    if len(rows) == 1 and len(rows[0]) == 1:
        return rows[0][0]
    return [list(row) for row in rows]


def jsonable(value):
    """Make a database value JSON-safe: integral ``Decimal`` -> int, other finite ``Decimal`` -> float when that
    keeps its digits, else str; aware datetimes -> ISO 8601 ``Z`` (:func:`common.isoformat_z`), naive ones and
    dates/times -> ISO 8601; timedelta -> seconds (float); bytes -> hex; UUID, ranges and the rest -> str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if decimal.Decimal(repr(as_float)) == value else str(value)
    if isinstance(value, datetime.datetime):
        return isoformat_z(value) if value.tzinfo else value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return dict((str(k), jsonable(v)) for k, v in value.items())
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def _show(value):
    return json.dumps(jsonable(value), default=str)


# -- the drill -----------------------------------------------------------------------------------------------


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


def _seconds(start, end):
    return None if start is None or end is None else round(max(end - start, 0.0), 3)


def _phase_error(phase, msg):
    """A :class:`PgopsError` that remembers the drill phase it belongs to."""
    error = PgopsError(msg)
    error.phase = phase
    return error


class LogFollower:
    """Reads the server log as it grows and notes when each line of :data:`_LOG_MARKS` first appears (:meth:`poll`,
    :meth:`time_of`, :meth:`value_of`), and collects its FATAL / PANIC messages (``fatal``, a list of str)."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = ''
        self.seen = {}  # mark -> (monotonic time, first group)
        self.fatal = []

    def poll(self):
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
            for mark, pattern in _LOG_MARKS:
                match = pattern.search(line)
                if match and mark not in self.seen:
                    self.seen[mark] = (now, match.group(1) if match.groups() else None)
            fatal = _FATAL.search(line)
            if fatal and not _CONNECTION_REFUSALS.search(line) and fatal.group(1).strip() not in self.fatal:
                self.fatal.append(fatal.group(1).strip())

    def time_of(self, mark):
        return self.seen[mark][0] if mark in self.seen else None

    def value_of(self, mark):
        return self.seen[mark][1] if mark in self.seen else None


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
        return (['runuser', '-u', self.name, '--'] if self.as_root else []) + list(cmd)

    def chown(self, path):
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
        info = os.stat(path)
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)

    def require_traversable(self, path, option):
        current = os.sep
        for part in os.path.abspath(path).strip(os.sep).split(os.sep):
            current = os.path.join(current, part)
            if os.path.isdir(current) and not self.can_traverse(current):
                raise PgopsError('%s %s: the server user %s cannot enter %s. Make it searchable (chmod o+x %s) or use a '
                                 'directory under %s.' % (option, path, self.name, current, current, tempfile.gettempdir()))


class StartWatch:
    """Watches a server that ``pg_ctl start -w`` (``ctl``, a ``subprocess.Popen``) brings up on ``datadir``, until
    the caller's probe says what it waits for has happened (the drill: promoted; a bootstrap: recovery ended).

    :param ctl: ``subprocess.Popen`` of ``pg_ctl start`` (stdout piped, text), started in a session of its own.
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
                output = (self.ctl.stdout.read() or '') if self.ctl.stdout else ''
                said = [line.strip() for line in output.splitlines() if line.startswith('pg_ctl:')]
                raise _phase_error('recovery', 'the server stopped during start or recovery (pg_ctl start: exit code %d%s)'
                                   % (rc, ', ' + ' '.join(said) if said else ''))
            if self.pid and not pid_alive(self.pid):
                raise _phase_error('recovery', 'the server (PID %d) exited during recovery' % self.pid)
            if rc == 0 and not pid:
                raise _phase_error('recovery', 'the server exited during recovery (postmaster.pid is gone)')
            if self.pid or rc == 0:
                value = probe(deadline)
                if value:
                    return value
            if time.monotonic() >= deadline:
                raise _phase_error('recovery', timeout_message())
            time.sleep(POLL_INTERVAL)


class Drill:  # pylint: disable=too-many-instance-attributes
    """One restore drill over a restored data directory. Build it (inputs are validated, nothing is touched), then
    call :meth:`run` once.

    :param datadir: str, the restored data directory (see :func:`check_data_directory`).
    :param restore_command: str, the shell command that fetches a WAL file (``%f``) to a path (``%p``), such as
        ``barman-cloud-wal-restore s3://bucket/path server %f %p`` (20.5.4 "Archive Recovery"). No secrets: give those
        in ``env``.
    :param scratch_dir: str or None, a directory handed over to the runner: its work files go in it and it is
        deleted at the end (unless ``keep``), with the data directory when that is inside it.
    :param bindir: str or None, see :func:`find_bindir`.
    :param server_user: str or None: the system user that runs the server when this process is root (default:
        the data directory's owner, or ``postgres`` when root owns it); must be unset or the current user otherwise.
    :param port: int or None (default :func:`free_port`).
    :param env: dict of environment variables for the server and so ``restore_command`` (AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...), added to this process's environment without its PG* variables.
    :param recovery_target: dict, see :func:`normalize_recovery_target`; None replays the whole archive.
    :param checks: list of dicts, see :func:`normalize_checks`; None runs the default checks (the catalog answers,
        every database that allows connections accepts one).
    :param row_counts: bool or None: count the rows of every user table of ``database`` (at most
        :data:`MAX_ROW_COUNT_TABLES`); None counts them only with the default checks. ``count(*)`` reads every page,
        so a damaged table fails the drill.
    :param database: str, the database connected to for the checks and row counts. ``user``: str, the role.
    :param timeout: seconds (int/float) for start + recovery + promotion, and for each check statement.
    :param keep: bool, keep the scratch directory (and work files) for inspection; the server is stopped anyway.
    :param fetch_seconds: float or None, the caller's time to fetch/restore the base backup, added into
        ``rto_seconds``.
    :param settings: dict of further postgresql.conf settings for the drill instance (``shared_buffers``,
        ``huge_pages``, ``shared_preload_libraries``, ...); the ones the drill owns are refused.
    :param secrets: iterable of literal secrets to mask in messages and the log tail.
    :raises PgopsError: for an invalid option.
    """

    def __init__(self, datadir, restore_command, scratch_dir=None, bindir=None, server_user=None, port=None, env=None,
                 recovery_target=None, checks=None, row_counts=None, database='postgres', user='postgres', timeout=600,
                 keep=False, fetch_seconds=None, settings=None, secrets=()):
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
            if _inside(os.path.realpath(self.scratch_dir), self.datadir):
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
        self.fetch_seconds = None if fetch_seconds is None else float(fetch_seconds)
        self.settings = dict(settings or {})
        self.secrets = [s for s in secrets or () if s]
        self.secrets += [v for k, v in self.env.items() if _SECRET_ENV_NAME.search(k) and v]
        # Set by run():
        self.server = None
        self.work_dir = None
        self.own_work_dir = False
        self.socket_dir = None
        self.own_socket_dir = False
        self.log_file = None
        self.ctl = None
        self.pid = None
        self.log = None
        self.ran = False
        self.live_server = None  # a server found running on datadir, or one that would not stop: nothing is deleted

    # -- helpers -------------------------------------------------------------------------------------------

    def _redact(self, text):
        return redact(text, self.secrets)

    def _base_env(self, with_caller_env):
        env = dict((k, v) for k, v in os.environ.items() if not k.startswith('PG'))
        if with_caller_env:
            env.update(self.env)
        return env

    def _pg_ctl(self, args, timeout):
        cmd = self.server.command([os.path.join(self.bindir, 'pg_ctl')] + list(args))
        try:
            return subprocess.run(cmd, env=self._base_env(False), cwd='/', capture_output=True, text=True, timeout=timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return None

    def _postmaster_pid(self):
        """The PID in postmaster.pid, or None. Read only after the copied file was removed and the drill started."""
        return postmaster_pid(self.datadir)

    def _ours(self, pid):
        """True when ``pid`` is alive and is the drill's postmaster: its working directory is the data directory, or
        /proc cannot tell and the PID comes from the postmaster.pid the drill's own start wrote."""
        return pid_alive(pid) and _works_in(pid, self.datadir) is not False

    def _connect(self, database, timeout=5):
        return psycopg2.connect(host=self.socket_dir, port=self.port, user=self.user, dbname=database, connect_timeout=timeout,
                                application_name=APPLICATION_NAME, sslmode='disable',
                                options='-c statement_timeout=%d' % int(self.timeout * 1000))

    # -- phases --------------------------------------------------------------------------------------------

    def _prepare(self, result):
        info = check_data_directory(self.datadir)
        result['pg_version'] = info['pg_version']
        result['backup_label'] = info['backup_label']
        result['backup_timeline'] = info['start_timeline']
        result['start_wal_file'] = info['start_wal_file']
        if _major(info['pg_version']) < MIN_MAJOR:
            raise PgopsError('%s is PostgreSQL %s; the drill runner needs PostgreSQL %d or later (recovery.signal).'
                             % (self.datadir, info['pg_version'], MIN_MAJOR))
        running = postmaster_of(self.datadir)
        if running:
            self.live_server = running  # nothing of it is ours to stop or delete
            raise PgopsError('a server (PID %d) is running on %s: a drill needs a restored copy, never a live data directory.'
                             % (running, self.datadir))
        allowed = [self.datadir] + ([self.scratch_dir] if self.scratch_dir else [])
        for link, target in sorted(info['links'].items()):
            if target and not any(_inside(target, top) for top in allowed):
                raise PgopsError('%s/%s points to %s, outside the data directory%s: the drill would write there. Restore the '
                                 'tablespaces and WAL directory into the scratch area (barman-cloud-restore --tablespace '
                                 'NAME:LOCATION, pg_basebackup --tablespace-mapping / --waldir) and run the drill again.'
                                 % (self.datadir, link, target, ' and scratch_dir' if self.scratch_dir else ''))
        self.bindir = find_bindir(self.bindir, info['pg_version'])
        self.server = ServerUser(self.server_user_name, self.datadir)
        result['server_user'] = self.server.name
        if self.port is None:
            self.port = free_port()
        result['port'] = self.port

        # Work directory (log, hba file, socket directory): in scratch_dir when given, else a temporary one.
        if self.scratch_dir:
            self.server.chown(self.scratch_dir)
            os.chmod(self.scratch_dir, 0o700)
            self.work_dir = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=self.scratch_dir)
        else:
            self.work_dir = tempfile.mkdtemp(prefix=WORK_PREFIX)
            self.own_work_dir = True
        self.server.chown(self.work_dir)
        self.socket_dir = os.path.join(self.work_dir, SOCKET_DIR_NAME)
        if len(self.socket_dir) + len('/.s.PGSQL.%d' % self.port) > SOCKET_PATH_MAX:
            self.socket_dir = tempfile.mkdtemp(prefix=WORK_PREFIX + 'sock-')
            self.own_socket_dir = True
        else:
            os.mkdir(self.socket_dir, 0o700)
        self.server.chown(self.socket_dir)
        os.chmod(self.socket_dir, 0o700)
        # The data directory and the work directory become the server user's; their parents must let it in.
        self.server.require_traversable(os.path.dirname(self.datadir), 'datadir')
        self.server.require_traversable(self.work_dir, 'scratch area')
        self.server.require_traversable(self.socket_dir, 'socket directory')
        self.log_file = os.path.join(self.work_dir, LOG_NAME)
        result['log_file'] = self.log_file
        hba_file = os.path.join(self.work_dir, HBA_NAME)
        with open(hba_file, 'w', encoding='utf-8') as handle:
            handle.write(HBA_TEXT)
        os.chmod(hba_file, 0o600)
        self.server.chown(hba_file)
        with open(self.log_file, 'a', encoding='utf-8'):
            pass
        os.chmod(self.log_file, 0o600)
        self.server.chown(self.log_file)

        # The restored data directory: no copied lock file, archive recovery rather than standby mode (26.3.4).
        for name in ('postmaster.pid', 'standby.signal'):
            path = os.path.join(self.datadir, name)
            if os.path.lexists(path):
                os.unlink(path)
        wal_dir = os.path.join(self.datadir, 'pg_wal')
        if not os.path.lexists(wal_dir):
            os.mkdir(wal_dir, 0o700)  # some restores (wal-g without WAL) leave it out; the server needs it.
        with open(os.path.join(self.datadir, 'recovery.signal'), 'w', encoding='utf-8'):
            pass
        conf = os.path.join(self.datadir, 'postgresql.conf')
        if not os.path.exists(conf):
            # Debian-style clusters keep postgresql.conf outside the data directory; base backups then lack it.
            with open(conf, 'w', encoding='utf-8') as handle:
                handle.write('# written by the pgops.resilience restore drill: the restored data directory had none.\n')
        settings = drill_settings(info['pg_version'], self.port, self.socket_dir, hba_file, self.restore_command,
                                  self.recovery_target, self.settings, os.path.join(self.work_dir, PID_NAME))
        with open(os.path.join(self.datadir, 'postgresql.auto.conf'), 'a', encoding='utf-8') as handle:
            handle.write(render_settings(settings, 'appended %s' % isoformat_z(datetime.datetime.now(datetime.timezone.utc))))
        self.server.chown_tree(self.datadir)
        for link, target in info['links'].items():
            if target and os.path.isdir(target):
                self.server.chown_tree(target)
        os.chmod(self.datadir, 0o700)

    def _start(self):
        # -c on the postmaster's command line beats every configuration file (20.1.4): no file can point the server at
        # another data directory or turn archiving on.
        options = '-c data_directory=%s -c archive_mode=off' % shlex.quote(self.datadir)
        cmd = self.server.command([os.path.join(self.bindir, 'pg_ctl'), 'start', '-D', self.datadir, '-l', self.log_file, '-w',
                                   '-t', str(max(int(self.timeout), 1)), '-o', options])
        self.log = LogFollower(self.log_file)
        # Its own session, so that it can be stopped without a signal to anything else; the postmaster (which
        # pg_ctl starts in a session of its own) inherits the environment, and restore_command with it.
        self.ctl = subprocess.Popen(cmd, env=self._base_env(True), cwd='/', stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, start_new_session=True)

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
                        raise _phase_error('recovery', 'cannot connect to the drill instance as user %s to database %s: %s. '
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
                raise _phase_error('recovery', 'the promoted server stopped answering: %s' % ' '.join(str(exc).split()))
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
        # pg_ctl -w returns when the server is ready; it has nothing left to wait for.
        try:
            self.ctl.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _check_connection(self, conns, database):
        if database not in conns:
            conns[database] = self._connect(database)
            conns[database].set_session(readonly=True, autocommit=False)
        return conns[database]

    def _run_query(self, conns, database, query):
        """Run ``query`` in a read-only transaction of ``database``; return ``(value, error)``."""
        try:
            conn = self._check_connection(conns, database)
        except psycopg2.Error as exc:
            return None, 'cannot connect to database %s: %s' % (database, ' '.join(str(exc).split()))
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                rows = cur.fetchall() if cur.description is not None else []
                value = row_value(rows, cur.description)
            conn.rollback()
            return value, None
        except psycopg2.Error as exc:
            text = ' '.join(str(exc).split())
            try:
                conn.rollback()
            except psycopg2.Error:
                conns.pop(database).close()
            return None, text

    def _checks(self, result):
        conns = {}
        outcomes = result['checks']
        try:
            checks = self.checks
            if checks is None:
                checks = [dict(name='catalog', query='SELECT count(*) > 0 FROM pg_catalog.pg_class', expected=True, database=None)]
                value, error = self._run_query(conns, self.database,
                                               'SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname')
                if error:
                    checks.append(dict(name='databases', query='SELECT datname FROM pg_database WHERE datallowconn', expected=None,
                                       database=None))
                else:
                    names = [value] if isinstance(value, str) else [row[0] for row in (value or [])]
                    checks += [dict(name='connect %s' % name, query='SELECT current_database()', expected=name, database=name)
                               for name in names]
            for check in checks:
                database = check['database'] or self.database
                value, error = self._run_query(conns, database, check['query'])
                passed = error is None and (check['expected'] is None or values_match(value, check['expected']))
                outcomes.append(dict(name=check['name'], query=check['query'], database=database, expected=jsonable(check['expected']),
                                     value=jsonable(value), passed=passed, error=error))
            if self.row_counts:
                self._count_rows(conns, result)
        finally:
            for conn in conns.values():
                conn.close()
        failed = [c for c in outcomes if not c['passed']]
        if failed:
            parts = []
            for check in failed:
                where = '' if check['database'] == self.database else ' in database %s' % check['database']
                if check['error']:
                    parts.append('check %r (%s%s) failed: %s' % (check['name'], check['query'], where, check['error']))
                else:
                    parts.append('check %r (%s%s) returned %s, expected %s'
                                 % (check['name'], check['query'], where, _show(check['value']), _show(check['expected'])))
            raise _phase_error('checks', '%d of %d checks failed: %s' % (len(failed), len(outcomes), '; '.join(parts)))

    def _count_rows(self, conns, result):
        listing = ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                   "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1, 2 LIMIT %d" % (MAX_ROW_COUNT_TABLES + 1))
        tables, error = self._run_query(conns, self.database, listing)
        errors = []
        if error:
            errors.append(error)
            tables = []
        tables = tables or []  # two columns: always a list of rows
        result['row_counts_truncated'] = len(tables) > MAX_ROW_COUNT_TABLES
        for schema, table in tables[:MAX_ROW_COUNT_TABLES]:
            query = sql.SQL('SELECT count(*) FROM {}.{}').format(sql.Identifier(schema), sql.Identifier(table))
            value, error = self._run_query(conns, self.database, query)
            if error:
                errors.append('%s.%s: %s' % (schema, table, error))
            else:
                result['row_counts']['%s.%s' % (schema, table)] = jsonable(value)
        result['checks'].append(dict(
            name='row counts', query='SELECT count(*) FROM each user table of %s (%d table(s)%s)'
            % (self.database, min(len(tables), MAX_ROW_COUNT_TABLES), ', capped' if result['row_counts_truncated'] else ''),
            database=self.database, expected=None, value=len(result['row_counts']), passed=not errors,
            error='; '.join(errors) or None))

    def _stop(self):
        """Stop the server (fast, then immediate, then SIGKILL) and the pg_ctl start waiter. Returns a note or None."""
        note = None
        if self.ctl is None:
            return None  # never started: any postmaster.pid is the backup's copy, naming a process of another host
        if self.ctl.poll() is None:
            try:
                os.killpg(self.ctl.pid, signal.SIGTERM)
                self.ctl.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.ctl.pid, signal.SIGKILL)
                    self.ctl.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    note = 'pg_ctl start (PID %d) did not end' % self.ctl.pid
        if self.ctl.stdout is not None:
            self.ctl.stdout.close()
        pid = self._postmaster_pid() or self.pid
        if not pid or not self._ours(pid):
            return note
        done = self._pg_ctl(['stop', '-D', self.datadir, '-m', 'fast', '-w', '-t', str(STOP_TIMEOUT)], STOP_TIMEOUT + 30)
        if self._ours(pid):
            done = self._pg_ctl(['stop', '-D', self.datadir, '-m', 'immediate', '-w', '-t', '30'], 60)
        if self._ours(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            note = 'the server (PID %d) did not stop with pg_ctl stop -m fast or -m immediate%s; it was killed' % (
                pid, ': ' + ' '.join(((done.stdout or '') + (done.stderr or '')).split()) if done is not None else '')
        if pid_alive(pid):
            self.live_server = pid  # its files stay where they are
            note = 'the server (PID %d) on %s could not be stopped; stop it by hand and remove %s' % (
                pid, self.datadir, self.scratch_dir or self.work_dir)
        return note

    def _cleanup(self, keep):
        """Remove what the runner owns: a socket directory of its own outside the work directory (empty once the server
        stopped) always; unless ``keep``, scratch_dir (handed over) or else its own work directory."""
        removed = []
        targets = []
        if self.own_socket_dir and self.socket_dir:
            targets.append(self.socket_dir)
        if keep:
            pass
        elif self.scratch_dir:
            targets.append(self.scratch_dir)
        elif self.own_work_dir and self.work_dir:
            targets.append(self.work_dir)
        for path in targets:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def run(self):
        """Run the drill once: prepare, start, wait for promotion, check, stop, clean up.

        :returns: dict, the result described in the module docstring (``verdict='passed'``).
        :raises PgopsError: when any phase fails; ``details`` hold the same result with ``verdict='failed'``,
            ``phase`` and ``log_tail``. The server is stopped and the scratch area removed (unless ``keep``) first.
        """
        if self.ran:
            raise PgopsError('a Drill runs once; build a new one for another drill.')
        self.ran = True
        if psycopg2 is None:
            raise PgopsError('The psycopg2 Python library is required on the host that runs the drill: '
                             'pip install psycopg2-binary (or the distribution package python3-psycopg2).')
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
        error = None
        try:
            try:
                self._prepare(result)
            except OSError as exc:
                raise _phase_error('prepare', 'preparing %s for the drill failed: %s' % (self.datadir, exc))
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
            result['phase'] = 'stop'
        except PgopsError as exc:
            error = exc
        except (OSError, subprocess.SubprocessError, psycopg2.Error) as exc:
            error = _phase_error(result['phase'], '%s: %s' % (type(exc).__name__, ' '.join(str(exc).split())))
        finally:
            stop_began = time.monotonic()
            stop_note = self._stop()
            result['seconds']['stop'] = _seconds(stop_began, time.monotonic())
            if self.log is not None:
                self.log.poll()
            if self.log_file and os.path.exists(self.log_file):
                result['log_tail'] = self._redact(read_tail(self.log_file))
            removed = [] if self.live_server else self._cleanup(self.keep)
            if self.log_file and any(_inside(os.path.realpath(self.log_file), path) for path in removed):
                result['log_file'] = None
            result['seconds']['total'] = _seconds(began, time.monotonic())
        if error is None and stop_note:
            error = _phase_error('stop', stop_note)
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
    """Run one drill: ``Drill(datadir, restore_command, **options).run()``. See :class:`Drill` for the options
    and the module docstring for the result."""
    return Drill(datadir, restore_command, **options).run()
