# -*- coding: utf-8 -*-
"""pg_sanity_info, table_fingerprints and pg_space_info against the sandbox's real PostgreSQL, and the playbooks
sanity_report and space_check run by FQCN as users run them."""

from __future__ import annotations

import os
import uuid

import psycopg2
import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._inspect import space
from ansible_collections.pgops.resilience.plugins.module_utils._inspect import sanity
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import (
    compare_fingerprints, table_fingerprints)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec

from .helpers import run_playbook

SETUP = """
CREATE EXTENSION pg_trgm;
CREATE SCHEMA app;
CREATE SCHEMA billing;
CREATE SCHEMA "Odd Schema";
CREATE TABLE app.users (id int PRIMARY KEY, name text, t text);
INSERT INTO app.users SELECT g, 'user ' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'x' END FROM generate_series(1, 100) g;
CREATE TABLE billing.invoices (id int, amount numeric(10, 2), at timestamptz, ratio float8, blob bytea, tags text[]);
INSERT INTO billing.invoices SELECT g, g * 1.25, timestamptz '2025-01-01 12:00:00+00' + g * interval '1 hour', 1.0 / g,
    decode(md5(g::text), 'hex'), ARRAY['a', g::text] FROM generate_series(1, 40) g;
CREATE TABLE "Odd Schema"."Weird Table" (x int);
INSERT INTO "Odd Schema"."Weird Table" SELECT generate_series(1, 7);
CREATE TABLE app.events (id int, day date) PARTITION BY RANGE (day);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_2025 PARTITION OF app.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO app.events SELECT g, CASE WHEN g <= 30 THEN date '2024-06-01' ELSE date '2025-06-01' END FROM generate_series(1, 50) g;
CREATE TABLE app.legacy_parent (id int);
CREATE TABLE app.legacy_child () INHERITS (app.legacy_parent);
INSERT INTO app.legacy_parent VALUES (1), (2);
INSERT INTO app.legacy_child VALUES (3), (4), (5);
CREATE MATERIALIZED VIEW app.user_counts AS SELECT t, count(*) AS n FROM app.users GROUP BY t;
CREATE MATERIALIZED VIEW app.later AS SELECT * FROM app.users WITH NO DATA;
CREATE TABLE app.extension_owned (x int);
INSERT INTO app.extension_owned VALUES (1);
ALTER EXTENSION pg_trgm ADD TABLE app.extension_owned;
"""
EXACT_ROWS = {'app.users': 100, 'billing.invoices': 40, 'Odd Schema.Weird Table': 7, 'app.events_2024': 30, 'app.events_2025': 20,
              'app.legacy_parent': 2, 'app.legacy_child': 3}


def _params(node, password, dbname, **overrides):
    spec = postgres_argument_spec()
    spec.update(sanity.argument_spec())
    spec.update(space.argument_spec())
    params = dict((name, option.get('default')) for name, option in spec.items())
    params.update(login_host='127.0.0.1', login_port=node.port, login_password=password, login_db=dbname, ssl_mode='disable',
                  connect_timeout=5)
    params.update(overrides)
    return params


def _execute(node, dbname, statements):
    conn = node.connect(dbname=dbname)
    try:
        with conn.cursor() as cursor:
            cursor.execute(statements)
    finally:
        conn.close()


@pytest.fixture
def sanity_db(healthy):
    """A database with three schemas, a partitioned table, inheritance, two materialized views (one WITH NO DATA),
    pg_trgm and a table that belongs to it; returns its name. Not vacuumed or analyzed."""
    name = 'sanity_%s' % uuid.uuid4().hex[:8]
    healthy.primary.execute('CREATE DATABASE %s' % name)
    _execute(healthy.primary, name, SETUP)
    return name


def _fingerprints(node, dbname, **kwargs):
    conn = node.connect(dbname=dbname)
    try:
        result = table_fingerprints(conn, **kwargs)
        assert conn.autocommit is True  # restored
        return result
    finally:
        conn.close()


