# -*- coding: utf-8 -*-
"""Integration tests of the base backup bundle, the bootstrap from it and the wipe (module_utils/_bundles/basebackup.py,
bootstrap.py, wipe.py and the playbooks), over the sandbox primary and its WAL archive (``sandbox.archive_dir``).

One bundle per module, taken after batch A of rows; batches B and C are written after it, with a recovery target time
between them, and archived. A bootstrap that replays the archive must bring back B and C (WAL replay from the archive,
not only the base backup), one with the target only B. Every bootstrapped server runs as postgres beside the sandbox
(another port, archive_mode off, so that it never writes into the sandbox's archive) and is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid

import psycopg2
import pytest
from pgops_sandbox import SandboxError

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import basebackup, bootstrap, bundle, wipe
from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import postmaster_of
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port
from ansible_collections.pgops.resilience.plugins.module_utils._pg.datadir import (
    INCOMPLETE_MARKER, data_directory_state)
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import PARTIAL_PREFIX, partial_path

from tests.requirements import tool_missing

from .helpers import run_playbook

TABLE = 'bb_rows'
ROWS = dict(A=1000, B=500, C=200)


def _defaults(spec):
    return dict((name, option.get('default')) for name, option in spec.items())


def bundle_params(sandbox, directory, **overrides):
    params = _defaults(postgres_argument_spec())
    params.update(_defaults(basebackup.bundle_argument_spec()))
    params.update(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                  login_db='postgres', ssl_mode='disable', connect_timeout=5, connect_params={},
                  directory=str(directory) if directory else None)
    params.update(overrides)
    return params


def bootstrap_params(sandbox, store, datadir, **overrides):
    params = _defaults(bootstrap.bootstrap_argument_spec())
    params.update(data_directory=datadir, confirm=datadir, directory=str(store) if store else None, wal_archive_directory=sandbox.archive_dir,
                  settings={'port': free_port(), 'archive_mode': 'off'}, timeout=120)
    params.update(overrides)
    return params


def _switch_and_wait(sandbox, timeout=60):
    """Close the primary's current WAL segment and wait until the archive has it."""
    primary = sandbox.primary
    segment = primary.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0]
    primary.execute('SELECT pg_switch_wal()')
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(sandbox.archive_dir, segment)):
        assert time.monotonic() < deadline, 'WAL segment %s was not archived within %d s' % (segment, timeout)
        time.sleep(0.1)


def _workdir():
    """A directory under /tmp that the postgres user can traverse (pytest's tmp_path is 0700 root)."""
    path = tempfile.mkdtemp(prefix='pgops-bb-it-')
    os.chmod(path, 0o755)
    return path


def _stop(sandbox, datadir):
    if postmaster_of(datadir):
        with contextlib.suppress(SandboxError):
            sandbox.server_user.run_as_server([os.path.join(sandbox.bindir, 'pg_ctl'), 'stop', '-D', datadir, '-m', 'fast', '-w'])


