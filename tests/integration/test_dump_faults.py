# -*- coding: utf-8 -*-
"""Faults of the logical dump bundles on the real sandbox: secrets in the server's settings, file modes, two runs
started together, a run killed with SIGKILL, and check mode of the restore.

Design chosen for concurrent runs: every run names its bundle ``nightly-YYYYMMDD-HHMMSSmmm-<8 random hex>.tar.gz``, so
two runs started in the same second both succeed, each with a bundle of its own (no lock, which an S3 store could
not hold anyway).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tarfile
import time
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle, dump as dump_bundle, dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import table_fingerprints
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import sha256_file
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect

from .dump_helpers import database_from, dump_params, module_params, restore_params
from .helpers import run_playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
CONNINFO_PASSWORD = 'Conninfo-Pw-%s' % uuid.uuid4().hex[:8]
AWS_SECRET = 'AwsSecret%s' % uuid.uuid4().hex
SECRET_SETTINGS = {
    'primary_conninfo': "host=10.0.0.9 port=5432 user=replicator password=%s application_name=standby" % CONNINFO_PASSWORD,
    'restore_command': 'AWS_SECRET_ACCESS_KEY=%s barman-cloud-wal-restore s3://backups/pg pg %%f %%p' % AWS_SECRET,
}
# A run in a subprocess of its own, as Ansible runs a module: it starts at start_at (time.time()), so that two runs
# begin in the same second.
RUNNER = """
import json, sys, time
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump as dump_bundle
request = json.load(sys.stdin)
time.sleep(max(0.0, request['start_at'] - time.time()))
try:
    print(json.dumps(dict(ok=True, result=dump_bundle.make_dump_bundle(request['params'])), default=str))
except Exception as exc:
    print(json.dumps(dict(ok=False, error=getattr(exc, 'msg', repr(exc)))))
"""
SCHEMA_SQL = """
CREATE TABLE public.orders (id int PRIMARY KEY, note text);
INSERT INTO public.orders SELECT g, 'order ' || g FROM generate_series(1, 3000) AS g;
CREATE TABLE public.audit (id int PRIMARY KEY, at timestamptz);
INSERT INTO public.audit SELECT g, timestamptz '2026-01-01' + g * interval '1 hour' FROM generate_series(1, 200) AS g;
"""


def s3_options(sandbox):
    s3 = sandbox.s3
    return dict(bucket=s3.bucket, prefix='faults/%s' % uuid.uuid4().hex[:8], endpoint_url=s3.endpoint_url,
                access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region)


@pytest.fixture(scope='module')
def source_db(sandbox):
    return database_from(sandbox, 'faults', SCHEMA_SQL)


@pytest.fixture
def umask_022():
    """The usual umask, under which a file created without care is 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _databases(sandbox):
    return set(r[0] for r in sandbox.primary.execute('SELECT datname FROM pg_database'))


@pytest.fixture
def secret_settings(sandbox):
    """primary_conninfo with a password and restore_command with AWS_SECRET_ACCESS_KEY=... on the sandbox primary
    (ALTER SYSTEM + reload; harmless on a primary, which uses neither), put back as they were afterwards."""
    primary = sandbox.primary
    before = dict(primary.execute("SELECT name, setting FROM pg_file_settings WHERE name = ANY(%s) AND applied",
                                  (list(SECRET_SETTINGS),)))
    for name, value in SECRET_SETTINGS.items():
        primary.execute('ALTER SYSTEM SET %s = %%s' % name, (value,))
    primary.execute('SELECT pg_reload_conf()')
    deadline = time.monotonic() + 20
    while primary.execute("SELECT current_setting('restore_command')")[0][0] != SECRET_SETTINGS['restore_command']:
        assert time.monotonic() < deadline, 'the reload did not apply the settings'
        time.sleep(0.1)
    yield
    for name in SECRET_SETTINGS:
        if name in before:
            primary.execute('ALTER SYSTEM SET %s = %%s' % name, (before[name],))
        else:
            primary.execute('ALTER SYSTEM RESET %s' % name)
    primary.execute('SELECT pg_reload_conf()')


