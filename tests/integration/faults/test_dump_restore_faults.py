# -*- coding: utf-8 -*-
"""pg_dump_restore SIGKILLed in the middle of the restore (the module and the pg_restore processes it started,
while pg_restore copies rows), then run again.

The restore goes into a new database, which the killed run created; no run can drop it after a SIGKILL. The next
run with the same arguments is expected to end with the target identical to the source; the documented way
(``clean=true``, pg_restore --clean --if-exists) is taken when the same arguments are refused. The comparison is the
drill's: every table's row count and order-independent checksum, every relation, index and setting
(:func:`~.snapshots.db_snapshot` of source and target). A killed drill is run again too: its scratch database must
not stay behind.
"""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import run_tag

from ..archive_helpers import create_database, drop_database, query
from .runner import ModuleRun, run_module
from .setups import pg_args, remove_tree, server_reachable_dir
from .snapshots import db_snapshot

pytestmark = pytest.mark.faults

# About 30 MB of rows in one table (COPY takes a while), ten small tables, indexes and a materialized view.
_SOURCE = """
CREATE TABLE big (id bigint PRIMARY KEY, payload text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO big SELECT g, repeat(md5(g::text), 4), timestamptz '2025-01-01' + g * interval '1 second'
FROM generate_series(1, 200000) g;
CREATE INDEX big_created ON big (created_at);
DO $$ BEGIN FOR i IN 1..10 LOOP
  EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, note text)', i);
  EXECUTE format('INSERT INTO small_%s SELECT g, md5(g::text) FROM generate_series(1, 200) g', i);
END LOOP; END $$;
CREATE MATERIALIZED VIEW big_per_day AS SELECT created_at::date AS day, count(*) FROM big GROUP BY 1;
"""


class Watch:
    """One open connection to the primary's ``postgres`` database that polls what pg_restore does (a poll costs a
    query, not a connection, so a short COPY is not missed)."""

    def __init__(self, sandbox):
        self.conn = sandbox.primary.connect()

    def rows(self, sql, params):
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    def copying(self, database):
        """True while pg_restore copies rows into ``database`` (a session of it runs COPY ... FROM stdin)."""
        return bool(self.rows("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
                              "AND query ILIKE 'COPY %%'", [database]))

    def databases(self, pattern):
        return sorted(r[0] for r in self.rows('SELECT datname FROM pg_database WHERE datname LIKE %s', [pattern]))

    def close(self):
        self.conn.close()


def _wait_no_backend(sandbox, database, timeout=20.0):
    """Wait until no session is connected to ``database`` (the killed pg_restore's backends end at EOF)."""
    deadline = time.monotonic() + timeout
    while sandbox.primary.execute('SELECT count(*) FROM pg_stat_activity WHERE datname = %s', [database])[0][0]:
        assert time.monotonic() < deadline, 'sessions of the killed restore are still in %s' % database
        time.sleep(0.05)


def _databases(sandbox, prefix):
    return sorted(r[0] for r in sandbox.primary.execute('SELECT datname FROM pg_database WHERE datname LIKE %s', [prefix + '%']))


@pytest.fixture(scope='module')
def dumped(sandbox, tmp_path_factory):
    """A source database and a bundle of it in a directory store: dict ``source``, ``store``, ``snapshot`` (the
    source's :func:`db_snapshot`), ``root`` (a directory for the runs)."""
    source = create_database(sandbox)
    query(sandbox, source, _SOURCE)
    root = server_reachable_dir('pgops-faults-restore-')
    store = os.path.join(root, 'store')
    os.mkdir(store)
    made = run_module('pg_dump_bundle', pg_args(sandbox, source, database=source, directory=store, plain_sql=False), root)
    assert made.returncode == 0, made
    yield dict(source=source, store=store, snapshot=db_snapshot(sandbox, source), root=root)
    drop_database(sandbox, source)
    remove_tree(root)


def _kill_while_copying(sandbox, args, database, workdir):
    """Run pg_dump_restore with ``args`` and SIGKILL it (with its pg_restore) while pg_restore copies rows into
    ``database``; return the ModuleResult."""
    watch = Watch(sandbox)
    try:
        run = ModuleRun('pg_dump_restore', args, workdir).start()
        assert run.kill_when(lambda: watch.copying(database), timeout=60, interval=0.002, group=True), \
            'pg_dump_restore ended before pg_restore copied rows: %r' % run.wait()
    finally:
        watch.close()
    ended = run.wait()
    assert ended.killed
    _wait_no_backend(sandbox, database)
    return ended


