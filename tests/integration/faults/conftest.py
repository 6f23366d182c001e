# -*- coding: utf-8 -*-
"""Fixtures of the fault-injection tests (``-m faults``): a database per test module, the S3 cutter, the module
runner's work directory, a small tmpfs, a base backup bundle of the primary. The sandbox and the other fixtures come
from ``tests/integration``.

Every test module here sets ``pytestmark = pytest.mark.faults``.
"""

from __future__ import annotations

import os

import pytest

from tests.requirements import tool_missing

from ..archive_helpers import create_database, drop_database
from .runner import run_module
from .s3_cutter import S3Cutter
from .setups import (
    BASEBACKUP_ROWS, BASEBACKUP_TABLE, basebackup_args, prepare_for_basebackup, remove_tree, server_reachable_dir,
    switch_and_wait_archived)
from .small_disk import CannotMount, mount_small_disk, unmount_small_disk
from .snapshots import Snapshot


def pytest_configure(config):
    # No pytest.ini / setup.cfg / pyproject.toml configures pytest in this repository: the marker is registered here.
    config.addinivalue_line('markers', 'faults: fault-injection tests (process kills, S3 cuts, server crashes, full '
                                       'disks, secret leaks) against the real sandbox')


def pytest_assertrepr_compare(op, left, right):
    """``assert before == after`` on two snapshots prints what differs, not two long dicts."""
    if op == '==' and isinstance(left, Snapshot) and isinstance(right, Snapshot):
        return left.diff(right)
    return None


@pytest.fixture(scope='module')
def fault_db(sandbox):
    """A fresh database for one test module (dropped at its end); its name."""
    name = create_database(sandbox)
    yield name
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    drop_database(sandbox, name)


@pytest.fixture
def cutter(sandbox):
    """An :class:`S3Cutter` in front of the sandbox's S3 endpoint, relaying; its hook actions must not raise."""
    with S3Cutter(sandbox.s3.endpoint_url) as proxy:
        yield proxy
        proxy.resume()
    proxy.check()


@pytest.fixture
def workdir(tmp_path):
    """A private directory for module argument files (they hold the test's secrets)."""
    path = tmp_path / 'work'
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def small_disk():
    """A 16 MiB tmpfs (:class:`~.small_disk.SmallDisk`), unmounted at the end. Skipped when it cannot be mounted
    (a failure with ``PGOPS_REQUIRE_TOOLS=1``)."""
    try:
        disk = mount_small_disk(16 * 1024 * 1024)
    except CannotMount as exc:
        tool_missing('cannot mount a small tmpfs: %s' % exc)
    try:
        yield disk
    finally:
        unmount_small_disk(disk)


@pytest.fixture(scope='session')
def basebackup_store(sandbox):
    """A base backup bundle of the sandbox's primary, in a directory store the server user can reach: a dict with
    ``root`` (0755, removed at the end), ``store`` (the directory store under it) and ``made`` (the module's result).

    Table :data:`BASEBACKUP_TABLE` (in database ``postgres``) holds :data:`BASEBACKUP_ROWS` rows by ``batch``:
    ``before`` written before the backup, ``after`` after it and archived, so a bootstrap that recovers from the
    sandbox's WAL archive has both."""
    prepare_for_basebackup(sandbox)
    primary = sandbox.primary
    primary.execute('DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int PRIMARY KEY, batch text NOT NULL)'
                    % (BASEBACKUP_TABLE, BASEBACKUP_TABLE))
    primary.execute("INSERT INTO %s SELECT g, 'before' FROM generate_series(1, %d) g" % (BASEBACKUP_TABLE, BASEBACKUP_ROWS['before']))
    root = server_reachable_dir('pgops-faults-bb-')
    store = os.path.join(root, 'store')
    os.mkdir(store)
    try:
        made = run_module('pg_basebackup_bundle', basebackup_args(sandbox, store), root)
        assert made.returncode == 0 and made.result, made
        primary.execute("INSERT INTO %s SELECT g, 'after' FROM generate_series(100001, %d) g"
                        % (BASEBACKUP_TABLE, 100000 + BASEBACKUP_ROWS['after']))
        switch_and_wait_archived(sandbox)
        yield dict(root=root, store=store, made=made.result)
    finally:
        remove_tree(root)
        if primary.is_running():
            primary.execute('DROP TABLE IF EXISTS %s' % BASEBACKUP_TABLE)