def _query(port, sandbox, sql):
    conn = psycopg2.connect(host='127.0.0.1', port=port, user='postgres', password=sandbox.password, dbname='postgres',
                            connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall()
    finally:
        conn.close()


def _batches(port, sandbox):
    return dict(_query(port, sandbox, 'SELECT batch, count(*) FROM %s GROUP BY batch' % TABLE))


@pytest.fixture(scope='module')
def backup(sandbox):
    """A bundle of the primary holding batch A; batches B and C (a target time between them) written and archived after."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    # An earlier test may have promoted the standby: its history file in the shared archive would make
    # recovery_target_timeline 'latest' follow a branch that forked before this backup (see the drill runner tests).
    if not (sandbox.standby.is_running() and sandbox.standby.in_recovery()):
        sandbox.rebuild_standby(source='primary')
    sandbox.retire_abandoned_timelines(sandbox.primary)
    primary = sandbox.primary
    primary.execute('DROP TABLE IF EXISTS %s' % TABLE)
    primary.execute('CREATE TABLE %s (id int PRIMARY KEY, batch text)' % TABLE)
    primary.execute("INSERT INTO %s SELECT g, 'A' FROM generate_series(1, %d) g" % (TABLE, ROWS['A']))
    root = _workdir()
    store = os.path.join(root, 'store')
    os.mkdir(store)
    made = basebackup.take_base_backup(bundle_params(sandbox, store))
    primary.execute("INSERT INTO %s SELECT g, 'B' FROM generate_series(10001, %d) g" % (TABLE, 10000 + ROWS['B']))
    time.sleep(1.1)
    target = primary.execute('SELECT clock_timestamp()')[0][0]
    time.sleep(1.1)
    primary.execute("INSERT INTO %s SELECT g, 'C' FROM generate_series(20001, %d) g" % (TABLE, 20000 + ROWS['C']))
    _switch_and_wait(sandbox)
    yield dict(root=root, store=store, made=made, target=target)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def datadir(sandbox, backup):
    """A data directory path (not created) beside the store; any server on it is stopped afterwards."""
    path = os.path.join(tempfile.mkdtemp(prefix='pgdata-', dir=backup['root']), 'data')
    os.chmod(os.path.dirname(path), 0o755)
    yield path
    _stop(sandbox, path)
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _occupied(path):
    """A data directory holding a previous cluster's files (PG_VERSION and global/pg_control make it one); returns
    its listing."""
    os.makedirs(os.path.join(path, 'base'), exist_ok=True)
    os.makedirs(os.path.join(path, 'global'), exist_ok=True)
    with open(os.path.join(path, 'PG_VERSION'), 'w', encoding='utf-8') as handle:
        handle.write('15\n')
    with open(os.path.join(path, 'global', 'pg_control'), 'wb') as handle:
        handle.write(b'\0' * 8192)
    with open(os.path.join(path, 'base', 'old'), 'wb') as handle:
        handle.write(b'previous cluster')
    return sorted(os.listdir(path))


def test_the_bundle_records_the_backup(sandbox, backup):
    made = backup['made']
    name = made['bundle']['name']
    assert basebackup.PATTERN.match(name) and made['bundle']['url'] == os.path.join(backup['store'], name)
    assert sorted(os.listdir(backup['store'])) == [name, name + '.sha256'], 'no partial file is left'
    assert set(made['members']) == {'base.tar.gz', 'pg_wal.tar.gz', 'backup_manifest'}
    assert made['timeline'] >= 1 and made['start_lsn'] and made['stop_lsn'] and made['deleted'] == []
    assert made['system_identifier'] == sandbox.primary.execute('SELECT system_identifier::text FROM pg_control_system()')[0][0]
    assert sandbox.password not in repr(made)
    scratch = tempfile.mkdtemp()
    try:
        manifest = bundle.extract_verified(made['bundle']['url'], scratch)
    finally:
        shutil.rmtree(scratch)
    assert manifest['kind'] == 'base-backup' and manifest['info']['start_lsn'] == made['start_lsn']
    assert manifest['info']['server_major'] == 15 and manifest['info']['system_identifier'] == made['system_identifier']


def test_bootstrap_replays_the_archive_and_leaves_recovery(sandbox, backup, datadir):
    os.makedirs(datadir)
    _occupied(datadir)
    params = bootstrap_params(sandbox, backup['store'], datadir)
    port = params['settings']['port']
    result = bootstrap.bootstrap_data_directory(params)

    assert result['wiped'] and result['started'] and result['pid'] and postmaster_of(datadir) == result['pid']
    assert _query(port, sandbox, 'SELECT pg_is_in_recovery()') == [(False,)]
    # B and C were written after the base backup: they come from the WAL archive through restore_command.
    assert _batches(port, sandbox) == ROWS
    assert result['timeline'] > backup['made']['timeline'] == result['backup']['timeline']
    walfile = _query(port, sandbox, 'SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0]
    assert int(walfile[:8], 16) == result['timeline']
    assert result['recovered_to_lsn'] and result['recovery']['cluster_state'] == 'in production'
    assert result['seconds']['recovery'] > 0 and result['bundle']['name'] == backup['made']['bundle']['name']
    assert [e['name'] for e in result['removed']] == ['PG_VERSION', 'base', 'global']
    assert not os.path.exists(os.path.join(datadir, 'base', 'old')) and not os.path.exists(os.path.join(datadir, 'recovery.signal'))
    info = os.stat(datadir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sandbox.server_user.uid
    with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
        auto = handle.read()
    block = auto.partition(bootstrap.CONF_MARK)[2]
    assert "restore_command = 'cp %s/%%f \"%%p\"'" % sandbox.archive_dir in block and 'port = %d' % port in block
    assert 'recovery_target' not in ''.join(l for l in block.splitlines() if not l.startswith('#'))
    assert _query(port, sandbox, 'SHOW archive_mode') == [('off',)]

    # While it runs, neither a bootstrap nor a wipe touches it.
    with pytest.raises(PgopsError, match='PID %d.*is running' % result['pid']) as refused:
        bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], datadir))
    assert refused.value.details['wiped'] is False
    with pytest.raises(PgopsError, match='is running'):
        wipe.wipe_data_directory(dict(data_directory=datadir, confirm=datadir, clear_parent=False, server_user=None))
    assert _batches(port, sandbox) == ROWS


def test_recovery_target_time_recovers_only_what_came_before_it(sandbox, backup, datadir):
    params = bootstrap_params(sandbox, backup['store'], datadir, recovery_target_time=backup['target'].isoformat())
    result = bootstrap.bootstrap_data_directory(params)
    assert result['recovery']['stop'].startswith('recovery stopping before commit of transaction')
    assert _batches(params['settings']['port'], sandbox) == dict(A=ROWS['A'], B=ROWS['B'])
    with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
        assert 'recovery_target_time' not in handle.read().partition(bootstrap.CONF_MARK)[2]


def test_a_failed_recovery_fails_with_the_server_log(sandbox, backup, datadir):
    # A target after the end of the archive: PostgreSQL 15 refuses to end recovery before it (FATAL).
    future = (utc_now() + datetime.timedelta(days=1)).isoformat()
    with pytest.raises(PgopsError) as failed:
        bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], datadir, recovery_target_time=future))
    error = failed.value
    assert 'did not finish recovery' in error.msg and 'recovery ended before configured recovery target was reached' in error.msg
    assert '--- last lines of the server log ---' in error.msg and error.details['log_tail']
    assert error.details['wiped'] is True and error.details['changed'] is True and error.details['phase'] == 'recovery'
    assert not postmaster_of(datadir)


def test_bootstrap_refuses_without_the_right_confirmation(sandbox, backup, datadir):
    os.makedirs(datadir)
    listing = _occupied(datadir)
    for confirm in (None, '', 'yes', os.path.dirname(datadir)):
        with pytest.raises(PgopsError) as refused:
            bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], datadir, confirm=confirm))
        assert 'set confirm to exactly %s' % datadir in refused.value.msg.lower()
        assert refused.value.details['wiped'] is False
    assert sorted(os.listdir(datadir)) == listing


def _rewrite_member(archive, member, change):
    """Rebuild the bundle with ``member``'s bytes changed, the old manifest kept, and a matching new .sha256."""
    members = []
    with tarfile.open(archive, 'r:gz') as tar:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else None
            members.append((info, change(data) if info.name == member else data))
    with tarfile.open(archive, 'w:gz') as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    digest = hashlib.sha256(open(archive, 'rb').read()).hexdigest()
    with open(archive + '.sha256', 'w', encoding='ascii') as handle:
        handle.write('%s  %s\n' % (digest, os.path.basename(archive)))


def _flip_middle_byte(data):
    data = bytearray(data)
    data[len(data) // 2] ^= 0x01
    return bytes(data)


@pytest.mark.parametrize('damage', ['member', 'archive'])
def test_a_corrupted_bundle_is_refused_and_the_data_directory_untouched(sandbox, backup, datadir, damage):
    store = tempfile.mkdtemp(dir=backup['root'])
    name = backup['made']['bundle']['name']
    for item in (name, name + '.sha256'):
        shutil.copy(os.path.join(backup['store'], item), os.path.join(store, item))
    if damage == 'member':
        _rewrite_member(os.path.join(store, name), 'base.tar.gz', _flip_middle_byte)
        expected = 'bundle %s is refused: member base.tar.gz differs from the manifest' % name
    else:
        with open(os.path.join(store, name), 'r+b') as handle:
            handle.seek(os.path.getsize(os.path.join(store, name)) // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0x01]))
        expected = 'bundle %s is corrupt' % name
    os.makedirs(datadir)
    listing = _occupied(datadir)
    for check_mode in (True, False):
        with pytest.raises(PgopsError) as refused:
            bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, store, datadir), check_mode=check_mode)
        assert expected in refused.value.msg and refused.value.details['wiped'] is False
    assert sorted(os.listdir(datadir)) == listing
    with open(os.path.join(datadir, 'base', 'old'), 'rb') as handle:
        assert handle.read() == b'previous cluster'


def test_wipe_refuses_without_confirmation_and_empties_with_it(sandbox, backup, datadir):
    os.makedirs(datadir)
    listing = _occupied(datadir)
    beside = os.path.join(os.path.dirname(datadir), 'stray.sql')
    with open(beside, 'w', encoding='utf-8') as handle:
        handle.write('select 1;\n')
    params = dict(data_directory=datadir, confirm=None, clear_parent=True, server_user=None)
    with pytest.raises(PgopsError, match='set confirm to exactly %s' % datadir):
        wipe.wipe_data_directory(params)
    assert sorted(os.listdir(datadir)) == listing and os.path.exists(beside)
    result = wipe.wipe_data_directory(dict(params, confirm=datadir))
    assert result['changed'] and os.listdir(datadir) == [] and not os.path.exists(beside)
    assert [e['name'] for e in result['before']['data_directory']] == listing
    assert [e['name'] for e in result['before']['parent']] == ['stray.sql']
    info = os.stat(datadir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and (info.st_uid, info.st_gid) == (sandbox.server_user.uid, sandbox.server_user.gid)


def test_clear_parent_never_deletes_a_cluster_beside_the_data_directory(sandbox, backup, datadir):
    """Debian's layout (.../16/main and .../16/replica): wiping one with clear_parent is refused while the other, a
    real cluster, runs beside it, and after it stopped; check mode too. Nothing of either is deleted."""
    os.makedirs(datadir)
    listing = _occupied(datadir)
    replica = os.path.join(os.path.dirname(datadir), 'replica')
    params = bootstrap_params(sandbox, backup['store'], replica)
    started = bootstrap.bootstrap_data_directory(params)
    try:
        assert started['started'] and postmaster_of(replica) == started['pid']
        wipe_params = dict(data_directory=datadir, confirm=datadir, clear_parent=True, server_user=None)
        for check_mode in (True, False):
            with pytest.raises(PgopsError, match='would also delete other PostgreSQL clusters') as refused:
                wipe.wipe_data_directory(wipe_params, check_mode=check_mode)
            assert 'PID %d, which is alive' % started['pid'] in refused.value.msg and refused.value.details['clusters'] == [replica]
        assert _batches(params['settings']['port'], sandbox) == ROWS
    finally:
        _stop(sandbox, replica)
    with pytest.raises(PgopsError, match='%s \\(a PostgreSQL data directory\\)' % replica):
        wipe.wipe_data_directory(wipe_params)
    assert sorted(os.listdir(datadir)) == listing and os.path.isfile(os.path.join(replica, 'global', 'pg_control'))


def _pre_existing(store, stamps):
    """Older bundles (one byte, their .sha256 beside) named like the real ones."""
    for stamp in stamps:
        name = 'basebackup-%s.bundle.tar.gz' % stamp
        with open(os.path.join(store, name), 'wb') as handle:
            handle.write(b'x')
        with open(os.path.join(store, name + '.sha256'), 'w', encoding='ascii') as handle:
            handle.write('0' * 64 + '  ' + name + '\n')


def test_a_failing_pg_basebackup_fails_with_its_message_and_deletes_nothing(sandbox, backup):
    primary = sandbox.primary
    password = 'no-repl-%s' % uuid.uuid4().hex[:12]
    primary.execute("DROP ROLE IF EXISTS bb_no_repl")
    primary.execute("CREATE ROLE bb_no_repl LOGIN PASSWORD '%s'" % password)
    store = tempfile.mkdtemp(dir=backup['root'])
    _pre_existing(store, ('20200101-0620', '20200108-0620'))
    before = sorted(os.listdir(store))
    params = bundle_params(sandbox, store, login_user='bb_no_repl', login_password=password, keep=1)
    with pytest.raises(PgopsError) as check:
        basebackup.take_base_backup(params, check_mode=True)
    assert 'role bb_no_repl has neither REPLICATION nor SUPERUSER' in check.value.msg
    with pytest.raises(PgopsError) as failed:
        basebackup.take_base_backup(params)
    assert 'pg_basebackup failed' in failed.value.msg
    assert 'must be superuser or replication role' in failed.value.msg
    assert 'Nothing was stored and no bundle was deleted' in failed.value.msg
    assert password not in failed.value.msg + repr(failed.value.details)
    assert sorted(os.listdir(store)) == before, 'no partial file, and retention did not run'


def test_retention_keeps_the_newest_after_the_new_bundle_is_stored(sandbox, backup):
    store = tempfile.mkdtemp(dir=backup['root'])
    _pre_existing(store, ('20200101-0620', '20200108-0620', '20200115-0620'))
    with open(os.path.join(store, 'records_dump_20251102.tar.gz'), 'wb') as handle:
        handle.write(b'uploaded by hand')
    check = basebackup.take_base_backup(bundle_params(sandbox, store, keep=2), check_mode=True)
    assert check['deleted'] == ['basebackup-20200101-0620.bundle.tar.gz', 'basebackup-20200108-0620.bundle.tar.gz']
    assert len(os.listdir(store)) == 7
    made = basebackup.take_base_backup(bundle_params(sandbox, store, keep=2))
    assert made['deleted'] == check['deleted']
    name = made['bundle']['name']
    assert sorted(os.listdir(store)) == sorted(['basebackup-20200115-0620.bundle.tar.gz', 'basebackup-20200115-0620.bundle.tar.gz.sha256',
                                                name, name + '.sha256', 'records_dump_20251102.tar.gz'])
    # Two more runs right after it (older versions named bundles by the minute and refused the second run of a
    # minute): each stores a bundle of its own, the one it reports, and retention keeps the newest 2, never the run's.
    runs = [basebackup.take_base_backup(bundle_params(sandbox, store, keep=2)) for dummy in range(2)]
    names = [r['bundle']['name'] for r in runs]
    assert len(set([name] + names)) == 3
    assert runs[0]['deleted'] == ['basebackup-20200115-0620.bundle.tar.gz'] and runs[1]['deleted'] == [name]
    for reported in (r['bundle'] for r in runs):
        assert basebackup.PATTERN.match(reported['name']) and reported['url'] == os.path.join(store, reported['name'])
        with open(reported['url'], 'rb') as handle:
            data = handle.read()
        with open(reported['url'] + '.sha256', encoding='ascii') as handle:
            recorded = handle.read().split()
        assert hashlib.sha256(data).hexdigest() == reported['sha256'] == recorded[0] and recorded[1] == reported['name']
        assert len(data) == reported['bytes']
        assert bundle.BundleStore.from_params(dict(directory=store)).verify(reported['name'])['kind'] == 'base-backup'
    assert sorted(os.listdir(store)) == sorted([item for n in names for item in (n, n + '.sha256')] +
                                               ['records_dump_20251102.tar.gz'])


def _dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen(['true'])
    process.wait()
    return process.pid


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_run_removes_what_killed_runs_left_writes_with_mode_and_refuses_bad_options(sandbox, backup):
    store = tempfile.mkdtemp(dir=backup['root'])
    scratch = tempfile.mkdtemp(dir=backup['root'])
    name = bundle.bundle_name(basebackup.NAME_PREFIX, suffix=basebackup.SUFFIX)
    # What a killed run leaves (its process is gone): the staging directory with pg_basebackup's output in
    # scratch_dir, the archive being packed in the store. And a run still going (this process) is left alone.
    dead = _dead_pid()
    stale = []
    for place, entry in ((scratch, 'basebackup'), (store, None)):
        path = partial_path(place, name).replace('.pid%d@' % os.getpid(), '.pid%d@' % dead)
        if entry:
            os.makedirs(os.path.join(path, entry))
            with open(os.path.join(path, entry, 'base.tar.gz'), 'wb') as handle:
                handle.write(b'half a base backup')
        else:
            with open(path, 'wb') as handle:
                handle.write(b'half an archive')
        stale.append(path)
    running = partial_path(store, name)
    os.mkdir(running)
    before = dict(store=sorted(os.listdir(store)), scratch=sorted(os.listdir(scratch)))
    params = bundle_params(sandbox, store, scratch_dir=scratch, keep=0, mode='0640')

    check = basebackup.take_base_backup(params, check_mode=True)
    assert check['removed_partials'] == stale and check['changed']
    assert dict(store=sorted(os.listdir(store)), scratch=sorted(os.listdir(scratch))) == before, 'check mode wrote nothing'
    made = basebackup.take_base_backup(params)
    assert made['removed_partials'] == stale and not any(os.path.lexists(p) for p in stale)
    assert os.listdir(scratch) == [] and os.path.isdir(running)
    new = made['bundle']['name']
    assert sorted(os.listdir(store)) == sorted([new, new + '.sha256', os.path.basename(running)])
    assert _mode(made['bundle']['url']) == 0o640 and _mode(made['bundle']['url'] + '.sha256') == 0o640
    os.rmdir(running)
    default = basebackup.take_base_backup(bundle_params(sandbox, store, keep=0))
    assert _mode(default['bundle']['url']) == 0o600 and _mode(default['bundle']['url'] + '.sha256') == 0o600

    # Refused before anything is made or read, check mode too: a system directory as scratch_dir, a mode others read.
    listing = sorted(os.listdir(store))
    etc = sorted(os.listdir('/etc'))
    for check_mode in (True, False):
        with pytest.raises(PgopsError, match='Refusing scratch_dir /etc: it is a system directory'):
            basebackup.take_base_backup(bundle_params(sandbox, store, scratch_dir='/etc'), check_mode=check_mode)
        with pytest.raises(PgopsError, match="mode must be '0600', '0640' or '0660'"):
            basebackup.take_base_backup(bundle_params(sandbox, store, mode='0644'), check_mode=check_mode)
    assert sorted(os.listdir(store)) == listing and sorted(os.listdir('/etc')) == etc


def test_s3_bundle_verified_from_the_bucket(sandbox, backup, datadir):
    s3 = sandbox.s3
    prefix = 'it-%s/basebackup' % uuid.uuid4().hex[:8]
    s3_options = dict(bucket=s3.bucket, prefix=prefix, endpoint_url=s3.endpoint_url, access_key=s3.access_key,
                      secret_key=s3.secret_key, region=s3.region)
    made = basebackup.take_base_backup(bundle_params(sandbox, None, scratch_dir=backup['root'], **s3_options))
    assert made['bundle']['url'] == 's3://%s/%s/%s' % (s3.bucket, prefix, made['bundle']['name'])
    keys = sorted(o['Key'] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get('Contents', []))
    assert keys == ['%s/%s' % (prefix, made['bundle']['name']), '%s/%s.sha256' % (prefix, made['bundle']['name'])]
    assert not [n for n in os.listdir(backup['root']) if n.startswith(PARTIAL_PREFIX)]
    os.makedirs(datadir)
    listing = _occupied(datadir)
    check = bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, None, datadir, scratch_dir=backup['root'], **s3_options), check_mode=True)
    assert check['bundle']['name'] == made['bundle']['name'] and check['backup']['start_lsn'] == made['start_lsn']
    assert [e['name'] for e in check['removed']] == listing and sorted(os.listdir(datadir)) == listing