@pytest.fixture(scope='module')
def killed_restore(sandbox, dumped, tmp_path_factory):
    """A restore into a new database killed mid-COPY, then run again with the same arguments, then (only if that
    was refused) with ``clean=true``. dict: ``target``, ``scratch`` (its scratch_dir), ``left`` (scratch entries right
    after the kill), ``again`` (the run with the same arguments), ``clean`` (the run with clean=true, or None),
    ``after_kill`` and ``after_again`` (db_snapshot of the target after the kill and after ``again``)."""
    workdir = tmp_path_factory.mktemp('killed-restore')
    target = 'killed_%s' % os.urandom(4).hex()
    scratch = os.path.join(dumped['root'], 'scratch-%s' % target)
    os.mkdir(scratch)
    args = pg_args(sandbox, database=target, directory=dumped['store'], scratch_dir=scratch)
    _kill_while_copying(sandbox, args, target, workdir)
    left = sorted(os.listdir(scratch))
    after_kill = db_snapshot(sandbox, target)
    again = run_module('pg_dump_restore', args, workdir, timeout=180)
    after_again = db_snapshot(sandbox, target)
    clean = None
    if again.failed:
        clean = run_module('pg_dump_restore', dict(args, clean=True), workdir, timeout=180)
    yield dict(target=target, scratch=scratch, left=left, again=again, clean=clean, after_kill=after_kill,
               after_again=after_again)
    drop_database(sandbox, target)


def test_a_killed_restore_run_again_gives_the_source_exactly(sandbox, dumped, killed_restore):
    assert killed_restore['left'], 'the killed run left its scratch directory (the extracted dump)'
    final = killed_restore['clean'] or killed_restore['again']
    assert final.returncode == 0 and final.result and not final.failed, final
    assert db_snapshot(sandbox, killed_restore['target']) == dumped['snapshot']
    assert os.listdir(killed_restore['scratch']) == [], 'the extracted dump of the killed run is removed'
    assert not sandbox.primary.execute('SELECT pid FROM pg_stat_activity WHERE datname = %s', [killed_restore['target']])


def test_a_killed_restore_run_again_with_the_same_arguments_succeeds(killed_restore):
    """The killed run's half-restored database carries the restore's in-progress comment: the run again drops it and
    restores afresh (a restore Job's retry must not fail on what the killed try left)."""
    again = killed_restore['again']
    assert again.returncode == 0 and not again.failed, again.result['msg'] if again.result else again
    assert again.result['removed_databases'] == [killed_restore['target']]
    assert 'Traceback' not in again.stdout + again.stderr


@pytest.fixture
def killed_drill(sandbox, dumped, tmp_path):
    """A drill killed mid-COPY, then a drill run to its end: dict ``before`` (the drill databases before), ``left``
    (those after); the drill databases made here are dropped at the end."""
    workdir = tmp_path / 'work'
    workdir.mkdir()
    scratch = os.path.join(dumped['root'], 'scratch-drill')
    os.mkdir(scratch)
    args = pg_args(sandbox, drill=True, directory=dumped['store'], scratch_dir=scratch)
    before = _databases(sandbox, 'pgops\\_drill\\_')
    killed_name = []
    watch = Watch(sandbox)

    def drill_copying():
        names = [n for n in watch.databases('pgops\\_drill\\_%') if n not in before]
        killed_name[:] = names
        return bool(names) and watch.copying(names[0])

    try:
        try:
            run = ModuleRun('pg_dump_restore', args, workdir).start()
            assert run.kill_when(drill_copying, timeout=60, interval=0.002, group=True), 'the drill ended before its COPY'
            assert run.wait().killed
        finally:
            watch.close()
        _wait_no_backend(sandbox, killed_name[0])
        time.sleep(1.1)  # the next drill's database is named by the second
        done = run_module('pg_dump_restore', args, workdir, timeout=180)
        assert done.returncode == 0 and done.result['drill']['identical'] and done.result['drill']['dropped'], done
        yield dict(before=before, left=_databases(sandbox, 'pgops\\_drill\\_'))
    finally:
        for name in _databases(sandbox, 'pgops\\_drill\\_'):
            if name not in before:
                drop_database(sandbox, name)


def test_a_killed_drill_leaves_no_scratch_database_once_the_next_drill_ran(killed_drill):
    assert killed_drill['left'] == killed_drill['before'], 'a drill database is left behind'


def test_an_unfinished_restore_whose_run_lives_is_refused_not_dropped(sandbox, dumped, tmp_path):
    """A database marked in progress by a run that is still alive (here: this process) is left alone."""
    target = 'live_%s' % os.urandom(4).hex()
    sandbox.primary.execute('CREATE DATABASE %s' % target)
    sandbox.primary.execute("COMMENT ON DATABASE %s IS '%s, run %s, started %d'"
                            % (target, dump_restore.INCOMPLETE, run_tag(), int(time.time())))
    try:
        done = run_module('pg_dump_restore', pg_args(sandbox, database=target, directory=dumped['store']), str(tmp_path))
        assert done.failed and 'is being restored by another run' in done.result['msg'], done
        assert _databases(sandbox, target) == [target]
    finally:
        drop_database(sandbox, target)