def test_settings_with_credentials_are_masked_in_the_bundle(sandbox, source_db, store_dir, secret_settings):
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir))
    path = store_dir / made['bundle']['name']
    with tarfile.open(path) as tar:
        settings = tar.extractfile('pg_settings.tsv').read().decode('utf-8')
    rows = dict((line.split('\t')[0], line.split('\t')[1]) for line in settings.splitlines()[1:])
    assert rows['primary_conninfo'] == '********' and rows['restore_command'] == '********'
    assert rows['archive_command'] == '********'  # a *_command, whatever it holds
    assert rows['port'] == str(sandbox.primary.port) and rows['wal_level'] == 'replica'  # the rest as it is
    for secret in (CONNINFO_PASSWORD, AWS_SECRET):
        assert secret not in settings
        assert secret.encode() not in path.read_bytes()  # not in any member (the archive is stored, not compressed)
        assert secret not in json.dumps(made)


def test_bundle_checksum_and_extracted_members_are_0600(sandbox, source_db, store_dir, tmp_path, umask_022):
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir))
    path = str(store_dir / made['bundle']['name'])
    assert _mode(path) == 0o600 and _mode(path + '.sha256') == 0o600
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert {m.mode for m in members} == {0o600} and 'globals.sql' in [m.name for m in members]
    # Extracted as the restore extracts them (bundle.extract_verified), and downloaded from S3.
    out = tmp_path / 'extracted'
    bundle.extract_verified(path, str(out))
    modes = dict((os.path.relpath(os.path.join(top, n), out), _mode(os.path.join(top, n)))
                 for top, dirs, files in os.walk(out) for n in dirs + files)
    assert modes['globals.sql'] == 0o600 and modes['records.dir'] == 0o700 and modes['records.dir/toc.dat'] == 0o600
    assert set(modes.values()) == {0o600, 0o700} and _mode(out) == 0o700
    s3 = s3_options(sandbox)
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    remote = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, scratch_dir=str(scratch), **s3))
    assert os.listdir(scratch) == []
    download = tmp_path / 'download'
    download.mkdir()
    local = bundle.BundleStore.from_params(s3).fetch(remote['bundle']['name'], str(download))
    assert _mode(local) == 0o600 and _mode(local + '.sha256') == 0o600
    assert sha256_file(local)[0] == remote['bundle']['sha256']
    # A group may be let in (mode), never others.
    group = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir, mode='0640'))
    assert _mode(group['bundle']['url']) == 0o640 and _mode(group['bundle']['url'] + '.sha256') == 0o640
    with pytest.raises(PgopsError, match="mode must be '0600', '0640' or '0660'"):
        dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir, mode='0644'))


def _start_runner(params, start_at):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS, os.path.join(ROOT, 'sandbox')]))
    process = subprocess.Popen([sys.executable, '-c', RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, start_new_session=True)
    process.stdin.write(json.dumps(dict(params=params, start_at=start_at)).encode('utf-8'))
    process.stdin.close()
    process.stdin = None  # given; communicate() reads the outputs only
    return process


def _a_start_time():
    """In 3 s, or a little later so that the runs cannot straddle a minute (the old names had minutes)."""
    start = time.time() + 3
    if start % 60 > 50:
        start += 60 - start % 60 + 1
    return start


@pytest.mark.parametrize('where', ['directory', 's3'])
def test_two_runs_started_together_each_store_the_bundle_they_report(sandbox, source_db, store_dir, tmp_path, where):
    if where == 'directory':
        params = dump_params(sandbox, source_db, store_dir)
    else:
        s3 = s3_options(sandbox)
        scratch = tmp_path / 'scratch'
        scratch.mkdir()
        params = dump_params(sandbox, source_db, scratch_dir=str(scratch), **s3)
    start = _a_start_time()
    runs = [_start_runner(params, start) for dummy in range(2)]
    outcomes = []
    for process in runs:
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr.decode()
        outcomes.append(json.loads(stdout.decode().strip().splitlines()[-1]))
    assert all(o['ok'] for o in outcomes), outcomes
    made = [o['result']['bundle'] for o in outcomes]
    assert made[0]['name'] != made[1]['name']
    # Started in the same minute: with minute names they would have been one file.
    assert made[0]['name'][:len('nightly-YYYYMMDD-HHMM')] == made[1]['name'][:len('nightly-YYYYMMDD-HHMM')]
    store = bundle.BundleStore.from_params(params)
    assert sorted(b['name'] for b in store.list(dump_bundle.PATTERN)) == sorted(m['name'] for m in made)
    for reported in made:
        if where == 'directory':
            data = (store_dir / reported['name']).read_bytes()
            recorded = (store_dir / (reported['name'] + '.sha256')).read_text()
        else:
            client = sandbox.s3.client()
            key = '%s/%s' % (s3['prefix'], reported['name'])
            data = client.get_object(Bucket=s3['bucket'], Key=key)['Body'].read()
            recorded = client.get_object(Bucket=s3['bucket'], Key=key + '.sha256')['Body'].read().decode()
        assert _sha256(data) == reported['sha256'] == recorded.split()[0]
        assert len(data) == reported['bytes']
        assert store.verify(reported['name'])['info']['database'] == source_db
    if where == 'directory':
        assert sorted(os.listdir(store_dir)) == sorted(n for m in made for n in (m['name'], m['name'] + '.sha256'))
    else:
        assert os.listdir(scratch) == []


def _waiting_on_lock(sandbox, database):
    return sandbox.primary.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                                   (database,))[0][0]