def test_playbooks(sandbox, backup, datadir):
    store = tempfile.mkdtemp(dir=backup['root'])
    # libpq's environment of the sandbox, with the password as a Job's Secret would give it.
    env = dict(PGPASSWORD=sandbox.password, PGHOST='127.0.0.1')
    made = run_playbook(sandbox, 'pgops.resilience.basebackup_bundle', dict(basebackup_directory=store, basebackup_keep=2), env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    assert 'written to %s' % store in made.stdout and 'retention deleted 0 bundle(s)' in made.stdout
    assert sandbox.password not in made.stdout + made.stderr
    # pg_basebackup's stderr goes through module.warn: no "warnings passed to exit_json" deprecation (ansible-core 2.19).
    assert 'DEPRECATION' not in made.stdout + made.stderr

    port = free_port()
    variables = dict(bootstrap_data_directory=datadir, bootstrap_directory=store, bootstrap_wal_archive_directory=sandbox.archive_dir,
                     bootstrap_settings={'port': port, 'archive_mode': 'off'}, bootstrap_timeout=120)
    refused = run_playbook(sandbox, 'pgops.resilience.bootstrap_from_basebackup', variables)
    assert refused.returncode != 0 and 'Set bootstrap_confirm to exactly %s' % datadir in refused.stdout
    assert not os.path.exists(datadir)
    booted = run_playbook(sandbox, 'pgops.resilience.bootstrap_from_basebackup', dict(variables, bootstrap_confirm=datadir))
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert 'runs on the new timeline' in booted.stdout
    assert _batches(port, sandbox) == ROWS
    _stop(sandbox, datadir)

    wipe_vars = dict(wipe_data_directory=datadir, wipe_clear_parent=False)
    refused = run_playbook(sandbox, 'pgops.resilience.wipe_pgdata', wipe_vars)
    assert refused.returncode != 0 and 'Set wipe_confirm to exactly %s' % datadir in refused.stdout
    assert os.path.exists(os.path.join(datadir, 'PG_VERSION'))
    wiped = run_playbook(sandbox, 'pgops.resilience.wipe_pgdata', dict(wipe_vars, wipe_confirm=datadir))
    assert wiped.returncode == 0, wiped.stdout + wiped.stderr
    assert os.listdir(datadir) == [] and 'is empty (0700' in wiped.stdout


# -- destructive paths: system directories, directories that are not data directories ---------------------------


def _snapshot(path):
    """{relative path: sha256 of the file, or 'dir' / 'link -> target'} of everything under ``path`` (links not
    followed)."""
    found = {}
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            rel = os.path.relpath(full, path)
            if os.path.islink(full):
                found[rel] = 'link -> ' + os.readlink(full)
            elif os.path.isdir(full):
                found[rel] = 'dir'
            else:
                with open(full, 'rb') as handle:
                    found[rel] = hashlib.sha256(handle.read()).hexdigest()
    return found


def _etc_state():
    """What must not change in /etc: its entries, and the bytes of files that nothing else here writes."""
    state = dict(names=sorted(os.listdir('/etc')))
    for name in ('hostname', 'os-release', 'passwd', 'group'):
        path = os.path.join('/etc', name)
        if os.path.isfile(path):
            with open(path, 'rb') as handle:
                state[name] = hashlib.sha256(handle.read()).hexdigest()
    return state


def _wipe_params(datadir, **overrides):
    return dict(dict(data_directory=datadir, confirm=datadir, clear_parent=False, server_user=None), **overrides)


def _refused_everywhere(sandbox, backup, path, expected):
    """wipe and bootstrap (start=false), in check mode and for real, both refuse ``path`` with ``expected``."""
    for check_mode in (True, False):
        with pytest.raises(PgopsError) as refused:
            wipe.wipe_data_directory(_wipe_params(path), check_mode=check_mode)
        assert expected in refused.value.msg and 'Nothing was changed' in refused.value.msg
        with pytest.raises(PgopsError) as refused:
            bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], path, start=False), check_mode=check_mode)
        assert expected in refused.value.msg
        assert refused.value.details['wiped'] is False and refused.value.details['changed'] is False


