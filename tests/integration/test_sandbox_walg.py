# -*- coding: utf-8 -*-
"""The sandbox's primary ships its WAL with the real ``wal-g wal-push`` (archive_command) to
``s3://<bucket>/walg/<generation>``: each segment arrives byte for byte; a failing or hanging push fails
archive_command and PostgreSQL retries it, losing nothing; a restore drill recovers from the shipped WAL; each
promotion gets a prefix of its own, so a re-promotion on the same timeline never writes into an earlier one; and
the demo's wal-g part reports its lines."""

from __future__ import annotations

import filecmp
import os
import re
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill, push
from pgops_sandbox import demo, walg
from pgops_sandbox._util import wait_for
from pgops_sandbox.walg_demo import run_walg_demo

from .helpers import run_playbook
from .test_walg_backup import backup_params
from .test_walg_restore_drill import drill_params
from .walg_helpers import walg as run_walg


@pytest.fixture
def shipping(sandbox, walg_bin):  # pylint: disable=unused-argument  # walg_bin: skip/fail when wal-g is missing
    """The sandbox, with wal-g shipping the primary's WAL; its settings are restored after the test."""
    assert sandbox.status()['walg']['enabled'], sandbox.status()['walg']
    yield sandbox
    walg.configure(sandbox)


def archiver(node):
    """(archived_count, last_archived_wal, failed_count, last_failed_wal) of ``node``."""
    return node.execute('SELECT archived_count, last_archived_wal, failed_count, last_failed_wal FROM pg_stat_archiver')[0]


def fetched_equals_archived(sandbox, walg_bin, prefix, segment, tmp_path):
    """wal-g wal-fetch ``segment`` from ``prefix`` and compare it with the copy archive_command made locally."""
    target = tmp_path / segment
    run_walg(sandbox, walg_bin, prefix, 'wal-fetch', segment, str(target))
    return filecmp.cmp(str(target), os.path.join(sandbox.archive_dir, segment), shallow=False)


def test_each_segment_reaches_the_generation_prefix_as_archived(shipping, walg_bin, tmp_path):
    status = shipping.status()['walg']
    generation = walg.generation(shipping.primary)
    assert status['prefix'] == 's3://%s/walg/%s' % (shipping.bucket, generation) and generation.endswith('Z-primary')
    assert status['walg_bin'] and status['skipped'] is None
    assert walg.generation(shipping.standby) == generation  # pg_basebackup copied it; a standby does not archive

    segment = walg.wait_pushed(shipping, shipping.primary)
    assert fetched_equals_archived(shipping, walg_bin, status['prefix'], segment, tmp_path)
    shown = run_walg(shipping, walg_bin, status['prefix'], 'wal-show')
    assert '| OK ' in shown and ' MISSING' not in shown


@pytest.mark.parametrize('fault', ['missing bucket', 'unreachable endpoint'])
def test_a_failing_wal_push_fails_archive_command_and_the_segment_is_pushed_on_retry(shipping, walg_bin, tmp_path, fault):
    node = shipping.primary
    prefix = shipping.walg_settings()['prefix']
    with open(shipping.walg_env_file, encoding='utf-8') as handle:
        settings = handle.read()
    if fault == 'missing bucket':
        broken = settings.replace('s3://%s/walg' % shipping.bucket, 's3://pgops-no-such-bucket/walg')
    else:  # wal-g retries a closed port instead of exiting: the push's time-out must end it
        broken = settings.replace(shipping.s3.endpoint_url, 'http://127.0.0.1:9').replace('WALG_PUSH_TIMEOUT=120', 'WALG_PUSH_TIMEOUT=2')
    assert broken != settings
    shipping.server_user.write_file(shipping.walg_env_file, broken, 0o600)

    failed_before = archiver(node)[2]
    node.execute("SELECT pg_logical_emit_message(false, 'pgops-it', 'x')")
    segment = node.execute('SELECT pg_walfile_name(pg_switch_wal())')[0][0]
    wait_for(lambda: archiver(node)[2] > failed_before and archiver(node)[3] == segment, 'archive_command to fail for %s' % segment, 60)
    last_archived = archiver(node)[1]
    assert last_archived is None or last_archived[:24] < segment
    assert os.path.exists(os.path.join(shipping.archive_dir, segment))  # the local copy ran; wal-push did not succeed

    walg.configure(shipping)  # fixed: PostgreSQL's next attempt pushes the segment it kept
    later = walg.wait_pushed(shipping, node)
    assert later > segment and fetched_equals_archived(shipping, walg_bin, prefix, segment, tmp_path)


