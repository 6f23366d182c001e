# -*- coding: utf-8 -*-
"""table_archive interrupted by faults, then run again: no row is lost or archived twice.

The order of one batch (``plugins/module_utils/_archive/table_archive.py``): lock the rows, PUT ``<key>.pending``, PUT
``<key>`` (then HEAD it), PUT ``<key>.meta.json``, DELETE the rows, COMMIT, DELETE the marker. The module runs as
Ansible runs it (a fresh interpreter on the module file) through the S3 cutter, which kills it or cuts S3 at an
exact request. Invariants: right after the fault every original row is in the table or in an archive; after the
next run the table rows plus the archived rows are exactly the original rows, no ``.pending`` marker is left, and
every data object has its sidecar.
"""

from __future__ import annotations

import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt

from ..archive_helpers import archive_params, new_name, new_prefix
from .rows import archived_rows, assert_conserved, create_source_table, markers, orphans, table_rows
from .runner import ModuleRun, run_module, wait_backends_gone
from .s3_cutter import S3Cutter, delete_of, put_of

pytestmark = pytest.mark.faults

ROWS = 2000
BATCH = 250


def _params(sandbox, db, prefix, table, endpoint_url):
    return archive_params(sandbox, db, prefix, table, endpoint_url=endpoint_url, date_column='created_at',
                          before='2030-01-01', batch_size=BATCH)


def _source(sandbox, db):
    table = new_name('src')
    create_source_table(sandbox, db, table, ROWS)
    return table, table_rows(sandbox, db, table)


def _no_row_lost(original, sandbox, db, table, prefix):
    """Every original row is in the table or an archive (an interrupted batch may be in both for now)."""
    together = table_rows(sandbox, db, table) + archived_rows(sandbox, prefix)
    lost = original - together
    assert not lost, '%d rows lost, e.g. %s' % (sum(lost.values()), list(lost)[:2])


def _data_key(key):
    """The batch object key of any of its keys (marker, sidecar, object)."""
    for suffix in (fmt.PENDING_SUFFIX, fmt.SIDECAR_SUFFIX):
        if key.endswith(suffix):
            return key[:-len(suffix)]
    return key


def _marker_of(key):
    return _data_key(key) + fmt.PENDING_SUFFIX


def _finish_and_check(sandbox, db, workdir, table, prefix, original):
    """Run table_archive again to its end; check exact conservation and a clean prefix; return its result."""
    done = run_module('table_archive', _params(sandbox, db, prefix, table, sandbox.s3.endpoint_url), workdir)
    assert done.returncode == 0 and done.result and not done.failed, done
    assert_conserved(original, table_rows(sandbox, db, table), archived_rows(sandbox, prefix))
    assert not table_rows(sandbox, db, table), 'every row matched the cutoff: all must be archived now'
    assert markers(sandbox, prefix) == []
    assert orphans(sandbox, prefix) == []
    return done.result


# (point, what triggers the kill, when, the outcome the next run must report for the interrupted batch)
KILL_POINTS = [
    ('right_after_the_pending_marker_put', put_of(fmt.PENDING_SUFFIX), 'response', 'rolled_back'),
    ('right_after_the_batch_object_put', put_of(fmt.DATA_SUFFIX), 'response', 'rolled_back'),
    ('right_after_the_sidecar_put', put_of(fmt.SIDECAR_SUFFIX), 'response', 'rolled_back'),
    ('after_the_commit_before_the_marker_delete', delete_of(fmt.PENDING_SUFFIX), 'request', 'completed'),
]


@pytest.mark.parametrize('point, trigger, when, outcome', KILL_POINTS, ids=[p[0] for p in KILL_POINTS])
def test_sigkill_at_a_chosen_point_of_the_third_batch_then_rerun(sandbox, fault_db, cutter, workdir, point, trigger,
                                                                 when, outcome):
    table, original = _source(sandbox, fault_db)
    prefix = new_prefix()
    run = ModuleRun('table_archive', _params(sandbox, fault_db, prefix, table, cutter.endpoint_url), workdir)
    # drop: the request (or S3's answer) is held until the process is gone, then its connection is reset.
    fired = cutter.on_request(trigger, run.kill, when=when, drop=True, nth=3)
    ended = run.start().wait(timeout=90)
    assert ended.killed and len(fired) == 1, ('the kill point was never reached', point, ended)
    wait_backends_gone(sandbox, fault_db)

    assert markers(sandbox, prefix) == [_marker_of(fired[0].key)]
    _no_row_lost(original, sandbox, fault_db, table, prefix)
    committed = ROWS - sum(table_rows(sandbox, fault_db, table).values())
    assert committed == (3 if outcome == 'completed' else 2) * BATCH

    again = _finish_and_check(sandbox, fault_db, workdir, table, prefix, original)
    assert again['recovered'] == [dict(key=_data_key(fired[0].key), outcome=outcome)]
    assert again['records_archived'] == ROWS - committed