def test_a_symbolic_link_to_etc_is_refused_and_etc_left_alone(sandbox, backup):
    work = tempfile.mkdtemp(dir=backup['root'])
    link = os.path.join(work, 'pgdata')
    os.symlink('/etc', link)
    before = _etc_state()
    _refused_everywhere(sandbox, backup, link, 'Refusing data_directory %s: it resolves to /etc, a system directory' % link)
    _refused_everywhere(sandbox, backup, os.path.join(link, 'ssl'), 'it resolves to /etc/ssl, a system directory')
    # The reported fault: /etc itself, and check mode on /usr and /usr/share.
    _refused_everywhere(sandbox, backup, '/etc', 'Refusing data_directory /etc: it is a system directory')
    for path in ('/usr', '/usr/share'):
        with pytest.raises(PgopsError, match='/usr and everything under it'):
            wipe.wipe_data_directory(_wipe_params(path), check_mode=True)
        with pytest.raises(PgopsError, match='/usr and everything under it'):
            bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], path, start=False), check_mode=True)
    assert _etc_state() == before
    assert os.listdir(work) == ['pgdata'], 'no scratch directory was made'


def _bind_read_only(source, target):
    """``mount --bind source target``, then remount it read-only. True only when ``target`` is a read-only view of
    ``source`` (then even a wipe that was not refused could delete nothing there); otherwise nothing stays mounted."""
    if subprocess.run(['mount', '--bind', source, target], capture_output=True, check=False).returncode != 0:
        return False
    subprocess.run(['mount', '-o', 'remount,bind,ro', target], capture_output=True, check=False)
    if os.statvfs(target).f_flag & os.ST_RDONLY:
        return True
    subprocess.run(['umount', '-l', target], capture_output=True, check=False)
    return False


