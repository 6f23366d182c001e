# -*- coding: utf-8 -*-
"""``amcheck`` through a drill module and a drill playbook, with the real wal-g on the sandbox: a backup pushed to
moto's S3, restored and recovered by ``walg_restore_drill``, then checked by pg_amcheck on the promoted copy. (The
runner's own amcheck tests, a corrupt heap page among them, are in test_drill_runner.py.)"""

from __future__ import annotations

import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill, push

from .helpers import run_playbook
from .test_walg_backup import backup_params
from .test_walg_restore_drill import drill_params, objects_under, ship_wal


@pytest.fixture(scope='module')
def walg_backup(sandbox, walg_bin):
    """A prefix on the sandbox's S3 holding one full backup (with a table and its index) and the WAL to recover it."""
    prefix = 's3://%s/walg-amcheck/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    sandbox.primary.execute('DROP TABLE IF EXISTS walg_amcheck; CREATE TABLE walg_amcheck (id int PRIMARY KEY, note text);'
                            " INSERT INTO walg_amcheck SELECT g, repeat('x', g % 300) FROM generate_series(1, 2000) g")
    backup = push.take_backup(backup_params(sandbox, walg_bin, prefix))['backup']
    # WAL after the backup (a WAL switch right after backup-push's own would complete no segment), replayed by the drill.
    sandbox.primary.execute("INSERT INTO walg_amcheck SELECT g, 'after' FROM generate_series(2001, 2100) g")
    ship_wal(sandbox, walg_bin, prefix, backup['name'][5:29])
    return prefix, backup


def test_walg_restore_drill_with_amcheck_checks_every_database_and_reads_only(sandbox, walg_bin, walg_backup):
    prefix, backup = walg_backup
    before = objects_under(sandbox, prefix)
    planned = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, amcheck=True), check_mode=True)
    assert planned['verdict'] == 'not run (check mode)' and 'amcheck' not in planned  # check mode runs nothing

    result = drill.restore_drill(drill_params(sandbox, walg_bin, prefix, amcheck=True))
    assert result['verdict'] == 'passed' and result['backup']['name'] == backup['name']
    checked = result['amcheck']
    assert {'postgres', 'template1'} <= set(checked['databases']) and 'template0' not in checked['databases']
    assert checked['relations_checked'] > 0 and checked['pages_checked'] > 0
    assert checked['corruption'] == [] and checked['corruption_count'] == 0
    assert result['seconds']['amcheck'] > 0 and result['row_counts']['public.walg_amcheck'] == 2100
    assert objects_under(sandbox, prefix) == before  # pg_amcheck's CREATE EXTENSION stayed in the throwaway copy


def test_the_walg_drill_playbook_runs_amcheck_by_default(sandbox, walg_bin, walg_backup):
    prefix, backup = walg_backup
    run = run_playbook(sandbox, 'pgops.resilience.walg_restore_drill', dict(walg_prefix=prefix, walg_bin=walg_bin))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert 'Restore drill PASSED: backup %s' % backup['name'] in run.stdout
    assert 'pg_amcheck found no corruption in' in run.stdout and 'template1' in run.stdout, run.stdout[-2000:]
