# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bootstrap from Physical Backup, of the reference runbook ``postgres-infra-setup.md``
(``pg_bootstrap_basebackup``): :func:`bootstrap_data_directory` verifies a base backup bundle (:mod:`.basebackup`),
then wipes a data directory (:mod:`~.._pg.datadir`), extracts the base backup into it, sets up archive recovery
(``recovery.signal``, ``restore_command``, an optional ``recovery_target_time``: :mod:`~.._pg.recovery`), starts the
server and waits until recovery has ended (:mod:`~.._pg.server`).

A deletion happens only after what replaces it is verified: the bundle (its sha256, every member's sha256 and the
``backup_label``) is verified BEFORE anything is deleted, and the safety rules of :mod:`~.._pg.datadir` hold (no
running server, ``confirm`` equal to the data directory, no system directory, no other volume). Plain Python over the
file system and the server programs; no Ansible.

The rules followed are those of the PostgreSQL 15 documentation: 26.3.4 "Recovering Using a Continuous Archive
Backup" (empty the data directory, restore the files, ``pg_wal`` from the backup, ``restore_command``,
``recovery.signal``, start; the server ends recovery on its own and the new timeline starts), 19.3 "Starting the
Database Server" (never as root), "pg_controldata" (the cluster state).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import basebackup, bundle
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, seconds_since, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import write_durably
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import mask_setting, secret_setting
from ansible_collections.pgops.resilience.plugins.module_utils._pg import datadir as data_directory, recovery as recovery_config
from ansible_collections.pgops.resilience.plugins.module_utils._pg.backup_label import check_data_directory
from ansible_collections.pgops.resilience.plugins.module_utils._pg.datadir import (
    INCOMPLETE_MARKER, clear_incomplete, mark_incomplete, refuse_foreign_directory)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_bindir
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import (
    StartWatch, end_start, follow_log, read_controldata, read_tail, server_environment, start_server)

DEFAULT_LOG_NAME = 'pgops-bootstrap.log'
CONF_MARK = recovery_config.conf_mark('bootstrap from base backup')
_CONF_COMMENT = (
    '# Archive recovery from a base backup (PostgreSQL 15 docs, 26.3.4). postgresql.auto.conf is read last and the',
    '# last value of a setting wins (20.1.2). The recovery_target lines are removed once recovery has ended.',
)


# -- options -----------------------------------------------------------------------------------------------------


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


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=bootstrap_argument_spec(), mutually_exclusive=BOOTSTRAP_MUTUALLY_EXCLUSIVE,
                required_one_of=BOOTSTRAP_REQUIRED_ONE_OF)


# -- pg_bootstrap_basebackup -------------------------------------------------------------------------------------


def bootstrap_secrets(params):
    """The secret values among a bootstrap's options, for the module's ``no_log_values`` (Ansible then masks them
    wherever they appear, the echoed module arguments included): ``restore_command`` whole and every ``NAME=value``
    word in it whose name says it is a secret (``AWS_SECRET_ACCESS_KEY=...``), and the value of every entry of
    ``settings`` that can carry a credential (``common.secret_setting``).

    :returns: list of str (values shorter than 4 characters left out, as ``common.redact`` does).
    """
    found = []
    command = params.get('restore_command')
    if command:
        found.append(str(command))
        for word in re.split(r'[\s;&|()]+', str(command)):
            key, sep, value = word.partition('=')
            if sep and secret_setting(key):
                found.append(value.strip('\'"'))
    for name, value in (params.get('settings') or {}).items():
        if value not in (None, '') and secret_setting(str(name)):
            found.append(str(value))
    return [value for value in found if len(value) >= 4]


def _restore_command(params):
    if params.get('restore_command'):
        return recovery_config.validate_restore_command(params['restore_command'])
    if params.get('wal_archive_directory'):
        return recovery_config.archive_restore_command(params['wal_archive_directory'])
    raise PgopsError('give wal_archive_directory (the WAL archive the server copies from) or restore_command.')


def _bundle_pg_version(manifest, members_dir):
    """The major version of the backed-up server: the bundle's manifest info, else PG_VERSION in the base tar."""
    major = (manifest.get('info') or {}).get('server_major')
    if major:
        return str(major)
    data = basebackup.read_tar_member(os.path.join(members_dir, basebackup.BASE_MEMBER), 'PG_VERSION', 64)
    if not data:
        raise PgopsError('the base backup has no PG_VERSION; it is not a PostgreSQL data directory.')
    return data.decode('ascii', 'replace').strip()


