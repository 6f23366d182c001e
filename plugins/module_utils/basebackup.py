# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical base backups of the reference runbook ``postgres-infra-setup.md``: the weekly
``basebackup-YYYYMMDD-HHMM.bundle.tar.gz``, "Bootstrap from Physical Backup", and the ``pgdata-wipe-full`` job.

Three entry points, one per module (plain Python over a connection and the file system; no Ansible):

- :func:`take_bundle` (``pg_basebackup_bundle``): ``pg_basebackup -Ft -z -X stream`` into a staging directory, then
  one bundle (:mod:`bundle`) holding ``base.tar.gz``, ``pg_wal.tar.gz`` and ``backup_manifest``, its manifest info
  recording the server, the timeline and the start / stop LSN; stored, verified, and only then retention.
- :func:`bootstrap` (``pg_bootstrap_basebackup``): verify a bundle, then wipe a data directory, extract the base
  backup into it, set up archive recovery (``recovery.signal``, ``restore_command``, an optional
  ``recovery_target_time``), start the server and wait until recovery has ended.
- :func:`wipe` (``pg_wipe_data_directory``): empty a data directory (and optionally the volume around it) and
  recreate it 0700 for the server user.

The rules followed are those of the PostgreSQL 15 documentation: "pg_basebackup" (tar format, ``-X stream``,
``backup_manifest``), 26.3.4 "Recovering Using a Continuous Archive Backup" (empty the data directory, restore the
files, ``pg_wal`` from the backup, ``restore_command``, ``recovery.signal``, start; the server ends recovery on its
own and the new timeline starts), 20.5.4 "Archive Recovery" (``%f``, ``%p``, ``%r``, ``%%`` in ``restore_command``),
20.5.5 "Recovery Target", 20.1.2 "Parameter Interaction via the Configuration File" (postgresql.auto.conf is read
last; the last value wins), 19.2 "Creating a Database Cluster" (the data directory is 0700 or 0750, owned by the
server's user), 19.3 "Starting the Database Server" (never as root), "pg_controldata" (the cluster state).

Safety rules, all three: nothing is deleted while a server runs on the data directory (a ``postmaster.pid`` whose
process is alive and works in that directory); nothing is deleted without ``confirm`` equal to the data directory;
a bootstrap verifies the bundle (its sha256, every member's sha256 and the ``backup_label``) BEFORE it deletes
anything, because a deletion happens only after what replaces it is verified; a new bundle is stored and verified
before retention deletes an old one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils import bundle, drill, pg_tools
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import (
    connect, connection_secrets, describe_server, libpq_environment, pg_errors, server_identity)

KIND = 'base-backup'
NAME_PREFIX = 'basebackup'
SUFFIX = '.bundle.tar.gz'
PATTERN = bundle.name_pattern(NAME_PREFIX, SUFFIX)
BASE_MEMBER = 'base.tar.gz'
WAL_MEMBER = 'pg_wal.tar.gz'
MANIFEST_MEMBER = 'backup_manifest'
OUTPUT_DIR = 'basebackup'  # pg_basebackup -D <staging>/basebackup; its files become the bundle's members
CHECKPOINTS = ('fast', 'spread')
CONF_MARK = '# --- pgops.resilience bootstrap from base backup ---'
DEFAULT_LOG_NAME = 'pgops-bootstrap.log'
CHUNK = 1024 * 1024  # bytes per read while extracting
LABEL_LIMIT = 64 * 1024  # a backup_label is a few hundred bytes
_RECOVERY_TARGETS = ('recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time',
                     'recovery_target_xid')
# The settings the bootstrap writes itself: ``settings`` may not name them (use the options).
OWNED_SETTINGS = frozenset(_RECOVERY_TARGETS + ('restore_command', 'recovery_target_inclusive', 'recovery_target_timeline',
                                                'recovery_target_action'))
# %-escapes of restore_command (PostgreSQL 15 docs, 20.5.4): the file name, the path, the restart point's file, a %.
_PERCENT_ESCAPE = re.compile(r'%(.?)', re.DOTALL)
_SETTING_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z')
_TARGET_LINE = re.compile(r'\s*recovery_target\w*\s*=')
# Directories whose other contents wipe's clear_parent must never remove: system directories, not a volume's mount.
SYSTEM_DIRECTORIES = frozenset(('/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/media', '/mnt',
                                '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/usr/local', '/var',
                                '/var/lib', '/var/tmp'))
# An ext2/3/4 file system's fsck directory at the root of a volume: left where it is.
KEPT_IN_PARENT = ('lost+found',)


# -- options ---------------------------------------------------------------------------------------------------


def bundle_argument_spec():
    """The options of ``pg_basebackup_bundle`` besides the connection options."""
    spec = dict(
        keep=dict(type='int', default=4),
        bindir=dict(type='path'),
        scratch_dir=dict(type='path'),
        checkpoint=dict(type='str', default='fast', choices=list(CHECKPOINTS)),
        max_rate=dict(type='str'),
        label=dict(type='str'),
        timeout=dict(type='int', default=6 * 3600),
    )
    spec.update(bundle.store_argument_spec())
    return spec


def bootstrap_argument_spec():
    """The options of ``pg_bootstrap_basebackup``."""
    spec = dict(
        data_directory=dict(type='path', required=True),
        confirm=dict(type='str'),
        bundle=dict(type='str', default=''),
        wal_archive_directory=dict(type='path'),
        restore_command=dict(type='str'),
        recovery_target_time=dict(type='str'),
        start=dict(type='bool', default=True),
        settings=dict(type='dict', default={}),
        bindir=dict(type='path'),
        server_user=dict(type='str'),
        timeout=dict(type='int', default=3600),
        scratch_dir=dict(type='path'),
        log_file=dict(type='path'),
    )
    spec.update(bundle.store_argument_spec())
    return spec


BOOTSTRAP_MUTUALLY_EXCLUSIVE = bundle.STORE_MUTUALLY_EXCLUSIVE + [('wal_archive_directory', 'restore_command')]
BOOTSTRAP_REQUIRED_ONE_OF = bundle.STORE_REQUIRED_ONE_OF + [('wal_archive_directory', 'restore_command')]


def wipe_argument_spec():
    """The options of ``pg_wipe_data_directory``."""
    return dict(
        data_directory=dict(type='path', required=True),
        confirm=dict(type='str'),
        clear_parent=dict(type='bool', default=False),
        server_user=dict(type='str'),
    )


# -- pure rules --------------------------------------------------------------------------------------------------


def data_directory_path(path):
    """``path`` made absolute and normal (no trailing slash, no ``..``).

    :raises PgopsError: for an empty path, ``/``, or a relative one (a job's working directory is no place to wipe).
    """
    if not path or not str(path).strip():
        raise PgopsError('data_directory is required: the PostgreSQL data directory (PGDATA), such as /var/lib/postgresql/data.')
    if not os.path.isabs(path):
        raise PgopsError('data_directory %r must be an absolute path, such as /var/lib/postgresql/data.' % (path,))
    normal = os.path.normpath(path)
    if normal == os.sep:
        raise PgopsError('data_directory is /, which is never a data directory; give PGDATA, such as /var/lib/postgresql/data.')
    return normal


def check_confirm(data_directory, confirm, option='confirm'):
    """Refuse unless ``confirm`` names the same directory as ``data_directory`` (both normalised: a trailing slash
    does not matter, another spelling of the path does).

    :raises PgopsError: saying what to set ``option`` to; nothing has been touched.
    """
    wanted = data_directory_path(data_directory)
    if confirm is None or not str(confirm).strip():
        raise PgopsError('Refusing to delete the contents of %s without confirmation: set %s to exactly %s. Nothing was changed.'
                         % (wanted, option, wanted))
    given = str(confirm)
    if not os.path.isabs(given) or os.path.normpath(given) != wanted:
        raise PgopsError('Refusing to delete the contents of %s: %s is %r, not the data directory. Set %s to exactly %s. '
                         'Nothing was changed.' % (wanted, option, given, option, wanted))
    return wanted


def archive_restore_command(directory):
    """The ``restore_command`` that copies WAL files from the directory ``directory`` (PostgreSQL 15 docs, 26.3.4:
    ``cp /mnt/server/archivedir/%f "%p"``).

    The directory is shell-quoted (the server runs the command with ``sh -c``), and every ``%`` in it is doubled,
    since the server replaces ``%f``, ``%p``, ``%r`` and ``%%`` anywhere in the command (20.5.4).

    :param directory: str, an absolute path.
    :returns: str.
    :raises PgopsError: for a relative path, or one with a line break (a configuration line cannot hold it).
    """
    if not directory or not os.path.isabs(directory):
        raise PgopsError('wal_archive_directory %r must be an absolute path: the directory the server copies WAL files '
                         'from.' % (directory,))
    if any(c in directory for c in '\n\r\0'):
        raise PgopsError('wal_archive_directory has a line break (or NUL), which restore_command cannot hold.')
    quoted = shlex.quote(os.path.normpath(directory)).replace('%', '%%')
    return 'cp %s/%%f "%%p"' % quoted


def validate_restore_command(command):
    """Check a ``restore_command`` given verbatim: it must name ``%f`` and ``%p``, and every other ``%`` must be one
    of the server's escapes (``%r``, ``%%``), since the server passes an unknown one through unchanged, which is
    never what was meant.

    :returns: str, the command.
    :raises PgopsError: naming the problem.
    """
    if not isinstance(command, str) or not command.strip():
        raise PgopsError('restore_command is empty: give the shell command that copies WAL file %f to %p.')
    escapes = [m.group(1) for m in _PERCENT_ESCAPE.finditer(command)]
    unknown = sorted(set(e for e in escapes if e not in ('f', 'p', 'r', '%')))
    if unknown:
        raise PgopsError('restore_command %r has %s: the server only replaces %%f, %%p, %%r and %%%%. Write %%%% for a '
                         'literal %%.' % (command, ', '.join(repr('%' + e) for e in unknown)))
    if 'f' not in escapes or 'p' not in escapes:
        raise PgopsError('restore_command %r must contain %%f (the WAL file name) and %%p (where to copy it).' % command)
    drill.conf_literal('restore_command', command)
    return command


def recovery_settings(restore_command, recovery_target=None, extra=None):
    """The settings a bootstrap appends to ``postgresql.auto.conf``, in order: ``extra`` first, then the recovery
    settings, so that they win over anything earlier (the last value of a setting wins, 20.1.2).

    Every kind of recovery target is emptied before the chosen one is set: naming two kinds is an error ("multiple
    recovery targets specified"), and one left over in the restored configuration would stop the replay early.

    :param restore_command: str (see :func:`archive_restore_command`, :func:`validate_restore_command`).
    :param recovery_target: None or the output of :func:`drill.normalize_recovery_target` with ``time``.
    :param extra: dict of further settings (``port``, ``archive_mode``...), names the bootstrap owns excluded.
    :returns: list of ``(name, value)``.
    :raises PgopsError: for a malformed or owned setting name, or a value a configuration line cannot hold.
    """
    settings = []
    for name, value in sorted((extra or {}).items()):
        if not _SETTING_NAME.match(str(name)):
            raise PgopsError('settings: %r is not a configuration parameter name.' % (name,))
        if str(name).lower() in OWNED_SETTINGS:
            raise PgopsError('settings: %s is written by the bootstrap itself; use wal_archive_directory / restore_command '
                             'and recovery_target_time instead.' % name)
        if isinstance(value, (dict, list)):
            raise PgopsError('settings: %s must be a single value, not %s.' % (name, type(value).__name__))
        settings.append((str(name), value))
    settings.append(('restore_command', restore_command))
    target = recovery_target or {}
    chosen = [('recovery_target_time', target['time'])] if target.get('time') else []
    settings += [(name, '') for name in _RECOVERY_TARGETS if name not in dict(chosen)]
    settings += chosen
    if chosen:
        settings += [('recovery_target_inclusive', target.get('inclusive', True)), ('recovery_target_action', 'promote')]
    settings.append(('recovery_target_timeline', target.get('timeline', 'latest')))
    for name, value in settings:
        drill.conf_literal(name, value)
    return settings


def render_recovery_settings(settings, note=None):
    """The block appended to ``postgresql.auto.conf``: a marked comment, then ``name = literal`` lines.

    :param settings: list of ``(name, value)`` from :func:`recovery_settings`.
    :param note: optional str for the header (such as the bundle's name).
    """
    lines = [
        '',
        CONF_MARK + (' ' + note if note else ''),
        '# Archive recovery from a base backup (PostgreSQL 15 docs, 26.3.4). postgresql.auto.conf is read last and the',
        '# last value of a setting wins (20.1.2). The recovery_target lines are removed once recovery has ended.',
    ]
    lines += ['%s = %s' % (name, drill.conf_literal(name, value)) for name, value in settings]
    return '\n'.join(lines) + '\n'


def without_recovery_targets(text):
    """``text`` (a postgresql.auto.conf) without the ``recovery_target*`` lines of the bootstrap's block, so that a
    base backup taken of the new server later does not carry a target from the past (which would make its own
    recovery stop before its consistent point). Lines before the block are left alone."""
    head, mark, block = text.partition(CONF_MARK)
    if not mark:
        return text
    kept = [line for line in block.split('\n') if not _TARGET_LINE.match(line)]
    return head + mark + '\n'.join(kept)


def replication_problems(facts):
    """Why ``pg_basebackup -X stream`` would be refused, from the server's settings and the role's attributes
    (PostgreSQL 15 docs, "pg_basebackup": a REPLICATION role or a superuser, ``max_wal_senders`` with two free
    senders for ``-X stream``, ``wal_level`` replica or logical). pg_hba.conf's ``replication`` lines cannot be
    seen from SQL and are not checked.

    :param facts: dict with ``user``, ``superuser``, ``replication`` (bools), ``max_wal_senders``,
        ``wal_senders_in_use`` (ints), ``wal_level`` (str).
    :returns: list of str (empty when nothing is wrong).
    """
    problems = []
    if not (facts['superuser'] or facts['replication']):
        problems.append('role %s has neither REPLICATION nor SUPERUSER (ALTER ROLE %s REPLICATION)' % (facts['user'], facts['user']))
    free = facts['max_wal_senders'] - facts['wal_senders_in_use']
    if free < 2:
        problems.append('max_wal_senders is %d with %d in use; pg_basebackup -X stream needs 2 free WAL senders'
                        % (facts['max_wal_senders'], facts['wal_senders_in_use']))
    if facts['wal_level'] == 'minimal':
        problems.append('wal_level is minimal; a base backup needs replica or logical')
    return problems


def basebackup_command(program, target, label, checkpoint='fast', max_rate=None):
    """The ``pg_basebackup`` argument list: tar format, gzip, WAL streamed alongside (``base.tar.gz``,
    ``pg_wal.tar.gz``, ``backup_manifest`` in ``target``). No connection option: those come from the environment
    (:func:`postgres.libpq_environment`); ``--no-password`` so that a missing password fails instead of prompting."""
    if checkpoint not in CHECKPOINTS:
        raise PgopsError('checkpoint must be fast or spread, not %r.' % (checkpoint,))
    cmd = [program, '--pgdata', target, '--format', 'tar', '--gzip', '--wal-method', 'stream', '--checkpoint', checkpoint,
           '--label', label, '--no-password']
    if max_rate:
        cmd += ['--max-rate', str(max_rate)]
    return cmd


def bundle_time(name):
    """The ``YYYYMMDD-HHMM`` of a bundle name (for retention previews)."""
    match = PATTERN.match(name)
    return match.group(1) if match else ''


# -- reading backups ---------------------------------------------------------------------------------------------


def read_tar_member(path, name, limit=LABEL_LIMIT):
    """The bytes of member ``name`` of the (gzip) tar ``path``, reading up to that member, or None.

    ``backup_label`` is the first member of a pg_basebackup base tar, so finding it reads a few kilobytes.
    """
    # 'r:*', not the stream mode 'r|*': pg_basebackup writes pg_wal.tar.gz by seeking back to finish each member,
    # which leaves a gzip stream only a seekable reader (GzipFile) reads correctly.
    with tarfile.open(path, mode='r:*') as tar:
        for member in tar:
            if _member_name(member) == name:
                if not member.isfile():
                    return None
                return tar.extractfile(member).read(limit)
    return None


def _member_name(member):
    name = member.name
    while name.startswith('./'):
        name = name[2:]
    return name


def backup_facts(directory):
    """What a pg_basebackup tar-format output says of itself: from ``backup_manifest`` (``WAL-Ranges``) and the
    ``backup_label`` inside ``base.tar.gz``.

    :param directory: str, holding ``base.tar.gz`` (and usually ``pg_wal.tar.gz``, ``backup_manifest``).
    :returns: dict: ``start_lsn``, ``stop_lsn`` (None without a manifest), ``timeline``, ``start_wal_file``,
        ``checkpoint_lsn``, ``start_time``, ``label``, ``backup_from``, ``tablespaces`` (names of further tar files),
        ``members`` ({name: bytes}).
    :raises PgopsError: when ``base.tar.gz`` or its ``backup_label`` is missing.
    """
    base = os.path.join(directory, BASE_MEMBER)
    if not os.path.isfile(base):
        raise PgopsError('%s holds no %s: not a pg_basebackup tar-format backup.' % (directory, BASE_MEMBER))
    try:
        label = read_tar_member(base, 'backup_label')
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PgopsError('%s cannot be read as a gzip tar archive: %s.' % (base, exc))
    if label is None:
        raise PgopsError('%s has no backup_label: not the base archive of a base backup.' % base)
    derived = drill.parse_backup_label(label.decode('utf-8', 'replace'))['derived']
    facts = dict(start_lsn=derived['start_lsn'], stop_lsn=None, timeline=derived['start_timeline'],
                 start_wal_file=derived['start_wal_file'], checkpoint_lsn=derived['checkpoint_lsn'],
                 start_time=derived['start_time'], label=derived['label'], backup_from=derived['backup_from'])
    manifest = os.path.join(directory, MANIFEST_MEMBER)
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding='utf-8') as handle:
                ranges = json.load(handle).get('WAL-Ranges') or []
        except (OSError, ValueError) as exc:
            raise PgopsError('%s is not a readable backup manifest: %s.' % (manifest, exc))
        if ranges:
            facts['stop_lsn'] = ranges[-1].get('End-LSN')
            facts['timeline'] = ranges[-1].get('Timeline', facts['timeline'])
    names = sorted(os.listdir(directory))
    facts['tablespaces'] = [n for n in names if n.endswith('.tar.gz') and n not in (BASE_MEMBER, WAL_MEMBER)]
    facts['members'] = dict((n, os.path.getsize(os.path.join(directory, n))) for n in names)
    return facts


def _server_facts(conn):
    with pg_errors('reading the server and role settings'), conn.cursor() as cur:
        cur.execute("SELECT current_user, r.rolsuper, r.rolreplication, current_setting('max_wal_senders')::int,"
                    " (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, current_setting('wal_level'),"
                    " current_setting('server_version_num')::int"
                    " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user")
        user, superuser, replication, senders, in_use, wal_level, version_num = cur.fetchone()
        identity = server_identity(conn)
    return dict(user=user, superuser=superuser, replication=replication, max_wal_senders=senders, wal_senders_in_use=in_use,
                wal_level=wal_level, server_version=identity['server_version'], server_version_num=version_num,
                server_major=version_num // 10000, system_identifier=identity['system_identifier'],
                is_primary=identity['is_primary'])


# -- pg_basebackup_bundle ----------------------------------------------------------------------------------------


def take_bundle(params, check_mode=False):
    """Take a base backup with ``pg_basebackup`` into a new bundle, store it, verify it, then delete all but the
    newest ``keep`` bundles.

    :param params: dict, the module's parameters (connection options plus :func:`bundle_argument_spec`).
    :param check_mode: bool: connect, check that the server allows the backup (:func:`replication_problems`), find
        pg_basebackup, and report the name and what retention would delete; nothing is run or written.
    :returns: dict: ``changed``, ``bundle`` (``name``, ``url``, ``bytes``, ``sha256``), ``server`` (password-free
        description), ``server_version``, ``system_identifier``, ``timeline``, ``start_lsn``, ``stop_lsn``,
        ``start_wal_file``, ``label``, ``members`` ({name: bytes}), ``pg_basebackup`` (path, major), ``seconds`` (dict
        of phase -> seconds: ``basebackup``, ``pack``, ``store``, ``total``), ``deleted`` (names, oldest first),
        ``warnings`` (stderr lines of a successful pg_basebackup).
    :raises PgopsError: for a failed connection, a failing pg_basebackup (its stderr), a name already taken this
        minute, a failed write or upload; then no partial file remains and no bundle is deleted.
    """
    began = time.monotonic()
    keep = params['keep']
    if keep < 0:
        raise PgopsError('keep must be 0 (keep every bundle) or the number of newest bundles to keep, not %d.' % keep)
    store = bundle.BundleStore.from_params(params)
    conn = connect(params)
    try:
        facts = _server_facts(conn)
    finally:
        conn.close()
    program = pg_tools.find_client_program('pg_basebackup', params.get('bindir'), facts['server_major'])
    name = bundle.bundle_name(NAME_PREFIX, suffix=SUFFIX)
    if store.exists(name):
        raise PgopsError('bundle %s already exists in %s: a base backup already ran this minute. Wait a minute, or keep '
                         'the existing one.' % (name, store.location))
    label = params.get('label') or 'pgops.resilience %s' % name[:-len(SUFFIX)]
    result = dict(changed=True, bundle=dict(name=name, url=store.url(name)), server=describe_server(params),
                  server_version=facts['server_version'], system_identifier=facts['system_identifier'], label=label,
                  pg_basebackup=dict(path=program, major=pg_tools.program_major(program)), warnings=[], seconds={})
    if check_mode:
        problems = replication_problems(facts)
        if problems:
            raise PgopsError('pg_basebackup would be refused by %s: %s.' % (result['server'], '; '.join(problems)), **result)
        existing = store.list(PATTERN) + [dict(name=name, time=bundle_time(name))]
        result['deleted'] = [b['name'] for b in bundle.expired_bundles(existing, keep)]
        return result
    staging = tempfile.mkdtemp(prefix=bundle.PARTIAL_PREFIX + name + '-', dir=params.get('scratch_dir') or store.staging_directory())
    packed = None
    done = False
    try:
        target = os.path.join(staging, OUTPUT_DIR)
        started = time.monotonic()
        cmd = basebackup_command(program, target, label, params['checkpoint'], params.get('max_rate'))
        stderr = pg_tools.run_program(cmd, libpq_environment(params), 'pg_basebackup', connection_secrets(params),
                                      params.get('timeout') or None)
        result['warnings'] = pg_tools.warnings_of(stderr)
        result['seconds']['basebackup'] = round(time.monotonic() - started, 3)
        backup = backup_facts(target)
        info = dict(server_version=facts['server_version'], server_version_num=facts['server_version_num'],
                    server_major=facts['server_major'], system_identifier=facts['system_identifier'],
                    backup_from='primary' if facts['is_primary'] else 'standby', pg_basebackup=os.path.basename(program),
                    pg_basebackup_major=result['pg_basebackup']['major'], bytes=sum(backup['members'].values()))
        info.update((k, backup[k]) for k in ('timeline', 'start_lsn', 'stop_lsn', 'start_wal_file', 'checkpoint_lsn',
                                             'start_time', 'label', 'tablespaces'))
        started = time.monotonic()
        # A directory store: packed in place (renamed when complete). S3: packed in staging, uploaded, removed with it.
        packed = bundle.pack(target, os.path.join(store.staging_directory(staging), name), KIND, info)
        result['seconds']['pack'] = round(time.monotonic() - started, 3)
        started = time.monotonic()
        stored = store.store(packed)  # read back (a directory) or size-checked (S3) before retention may follow it
        result['seconds']['store'] = round(time.monotonic() - started, 3)
        done = True
    except OSError as exc:
        raise PgopsError('base backup into %s failed: %s. Nothing was stored and no bundle was deleted.' % (store.location, exc))
    except PgopsError as exc:
        exc.msg = exc.msg.rstrip('.') + '. Nothing was stored and no bundle was deleted.'
        raise
    finally:
        if not done and packed is not None and store.is_local:
            with contextlib.suppress(PgopsError, OSError):
                store.delete(name)  # ours (the name was free): a bundle that failed its check must not count
        shutil.rmtree(staging, ignore_errors=True)
    result['bundle'] = stored
    result.update((k, backup[k]) for k in ('timeline', 'start_lsn', 'stop_lsn', 'start_wal_file', 'members'))
    # Only now, with the new bundle stored and verified, may an old one go.
    result['deleted'] = store.apply_retention(PATTERN, keep)
    result['seconds']['total'] = round(time.monotonic() - began, 3)
    return result


# -- the data directory ------------------------------------------------------------------------------------------


def refuse_running_server(datadir):
    """Refuse when a server runs on ``datadir``: its ``postmaster.pid`` names a live process working in it (or one
    whose working directory cannot be seen: better refuse than guess).

    :raises PgopsError: naming the PID and what to do.
    """
    pid = drill.postmaster_of(datadir)
    if pid:
        raise PgopsError('a PostgreSQL server (PID %d) is running on %s: stop it first (pg_ctl stop -D %s, or scale its '
                         'Deployment to 0). Nothing was changed.' % (pid, datadir, datadir))
    pid = drill.postmaster_of(datadir, unknown_is_live=True)
    if pid:
        raise PgopsError('%s/postmaster.pid names PID %d, which is alive, but this process may not see whether it works in '
                         '%s, so a server may be running on it. Stop it first; if none runs there (the file was left by a '
                         'server on another host or pod), remove %s/postmaster.pid and run again. Nothing was changed.'
                         % (datadir, pid, datadir, datadir))


def _entry_bytes(path):
    """Bytes of the files under ``path`` (``lstat`` sizes; links are not followed)."""
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        return info.st_size
    total = 0
    for top, dirs, files in os.walk(path):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(top, name)).st_size
    return total


