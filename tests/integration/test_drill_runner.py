# -*- coding: utf-8 -*-
"""Integration tests of the restore drill runner (module_utils/_drill/) over real base backups of the sandbox primary.

One base backup per module (pg_basebackup -X none: every WAL segment must come from the sandbox's archive directory
through restore_command); each drill runs on its own copy, because a drill recovers and promotes what it is given.
With ``amcheck``, pg_amcheck checks the promoted copy; corruption is planted by overwriting a tuple header in a heap
page of the copy, before the drill starts it.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import tempfile
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._drill.runner import run_drill
from ansible_collections.pgops.resilience.plugins.module_utils._pg.backup_label import check_data_directory

BASE_TABLE = 'drill_base'
BASE_ROWS = 1234


def _wait_archived(archive_dir, segment, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(archive_dir, segment)):
        if time.monotonic() > deadline:
            raise AssertionError('WAL segment %s was not archived into %s within %d s' % (segment, archive_dir, timeout))
        time.sleep(0.1)


def _switch_and_wait(sandbox):
    """Close the current WAL segment of the primary and wait until the archive has it."""
    primary = sandbox.primary
    segment = primary.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0]
    primary.execute('SELECT pg_switch_wal()')
    _wait_archived(sandbox.archive_dir, segment)
    return segment


def _restore_command(archive_dir):
    return 'cp %s/%%f "%%p"' % shlex.quote(archive_dir)


def _processes_under(path):
    """PIDs of live processes whose working directory is ``path`` or below it (a postmaster and its children)."""
    found = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink('/proc/%s/cwd' % entry)
        except OSError:
            continue
        if cwd == path or cwd.startswith(path.rstrip('/') + '/'):
            found.append(int(entry))
    return found


@pytest.fixture(scope='module')
def backup(sandbox):
    """A base backup of the primary taken after ``drill_base`` got BASE_ROWS rows, with its WAL archived."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    # An earlier test may have promoted the standby: its timeline's history file in the shared archive would make
    # recovery_target_timeline 'latest' follow a branch that forked before this backup. Rebuilding the standby
    # from the primary retires that branch (Sandbox.retire_abandoned_timelines).
    standby = sandbox.standby
    if not (standby.is_running() and standby.in_recovery()):
        sandbox.rebuild_standby(source='primary')
    sandbox.retire_abandoned_timelines(sandbox.primary)
    primary = sandbox.primary
    primary.execute('DROP TABLE IF EXISTS %s' % BASE_TABLE)
    primary.execute('CREATE TABLE %s (id int PRIMARY KEY, note text)' % BASE_TABLE)
    primary.execute("INSERT INTO %s SELECT g, md5(g::text) FROM generate_series(1, %d) g" % (BASE_TABLE, BASE_ROWS))
    root = tempfile.mkdtemp(prefix='pgops-drill-it-')
    os.chmod(root, 0o755)
    dest = os.path.join(root, 'base')
    server = sandbox.server_user
    server.make_dir(dest, 0o700)
    server.ensure_traversable(dest)
    conninfo = 'host=127.0.0.1 port=%d user=postgres passfile=%s' % (primary.port, sandbox.server_passfile)
    server.run_as_server([os.path.join(sandbox.bindir, 'pg_basebackup'), '-d', conninfo, '-D', dest, '-X', 'none', '-c', 'fast', '-w'])
    with open(os.path.join(dest, 'backup_manifest'), encoding='utf-8') as handle:
        end_lsn = json.load(handle)['WAL-Ranges'][-1]['End-LSN']
    end_segment = primary.execute('SELECT pg_walfile_name(%s::pg_lsn)', (end_lsn,))[0][0]
    primary.execute('SELECT pg_switch_wal()')
    _wait_archived(sandbox.archive_dir, end_segment)
    # Where drill_base's heap lives in the copy (base/<database OID>/<relfilenode>), for the corruption test.
    heap_file = primary.execute('SELECT pg_relation_filepath(%s)', (BASE_TABLE,))[0][0]
    yield dict(path=dest, info=check_data_directory(dest), end_segment=end_segment, heap_file=heap_file)
    shutil.rmtree(root, ignore_errors=True)


