# -*- coding: utf-8 -*-
"""The wal-g modules under faults, run as Ansible runs them (the module runner) with the real wal-g against the
sandbox's primary and moto's S3, each outcome compared with the storage listing, ``wal-g backup-list`` and the
server before and after:

- wal-g SIGKILLed while ``walg_backup`` pushes: a clear failure, no backup listed, no backup left running on the
  server, and the next push restores;
- two ``walg_backup`` runs of one server at once: one pushes, the other is refused at once (the advisory lock), the
  storage holds one new backup that restores; a run killed while it holds the lock does not block the next;
- the drill's scratch file system too small, at the start or only during the fetch: a clear failure naming the
  backup and the full file system, no scratch directory left, the storage untouched;
- S3 cut during ``walg_retention`` once deletions have started, then a run with S3 back: the storage ends exactly as
  the check-mode plan says, and no kept object is lost on the way;
- two ``walg_retention`` runs at once: the storage ends exactly as the plan says.

Pushes that must take a few seconds read the data directory slowly (:data:`SLOW_PUSH`) instead of filling the
database with hundreds of megabytes: the fault is the same, the tests stay short.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._walg import push
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import segment_of
from tests.requirements import tool_missing

from ..test_walg_backup import backup_params, listed
from ..test_walg_restore_drill import drill_params, ship_wal
from ..test_walg_retention import UTC, _key, _move_back, _retention_params
from .runner import APPLICATION_NAME, ModuleRun, run_module
from .small_disk import FILLER, CannotMount, mount_small_disk, unmount_small_disk
from .snapshots import Snapshot, dir_snapshot

pytestmark = pytest.mark.faults

# wal-g reads the data directory at 4 MiB/s and uploads it in parts of 2 MiB: a push of the sandbox's primary (about
# 22 MB of files) takes about 6 s, and its first parts are in the storage after about 1 s.
SLOW_PUSH = {'WALG_DISK_RATE_LIMIT': str(4 << 20), 'WALG_TAR_SIZE_THRESHOLD': str(2 << 20)}
# What PostgreSQL 15 logs when the session of a non-exclusive backup ends before pg_backup_stop (xlog.c).
BACKUP_ABORTED = 'aborting backup due to backend exiting before pg_backup_stop was called'


# -- the storage ------------------------------------------------------------------------------------------------


def new_prefix(sandbox, what):
    """A fresh wal-g storage on the sandbox's S3: ``s3://<bucket>/walg-faults/<what>/<8 hex>``."""
    return 's3://%s/walg-faults/%s/%s' % (sandbox.bucket, what, uuid.uuid4().hex[:8])


def listing(sandbox, prefix):
    """The storage's objects, ``{key under the prefix: (size, ETag)}`` (a :class:`~.snapshots.Snapshot`)."""
    root = _key(sandbox, prefix, '')
    client = sandbox.s3.client()
    entries = {}
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=sandbox.bucket, Prefix=root):
        for item in page.get('Contents', ()):
            entries[item['Key'][len(root):]] = (item['Size'], item['ETag'].strip('"'))
    return Snapshot('s3', entries)


def copy_storage(sandbox, source, target):
    """Copy every object of the storage ``source`` under ``target`` (server-side): two tests start from the same
    history of backups, each on its own copy."""
    client = sandbox.s3.client()
    for key in listing(sandbox, source):
        client.copy_object(Bucket=sandbox.bucket, Key=_key(sandbox, target, key),
                           CopySource=dict(Bucket=sandbox.bucket, Key=_key(sandbox, source, key)))


def backup_objects(keys, name):
    """The keys of backup ``name`` among ``keys``: its folder and its stop sentinel."""
    return set(k for k in keys if k.startswith('basebackups_005/%s/' % name) or k == 'basebackups_005/%s_backup_stop_sentinel.json' % name)