@contextlib.contextmanager
def blocked_on_a_lock(sandbox, database, table, start):
    """Lock ``table`` of ``database``, start a run with ``start()`` (a ``Popen`` in a session of its own) and wait until
    it waits on that lock; yield the process. On the way out the lock is released, and a process still running is
    killed with its group (the run and its client program, as when a pod is killed)."""
    locker = sandbox.primary.connect(dbname=database, autocommit=False)
    process = None
    try:
        with locker.cursor() as cur:
            cur.execute('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE' % table)
        process = start()
        deadline = time.monotonic() + 60
        while not _waiting_on_lock(sandbox, database):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, 'the run never reached the locked table %s' % table
            time.sleep(0.05)
        yield process
    finally:
        locker.rollback()
        locker.close()
        if process is not None:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            process.stdout.close()
            process.stderr.close()


def _kill_group(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_partial_dump_left_by_a_killed_run_is_removed_by_the_next_run(sandbox, source_db, store_dir, umask_022):
    params = dump_params(sandbox, source_db, store_dir)
    # The run stops at the lock with its staging directory made: pg_dump (and the fingerprints) wait for the table.
    with blocked_on_a_lock(sandbox, source_db, 'public.audit', lambda: _start_runner(params, 0)) as process:
        partials = [n for n in os.listdir(store_dir) if n.startswith('.partial-')]
        assert len(partials) == 1 and os.path.isdir(store_dir / partials[0] / 'bundle')
        # The dump being built is private too (the run's umask is 022): the settings, pg_dump's directory and files.
        staged = dict((os.path.relpath(os.path.join(top, n), store_dir / partials[0]), _mode(os.path.join(top, n)))
                      for top, dirs, files in os.walk(store_dir / partials[0]) for n in dirs + files)
        assert staged['bundle/pg_settings.tsv'] == 0o600 and staged['bundle/records.dir'] == 0o700
        assert _mode(store_dir / partials[0]) == 0o700 and set(staged.values()) <= {0o600, 0o700}, staged
        _kill_group(process)  # the run and its pg_dump, as when the pod is killed
    assert process.returncode == -signal.SIGKILL
    left = str(store_dir / partials[0])
    assert os.path.isdir(left) and not dump_bundle.PATTERN.match(partials[0])
    # Check mode reports it and removes nothing.
    check = dump_bundle.make_dump_bundle(params, check_mode=True)
    assert check['removed_partials'] == [left] and os.path.isdir(left)
    made = dump_bundle.make_dump_bundle(params)
    assert made['removed_partials'] == [left]
    assert sorted(os.listdir(store_dir)) == [made['bundle']['name'], made['bundle']['name'] + '.sha256']


def _fingerprints(sandbox, database):
    conn = connect(module_params(sandbox, {}, login_db=database))
    try:
        return table_fingerprints(conn, checksums=True)
    finally:
        conn.close()


def _roles(sandbox):
    return sandbox.primary.execute('SELECT rolname, rolpassword, rolcanlogin FROM pg_authid ORDER BY 1')


def test_restore_check_mode_reports_a_change_and_changes_nothing(sandbox, source_db, store_dir, tmp_path):
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir))
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    store_before = sorted(os.listdir(store_dir))
    roles = _roles(sandbox)

    # Into a new database: it would be created; it is not.
    new = 'never_%s' % uuid.uuid4().hex[:8]
    check = dump_restore.restore_dump(restore_params(sandbox, store_dir, database=new, scratch_dir=str(scratch)), check_mode=True)
    assert check['changed'] is True and check['created_database'] is True
    assert check['database'] == new and check['bundle']['name'] == made['bundle']['name'] and check['source'] == 'directory'
    assert new not in _databases(sandbox)

    # Into an existing database with clean=true: it would be restored over; every row stays as it was.
    target = 'kept_%s' % uuid.uuid4().hex[:8]
    sandbox.primary.execute('CREATE DATABASE %s' % target)
    sandbox.primary.execute("CREATE TABLE public.orders (id int PRIMARY KEY, note text); "
                            "INSERT INTO public.orders VALUES (1, 'mine'), (2, 'also mine')", dbname=target)
    before = _fingerprints(sandbox, target)
    check = dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target, clean=True, scratch_dir=str(scratch)),
                                      check_mode=True)
    assert check['changed'] is True and check['created_database'] is False
    assert _fingerprints(sandbox, target) == before
    # Without clean, check mode refuses as the run would.
    with pytest.raises(PgopsError, match='already holds 1 tables'):
        dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target, scratch_dir=str(scratch)), check_mode=True)

    # A drill in check mode: no scratch database, no role.
    drill = dump_restore.restore_dump(restore_params(sandbox, store_dir, drill=True, scratch_dir=str(scratch)), check_mode=True)
    assert drill['changed'] is True and drill['database'].startswith(dump_restore.DRILL_PREFIX)
    assert not [d for d in _databases(sandbox) if d.startswith(dump_restore.DRILL_PREFIX)]

    # From S3: verified from the bucket, nothing downloaded.
    s3 = s3_options(sandbox)
    dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, scratch_dir=str(scratch), **s3))
    remote = dump_restore.restore_dump(restore_params(sandbox, database=new, scratch_dir=str(scratch), **s3), check_mode=True)
    assert remote['changed'] is True and remote['created_database'] is True

    assert os.listdir(scratch) == [] and sorted(os.listdir(store_dir)) == store_before
    assert _roles(sandbox) == roles and new not in _databases(sandbox)
    assert _fingerprints(sandbox, target) == before

    # The module itself, through the playbook in check mode: changed, and still nothing restored.
    played = run_playbook(sandbox, 'pgops.resilience.restore_dump',
                          dict(restore_database=new, restore_directory=str(store_dir)), check=True)
    assert played.returncode == 0, played.stdout + played.stderr
    assert 'changed=1' in played.stdout and '[DEPRECATION WARNING]' not in played.stdout + played.stderr
    assert new not in _databases(sandbox) and _roles(sandbox) == roles