def _by_name(entries):
    return dict(('%s.%s' % (e['schema'], e['name']), e) for e in entries)


# -- pg_sanity_info --------------------------------------------------------------------------------------------

def test_sanity_exact_counts(healthy, sanity_db):
    report = sanity.inspect_database(_params(healthy.primary, healthy.password, sanity_db, exact_counts=True))
    assert report['changed'] is False and report['database'] == sanity_db and report['exact_counts'] is True
    assert report['server_version_num'] >= 150000 and report['server_version'].startswith('15')
    assert [s['name'] for s in report['schemas']] == ['Odd Schema', 'app', 'billing', 'public']
    assert dict((s['name'], s['tables']) for s in report['schemas']) == {'Odd Schema': 1, 'app': 6, 'billing': 1, 'public': 0}
    tables = _by_name(report['tables'])
    assert 'app.extension_owned' not in tables  # an extension member, as pg_dump leaves it out
    for table, rows in EXACT_ROWS.items():
        assert (tables[table]['rows'], tables[table]['rows_exact'], tables[table]['rows_source']) == (rows, True, 'count'), table
        assert tables[table]['kind'] == 'table' and tables[table]['bytes'] > 0
    events = tables['app.events']
    assert (events['kind'], events['rows'], events['rows_exact'], events['partitions']) == ('partitioned table', 50, True, 2)
    assert events['bytes'] == tables['app.events_2024']['bytes'] + tables['app.events_2025']['bytes']
    assert tables['app.events_2024']['partition_of'] == 'app.events' and tables['app.users']['partition_of'] is None
    views = _by_name(report['materialized_views'])
    assert (views['app.user_counts']['populated'], views['app.user_counts']['rows'], views['app.user_counts']['rows_exact']) == (True, 2, True)
    assert (views['app.later']['populated'], views['app.later']['rows']) == (False, None)
    extensions = dict((e['name'], e) for e in report['extensions'])
    assert extensions['pg_trgm']['schema'] == 'public' and extensions['pg_trgm']['version'] and 'plpgsql' in extensions
    assert report['totals'] == dict(schemas=4, tables=7, partitions=2, partitioned_tables=1, foreign_tables=0, materialized_views=2,
                                    unpopulated_materialized_views=1, extensions=2, table_rows=sum(EXACT_ROWS.values()),
                                    materialized_view_rows=2, bytes=report['totals']['bytes'])
    assert report['totals']['bytes'] == sum(t['bytes'] for t in report['tables'] if t['kind'] == 'table') + \
        sum(v['bytes'] for v in report['materialized_views'])
    assert report['notes'] == [] and report['missing_schemas'] == []
    assert all(t['checksum'] is None for t in report['tables'])


def test_sanity_estimates_then_after_analyze(healthy, sanity_db):
    params = _params(healthy.primary, healthy.password, sanity_db)
    report = sanity.inspect_database(params)
    assert report['exact_counts'] is False and 'estimates' in report['notes'][0]
    for entry in report['tables'] + report['materialized_views']:
        assert entry['rows_exact'] is False
        assert entry['rows_source'] in ('reltuples', 'n_live_tup', 'partitions', None)
    healthy.primary.execute('ANALYZE', dbname=sanity_db)
    tables = _by_name(sanity.inspect_database(params)['tables'])
    for table, rows in EXACT_ROWS.items():
        # ANALYZE of these small tables reads every row: the planner's estimate is the count.
        assert (tables[table]['rows'], tables[table]['rows_exact'], tables[table]['rows_source']) == (rows, False, 'reltuples'), table
    assert (tables['app.events']['rows'], tables['app.events']['rows_exact']) == (50, False)