def planned_objects(keys, planned):
    """The keys among ``keys`` that the retention plan ``planned`` (``walg_retention``'s result) deletes: the objects
    of its ``delete`` backups and the WAL objects of its ``wal_delete`` ranges."""
    doomed = set()
    for name in planned['delete']:
        doomed |= backup_objects(keys, name)
    segments = set()
    for run in planned['wal_delete']:
        timeline, first = segment_of(run['first'])
        last = segment_of(run['last'])[1]
        segments |= set((timeline, n) for n in range(first, last + 1))
    return doomed | set(k for k in keys if k.startswith('wal_005/') and segment_of(k) in segments)


def write_marker(sandbox, value):
    """A row written after the backups (WAL to ship, and a check for the drill): table ``walg_faults_marker``."""
    sandbox.primary.execute('CREATE TABLE IF NOT EXISTS walg_faults_marker (n int); INSERT INTO walg_faults_marker VALUES (%d)'
                            % value)


def drill_passes(sandbox, walg_bin, prefix, workdir, backup_name, marker):
    """Ship the WAL from ``backup_name`` on, then run ``walg_restore_drill`` of it with a check of the marker row;
    assert it passed."""
    write_marker(sandbox, marker)
    ship_wal(sandbox, walg_bin, prefix, backup_name[5:29])
    done = run_module('walg_restore_drill', drill_params(sandbox, walg_bin, prefix, backup_name=backup_name, timeout=180, checks=[
        dict(name='the marker row', query='SELECT bool_or(n = %d) FROM walg_faults_marker' % marker, expected=True)]),
        workdir, timeout=240)
    assert done.returncode == 0 and done.result['verdict'] == 'passed', done
    assert done.result['backup']['name'] == backup_name
    return done.result


# -- processes and sessions --------------------------------------------------------------------------------------


def walg_children(run, command):
    """PIDs of the ``wal-g <command>`` processes the module process of ``run`` (a :class:`~.runner.ModuleRun`)
    started, read from ``/proc``."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry, encoding='ascii', errors='replace') as handle:
                parent = int(handle.read().rsplit(')', 1)[1].split()[1])
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                argv = handle.read().split(b'\0')
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == run.pid and len(argv) > 1 and argv[1] == command.encode():
            found.append(int(entry))
    return found


def kill_walg_when(run, command, predicate, timeout=60.0):
    """SIGKILL the ``wal-g <command>`` child of ``run`` as soon as ``predicate()`` is true (polled every 50 ms),
    leaving the module process alone; returns the PIDs killed ([] when the module ended first)."""
    deadline = time.monotonic() + timeout
    while run.running() and time.monotonic() < deadline:
        if predicate():
            pids = walg_children(run, command)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return pids
        time.sleep(0.05)
    return []


def collection_sessions(sandbox):
    """``(pid, query)`` of the primary's sessions opened by the collection (``application_name`` pgops.resilience:
    the module's own and wal-g's, which libpq's environment names so too)."""
    return sandbox.primary.execute('SELECT pid, query FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()',
                                   [APPLICATION_NAME])


def assert_sessions_end(sandbox, timeout=10.0):
    """Wait until the collection has no session left on the primary (the server notices a killed client's closed
    socket); fail naming those still there after ``timeout`` seconds. Never terminates them: that they end by
    themselves is what is tested."""
    deadline = time.monotonic() + timeout
    while collection_sessions(sandbox):
        assert time.monotonic() < deadline, 'sessions left behind: %r' % (collection_sessions(sandbox),)
        time.sleep(0.05)


def advisory_locks_held(sandbox):
    """How many advisory locks the collection's sessions hold on the primary (int)."""
    return sandbox.primary.execute(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted"
        ' AND a.application_name = %s', [APPLICATION_NAME])[0][0]


def log_offset(sandbox):
    """The size of the primary's server log now, to read what is logged from here on."""
    return os.path.getsize(sandbox.primary.log_file)