def test_a_bind_mount_of_etc_is_refused(sandbox, backup):
    work = tempfile.mkdtemp(dir=backup['root'])
    target = os.path.join(work, 'pgdata')
    os.mkdir(target)
    if not _bind_read_only('/etc', target):
        tool_missing('this process may not make a read-only bind mount (mount --bind; run as root)')
    try:
        before = _etc_state()
        _refused_everywhere(sandbox, backup, target, 'Refusing data_directory %s: it is the same directory as the system '
                            'directory /etc, through a bind mount' % target)
        _refused_everywhere(sandbox, backup, os.path.join(target, 'ssl'), '(%s, above it, is)' % target)
        assert _etc_state() == before
    finally:
        subprocess.run(['umount', '-l', target], capture_output=True, check=False)
    assert not os.path.ismount(target)


def test_a_directory_that_is_not_a_data_directory_is_refused_and_left_intact(sandbox, backup, datadir):
    os.makedirs(os.path.join(datadir, 'reports'))
    for name, text in (('notes.txt', 'keep me'), ('reports/q1.csv', 'a,b\n1,2\n'), ('PG_VERSION', '15\n')):
        with open(os.path.join(datadir, name), 'w', encoding='utf-8') as handle:
            handle.write(text)
    before = _snapshot(datadir)
    _refused_everywhere(sandbox, backup, datadir, 'Refusing to empty data_directory %s: it is neither empty nor a '
                        'PostgreSQL data directory' % datadir)
    with pytest.raises(PgopsError, match='has no global/pg_control, and holds PG_VERSION, notes.txt, reports'):
        wipe.wipe_data_directory(_wipe_params(datadir))
    assert _snapshot(datadir) == before and len(before) == 4