def _copy(sandbox, backup, give_to_server=True):
    """A scratch directory (under /tmp) holding a copy of the base backup in ``data``; returns (scratch, datadir)."""
    scratch = tempfile.mkdtemp(prefix='pgops-drill-')
    datadir = os.path.join(scratch, 'data')
    shutil.copytree(backup['path'], datadir, symlinks=True)
    if give_to_server and sandbox.server_user.as_root:
        for top, dirs, files in os.walk(scratch):
            for name in [top] + [os.path.join(top, n) for n in dirs + files]:
                os.lchown(name, sandbox.server_user.uid, sandbox.server_user.gid)
    return scratch, datadir


def test_drill_over_a_fresh_base_backup_passes(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup)
    result = run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, fetch_seconds=1.5)

    assert result['verdict'] == 'passed'
    assert result['pg_version'] == '15'
    assert result['backup_timeline'] == backup['info']['start_timeline']
    assert result['timeline'] > backup['info']['start_timeline']
    assert result['server_user'] == sandbox.server_user.name
    assert result['row_counts']['public.%s' % BASE_TABLE] == BASE_ROWS
    names = [check['name'] for check in result['checks']]
    assert names[0] == 'catalog' and 'connect postgres' in names and 'connect template1' in names and names[-1] == 'row counts'
    assert all(check['passed'] for check in result['checks']), result['checks']
    seconds = result['seconds']
    assert 0 < seconds['start_to_consistent'] <= seconds['recovery']
    assert seconds['checks'] > 0 and seconds['stop'] > 0 and seconds['prepare'] >= 0 and seconds['fetch'] == 1.5
    assert seconds['total'] >= seconds['recovery'] + seconds['checks']
    assert result['rto_seconds'] == pytest.approx(1.5 + seconds['recovery'] + seconds['checks'], abs=0.002)
    assert result['recovery']['consistent_lsn'] and result['recovery']['end_lsn']
    assert 'selected new timeline ID' in result['log_tail'] or 'ready to accept connections' in result['log_tail']
    json.dumps(result)  # JSON-serialisable as a module result
    assert not os.path.exists(scratch), 'the scratch directory handed over must be removed'
    assert not _processes_under(scratch)


