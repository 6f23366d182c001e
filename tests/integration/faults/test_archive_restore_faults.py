# -*- coding: utf-8 -*-
"""archive_restore under faults: S3 cut in the middle of restore_all, and two runs of the same archives at once.

The archives are written by table_archive itself (every row of a source table, which it empties); a copy of the
source taken before is the reference. The restore goes back into the source table, so the test holds whatever
the key layout is. The invariants: the archives in S3 are never changed by a restore; after a failed run the table
holds whole archives only, no row twice; after the next run the table is exactly the reference.
"""

from __future__ import annotations

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import table_archive

from ..archive_helpers import (
    archive_params, assert_same_rows, differences, new_name, new_prefix, query, restore_params, scalar)
from .rows import create_source_table
from .runner import ModuleRun, run_module, wait_backends_gone
from .s3_cutter import get_of
from .snapshots import s3_snapshot

pytestmark = pytest.mark.faults


def _archived_source(sandbox, db, rows, batch):
    """A source table archived whole by table_archive under a new prefix; returns ``(table, reference, prefix,
    keys)`` where ``reference`` is a copy of the rows and ``keys`` the archive keys."""
    table = new_name('src')
    create_source_table(sandbox, db, table, rows)
    reference = 'ref_' + table
    query(sandbox, db, 'CREATE TABLE %s AS TABLE %s' % (reference, table))
    prefix = new_prefix()
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='true', batch_size=batch))
    assert done['records_archived'] == rows and scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 0
    return table, reference, prefix, done['keys']


def _archives(sandbox, prefix):
    """The snapshot of the data objects and sidecars under ``prefix`` (not the restore watermark)."""
    return dict((k, v) for k, v in s3_snapshot(sandbox, prefix).items() if not k.endswith(fmt.WATERMARK_NAME))


def _restore_args(sandbox, db, prefix, table, endpoint_url):
    return restore_params(sandbox, db, prefix, table, endpoint_url=endpoint_url, restore_all=True)


def test_s3_cut_during_restore_all_fails_clearly_then_a_run_after_resume_is_exact(sandbox, fault_db, cutter, workdir):
    rows, batch = 2000, 500
    table, reference, prefix, keys = _archived_source(sandbox, fault_db, rows, batch)
    assert len(keys) == 4
    archives = _archives(sandbox, prefix)
    # Cut when the restore asks for the last archive's sidecar: the first three can be restored, the last not.
    fired = cutter.on_request(get_of(fmt.SIDECAR_SUFFIX), lambda request: cutter.cut(), nth=len(keys))
    failed = run_module('archive_restore', _restore_args(sandbox, fault_db, prefix, table, cutter.endpoint_url), workdir,
                        timeout=150)
    assert len(fired) == 1 and fired[0].key == keys[-1] + fmt.SIDECAR_SUFFIX
    assert failed.returncode == 1 and failed.failed, failed
    assert 'S3' in failed.result['msg'] and cutter.endpoint_url in failed.result['msg'], failed.result['msg']
    assert 'Traceback' not in failed.stdout + failed.stderr
    wait_backends_gone(sandbox, fault_db)

    present = scalar(sandbox, fault_db, 'SELECT count(*) FROM %s' % table)
    assert present % batch == 0 and present < rows, 'whole archives only, and not the last one'
    extra, missing = differences(sandbox, fault_db, table, reference)
    assert extra == 0 and missing == rows - present  # nothing twice, nothing that is not in the source
    assert _archives(sandbox, prefix) == archives  # a restore never touches the archives

    cutter.resume()
    again = run_module('archive_restore', _restore_args(sandbox, fault_db, prefix, table, cutter.endpoint_url), workdir)
    assert again.returncode == 0 and not again.failed, again
    assert again.result['files_failed'] == 0
    assert again.result['records_restored'] == rows - present
    assert_same_rows(sandbox, fault_db, table, reference)
    assert _archives(sandbox, prefix) == archives


def test_two_restores_of_the_same_archives_at_once_give_the_source_exactly(sandbox, fault_db, workdir):
    rows, batch = 3000, 250
    table, reference, prefix, keys = _archived_source(sandbox, fault_db, rows, batch)
    archives = _archives(sandbox, prefix)
    # A little time per loaded archive, so that the two runs are loading at the same time, not one after the other.
    query(sandbox, fault_db, "CREATE FUNCTION slow_{t}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(0.05);"
                             " RETURN NULL; END$$; CREATE TRIGGER slow AFTER INSERT ON {t} FOR EACH STATEMENT"
                             " EXECUTE FUNCTION slow_{t}()".format(t=table))
    args = _restore_args(sandbox, fault_db, prefix, table, sandbox.s3.endpoint_url)
    runs = [ModuleRun('archive_restore', args, workdir).start() for dummy in range(2)]
    ended = [run.wait(timeout=120) for run in runs]
    wait_backends_gone(sandbox, fault_db)
    for done in ended:
        assert done.returncode == 0 and not done.failed, done
        assert done.result['files_failed'] == 0
    # Together they restored every row once: what one copied the other skipped.
    assert sum(done.result['records_restored'] for done in ended) == rows
    assert_same_rows(sandbox, fault_db, table, reference)
    assert _archives(sandbox, prefix) == archives
    assert len(keys) == rows // batch