def test_sanity_schema_filter_reports_missing_schemas(healthy, sanity_db):
    report = sanity.inspect_database(_params(healthy.primary, healthy.password, sanity_db, schemas=['Odd Schema', 'nope', 'App']))
    warnings = report['warnings']
    assert [s['name'] for s in report['schemas']] == ['Odd Schema']
    assert [t['name'] for t in report['tables']] == ['Weird Table'] and report['materialized_views'] == []
    assert report['missing_schemas'] == ['App', 'nope']  # exact catalog names: App is not app
    assert warnings == ['schemas: App, nope not found in database %s.' % sanity_db]


def test_sanity_partitions_in_an_unreported_schema_still_count_for_their_parent(healthy, sanity_db):
    _execute(healthy.primary, sanity_db, "CREATE TABLE billing.events_2026 PARTITION OF app.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
                                         "INSERT INTO app.events VALUES (51, '2026-02-01'), (52, '2026-03-01')")
    report = sanity.inspect_database(_params(healthy.primary, healthy.password, sanity_db, schemas=['app'], exact_counts=True))
    tables = _by_name(report['tables'])
    assert 'billing.events_2026' not in tables
    assert (tables['app.events']['rows'], tables['app.events']['partitions']) == (52, 3)


def test_sanity_checksums_equal_table_fingerprints_and_work_on_the_standby(healthy, sanity_db):
    report = sanity.inspect_database(_params(healthy.primary, healthy.password, sanity_db, checksums=True))
    assert report['exact_counts'] is True
    fingerprints = _fingerprints(healthy.primary, sanity_db)
    for entry in report['tables'] + report['materialized_views']:
        key = '%s.%s' % (entry['schema'], entry['name'])
        if key in fingerprints:
            assert (entry['rows'], entry['checksum']) == (fingerprints[key]['rows'], fingerprints[key]['checksum']), key
        else:
            assert entry['checksum'] is None, key
    healthy.wait_for_replay()
    on_standby = _fingerprints(healthy.standby, sanity_db)
    assert compare_fingerprints(fingerprints, on_standby) == {'identical': True, 'differences': []}


# -- table_fingerprints ----------------------------------------------------------------------------------------

def test_fingerprints_cover_tables_partitions_and_populated_views_only(healthy, sanity_db):
    fingerprints = _fingerprints(healthy.primary, sanity_db)
    assert set(fingerprints) == set(EXACT_ROWS) | {'app.user_counts'}
    for key, rows in EXACT_ROWS.items():
        schema, name = key.split('.', 1)
        entry = fingerprints[key]
        assert (entry['schema'], entry['name'], entry['kind'], entry['rows']) == (schema, name, 'table', rows)
        assert isinstance(entry['checksum'], str) and entry['checksum'].lstrip('-').isdigit()
    assert fingerprints['app.user_counts']['kind'] == 'materialized view' and fingerprints['app.user_counts']['rows'] == 2
    assert fingerprints['app.legacy_parent']['checksum'] != fingerprints['app.legacy_child']['checksum']
    counts_only = _fingerprints(healthy.primary, sanity_db, schemas=['app', 'nope'], checksums=False)
    assert set(counts_only) == {k for k in fingerprints if k.startswith('app.')}
    assert all(e['checksum'] is None for e in counts_only.values())
    assert counts_only['app.users']['rows'] == 100
    assert _fingerprints(healthy.primary, sanity_db, schemas=['nope']) == {}