def test_an_empty_directory_and_a_real_data_directory_are_allowed(sandbox, backup, datadir):
    os.makedirs(datadir)
    check = bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], datadir, start=False), check_mode=True)
    assert check['changed'] and check['removed'] == [] and os.listdir(datadir) == []
    result = bootstrap.bootstrap_data_directory(bootstrap_params(sandbox, backup['store'], datadir, start=False))
    assert result['wiped'] and result['restored']['files'] > 100
    # What the base backup restored is a real data directory (the server's own PG_VERSION and pg_control).
    restored = _snapshot(datadir)
    assert 'PG_VERSION' in restored and 'global/pg_control' in restored and INCOMPLETE_MARKER not in restored
    assert data_directory_state(datadir)[0] == 'data directory'
    check = wipe.wipe_data_directory(_wipe_params(datadir), check_mode=True)
    assert check['changed'] and sorted(os.path.basename(p) for p in check['removed']) == sorted(os.listdir(datadir))
    assert _snapshot(datadir) == restored, 'check mode deleted nothing'
    wiped = wipe.wipe_data_directory(_wipe_params(datadir))
    assert wiped['changed'] and os.listdir(datadir) == [] and wiped['bytes_removed'] > 0
    again = wipe.wipe_data_directory(_wipe_params(datadir))
    assert not again['changed'] and again['removed'] == []