def _verify_bundle(local, members_dir):
    """extract_verified plus what a bootstrap needs of the members; returns (manifest, label facts, pg_version)."""
    manifest = bundle.extract_verified(local, members_dir)
    name = os.path.basename(local)
    if manifest.get('kind') != basebackup.KIND:
        raise PgopsError('bundle %s holds a %s, not a base backup.' % (name, manifest.get('kind')))
    members = manifest['members']
    if basebackup.BASE_MEMBER not in members:
        raise PgopsError('bundle %s has no %s.' % (name, basebackup.BASE_MEMBER))
    known = (basebackup.BASE_MEMBER, basebackup.WAL_MEMBER, basebackup.MANIFEST_MEMBER)
    others = sorted(m for m in members if m not in known)
    if others:
        raise PgopsError('bundle %s holds %s besides the base and WAL archives: tablespaces, which a bootstrap does not '
                         'restore. Restore it by hand (PostgreSQL 15 docs, 26.3.4).' % (name, ', '.join(others)))
    label = basebackup.backup_facts(members_dir)
    return manifest, label, _bundle_pg_version(manifest, members_dir)


def recovery_settings(restore_command, recovery_target=None, extra=None):
    """The settings a bootstrap appends to ``postgresql.auto.conf``, in order: ``extra`` first, then the recovery
    settings (:func:`~.._pg.recovery.recovery_target_settings`), so that they win over anything earlier (the last value
    of a setting wins, PostgreSQL 15 docs, 20.1.2).

    :param restore_command: str (see :func:`~.._pg.recovery.archive_restore_command`,
        :func:`~.._pg.recovery.validate_restore_command`).
    :param recovery_target: None or the output of :func:`~.._pg.recovery.normalize_recovery_target` with ``time``.
    :param extra: dict of further settings (``port``, ``archive_mode``...), the recovery settings excluded.
    :returns: list of ``(name, value)``.
    :raises PgopsError: for a malformed or owned setting name, or a value a configuration line cannot hold.
    """
    settings = recovery_config.checked_settings(extra, recovery_config.RECOVERY_SETTINGS,
                                                'is written by the bootstrap itself; use wal_archive_directory / restore_command '
                                                'and recovery_target_time instead.')
    settings += recovery_config.recovery_target_settings(restore_command, recovery_target)
    for name, value in settings:
        recovery_config.conf_literal(name, value)
    return settings


def render_recovery_settings(settings, note=None):
    """The block appended to ``postgresql.auto.conf``: :data:`CONF_MARK`, a comment, then ``name = literal`` lines.

    :param settings: list of ``(name, value)`` from :func:`recovery_settings`.
    :param note: optional str for the header (such as the bundle's name).
    """
    return recovery_config.render_settings(settings, CONF_MARK, _CONF_COMMENT, note)


def without_recovery_targets(text):
    """``text`` (a postgresql.auto.conf) without the ``recovery_target*`` lines of the bootstrap's block
    (:func:`~.._pg.recovery.without_recovery_targets`)."""
    return recovery_config.without_recovery_targets(text, CONF_MARK)


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


def bootstrap_data_directory(params, check_mode=False):
    """Replace a data directory with a base backup bundle and recover it from the WAL archive.

    Order, so that nothing is lost to a mistake: the options and the data directory are checked (confirm, no
    running server, the server programs and user); the bundle is fetched and verified into a scratch directory; only
    then is the data directory emptied and the base backup extracted into it (``base.tar.gz``, ``pg_wal.tar.gz`` into
    ``pg_wal``); ``recovery.signal`` and the recovery settings (:func:`recovery_settings`) are written and the tree is
    given to the server user (:func:`~.._pg.recovery.prepare_archive_recovery`). With ``start`` the server is started
    with ``pg_ctl`` as that user (:func:`~.._pg.server.start_server`), and the call returns once the control file says
    recovery has ended (:func:`recovery_ended`: the moment ``pg_is_in_recovery()`` turns false; read with
    ``pg_controldata``, so no role or password is needed), then the ``recovery_target*`` lines are removed again.

    :param params: dict, the options of :func:`bootstrap_argument_spec`.
    :param check_mode: bool: verify the bundle and report what would be wiped; change nothing.
    :returns: dict: ``changed``, ``data_directory``, ``bundle`` (``name``, ``url``, ``bytes``, ``created``, ``info``),
        ``wiped`` (bool), ``removed`` (the data directory's entries before, see
        :func:`data_directory.directory_listing`), ``restore_command`` (masked), ``recovery_target_time``, ``settings``
        (the lines written, credential-bearing values masked: :func:`recovery_config.shown_settings`; the data
        directory's postgresql.auto.conf has the real ones), ``backup`` (``start_lsn``, ``timeline``,
        ``start_wal_file``, ``label``), ``restored`` (``files``, ``bytes``), ``started``, ``server_user``,
        ``pid``, ``timeline`` (the new one), ``recovered_to_lsn``, ``recovery`` (what the log and control file say),
        ``seconds`` (``verify``, ``restore``, ``recovery``, ``total``), ``log_file``, ``log_tail`` (on failure).
    :raises PgopsError: with ``wiped`` in its details: False when it failed before anything was deleted.
    """
    began = time.monotonic()
    details = dict(wiped=False)
    try:
        details['data_directory'] = datadir = data_directory.check_confirm(params['data_directory'], params.get('confirm'))
        return _bootstrap(params, check_mode, datadir, details, began)
    except PgopsError as exc:
        for key, value in details.items():
            exc.details.setdefault(key, value)
        exc.details['changed'] = exc.details['wiped']
        raise


