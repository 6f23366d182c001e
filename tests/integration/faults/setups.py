# -*- coding: utf-8 -*-
"""The state the fault tests start from: a database shaped like the runbook's application (the UNLOGGED cache and
its rebuild function), a base backup bundle of the sandbox's primary, a barman catalog of its own, bundles and
left-over work in progress named as the modules name theirs, server settings that carry secrets, and the
PostgreSQL servers a bootstrap starts (stopped again here).

Everything the server user (``postgres``) must reach lives under a directory of :func:`server_reachable_dir`
(pytest's ``tmp_path`` is 0700 root).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid

from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import postmaster_of
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port
from pgops_sandbox import SandboxError
from pgops_sandbox.rem_schema import create_rem_schema

from ..archive_helpers import create_database

# -- directories and processes --------------------------------------------------------------------------------


def server_reachable_dir(prefix='pgops-faults-'):
    """A new directory under the system temporary directory that the server user can traverse (0755); its path.
    The caller removes it (``shutil.rmtree``)."""
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o755)
    return path


def dead_pid():
    """The PID (int) of a process that has exited and been reaped: the owner of a killed run's work in progress."""
    process = subprocess.Popen(['true'])
    process.wait()
    return process.pid


def _host():
    """This host and PID namespace as the modules write them into the names of work in progress (their documentation:
    ``pid<pid>@<host name>.pidns<inode of the PID namespace>``): letters, digits, dots and hyphens."""
    name = re.sub(r'[^A-Za-z0-9.-]', '-', socket.gethostname() or '')[:64] or 'localhost'
    return '%s.pidns%d' % (name, os.stat('/proc/self/ns/pid').st_ino)


def killed_run_tag():
    """``pid<pid>@<host>.<8 hex digits>`` of a run of this host whose process is gone."""
    return 'pid%d@%s.%s' % (dead_pid(), _host(), os.urandom(4).hex())