WIPE_CASES_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: A symbolic link to /etc
      pgops.resilience.pg_wipe_data_directory: {data_directory: "{{ link }}", confirm: "{{ link }}"}
      register: to_etc
      ignore_errors: true
    - name: A directory of other files
      pgops.resilience.pg_wipe_data_directory: {data_directory: "{{ foreign }}", confirm: "{{ foreign }}"}
      register: foreign_dir
      ignore_errors: true
    - name: A data directory
      pgops.resilience.pg_wipe_data_directory: {data_directory: "{{ data }}", confirm: "{{ data }}"}
      register: data_dir
    - name: The bootstrap, on the link to /etc
      pgops.resilience.pg_bootstrap_basebackup:
        data_directory: "{{ link }}"
        confirm: "{{ link }}"
        directory: "{{ store }}"
        wal_archive_directory: /wal-archive
        start: false
      register: bootstrap_etc
      ignore_errors: true
    - name: Outcomes
      ansible.builtin.assert:
        that:
          - "to_etc is failed and ('Refusing data_directory ' ~ link ~ ': it resolves to /etc') in to_etc.msg"
          - foreign_dir is failed and 'neither empty nor a PostgreSQL data directory' in foreign_dir.msg
          - data_dir is changed and data_dir.removed | length == 3
          - bootstrap_etc is failed and 'resolves to /etc' in bootstrap_etc.msg and not bootstrap_etc.wiped