def _entry_type(path):
    mode = os.lstat(path).st_mode
    return 'link' if stat.S_ISLNK(mode) else 'directory' if stat.S_ISDIR(mode) else 'file' if stat.S_ISREG(mode) else 'other'


def directory_listing(path, exclude=()):
    """The entries of directory ``path`` with their sizes: a list (sorted by name) of dicts ``{'name', 'type'
    ('directory', 'file', 'link', 'other'), 'bytes'}``; ``[]`` when ``path`` does not exist."""
    if not os.path.isdir(path):
        return []
    return [dict(name=name, type=_entry_type(os.path.join(path, name)), bytes=_entry_bytes(os.path.join(path, name)))
            for name in sorted(os.listdir(path)) if name not in exclude]


def _remove(path):
    """Remove ``path`` (a file, a link, or a directory tree, links never followed).

    :raises PgopsError: naming what could not be removed.
    """
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except OSError as exc:
        raise PgopsError('cannot remove %s: %s. Remove it by hand (as the owner of the volume) and run again.' % (path, exc))


def refuse_mount_points(path, keep=()):
    """Refuse when an entry of directory ``path`` (but the names in ``keep``) is a mount point: another volume is
    never emptied as part of this one. Checked before anything is removed.

    :raises PgopsError: naming the mount points.
    """
    if not os.path.isdir(path):
        return
    mounts = [os.path.join(path, n) for n in sorted(os.listdir(path))
              if n not in keep and not os.path.islink(os.path.join(path, n)) and os.path.ismount(os.path.join(path, n))]
    if mounts:
        raise PgopsError('%s: mount point(s) %s, another volume, would be emptied. Unmount them (or remove them from the '
                         'pod spec) first. Nothing was changed.' % (path, ', '.join(mounts)))