def test_a_restore_drill_recovers_from_the_wal_the_primary_shipped(shipping, walg_bin):
    prefix = shipping.walg_settings()['prefix']
    backup = push.take_backup(backup_params(shipping, walg_bin, prefix))['backup']
    shipping.primary.execute('DROP TABLE IF EXISTS walg_shipped_marker; CREATE TABLE walg_shipped_marker AS SELECT 11 AS n')
    walg.wait_pushed(shipping, shipping.primary)  # nothing pushed by hand: archive_command's wal-push only
    result = drill.restore_drill(drill_params(shipping, walg_bin, prefix, backup_name=backup['name'], checks=[
        dict(name='row written after the backup', query='SELECT n FROM walg_shipped_marker', expected=11)]))
    assert result['verdict'] == 'passed' and [c['passed'] for c in result['checks']] == [True]


def _objects(sandbox, prefix):
    return sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/')


def test_each_promotion_ships_to_a_prefix_of_its_own_and_a_re_promotion_never_collides(healthy, walg_bin):
    sandbox = healthy
    first = sandbox.walg_settings('primary')['prefix']
    try:
        sandbox.promote('standby')
        second = sandbox.walg_settings('standby')['prefix']
        walg.wait_pushed(sandbox, sandbox.standby)
        assert second != first

        # A standby rebuilt from the old primary and promoted again takes the same timeline: in one prefix its
        # history file and segments would collide with the first promotion's (whose server is gone now).
        sandbox.rebuild_standby(source='primary')
        second_objects = _objects(sandbox, second)
        histories = sorted(k.rsplit('/', 1)[1] for k in second_objects if '.history' in k)
        assert histories, second_objects
        assert walg.generation(sandbox.standby) == walg.generation(sandbox.primary)
        sandbox.promote('standby')
        third = sandbox.walg_settings('standby')['prefix']
        walg.wait_pushed(sandbox, sandbox.standby)
        third_objects = _objects(sandbox, third)
        assert third not in (first, second)
        assert sorted(k.rsplit('/', 1)[1] for k in third_objects if '.history' in k) == histories
        assert _objects(sandbox, second) == second_objects  # the earlier promotion's storage is untouched
        assert archiver(sandbox.standby)[2] == 0  # no push failed (WALG_PREVENT_WAL_OVERWRITE would say so)
        assert sandbox.status()['walg']['generations'] == {'primary': first.rsplit('/', 1)[1], 'standby': third.rsplit('/', 1)[1]}
    finally:
        sandbox.rebuild_standby(source='primary')


def playbook_runner(sandbox, node, playbook, extra_vars, out, check=False):
    """The demo's ``ansible_playbook`` through the tests' runner (this checkout's collection and ansible)."""
    started = time.monotonic()
    done = run_playbook(None, playbook, extra_vars, env=sandbox.env(node), check=check)
    for line in done.stdout.splitlines():
        out('   ' + line)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return time.monotonic() - started, done.stdout


def test_the_demo_wal_g_part_reports_backup_list_verification_retention_and_both_drills(shipping):
    if not shipping.primary.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [demo.DATABASE])[0][0]:
        shipping.primary.execute('CREATE DATABASE %s' % demo.DATABASE)
    printed = []
    lines = run_walg_demo(shipping, 'primary', printed.append, playbook_runner, demo._step, demo._expect)  # pylint: disable=protected-access
    prefix = shipping.walg_settings()['prefix']
    assert len(lines) == 7, lines
    for line, start in zip(lines, ('wal-g base backup base_', 'wal-g list (walg_backup_info): ', 'wal-g WAL verification ',
                                   'wal-g retention in check mode ', 'wal-g restore drill: ', 'wal-g PITR drill to ',
                                   'The wal-g part took ')):
        assert line.startswith(start), (start, lines)
    assert 'into %s' % prefix in lines[0]
    # Every backup in the prefix is fresh, so the runbook's policy keeps them all (the list counted them).
    listed = re.search(r'(\d+) backup\(s\) in that prefix', lines[1]).group(1)
    assert 'keeps %s backup(s), would delete 0 backup(s)' % listed in lines[3] and 'nothing was deleted' in lines[3]
    assert 'the row written after the backup is there' in lines[4]
    assert 'the row committed before the target is there, the one after it is not' in lines[5]
    assert '== 16. wal-g: a base backup' in '\n'.join(printed) and '== 20. wal-g PITR drill' in '\n'.join(printed)