def logged_since(sandbox, offset):
    """What the primary's server log holds from byte ``offset`` on (str)."""
    with open(sandbox.primary.log_file, 'rb') as handle:
        handle.seek(offset)
        return handle.read().decode('utf-8', 'replace')


# -- 1. wal-g killed mid-push --------------------------------------------------------------------------------------


def test_wal_g_killed_mid_push_leaves_no_backup_and_the_next_push_restores(sandbox, walg_bin, workdir):
    prefix = new_prefix(sandbox, 'killed-push')
    offset = log_offset(sandbox)
    run = ModuleRun('walg_backup', backup_params(sandbox, walg_bin, prefix, walg_env=SLOW_PUSH), workdir).start()
    killed = kill_walg_when(run, 'backup-push', lambda: any('/tar_partitions/part_' in k for k in listing(sandbox, prefix)))
    failed = run.wait()
    assert killed, 'the push ended before any part of it was in the storage: %r' % failed

    # The module fails with what happened, in that order: which push, the signal, what it leaves.
    assert failed.returncode == 1 and failed.failed, failed
    assert 'Traceback' not in failed.stdout + failed.stderr
    message = failed.result['msg']
    assert message.startswith('wal-g backup-push of %s was ended by signal 9 (SIGKILL) before it finished backup base_'
                              % sandbox.primary.datadir), message
    assert prefix in message and 'Run walg_backup again' in message
    partial = message.split(' before it finished backup ')[1].split(':')[0]

    # The storage holds parts of it, but no stop sentinel: wal-g lists no backup.
    left = listing(sandbox, prefix)
    assert backup_objects(left, partial) and not [k for k in left if k.endswith('_backup_stop_sentinel.json')], sorted(left)
    assert listed(sandbox, walg_bin, prefix) == {}
    # The server: wal-g's session ended, which aborted its backup; nothing of the collection is left running.
    assert_sessions_end(sandbox)
    assert BACKUP_ABORTED in logged_since(sandbox, offset)
    assert sandbox.primary.execute('SELECT count(*) FROM pg_stat_progress_basebackup')[0][0] == 0

    done = run_module('walg_backup', backup_params(sandbox, walg_bin, prefix), workdir)
    assert done.returncode == 0 and not done.failed, done
    name = done.result['backup']['name']
    assert name != partial and list(listed(sandbox, walg_bin, prefix)) == [name]
    drill_passes(sandbox, walg_bin, prefix, workdir, name, marker=1)
    # The killed push's parts are still there, untouched: the drill restored the complete backup beside them.
    after = listing(sandbox, prefix)
    assert all(after[k] == left[k] for k in backup_objects(left, partial))


# -- 2. two pushes at once -----------------------------------------------------------------------------------------