def test_user_checks_pass_and_keep_leaves_the_scratch_area(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup, give_to_server=False)  # root-owned copy: the runner chowns it
    checks = [
        dict(name='base rows', query='SELECT count(*) FROM %s' % BASE_TABLE, expected=BASE_ROWS),
        dict(query='SELECT count(*) FROM %s' % BASE_TABLE, expected=str(BASE_ROWS)),
        dict(name='sum', query='SELECT sum(id)::numeric / 2 FROM %s' % BASE_TABLE, expected=BASE_ROWS * (BASE_ROWS + 1) / 4),
        dict(name='a boolean', query='SELECT count(*) > 1000 FROM %s' % BASE_TABLE, expected=True),
        dict(name='read only', query="SELECT current_setting('transaction_read_only')", expected='on'),
        dict(name='rows', query='SELECT id, note FROM %s ORDER BY id LIMIT 2' % BASE_TABLE,
             expected=[[1, 'c4ca4238a0b923820dcc509a6f75849b'], [2, 'c81e728d9d4c2f636f067f89cc14862c']]),
        dict(name='other database', query='SELECT current_database()', database='template1', expected='template1'),
        dict(name='no expected value', query='SELECT now()'),
    ]
    try:
        # hot_standby = off: the server accepts connections only once promoted, and the drill still measures it.
        result = run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, checks=checks,
                           settings={'hot_standby': 'off'}, keep=True)
        assert result['verdict'] == 'passed'
        assert [c['passed'] for c in result['checks']] == [True] * len(checks)
        assert result['checks'][1]['name'] == 'check 2' and result['checks'][1]['value'] == BASE_ROWS
        assert result['checks'][6]['database'] == 'template1'
        assert result['row_counts'] == {}  # not counted with user checks unless asked
        assert result['kept'] is True and os.path.isfile(result['log_file'])
        assert os.path.isdir(datadir) and not _processes_under(scratch), 'keep keeps the files, never a running server'
        assert not os.path.exists(os.path.join(datadir, 'postmaster.pid'))
        with open(os.path.join(datadir, 'postgresql.auto.conf'), encoding='utf-8') as handle:
            assert "archive_mode = 'off'" in handle.read()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_a_failing_check_fails_the_drill_and_names_query_and_value(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup)
    checks = [
        dict(name='too many rows', query='SELECT count(*) FROM %s' % BASE_TABLE, expected=BASE_ROWS + 1),
        dict(name='fine', query='SELECT 1', expected=1),
        dict(name='writes', query='INSERT INTO %s VALUES (0)' % BASE_TABLE),
    ]
    with pytest.raises(PgopsError) as caught:
        run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, checks=checks)
    error = caught.value
    assert "'too many rows'" in error.msg and 'SELECT count(*) FROM %s' % BASE_TABLE in error.msg
    assert 'returned %d, expected %d' % (BASE_ROWS, BASE_ROWS + 1) in error.msg
    assert "'writes'" in error.msg and 'read-only transaction' in error.msg
    assert error.details['verdict'] == 'failed' and error.details['phase'] == 'checks'
    outcomes = error.details['checks']
    assert [c['passed'] for c in outcomes] == [False, True, False]
    assert outcomes[0]['value'] == BASE_ROWS and outcomes[0]['expected'] == BASE_ROWS + 1
    assert error.details['timeline'] > backup['info']['start_timeline']
    assert not os.path.exists(scratch) and not _processes_under(scratch)


def test_point_in_time_target_keeps_rows_before_and_drops_rows_after(sandbox, backup):
    primary = sandbox.primary
    primary.execute('DROP TABLE IF EXISTS drill_pitr')
    primary.execute('CREATE TABLE drill_pitr (id int, batch text)')
    primary.execute("INSERT INTO drill_pitr SELECT g, 'A' FROM generate_series(1, 100) g")
    time.sleep(1)
    target = primary.execute('SELECT clock_timestamp()')[0][0]
    time.sleep(1)
    primary.execute("INSERT INTO drill_pitr SELECT g, 'B' FROM generate_series(101, 150) g")
    _switch_and_wait(sandbox)

    scratch, datadir = _copy(sandbox, backup)
    checks = [
        dict(name='batch A', query="SELECT count(*) FROM drill_pitr WHERE batch = 'A'", expected=100),
        dict(name='batch B', query="SELECT count(*) FROM drill_pitr WHERE batch = 'B'", expected=0),
    ]
    result = run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, checks=checks,
                       recovery_target={'time': target})
    assert result['verdict'] == 'passed', result['checks']
    assert result['recovery_target'] == {'time': target.isoformat(), 'inclusive': True, 'timeline': 'latest'}
    assert result['recovery']['stop'].startswith('recovery stopping before commit of transaction')
    assert not os.path.exists(scratch)


