# -*- coding: utf-8 -*-
"""Integration tests of the base backup bundle, the bootstrap from it and the wipe (module_utils/basebackup.py and
the playbooks), over the sandbox primary and its WAL archive (``sandbox.archive_dir``).

One bundle per module, taken after batch A of rows; batches B and C are written after it, with a recovery target time
between them, and archived. A bootstrap that replays the archive must bring back B and C (WAL replay from the archive,
not only the base backup), one with the target only B. Every bootstrapped server runs as postgres beside the sandbox
(another port, archive_mode off, so that it never writes into the sandbox's archive) and is stopped afterwards.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import time
import uuid

import psycopg2
import pytest

from ansible_collections.pgops.resilience.plugins.module_utils import basebackup, bundle, drill
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import postgres_argument_spec

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
    params = _defaults(basebackup.bootstrap_argument_spec())
    params.update(data_directory=datadir, confirm=datadir, directory=str(store) if store else None, wal_archive_directory=sandbox.archive_dir,
                  settings={'port': drill.free_port(), 'archive_mode': 'off'}, timeout=120)
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
    if drill.postmaster_of(datadir):
        sandbox.server_user.run([os.path.join(sandbox.bindir, 'pg_ctl'), 'stop', '-D', datadir, '-m', 'fast', '-w'], check=False)


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
    made = basebackup.take_bundle(bundle_params(sandbox, store))
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
    """A data directory holding a previous cluster's files; returns its listing."""
    os.makedirs(os.path.join(path, 'base'), exist_ok=True)
    with open(os.path.join(path, 'PG_VERSION'), 'w', encoding='utf-8') as handle:
        handle.write('15\n')
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
    result = basebackup.bootstrap(params)

    assert result['wiped'] and result['started'] and result['pid'] and drill.postmaster_of(datadir) == result['pid']
    assert _query(port, sandbox, 'SELECT pg_is_in_recovery()') == [(False,)]
    # B and C were written after the base backup: they come from the WAL archive through restore_command.
    assert _batches(port, sandbox) == ROWS
    assert result['timeline'] > backup['made']['timeline'] == result['backup']['timeline']
    walfile = _query(port, sandbox, 'SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0]
    assert int(walfile[:8], 16) == result['timeline']
    assert result['recovered_to_lsn'] and result['recovery']['cluster_state'] == 'in production'
    assert result['seconds']['recovery'] > 0 and result['bundle']['name'] == backup['made']['bundle']['name']
    assert [e['name'] for e in result['removed']] == ['PG_VERSION', 'base']
    assert not os.path.exists(os.path.join(datadir, 'base', 'old')) and not os.path.exists(os.path.join(datadir, 'recovery.signal'))
    info = os.stat(datadir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == sandbox.server_user.uid
    with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
        auto = handle.read()
    block = auto.partition(basebackup.CONF_MARK)[2]
    assert "restore_command = 'cp %s/%%f \"%%p\"'" % sandbox.archive_dir in block and 'port = %d' % port in block
    assert 'recovery_target' not in ''.join(l for l in block.splitlines() if not l.startswith('#'))
    assert _query(port, sandbox, 'SHOW archive_mode') == [('off',)]

    # While it runs, neither a bootstrap nor a wipe touches it.
    with pytest.raises(PgopsError, match='PID %d.*is running' % result['pid']) as refused:
        basebackup.bootstrap(bootstrap_params(sandbox, backup['store'], datadir))
    assert refused.value.details['wiped'] is False
    with pytest.raises(PgopsError, match='is running'):
        basebackup.wipe(dict(data_directory=datadir, confirm=datadir, clear_parent=False, server_user=None))
    assert _batches(port, sandbox) == ROWS


def test_recovery_target_time_recovers_only_what_came_before_it(sandbox, backup, datadir):
    params = bootstrap_params(sandbox, backup['store'], datadir, recovery_target_time=backup['target'].isoformat())
    result = basebackup.bootstrap(params)
    assert result['recovery']['stop'].startswith('recovery stopping before commit of transaction')
    assert _batches(params['settings']['port'], sandbox) == dict(A=ROWS['A'], B=ROWS['B'])
    with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
        assert 'recovery_target_time' not in handle.read().partition(basebackup.CONF_MARK)[2]


def test_a_failed_recovery_fails_with_the_server_log(sandbox, backup, datadir):
    # A target after the end of the archive: PostgreSQL 15 refuses to end recovery before it (FATAL).
    future = (utc_now() + datetime.timedelta(days=1)).isoformat()
    with pytest.raises(PgopsError) as failed:
        basebackup.bootstrap(bootstrap_params(sandbox, backup['store'], datadir, recovery_target_time=future))
    error = failed.value
    assert 'did not finish recovery' in error.msg and 'recovery ended before configured recovery target was reached' in error.msg
    assert '--- last lines of the server log ---' in error.msg and error.details['log_tail']
    assert error.details['wiped'] is True and error.details['changed'] is True and error.details['phase'] == 'recovery'
    assert not drill.postmaster_of(datadir)


def test_bootstrap_refuses_without_the_right_confirmation(sandbox, backup, datadir):
    os.makedirs(datadir)
    listing = _occupied(datadir)
    for confirm in (None, '', 'yes', os.path.dirname(datadir)):
        with pytest.raises(PgopsError) as refused:
            basebackup.bootstrap(bootstrap_params(sandbox, backup['store'], datadir, confirm=confirm))
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
            basebackup.bootstrap(bootstrap_params(sandbox, store, datadir), check_mode=check_mode)
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
        basebackup.wipe(params)
    assert sorted(os.listdir(datadir)) == listing and os.path.exists(beside)
    result = basebackup.wipe(dict(params, confirm=datadir))
    assert result['changed'] and os.listdir(datadir) == [] and not os.path.exists(beside)
    assert [e['name'] for e in result['before']['data_directory']] == listing
    assert [e['name'] for e in result['before']['parent']] == ['stray.sql']
    info = os.stat(datadir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and (info.st_uid, info.st_gid) == (sandbox.server_user.uid, sandbox.server_user.gid)


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
        basebackup.take_bundle(params, check_mode=True)
    assert 'role bb_no_repl has neither REPLICATION nor SUPERUSER' in check.value.msg
    with pytest.raises(PgopsError) as failed:
        basebackup.take_bundle(params)
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
    check = basebackup.take_bundle(bundle_params(sandbox, store, keep=2), check_mode=True)
    assert check['deleted'] == ['basebackup-20200101-0620.bundle.tar.gz', 'basebackup-20200108-0620.bundle.tar.gz']
    assert len(os.listdir(store)) == 7
    made = basebackup.take_bundle(bundle_params(sandbox, store, keep=2))
    assert made['deleted'] == check['deleted']
    name = made['bundle']['name']
    assert sorted(os.listdir(store)) == sorted(['basebackup-20200115-0620.bundle.tar.gz', 'basebackup-20200115-0620.bundle.tar.gz.sha256',
                                                name, name + '.sha256', 'records_dump_20251102.tar.gz'])
    # A run in a minute that has its bundle already would overwrite it: refused (in check mode too).
    now = utc_now()
    for when in (now, now + datetime.timedelta(minutes=1)):  # the minute may turn between here and the call
        _pre_existing(store, [bundle.bundle_name('x', when)[2:-len('.tar.gz')]])
    with pytest.raises(PgopsError, match='already exists'):
        basebackup.take_bundle(bundle_params(sandbox, store, keep=1), check_mode=True)


def test_s3_bundle_verified_from_the_bucket(sandbox, backup, datadir):
    s3 = sandbox.s3
    prefix = 'it-%s/basebackup' % uuid.uuid4().hex[:8]
    s3_options = dict(bucket=s3.bucket, prefix=prefix, endpoint_url=s3.endpoint_url, access_key=s3.access_key,
                      secret_key=s3.secret_key, region=s3.region)
    made = basebackup.take_bundle(bundle_params(sandbox, None, scratch_dir=backup['root'], **s3_options))
    assert made['bundle']['url'] == 's3://%s/%s/%s' % (s3.bucket, prefix, made['bundle']['name'])
    keys = sorted(o['Key'] for o in s3.client().list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get('Contents', []))
    assert keys == ['%s/%s' % (prefix, made['bundle']['name']), '%s/%s.sha256' % (prefix, made['bundle']['name'])]
    assert not [n for n in os.listdir(backup['root']) if n.startswith(bundle.PARTIAL_PREFIX)]
    os.makedirs(datadir)
    listing = _occupied(datadir)
    check = basebackup.bootstrap(bootstrap_params(sandbox, None, datadir, scratch_dir=backup['root'], **s3_options), check_mode=True)
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

    port = drill.free_port()
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

    wipe = dict(wipe_data_directory=datadir, wipe_clear_parent=False)
    refused = run_playbook(sandbox, 'pgops.resilience.wipe_pgdata', wipe)
    assert refused.returncode != 0 and 'Set wipe_confirm to exactly %s' % datadir in refused.stdout
    assert os.path.exists(os.path.join(datadir, 'PG_VERSION'))
    wiped = run_playbook(sandbox, 'pgops.resilience.wipe_pgdata', dict(wipe, wipe_confirm=datadir))
    assert wiped.returncode == 0, wiped.stdout + wiped.stderr
    assert os.listdir(datadir) == [] and 'is empty (0700' in wiped.stdout
