# -*- coding: utf-8 -*-
"""Check mode of every module that writes, run as Ansible runs it (the module runner, ``_ansible_check_mode`` in the
arguments), compared before and after: the databases (rows, relations, indexes, roles, settings; the list of
databases), the S3 objects, and every directory the module could write (its store, its scratch directory, the data
directory and its parent).

Each case sets up a state in which a real run would change something (a rebuild that would happen, rows to archive
and to restore, retention that would delete, a restore into a new database, a data directory to replace or wipe, a
barman policy that would delete, a wal-g base backup to push, a wal-g retention plan that would delete), runs the
module in check mode, then for real with the same arguments. The real run proves two things: the snapshots see what
the module writes (they differ after it), and ``changed`` in check mode is what the real run reports.
"""

from __future__ import annotations

import collections
import os
import uuid

import pytest

from ..archive_helpers import archive_params, create_database, drop_database, new_name, new_prefix, query, restore_params
from ..helpers import barman_params, params_for
from ..test_walg_backup import backup_params
from ..test_walg_retention import _retention_params
from .rows import create_source_table
from .runner import run_module, wait_backends_gone
from .setups import (
    barman_catalog, basebackup_args, bootstrap_args, create_rem_database, fake_bundles, fake_s3_bundles, new_bundle_name,
    pg_args, remove_tree, server_reachable_dir, stale_partial, stale_scratch)
from .snapshots import cluster_snapshot, db_snapshot, dir_snapshot, s3_snapshot
from .test_walg_faults import new_prefix as new_walg_prefix, walg_history

pytestmark = pytest.mark.faults

OLD_DUMPS = ['nightly-20200101-0000.tar.gz', 'nightly-20200102-0000.tar.gz']
OLD_BASEBACKUPS = ['basebackup-20200101-0620.bundle.tar.gz', 'basebackup-20200108-0620.bundle.tar.gz']


class Case(collections.namedtuple('Case', 'module args snapshot real_changes cleanup predicted')):
    """One module in a state where a real run would act.

    :ivar module: str, the module's name.
    :ivar args: dict, its arguments (the same for the check-mode run and the real run).
    :ivar snapshot: callable returning a tuple of :class:`~.snapshots.Snapshot` (everything the module could write).
    :ivar real_changes: bool, whether a real run leaves a lasting change (a drill does not: it cleans up).
    :ivar cleanup: callable run at the end, or None.
    :ivar predicted: callable ``(check result, real result)`` returning ``(what check mode said it would do, what
        the real run did)``, two values that must be equal.
    """


# -- the cases ----------------------------------------------------------------------------------------------------


def _pg_unlogged_rebuild(request, work):
    sandbox = request.getfixturevalue('sandbox')
    db = create_rem_database(sandbox, rows=200)
    sandbox.primary.execute('TRUNCATE kv_store', dbname=db)  # empty while the entities have rows: a rebuild is due
    key = 'faults-check/%s/unlogged-watermark.json' % uuid.uuid4().hex[:8]
    return Case('pg_unlogged_rebuild', params_for(sandbox, 'primary', db, key),
                lambda: (db_snapshot(sandbox, db), s3_snapshot(sandbox, key)), True, lambda: drop_database(sandbox, db),
                lambda check, real: ((check['rebuild_needed'], check['watermark']['key']),
                                     (real['rebuilt'], real['watermark']['key'] if real['watermark']['written'] else None)))


def _table_archive(request, work):
    sandbox, db = request.getfixturevalue('sandbox'), request.getfixturevalue('fault_db')
    table, prefix = new_name('chk'), new_prefix()
    create_source_table(sandbox, db, table, 300)
    return Case('table_archive', archive_params(sandbox, db, prefix, table, where='true', batch_size=100),
                lambda: (db_snapshot(sandbox, db), s3_snapshot(sandbox, prefix)), True, None,
                lambda check, real: ((check['would_archive_records'], check['would_write_batches']),
                                     (real['records_archived'], len(real['batches']))))