def test_a_missing_wal_segment_fails_fast_with_the_server_log(sandbox, backup):
    server = sandbox.server_user
    archive = tempfile.mkdtemp(prefix='pgops-drill-archive-')
    missing = backup['info']['start_wal_file']
    try:
        for name in os.listdir(sandbox.archive_dir):
            if name != missing:
                source = os.path.join(sandbox.archive_dir, name)
                try:
                    os.link(source, os.path.join(archive, name))
                except OSError:
                    shutil.copy2(source, os.path.join(archive, name))
        server.make_dir(archive, 0o750)
        scratch, datadir = _copy(sandbox, backup)
        began = time.monotonic()
        with pytest.raises(PgopsError) as caught:
            run_drill(datadir, _restore_command(archive), scratch_dir=scratch, timeout=120)
        elapsed = time.monotonic() - began
    finally:
        shutil.rmtree(archive, ignore_errors=True)
    error = caught.value
    assert elapsed < 30, 'a drill over a broken archive must fail at once, not after the timeout (%.1f s)' % elapsed
    assert error.details['verdict'] == 'failed' and error.details['phase'] == 'recovery'
    assert 'could not locate required checkpoint record' in error.msg
    assert '--- last lines of the server log ---' in error.msg and error.details['log_tail']
    assert 'keep=true keeps it' in error.msg
    assert not os.path.exists(scratch) and not _processes_under(scratch)


def test_the_drill_never_archives_into_production(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup)
    # A hostile restored configuration: an included file turns archiving on into the production archive, leaves an old
    # recovery target behind and names another data directory. The base backup already carries the primary's own
    # archive_mode = on and archive_command into sandbox.archive_dir.
    with open(os.path.join(datadir, 'hostile.conf'), 'w', encoding='utf-8') as handle:
        handle.write("archive_mode = on\narchive_command = 'cp %%p %s/%%f'\nrecovery_target_name = 'left over'\n"
                     "data_directory = '/nonexistent/pgdata'\nexternal_pid_file = '%s/prod.pid'\n"
                     % (sandbox.archive_dir, scratch))
    with open(os.path.join(datadir, 'postgresql.conf'), 'a', encoding='utf-8') as handle:
        handle.write("\ninclude 'hostile.conf'\n")
    checks = [
        dict(name='archive_mode', query='SHOW archive_mode', expected='off'),
        dict(name='archive_command', query='SHOW archive_command', expected='(disabled)'),
        dict(name='archive_command from the drill', expected=True,
             query="SELECT sourcefile LIKE '%/postgresql.auto.conf' FROM pg_settings WHERE name = 'archive_command'"),
        dict(name='no TCP', query='SHOW listen_addresses', expected=''),
        dict(name='data directory', query='SHOW data_directory', expected=datadir),
        dict(name='cluster name', query='SHOW cluster_name', expected='pgops-drill'),
    ]
    before = sorted(os.listdir(sandbox.archive_dir))
    try:
        # Without scratch_dir: the runner works in a temporary directory of its own and leaves the data directory.
        result = run_drill(datadir, _restore_command(sandbox.archive_dir), timeout=120, checks=checks)
        time.sleep(0.5)
        after = sorted(os.listdir(sandbox.archive_dir))
        assert result['verdict'] == 'passed', result['checks']
        new = sorted(set(after) - set(before))
        assert not new, 'the drill archived into production: %s' % new
        assert '%08X.history' % result['timeline'] not in after
        # (a .partial of an earlier promotion in the shared sandbox may be there already; none may be new)
        assert not [name for name in new if name.endswith('.partial')]
        assert os.path.isdir(datadir), 'a data directory not handed over is not the runner\'s to delete'
        assert result['log_file'] is None, 'the runner\'s own work directory (and its log) is removed'
        assert not os.path.exists(os.path.join(scratch, 'prod.pid'))
        assert not _processes_under(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- amcheck: pg_amcheck over the promoted copy ----------------------------------------------------------------


PAGE_SIZE = 8192  # BLCKSZ of the sandbox's PostgreSQL (the default)


def _plant_corruption(datadir, relpath):
    """Overwrite the tuple header of the middle item of block 0 of ``relpath`` (in ``datadir``) with 0xff bytes, as a
    bad disk or a bad copy would: xmin, xmax, the infomask and the data offset all become nonsense.

    The page layout is PostgreSQL 15's (storage/bufpage.h): a 24-byte header whose ``pd_lower`` (bytes 12-13) ends
    the array of 4-byte line pointers that starts at byte 24; each line pointer's low 15 bits are the item's offset
    in the page (``lp_off``). Returns the item's offset number (1-based), which pg_amcheck reports.
    """
    path = os.path.join(datadir, relpath)
    with open(path, 'r+b') as handle:
        page = bytearray(handle.read(PAGE_SIZE))
        items = (struct.unpack_from('<H', page, 12)[0] - 24) // 4
        assert items > 2, 'block 0 of %s should hold many tuples, has %d' % (relpath, items)
        offset_number = items // 2 + 1
        lp_off = struct.unpack_from('<I', page, 24 + 4 * (offset_number - 1))[0] & 0x7fff
        page[lp_off:lp_off + 24] = b'\xff' * 24  # the heap tuple header (23 bytes) and the first byte of its data
        handle.seek(0)
        handle.write(page)
    return offset_number


def test_amcheck_on_a_healthy_backup_passes_and_reports_what_it_checked(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup)
    # A restored configuration in pg_amcheck's way: every statement cancelled after 1 ms (pg_amcheck would report each
    # cancelled check as corruption), every transaction read-only (CREATE EXTENSION amcheck would fail).
    with open(os.path.join(datadir, 'postgresql.conf'), 'a', encoding='utf-8') as handle:
        handle.write("\nstatement_timeout = 1\ndefault_transaction_read_only = on\nlock_timeout = 1\n")
    result = run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, amcheck=True,
                       fetch_seconds=1.0)
    assert result['verdict'] == 'passed'
    checked = result['amcheck']
    assert {'postgres', 'template1'} <= set(checked['databases']) and 'template0' not in checked['databases']
    # the catalogs, TOAST tables and indexes of every database, drill_base and its primary key among them
    assert checked['relations_checked'] > 100 * len(checked['databases']) and checked['pages_checked'] > 0
    assert checked['options'] == ['--all', '--install-missing', '--parent-check', '--heapallindexed']
    assert checked['corruption'] == [] and checked['corruption_count'] == 0 and checked['corrupt_relations'] == []
    seconds = result['seconds']
    assert seconds['amcheck'] > 0 and checked['seconds'] > 0
    assert result['rto_seconds'] == pytest.approx(1.0 + seconds['recovery'] + seconds['checks'], abs=0.002)  # amcheck not in it
    assert all(check['passed'] for check in result['checks'])
    json.dumps(result)
    assert not os.path.exists(scratch) and not _processes_under(scratch)


