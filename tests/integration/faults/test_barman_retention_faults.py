# -*- coding: utf-8 -*-
"""barman_retention with S3 cut in the middle of the deletion, then run again.

barman-cloud-backup-delete deletes an obsolete backup in DeleteObjects requests (``POST /<bucket>?delete``): first
its data files, then its ``backup.info``, then the WAL it no longer needs. The cut comes at the second of them, so
the backup has lost its data files but keeps its ``backup.info``. The invariants: the run fails clearly, no object
of a kept backup and none the policy keeps is lost; the run after S3 is back leaves the catalog exactly as the
policy says (what the check-mode plan listed is gone, everything else is there).
"""

from __future__ import annotations

import pytest

from ..helpers import barman_params
from .runner import run_module
from .s3_cutter import S3Cutter
from .setups import barman_catalog
from .snapshots import s3_snapshot

pytestmark = pytest.mark.faults


def _delete_objects(request):
    """Predicate: an S3 DeleteObjects request (``POST /<bucket>?delete``)."""
    query = request.path.split('?', 1)[1] if '?' in request.path else ''
    return request.method == 'POST' and 'delete' in query.split('&')


def test_s3_cut_mid_deletion_then_run_again_ends_as_the_policy_says(barman_sandbox, workdir):
    box = barman_sandbox
    catalog, ids = barman_catalog(box, 2)
    box.barman_wait_archived()
    box.barman_server(None)  # nothing but the module writes into the catalog from here on
    prefix = 'barman/%s/' % catalog['server_name']
    args = barman_params({}, catalog, retention_policy='REDUNDANCY 1')
    before = s3_snapshot(box, prefix)
    preview = run_module('barman_retention', args, workdir, check_mode=True)
    assert preview.returncode == 0 and preview.result['plan']['delete_backups'] == ids[:1], preview
    planned = set(preview.result['plan']['backup_objects']) | set(preview.result['plan']['wal_objects'])
    kept = set(before) - planned
    assert '%sbase/%s/backup.info' % (prefix, ids[1]) in kept and planned

    with S3Cutter(box.s3.endpoint_url) as proxy:
        fired = proxy.on_request(_delete_objects, lambda request: proxy.cut(), nth=2)
        failed = run_module('barman_retention', dict(args, endpoint_url=proxy.endpoint_url), workdir, timeout=150)
        assert len(fired) == 1, 'the second DeleteObjects request never came: %r' % failed
        proxy.resume()
        proxy.check()
    assert failed.returncode == 1 and failed.failed, failed
    assert 'barman-cloud-backup-delete' in failed.result['msg'], failed.result['msg']
    assert 'Traceback' not in failed.stdout
    middle = s3_snapshot(box, prefix)
    assert set(middle) >= kept, 'lost: %s' % sorted(kept - set(middle))
    assert set(middle) < set(before), 'the first DeleteObjects request went through'
    assert '%sbase/%s/backup.info' % (prefix, ids[0]) in middle, 'the cut came before the backup.info was deleted'

    again = run_module('barman_retention', args, workdir, timeout=150)
    assert again.returncode == 0 and not again.failed, again
    assert again.result['changed'] is True and again.result['plan']['delete_backups'] == ids[:1], again.result
    after = s3_snapshot(box, prefix)
    assert sorted(after) == sorted(kept)
    assert all(after[key] == before[key] for key in kept), 'a kept object changed'