def test_fingerprint_of_rows_copied_in_another_order_is_equal_and_an_update_changes_it(healthy, sanity_db):
    node = healthy.primary
    _execute(node, sanity_db, 'CREATE SCHEMA copy; CREATE TABLE copy.users (LIKE app.users);'
                              'INSERT INTO copy.users SELECT * FROM app.users ORDER BY id DESC;'
                              'CLUSTER app.users USING users_pkey')
    fingerprints = _fingerprints(node, sanity_db, schemas=['app', 'copy'])
    assert fingerprints['copy.users']['checksum'] == fingerprints['app.users']['checksum']
    assert fingerprints['copy.users']['rows'] == 100
    node.execute("UPDATE copy.users SET name = 'user 500' WHERE id = 50", dbname=sanity_db)
    changed = _fingerprints(node, sanity_db, schemas=['copy'])
    assert changed['copy.users']['rows'] == 100
    assert changed['copy.users']['checksum'] != fingerprints['app.users']['checksum']
    node.execute("UPDATE copy.users SET name = 'user 50' WHERE id = 50", dbname=sanity_db)
    assert _fingerprints(node, sanity_db, schemas=['copy'])['copy.users']['checksum'] == fingerprints['app.users']['checksum']
    # A NULL and an empty string are different rows.
    node.execute("UPDATE copy.users SET t = '' WHERE id = 3", dbname=sanity_db)
    assert _fingerprints(node, sanity_db, schemas=['copy'])['copy.users']['checksum'] != fingerprints['app.users']['checksum']


def test_restored_copy_in_another_database_compares_identical_whatever_its_settings(healthy, sanity_db):
    node = healthy.primary
    copy = sanity_db + '_copy'
    node.execute('CREATE DATABASE %s' % copy)
    # The copy's sessions write dates, times, floats and bytea differently: the checksums must not see it.
    node.execute("ALTER DATABASE %s SET DateStyle = 'SQL, DMY'" % copy)
    node.execute("ALTER DATABASE %s SET TimeZone = 'America/New_York'" % copy)
    node.execute('ALTER DATABASE %s SET extra_float_digits = 0' % copy)
    node.execute("ALTER DATABASE %s SET bytea_output = 'escape'" % copy)
    _execute(node, copy, 'CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int, amount numeric(10, 2), at timestamptz,'
                         ' ratio float8, blob bytea, tags text[])')
    source_conn, copy_conn = node.connect(dbname=sanity_db), node.connect(dbname=copy)
    try:
        with source_conn.cursor() as cursor:
            cursor.execute('SELECT * FROM billing.invoices ORDER BY random()')
            rows = cursor.fetchall()
        with copy_conn.cursor() as cursor:
            cursor.executemany('INSERT INTO billing.invoices VALUES (%s, %s, %s, %s, %s, %s)', rows)
            cursor.execute("SELECT at::text, ratio::text FROM billing.invoices WHERE id = 3")
            at_text, ratio_text = cursor.fetchone()
    finally:
        source_conn.close()
        copy_conn.close()
    # The copy's own settings are in force (psycopg2 itself sets DateStyle to ISO on connecting, which is why the
    # checksums pin it as well as the others).
    assert at_text == '2025-01-01 10:00:00-05' and ratio_text == '0.333333333333333'
    source = _fingerprints(node, sanity_db, schemas=['billing'])
    restored = _fingerprints(node, copy, schemas=['billing'])
    assert compare_fingerprints(source, restored) == {'identical': True, 'differences': []}
    node.execute('UPDATE billing.invoices SET ratio = ratio + 1e-15 WHERE id = 3', dbname=copy)
    node.execute('DELETE FROM billing.invoices WHERE id = 40', dbname=sanity_db)
    node.execute('CREATE TABLE billing.extra (x int)', dbname=copy)
    source = _fingerprints(node, sanity_db, schemas=['billing', 'app'])
    restored = _fingerprints(node, copy, schemas=['billing'])
    result = compare_fingerprints(source, restored)
    problems = dict((d['table'], d['problem']) for d in result['differences'])
    assert result['identical'] is False
    assert problems['billing.invoices'] == 'rows' and problems['billing.extra'] == 'extra' and problems['app.users'] == 'missing'
    node.execute('INSERT INTO billing.invoices SELECT * FROM billing.invoices WHERE id = 3', dbname=sanity_db)
    node.execute('DROP TABLE billing.extra', dbname=copy)
    result = compare_fingerprints(_fingerprints(node, sanity_db, schemas=['billing']), _fingerprints(node, copy, schemas=['billing']))
    # 40 rows each again, but the copy's id 3 differs in its last float digit and the source has id 3 twice.
    assert [(d['table'], d['problem'], d['source_rows'], d['restored_rows']) for d in result['differences']] == \
        [('billing.invoices', 'checksum', 40, 40)]


