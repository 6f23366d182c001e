# -*- coding: utf-8 -*-
"""Fixtures for integration tests: the real sandbox (PostgreSQL primary + streaming standby + moto's S3 server).

The sandbox is the same code ``make demo`` runs. When the PostgreSQL server binaries are missing the
tests are skipped, unless ``PGOPS_REQUIRE_TOOLS=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

from pgops_sandbox import Sandbox, SandboxError
from pgops_sandbox.barman import TOOLS_ENV, find_tool
from pgops_sandbox.pgbin import find_bindir
from pgops_sandbox.rem_schema import create_rem_schema
from tests.requirements import tool_missing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# barman-cloud CLIs: the server tools first (the server user can run them; `make server-tools`), so that the
# modules and playbooks under test find the same programs as archive_command and restore_command.
os.environ.setdefault(TOOLS_ENV, os.path.join(ROOT, '.build', 'server-tools', 'bin'))
if os.path.isdir(os.environ[TOOLS_ENV]):
    os.environ['PATH'] = os.environ[TOOLS_ENV] + os.pathsep + os.environ.get('PATH', '')


@pytest.fixture(scope='session')
def sandbox():
    """A running sandbox in a temporary work directory, stopped at the end of the session."""
    try:
        find_bindir()
    except SandboxError as exc:
        tool_missing(str(exc))
    workdir = tempfile.mkdtemp(prefix='pgops-it-')
    os.chmod(workdir, 0o755)
    box = Sandbox(workdir)
    box.up()
    yield box
    box.down()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope='session')
def barman_sandbox():
    """A sandbox of its own (primary only) whose WAL is shipped by barman-cloud-wal-archive to S3.

    Separate from ``sandbox``: failover tests there rebuild and promote, which would write one timeline twice
    into a barman catalog. Tests switch the server name (``barman_server``) to get a catalog of their own.
    """
    try:
        find_bindir()
    except SandboxError as exc:
        tool_missing(str(exc))
    if find_tool('barman-cloud-wal-archive') is None:
        tool_missing('barman-cloud-wal-archive not found; run `make server-tools`')
    workdir = tempfile.mkdtemp(prefix='pgops-it-barman-')
    os.chmod(workdir, 0o755)
    box = Sandbox(workdir, with_standby=False, barman_server='pgops-it-default')
    box.up()
    yield box
    box.down()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def barman_server(barman_sandbox):
    """A fresh barman server name that the barman sandbox's primary ships WAL to; returns barman_settings()."""
    name = 'it-%s' % uuid.uuid4().hex[:8]
    settings = barman_sandbox.barman_server(name)
    barman_sandbox.barman_wait_archived()
    return settings


@pytest.fixture
def healthy(sandbox):
    """Make sure the topology is primary + streaming standby before a test (a previous test may have
    crashed the primary or promoted the standby)."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    standby_in_recovery = False
    if sandbox.standby.is_running():
        standby_in_recovery = sandbox.standby.execute('SELECT pg_is_in_recovery()')[0][0]
    if not standby_in_recovery:
        sandbox.rebuild_standby(source='primary')
    return sandbox


@pytest.fixture
def rem_db(healthy):
    """A fresh database shaped like the runbook's application (2,000 rows per entity table, kv_store filled),
    replicated to the standby. Returns its name."""
    name = 'rem_%s' % uuid.uuid4().hex[:8]
    healthy.primary.execute('CREATE DATABASE %s' % name)
    conn = healthy.primary.connect(dbname=name, autocommit=True)
    try:
        create_rem_schema(conn, rows=2000)
    finally:
        conn.close()
    healthy.wait_for_replay()
    return name


@pytest.fixture
def bucket_key():
    """A watermark key of its own for each test."""
    return 'state/%s/unlogged-watermark.json' % uuid.uuid4().hex[:8]


@pytest.fixture
def store_dir(tmp_path):
    """An empty directory for bundles (a directory store)."""
    path = tmp_path / 'backups'
    path.mkdir()
    return path


@pytest.fixture(scope='session')
def walg_bin():
    """The wal-g that ``make setup`` provides (PGOPS_WALG_BIN), else one on PATH."""
    path = os.environ.get('PGOPS_WALG_BIN') or os.path.join(ROOT, '.build', 'walg', 'wal-g')
    if not os.access(path, os.X_OK):
        path = shutil.which('wal-g')
    if not path:
        tool_missing('wal-g not found; run `make setup` (hacking/install-walg.sh builds it)')
    return path


@pytest.fixture(params=['directory', 's3'])
def walg_prefix(request, tmp_path):
    """A fresh, empty wal-g storage: a directory, then a prefix on the sandbox's S3 server."""
    if request.param == 'directory':
        path = tmp_path / 'walg'
        path.mkdir()
        return str(path)
    sandbox = request.getfixturevalue('sandbox')
    return 's3://%s/walg-it/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
