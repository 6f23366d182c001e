# -*- coding: utf-8 -*-
"""pg_unlogged_rebuild's logic against the real sandbox: PostgreSQL primary + standby, moto's S3 server."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import rebuild as unlogged_rebuild
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

from .helpers import params_for


def run(sandbox, node, db, key=None, check_mode=False, **overrides):
    return unlogged_rebuild.check_and_rebuild(params_for(sandbox, node, db, key, **overrides), check_mode=check_mode)


def kv_count(node, db, table='kv_store'):
    return node.execute('SELECT count(*) FROM %s' % table, dbname=db)[0][0]


def read_watermark(sandbox, key):
    body = sandbox.s3.client().get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read()
    return json.loads(body)


def object_exists(sandbox, key):
    listing = sandbox.s3.client().list_objects_v2(Bucket=sandbox.s3.bucket, Prefix=key)
    return listing.get('KeyCount', 0) > 0


def closed_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def test_failover_empties_the_cache_and_one_run_rebuilds_it(healthy, rem_db, bucket_key):
    sandbox = healthy
    expected = kv_count(sandbox.primary, rem_db)
    baseline = run(sandbox, 'primary', rem_db, bucket_key)
    assert baseline['rebuilt'] is False and baseline['changed'] is True  # first watermark written
    assert read_watermark(sandbox, bucket_key)['timeline'] == baseline['server']['timeline']

    sandbox.stop_node('primary', mode='immediate')  # the primary's node is lost
    sandbox.promote('standby')
    assert kv_count(sandbox.standby, rem_db) == 0  # UNLOGGED tables are not replicated

    result = run(sandbox, 'standby', rem_db, bucket_key)
    assert result['rebuilt'] is True and result['changed'] is True
    assert result['target_rows_before'] == 0
    assert result['target_rows_after'] == expected == kv_count(sandbox.standby, rem_db)
    assert 'failover' in result['events'] and 'primary_changed' in result['events']
    assert result['server']['timeline'] == baseline['server']['timeline'] + 1
    assert {row['table_name']: row['rows_inserted'] for row in result['tables']} == {'resources': 2000, 'moments': 2000}

    document = read_watermark(sandbox, bucket_key)
    assert document['kv_store_count'] == expected
    assert document['timeline'] == result['server']['timeline']
    assert document['primary_instance'] == '127.0.0.1:%d' % sandbox.standby.port
    assert document['tables']['resources']['count'] == 2000
    assert document['tables']['moments']['max_updated_at'].endswith('Z')
    assert document['last_run']['events'] == result['events']

    again = run(sandbox, 'standby', rem_db, bucket_key)
    assert again['changed'] is False and again['rebuilt'] is False and again['events'] == []
    assert read_watermark(sandbox, bucket_key)['snapshot_ts'] == document['snapshot_ts']


def test_standby_is_skipped_without_writing(healthy, rem_db, bucket_key):
    result = run(healthy, 'standby', rem_db, bucket_key)
    assert result['changed'] is False
    assert result['is_primary'] is False
    assert result['skipped_reason'] == 'standby'
    assert not object_exists(healthy, bucket_key)


def test_eight_concurrent_runs_rebuild_exactly_once(healthy, rem_db):
    primary = healthy.primary
    # Count the calls, and make the rebuild slow enough for the runs to overlap.
    primary.execute("""
        CREATE TABLE rebuild_calls (at timestamptz DEFAULT clock_timestamp());
        ALTER FUNCTION rebuild_kv_store() RENAME TO rebuild_kv_store_inner;
        CREATE FUNCTION rebuild_kv_store() RETURNS TABLE (table_name text, rows_inserted bigint) LANGUAGE sql AS $$
            INSERT INTO rebuild_calls DEFAULT VALUES;
            SELECT pg_sleep(1);
            SELECT * FROM rebuild_kv_store_inner();
        $$;
        TRUNCATE kv_store;""", dbname=rem_db)
    barrier = threading.Barrier(8)
    results, errors = [], []

    def one_run():
        barrier.wait()
        try:
            results.append(run(healthy, 'primary', rem_db))
        except Exception as exc:  # pylint: disable=broad-except
            errors.append(exc)

    threads = [threading.Thread(target=one_run) for dummy in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(results) == 8
    assert sum(1 for r in results if r['rebuilt']) == 1
    assert {r['skipped_reason'] for r in results if not r['rebuilt']} <= {'locked', 'already_rebuilt', None}
    assert primary.execute('SELECT count(*) FROM rebuild_calls', dbname=rem_db)[0][0] == 1
    assert kv_count(primary, rem_db) == 4000


def test_a_run_that_decided_before_another_commit_does_not_rebuild_again(healthy, rem_db):
    primary = healthy.primary
    primary.execute('TRUNCATE kv_store', dbname=rem_db)
    params = params_for(healthy, 'primary', rem_db)
    conn = unlogged_rebuild.connect(params)
    try:
        stale = unlogged_rebuild.UnloggedRebuild(conn, params)
        stale._resolve()  # pylint: disable=protected-access
        assert stale._decide('checked')[0] is True  # pylint: disable=protected-access
        assert run(healthy, 'primary', rem_db)['rebuilt'] is True  # another run rebuilds and commits
        outcome = stale._rebuild(forced=False)  # pylint: disable=protected-access
    finally:
        conn.close()
    assert outcome['skipped_reason'] == 'already_rebuilt'
    assert kv_count(primary, rem_db) == 4000


def test_crash_recovery_truncates_unlogged_tables_and_the_check_repairs_them(healthy, rem_db, bucket_key):
    sandbox = healthy
    run(sandbox, 'primary', rem_db, bucket_key)  # baseline watermark
    sandbox.stop_node('primary', mode='immediate')
    sandbox.start_node('primary')
    assert kv_count(sandbox.primary, rem_db) == 0
    assert kv_count(sandbox.primary, rem_db, 'rate_limits') == 0
    result = run(sandbox, 'primary', rem_db, bucket_key)
    assert result['rebuilt'] is True
    assert result['events'] == ['restart']
    assert kv_count(sandbox.primary, rem_db) == 4000


HOSTILE = '''
CREATE SCHEMA "Weird ""Schema""";
CREATE TABLE "Weird ""Schema"""."Mixed Case" (id int PRIMARY KEY, "Updated At" timestamptz DEFAULT now());
CREATE TABLE public."sp ace; DROP TABLE x" (id int);
CREATE UNLOGGED TABLE "Weird ""Schema"""."Kv Store" (id int PRIMARY KEY);
CREATE FUNCTION "Weird ""Schema"""."Re-Build"() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  INSERT INTO "Weird ""Schema"""."Kv Store" SELECT id FROM "Weird ""Schema"""."Mixed Case";
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;
INSERT INTO "Weird ""Schema"""."Mixed Case" (id) SELECT generate_series(1, 25);
'''


def test_hostile_identifiers_are_quoted(healthy, rem_db, bucket_key):
    healthy.primary.execute(HOSTILE, dbname=rem_db)
    result = run(healthy, 'primary', rem_db, bucket_key,
                 target_table='"Weird ""Schema"""."Kv Store"',
                 source_tables=['"Weird ""Schema"""."Mixed Case"', '"sp ace; DROP TABLE x"'],
                 rebuild_function='"Weird ""Schema"""."Re-Build"()', updated_at_column='Updated At')
    assert result['rebuilt'] is True
    assert result['function_result'] == 25
    assert result['target_rows_after'] == 25
    assert result['target_table'] == '"Weird ""Schema"""."Kv Store"'
    document = read_watermark(healthy, bucket_key)
    assert document['tables']['"Weird ""Schema"""."Mixed Case"']['count'] == 25
    assert document['tables']['"Weird ""Schema"""."Mixed Case"']['max_updated_at'] is not None
    assert document['tables']['"sp ace; DROP TABLE x"'] == {'count': 0, 'max_updated_at': None}


def test_void_function_and_forced_rebuild(healthy, rem_db):
    healthy.primary.execute('''
        CREATE FUNCTION app_refill() RETURNS void LANGUAGE sql AS $$
            INSERT INTO kv_store (entity_key, entity_type, entity_id, tenant_id, data, updated_at)
            SELECT 'r/' || id, 'resources', id, tenant_id, '{}', updated_at FROM resources
            ON CONFLICT DO NOTHING $$;''', dbname=rem_db)
    result = run(healthy, 'primary', rem_db, state='rebuilt', rebuild_function='app_refill')
    assert result['rebuilt'] is True
    assert result['reason'] == 'rebuild forced (state=rebuilt)'
    assert result['target_rows_before'] == 4000
    assert result['target_rows_after'] == 6000
    assert result['function_result'] is None and result['tables'] == []


def test_check_mode_changes_nothing(healthy, rem_db, bucket_key):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    result = run(healthy, 'primary', rem_db, bucket_key, check_mode=True)
    assert result['rebuild_needed'] is True and result['changed'] is True and result['rebuilt'] is False
    assert kv_count(healthy.primary, rem_db) == 0
    assert not object_exists(healthy, bucket_key)
    snapshot = run(healthy, 'primary', rem_db, bucket_key, check_mode=True, state='snapshot')
    assert snapshot['changed'] is True and snapshot['watermark']['written'] is False
    assert not object_exists(healthy, bucket_key)


def test_nothing_to_rebuild_from(healthy, rem_db):
    healthy.primary.execute('TRUNCATE kv_store, resources, moments', dbname=rem_db)
    result = run(healthy, 'primary', rem_db)
    assert result['rebuild_needed'] is False and result['changed'] is False
    assert 'nothing to rebuild from' in result['reason']


def test_snapshot_writes_the_runbook_fields(healthy, rem_db, bucket_key):
    result = run(healthy, 'primary', rem_db, bucket_key, state='snapshot')
    assert result['changed'] is True and result['watermark']['written'] is True
    document = read_watermark(healthy, bucket_key)
    for field in ('snapshot_ts', 'primary_instance', 'kv_store_count', 'tables', 'system_identifier', 'timeline',
                  'postmaster_start_time'):
        assert field in document
    assert document['kv_store_count'] == 4000
    assert set(document['tables']) == {'resources', 'moments'}


@pytest.mark.parametrize('option, value, expected', [
    ('target_table', 'kv_missing', 'target_table \'kv_missing\': table kv_missing does not exist'),
    ('source_tables', ['resources', 'nope.entities'], 'table nope.entities does not exist in schema nope'),
    ('rebuild_function', 'rebuild_nothing', 'function rebuild_nothing() without arguments does not exist'),
    ('target_table', 'app."unterminated', 'unterminated quoted identifier'),
])
def test_missing_objects_are_named(healthy, rem_db, option, value, expected):
    with pytest.raises(PgopsError) as err:
        run(healthy, 'primary', rem_db, **{option: value})
    assert expected in err.value.msg


def test_wrong_password_is_clear_and_secret_free(healthy, rem_db):
    with pytest.raises(PgopsError) as err:
        run(healthy, 'primary', rem_db, login_password='Wr0ng-Passw0rd!')
    assert 'password authentication failed' in err.value.msg
    assert 'postgres@127.0.0.1:%d/%s' % (healthy.primary.port, rem_db) in err.value.msg
    assert 'Wr0ng-Passw0rd!' not in err.value.msg


def test_unreachable_host(healthy, rem_db):
    with pytest.raises(PgopsError) as err:
        run(healthy, 'primary', rem_db, login_port=closed_port())
    assert 'Cannot connect to PostgreSQL' in err.value.msg and 'refused' in err.value.msg


def test_unreachable_s3_warns_but_keeps_the_committed_rebuild(healthy, rem_db, bucket_key):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    params = params_for(healthy, 'primary', rem_db, bucket_key)
    params['watermark']['endpoint_url'] = 'http://127.0.0.1:%d' % closed_port()
    result = unlogged_rebuild.check_and_rebuild(params)
    warnings = result['warnings']
    assert result['rebuilt'] is True and result['watermark']['written'] is False
    assert kv_count(healthy.primary, rem_db) == 4000
    assert any('watermark was not written' in w and params['watermark']['endpoint_url'] in w for w in warnings)


def test_unreachable_s3_fails_when_the_watermark_is_required(healthy, rem_db, bucket_key):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    params = params_for(healthy, 'primary', rem_db, bucket_key, watermark_required=True)
    params['watermark']['endpoint_url'] = 'http://127.0.0.1:%d' % closed_port()
    with pytest.raises(PgopsError) as err:
        unlogged_rebuild.check_and_rebuild(params)
    assert 'The rebuild itself was committed (4000 rows in kv_store)' in err.value.msg
    assert err.value.details['rebuilt'] is True
    assert kv_count(healthy.primary, rem_db) == 4000


def test_rebuild_that_leaves_the_target_empty_fails_and_rolls_back(healthy, rem_db, bucket_key):
    healthy.primary.execute('''
        TRUNCATE kv_store;
        CREATE FUNCTION broken_rebuild() RETURNS bigint LANGUAGE sql AS $$
            INSERT INTO rate_limits VALUES ('marker', 1, now()); SELECT 0::bigint $$;''', dbname=rem_db)
    with pytest.raises(PgopsError) as err:
        run(healthy, 'primary', rem_db, bucket_key, rebuild_function='broken_rebuild')
    assert 'still empty' in err.value.msg and 'nothing was committed' in err.value.msg
    assert not object_exists(healthy, bucket_key)
    assert healthy.primary.execute("SELECT count(*) FROM rate_limits WHERE key = 'marker'", dbname=rem_db)[0][0] == 0


def test_lock_is_shared_by_spellings_of_the_same_table(healthy, rem_db):
    first = run(healthy, 'primary', rem_db, target_table='kv_store')
    second = run(healthy, 'primary', rem_db, target_table='public.KV_STORE')
    other = run(healthy, 'primary', rem_db, target_table='rate_limits', state='rebuilt')
    assert first['lock_key'] == second['lock_key'] != other['lock_key']


def test_a_held_lock_makes_the_run_skip(healthy, rem_db):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    key = run(healthy, 'primary', rem_db, check_mode=True)['lock_key']
    holder = healthy.primary.connect(dbname=rem_db)
    try:
        with holder.cursor() as cursor:
            cursor.execute('SELECT pg_advisory_lock(%s)', [key])
        result = run(healthy, 'primary', rem_db)
    finally:
        holder.close()
    assert result['changed'] is False and result['rebuilt'] is False
    assert result['rebuild_needed'] is True and result['skipped_reason'] == 'locked'
    assert kv_count(healthy.primary, rem_db) == 0


def test_read_committed_whatever_the_database_default(healthy, rem_db):
    healthy.primary.execute("ALTER DATABASE %s SET default_transaction_isolation = 'serializable'" % rem_db)
    test_a_run_that_decided_before_another_commit_does_not_rebuild_again(healthy, rem_db)


def test_postgresql_errors_in_the_check_are_named(healthy, rem_db):
    healthy.primary.execute("""
        CREATE ROLE checker LOGIN PASSWORD 'checker-pw-123';
        GRANT SELECT ON kv_store, resources TO checker;""", dbname=rem_db)
    try:
        with pytest.raises(PgopsError) as err:
            run(healthy, 'primary', rem_db, login_user='checker', login_password='checker-pw-123')
        assert err.value.msg == 'PostgreSQL error while checking whether kv_store is empty: permission denied for table moments'
        holder = healthy.primary.connect(dbname=rem_db, autocommit=False)
        try:
            with holder.cursor() as cursor:
                cursor.execute('LOCK TABLE resources IN ACCESS EXCLUSIVE MODE')
            with pytest.raises(PgopsError) as err:
                run(healthy, 'primary', rem_db, lock_timeout=1)
        finally:
            holder.rollback()
            holder.close()
        assert 'canceling statement due to lock timeout' in err.value.msg
    finally:
        healthy.primary.execute('DROP OWNED BY checker; DROP ROLE checker', dbname=rem_db)


@pytest.mark.parametrize('option, value, expected', [
    ('endpoint_url', '127.0.0.1:9000', "Cannot set up an S3 client for endpoint_url '127.0.0.1:9000'"),
    ('region', 'us east', "region 'us east'"),
])
def test_invalid_s3_settings_are_clear_errors_but_a_standby_still_skips(healthy, rem_db, bucket_key, option, value, expected):
    params = params_for(healthy, 'primary', rem_db, bucket_key)
    params['watermark'][option] = value
    with pytest.raises(PgopsError) as err:
        unlogged_rebuild.check_and_rebuild(params)
    assert expected in err.value.msg
    params = params_for(healthy, 'standby', rem_db, bucket_key)
    params['watermark'][option] = value
    assert unlogged_rebuild.check_and_rebuild(params)['skipped_reason'] == 'standby'


def test_a_previous_watermark_that_is_not_an_object(healthy, rem_db, bucket_key):
    healthy.s3.client().put_object(Bucket=healthy.s3.bucket, Key=bucket_key, Body=b'[1, 2]')
    result = run(healthy, 'primary', rem_db, bucket_key)
    assert result['changed'] is False and result['events'] == []
    assert any('holds JSON but not an object' in w for w in result['warnings'])
    with pytest.raises(PgopsError, match='holds JSON but not an object'):
        run(healthy, 'primary', rem_db, bucket_key, watermark_required=True)


def test_current_primary_is_recorded_and_a_change_is_an_event(healthy, rem_db, bucket_key):
    """Behind CloudNativePG's <cluster>-rw the address stays the same; the orchestrator's name of the primary tells."""
    first = run(healthy, 'primary', rem_db, bucket_key, current_primary='rem-db-1')
    assert first['changed'] is True and first['current_primary'] == 'rem-db-1' and first['events'] == []
    assert read_watermark(healthy, bucket_key)['current_primary'] == 'rem-db-1'

    same = run(healthy, 'primary', rem_db, bucket_key, current_primary='rem-db-1')
    assert same['changed'] is False and same['events'] == [] and same['watermark'] is None

    moved = run(healthy, 'primary', rem_db, bucket_key, current_primary='rem-db-2')
    assert moved['events'] == ['primary_changed']  # same server, address and timeline: only the name changed
    assert moved['previous_watermark']['current_primary'] == 'rem-db-1'
    assert moved['changed'] is True and moved['rebuilt'] is False and moved['watermark']['written'] is True
    document = read_watermark(healthy, bucket_key)
    assert document['current_primary'] == 'rem-db-2' and document['last_run']['events'] == ['primary_changed']

    checked = run(healthy, 'primary', rem_db, bucket_key, check_mode=True, current_primary='rem-db-3')
    assert checked['events'] == ['primary_changed'] and checked['changed'] is True
    assert read_watermark(healthy, bucket_key)['current_primary'] == 'rem-db-2'  # check mode wrote nothing

    unnamed = run(healthy, 'primary', rem_db, bucket_key)
    assert unnamed['events'] == [] and unnamed['current_primary'] is None and unnamed['changed'] is False