def test_sigkill_mid_run_after_n_batches_then_rerun(sandbox, fault_db, cutter, workdir):
    table, original = _source(sandbox, fault_db)
    prefix = new_prefix()
    # Each PUT waits 50 ms on its way, so a batch lasts long enough for the poll below to land inside one.
    cutter.on_request(put_of(), lambda request: time.sleep(0.05), times=None)
    run = ModuleRun('table_archive', _params(sandbox, fault_db, prefix, table, cutter.endpoint_url), workdir).start()

    def three_batches_gone():
        return sandbox.primary.execute('SELECT count(*) FROM %s' % table, dbname=fault_db)[0][0] <= ROWS - 3 * BATCH

    assert run.kill_when(three_batches_gone, timeout=90), 'table_archive ended before three batches were committed'
    assert run.wait().killed
    wait_backends_gone(sandbox, fault_db)
    _no_row_lost(original, sandbox, fault_db, table, prefix)
    assert len(markers(sandbox, prefix)) <= 1

    again = _finish_and_check(sandbox, fault_db, workdir, table, prefix, original)
    assert len(again['recovered']) <= 1


def test_s3_cut_during_a_batch_fails_clearly_then_a_run_after_resume_is_exact(sandbox, fault_db, cutter, workdir):
    table, original = _source(sandbox, fault_db)
    prefix = new_prefix()
    fired = cutter.on_request(put_of(fmt.DATA_SUFFIX), lambda request: cutter.cut(), nth=3)
    failed = run_module('table_archive', _params(sandbox, fault_db, prefix, table, cutter.endpoint_url), workdir,
                        timeout=150)
    assert len(fired) == 1
    assert failed.returncode == 1 and failed.failed, failed
    message = failed.result['msg']
    assert 'S3' in message and cutter.endpoint_url in message, message
    assert 'Traceback' not in failed.stdout + failed.stderr
    # The two batches committed before the cut are reported: the caller must know what moved.
    assert [b['records'] for b in failed.result.get('batches', [])] == [BATCH, BATCH], failed.result
    wait_backends_gone(sandbox, fault_db)
    _no_row_lost(original, sandbox, fault_db, table, prefix)
    assert sum(table_rows(sandbox, fault_db, table).values()) == ROWS - 2 * BATCH  # batch 3 rolled back

    cutter.resume()
    again = _finish_and_check(sandbox, fault_db, workdir, table, prefix, original)
    assert all(r['outcome'] == 'rolled_back' for r in again['recovered'])
    assert again['records_archived'] == ROWS - 2 * BATCH


# -- the primary crashes (pg_ctl stop -m immediate) in the middle of a batch -------------------------------

@pytest.fixture(scope='module')
def primary_crash(sandbox, fault_db, tmp_path_factory):
    """table_archive whose primary is stopped with ``-m immediate`` when the module PUTs the third batch's
    sidecar (batches 1 and 2 committed, batch 3's rows locked and uploaded), then restarted. Returns a dict:
    ``ended`` (ModuleResult), ``table``, ``prefix``, ``original`` (Counter), ``markers`` and ``table_rows`` (row
    count) right after the restart."""
    workdir = tmp_path_factory.mktemp('crash')
    table, original = _source(sandbox, fault_db)
    prefix = new_prefix()
    with S3Cutter(sandbox.s3.endpoint_url) as proxy:
        run = ModuleRun('table_archive', _params(sandbox, fault_db, prefix, table, proxy.endpoint_url), workdir)
        fired = proxy.on_request(put_of(fmt.SIDECAR_SUFFIX), lambda request: sandbox.stop_node('primary', mode='immediate'),
                                 nth=3)
        try:
            ended = run.start().wait(timeout=120)
        finally:
            sandbox.start_node('primary')
        proxy.check()
    assert len(fired) == 1, ended
    return dict(ended=ended, table=table, prefix=prefix, original=original, workdir=workdir,
                markers=markers(sandbox, prefix), table_rows=sum(table_rows(sandbox, fault_db, table).values()))


def test_primary_stopped_immediately_mid_batch_loses_no_row(sandbox, fault_db, primary_crash):
    crash = primary_crash
    assert crash['ended'].returncode != 0 and not crash['ended'].killed
    assert crash['table_rows'] == ROWS - 2 * BATCH  # batch 3 never committed: its rows are back in the table
    _no_row_lost(crash['original'], sandbox, fault_db, crash['table'], crash['prefix'])
    # The interrupted batch's marker stays for the next run, unless the module removed it with the batch's objects
    # (it knows the batch never committed: the connection broke before COMMIT was sent).
    assert len(crash['markers']) <= 1
    again = _finish_and_check(sandbox, fault_db, crash['workdir'], crash['table'], crash['prefix'], crash['original'])
    assert again['recovered'] == [dict(key=_data_key(m), outcome='rolled_back') for m in crash['markers']]


def test_primary_stopped_immediately_mid_batch_reports_the_lost_connection(primary_crash):
    ended = primary_crash['ended']
    assert ended.result is not None, 'no JSON result: %s' % ended.stderr[-1500:]
    assert ended.failed
    assert 'connection' in ended.result['msg'].lower() and 'lost' in ended.result['msg'].lower(), ended.result['msg']
    assert ended.result.get('changed') is True
    assert [b['records'] for b in ended.result.get('batches', [])] == [BATCH, BATCH]