def empty_directory(path, keep=()):
    """Remove every entry of directory ``path`` except the names in ``keep``; returns the names removed.

    :raises PgopsError: for a mount point among them (nothing removed then, see :func:`refuse_mount_points`), or an
        entry that cannot be removed.
    """
    refuse_mount_points(path, keep)
    removed = []
    for name in sorted(os.listdir(path)):
        if name not in keep:
            _remove(os.path.join(path, name))
            removed.append(name)
    return removed


def _refuse_link(path, option):
    if os.path.islink(path):
        raise PgopsError('%s %s is a symbolic link; give the directory it points to (%s).' % (option, path, os.path.realpath(path)))


def _owned_0700(path, server):
    info = os.stat(path)
    return stat.S_IMODE(info.st_mode) == 0o700 and (not server.as_root or (info.st_uid, info.st_gid) == (server.uid, server.gid))


def _make_data_directory(path, server):
    """Create (or keep) ``path`` as an empty-ready data directory: 0700, owned by the server user (19.2)."""
    if not os.path.isdir(path):
        os.mkdir(path, 0o700)
    server.chown(path)
    os.chmod(path, 0o700)


def _server_user(name, datadir, runs_server):
    """:class:`drill.ServerUser` for ``datadir`` (or for its parent while it does not exist yet): one that can run
    the server (``runs_server``), else one that only receives the files (no passwd entry or runuser needed)."""
    path = datadir if os.path.isdir(datadir) else os.path.dirname(datadir)
    return drill.ServerUser(name, path) if runs_server else drill.ServerUser.file_owner(name, path)


