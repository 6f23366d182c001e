# -*- coding: utf-8 -*-
"""barman_restore_drill on a real barman-cloud catalog: barman-cloud-restore, barman-cloud-wal-restore as
restore_command, the shared drill runner, a real PostgreSQL started on the restored data directory."""

from __future__ import annotations

import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._barman import drill as barman_drill
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from tests.integration.helpers import barman_params, run_playbook


def _params(settings, **overrides):
    return barman_params(barman_drill.argument_spec(), settings, timeout=120, **overrides)


def _catalog_keys(box, server_name):
    return set(box.s3.objects('barman/%s/' % server_name))


@pytest.fixture
def drill_db(barman_sandbox, barman_server):
    """A database with a table, a base backup of it, and rows written after the backup (reached through WAL only)."""
    box = barman_sandbox
    name = 'drill_%s' % barman_server['server_name'].replace('-', '_')
    box.primary.execute('CREATE DATABASE %s' % name)
    box.primary.execute('CREATE TABLE orders (id int PRIMARY KEY, note text); '
                        "INSERT INTO orders SELECT g, 'before backup' FROM generate_series(1, 1000) g", dbname=name)
    backup_id = box.barman_backup()
    box.primary.execute("INSERT INTO orders SELECT g, 'after backup' FROM generate_series(1001, 1500) g", dbname=name)
    box.barman_wait_archived()
    return dict(database=name, backup_id=backup_id, settings=barman_server)


def test_a_drill_restores_recovers_and_checks_without_writing_into_the_catalog(barman_sandbox, drill_db):
    box = barman_sandbox
    settings = drill_db['settings']
    box.barman_server(None)  # nothing else may write into the catalog while we compare it
    before = _catalog_keys(box, settings['server_name'])
    checks = [dict(name='rows from the backup and from WAL', query='SELECT count(*) FROM orders', expected=1500),
              dict(name='archiving is off', query='SHOW archive_mode', expected='off')]

    result = barman_drill.restore_drill(_params(settings, database=drill_db['database'], checks=checks, row_counts=True), check_mode=False)

    assert result['verdict'] == 'passed'
    assert result['backup']['backup_id'] == drill_db['backup_id']
    assert result['timeline'] > result['backup']['timeline']
    outcome = dict((c['name'], c['passed']) for c in result['checks'])
    assert outcome['rows from the backup and from WAL'] is True and outcome['archiving is off'] is True
    assert all(outcome.values()), result['checks']
    assert result['row_counts'] == {'public.orders': 1500}
    assert result['seconds']['fetch'] > 0 and result['rto_seconds'] >= result['seconds']['fetch']
    after = _catalog_keys(box, settings['server_name'])
    assert after == before, 'the drill wrote into the production catalog: %s' % sorted(after - before)
    assert not [k for k in after if k.endswith('%08X.history' % result['timeline'])]


def test_a_failed_check_fails_the_drill_with_the_query_and_its_result(barman_sandbox, drill_db):
    checks = [dict(name='too many orders', query='SELECT count(*) FROM orders', expected=99)]
    with pytest.raises(PgopsError) as info:
        barman_drill.restore_drill(_params(drill_db['settings'], database=drill_db['database'], checks=checks), check_mode=False)
    assert 'SELECT count(*) FROM orders' in info.value.msg and '1500' in info.value.msg
    assert info.value.details['verdict'] == 'failed'


def test_a_drill_over_a_backup_missing_a_wal_segment_fails_loudly(barman_sandbox, drill_db):
    box = barman_sandbox
    client = box.s3.client()
    catalog = barman_drill.BarmanCatalog(client, drill_db['settings']['destination_path'], drill_db['settings']['server_name'])
    begin_wal = catalog.backups()[-1]['begin_wal']
    doomed = [k for k in _catalog_keys(box, drill_db['settings']['server_name']) if k.rsplit('/', 1)[-1].startswith(begin_wal + '.')
              and not k.endswith('.backup.gz')]
    assert doomed, 'the backup start segment should be in the catalog'
    for key in doomed:
        client.delete_object(Bucket=box.bucket, Key=key)
    started = time.monotonic()
    with pytest.raises(PgopsError) as info:
        barman_drill.restore_drill(_params(drill_db['settings'], database=drill_db['database']), check_mode=False)
    assert info.value.details['verdict'] == 'failed'
    assert time.monotonic() - started < 100, 'a broken backup should fail fast, not at the timeout'
    assert 'FATAL' in info.value.msg or 'PANIC' in info.value.msg or 'log' in info.value.msg


def test_a_missing_backup_fails_with_the_known_ones(barman_sandbox, drill_db):
    with pytest.raises(PgopsError, match=drill_db['backup_id']):
        barman_drill.restore_drill(_params(drill_db['settings'], backup_id='20000101T000000'), check_mode=True)


def test_the_playbook_ends_with_a_verdict(barman_sandbox, drill_db):
    extra = dict(barman_destination_path=drill_db['settings']['destination_path'], barman_server_name=drill_db['settings']['server_name'],
                 barman_drill_database=drill_db['database'],
                 barman_drill_checks=[dict(name='orders', query='SELECT count(*) FROM orders', expected=1500)])
    run = run_playbook(barman_sandbox, 'pgops.resilience.barman_restore_drill', extra_vars=extra)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'Restore drill PASSED' in run.stdout and '1 of 1 checks passed' in run.stdout