def test_fingerprints_in_an_exported_snapshot(healthy, sanity_db):
    node = healthy.primary
    exporter = node.connect(dbname=sanity_db, autocommit=False)
    try:
        with exporter.cursor() as cursor:
            cursor.execute('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY')
            cursor.execute('SELECT pg_export_snapshot()')
            snapshot = cursor.fetchone()[0]
        node.execute("INSERT INTO app.users VALUES (101, 'late', 'x')", dbname=sanity_db)
        then = _fingerprints(node, sanity_db, schemas=['app'], snapshot=snapshot)
        now = _fingerprints(node, sanity_db, schemas=['app'])
    finally:
        exporter.rollback()
        exporter.close()
    assert (then['app.users']['rows'], now['app.users']['rows']) == (100, 101)
    assert compare_fingerprints(then, now)['differences'][0]['problem'] == 'rows'
    conn = node.connect(dbname=sanity_db)
    try:
        with pytest.raises(PgopsError) as err:
            table_fingerprints(conn, snapshot=snapshot)  # the exporting transaction has ended
        assert err.value.msg.startswith('PostgreSQL error while importing snapshot %s: ' % snapshot)
        assert conn.autocommit is True and table_fingerprints(conn, schemas=['app'])['app.users']['rows'] == 101
    finally:
        conn.close()


def test_fingerprints_without_privilege_fail_naming_the_table(healthy, sanity_db):
    role = 'sanity_reader_%s' % uuid.uuid4().hex[:6]
    healthy.primary.execute("CREATE ROLE %s LOGIN PASSWORD 'reader-pw-1'" % role)
    healthy.primary.execute('GRANT USAGE ON SCHEMA app TO %s; GRANT SELECT ON app.users TO %s' % (role, role), dbname=sanity_db)
    conn = psycopg2.connect(host='127.0.0.1', port=healthy.primary.port, user=role, password='reader-pw-1', dbname=sanity_db)
    conn.autocommit = True
    try:
        with pytest.raises(PgopsError) as err:
            table_fingerprints(conn, schemas=['app'])
        assert 'reading the rows of app.events_2024: permission denied for table events_2024' in err.value.msg
    finally:
        conn.close()
    report = sanity.inspect_database(_params(healthy.primary, 'reader-pw-1', sanity_db, login_user=role, schemas=['app'], exact_counts=True))
    tables = _by_name(report['tables'])
    assert (tables['app.users']['rows'], tables['app.users']['rows_exact']) == (100, True)
    assert tables['app.legacy_child']['rows_exact'] is False
    assert 'No SELECT privilege on app.legacy_child: its row count is an estimate and it has no checksum.' in report['notes']


# -- pg_space_info ---------------------------------------------------------------------------------------------

def _walk(path):
    size = files = 0
    for directory, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(directory, name)
            if os.path.isfile(full) and not os.path.islink(full):
                size += os.lstat(full).st_size
                files += 1
    return size, files