# -- pg_wipe_data_directory --------------------------------------------------------------------------------------


def check_clear_parent(parent):
    """Refuse a parent directory that is a system directory rather than a volume's mount point.

    :raises PgopsError: naming it.
    """
    if os.path.normpath(parent) in SYSTEM_DIRECTORIES:
        raise PgopsError('clear_parent would empty %s, a system directory. It is meant for the mount point of the data '
                         'volume (such as /var/lib/postgresql with PGDATA /var/lib/postgresql/data). Nothing was changed.'
                         % parent)


def wipe(params, check_mode=False):
    """Empty a data directory (the runbook's ``pgdata-wipe-full`` job) and recreate it 0700 for the server user.

    With ``clear_parent`` everything else in the parent directory (the volume's mount point, where the runbook mounts
    the PVC) goes too, except ``lost+found``; the parent itself stays.

    :param params: dict with ``data_directory``, ``confirm``, ``clear_parent``, ``server_user``.
    :param check_mode: bool: report what would be removed, remove nothing.
    :returns: dict: ``changed``, ``data_directory``, ``parent``, ``before`` and ``after`` (``{'data_directory':
        listing, 'parent': listing}``, see :func:`directory_listing`; ``parent`` holds the other entries of the
        parent, only with ``clear_parent``), ``removed`` (paths), ``bytes_removed``, ``server_user``.
    :raises PgopsError: without the right ``confirm``, while a server runs there, for a system directory as parent,
        or when something cannot be removed.
    """
    datadir = check_confirm(params['data_directory'], params.get('confirm'))
    parent = os.path.dirname(datadir)
    clear_parent = bool(params.get('clear_parent'))
    _refuse_link(datadir, 'data_directory')
    if os.path.exists(datadir) and not os.path.isdir(datadir):
        raise PgopsError('data_directory %s exists and is not a directory. Nothing was changed.' % datadir)
    if not os.path.isdir(parent):
        raise PgopsError('the parent directory %s of data_directory does not exist: mount the data volume first.' % parent)
    if clear_parent:
        check_clear_parent(parent)
    refuse_running_server(datadir)
    server = _server_user(params.get('server_user'), datadir, False)
    exclude = (os.path.basename(datadir),) + KEPT_IN_PARENT

    def listings():
        found = dict(data_directory=directory_listing(datadir))
        if clear_parent:
            found['parent'] = directory_listing(parent, exclude)
        return found

    refuse_mount_points(datadir)
    if clear_parent:
        refuse_mount_points(parent, exclude)
    before = listings()
    removed = [os.path.join(datadir, e['name']) for e in before['data_directory']]
    removed += [os.path.join(parent, e['name']) for e in before.get('parent', [])]
    result = dict(data_directory=datadir, parent=parent, clear_parent=clear_parent, server_user=server.name, before=before,
                  removed=removed, bytes_removed=sum(e['bytes'] for entries in before.values() for e in entries))
    result['changed'] = bool(removed) or not os.path.isdir(datadir) or not _owned_0700(datadir, server)
    if check_mode:
        result['after'] = dict((k, []) for k in before)
        return result
    if clear_parent:
        empty_directory(parent, keep=exclude)
    if os.path.isdir(datadir):
        empty_directory(datadir)
    _make_data_directory(datadir, server)
    result['after'] = listings()
    return result