def new_bundle_name(kind):
    """A bundle name of now as the modules name theirs: ``nightly-YYYYMMDD-HHMMSSmmm-<8 hex>.tar.gz`` (``kind``
    ``'dump'``) or ``basebackup-YYYYMMDD-HHMMSSmmm-<8 hex>.bundle.tar.gz`` (``'basebackup'``)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = now.strftime('%Y%m%d-%H%M%S') + '%03d' % (now.microsecond // 1000)
    if kind == 'dump':
        return 'nightly-%s-%s.tar.gz' % (stamp, os.urandom(4).hex())
    return 'basebackup-%s-%s.bundle.tar.gz' % (stamp, os.urandom(4).hex())


def _half_filled_directory(path):
    os.makedirs(path)
    with open(os.path.join(path, 'half'), 'wb') as handle:
        handle.write(b'half of something')
    return path


def stale_partial(directory, name):
    """The work in progress on bundle ``name`` that a killed run of this host left in ``directory``
    (``.partial-<name>.pid<dead pid>@<host>.<hex>``, as the modules name theirs), a directory holding half a file;
    returns its path."""
    return _half_filled_directory(os.path.join(directory, '.partial-%s.%s' % (name, killed_run_tag())))


def stale_scratch(parent, prefix):
    """A scratch directory ``<prefix>pid<dead pid>@<host>.<hex>`` that a killed run of this host left in ``parent``
    (holding half a file); returns its path."""
    return _half_filled_directory(os.path.join(parent, prefix + killed_run_tag()))


def fake_bundles(directory, names):
    """One-byte files named like bundles, each with its ``.sha256`` (enough for retention, which reads names)."""
    for name in names:
        with open(os.path.join(directory, name), 'wb') as handle:
            handle.write(b'x')
        with open(os.path.join(directory, name + '.sha256'), 'w', encoding='ascii') as handle:
            handle.write('%s  %s\n' % ('0' * 64, name))


def fake_s3_bundles(sandbox, prefix, names):
    """:func:`fake_bundles` as S3 objects under ``prefix``."""
    client = sandbox.s3.client()
    for name in names:
        client.put_object(Bucket=sandbox.s3.bucket, Key='%s/%s' % (prefix, name), Body=b'x')
        client.put_object(Bucket=sandbox.s3.bucket, Key='%s/%s.sha256' % (prefix, name),
                          Body=('%s  %s\n' % ('0' * 64, name)).encode('ascii'))


def stop_server(sandbox, datadir):
    """Stop a server a bootstrap started on ``datadir`` (pg_ctl stop -m fast as the server user), if one runs."""
    if postmaster_of(datadir):
        with contextlib.suppress(SandboxError):
            sandbox.server_user.run_as_server([os.path.join(sandbox.bindir, 'pg_ctl'), 'stop', '-D', datadir, '-m', 'fast', '-w'])


# -- databases --------------------------------------------------------------------------------------------------


def create_rem_database(sandbox, rows=300):
    """A new database on the primary with the runbook application's tables (``resources``, ``moments``, the
    UNLOGGED ``kv_store`` filled by ``rebuild_kv_store()``); returns its name. ``kv_store`` holds ``2 * rows``."""
    name = create_database(sandbox)
    conn = sandbox.primary.connect(dbname=name)
    try:
        create_rem_schema(conn, rows=rows)
    finally:
        conn.close()
    return name


def count_rebuild_calls(sandbox, dbname, sleep_seconds=0.0):
    """Wrap ``rebuild_kv_store()`` so that each committed call leaves a row in ``rebuild_calls`` (a call that is
    rolled back leaves none), after ``pg_sleep(sleep_seconds)``; then empty ``kv_store`` (a rebuild is due)."""
    sandbox.primary.execute("""
        CREATE TABLE rebuild_calls (at timestamptz DEFAULT clock_timestamp());
        ALTER FUNCTION rebuild_kv_store() RENAME TO rebuild_kv_store_inner;
        CREATE FUNCTION rebuild_kv_store() RETURNS TABLE (table_name text, rows_inserted bigint) LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO rebuild_calls DEFAULT VALUES;
            PERFORM pg_sleep(%s);
            RETURN QUERY SELECT * FROM rebuild_kv_store_inner();
        END $$;
        TRUNCATE kv_store;""" % float(sleep_seconds), dbname=dbname)


# -- server settings that carry secrets -------------------------------------------------------------------------

SECRET_SETTINGS = ('primary_conninfo', 'restore_command', 'ssl_passphrase_command')


def secret_values():
    """``{label: secret}``: a password for ``primary_conninfo``, an AWS secret key for ``restore_command``, and a
    passphrase for ``ssl_passphrase_command`` (unused while ssl is off), each random."""
    return {'primary_conninfo password': 'conninfo-%s' % uuid.uuid4().hex,
            'restore_command secret key': 'restorekey-%s' % uuid.uuid4().hex,
            'ssl_passphrase_command secret': 'passphrase-%s' % uuid.uuid4().hex}


def _set_values(secrets):
    return {
        'primary_conninfo': 'host=192.0.2.1 user=replicator password=%s' % secrets['primary_conninfo password'],
        'restore_command': 'AWS_SECRET_ACCESS_KEY=%s barman-cloud-wal-restore s3://elsewhere/wal main %%f %%p'
                           % secrets['restore_command secret key'],
        'ssl_passphrase_command': '/bin/echo %s' % secrets['ssl_passphrase_command secret'],
    }


def set_secret_settings(node, secrets):
    """ALTER SYSTEM the settings of :data:`SECRET_SETTINGS` on ``node`` to values holding ``secrets``, and reload
    (all three take effect on reload; a primary uses none of them)."""
    conn = node.connect()
    try:
        with conn.cursor() as cursor:
            for name, value in _set_values(secrets).items():
                cursor.execute('ALTER SYSTEM SET %s = %%s' % name, [value])
            cursor.execute('SELECT pg_reload_conf()')
    finally:
        conn.close()


def reset_secret_settings(node):
    """ALTER SYSTEM RESET the settings of :data:`SECRET_SETTINGS` on ``node``, and reload."""
    conn = node.connect()
    try:
        with conn.cursor() as cursor:
            for name in SECRET_SETTINGS:
                cursor.execute('ALTER SYSTEM RESET %s' % name)
            cursor.execute('SELECT pg_reload_conf()')
    finally:
        conn.close()


def shown_settings(node):
    """``{name: setting}`` of :data:`SECRET_SETTINGS` as the server shows them now (a reload is asynchronous)."""
    return dict(node.execute('SELECT name, setting FROM pg_settings WHERE name = ANY(%s)', [list(SECRET_SETTINGS)]))


@contextlib.contextmanager
def secret_settings(sandbox, node_name='primary'):
    """:func:`set_secret_settings` on a node of ``sandbox`` for the ``with`` block (reset at its end, the node started
    first when a test stopped it); yields the ``{label: secret}``. Waits until the server shows them."""
    node = sandbox.node(node_name)
    secrets = secret_values()
    set_secret_settings(node, secrets)
    try:
        for dummy in range(100):
            if all(value in ' '.join(shown_settings(node).values()) for value in secrets.values()):
                break
            time.sleep(0.05)
        else:
            raise AssertionError('the server does not show the secret settings after pg_reload_conf()')
        yield secrets
    finally:
        if not node.is_running():
            sandbox.start_node(node_name)
        reset_secret_settings(node)


# -- base backups -----------------------------------------------------------------------------------------------

# The table of the ``basebackup_store`` fixture (database postgres): rows by batch, written before and after the backup.
BASEBACKUP_TABLE = 'faults_bb_rows'
BASEBACKUP_ROWS = dict(before=1000, after=500)


def basebackup_args(sandbox, directory, **overrides):
    """Arguments of ``pg_basebackup_bundle`` against the sandbox's primary, a directory store."""
    args = dict(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                login_db='postgres', ssl_mode='disable', connect_timeout=5, directory=str(directory))
    args.update(overrides)
    return args