def test_space_sizes_filesystems_and_archive(healthy, sanity_db):
    node = healthy.primary
    archive = healthy.archive_dir
    before = _walk(archive)
    statvfs = os.statvfs(node.datadir)
    report = space.measure_space(_params(node, healthy.password, sanity_db, wal_archive_directory=archive, top_tables=3))
    after = _walk(archive)
    assert report['changed'] is False and report['database'] == sanity_db and report['in_recovery'] is False
    databases = dict((d['name'], d) for d in report['databases'])
    assert databases[sanity_db]['bytes'] > 0 and databases[sanity_db]['pretty'].endswith(('kB', 'MB'))
    assert report['databases_total_bytes'] == sum(d['bytes'] for d in report['databases'])
    assert [d['bytes'] for d in report['databases']] == sorted((d['bytes'] for d in report['databases']), reverse=True)
    assert len(report['tables']) == 3 and report['tables'][0]['total_bytes'] >= report['tables'][-1]['total_bytes']
    users = _by_name(space.measure_space(_params(node, healthy.password, sanity_db, top_tables=50))['tables'])['app.users']
    assert users['index_bytes'] > 0 and users['table_bytes'] > 0
    assert users['total_bytes'] == users['table_bytes'] + users['index_bytes'] + users['toast_bytes']
    total, = node.execute("SELECT pg_total_relation_size('app.users')", dbname=sanity_db)[0]
    assert users['total_bytes'] == total
    wal = report['wal']
    assert wal['readable'] is True and wal['files'] > 0 and wal['bytes'] >= wal['segment_size'] == 16 * 1024 * 1024
    assert wal['directory'] == os.path.join(node.datadir, 'pg_wal') and isinstance(wal['archiver']['archived_count'], int)
    assert report['data_directory'] == node.datadir and report['data_directory_source'] == 'server'
    assert report['data_directory_verified'] is True
    data_fs = report['filesystems'][0]
    assert (data_fs['option'], data_fs['path']) == ('data_directory', node.datadir)
    assert data_fs['total_bytes'] == statvfs.f_blocks * statvfs.f_frsize
    assert abs(data_fs['available_bytes'] - statvfs.f_bavail * statvfs.f_frsize) < 512 * 1024 * 1024
    assert data_fs['free_percent'] == pytest.approx(100.0 * statvfs.f_bavail / statvfs.f_blocks, abs=0.5)
    archive_fs = report['filesystems'][-1]
    assert (archive_fs['option'], archive_fs['path']) == ('wal_archive_directory', archive)
    assert report['wal_archive']['path'] == archive
    assert before[0] <= report['wal_archive']['bytes'] <= after[0] and before[1] <= report['wal_archive']['files'] <= after[1]
    assert report['wal_archive']['files'] > 0  # the sandbox archives every WAL segment it fills


def test_space_verdict_follows_thresholds(healthy):
    node = healthy.primary
    free = space.measure_space(_params(node, healthy.password, 'postgres'))['filesystems'][0]['free_percent']
    critical = space.measure_space(_params(node, healthy.password, 'postgres', warning_free_percent=100, critical_free_percent=100))
    assert critical['verdict'] == 'critical'
    assert critical['verdict_reasons'][0].startswith('data_directory %s: ' % node.datadir)
    assert critical['verdict_reasons'][0].endswith('critical below 100%')
    warning = space.measure_space(_params(node, healthy.password, 'postgres', warning_free_percent=min(100, free + 5), critical_free_percent=0))
    assert (warning['verdict'], len(warning['verdict_reasons'])) == ('warning', 1)
    ok = space.measure_space(_params(node, healthy.password, 'postgres', warning_free_percent=max(0, free - 5), critical_free_percent=0))
    assert (ok['verdict'], ok['verdict_reasons']) == ('ok', [])
    by_bytes = space.measure_space(_params(node, healthy.password, 'postgres', warning_free_percent=0, critical_free_percent=0,
                                           critical_free_bytes=2 ** 62, warning_free_bytes=2 ** 62))
    assert by_bytes['verdict'] == 'critical' and by_bytes['thresholds']['critical_free_bytes'] == 2 ** 62


