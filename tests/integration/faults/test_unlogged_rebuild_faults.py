# -*- coding: utf-8 -*-
"""pg_unlogged_rebuild SIGKILLed while the rebuild function runs, then run again; and two runs at once.

The rebuild function is wrapped (:func:`~.setups.count_rebuild_calls`) so that it sleeps first and leaves a row in
``rebuild_calls`` that only a committed call keeps. The invariants: the cache is rebuilt exactly once (one committed
call, the cache holds each entity once), and the watermark in S3 describes what was committed.
"""

from __future__ import annotations

import json
import uuid

import pytest

from ..archive_helpers import drop_database
from ..helpers import params_for
from .runner import APPLICATION_NAME, ModuleRun, run_module, wait_backends_gone
from .setups import count_rebuild_calls, create_rem_database

pytestmark = pytest.mark.faults

ROWS = 200  # per entity table: kv_store holds 2 * ROWS when rebuilt


@pytest.fixture
def rem(sandbox):
    """A database of the runbook's application whose ``kv_store`` is empty; its name."""
    name = create_rem_database(sandbox, rows=ROWS)
    yield name
    drop_database(sandbox, name)


def _count(sandbox, db, table):
    return sandbox.primary.execute('SELECT count(*) FROM %s' % table, dbname=db)[0][0]


def _watermark(sandbox, key):
    """The watermark document at ``key``, or None."""
    client = sandbox.s3.client()
    if not client.list_objects_v2(Bucket=sandbox.s3.bucket, Prefix=key).get('KeyCount'):
        return None
    return json.loads(client.get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read())


def _sleeping_in_rebuild(sandbox, db):
    """True while a session of the module runs the rebuild function (it is in pg_sleep)."""
    return bool(sandbox.primary.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = %s AND wait_event = 'PgSleep'",
        [db, APPLICATION_NAME]))


def _assert_rebuilt_once(sandbox, db, key, result):
    """One committed call of the rebuild function, each entity once in the cache, and a watermark that says so."""
    assert _count(sandbox, db, 'rebuild_calls') == 1
    assert _count(sandbox, db, 'kv_store') == 2 * ROWS
    document = _watermark(sandbox, key)
    assert document is not None, 'no watermark written'
    assert document['kv_store_count'] == 2 * ROWS and document['last_run']['rebuilt'] is True
    assert document['tables']['resources']['count'] == ROWS and document['tables']['moments']['count'] == ROWS
    assert result['watermark']['written'] and result['watermark']['document']['snapshot_ts'] == document['snapshot_ts']


def test_sigkill_while_the_rebuild_function_runs_then_run_again(sandbox, rem, workdir):
    key = 'faults-unlogged/%s/watermark.json' % uuid.uuid4().hex[:8]
    count_rebuild_calls(sandbox, rem, sleep_seconds=5)
    args = params_for(sandbox, 'primary', rem, key)
    run = ModuleRun('pg_unlogged_rebuild', args, workdir).start()
    assert run.kill_when(lambda: _sleeping_in_rebuild(sandbox, rem), timeout=60), 'the rebuild never started'
    assert run.wait().killed

    # The killed client's session still runs the function (PostgreSQL notices the closed socket only when it next
    # talks to it) and holds the advisory lock: a run now changes nothing and says why.
    assert _sleeping_in_rebuild(sandbox, rem)
    meanwhile = run_module('pg_unlogged_rebuild', args, workdir)
    assert meanwhile.returncode == 0 and not meanwhile.failed, meanwhile
    assert meanwhile.result['skipped_reason'] == 'locked' and meanwhile.result['changed'] is False, meanwhile.result
    assert _count(sandbox, rem, 'kv_store') == 0 and _watermark(sandbox, key) is None

    # Once that session is gone, its transaction is rolled back: the next run rebuilds, once.
    wait_backends_gone(sandbox, rem, timeout=20)
    assert _count(sandbox, rem, 'rebuild_calls') == 0 and _count(sandbox, rem, 'kv_store') == 0
    again = run_module('pg_unlogged_rebuild', args, workdir)
    assert again.returncode == 0 and not again.failed, again
    assert again.result['rebuilt'] is True and again.result['changed'] is True, again.result
    _assert_rebuilt_once(sandbox, rem, key, again.result)

    last = run_module('pg_unlogged_rebuild', args, workdir)
    assert last.result['rebuilt'] is False and last.result['changed'] is False, last.result
    assert _count(sandbox, rem, 'rebuild_calls') == 1


def test_two_runs_at_once_rebuild_once(sandbox, rem, workdir):
    key = 'faults-unlogged/%s/watermark.json' % uuid.uuid4().hex[:8]
    count_rebuild_calls(sandbox, rem, sleep_seconds=2)
    args = params_for(sandbox, 'primary', rem, key)
    runs = [ModuleRun('pg_unlogged_rebuild', args, workdir).start() for dummy in range(2)]
    ended = [run.wait(timeout=60) for run in runs]
    for done in ended:
        assert done.returncode == 0 and done.result and not done.failed, done
    rebuilt = [done.result for done in ended if done.result['rebuilt']]
    skipped = [done.result for done in ended if not done.result['rebuilt']]
    assert len(rebuilt) == 1, [done.result for done in ended]
    assert skipped[0]['skipped_reason'] in ('locked', 'already_rebuilt') and skipped[0]['changed'] is False, skipped
    _assert_rebuilt_once(sandbox, rem, key, rebuilt[0])
