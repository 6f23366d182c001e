# -*- coding: utf-8 -*-
"""``walg_retention`` and WAL verification against the real wal-g on moto's S3: five full backups whose recorded
times are moved back across four ISO weeks, the plan equal to what wal-g removed, object by object; afterwards the
oldest kept weekly backup restores, a PITR drill from the window's base reaches a target between two marker rows,
``verify`` passes although wal-g calls the deleted gaps lost, and a needed segment removed fails it."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._walg import info, prune, push
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import moment
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import segment_of

from .helpers import _defaults
from .test_walg_backup import backup_params
from .test_walg_restore_drill import drill, drill_params, ship_wal
from .walg_helpers import module_params, rows_around_a_target

UTC = datetime.timezone.utc
POLICY = dict(keep_daily=1, keep_weekly=4, recovery_window_days=1)


def _key(sandbox, prefix, name):
    return '%s/%s' % (prefix[len('s3://%s/' % sandbox.bucket):], name)


def _move_back(sandbox, prefix, name, finish):
    """Rewrite the times backup ``name`` records (its ``metadata.json``, what ``backup-list --detail`` reads) so that
    it finished at ``finish`` (aware datetime), keeping its duration."""
    client = sandbox.s3.client()
    key = _key(sandbox, prefix, 'basebackups_005/%s/metadata.json' % name)
    meta = json.loads(client.get_object(Bucket=sandbox.bucket, Key=key)['Body'].read())
    started, ended = moment(meta['start_time']), moment(meta['finish_time'])
    meta['start_time'] = (finish - (ended - started)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    meta['finish_time'] = finish.strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    client.put_object(Bucket=sandbox.bucket, Key=key, Body=json.dumps(meta).encode())


def _keys(sandbox, prefix):
    return set(o[len(_key(sandbox, prefix, '')):] for o in sandbox.s3.objects(_key(sandbox, prefix, '')))


def _retention_params(sandbox, walg_bin, prefix, **overrides):
    params = _defaults(prune.module_spec()['argument_spec'])
    params.update(module_params(sandbox, walg_bin, prefix), timeout=300, **POLICY)
    params.update(overrides)
    return params


def _info_params(sandbox, walg_bin, prefix, **overrides):
    params = _defaults(info.module_spec()['argument_spec'])
    params.update(backup_params(sandbox, walg_bin, prefix))
    params.update(verify=['integrity', 'timeline'], recovery_window_days=POLICY['recovery_window_days'])
    params.update(overrides)
    for walg_backup_only in ('data_directory', 'permanent', 'delta_max_steps', 'user_data'):
        del params[walg_backup_only]
    return params


@pytest.fixture(scope='module')
def history(sandbox, walg_bin):
    """Five full backups B1..B5 (with WAL between them) whose times are moved to, counting from this ISO week's
    Monday 00:00 UTC: B1 Thursday three weeks back, B2 Sunday three weeks back, B3 Sunday two weeks back, B4 Saturday
    last week, B5 now. With 1 daily, 4 weekly, a 1-day window: B2..B5 are kept, B1 and the WAL around B2 and B3 go.
    Then two marker rows, a PITR target between them, and every segment shipped."""
    prefix = 's3://%s/walg-retention/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    sandbox.primary.execute('DROP TABLE IF EXISTS walg_retention_rows; CREATE TABLE walg_retention_rows (n int)')
    backups = []
    for n in range(5):
        sandbox.primary.execute('INSERT INTO walg_retention_rows SELECT g FROM generate_series(1, 1000) g;'
                                ' SELECT pg_switch_wal()')
        backups.append(push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']['name'])
    target = rows_around_a_target(sandbox, 'walg_retention_marker')
    ship_wal(sandbox, walg_bin, prefix, backups[0][5:29])
    now = datetime.datetime.now(UTC)
    monday = datetime.datetime.combine(now.date() - datetime.timedelta(days=now.weekday()), datetime.time(), UTC)
    moved = [monday - datetime.timedelta(days=18) + datetime.timedelta(hours=3),   # Thursday, week -3
             monday - datetime.timedelta(days=15) + datetime.timedelta(hours=5),   # Sunday, week -3
             monday - datetime.timedelta(days=8) + datetime.timedelta(hours=5),    # Sunday, week -2
             monday - datetime.timedelta(days=2) + datetime.timedelta(hours=12)]   # Saturday, week -1
    for name, finish in zip(backups, moved):
        _move_back(sandbox, prefix, name, finish)
    return prefix, backups, target


def test_the_plan_is_what_wal_g_removed_object_by_object_and_the_kept_backups_still_restore(sandbox, walg_bin, history):
    prefix, (b1, b2, b3, b4, b5), target = history
    before = _keys(sandbox, prefix)
    planned = prune.apply_retention(_retention_params(sandbox, walg_bin, prefix), check_mode=True)
    assert _keys(sandbox, prefix) == before  # check mode deletes nothing
    reasons = dict((k['name'], k['reasons']) for k in planned['keep'])
    assert [k['name'] for k in planned['keep']] == [b2, b3, b4, b5]
    assert reasons[b2][0].startswith('weekly') and reasons[b3][0].startswith('weekly')
    assert 'base of the recovery window' in reasons[b4] and 'newest' in reasons[b5]
    assert planned['delete'] == [b1] and planned['window_base'] == b4
    # WAL deleted: everything before B2, and between B2 and B3, B3 and B4: three runs, none from B4's start on.
    assert len(planned['wal_delete']) == 3, planned['wal_delete']
    assert all(r['last'][8:] < planned['wal_keep_from'][8:] for r in planned['wal_delete'])

    result = prune.apply_retention(_retention_params(sandbox, walg_bin, prefix))
    assert result['changed'] and result['delete'] == planned['delete'] and result['wal_delete'] == planned['wal_delete']
    after = _keys(sandbox, prefix)
    removed = before - after
    doomed_segments = set()
    for run in planned['wal_delete']:
        first, last = segment_of(run['first']), segment_of(run['last'])
        doomed_segments |= set((first[0], n) for n in range(first[1], last[1] + 1))
    expected = set(k for k in before if k.startswith('basebackups_005/%s' % b1))
    expected |= set(k for k in before if k.startswith('wal_005/') and segment_of(k) in doomed_segments)
    assert removed == expected
    assert after == before - expected
    assert result['bytes_freed'] > 0
    # Nothing left to do: a second run deletes nothing.
    again = prune.apply_retention(_retention_params(sandbox, walg_bin, prefix))
    assert not again['changed'] and again['delete'] == [] and again['wal_delete'] == []

    # The oldest kept weekly backup restores, with only the WAL of its own range left around it.
    restored = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, backup_name=b2, checks=[
        dict(name='rows of the second batch', query='SELECT count(*) FROM walg_retention_rows', expected=2000)]))
    assert restored['verdict'] == 'passed', restored
    # A PITR drill from the window's base reaches a target between the two marker rows.
    pitr = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, backup_name=b4, recovery_target_time=target, checks=[
        dict(name='only the row before the target', query='SELECT pg_catalog.array_agg(n ORDER BY n)::text FROM walg_retention_marker',
             expected='{1}')]))
    assert pitr['verdict'] == 'passed', pitr

    # wal-g calls the deleted gaps lost (with one upload at a time it takes no missing segment for one in flight);
    # the backups and the window do not need them.
    ship_wal(sandbox, walg_bin, prefix, b5[5:29])
    verified = info.list_backups(_info_params(sandbox, walg_bin, prefix, walg_env=dict(WALG_UPLOAD_CONCURRENCY='1')))
    integrity = verified['verify']['integrity']
    assert integrity['walg_status'] == 'FAILURE' and integrity['status'] in ('OK', 'WARNING'), integrity
    assert integrity['lost'] == [] and any(r['status'] == 'MISSING_LOST' and not r['needed'] for r in integrity['details'])
    assert verified['verify']['timeline']['status'] == 'OK' and verified['verdict'] in ('ok', 'warning')
    assert not verified['changed']


def test_a_needed_segment_removed_fails_verification_and_the_walg_verify_playbook(sandbox, walg_bin, history, tmp_path):
    prefix, backups = history[:2]
    # The removed segment must lie more than WALG_UPLOAD_CONCURRENCY (16) segments behind the newest: wal-g takes a
    # gap closer than that for segments still being archived (a WARNING).
    for dummy in range(18):
        sandbox.primary.execute('INSERT INTO walg_retention_rows VALUES (0); SELECT pg_switch_wal()')
    ship_wal(sandbox, walg_bin, prefix, backups[-1][5:29])
    client = sandbox.s3.client()
    # A segment inside the newest backup's range: recovery from it needs it.
    segment = backups[-1][5:29]
    doomed = [k for k in _keys(sandbox, prefix) if k.startswith('wal_005/%s' % segment)]
    assert doomed
    for key in doomed:
        client.delete_object(Bucket=sandbox.bucket, Key=_key(sandbox, prefix, key))
    verified = info.list_backups(_info_params(sandbox, walg_bin, prefix))
    assert verified['verdict'] == 'failure' and verified['verify']['integrity']['status'] == 'FAILURE'
    assert [r['start_segment'][8:] <= segment[8:] <= r['end_segment'][8:] for r in verified['verify']['integrity']['lost']] == [True]

    env = dict(os.environ, AWS_ENDPOINT_URL=sandbox.s3.endpoint_url, AWS_ACCESS_KEY_ID=sandbox.s3.access_key,
               AWS_SECRET_ACCESS_KEY=sandbox.s3.secret_key, AWS_REGION=sandbox.s3.region)
    extra = dict(walg_prefix=prefix, walg_bin=walg_bin, walg_recovery_window_days=1, walg_login_host='127.0.0.1',
                 walg_login_port=sandbox.primary.port, walg_login_user='postgres', walg_login_password=sandbox.password)
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(extra))
    proc = subprocess.run(['ansible-playbook', 'pgops.resilience.walg_verify', '-e', '@%s' % vars_file],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0, proc.stdout
    assert 'WAL verification failed for %s' % prefix in proc.stdout and segment[8:] in proc.stdout
    assert sandbox.password not in proc.stdout + proc.stderr
