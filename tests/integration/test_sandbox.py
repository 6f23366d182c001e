# -*- coding: utf-8 -*-
"""The sandbox's command line: idempotent up, status, env without secrets, down by PID that deletes nothing; the
wal-g prefix the primary ships its WAL to (or why it does not) in status and env."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive
from pgops_sandbox.s3 import SECRET_KEY
from pgops_sandbox.server_user import ServerUser
from pgops_sandbox.walg import find_walg

from .helpers import ROOT


def cli(workdir, *args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'sandbox'))
    return subprocess.run([sys.executable, '-m', 'pgops_sandbox', '--workdir', str(workdir)] + list(args),
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def workdir(tmp_path, sandbox):  # pylint: disable=unused-argument  # sandbox: skip/fail when PostgreSQL is missing
    path = tmp_path / 'sbx'
    os.chmod(tmp_path, 0o755)
    yield path
    cli(path, 'down')


def assert_walg_shown(workdir, status, env_text):
    """With wal-g: status and env name the primary's prefix, its settings file is 0600 and the server user's, and
    neither output holds the S3 secret. Without it: status says the wal-g steps are skipped."""
    text = cli(workdir, 'status').stdout
    if find_walg() is None:
        assert status['walg']['enabled'] is False and 'wal-g:       off, wal-g not found' in text
        assert 'WALG_S3_PREFIX' not in env_text
        return
    generation = (workdir / 'primary' / 'pgops_walg_generation').read_text().strip()
    prefix = 's3://pgops-sandbox/walg/%s' % generation
    assert status['walg']['prefix'] == prefix and status['walg']['generations']['primary'] == generation
    assert 'wal-g:       %s (primary ships its WAL there with wal-push)' % prefix in text
    assert 'export WALG_S3_PREFIX=%s\n' % prefix in env_text
    info = os.stat(workdir / 'walg.env')
    assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == ServerUser().uid
    assert 'AWS_SECRET_ACCESS_KEY=' in (workdir / 'walg.env').read_text()
    for output in (text, json.dumps(status)):
        assert SECRET_KEY not in output


def test_up_is_idempotent_and_down_stops_everything_by_pid(workdir):
    first = cli(workdir, 'up')
    assert first.returncode == 0, first.stderr
    password = json.loads((workdir / 'state.json').read_text())['password']
    assert 'passfile=' in first.stdout and 'endpoint: http://127.0.0.1:' in first.stdout
    second = cli(workdir, 'up', '--json')
    assert second.returncode == 0, second.stderr
    status = json.loads(second.stdout)
    assert [status[c]['action'] for c in ('primary', 'standby', 's3')] == ['already running'] * 3
    assert status['standby']['in_recovery'] is True and status['primary']['in_recovery'] is False
    pids = [status[c]['pid'] for c in ('primary', 'standby', 's3')]
    assert all(pid_alive(pid) for pid in pids)

    env = cli(workdir, 'env')
    assert 'export PGPASSFILE=' in env.stdout and 'export AWS_ENDPOINT_URL=' in env.stdout
    for output in (first.stdout + first.stderr, second.stdout, env.stdout):
        assert password not in output
    assert_walg_shown(workdir, status, env.stdout)

    files_before = sorted(p.name for p in workdir.iterdir())
    down = cli(workdir, 'down')
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(pid) for pid in pids)
    assert sorted(p.name for p in workdir.iterdir()) == files_before
    assert cli(workdir, 'status').returncode == 3
    assert 'not running' in cli(workdir, 'down').stdout