def _bootstrap(params, check_mode, datadir, details, began):  # pylint: disable=too-many-locals,too-many-statements
    restore_command = _restore_command(params)
    target_time = (params.get('recovery_target_time') or '').strip() or None
    target = recovery_config.normalize_recovery_target({'time': target_time}) if target_time else None
    settings = recovery_settings(restore_command, target, params.get('settings'))
    start = params.get('start', True)
    timeout = params.get('timeout') or 3600
    if timeout <= 0:
        raise PgopsError('timeout must be more than 0 seconds.')
    data_directory.check_replaceable(datadir)
    if params.get('scratch_dir'):
        refuse_system_directory(params['scratch_dir'], 'scratch_dir', within=True)
    parent = os.path.dirname(datadir)
    data_directory.refuse_running_server(datadir)
    server = data_directory.server_user(params.get('server_user'), datadir, start)
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
    chosen = bundle.select_bundle(store.list(basebackup.PATTERN), params.get('bundle'), store.location)
    # The result and every message show restore_command and the settings masked; only postgresql.auto.conf has them.
    result = dict(changed=True, data_directory=datadir, wiped=False, started=False,
                  restore_command=mask_setting('restore_command', restore_command),
                  recovery_target_time=target['time'] if target else None, settings=recovery_config.shown_settings(settings),
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
        bindir = find_bindir(params.get('bindir'), pg_version) if start else params.get('bindir')
        result['seconds']['verify'] = seconds_since(started)
        result['bundle'] = dict(name=chosen['name'], url=chosen['url'], bytes=chosen['bytes'], created=manifest.get('created'),
                                info=manifest.get('info') or {})
        result['backup'] = dict((k, backup[k]) for k in ('start_lsn', 'stop_lsn', 'timeline', 'start_wal_file', 'start_time', 'label'))
        result['pg_version'] = pg_version
        data_directory.refuse_mount_points(datadir)
        result['removed'] = data_directory.directory_listing(datadir)
        details.update(result)
        if check_mode:
            return result
        # Again, right before the wipe: fetching and verifying may have taken long enough for a server to start, or
        # something to be put into the directory.
        data_directory.refuse_running_server(datadir)
        refuse_foreign_directory(datadir)
        if os.path.isdir(datadir):
            # Written first, removed once the restore is complete: a bootstrap that stops half-way (a full disk)
            # leaves a directory that a run again accepts, though it is neither empty nor a data directory.
            data_directory.mark_before_deleting(datadir, 'pg_bootstrap_basebackup')
        # -- from here on the data directory changes --------------------------------------------------------------
        started = time.monotonic()
        details['wiped'] = result['wiped'] = True
        try:
            if os.path.isdir(datadir):
                data_directory.empty_directory(datadir, keep=(INCOMPLETE_MARKER,))
            data_directory.make_data_directory(datadir, server)
            if not os.path.exists(os.path.join(datadir, INCOMPLETE_MARKER)):
                mark_incomplete(datadir, 'pg_bootstrap_basebackup')  # a data directory created just now
            restored = basebackup.extract_base_tar(os.path.join(members_dir, basebackup.BASE_MEMBER), datadir)
            wal = os.path.join(members_dir, basebackup.WAL_MEMBER)
            if os.path.isfile(wal):
                os.makedirs(os.path.join(datadir, 'pg_wal'), mode=0o700, exist_ok=True)
                more = basebackup.extract_base_tar(wal, os.path.join(datadir, 'pg_wal'))
                restored = dict(files=restored['files'] + more['files'], bytes=restored['bytes'] + more['bytes'])
            result['restored'] = restored
            _prepare_recovery(datadir, settings, chosen['name'], server)
            clear_incomplete(datadir)  # only now is it a complete data directory
        except OSError as exc:
            # Root-squashed volumes and full disks fail here: say so, with wiped=true (see the caller).
            raise PgopsError('restoring the base backup into %s failed after it was emptied: %s. Check the volume\'s '
                             'permissions and free space, then run the bootstrap again.' % (datadir, exc))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result['seconds']['restore'] = seconds_since(started)
    details.update(result)
    if start:
        _start_and_wait(datadir, bindir, server, log_file, timeout, backup['timeline'], result)
        details.update(result)
    result['seconds']['total'] = seconds_since(began)
    return result


def _prepare_recovery(datadir, settings, bundle_name, server):
    """recovery.signal, the settings, no lock or standby files of the source; the tree given to the server user."""
    check_data_directory(datadir)  # PG_VERSION, global/pg_control and a backup_label are there
    block = render_recovery_settings(settings, '(%s, %s)' % (bundle_name, isoformat_z(utc_now())))
    recovery_config.prepare_archive_recovery(datadir, block, server, 'pgops.resilience pg_bootstrap_basebackup')


def _rewrite_auto_conf(auto, server):
    """postgresql.auto.conf without the recovery targets, replaced atomically and durably with its old mode, for the
    server user (:func:`~.._core.files.write_durably`), as ALTER SYSTEM itself replaces it: a crash or a full disk
    never leaves the running server's settings file half-written."""
    with open(auto, encoding='utf-8') as handle:
        text = handle.read()
    mode = stat.S_IMODE(os.stat(auto).st_mode)
    write_durably(auto, without_recovery_targets(text).encode('utf-8'), mode, (server.uid, server.gid) if server.as_root else None)


def _start_and_wait(datadir, bindir, server, log_file, timeout, backup_timeline, result):
    """Start the server with pg_ctl as the server user, wait until the control file says ``in production``."""
    log = follow_log(log_file, server)  # the log is appended to: what an earlier run wrote does not count
    started = time.monotonic()
    # pg_ctl's own wait outlasts ours, so that a long recovery ends in "still recovering", not in pg_ctl's exit code.
    # The postmaster outlives this module: it is the restored server, left running.
    ctl = start_server(bindir, datadir, server, log_file, int(timeout) + 60, server_environment())
    result['started'] = True
    state = dict(control=None)

    def ended(deadline):
        del deadline
        control = read_controldata(bindir, datadir, server)
        if control:
            state['control'] = control
        return bool(control) and recovery_ended(control, backup_timeline)

    def still_recovering():
        cluster_state = (state['control'] or {}).get('Database cluster state', 'unknown')
        return ('recovery has not ended within timeout=%d s (cluster state: %s). The server keeps recovering; watch %s, '
                'or raise timeout for a longer archive' % (timeout, cluster_state, log_file))

    watch = StartWatch(ctl, datadir, log)
    try:
        watch.wait(ended, started + timeout, still_recovering)
    except PgopsError as exc:
        result['pid'] = watch.pid if pid_alive(watch.pid) else None
        log.poll()
        tail = read_tail(log_file)
        msg = 'The base backup was restored into %s, but the server did not finish recovery: %s.' % (datadir, exc.msg.rstrip('.'))
        if log.fatal:
            msg += ' The server said: %s.' % ' | '.join(f.rstrip('.') for f in log.fatal[:5])
        msg += ' Server log: %s.\n--- last lines of the server log ---\n%s' % (log_file, tail)
        raise PgopsError(msg, log_tail=tail, phase='recovery', **dict((k, v) for k, v in result.items() if k != 'log_tail'))
    finally:
        if ctl.poll() is not None:
            ctl.stop()
    result['seconds']['recovery'] = seconds_since(started)
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
    # pg_ctl -w returns once the server accepts connections, right after recovery; nothing is left to wait for. When
    # it does not end, its whole process group (runuser and pg_ctl) is ended; the postmaster has a session of its own.
    ctl.exited_within(30)
    end_start(ctl)