# -- pg_bootstrap_basebackup -------------------------------------------------------------------------------------


def _restore_command(params):
    if params.get('restore_command'):
        return validate_restore_command(params['restore_command'])
    if params.get('wal_archive_directory'):
        return archive_restore_command(params['wal_archive_directory'])
    raise PgopsError('give wal_archive_directory (the WAL archive the server copies from) or restore_command.')


def _safe_name(member, dest):
    """Where a base backup tar member goes under ``dest``; refuses anything else than files and directories inside."""
    name = _member_name(member)
    parts = [p for p in name.split('/') if p not in ('', '.')]
    if name.startswith('/') or '..' in parts:
        raise PgopsError('member %r would be written outside the data directory' % member.name)
    if member.issym() or member.islnk():
        raise PgopsError('member %r is a link (%s): the backup has tablespaces or links, which a bootstrap does not '
                         'restore; restore it by hand (PostgreSQL 15 docs, 26.3.4)' % (member.name, member.linkname))
    if not (member.isfile() or member.isdir()):
        raise PgopsError('member %r is a special file; a base backup holds only files and directories' % member.name)
    return os.path.join(dest, *parts) if parts else dest


def extract_base_tar(path, dest):
    """Extract a pg_basebackup tar (``base.tar.gz`` or ``pg_wal.tar.gz``) into the directory ``dest``, refusing
    links, special files and names outside ``dest``. Directories become 0700 (0750 kept when the backup has group
    access), files 0600 / 0640, owned by this process (the caller chowns the tree).

    :returns: dict ``{'files': int, 'bytes': int}``.
    :raises PgopsError: naming the archive and the member.
    """
    files = total = 0
    try:
        with tarfile.open(path, mode='r:*') as tar:  # seekable: see read_tar_member
            for member in tar:
                target = _safe_name(member, dest)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    os.chmod(target, 0o700 | (member.mode & 0o050))
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                source = tar.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
                with os.fdopen(fd, 'wb') as out:
                    shutil.copyfileobj(source, out, CHUNK)
                os.chmod(target, 0o600 | (member.mode & 0o040))
                files += 1
                total += member.size
    except PgopsError as exc:
        raise PgopsError('%s: %s' % (os.path.basename(path), exc.msg))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PgopsError('%s could not be extracted into %s: %s' % (os.path.basename(path), dest, exc))
    return dict(files=files, bytes=total)


