# -*- coding: utf-8 -*-
"""barman_retention on real catalogs written by barman-cloud-wal-archive and barman-cloud-backup (moto's S3 server).

Each test ships WAL to a barman server of its own (the ``barman_server`` fixture) and takes real base backups.
The plan is compared with what barman-cloud-backup-delete then really removes.
"""

from __future__ import annotations

import datetime
import re

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._barman import retention as barman_retention
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from tests.integration.helpers import barman_params, run_playbook


def _params(settings, **overrides):
    return barman_params(barman_retention.argument_spec(), settings, **overrides)


def _keys(box, prefix):
    return set(box.s3.objects(prefix))


def _server_keys(box, settings):
    return _keys(box, 'barman/%s/' % settings['server_name'])


def _backdate(box, settings, backup_id, days):
    """Move a real backup's begin/end time ``days`` into the past in its backup.info (barman reads them there)."""
    client = box.s3.client()
    key = 'barman/%s/base/%s/backup.info' % (settings['server_name'], backup_id)
    text = client.get_object(Bucket=box.bucket, Key=key)['Body'].read().decode()

    def shift(match):
        value = datetime.datetime.fromisoformat(match.group(2)) - datetime.timedelta(days=days)
        return '%s=%s' % (match.group(1), value.isoformat(sep=' '))

    text = re.sub(r'^(begin_time|end_time)=(.+)$', shift, text, flags=re.MULTILINE)
    client.put_object(Bucket=box.bucket, Key=key, Body=text.encode())


def _backups(box, count):
    return [box.barman_backup() for dummy in range(count)]


def test_redundancy_plan_is_exactly_what_barman_removes(barman_sandbox, barman_server):
    box = barman_sandbox
    ids = _backups(box, 3)
    before = _server_keys(box, barman_server)

    preview = barman_retention.apply_retention(_params(barman_server, retention_policy='REDUNDANCY 1'), check_mode=True)
    planned = preview['plan']
    assert preview['changed'] is True and preview['dry_run_agrees'] is True
    assert planned['delete_backups'] == ids[:2] and planned['kept_backups'] == ids[2:]
    assert _server_keys(box, barman_server) == before, 'check mode deleted something'
    # the WAL before the kept backup goes, the kept backup's own WAL stays
    kept_begin = [b for b in planned['backups'] if b['backup_id'] == ids[2]][0]['begin_wal']
    assert planned['wal_objects'] and all(r['last'] < kept_begin for r in planned['wal_ranges'])
    assert planned['bytes_freed'] > 0 and planned['objects'] == len(planned['backup_objects']) + len(planned['wal_objects'])

    applied = barman_retention.apply_retention(_params(barman_server, retention_policy='REDUNDANCY 1'), check_mode=False)
    after = _server_keys(box, barman_server)
    removed = before - after
    assert removed == set(planned['backup_objects']) | set(planned['wal_objects'])
    assert applied['plan']['delete_backups'] == planned['delete_backups']
    assert 'barman/%s/base/%s/backup.info' % (barman_server['server_name'], ids[2]) in after
    assert any(k.endswith('.history') or '/wals/' in k for k in after)

    again = barman_retention.apply_retention(_params(barman_server, retention_policy='REDUNDANCY 1'), check_mode=False)
    assert again['changed'] is False and again['plan']['delete_backups'] == []


def test_recovery_window_keeps_the_backup_needed_to_reach_the_window_start(barman_sandbox, barman_server):
    box = barman_sandbox
    ids = _backups(box, 3)
    _backdate(box, barman_server, ids[0], 20)
    _backdate(box, barman_server, ids[1], 10)
    before = _server_keys(box, barman_server)
    params = _params(barman_server, retention_policy='RECOVERY WINDOW OF 7 DAYS')

    result = barman_retention.apply_retention(params, check_mode=False)
    statuses = dict((b['backup_id'], b['retention']) for b in result['plan']['backups'])
    assert statuses == {ids[2]: 'VALID', ids[1]: 'VALID', ids[0]: 'OBSOLETE'}
    assert result['dry_run_agrees'] is True
    assert before - _server_keys(box, barman_server) == set(result['plan']['backup_objects']) | set(result['plan']['wal_objects'])


def test_minimum_redundancy_wins_over_the_policy(barman_sandbox, barman_server):
    ids = _backups(barman_sandbox, 2)
    result = barman_retention.apply_retention(_params(barman_server, retention_policy='REDUNDANCY 1', minimum_redundancy=2), check_mode=False)
    assert result['changed'] is False and result['plan']['kept_backups'] == ids


def test_a_policy_barman_cannot_parse_fails_before_touching_anything(barman_sandbox, barman_server):
    with pytest.raises(PgopsError) as info:
        barman_retention.apply_retention(_params(barman_server, retention_policy='keep 3 days'), check_mode=False)
    assert "'REDUNDANCY <n>' or 'RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS'" in info.value.msg


def test_orphaned_server_directories_go_only_when_named_and_never_the_active_one(barman_sandbox, barman_server):
    box = barman_sandbox
    client = box.s3.client()
    orphan = barman_server['server_name'] + '-old'
    for key in ('base/20250101T000000/backup.info', 'wals/0000000100000000/000000010000000000000001.gz'):
        client.put_object(Bucket=box.bucket, Key='barman/%s/%s' % (orphan, key), Body=b'x' * 100)
    client.put_object(Bucket=box.bucket, Key='barman/not-a-server/readme.txt', Body=b'hello')

    with pytest.raises(PgopsError, match='active server_name'):
        barman_retention.apply_retention(_params(barman_server, remove_servers=[barman_server['server_name']]), check_mode=True)
    with pytest.raises(PgopsError, match='not a barman server directory'):
        barman_retention.apply_retention(_params(barman_server, remove_servers=['not-a-server']), check_mode=True)

    preview = barman_retention.apply_retention(_params(barman_server, remove_servers=[orphan]), check_mode=True)
    assert preview['changed'] is True
    assert [(o['name'], o['objects'], o['bytes']) for o in preview['removed_servers']] == [(orphan, 2, 200)]
    assert len(_keys(box, 'barman/%s/' % orphan)) == 2

    done = barman_retention.apply_retention(_params(barman_server, remove_servers=[orphan]), check_mode=False)
    assert done['bytes_freed'] == 200 and _keys(box, 'barman/%s/' % orphan) == set()
    assert _keys(box, 'barman/not-a-server/')


def test_the_playbook_previews_in_check_mode(barman_sandbox, barman_server):
    box = barman_sandbox
    _backups(box, 2)
    before = _server_keys(box, barman_server)
    extra = dict(barman_destination_path=barman_server['destination_path'], barman_server_name=barman_server['server_name'],
                 barman_retention_policy='REDUNDANCY 1')
    run = run_playbook(box, 'pgops.resilience.barman_retention', extra_vars=extra, check=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'Would remove 1 backup(s)' in run.stdout
    assert _server_keys(box, barman_server) == before
    assert barman_server['secret_key'] not in run.stdout + run.stderr