def bootstrap_args(sandbox, store, datadir, **overrides):
    """Arguments of ``pg_bootstrap_basebackup`` from the directory store ``store`` into ``datadir`` with the
    sandbox's WAL archive; the server (when started) on a free port with archiving off."""
    args = dict(data_directory=datadir, confirm=datadir, directory=str(store), wal_archive_directory=sandbox.archive_dir,
                settings={'port': free_port(), 'archive_mode': 'off'}, timeout=120)
    args.update(overrides)
    return args


def prepare_for_basebackup(sandbox):
    """The primary running, and no timeline newer than it in the shared WAL archive (an earlier test may have
    promoted the standby: ``recovery_target_timeline 'latest'`` would follow that branch)."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    if not (sandbox.standby.is_running() and sandbox.standby.in_recovery()):
        sandbox.rebuild_standby(source='primary')
    sandbox.retire_abandoned_timelines(sandbox.primary)


def switch_and_wait_archived(sandbox, timeout=60):
    """Close the primary's current WAL segment and wait until the sandbox's WAL archive has it."""
    segment = sandbox.primary.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0]
    sandbox.primary.execute('SELECT pg_switch_wal()')
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(sandbox.archive_dir, segment)):
        if time.monotonic() > deadline:
            raise AssertionError('WAL segment %s was not archived within %d s' % (segment, timeout))
        time.sleep(0.1)


def remove_tree(path):
    shutil.rmtree(path, ignore_errors=True)


# -- barman -----------------------------------------------------------------------------------------------------


def barman_catalog(box, backups):
    """Ship the barman sandbox's WAL to a new server name and take ``backups`` base backups with
    barman-cloud-backup; returns ``(settings, backup IDs oldest first)``."""
    settings = box.barman_server('faults-%s' % uuid.uuid4().hex[:8])
    box.barman_wait_archived()
    ids = [box.barman_backup() for dummy in range(backups)]
    return settings, ids


def pg_args(sandbox, dbname='postgres', **overrides):
    """The connection arguments of a PostgreSQL module for the sandbox's primary (password given, no TLS)."""
    args = dict(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password, login_db=dbname,
                ssl_mode='disable', connect_timeout=5)
    args.update(overrides)
    return args