def _bundle_pg_version(manifest, members_dir):
    """The major version of the backed-up server: the bundle's manifest info, else PG_VERSION in the base tar."""
    major = (manifest.get('info') or {}).get('server_major')
    if major:
        return str(major)
    data = read_tar_member(os.path.join(members_dir, BASE_MEMBER), 'PG_VERSION', 64)
    if not data:
        raise PgopsError('the base backup has no PG_VERSION; it is not a PostgreSQL data directory.')
    return data.decode('ascii', 'replace').strip()


def _verify_bundle(local, members_dir):
    """extract_verified plus what a bootstrap needs of the members; returns (manifest, label facts, pg_version)."""
    manifest = bundle.extract_verified(local, members_dir)
    name = os.path.basename(local)
    if manifest.get('kind') != KIND:
        raise PgopsError('bundle %s holds a %s, not a base backup.' % (name, manifest.get('kind')))
    members = manifest['members']
    if BASE_MEMBER not in members:
        raise PgopsError('bundle %s has no %s.' % (name, BASE_MEMBER))
    others = sorted(m for m in members if m not in (BASE_MEMBER, WAL_MEMBER, MANIFEST_MEMBER))
    if others:
        raise PgopsError('bundle %s holds %s besides the base and WAL archives: tablespaces, which a bootstrap does not '
                         'restore. Restore it by hand (PostgreSQL 15 docs, 26.3.4).' % (name, ', '.join(others)))
    label = backup_facts(members_dir)
    return manifest, label, _bundle_pg_version(manifest, members_dir)