def test_amcheck_fails_the_drill_on_a_corrupt_heap_page_naming_the_relation_and_block(sandbox, backup):
    scratch, datadir = _copy(sandbox, backup)
    offset_number = _plant_corruption(datadir, backup['heap_file'])
    # Checks that do not read drill_base, so that the drill gets as far as pg_amcheck (a count(*) would stumble first).
    checks = [dict(name='answers', query='SELECT 1', expected=1)]
    with pytest.raises(PgopsError) as caught:
        run_drill(datadir, _restore_command(sandbox.archive_dir), scratch_dir=scratch, timeout=120, checks=checks, amcheck=True)
    error = caught.value
    assert error.details['verdict'] == 'failed' and error.details['phase'] == 'amcheck'
    assert 'pg_amcheck found corruption in database postgres' in error.msg
    assert 'heap table postgres.public.%s (block 0)' % BASE_TABLE in error.msg
    found = error.details['amcheck']
    heap = [r for r in found['corrupt_relations'] if r['kind'] == 'heap table']
    assert heap == [dict(kind='heap table', database='postgres', relation='public.%s' % BASE_TABLE, blocks=[0])]
    assert found['corruption_count'] >= 1 and found['databases']
    assert any(line.startswith('heap table "postgres.public.%s", block 0, offset %d' % (BASE_TABLE, offset_number))
               for line in found['corruption']), found['corruption']
    assert error.details['seconds']['amcheck'] > 0 and [c['passed'] for c in error.details['checks']] == [True]
    assert not os.path.exists(scratch) and not _processes_under(scratch)
