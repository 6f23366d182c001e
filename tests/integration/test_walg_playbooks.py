# -*- coding: utf-8 -*-
"""The wal-g playbooks as a user runs them (``ansible-playbook pgops.resilience.<name>``) against the sandbox: a
check run that pushes nothing, a backup, then a restore drill of it."""

from __future__ import annotations

import uuid

from .helpers import run_playbook
from .test_walg_restore_drill import objects_under, ship_wal


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