def test_space_errors_name_the_option(healthy, tmp_path):
    node = healthy.primary
    with pytest.raises(PgopsError) as err:
        space.measure_space(_params(node, healthy.password, 'postgres', warning_free_percent=10, critical_free_percent=30))
    assert err.value.msg.startswith('critical_free_percent (30) must not be above warning_free_percent (10)')
    with pytest.raises(PgopsError) as err:
        space.measure_space(_params(node, healthy.password, 'postgres', wal_archive_directory=str(tmp_path / 'nope')))
    assert err.value.msg.startswith('wal_archive_directory %s does not exist on ' % (tmp_path / 'nope'))
    with pytest.raises(PgopsError) as err:
        space.measure_space(_params(node, healthy.password, 'postgres', top_tables=-1))
    assert err.value.msg == 'top_tables must be 0 or more, not -1.'
    (tmp_path / 'global').mkdir()
    (tmp_path / 'global' / 'pg_control').write_bytes(b'\x01' * 64)
    with pytest.raises(PgopsError) as err:
        space.measure_space(_params(node, healthy.password, 'postgres', data_directory=str(tmp_path)))
    assert 'data_directory %s belongs to another PostgreSQL cluster' % tmp_path in err.value.msg
    # The standby is a copy of the primary: same system identifier.
    report = space.measure_space(_params(healthy.standby, healthy.password, 'postgres', data_directory=healthy.standby.datadir, top_tables=0))
    assert report['in_recovery'] is True and report['data_directory_verified'] is True and report['tables'] == []
    assert report['data_directory_source'] == 'option'


def test_space_as_an_unprivileged_user_degrades_with_notes(healthy):
    node = healthy.primary
    role = 'space_user_%s' % uuid.uuid4().hex[:6]
    node.execute("CREATE ROLE %s LOGIN PASSWORD 'space-pw-1'" % role)
    params = _params(node, 'space-pw-1', 'postgres', login_user=role)
    with pytest.raises(PgopsError) as err:
        space.measure_space(params)
    assert err.value.msg == ('data_directory: the server does not reveal its data directory to this user (that needs superuser '
                             'or pg_read_all_settings); set data_directory.')
    report = space.measure_space(dict(params, data_directory=node.datadir))
    assert (report['wal']['readable'], report['wal']['files'], report['wal']['bytes']) == (False, None, None)
    assert 'The size of pg_wal is unknown: pg_ls_waldir() needs superuser or membership in pg_monitor.' in report['notes']
    assert report['verdict'] in ('ok', 'warning', 'critical') and report['filesystems'][0]['total_bytes'] > 0
    node.execute('GRANT pg_monitor TO %s' % role)
    report = space.measure_space(params)  # pg_monitor includes pg_read_all_settings
    assert report['wal']['readable'] is True and report['wal']['bytes'] > 0 and report['data_directory'] == node.datadir


@pytest.mark.parametrize('module', [sanity, space])
def test_info_modules_read_in_read_only_sessions(healthy, sanity_db, monkeypatch, module):
    """Every session of pg_sanity_info and pg_space_info is READ ONLY: no statement they run could write."""
    real_connect, seen = module.connect, []

    def connect(params, **kwargs):
        conn = real_connect(params, **kwargs)
        with conn.cursor() as cursor:
            cursor.execute('SHOW default_transaction_read_only')
            seen.append(cursor.fetchone()[0])
            with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
                cursor.execute('CREATE TABLE public.written_by_an_info_module (x int)')
        conn.rollback()
        return conn

    monkeypatch.setattr(module, 'connect', connect)
    entry = module.inspect_database if module is sanity else module.measure_space
    report = entry(_params(healthy.primary, healthy.password, sanity_db))
    assert report['changed'] is False and seen == ['on']
    assert healthy.primary.execute("SELECT to_regclass('public.written_by_an_info_module')", dbname=sanity_db) == [(None,)]