def _archive_restore(request, work):
    sandbox, db = request.getfixturevalue('sandbox'), request.getfixturevalue('fault_db')
    table, prefix = new_name('chk'), new_prefix()
    create_source_table(sandbox, db, table, 300)
    done = run_module('table_archive', archive_params(sandbox, db, prefix, table, where='true', batch_size=100), work)
    assert done.returncode == 0 and done.result['records_archived'] == 300, done
    return Case('archive_restore', restore_params(sandbox, db, prefix, table, restore_all=True),
                lambda: (db_snapshot(sandbox, db), s3_snapshot(sandbox, prefix)), True, None,
                lambda check, real: ((check['would_restore_files'], check['would_restore_records']),
                                     (real['files_processed'], real['records_restored'])))


def _small_database(sandbox):
    db = create_database(sandbox)
    query(sandbox, db, 'CREATE TABLE notes (id int PRIMARY KEY, note text); INSERT INTO notes SELECT g, md5(g::text) '
                       'FROM generate_series(1, 500) g; CREATE MATERIALIZED VIEW note_count AS SELECT count(*) FROM notes')
    return db


def _retention(check, real):
    """What a bundle module said it would delete and remove (the old bundles, the killed runs' work in progress),
    and what it did."""
    return tuple((r['deleted'], r['removed_partials']) for r in (check, real))


def _pg_dump_bundle_directory(request, work):
    sandbox = request.getfixturevalue('sandbox')
    db = _small_database(sandbox)
    store = os.path.join(work, 'store')
    os.mkdir(store)
    fake_bundles(store, OLD_DUMPS)
    stale_partial(store, new_bundle_name('dump'))
    return Case('pg_dump_bundle', pg_args(sandbox, db, database=db, directory=store, keep=1),
                lambda: (db_snapshot(sandbox, db), dir_snapshot(store)), True, lambda: drop_database(sandbox, db), _retention)


def _pg_dump_bundle_s3(request, work):
    sandbox = request.getfixturevalue('sandbox')
    db = _small_database(sandbox)
    prefix, scratch = new_prefix(), os.path.join(work, 'scratch')
    os.mkdir(scratch)
    fake_s3_bundles(sandbox, prefix, OLD_DUMPS)
    stale_partial(scratch, new_bundle_name('dump'))
    s3 = sandbox.s3
    args = pg_args(sandbox, db, database=db, bucket=s3.bucket, prefix=prefix, keep=1, scratch_dir=scratch,
                   endpoint_url=s3.endpoint_url, access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region)
    return Case('pg_dump_bundle', args, lambda: (db_snapshot(sandbox, db), s3_snapshot(sandbox, prefix), dir_snapshot(scratch)),
                True, lambda: drop_database(sandbox, db), _retention)


def _pg_dump_restore(request, work):
    sandbox = request.getfixturevalue('sandbox')
    source = _small_database(sandbox)
    store, scratch = os.path.join(work, 'store'), os.path.join(work, 'scratch')
    os.mkdir(store)
    os.mkdir(scratch)
    made = run_module('pg_dump_bundle', pg_args(sandbox, source, database=source, directory=store), work)
    assert made.returncode == 0, made
    stale_scratch(scratch, 'pgops-restore-')  # the module's documented scratch name
    target = 'restored_%s' % uuid.uuid4().hex[:8]

    def cleanup():
        drop_database(sandbox, target)
        drop_database(sandbox, source)

    return Case('pg_dump_restore', pg_args(sandbox, database=target, directory=store, scratch_dir=scratch),
                lambda: (cluster_snapshot(sandbox), db_snapshot(sandbox, source), dir_snapshot(store), dir_snapshot(scratch)),
                True, cleanup, lambda check, real: tuple((r['database'], r['created_database'], r['bundle']['name'],
                                                          r['removed_scratch']) for r in (check, real)))


def _pg_basebackup_bundle(request, work):
    sandbox = request.getfixturevalue('sandbox')
    store, scratch = os.path.join(work, 'store'), os.path.join(work, 'scratch')
    os.mkdir(store)
    os.mkdir(scratch)
    fake_bundles(store, OLD_BASEBACKUPS)
    name = new_bundle_name('basebackup')
    stale_partial(store, name)
    stale_partial(scratch, name)
    return Case('pg_basebackup_bundle', basebackup_args(sandbox, store, keep=1, scratch_dir=scratch),
                lambda: (dir_snapshot(store), dir_snapshot(scratch), db_snapshot(sandbox, 'postgres')), True, None, _retention)