def test_a_scratch_directory_left_by_a_killed_restore_is_removed_by_the_next_run(sandbox, source_db, store_dir, tmp_path):
    dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir))
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    target = 'killed_%s' % uuid.uuid4().hex[:8]
    sandbox.primary.execute('CREATE DATABASE %s' % target)
    sandbox.primary.execute('CREATE TABLE public.orders (id int PRIMARY KEY, note text)', dbname=target)
    params = restore_params(sandbox, store_dir, database=target, clean=True, globals=False, scratch_dir=str(scratch))
    # The restore stops at the lock with the dump extracted: pg_restore --clean waits to drop public.orders.
    with blocked_on_a_lock(sandbox, target, 'public.orders', lambda: _start_restore_runner(params)) as process:
        left = [str(scratch / n) for n in os.listdir(scratch)]
        assert len(left) == 1 and os.path.basename(left[0]).startswith(dump_restore.SCRATCH_PREFIX)
        assert os.path.isfile(os.path.join(left[0], 'bundle', 'records.dir', 'toc.dat')) and _mode(left[0]) == 0o700
        _kill_group(process)  # the run and its pg_restore, as when the pod is killed
    assert process.returncode == -signal.SIGKILL and os.path.isdir(left[0])
    # An earlier version's scratch directory (no owner in its name) goes once older than timeout, not before.
    old = scratch / 'pgops-restore-old45678'
    (old / 'bundle').mkdir(parents=True)
    hours_ago = time.time() - params['timeout'] - 3600
    for path in (old / 'bundle', old):
        os.utime(path, (hours_ago, hours_ago))
    (scratch / 'pgops-restore-young123').mkdir()
    # What is not a scratch directory of ours stays: other names, a file, a link named like a dead run's.
    (scratch / 'pgops-restore-notours').mkdir()
    (scratch / 'other-tool-dir').mkdir()
    (scratch / 'pgops-restore-abcd1234').write_bytes(b'a file, not our directory')
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'precious').write_bytes(b'keep')
    exited = subprocess.Popen(['true'])
    exited.wait()
    os.symlink(victim, scratch / re.sub(r'pid\d+@', 'pid%d@' % exited.pid, os.path.basename(left[0])))
    removed = sorted([str(old)] + left)
    kept = sorted(os.listdir(scratch))

    check = dump_restore.restore_dump(params, check_mode=True)
    assert check['removed_scratch'] == removed and sorted(os.listdir(scratch)) == kept
    again = dump_restore.restore_dump(params)
    assert again['removed_scratch'] == removed and not any(os.path.lexists(p) for p in removed)
    assert sorted(os.listdir(scratch)) == sorted(set(kept) - set(os.path.basename(p) for p in removed))
    assert (victim / 'precious').read_bytes() == b'keep'
    assert again['tables'] == {'public.orders': 3000, 'public.audit': 200}