def test_size_pretty_agrees_with_the_server(healthy):
    values = [0, 1, 10239, 10240, 10751, 10752, 10485247, 10485248, 123456789, 987654321012, 2 ** 50 - 1, 2 ** 50 * 17 + 12345,
              2 ** 62, -1, -10240, -10752, -123456789, -(2 ** 62)]
    rows = healthy.primary.execute('SELECT v, pg_size_pretty(v) FROM unnest(%s::int8[]) AS v', [values])
    assert [space.size_pretty(value) for value, text in rows] == [text for value, text in rows]


# -- the modules through Ansible: the playbooks ----------------------------------------------------------------

def test_sanity_report_playbook(healthy, sanity_db):
    done = run_playbook(healthy, 'pgops.resilience.sanity_report', {'sanity_exact_counts': True}, env={'PGDATABASE': sanity_db})
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert 'Database %s on PostgreSQL 15' % sanity_db in out and 'row counts exact' in out
    assert '"  app.users: 100 rows"' in out and '"  Odd Schema.Weird Table: 7 rows"' in out
    assert '"  app.events: 50 rows, partitioned table"' in out and '"  app.events_2024: 30 rows, partition of app.events"' in out
    assert '"  app.later: NOT POPULATED"' in out and '"  app.user_counts: 2 rows"' in out
    assert '"  pg_trgm 1.' in out and 'changed=0' in out
    estimated = run_playbook(healthy, 'pgops.resilience.sanity_report', {'sanity_checksums': True}, env={'PGDATABASE': sanity_db}, check=True)
    assert estimated.returncode == 0, estimated.stdout + estimated.stderr
    assert ', checksum ' in estimated.stdout
    missing = run_playbook(healthy, 'pgops.resilience.sanity_report', {'sanity_schemas': ['app', 'nope']}, env={'PGDATABASE': sanity_db})
    assert missing.returncode != 0 and 'Schemas not found in %s: nope' % sanity_db in missing.stdout
    unpopulated = run_playbook(healthy, 'pgops.resilience.sanity_report', {'sanity_require_populated': True}, env={'PGDATABASE': sanity_db})
    assert unpopulated.returncode != 0 and 'Materialized views without data in %s: later' % sanity_db in unpopulated.stdout


def test_space_check_playbook_fails_when_critical(healthy, sanity_db):
    env = {'PGDATABASE': sanity_db}
    ok = run_playbook(healthy, 'pgops.resilience.space_check',
                      {'space_warning_free_percent': 0, 'space_critical_free_percent': 0, 'space_wal_archive_directory': healthy.archive_dir},
                      env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert 'Space check of %s' % healthy.primary.datadir in ok.stdout and ': OK"' in ok.stdout
    assert 'wal_archive_directory %s (mounted at ' % healthy.archive_dir in ok.stdout
    assert '--- Largest tables of %s ---' % sanity_db in ok.stdout and 'app.users: ' in ok.stdout
    critical = run_playbook(healthy, 'pgops.resilience.space_check', {'space_warning_free_percent': 100, 'space_critical_free_percent': 100},
                            env=env, check=True)
    assert critical.returncode != 0
    assert 'Disk space is critical: data_directory %s: ' % healthy.primary.datadir in critical.stdout
    warning = run_playbook(healthy, 'pgops.resilience.space_check', {'space_warning_free_percent': 100, 'space_critical_free_percent': 0},
                           env=env)
    assert warning.returncode == 0 and ': WARNING"' in warning.stdout
    strict = run_playbook(healthy, 'pgops.resilience.space_check',
                          {'space_warning_free_percent': 100, 'space_critical_free_percent': 0, 'space_fail_on_warning': True}, env=env)
    assert strict.returncode != 0 and 'Disk space is warning' in strict.stdout
    bad = run_playbook(healthy, 'pgops.resilience.space_check', {'space_warning_free_percent': 5, 'space_critical_free_percent': 50}, env=env)
    assert bad.returncode != 0 and 'critical_free_percent (50) must not be above warning_free_percent (5)' in bad.stdout
    assert 'Traceback' not in bad.stdout + bad.stderr