def first_to_end(runs, timeout=120.0):
    """The index of the first of ``runs`` (ModuleRun) to end, polled every 20 ms."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, run in enumerate(runs):
            if not run.running():
                return index
        time.sleep(0.02)
    raise AssertionError('no run ended within %.0f s' % timeout)


def test_two_pushes_at_once_one_is_refused_at_once_and_one_backup_restores(sandbox, walg_bin, workdir):
    prefix = new_prefix(sandbox, 'two-pushes')
    args = backup_params(sandbox, walg_bin, prefix, walg_env=SLOW_PUSH)
    runs = [ModuleRun('walg_backup', args, workdir).start() for dummy in range(2)]
    loser = first_to_end(runs)
    winner = runs[1 - loser]
    assert winner.running(), 'the refused run ended only after the other had pushed: the refusal was not at once'
    refused, pushed = runs[loser].wait(), winner.wait()

    assert pushed.returncode == 0 and not pushed.failed, pushed
    assert refused.returncode == 1 and refused.failed, refused
    assert 'Traceback' not in refused.stdout + refused.stderr
    message = refused.result['msg']
    assert message.startswith('another walg_backup of') and 'is pushing a base backup' in message, message

    name = pushed.result['backup']['name']
    assert list(listed(sandbox, walg_bin, prefix)) == [name]
    # Every object in the storage is the one backup's: nothing of a second push.
    keys = set(listing(sandbox, prefix))
    assert keys == backup_objects(keys, name), sorted(keys - backup_objects(keys, name))
    assert_sessions_end(sandbox)
    drill_passes(sandbox, walg_bin, prefix, workdir, name, marker=2)


def test_a_push_killed_while_it_holds_the_lock_does_not_block_the_next(sandbox, walg_bin, workdir):
    prefix = new_prefix(sandbox, 'killed-holder')
    holder = ModuleRun('walg_backup', backup_params(sandbox, walg_bin, prefix, walg_env=SLOW_PUSH), workdir).start()
    deadline = time.monotonic() + 60
    while not walg_children(holder, 'backup-push'):  # wal-g runs once the lock is taken
        assert holder.running() and time.monotonic() < deadline, 'wal-g backup-push never started'
        time.sleep(0.02)
    assert advisory_locks_held(sandbox) == 1
    holder.kill(group=True)  # the module and its wal-g, as when the task's process group is killed

    assert_sessions_end(sandbox)
    assert advisory_locks_held(sandbox) == 0
    started = time.monotonic()
    done = run_module('walg_backup', backup_params(sandbox, walg_bin, prefix), workdir)
    assert done.returncode == 0 and not done.failed, done
    assert list(listed(sandbox, walg_bin, prefix)) == [done.result['backup']['name']]
    assert time.monotonic() - started < 60


# -- 3. the drill's scratch file system too small ----------------------------------------------------------------


@pytest.fixture(scope='module')
def pushed(sandbox, walg_bin):
    """A storage with one full backup of the primary: ``(prefix, backup record)`` (the drills here stop at the
    fetch: no WAL is needed)."""
    prefix = new_prefix(sandbox, 'pushed')
    return prefix, push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']


@pytest.fixture
def roomier_disk():
    """The ``small_disk`` fixture's tmpfs at 48 MiB, room for the sandbox's backup (about 23 MB) and a filler."""
    try:
        mounted = mount_small_disk(48 << 20)
    except CannotMount as exc:
        tool_missing('cannot mount a small tmpfs: %s' % exc)
    try:
        yield mounted
    finally:
        unmount_small_disk(mounted)


def test_a_scratch_file_system_smaller_than_the_backup_fails_the_drill_before_the_fetch(sandbox, walg_bin, pushed,
                                                                                        small_disk, workdir):
    prefix, backup = pushed
    disk = small_disk
    assert backup['uncompressed_size'] > disk.free_bytes()
    storage, scratch = listing(sandbox, prefix), dir_snapshot(disk.path)
    started = time.monotonic()
    failed = run_module('walg_restore_drill', drill_params(sandbox, walg_bin, prefix, scratch_parent=disk.path, timeout=120),
                        workdir)
    assert time.monotonic() - started < 30, 'it waited for wal-g instead of refusing'
    assert failed.returncode == 1 and failed.failed, failed
    assert 'Traceback' not in failed.stdout + failed.stderr
    assert failed.result['phase'] == 'fetch' and failed.result['verdict'] == 'failed'
    message = failed.result['msg']
    assert message.startswith('The drill cannot fetch backup %s: restored it takes at least %s bytes'
                              % (backup['name'], format(backup['uncompressed_size'], ','))), message
    assert 'the file system of %s has %s bytes free' % (disk.path, format(disk.free_bytes(), ',')) in message
    assert dir_snapshot(disk.path) == scratch  # no scratch directory
    assert listing(sandbox, prefix) == storage


def test_a_scratch_file_system_that_fills_during_the_fetch_fails_the_drill_naming_it(sandbox, walg_bin, pushed,
                                                                                     roomier_disk, workdir):
    """The free space passes the check against wal-g's uncompressed size, but the files take more (tmpfs gives each
    file whole pages): the drill runs out of room. In the fetch, wal-g retries the part a minute later instead of
    failing, so the drill ends at its timeout and the message says the file system was full."""
    prefix, backup = pushed
    disk = roomier_disk
    disk.fill(backup['uncompressed_size'] + 64 * 1024)
    storage, scratch = listing(sandbox, prefix), dir_snapshot(disk.path, ignore=(FILLER,))
    failed = run_module('walg_restore_drill', drill_params(sandbox, walg_bin, prefix, scratch_parent=disk.path, timeout=10),
                        workdir)
    assert failed.returncode == 1 and failed.failed, failed
    assert 'Traceback' not in failed.stdout + failed.stderr
    # Where the room runs out depends on how the restored files round up to pages: in the fetch (wal-g retries the
    # write until the timeout) or, when the fetch just fits, while the drill prepares the copy. Either way it says so.
    assert failed.result['verdict'] == 'failed' and failed.result['phase'] in ('fetch', 'prepare'), failed.result['msg']
    message = failed.result['msg']
    if failed.result['phase'] == 'fetch':
        assert message.startswith('The drill failed while fetching backup %s: wal-g backup-fetch' % backup['name']), message
        assert 'The file system of %s was full when wal-g stopped' % disk.path in message, message
    else:
        assert 'No space left on device' in message and disk.path in message, message
    assert dir_snapshot(disk.path, ignore=(FILLER,)) == scratch  # the scratch directory and what wal-g wrote are gone
    assert listing(sandbox, prefix) == storage


# -- 4. and 5. retention under faults ------------------------------------------------------------------------------


def walg_history(sandbox, walg_bin, prefix):
    """Five full backups B1..B5 in ``prefix`` with WAL between them (``walg_backup``'s push, in this process), the
    WAL shipped, and the times of B1..B4 moved back as ``test_walg_retention`` moves them (counting from this ISO
    week's Monday 00:00 UTC: Thursday and Sunday three weeks back, Sunday two weeks back, Saturday last week; B5 now).
    With :data:`~..test_walg_retention.POLICY` (1 daily, 4 weekly, a 1-day window) the plan deletes B1 and three runs
    of WAL, and keeps B2..B5. Returns the names, oldest first."""
    names = []
    for dummy in range(5):
        write_marker(sandbox, 0)
        sandbox.primary.execute('SELECT pg_switch_wal()')
        names.append(push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']['name'])
    write_marker(sandbox, 0)
    ship_wal(sandbox, walg_bin, prefix, names[0][5:29])
    now = datetime.datetime.now(UTC)
    monday = datetime.datetime.combine(now.date() - datetime.timedelta(days=now.weekday()), datetime.time(), UTC)
    for name, (days, hours) in zip(names, [(18, 3), (15, 5), (8, 5), (2, 12)]):
        _move_back(sandbox, prefix, name, monday - datetime.timedelta(days=days) + datetime.timedelta(hours=hours))
    return names


@pytest.fixture(scope='module')
def history(sandbox, walg_bin):
    """``(prefix, names)`` of a :func:`walg_history`; tests work on copies (:func:`copy_storage`)."""
    prefix = new_prefix(sandbox, 'history')
    return prefix, walg_history(sandbox, walg_bin, prefix)


def retention_case(sandbox, walg_bin, history, workdir):
    """A copy of the history and its check-mode plan: ``(prefix, arguments, before, planned result, kept keys)``."""
    source, names = history
    prefix = new_prefix(sandbox, 'retention')
    copy_storage(sandbox, source, prefix)
    args = _retention_params(sandbox, walg_bin, prefix)
    before = listing(sandbox, prefix)
    preview = run_module('walg_retention', args, workdir, check_mode=True)
    assert preview.returncode == 0 and not preview.failed, preview
    assert listing(sandbox, prefix) == before  # check mode deletes nothing
    planned = preview.result
    assert planned['delete'] == names[:1] and [k['name'] for k in planned['keep']] == names[1:], planned
    assert len(planned['wal_delete']) == 3, planned['wal_delete']
    kept = set(before) - planned_objects(before, planned)
    assert backup_objects(kept, names[1]) and len(kept) < len(before)
    return prefix, args, before, planned, kept


def exactly(before, keys):
    """The part of the snapshot ``before`` under ``keys``: what the storage must be, object by object."""
    return Snapshot('s3', dict((k, before[k]) for k in keys))


def _deletion(request):
    """Predicate: an S3 deletion, DeleteObjects (``POST /<bucket>?delete``; wal-g's SDK sends ``?delete=``) or
    DeleteObject (``DELETE /<bucket>/<key>``)."""
    query = request.path.split('?', 1)[1] if '?' in request.path else ''
    return request.method == 'DELETE' or (request.method == 'POST' and 'delete' in [p.split('=')[0] for p in query.split('&')])


def test_s3_cut_once_retention_deletes_then_a_run_with_s3_back_ends_as_the_plan_says(
        sandbox, walg_bin, history, cutter, workdir):
    prefix, args, before, planned, kept = retention_case(sandbox, walg_bin, history, workdir)
    doomed = planned['delete'][0]
    # The first deletion (wal-g delete target of B1) reaches S3 and is done there; then S3 is cut before wal-g hears.
    fired = cutter.on_request(_deletion, lambda request: cutter.cut(), when='response')
    failed = run_module('walg_retention', dict(args, endpoint_url=cutter.endpoint_url, timeout=15), workdir, timeout=120)
    assert len(fired) == 1, 'no deletion came: %r' % failed
    cutter.resume()
    assert failed.returncode == 1 and failed.failed, failed
    assert 'Traceback' not in failed.stdout + failed.stderr
    message = failed.result['msg']
    assert message.startswith('wal-g delete, deleting backup %s in %s' % (doomed, prefix)), message
    assert cutter.endpoint_url in message and 'did not finish within timeout=15 seconds' in message, message

    middle = listing(sandbox, prefix)
    assert set(middle) >= kept, 'lost: %s' % sorted(kept - set(middle))
    assert middle == exactly(before, set(before) - backup_objects(before, doomed))  # B1 went, nothing else yet
    assert set(listed(sandbox, walg_bin, prefix)) == set(k['name'] for k in planned['keep'])

    again = run_module('walg_retention', args, workdir)
    assert again.returncode == 0 and not again.failed, again
    assert again.result['changed'] and again.result['delete'] == [] and again.result['wal_delete'] == planned['wal_delete']
    assert listing(sandbox, prefix) == exactly(before, kept)
    settled = run_module('walg_retention', args, workdir)
    assert settled.returncode == 0 and not settled.result['changed'], settled


def test_two_retention_runs_at_once_end_as_the_plan_says(sandbox, walg_bin, history, workdir):
    """Both make the same plan (or the second, planning after the first deleted, an empty one) and delete the same
    objects; an object the other already removed counts as done (wal-g: "does not exist"). Both succeed, nothing the
    plan keeps is touched, and the storage ends as the plan says."""
    prefix, args, before, planned, kept = retention_case(sandbox, walg_bin, history, workdir)
    runs = [ModuleRun('walg_retention', args, workdir).start() for dummy in range(2)]
    ended = [run.wait(timeout=120) for run in runs]
    succeeded = [done for done in ended if done.returncode == 0 and not done.failed]
    assert len(succeeded) == 2, ended
    for done in succeeded:
        assert done.result['delete'] in (planned['delete'], []), done.result
    assert listing(sandbox, prefix) == exactly(before, kept)
    settled = run_module('walg_retention', args, workdir)
    assert settled.returncode == 0 and not settled.result['changed'], settled