def _data_directory(request, work, real):
    """``(sandbox, bundle store, data directory)``: the data directory under a directory of its own in ``work``,
    empty, or (``real``) holding the base backup restored by a bootstrap that did not start a server."""
    sandbox, backup = request.getfixturevalue('sandbox'), request.getfixturevalue('basebackup_store')
    datadir = os.path.join(work, 'volume', 'data')
    os.makedirs(datadir)
    if real:
        done = run_module('pg_bootstrap_basebackup', bootstrap_args(sandbox, backup['store'], datadir, start=False), work)
        assert done.returncode == 0 and os.path.isfile(os.path.join(datadir, 'global', 'pg_control')), done
    return sandbox, backup['store'], datadir


def _pg_bootstrap_basebackup(real):
    def case(request, work):
        sandbox, store, datadir = _data_directory(request, work, real)
        scratch = os.path.join(work, 'scratch')
        os.mkdir(scratch)
        volume = os.path.dirname(datadir)
        return Case('pg_bootstrap_basebackup', bootstrap_args(sandbox, store, datadir, start=False, scratch_dir=scratch),
                    lambda: (dir_snapshot(volume), dir_snapshot(store), dir_snapshot(scratch)), True, None,
                    lambda check, real: tuple((r['bundle']['name'], [e['name'] for e in r['removed']]) for r in (check, real)))
    return case


def _pg_wipe_data_directory(request, work):
    sandbox, store, datadir = _data_directory(request, work, real=True)
    volume = os.path.dirname(datadir)
    with open(os.path.join(volume, 'stray.sql'), 'w', encoding='utf-8') as handle:
        handle.write('select 1;\n')  # beside the data directory: clear_parent removes it
    args = dict(data_directory=datadir, confirm=datadir, clear_parent=True)
    return Case('pg_wipe_data_directory', args, lambda: (dir_snapshot(volume),), True, None,
                lambda check, real: (check['removed'], real['removed']))


def _barman_retention(request, work):
    box, settings = request.getfixturevalue('barman_sandbox'), request.getfixturevalue('barman_pair')[0]
    args = barman_params({}, settings, retention_policy='REDUNDANCY 1')
    return Case('barman_retention', args, lambda: (s3_snapshot(box, 'barman/%s/' % settings['server_name']),), True, None,
                lambda check, real: tuple((r['plan']['delete_backups'], sorted(r['plan']['backup_objects'] + r['plan']['wal_objects']))
                                          for r in (check, real)))


def _barman_restore_drill(request, work):
    box, settings = request.getfixturevalue('barman_sandbox'), request.getfixturevalue('barman_pair')[0]
    scratch = os.path.join(work, 'scratch')
    os.mkdir(scratch)
    os.chmod(scratch, 0o755)
    args = barman_params({}, settings, timeout=120, scratch_parent=scratch,
                         checks=[dict(name='catalog answers', query='SELECT count(*) > 0 FROM pg_class', expected=True)])
    return Case('barman_restore_drill', args,
                lambda: (s3_snapshot(box, 'barman/%s/' % settings['server_name']), dir_snapshot(scratch), cluster_snapshot(box)),
                False, None, lambda check, real: (check['backup']['backup_id'], real['backup']['backup_id']))


def _walg_storage(sandbox, prefix):
    """The snapshot of the wal-g storage ``prefix`` (s3://bucket/path)."""
    return s3_snapshot(sandbox, prefix[len('s3://%s/' % sandbox.bucket):] + '/')


def _walg_backup(request, work):
    sandbox, walg_bin = request.getfixturevalue('sandbox'), request.getfixturevalue('walg_bin')
    prefix = new_walg_prefix(sandbox, 'check')
    return Case('walg_backup', backup_params(sandbox, walg_bin, prefix), lambda: (_walg_storage(sandbox, prefix),), True, None,
                lambda check, real: tuple((r['kind'], r['delta_origin']) for r in (check, real)))


