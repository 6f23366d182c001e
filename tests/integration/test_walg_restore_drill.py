# -*- coding: utf-8 -*-
"""``walg_restore_drill`` against the real wal-g on the sandbox: a backup pushed by ``walg_backup`` to moto's S3,
its WAL shipped with ``wal-g wal-push``, restored and recovered by the shared drill runner with ``wal-g wal-fetch``;
the storage is only read; a backup missing a part fails the drill, naming it."""

from __future__ import annotations

import os
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill, push
from pgops_sandbox.barman import wait_archived

from .helpers import _defaults
from .test_walg_backup import backup_params
from .walg_helpers import module_params, rows_around_a_target, walg


def ship_wal(sandbox, walg_bin, prefix, start_wal):
    """Complete the current WAL segment, then ``wal-g wal-push`` every archived segment from ``start_wal``'s on (any
    timeline) and every history file, as an archive_command running wal-g would have."""
    # A commit first: right after backup-push nothing is written, pg_switch_wal() completes no segment, and
    # wait_archived would wait for one.
    sandbox.primary.execute('SELECT pg_catalog.txid_current()')
    wait_archived(sandbox)
    for name in sorted(os.listdir(sandbox.archive_dir)):
        segment = len(name) == 24 and all(c in '0123456789ABCDEF' for c in name) and name[8:] >= start_wal[8:]
        if segment or name.endswith('.history'):
            walg(sandbox, walg_bin, prefix, 'wal-push', os.path.join(sandbox.archive_dir, name))


def drill_params(sandbox, walg_bin, prefix, **overrides):
    params = _defaults(drill.module_spec()['argument_spec'])
    params.update(module_params(sandbox, walg_bin, prefix), timeout=300)
    params.update(overrides)
    return params


@pytest.fixture(scope='module')
def pushed(sandbox, walg_bin):
    """A prefix on the sandbox's S3 holding one full backup and the WAL to recover it past a marker row."""
    prefix = 's3://%s/walg-drill/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    backup = push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']
    sandbox.primary.execute('DROP TABLE IF EXISTS walg_drill_marker; CREATE TABLE walg_drill_marker AS SELECT 42 AS n')
    ship_wal(sandbox, walg_bin, prefix, backup['name'][5:29])
    return prefix, backup


def objects_under(sandbox, prefix):
    return sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/')


def test_a_wal_g_backup_restores_recovers_past_it_and_the_storage_is_only_read(sandbox, walg_bin, pushed):
    prefix, backup = pushed
    before = objects_under(sandbox, prefix)
    planned = drill.restore_drill(drill_params(sandbox, walg_bin, prefix), check_mode=True)
    assert planned['backup']['name'] == backup['name'] and 'wal-fetch %f %p' in planned['restore_command']
    result = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, checks=[
        dict(name='the row written after the backup', query='SELECT n FROM walg_drill_marker', expected=42)]))
    assert result['verdict'] == 'passed' and result['backup']['name'] == backup['name']
    assert [c['passed'] for c in result['checks']] == [True]
    assert result['seconds']['fetch'] > 0 and result['rto_seconds'] > 0
    assert objects_under(sandbox, prefix) == before  # the drill wrote nothing into the storage


def test_a_backup_missing_a_part_fails_the_drill_naming_the_backup(sandbox, walg_bin):
    walg_prefix = 's3://%s/walg-drill/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    backup = push.take_backup(backup_params(sandbox, walg_bin, walg_prefix))['backup']
    parts = [k for k in objects_under(sandbox, walg_prefix) if '/basebackups_005/%s/tar_partitions/' % backup['name'] in k]
    assert len(parts) >= 2  # the data part(s) and pg_control's
    client = sandbox.s3.client()
    for key in parts:
        client.delete_object(Bucket=sandbox.bucket, Key=key)
    with pytest.raises(PgopsError) as info:
        drill.restore_drill(drill_params(sandbox, walg_bin, walg_prefix))
    assert info.value.details['phase'] == 'fetch' and info.value.details['verdict'] == 'failed'
    assert backup['name'] in info.value.msg and 'is missing from' in info.value.msg


def test_a_backup_name_that_is_not_there_lists_those_that_are(sandbox, walg_bin, pushed):
    prefix, backup = pushed
    with pytest.raises(PgopsError) as info:
        drill.restore_drill(drill_params(sandbox, walg_bin, prefix, backup_name='base_000000010000000000000099'))
    assert backup['name'] in info.value.msg


def test_a_pitr_drill_stops_at_the_target_between_two_marker_rows(sandbox, walg_bin):
    """A row committed before recovery_target_time is there after the drill, one committed after it is not."""
    prefix = 's3://%s/walg-pitr/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    backup = push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']
    target = rows_around_a_target(sandbox, 'walg_pitr_marker')
    ship_wal(sandbox, walg_bin, prefix, backup['name'][5:29])
    result = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, recovery_target_time=target, checks=[
        dict(name='only the row before the target', query='SELECT pg_catalog.array_agg(n ORDER BY n)::text FROM walg_pitr_marker',
             expected='{1}')]))
    assert result['verdict'] == 'passed', result
    assert [c['passed'] for c in result['checks']] == [True], result['checks']