"""


def test_the_modules_as_ansible_runs_them(sandbox, backup, tmp_path):
    work = tempfile.mkdtemp(dir=backup['root'])
    link, foreign, data = (os.path.join(work, name) for name in ('link', 'foreign', 'data'))
    os.symlink('/etc', link)
    os.makedirs(foreign)
    with open(os.path.join(foreign, 'keep.txt'), 'w', encoding='utf-8') as handle:
        handle.write('keep me')
    os.makedirs(data)
    _occupied(data)
    playbook = tmp_path / 'wipe-cases.yml'
    playbook.write_text(WIPE_CASES_PLAYBOOK)
    variables = dict(link=link, foreign=foreign, data=data, store=backup['store'])
    etc, kept, occupied = _etc_state(), _snapshot(foreign), _snapshot(data)
    check = run_playbook(None, str(playbook), variables, check=True)
    assert check.returncode == 0 and 'All assertions passed' in check.stdout, check.stdout + check.stderr
    assert _snapshot(data) == occupied and _snapshot(foreign) == kept and _etc_state() == etc
    real = run_playbook(None, str(playbook), variables)
    assert real.returncode == 0 and 'All assertions passed' in real.stdout, real.stdout + real.stderr
    assert os.listdir(data) == [] and _snapshot(foreign) == kept and _etc_state() == etc


# -- secrets in restore_command and settings ---------------------------------------------------------------------

AWS_SECRET = 'AwsSecret%s' % uuid.uuid4().hex
CONNINFO_PASSWORD = 'Conninfo-Pw-%s' % uuid.uuid4().hex[:8]
SECRET_COMMAND = 'AWS_SECRET_ACCESS_KEY=%s barman-cloud-wal-restore s3://backups/pg pg %%f %%p' % AWS_SECRET
SECRET_SETTINGS = {'primary_conninfo': 'host=10.0.0.9 user=replicator password=%s' % CONNINFO_PASSWORD}


def _secret_params(sandbox, backup, datadir, **overrides):
    """A bootstrap that only prepares the data directory (start=false: the command would find no bucket), with an AWS
    secret key in restore_command and a password in a conninfo setting."""
    params = bootstrap_params(sandbox, backup['store'], datadir, start=False, wal_archive_directory=None,
                              restore_command=SECRET_COMMAND, settings=dict(SECRET_SETTINGS, port=free_port()))
    params.update(overrides)
    return params


def _no_secret_in(text):
    for secret in (AWS_SECRET, CONNINFO_PASSWORD):
        assert secret not in text


def test_restore_command_and_settings_are_masked_in_the_result_not_in_the_data_directory(sandbox, backup, datadir):
    params = _secret_params(sandbox, backup, datadir)
    check = bootstrap.bootstrap_data_directory(params, check_mode=True)
    result = bootstrap.bootstrap_data_directory(params)
    for shown in (check, result):
        _no_secret_in(repr(shown))
        assert shown['restore_command'] == '********'
        assert "restore_command = '********'" in shown['settings'] and "primary_conninfo = '********'" in shown['settings']
        assert 'port = %d' % params['settings']['port'] in shown['settings'], 'other settings are shown as they are'
    # The server needs the real values: postgresql.auto.conf has them, and only its owner may read it.
    auto = os.path.join(datadir, 'postgresql.auto.conf')
    with open(auto, encoding='utf-8') as handle:
        block = handle.read().partition(bootstrap.CONF_MARK)[2]
    assert "restore_command = '%s'" % SECRET_COMMAND in block and CONNINFO_PASSWORD in block
    assert _mode(auto) == 0o600
    # A refused command: the message names the problem, not the command.
    with pytest.raises(PgopsError) as refused:
        bootstrap.bootstrap_data_directory(_secret_params(sandbox, backup, datadir, restore_command=SECRET_COMMAND + ' %x'))
    assert "restore_command has '%x'" in refused.value.msg
    _no_secret_in(refused.value.msg + repr(refused.value.details))


SECRET_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Prepare a data directory, restore_command with a secret key
      pgops.resilience.pg_bootstrap_basebackup:
        data_directory: "{{ datadir }}"
        confirm: "{{ datadir }}"
        directory: "{{ store }}"
        restore_command: "{{ command }}"
        settings: "{{ settings }}"
        start: false
      register: prepared
    - name: Refused, the same secret in a command with an unknown escape
      pgops.resilience.pg_bootstrap_basebackup:
        data_directory: "{{ datadir }}"
        confirm: "{{ datadir }}"
        directory: "{{ store }}"
        restore_command: "{{ command }} %x"
        start: false
      register: refused
      ignore_errors: true
    - name: Outcomes
      ansible.builtin.assert:
        that:
          - prepared.restore_command == '********'
          - refused is failed and "restore_command has '%x'" in refused.msg
"""


def test_the_module_never_shows_the_secrets(sandbox, backup, datadir, tmp_path):
    playbook = tmp_path / 'secret-restore-command.yml'
    playbook.write_text(SECRET_PLAYBOOK)
    variables = dict(datadir=datadir, store=backup['store'], command=SECRET_COMMAND,
                     settings=dict(SECRET_SETTINGS, port=free_port()))
    for check in (True, False):
        played = run_playbook(None, str(playbook), variables, check=check, verbose=True)
        assert played.returncode == 0 and 'All assertions passed' in played.stdout, played.stdout + played.stderr
        assert '"module_args"' in played.stdout, '-vvv shows the module arguments'
        _no_secret_in(played.stdout + played.stderr)
    with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
        assert AWS_SECRET in handle.read()
