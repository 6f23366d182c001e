# -*- coding: utf-8 -*-
"""The wal-g playbooks as a user runs them (``ansible-playbook pgops.resilience.<name>``) against the sandbox: a
check run that pushes nothing, a backup, then a restore drill of it."""

from __future__ import annotations

import uuid

from .helpers import run_playbook
from .test_walg_restore_drill import objects_under, ship_wal
from .walg_helpers import rows_around_a_target


def test_backup_then_drill_through_the_playbooks(sandbox, walg_bin):
    prefix = 's3://%s/walg-playbook/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    extra = dict(walg_prefix=prefix, walg_data_directory=sandbox.primary.datadir, walg_bin=walg_bin,
                 walg_login_host='127.0.0.1', walg_login_port=sandbox.primary.port)
    checked = run_playbook(sandbox, 'pgops.resilience.walg_backup', extra, check=True)
    assert checked.returncode == 0, checked.stdout[-3000:] + checked.stderr[-2000:]
    assert 'Would take a full backup (delta_max_steps is 0)' in checked.stdout, checked.stdout[-1500:]
    assert objects_under(sandbox, prefix) == {}

    done = run_playbook(sandbox, 'pgops.resilience.walg_backup', extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert 'Took a full backup base_' in done.stdout and 'the storage holds 1 backup(s)' in done.stdout
    name = done.stdout.split('Took a full backup ')[1].split()[0]

    sandbox.primary.execute('DROP TABLE IF EXISTS walg_playbook_marker; CREATE TABLE walg_playbook_marker AS SELECT 7 AS n')
    ship_wal(sandbox, walg_bin, prefix, name[5:29])
    drill = run_playbook(sandbox, 'pgops.resilience.walg_restore_drill', dict(
        walg_prefix=prefix, walg_bin=walg_bin,
        walg_drill_checks=[dict(name='marker', query='SELECT n FROM walg_playbook_marker', expected=7)]))
    assert drill.returncode == 0, drill.stdout[-3000:] + drill.stderr[-2000:]
    assert 'Restore drill PASSED: backup %s' % name in drill.stdout and '1 of 1 checks passed' in drill.stdout
    assert 'pg_amcheck found no corruption in' in drill.stdout


def test_backup_with_retention_then_a_pitr_drill_through_the_playbooks(sandbox, walg_bin):
    """walg_backup with walg_retention_enabled keeps both fresh backups (the defaults, 7 / 4 / 7); walg_retention in
    check mode deletes nothing; walg_pitr_drill restores the backup before the target and stops between two marker
    rows."""
    prefix = 's3://%s/walg-pitr-playbook/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    extra = dict(walg_prefix=prefix, walg_data_directory=sandbox.primary.datadir, walg_bin=walg_bin,
                 walg_login_host='127.0.0.1', walg_login_port=sandbox.primary.port, walg_retention_enabled=True)
    first = run_playbook(sandbox, 'pgops.resilience.walg_backup', extra)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    name = first.stdout.split('Took a full backup ')[1].split()[0]
    target = rows_around_a_target(sandbox, 'walg_pitr_playbook')
    second = run_playbook(sandbox, 'pgops.resilience.walg_backup', extra)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert 'the storage holds 2 backup(s)' in second.stdout and 'retention deleted 0 backup(s)' in second.stdout
    ship_wal(sandbox, walg_bin, prefix, name[5:29])
    before = objects_under(sandbox, prefix)
    planned = run_playbook(sandbox, 'pgops.resilience.walg_retention', dict(walg_prefix=prefix, walg_bin=walg_bin), check=True)
    assert planned.returncode == 0, planned.stdout[-3000:]
    assert 'Would delete 0 backup(s)' in planned.stdout and 'kept 2 backup(s)' in planned.stdout
    assert objects_under(sandbox, prefix) == before

    pitr = run_playbook(sandbox, 'pgops.resilience.walg_pitr_drill', dict(
        walg_prefix=prefix, walg_bin=walg_bin, walg_pitr_recovery_target_time=target,
        walg_drill_checks=[dict(name='only the row before the target',
                                query='SELECT pg_catalog.array_agg(n ORDER BY n)::text FROM walg_pitr_playbook', expected='{1}')]))
    assert pitr.returncode == 0, pitr.stdout[-3000:] + pitr.stderr[-2000:]
    # The second backup finished after the target: the first one is restored.
    assert 'PITR drill PASSED: backup %s' % name in pitr.stdout and '1 of 1 checks passed' in pitr.stdout, pitr.stdout[-2000:]
    assert 'pg_amcheck found no corruption in' in pitr.stdout  # on by default in the drill playbooks
    assert objects_under(sandbox, prefix) == before