def _walg_retention(request, work):
    sandbox, walg_bin = request.getfixturevalue('sandbox'), request.getfixturevalue('walg_bin')
    prefix = new_walg_prefix(sandbox, 'check')
    walg_history(sandbox, walg_bin, prefix)  # five backups whose times are moved back: one to delete, and WAL
    return Case('walg_retention', _retention_params(sandbox, walg_bin, prefix), lambda: (_walg_storage(sandbox, prefix),), True,
                None, lambda check, real: tuple((r['delete'], r['wal_delete'], r['bytes_freed']) for r in (check, real)))


CASES = collections.OrderedDict([
    ('pg_unlogged_rebuild', _pg_unlogged_rebuild),
    ('table_archive', _table_archive),
    ('archive_restore', _archive_restore),
    ('pg_dump_bundle-directory', _pg_dump_bundle_directory),
    ('pg_dump_bundle-s3', _pg_dump_bundle_s3),
    ('pg_dump_restore', _pg_dump_restore),
    ('pg_basebackup_bundle', _pg_basebackup_bundle),
    ('pg_bootstrap_basebackup-empty', _pg_bootstrap_basebackup(real=False)),
    ('pg_bootstrap_basebackup-data_directory', _pg_bootstrap_basebackup(real=True)),
    ('pg_wipe_data_directory', _pg_wipe_data_directory),
    ('barman_restore_drill', _barman_restore_drill),
    ('barman_retention', _barman_retention),
    ('walg_backup', _walg_backup),
    ('walg_retention', _walg_retention),
])

# Modules whose check mode reports another `changed` than the real run (see the reasons).


# -- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def barman_pair(barman_sandbox):
    """A barman catalog of its own with two base backups: ``(settings, backup IDs)``. WAL shipping is switched off
    afterwards, so that nothing but the module under test writes into the catalog."""
    catalog = barman_catalog(barman_sandbox, 2)
    barman_sandbox.barman_wait_archived()
    barman_sandbox.barman_server(None)
    return catalog


Outcome = collections.namedtuple('Outcome', 'case check before after real after_real')


@pytest.fixture(scope='module')
def outcome(request):
    """The case named by the parameter, run in check mode (snapshots before and after), then for real (snapshots
    after it): an :class:`Outcome`."""
    work = server_reachable_dir('pgops-faults-check-')
    case = CASES[request.param](request, work)
    try:
        before = case.snapshot()
        check = run_module(case.module, case.args, work, check_mode=True, timeout=180)
        after = case.snapshot()
        real = run_module(case.module, case.args, work, timeout=180)
        after_real = case.snapshot()
        yield Outcome(case, check, before, after, real, after_real)
    finally:
        if case.module in ('table_archive', 'archive_restore'):
            wait_backends_gone(request.getfixturevalue('sandbox'), case.args['login_db'])
        if case.cleanup:
            case.cleanup()
        remove_tree(work)


# -- tests --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('outcome', list(CASES), indirect=True)
def test_check_mode_changes_nothing(outcome):
    check = outcome.check
    assert check.returncode == 0 and check.result and not check.failed, check
    for before, after in zip(outcome.before, outcome.after):
        assert before == after
    # The snapshots do see what this module writes: the real run's changes show in them.
    real = outcome.real
    assert real.returncode == 0 and real.result and not real.failed, real
    if outcome.case.real_changes:
        assert outcome.after_real != outcome.before, 'the real run changed nothing the snapshots see'
    else:
        assert outcome.after_real == outcome.before


@pytest.mark.parametrize('outcome', list(CASES), indirect=True)
def test_check_mode_predicts_what_the_real_run_does(outcome):
    assert outcome.check.result and outcome.real.result, outcome
    predicted, done = outcome.case.predicted(outcome.check.result, outcome.real.result)
    assert predicted == done


@pytest.mark.parametrize('outcome', list(CASES), indirect=True)
def test_check_mode_reports_changed_as_the_real_run_does(outcome):
    assert outcome.real.result and not outcome.real.failed, outcome.real
    assert outcome.real.result['changed'] is outcome.case.real_changes, outcome.real.result
    assert outcome.check.result['changed'] is outcome.real.result['changed'], outcome.check.result