def _controldata(bindir, datadir, server):
    """``pg_controldata`` of ``datadir`` as a dict (English labels), or None when it cannot be read right now."""
    cmd = server.command([os.path.join(bindir, 'pg_controldata'), '-D', datadir])
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith('PG'))
    env.update(LC_ALL='C', LANG='C')
    try:
        out = subprocess.run(cmd, env=env, cwd='/', capture_output=True, text=True, timeout=30, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    values = {}
    for line in out.stdout.splitlines():
        key, sep, value = line.partition(':')
        if sep:
            values[key.strip()] = value.strip()
    return values


def recovery_ended(control, backup_timeline):
    """Whether archive recovery of a restored base backup has ended, from its ``pg_controldata`` output.

    The copy of ``pg_control`` in a base backup already says ``in production`` (the state of the server it was taken
    from), so that state alone means nothing until the server has written its own. Archive recovery always ends on a
    new timeline, and its end-of-recovery checkpoint is written on it before the state becomes ``in production``
    (``StartupXLOG``, PostgreSQL 15), at the very moment ``pg_is_in_recovery()`` turns false. Restartpoints during
    recovery may carry a later timeline of the archive, but then the state is ``in archive recovery``.

    :param control: dict of pg_controldata's labels (``Database cluster state``, ``Latest checkpoint's TimeLineID``).
    :param backup_timeline: int, the newest timeline of the backup (its manifest's WAL ranges, or backup_label's).
    """
    try:
        timeline = int(control.get("Latest checkpoint's TimeLineID") or 0)
    except ValueError:
        return False
    return control.get('Database cluster state') == 'in production' and timeline > int(backup_timeline or 0)


def bootstrap(params, check_mode=False):
    """Replace a data directory with a base backup bundle and recover it from the WAL archive.

    Order, so that nothing is lost to a mistake: the options and the data directory are checked (confirm, no
    running server, the server programs and user); the bundle is fetched and verified into a scratch directory; only
    then is the data directory emptied and the base backup extracted into it (``base.tar.gz``, ``pg_wal.tar.gz`` into
    ``pg_wal``); ``recovery.signal`` and the recovery settings (:func:`recovery_settings`) are written; the tree is
    given to the server user. With ``start`` the server is started with ``pg_ctl`` as that user, and the call
    returns once the control file says recovery has ended (:func:`recovery_ended`: the moment ``pg_is_in_recovery()``
    turns false; read with ``pg_controldata``, so no role or password is needed), then the ``recovery_target*`` lines
    are removed again.

    :param params: dict, the options of :func:`bootstrap_argument_spec`.
    :param check_mode: bool: verify the bundle and report what would be wiped; change nothing.
    :returns: dict: ``changed``, ``data_directory``, ``bundle`` (``name``, ``url``, ``bytes``, ``created``, ``info``),
        ``wiped`` (bool), ``removed`` (the data directory's entries before, see :func:`directory_listing`),
        ``restore_command``, ``recovery_target_time``, ``settings`` (the lines written), ``backup`` (``start_lsn``,
        ``timeline``, ``start_wal_file``, ``label``), ``restored`` (``files``, ``bytes``), ``started``, ``server_user``,
        ``pid``, ``timeline`` (the new one), ``recovered_to_lsn``, ``recovery`` (what the log and control file say),
        ``seconds`` (``verify``, ``restore``, ``recovery``, ``total``), ``log_file``, ``log_tail`` (on failure).
    :raises PgopsError: with ``wiped`` in its details: False when it failed before anything was deleted.
    """
    began = time.monotonic()
    details = dict(wiped=False)
    try:
        details['data_directory'] = datadir = check_confirm(params['data_directory'], params.get('confirm'))
        return _bootstrap(params, check_mode, datadir, details, began)
    except PgopsError as exc:
        for key, value in details.items():
            exc.details.setdefault(key, value)
        exc.details['changed'] = exc.details['wiped']
        raise


def _bootstrap(params, check_mode, datadir, details, began):  # pylint: disable=too-many-locals,too-many-statements
    restore_command = _restore_command(params)
    target_time = (params.get('recovery_target_time') or '').strip() or None
    target = drill.normalize_recovery_target({'time': target_time}) if target_time else None
    settings = recovery_settings(restore_command, target, params.get('settings'))
    start = params.get('start', True)
    timeout = params.get('timeout') or 3600
    if timeout <= 0:
        raise PgopsError('timeout must be more than 0 seconds.')
    _refuse_link(datadir, 'data_directory')
    if os.path.exists(datadir) and not os.path.isdir(datadir):
        raise PgopsError('data_directory %s exists and is not a directory.' % datadir)
    parent = os.path.dirname(datadir)
    if not os.path.isdir(parent):
        raise PgopsError('the parent directory %s of data_directory does not exist: mount the data volume first.' % parent)
    refuse_running_server(datadir)
    server = _server_user(params.get('server_user'), datadir, start)
    if start:
        server.require_traversable(parent, 'data_directory')
    archive = params.get('wal_archive_directory')
    if start and archive:
        if not os.path.isdir(archive):
            raise PgopsError('wal_archive_directory %s is not a directory here: the server needs it to recover. Mount the '
                             'WAL archive, or use start=false when another host or pod starts the server.' % archive)
        server.require_traversable(archive, 'wal_archive_directory')
    log_file = params.get('log_file') or os.path.join(parent, DEFAULT_LOG_NAME)
    store = bundle.BundleStore.from_params(params)
    chosen = bundle.select_bundle(store.list(PATTERN), params.get('bundle'), store.location)
    result = dict(changed=True, data_directory=datadir, wiped=False, started=False, restore_command=restore_command,
                  recovery_target_time=target['time'] if target else None,
                  settings=['%s = %s' % (n, drill.conf_literal(n, v)) for n, v in settings],
                  server_user=server.name, seconds={}, log_file=log_file if start else None)
    details.update(bundle=dict(name=chosen['name'], url=chosen['url']))
    scratch = tempfile.mkdtemp(prefix='pgops-bootstrap-', dir=params.get('scratch_dir'))
    try:
        started = time.monotonic()
        local = store.fetch(chosen['name'], scratch)
        members_dir = os.path.join(scratch, 'members')
        manifest, backup, pg_version = _verify_bundle(local, members_dir)
        if not store.is_local:
            for path in (local, local + bundle.CHECKSUM_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # the verified members are all that is needed; free the room
        bindir = drill.find_bindir(params.get('bindir'), pg_version) if start else params.get('bindir')
        result['seconds']['verify'] = round(time.monotonic() - started, 3)
        result['bundle'] = dict(name=chosen['name'], url=chosen['url'], bytes=chosen['bytes'], created=manifest.get('created'),
                                info=manifest.get('info') or {})
        result['backup'] = dict((k, backup[k]) for k in ('start_lsn', 'stop_lsn', 'timeline', 'start_wal_file', 'start_time', 'label'))
        result['pg_version'] = pg_version
        refuse_mount_points(datadir)
        result['removed'] = directory_listing(datadir)
        details.update(result)
        if check_mode:
            return result
        # Again, right before the wipe: fetching and verifying may have taken long enough for a server to start.
        refuse_running_server(datadir)
        # -- from here on the data directory changes --------------------------------------------------------------
        started = time.monotonic()
        details['wiped'] = result['wiped'] = True
        try:
            if os.path.isdir(datadir):
                empty_directory(datadir)
            _make_data_directory(datadir, server)
            restored = extract_base_tar(os.path.join(members_dir, BASE_MEMBER), datadir)
            wal = os.path.join(members_dir, WAL_MEMBER)
            if os.path.isfile(wal):
                os.makedirs(os.path.join(datadir, 'pg_wal'), mode=0o700, exist_ok=True)
                more = extract_base_tar(wal, os.path.join(datadir, 'pg_wal'))
                restored = dict(files=restored['files'] + more['files'], bytes=restored['bytes'] + more['bytes'])
            result['restored'] = restored
            _prepare_recovery(datadir, settings, chosen['name'], server)
        except OSError as exc:
            # Root-squashed volumes and full disks fail here: say so, with wiped=true (see the caller).
            raise PgopsError('restoring the base backup into %s failed after it was emptied: %s. Check the volume\'s '
                             'permissions and free space, then run the bootstrap again.' % (datadir, exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result['seconds']['restore'] = round(time.monotonic() - started, 3)
    details.update(result)
    if start:
        _start_and_wait(datadir, bindir, server, log_file, timeout, backup['timeline'], result)
        details.update(result)
    result['seconds']['total'] = round(time.monotonic() - began, 3)
    return result


def _prepare_recovery(datadir, settings, bundle_name, server):
    """recovery.signal, the settings, no lock or standby files of the source; the tree given to the server user."""
    for name in ('postmaster.pid', 'postmaster.opts', 'standby.signal'):
        path = os.path.join(datadir, name)
        if os.path.lexists(path):
            os.unlink(path)
    drill.check_data_directory(datadir)  # PG_VERSION, global/pg_control and a backup_label are there
    with open(os.path.join(datadir, 'recovery.signal'), 'w', encoding='utf-8'):
        pass
    conf = os.path.join(datadir, 'postgresql.conf')
    if not os.path.exists(conf):
        # Debian-style clusters keep postgresql.conf outside the data directory; their base backups lack it.
        with open(conf, 'w', encoding='utf-8') as handle:
            handle.write('# written by pgops.resilience pg_bootstrap_basebackup: the base backup had none.\n')
    with open(os.path.join(datadir, 'postgresql.auto.conf'), 'a', encoding='utf-8') as handle:
        handle.write(render_recovery_settings(settings, '(%s, %s)' % (bundle_name, isoformat_z(utc_now()))))
    server.chown_tree(datadir)
    os.chmod(datadir, 0o700)


def _rewrite_auto_conf(auto, server):
    """postgresql.auto.conf without the recovery targets, replaced atomically (a temporary file in the same
    directory, flushed, given the old mode and the server user, then renamed), as ALTER SYSTEM itself does: a crash
    or a full disk never leaves the running server's settings file half-written."""
    with open(auto, encoding='utf-8') as handle:
        text = handle.read()
    mode = stat.S_IMODE(os.stat(auto).st_mode)
    temp = auto + '.pgops-tmp'
    with open(temp, 'w', encoding='utf-8') as handle:
        handle.write(without_recovery_targets(text))
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, mode)
    server.chown(temp)
    os.replace(temp, auto)


def _start_and_wait(datadir, bindir, server, log_file, timeout, backup_timeline, result):
    """Start the server with pg_ctl as the server user, wait until the control file says ``in production``."""
    if not os.path.exists(log_file):
        with open(log_file, 'a', encoding='utf-8'):
            pass
        os.chmod(log_file, 0o600)
    server.chown(log_file)
    log = drill.LogFollower(log_file)
    log.offset = os.path.getsize(log_file)  # the log is appended to: what an earlier run wrote does not count
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith('PG'))
    # pg_ctl's own wait outlasts ours, so that a long recovery ends in "still recovering", not in pg_ctl's exit code.
    cmd = server.command([os.path.join(bindir, 'pg_ctl'), 'start', '-D', datadir, '-l', log_file, '-w', '-t', str(int(timeout) + 60)])
    started = time.monotonic()
    # A session of its own: the postmaster outlives this module (it is the restored server, left running).
    ctl = subprocess.Popen(cmd, env=env, cwd='/', stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    result['started'] = True
    state = dict(control=None)

    def ended(deadline):
        del deadline
        control = _controldata(bindir, datadir, server)
        if control:
            state['control'] = control
        return bool(control) and recovery_ended(control, backup_timeline)

    def still_recovering():
        cluster_state = (state['control'] or {}).get('Database cluster state', 'unknown')
        return ('recovery has not ended within timeout=%d s (cluster state: %s). The server keeps recovering; watch %s, '
                'or raise timeout for a longer archive' % (timeout, cluster_state, log_file))

    watch = drill.StartWatch(ctl, datadir, log)
    try:
        watch.wait(ended, started + timeout, still_recovering)
    except PgopsError as exc:
        result['pid'] = watch.pid if drill.pid_alive(watch.pid) else None
        log.poll()
        tail = drill.read_tail(log_file)
        msg = 'The base backup was restored into %s, but the server did not finish recovery: %s.' % (datadir, exc.msg.rstrip('.'))
        if log.fatal:
            msg += ' The server said: %s.' % ' | '.join(f.rstrip('.') for f in log.fatal[:5])
        msg += ' Server log: %s.\n--- last lines of the server log ---\n%s' % (log_file, tail)
        raise PgopsError(msg, log_tail=tail, phase='recovery', **dict((k, v) for k, v in result.items() if k != 'log_tail'))
    finally:
        if ctl.stdout is not None and ctl.poll() is not None:
            ctl.stdout.close()
    result['seconds']['recovery'] = round(time.monotonic() - started, 3)
    result['pid'] = watch.pid
    log.poll()
    control = state['control']
    logged = log.value_of('timeline')
    result['timeline'] = int(logged) if logged else int(control.get("Latest checkpoint's TimeLineID") or 0) or None
    result['recovered_to_lsn'] = log.value_of('redo_done') or control.get("Latest checkpoint's REDO location")
    result['recovery'] = dict(consistent_lsn=log.value_of('consistent'), redo_done_lsn=log.value_of('redo_done'),
                              stop=log.value_of('stop'), last_transaction_time=log.value_of('last_transaction'),
                              checkpoint_lsn=control.get('Latest checkpoint location'), cluster_state=control.get('Database cluster state'))
    _rewrite_auto_conf(os.path.join(datadir, 'postgresql.auto.conf'), server)
    # pg_ctl -w returns once the server accepts connections, right after recovery; nothing is left to wait for.
    with contextlib.suppress(subprocess.TimeoutExpired):
        ctl.wait(timeout=30)
    if ctl.stdout is not None:
        ctl.stdout.close()
