# -*- coding: utf-8 -*-
"""pg_bootstrap_basebackup SIGKILLed while it extracts the base backup into the data directory, then run again.

The killed run leaves a data directory that is neither empty nor complete; the marker file
``pgops.resilience-incomplete`` (written before anything is deleted or extracted, removed once the restore is
complete) tells the next run that it may empty it. The run again completes: the server starts, recovers from the
WAL archive (the rows written after the base backup are there) and leaves recovery.
"""

from __future__ import annotations

import os

import psycopg2
import pytest

from .runner import ModuleRun, run_module
from .setups import BASEBACKUP_ROWS, BASEBACKUP_TABLE, bootstrap_args, remove_tree, server_reachable_dir, stop_server

pytestmark = pytest.mark.faults

INCOMPLETE_MARKER = 'pgops.resilience-incomplete'  # the module's documented marker


@pytest.fixture
def datadir(sandbox, basebackup_store):
    """An empty data directory in a directory of its own that the server user can reach; any server started on it
    is stopped at the end."""
    parent = server_reachable_dir('pgops-faults-pgdata-')
    path = os.path.join(parent, 'data')
    os.mkdir(path)
    yield path
    stop_server(sandbox, path)
    remove_tree(parent)


def _extracting(datadir):
    """True once the extraction into ``datadir`` has begun (the marker is there, and the first directories of the
    base backup) and before it has ended (the marker is still there, global/pg_control not yet)."""
    names = set(os.listdir(datadir)) if os.path.isdir(datadir) else set()
    return INCOMPLETE_MARKER in names and 'base' in names and not os.path.exists(os.path.join(datadir, 'global', 'pg_control'))


def _rows(sandbox, port):
    conn = psycopg2.connect(host='127.0.0.1', port=port, user='postgres', password=sandbox.password, dbname='postgres',
                            connect_timeout=5)
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT pg_is_in_recovery()')
            in_recovery = cursor.fetchone()[0]
            cursor.execute('SELECT batch, count(*) FROM %s GROUP BY batch' % BASEBACKUP_TABLE)
            return in_recovery, dict(cursor.fetchall())
    finally:
        conn.close()


def test_sigkill_mid_extraction_then_run_again_completes(sandbox, basebackup_store, datadir, workdir):
    args = bootstrap_args(sandbox, basebackup_store['store'], datadir, start=False)
    run = ModuleRun('pg_bootstrap_basebackup', args, workdir).start()
    assert run.kill_when(lambda: _extracting(datadir), timeout=60, interval=0.002), \
        'the bootstrap ended before the extraction was seen: %r' % run.wait()
    assert run.wait().killed
    left = sorted(os.listdir(datadir))
    assert INCOMPLETE_MARKER in left and 'base' in left, left

    again = run_module('pg_bootstrap_basebackup', dict(args, start=True), workdir, timeout=180)
    assert again.returncode == 0 and not again.failed, again
    result = again.result
    assert result['wiped'] and result['started'] and result['changed'], result
    assert sorted(e['name'] for e in result['removed']) == left
    assert not os.path.exists(os.path.join(datadir, INCOMPLETE_MARKER))
    port = args['settings']['port']
    assert _rows(sandbox, port) == (False, BASEBACKUP_ROWS)