RESTORE_RUNNER = """
import json, sys
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump_restore
print(json.dumps(dict(result=dump_restore.restore_dump(json.load(sys.stdin))), default=str))
"""


def _start_restore_runner(params):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS, os.path.join(ROOT, 'sandbox')]))
    process = subprocess.Popen([sys.executable, '-c', RESTORE_RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env, start_new_session=True)
    process.stdin.write(json.dumps(params).encode('utf-8'))
    process.stdin.close()
    process.stdin = None
    return process


def test_a_system_directory_as_scratch_dir_is_refused_before_anything_is_made(sandbox, source_db, store_dir, tmp_path):
    dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, store_dir))
    listing = sorted(os.listdir(store_dir))
    link = tmp_path / 'scratch-link'
    os.symlink('/usr/share', link)
    before = dict((d, sorted(os.listdir(d))) for d in ('/etc', '/usr/share'))
    s3 = s3_options(sandbox)
    for scratch, expected in (('/etc', 'Refusing scratch_dir /etc: it is a system directory'),
                              (str(link), 'Refusing scratch_dir %s: it resolves to /usr/share, a system directory' % link)):
        for check_mode in (True, False):
            with pytest.raises(PgopsError) as refused:
                dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, scratch_dir=scratch, **s3), check_mode=check_mode)
            assert expected in refused.value.msg
            with pytest.raises(PgopsError) as refused:
                dump_restore.restore_dump(restore_params(sandbox, store_dir, database='never_%s' % uuid.uuid4().hex[:8],
                                                         scratch_dir=scratch), check_mode=check_mode)
            assert expected in refused.value.msg
    assert dict((d, sorted(os.listdir(d))) for d in ('/etc', '/usr/share')) == before
    assert sorted(os.listdir(store_dir)) == listing and not sandbox.s3.objects(s3['prefix'] + '/')
    # /var/tmp, a system directory but one to make our own directory in, is fine.
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, source_db, scratch_dir='/var/tmp', **s3), check_mode=True)
    assert made['changed']
