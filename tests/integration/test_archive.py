# -*- coding: utf-8 -*-
"""table_archive and archive_restore against the real sandbox (PostgreSQL 15 and moto's S3 server): round
trips of every type, cutoffs, check mode, crash recovery, bad archives, strategies, watermarks, playbooks."""

from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import (
    load as archive_load, restore as archive_restore, table_archive)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

from .archive_helpers import (
    archive_keys, archive_params, assert_same_rows, create_database, day, db_watermark, drop_database, get_object,
    json_rows, list_keys, new_name, new_prefix, put_object, query, read_json, restore_params, s3_watermark, scalar,
    table_types, write_archive)
from .helpers import run_playbook


@pytest.fixture(scope='module')
def db(sandbox):
    name = create_database(sandbox)
    yield name
    drop_database(sandbox, name)


@pytest.fixture
def prefix():
    return new_prefix()


def archive(sandbox, dbname, prefix, table, check_mode=False, **options):
    return table_archive.archive_rows(archive_params(sandbox, dbname, prefix, table, **options), check_mode=check_mode)


def restore(sandbox, dbname, prefix, table, check_mode=False, **options):
    return archive_restore.restore_archives(restore_params(sandbox, dbname, prefix, table, **options), check_mode=check_mode)


def restore_fails(sandbox, dbname, prefix, table, **options):
    with pytest.raises(PgopsError) as info:
        restore(sandbox, dbname, prefix, table, **options)
    return info.value


def archive_ids(sandbox, prefix, column='id'):
    """Every ``column`` value in every archive under ``prefix`` (a list: duplicates stay visible)."""
    ids = []
    for key in archive_keys(sandbox, prefix):
        for line in gzip.decompress(get_object(sandbox, key)).splitlines():
            ids.append(json.loads(line)[column])
    return ids


def count(sandbox, dbname, table, where='true'):
    return scalar(sandbox, dbname, 'SELECT count(*) FROM %s WHERE %s' % (table, where))


# --- round trip ----------------------------------------------------------------------------------------

EVERY_TYPE = """
CREATE TABLE {t} (
    id bigint PRIMARY KEY, txt text, doc jsonb, num numeric, at timestamptz, big bigint, flag boolean,
    ints integer[], texts text[], blob bytea, uid uuid, fl double precision, money2 numeric(10,2),
    vc character varying(20), span interval, d date, docs jsonb[]);
INSERT INTO {t} VALUES
 (1, E'tab\\there\\nnew line\\r\\n \\\\back\\\\slash "q" ''s é 中文 😀 \\u2028 \\x01 \\x7f \\\\N NULL',
  '{{"note": null, "nested": [[1, 2], [null, {{"x": [true, false]}}]], "s": "tab\\t \\\\ é 😀 \\"q\\"", "n": 1.50,
    "big": 123456789012345678901234567890, "empty": {{}}, "arr": []}}',
  1234567890123456789012345678901234567890, '2026-01-04 05:20:21.123456+00', 9223372036854775807, true,
  '{{1,NULL,3}}', '{{"a,b",NULL,"NULL","q\\"uote","back\\\\slash","tab\\tx","","é😀","{{x}}"}}',
  '\\x00ff5c0a0d0922', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 0.1, 12345678.90, 'ümlaut ☃', '1 year 2 mons 3 days 04:05:06.789',
  '2026-02-28', '{{"{{\\"a\\": 1}}",NULL,"[1, [2]]","\\"s\\""}}'),
 (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (3, '', 'false', '12345678901234567890.12345678901234567890', '1999-12-31 23:59:59.999999-08', -9223372036854775808,
  false, '{{{{1,2}},{{NULL,4}}}}', '{{NULL}}', '\\x', '00000000-0000-0000-0000-000000000000', 'NaN', -0.01, '',
  '-1 days', '0001-01-01', '{{}}'),
 (4, '\\N', '"just a string"', 'NaN', 'infinity', 0, NULL, '{{}}', '{{}}', '\\x5c4e', NULL, '-Infinity', 0, NULL,
  '00:00:00', NULL, NULL),
 (5, ' leading and trailing ', '[1, "two", {{"3": null}}]', '-0.000000000000000000000000000000000000001',
  '-infinity', 9223372036854775806, true, '{{-2147483648,2147483647}}', '{{" ","\\\\N"}}', '\\xdeadbeef', NULL,
  5e-324, NULL, NULL, NULL, NULL, NULL);
INSERT INTO {t} (id, txt, doc, num, at, big, flag, ints, texts, blob, uid, fl)
SELECT g, 'row ' || g || E'\\t' || repeat('é', g), jsonb_build_object('g', g, 'null', NULL, 'list', jsonb_build_array(g, NULL)),
       (g::numeric * 1000000000000000000000.000001), '2025-06-01 00:00:00+00'::timestamptz + g * interval '1 hour',
       9223372036854775807 - g, g % 2 = 0, ARRAY[g, NULL, -g], ARRAY['x' || g, NULL], decode(lpad(to_hex(g), 4, '0'), 'hex'),
       gen_random_uuid(), g / 3.0
FROM generate_series(10, 34) AS g;
"""


def test_round_trip_of_every_type(sandbox, db, prefix):
    table, reference = new_name('every'), new_name('every_ref')
    query(sandbox, db, EVERY_TYPE.format(t=table))
    query(sandbox, db, 'CREATE TABLE %s AS TABLE %s' % (reference, table))
    total = count(sandbox, db, reference)
    assert total == 30

    done = archive(sandbox, db, prefix, table, where='true', batch_size=7)
    assert done['changed'] is True and done['records_archived'] == total
    assert [b['records'] for b in done['batches']] == [7, 7, 7, 7, 2]
    assert count(sandbox, db, table) == 0
    keys = archive_keys(sandbox, prefix)
    assert keys == done['keys']
    assert all(key.startswith('%s/%s/public/%s/year=' % (prefix, db, table)) for key in keys)
    present = list_keys(sandbox, prefix)
    assert not [k for k in present if k.endswith(fmt.PENDING_SUFFIX)]
    types = [[name, type_] for name, type_ in table_types(sandbox, db, table)]
    for key, batch in zip(keys, done['batches']):
        body = get_object(sandbox, key)
        sidecar = read_json(sandbox, key + fmt.SIDECAR_SUFFIX)
        assert sidecar['sha256'] == hashlib.sha256(body).hexdigest() == batch['sha256']
        assert sidecar['size_bytes'] == len(body) == batch['size_bytes']
        assert sidecar['record_count'] == batch['records'] == len(gzip.decompress(body).splitlines())
        assert [[c['name'], c['type']] for c in sidecar['columns']] == types
        assert sidecar['key_columns'] == ['id'] and sidecar['key'] == key
        assert sidecar['source'] == dict(database=db, schema='public', table=table)
        assert sidecar['date_column'] is None and sidecar['date_min'] is None
    first = json.loads(gzip.decompress(get_object(sandbox, keys[0])).splitlines()[0])
    assert first['_source_database'] == db and first['_source_table'] == table
    assert first['_archived_at'].endswith('Z') and first['_batch_id'].endswith('_001')
    assert first['num'] == 1234567890123456789012345678901234567890  # a JSON number, not a string
    assert first['doc']['note'] is None and first['blob'] == '\\x00ff5c0a0d0922'

    restored = restore(sandbox, db, prefix, table, restore_all=True)
    assert restored['files_processed'] == 5 and restored['files_failed'] == 0
    assert restored['records_restored'] == total and restored['records_skipped'] == 0
    assert all(f['status'] == 'restored' and f['verified'] for f in restored['files'])
    assert_same_rows(sandbox, db, table, reference)
    # The text of each row as well: numeric scale, jsonb, floats, arrays exactly as they were.
    assert scalar(sandbox, db, 'SELECT count(*) FROM (SELECT t::text FROM %s t EXCEPT SELECT r::text FROM %s r) x'
                  % (table, reference)) == 0
    # A JSON null inside a document stays; SQL NULL stays SQL NULL.
    assert query(sandbox, db, "SELECT doc->'note' IS NOT NULL, doc->>'note' IS NULL FROM %s WHERE id = 1" % table) == [(True, True)]
    assert query(sandbox, db, 'SELECT doc IS NULL, txt IS NULL, num IS NULL FROM %s WHERE id = 2' % table) == [(True, True, True)]


def test_round_trip_of_arrays_of_types_with_a_modifier(sandbox, db, prefix):
    table, reference = new_name('mod'), new_name('mod_ref')
    query(sandbox, db, "CREATE TABLE %s (id int PRIMARY KEY, names character varying(20)[], prices numeric(10,2)[]);"
                       "INSERT INTO %s VALUES (1, '{a,NULL,\"b c\"}', '{1.50,NULL}')" % (table, table))
    query(sandbox, db, 'CREATE TABLE %s AS TABLE %s' % (reference, table))
    archive(sandbox, db, prefix, table, where='true')
    restore(sandbox, db, prefix, table, restore_all=True)
    assert_same_rows(sandbox, db, table, reference)


def _dated_table(sandbox, db, rows=20):
    """A table with one row per day from 2025-01-01 (ids 1..rows) and its reference copy."""
    table, reference = new_name('dated'), new_name('dated_ref')
    query(sandbox, db, "CREATE TABLE %s (id integer PRIMARY KEY, created_at timestamptz NOT NULL, note text);"
                       "INSERT INTO %s SELECT g, '2025-01-01 00:00:00+00'::timestamptz + (g - 1) * interval '1 day',"
                       " 'note ' || g FROM generate_series(1, %d) g;"
                       "CREATE TABLE %s AS TABLE %s" % (table, table, rows, reference, table))
    return table, reference


def test_before_cutoff_archives_only_older_rows_with_dates_in_the_sidecar(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db)
    # 2025-01-11 00:00 UTC: rows 1..10 are older.
    done = archive(sandbox, db, prefix, table, date_column='created_at', before='2025-01-11 00:00:00+00', batch_size=4)
    assert done['records_archived'] == 10 and [b['records'] for b in done['batches']] == [4, 4, 2]
    assert query(sandbox, db, 'SELECT min(id), count(*) FROM %s' % table) == [(11, 10)]
    expected = [('2025-01-01T00:00:00+00:00', '2025-01-04T00:00:00+00:00'),
                ('2025-01-05T00:00:00+00:00', '2025-01-08T00:00:00+00:00'),
                ('2025-01-09T00:00:00+00:00', '2025-01-10T00:00:00+00:00')]
    for key, batch, (low, high) in zip(done['keys'], done['batches'], expected):
        sidecar = read_json(sandbox, key + fmt.SIDECAR_SUFFIX)
        assert sidecar['date_column'] == 'created_at'
        assert (sidecar['date_min'], sidecar['date_max']) == (batch['date_min'], batch['date_max']) == (low, high)
    assert sorted(archive_ids(sandbox, prefix)) == list(range(1, 11))
    again = archive(sandbox, db, prefix, table, date_column='created_at', before='2025-01-11 00:00:00+00', batch_size=4)
    assert again['records_archived'] == 0 and again['changed'] is False and again['keys'] == []
    restore(sandbox, db, prefix, table, restore_all=True)
    assert_same_rows(sandbox, db, table, reference)


def test_older_than_archives_only_rows_older_than_the_interval(sandbox, db, prefix):
    table = new_name('aged')
    query(sandbox, db, "CREATE TABLE %s (id integer PRIMARY KEY, created_at timestamptz NOT NULL);"
                       "INSERT INTO %s SELECT g, now() - g * interval '1 day' + interval '1 hour' FROM generate_series(1, 12) g"
          % (table, table))
    # Row g is g days minus an hour old: older than 6 days are g = 7..12.
    done = archive(sandbox, db, prefix, table, date_column='created_at', older_than='6 days', batch_size=100)
    assert done['records_archived'] == 6
    assert sorted(archive_ids(sandbox, prefix)) == [7, 8, 9, 10, 11, 12]
    assert query(sandbox, db, 'SELECT array_agg(id ORDER BY id) FROM %s' % table) == [([1, 2, 3, 4, 5, 6],)]
    # where narrows the cutoff further (AND).
    done = archive(sandbox, db, prefix, table, date_column='created_at', older_than='1 day', where='t.id % 2 = 0')
    assert sorted(archive_ids(sandbox, prefix)) == [2, 4, 6, 7, 8, 9, 10, 11, 12]
    assert query(sandbox, db, 'SELECT array_agg(id ORDER BY id) FROM %s' % table) == [([1, 3, 5],)]


def test_check_mode_counts_and_writes_nothing(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=23)
    done = archive(sandbox, db, prefix, table, check_mode=True, date_column='created_at', before='2025-01-21', batch_size=6)
    assert done['changed'] is True  # a run would archive rows
    nothing = archive(sandbox, db, prefix, table, check_mode=True, date_column='created_at', before='2000-01-01')
    assert nothing['changed'] is False and nothing['would_archive_records'] == 0
    assert (done['would_archive_records'], done['would_write_batches']) == (20, 4)
    assert done['pending_markers'] == [] and done['batches'] == [] and done['records_archived'] == 0
    limited = archive(sandbox, db, prefix, table, check_mode=True, where='true', batch_size=6, max_batches=2)
    assert (limited['would_archive_records'], limited['would_write_batches']) == (12, 2)
    assert list_keys(sandbox, prefix) == []
    assert_same_rows(sandbox, db, table, reference)


def test_check_mode_counts_what_a_run_archives_whatever_the_session_time_zone(sandbox, db, prefix):
    """``before`` is read in UTC by a run; check mode must count the same rows (here the session's TimeZone
    is UTC+14, which would move the cutoff by 14 hours)."""
    table = new_name('tz')
    query(sandbox, db, "CREATE TABLE %s (id int PRIMARY KEY, at timestamptz);"
                       "INSERT INTO %s VALUES (1, '2025-12-31 08:00+00'), (2, '2025-12-31 12:00+00'), (3, '2026-01-01 01:00+00')"
          % (table, table))
    options = dict(date_column='at', before='2026-01-01', connect_params={'options': '-c TimeZone=Pacific/Kiritimati'})
    preview = archive(sandbox, db, prefix, table, check_mode=True, **options)
    done = archive(sandbox, db, prefix, table, **options)
    assert done['records_archived'] == 2
    assert preview['would_archive_records'] == done['records_archived']


def test_max_batches_stops_and_the_next_run_goes_on(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=10)
    first = archive(sandbox, db, prefix, table, where='true', batch_size=3, max_batches=2)
    assert first['records_archived'] == 6 and len(first['keys']) == 2
    assert count(sandbox, db, table) == 4
    second = archive(sandbox, db, prefix, table, where='true', batch_size=3, max_batches=2)
    assert second['records_archived'] == 4 and count(sandbox, db, table) == 0
    assert set(first['keys']).isdisjoint(second['keys'])
    assert sorted(archive_ids(sandbox, prefix)) == list(range(1, 11))
    restore(sandbox, db, prefix, table, restore_all=True)
    assert_same_rows(sandbox, db, table, reference)


def test_table_without_primary_key_needs_key_columns(sandbox, db, prefix):
    table = new_name('nopk')
    query(sandbox, db, "CREATE TABLE %s (a int NOT NULL, b text NOT NULL, v text);"
                       "INSERT INTO %s SELECT g %% 3, 'b' || g, 'v' || g FROM generate_series(1, 9) g" % (table, table))
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, table, where='true')
    assert 'has no primary key' in info.value.msg and 'key_columns' in info.value.msg
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, table, where='true', key_columns=['nope'])
    assert "no column 'nope'" in info.value.msg
    assert list_keys(sandbox, prefix) == [] and count(sandbox, db, table) == 9
    # Key columns that do not identify one row each: the batch is rolled back, nothing is left in S3.
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, table, where='true', key_columns=['a'], batch_size=2)
    assert 'deleted' in info.value.msg and 'rolled back' in info.value.msg
    assert list_keys(sandbox, prefix) == [] and count(sandbox, db, table) == 9
    done = archive(sandbox, db, prefix, table, where='true', key_columns=['a', 'b'], batch_size=4)
    assert done['records_archived'] == 9 and count(sandbox, db, table) == 0
    assert read_json(sandbox, done['keys'][0] + fmt.SIDECAR_SUFFIX)['key_columns'] == ['a', 'b']


def test_missing_table_or_column_is_a_clear_error(sandbox, db, prefix):
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, 'no_such_table', where='true')
    assert 'does not exist' in info.value.msg
    table, reference = _dated_table(sandbox, db, rows=2)
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, table, date_column='nope', older_than='1 day')
    assert "no column 'nope'" in info.value.msg


# --- crash recovery ------------------------------------------------------------------------------------

def _interrupted_batch(sandbox, db, prefix, table, ids, archived_at):
    """What a crash after the upload leaves: object, sidecar and pending marker of a batch of ``ids``."""
    rows = json_rows(sandbox, db, 'SELECT * FROM %s WHERE id = ANY(ARRAY%r) ORDER BY id' % (table, ids))
    key = write_archive(sandbox, prefix, db, table, rows, archived_at,
                        columns=table_types(sandbox, db, table))
    put_object(sandbox, key + fmt.PENDING_SUFFIX, b'{"batch_id": "x", "started_at": "2026-01-01T00:00:00Z"}')
    return key


def test_recovery_rolls_back_a_batch_whose_rows_are_still_in_the_table(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=10)
    key = _interrupted_batch(sandbox, db, prefix, table, [1, 2, 3, 4], day(2025, 3, 1))
    assert archive(sandbox, db, prefix, table, check_mode=True, where='true')['pending_markers'] == [key + fmt.PENDING_SUFFIX]
    # A restore leaves an archive with a pending marker alone.
    skipped = restore(sandbox, db, prefix, table, restore_all=True, restore_watermark=False)
    assert skipped['files_skipped'] == 1 and skipped['files'][0]['reason'] == 'pending'
    done = archive(sandbox, db, prefix, table, where='true', batch_size=4)
    assert done['recovered'] == [dict(key=key, outcome='rolled_back')]
    assert done['records_archived'] == 10 and count(sandbox, db, table) == 0
    remaining = list_keys(sandbox, prefix)
    assert key not in remaining and key + fmt.SIDECAR_SUFFIX not in remaining and key + fmt.PENDING_SUFFIX not in remaining
    assert not [k for k in remaining if k.endswith(fmt.PENDING_SUFFIX)]
    assert sorted(archive_ids(sandbox, prefix)) == list(range(1, 11))  # each row archived once
    restore(sandbox, db, prefix, table, restore_all=True)
    assert_same_rows(sandbox, db, table, reference)


def test_recovery_completes_a_batch_whose_rows_are_gone(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=10)
    key = _interrupted_batch(sandbox, db, prefix, table, [1, 2, 3, 4], day(2025, 3, 1))
    query(sandbox, db, 'DELETE FROM %s WHERE id <= 4' % table)  # the crash came after the commit
    done = archive(sandbox, db, prefix, table, where='true', batch_size=4)
    assert done['recovered'] == [dict(key=key, outcome='completed')] and done['changed'] is True
    assert done['records_archived'] == 6
    remaining = list_keys(sandbox, prefix)
    assert key in remaining and key + fmt.SIDECAR_SUFFIX in remaining
    assert not [k for k in remaining if k.endswith(fmt.PENDING_SUFFIX)]
    assert sorted(archive_ids(sandbox, prefix)) == list(range(1, 11))  # no row lost, none twice
    result = restore(sandbox, db, prefix, table, restore_all=True)
    assert result['files_processed'] == 3 and result['records_restored'] == 10
    assert_same_rows(sandbox, db, table, reference)


def test_recovery_stops_when_only_some_rows_of_a_batch_are_in_the_table(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=6)
    key = _interrupted_batch(sandbox, db, prefix, table, [1, 2, 3, 4], day(2025, 3, 1))
    query(sandbox, db, 'DELETE FROM %s WHERE id <= 2' % table)
    with pytest.raises(PgopsError) as info:
        archive(sandbox, db, prefix, table, where='true')
    assert key in info.value.msg and '2 of its 4 rows' in info.value.msg
    assert count(sandbox, db, table) == 4 and key + fmt.PENDING_SUFFIX in list_keys(sandbox, prefix)


def test_recovery_of_a_marker_without_its_object(sandbox, db, prefix):
    table, reference = _dated_table(sandbox, db, rows=3)
    key = fmt.batch_key(prefix, db, 'public', table, day(2025, 3, 1), 1)
    put_object(sandbox, key + fmt.PENDING_SUFFIX, b'{}')
    done = archive(sandbox, db, prefix, table, where='true')
    assert done['recovered'] == [dict(key=key, outcome='rolled_back')]
    assert sorted(archive_ids(sandbox, prefix)) == [1, 2, 3]
    assert key + fmt.PENDING_SUFFIX not in list_keys(sandbox, prefix)


# --- archive_restore: archives written by hand -----------------------------------------------------------

SIMPLE_COLUMNS = [('id', 'integer'), ('name', 'text'), ('amount', 'integer')]


def simple_table(sandbox, db, extra=''):
    table = new_name('r')
    query(sandbox, db, 'CREATE TABLE %s (id integer PRIMARY KEY, name text NOT NULL, amount integer%s)' % (table, extra))
    return table


def simple_rows(ids, name='n'):
    return [dict(id=i, name='%s%d' % (name, i), amount=i * 10) for i in ids]


def write_simple(sandbox, db, prefix, table, ids, when, batch=1, **options):
    options.setdefault('columns', SIMPLE_COLUMNS)
    return write_archive(sandbox, prefix, db, table, simple_rows(ids), when, batch, **options)


def ids_in(sandbox, db, table):
    return [row[0] for row in query(sandbox, db, 'SELECT id FROM %s ORDER BY id' % table)]


def test_checksum_mismatch_rejects_the_file_before_any_row_and_restores_the_others(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    first = write_simple(sandbox, db, prefix, table, [1, 2], day(2026, 1, 1))
    # Rows 3 and 4, intact and loadable, but the sidecar's sha256 differs: nothing of them may be written.
    bad = write_simple(sandbox, db, prefix, table, [3, 4], day(2026, 1, 2))
    sidecar = read_json(sandbox, bad + fmt.SIDECAR_SUFFIX)
    sidecar['sha256'] = hashlib.sha256(b'something else').hexdigest()
    put_object(sandbox, bad + fmt.SIDECAR_SUFFIX, json.dumps(sidecar).encode('utf-8'))
    last = write_simple(sandbox, db, prefix, table, [5, 6], day(2026, 1, 3))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True)
    assert '1 of 3 archive files failed' in error.msg and bad in error.msg
    details = error.details
    assert (details['files_processed'], details['files_failed'], details['records_restored']) == (3, 1, 4)
    assert details['records_failed'] == 2  # the sidecar's record count
    failed = [f for f in details['files'] if f['status'] == 'failed']
    assert [f['key'] for f in failed] == [bad] and 'sha256 differs from its sidecar' in failed[0]['error']
    assert [f['key'] for f in details['files'] if f['status'] == 'restored'] == [first, last]
    assert ids_in(sandbox, db, table) == [1, 2, 5, 6]
    # The watermark stops before the bad file.
    assert s3_watermark(sandbox, prefix, db, table)['last_restored_key'] == first
    # A body replaced by a valid gzip of other rows is caught as well (its size differs).
    other, other_count, other_size = fmt.encode_batch([json.dumps(r) for r in simple_rows([3, 4, 99])], '')
    assert other_count == 3
    replaced = write_simple(sandbox, db, prefix, table, [3, 4], day(2026, 1, 4), body=other)
    error = restore_fails(sandbox, db, prefix, table, s3_key=replaced)
    assert replaced in error.msg and 'damaged or was replaced' in error.msg
    assert ids_in(sandbox, db, table) == [1, 2, 5, 6]


def test_truncated_gzip_fails_that_file_only(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    body, body_count, body_size = fmt.encode_batch([json.dumps(r) for r in simple_rows(range(1, 200))], '')
    assert body_count == 199
    bad = write_simple(sandbox, db, prefix, table, [], day(2026, 1, 1), body=body[:len(body) // 2], sidecar=False)
    write_simple(sandbox, db, prefix, table, [500], day(2026, 1, 2))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True)
    failed = [f for f in error.details['files'] if f['status'] == 'failed']
    assert [f['key'] for f in failed] == [bad]
    assert 'truncated' in failed[0]['error'] and bad in failed[0]['error'] and failed[0]['verified'] is False
    assert ids_in(sandbox, db, table) == [500]


def test_malformed_json_line_names_the_key_and_the_line(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    lines = [json.dumps(r) for r in simple_rows([1, 2])] + ['{"id": 3, "name": "x", '] + [json.dumps(simple_rows([4])[0])]
    body = gzip.compress(('\n'.join(lines) + '\n').encode('utf-8'))
    key = fmt.batch_key(prefix, db, 'public', table, day(2026, 1, 1), 1)
    put_object(sandbox, key, body)
    error = restore_fails(sandbox, db, prefix, table, s3_key=key)
    assert error.details['files'][0]['status'] == 'failed'
    assert key in error.msg and 'line 3' in error.msg
    assert error.details['records_failed'] == 4
    assert ids_in(sandbox, db, table) == []


SCHEMA_CASES = {
    # archive has a column the table lacks
    'extra_column': ([('id', 'integer'), ('name', 'text'), ('amount', 'integer'), ('legacy', 'text')],
                     dict(id=1, name='a', amount=10, legacy='old')),
    # archive lacks a table column (the table's default fills it)
    'missing_column': ([('id', 'integer'), ('name', 'text')], dict(id=1, name='a')),
    # archived text that is no integer
    'text_to_integer': ([('id', 'integer'), ('name', 'text'), ('amount', 'text')], dict(id=1, name='a', amount='abc')),
    # archived numeric 1.5: transform casts it (rounds to 2), lenient reads it as an integer and fails
    'numeric_to_integer': ([('id', 'integer'), ('name', 'text'), ('amount', 'numeric')], dict(id=1, name='a', amount=1.5)),
}
# (case, strategy) -> None when the file is restored, else words of the error
SCHEMA_OUTCOMES = {
    ('extra_column', 'strict'): 'the table lacks archived column(s) legacy',
    ('extra_column', 'lenient'): None,
    ('extra_column', 'transform'): None,
    ('extra_column', 'none'): 'column "legacy" of relation',
    ('missing_column', 'strict'): 'the archive lacks table column(s) amount',
    ('missing_column', 'lenient'): None,
    ('missing_column', 'transform'): None,
    ('missing_column', 'none'): None,
    ('text_to_integer', 'strict'): 'column amount was archived as text but is integer',
    ('text_to_integer', 'lenient'): 'invalid input syntax for type integer',
    ('text_to_integer', 'transform'): 'column amount was archived as text and does not cast to integer',
    ('text_to_integer', 'none'): 'invalid input syntax for type integer',
    ('numeric_to_integer', 'strict'): 'column amount was archived as numeric but is integer',
    ('numeric_to_integer', 'lenient'): 'invalid input syntax for type integer',
    ('numeric_to_integer', 'transform'): None,
    ('numeric_to_integer', 'none'): 'invalid input syntax for type integer',
}


@pytest.mark.parametrize('case, strategy', sorted(SCHEMA_OUTCOMES))
def test_schema_migration_strategies(sandbox, db, prefix, case, strategy):
    table = simple_table(sandbox, db, extra=" DEFAULT 7")
    columns, row = SCHEMA_CASES[case]
    key = write_archive(sandbox, prefix, db, table, [row], day(2026, 1, 1), columns=columns)
    expected = SCHEMA_OUTCOMES[(case, strategy)]
    if expected is not None:
        error = restore_fails(sandbox, db, prefix, table, s3_key=key, schema_migration_strategy=strategy)
        assert expected in error.msg and key in error.msg
        assert error.details['files_failed'] == 1 and error.details['records_restored'] == 0
        assert ids_in(sandbox, db, table) == []
        return
    done = restore(sandbox, db, prefix, table, s3_key=key, schema_migration_strategy=strategy)
    assert done['mode'] == 's3_key' and done['records_restored'] == 1 and done['files_failed'] == 0
    values = query(sandbox, db, 'SELECT id, name, amount FROM %s' % table)
    entry = done['files'][0]
    if case == 'extra_column':
        assert values == [(1, 'a', 10)] and entry['dropped_columns'] == ['legacy']
    elif case == 'missing_column':
        assert values == [(1, 'a', 7)]
        assert entry.get('defaulted_columns') == (['amount'] if strategy != 'none' else None)
    else:
        assert values == [(1, 'a', 2)]


def test_missing_table_and_missing_key_are_clear_errors(sandbox, db, prefix):
    error = restore_fails(sandbox, db, prefix, 'no_such_table', restore_all=True)
    assert 'no_such_table' in error.msg and 'does not exist' in error.msg
    table = simple_table(sandbox, db)
    key = fmt.batch_key(prefix, db, 'public', table, day(2026, 1, 1), 1)
    error = restore_fails(sandbox, db, prefix, table, s3_key=key)
    assert key in error.msg and 'does not exist' in error.msg


def test_archives_without_sidecar_restore_unverified(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    write_simple(sandbox, db, prefix, table, [1, 2, 3], day(2026, 1, 1), sidecar=False)
    write_simple(sandbox, db, prefix, table, [4], day(2026, 1, 2))
    listing = restore(sandbox, db, prefix, table)
    assert [a['has_sidecar'] for a in listing['archives']] == [False, True]
    done = restore(sandbox, db, prefix, table, restore_all=True)
    assert [(f['verified'], f['status']) for f in done['files']] == [(False, 'restored'), (True, 'restored')]
    assert done['records_restored'] == 4 and ids_in(sandbox, db, table) == [1, 2, 3, 4]


def test_a_file_postgresql_refuses_for_a_size_limit_is_isolated(sandbox, db, prefix):
    """An error of class 54 (program limit exceeded, an OperationalError in psycopg2) is the file's fault,
    not a lost connection: the file is rolled back and the others go on."""
    table = simple_table(sandbox, db)
    query(sandbox, db, 'CREATE INDEX ON %s (name)' % table)
    write_simple(sandbox, db, prefix, table, [1], day(2026, 1, 1))
    huge = hashlib.sha512(b'x').hexdigest()
    wide = ''.join(hashlib.sha512(str(i).encode()).hexdigest() for i in range(100))  # 12,800 incompressible chars
    bad = write_archive(sandbox, prefix, db, table, [dict(id=2, name=wide + huge, amount=1)], day(2026, 1, 2),
                        columns=SIMPLE_COLUMNS)
    write_simple(sandbox, db, prefix, table, [3], day(2026, 1, 3))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True)
    assert [f['key'] for f in error.details['files'] if f['status'] == 'failed'] == [bad]
    assert 'index row' in error.msg
    assert ids_in(sandbox, db, table) == [1, 3]


# --- archive_restore: modes and options ----------------------------------------------------------------

def _three_days(sandbox, db, prefix, table):
    """Archives of ids 1-2, 3-4, 5-6 on 2025-12-31, 2026-01-15 and 2026-02-01 (keys in archive order)."""
    return [write_simple(sandbox, db, prefix, table, [1, 2], day(2025, 12, 31)),
            write_simple(sandbox, db, prefix, table, [3, 4], day(2026, 1, 15)),
            write_simple(sandbox, db, prefix, table, [5, 6], day(2026, 2, 1))]


def test_list_mode(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    later = write_simple(sandbox, db, prefix, table, [7], day(2026, 2, 1), batch=1000)
    put_object(sandbox, later + fmt.PENDING_SUFFIX, b'{}')
    # batch_999 of the same run sorts before batch_1000
    earlier = write_simple(sandbox, db, prefix, table, [8], day(2026, 2, 1), batch=999)
    listing = restore(sandbox, db, prefix, table)
    assert listing['mode'] == 'list' and listing['changed'] is False and listing['archive_count'] == 5
    assert [a['key'] for a in listing['archives']] == keys + [earlier, later]
    assert [a['date'] for a in listing['archives']] == ['2025-12-31', '2026-01-15', '2026-02-01', '2026-02-01', '2026-02-01']
    assert [a['pending'] for a in listing['archives']] == [False, False, False, False, True]
    assert all(a['has_sidecar'] and a['size_bytes'] > 0 for a in listing['archives'])
    assert not any(a['restored'] for a in listing['archives']) and listing['watermark'] is None
    restore(sandbox, db, prefix, table, restore_all=True, end_date='2026-01-31')
    listing = restore(sandbox, db, prefix, table)
    assert [a['restored'] for a in listing['archives']] == [True, True, False, False, False]
    assert listing['watermark']['last_restored_key'] == keys[1]
    assert ids_in(sandbox, db, table) == [1, 2, 3, 4]


def test_s3_key_restores_that_archive_only(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    done = restore(sandbox, db, prefix, table, s3_key=keys[1])
    assert done['mode'] == 's3_key' and done['watermark'] is None and done['changed'] is True
    assert [f['key'] for f in done['files']] == [keys[1]] and done['records_restored'] == 2
    assert ids_in(sandbox, db, table) == [3, 4]
    assert s3_watermark(sandbox, prefix, db, table) is None
    again = restore(sandbox, db, prefix, table, s3_key=keys[1])
    assert again['records_restored'] == 0 and again['records_skipped'] == 2 and again['changed'] is False


def test_restore_all_between_dates(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    done = restore(sandbox, db, prefix, table, restore_all=True, start_date='2026-01-01', end_date='2026-01-31')
    assert [f['key'] for f in done['files']] == [keys[1]] and ids_in(sandbox, db, table) == [3, 4]
    done = restore(sandbox, db, prefix, table, restore_all=True, start_date='2026-02-01', end_date='2026-02-01',
                   restore_watermark=False)
    assert [f['key'] for f in done['files']] == [keys[2]] and ids_in(sandbox, db, table) == [3, 4, 5, 6]
    done = restore(sandbox, db, prefix, table, restore_all=True, end_date='2025-12-31', ignore_watermark=True)
    assert [f['key'] for f in done['files']] == [keys[0]] and ids_in(sandbox, db, table) == list(range(1, 7))


def test_conflict_skip_keeps_existing_rows(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    write_simple(sandbox, db, prefix, table, range(1, 11), day(2026, 1, 1))
    query(sandbox, db, "INSERT INTO %s SELECT g, 'local', -1 FROM generate_series(1, 5) g" % table)
    done = restore(sandbox, db, prefix, table, restore_all=True, conflict_strategy='skip')
    assert (done['records_restored'], done['records_skipped']) == (5, 5)
    assert done['files'][0]['restored'] == 5 and done['files'][0]['skipped'] == 5
    assert query(sandbox, db, "SELECT count(*) FILTER (WHERE name = 'local'), count(*) FROM %s" % table) == [(5, 10)]


def test_conflict_overwrite_replaces_existing_rows(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    write_simple(sandbox, db, prefix, table, range(1, 11), day(2026, 1, 1))
    query(sandbox, db, "INSERT INTO %s SELECT g, 'local', -1 FROM generate_series(1, 5) g" % table)
    done = restore(sandbox, db, prefix, table, restore_all=True, conflict_strategy='overwrite')
    assert (done['records_restored'], done['records_skipped']) == (10, 0)
    assert query(sandbox, db, 'SELECT array_agg(name ORDER BY id), sum(amount) FROM %s' % table) == [
        (['n%d' % i for i in range(1, 11)], 550)]


def test_conflict_upsert_counts_unchanged_rows_as_skipped(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    write_simple(sandbox, db, prefix, table, range(1, 11), day(2026, 1, 1))
    query(sandbox, db, "INSERT INTO %s SELECT g, 'n' || g, g * 10 FROM generate_series(1, 6) g" % table)
    query(sandbox, db, "UPDATE %s SET name = 'changed' WHERE id IN (2, 4)" % table)
    done = restore(sandbox, db, prefix, table, restore_all=True, conflict_strategy='upsert')
    # 4 new (7..10), 2 updated (2, 4), 4 unchanged (1, 3, 5, 6)
    assert (done['records_restored'], done['records_skipped']) == (6, 4)
    assert query(sandbox, db, "SELECT count(*) FROM %s WHERE name = 'n' || id AND amount = id * 10" % table) == [(10,)]


def test_conflict_upsert_on_a_table_with_a_json_column(sandbox, db, prefix):
    """json has no equality operator: upsert must still tell changed rows from unchanged ones."""
    table = new_name('uj')
    query(sandbox, db, 'CREATE TABLE %s (id integer PRIMARY KEY, doc json, spot point)' % table)
    rows = [dict(id=i, doc={'a': i, 'n': None}, spot='(%d,1)' % i) for i in (1, 2, 3)]
    write_archive(sandbox, prefix, db, table, rows, day(2026, 1, 1), columns=[('id', 'integer'), ('doc', 'json'), ('spot', 'point')])
    query(sandbox, db, """INSERT INTO %s VALUES (1, '{"a":1,"n":null}', '(1,1)'), (2, '{"a": 0}', '(2,1)')""" % table)
    done = restore(sandbox, db, prefix, table, restore_all=True, conflict_strategy='upsert')
    assert (done['records_restored'], done['records_skipped']) == (2, 1)  # 2 changed, 3 new; 1 unchanged
    assert query(sandbox, db, "SELECT id, doc->>'a' FROM %s ORDER BY id" % table) == [(1, '1'), (2, '2'), (3, '3')]


def test_conflict_fail_fails_the_file_with_a_duplicate(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    clean = write_simple(sandbox, db, prefix, table, [1, 2], day(2026, 1, 1))
    dup = write_simple(sandbox, db, prefix, table, [3, 4], day(2026, 1, 2))
    query(sandbox, db, "INSERT INTO %s VALUES (4, 'local', 0)" % table)
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, conflict_strategy='fail')
    assert [(f['key'], f['status']) for f in error.details['files']] == [(clean, 'restored'), (dup, 'failed')]
    assert 'duplicate key' in error.msg
    assert query(sandbox, db, 'SELECT id, name FROM %s ORDER BY id' % table) == [(1, 'n1'), (2, 'n2'), (4, 'local')]


def test_conflict_columns_on_a_table_without_primary_key(sandbox, db, prefix):
    table = new_name('cc')
    query(sandbox, db, 'CREATE TABLE %s (id integer, code text NOT NULL UNIQUE, val text)' % table)
    columns = [('id', 'integer'), ('code', 'text'), ('val', 'text')]
    write_archive(sandbox, prefix, db, table, [dict(id=i, code='c%d' % i, val='archived') for i in range(1, 5)],
                  day(2026, 1, 1), columns=columns)
    query(sandbox, db, "INSERT INTO %s VALUES (100, 'c1', 'local'), (200, 'c2', 'local')" % table)
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, conflict_strategy='overwrite')
    assert 'needs conflict_columns' in error.msg
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, conflict_strategy='overwrite',
                          conflict_columns=['nope'])
    assert 'nope' in error.msg
    done = restore(sandbox, db, prefix, table, restore_all=True, conflict_strategy='overwrite', conflict_columns=['code'])
    assert done['records_restored'] == 4
    assert query(sandbox, db, 'SELECT id, code, val FROM %s ORDER BY code' % table) == [
        (1, 'c1', 'archived'), (2, 'c2', 'archived'), (3, 'c3', 'archived'), (4, 'c4', 'archived')]


def _indexes(sandbox, db, table):
    return sorted(row[0] for row in query(sandbox, db, 'SELECT indexname FROM pg_indexes WHERE tablename = %s', [table]))


def _store(sandbox, db, table, schema='public'):
    """``[(index_name, definition)]`` recorded in ``pgops_dropped_indexes`` for ``table`` (none without the store)."""
    if scalar(sandbox, db, 'SELECT to_regclass(%s) IS NULL', ['%s.pgops_dropped_indexes' % schema]):
        return []
    return query(sandbox, db, 'SELECT index_name, definition FROM %s.pgops_dropped_indexes WHERE table_oid = %%s::regclass'
                              ' ORDER BY 1' % schema, ['%s.%s' % (schema, table)])


def _definitions(sandbox, db, table):
    return query(sandbox, db, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s AND indexname <> %s"
                              " ORDER BY 1", [table, table + '_pkey'])


def test_drop_indexes_recreates_them_also_when_a_file_fails(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    query(sandbox, db, 'CREATE INDEX %s_amount ON %s (amount); CREATE UNIQUE INDEX %s_name ON %s (name)'
          % (table, table, table, table))
    before = _indexes(sandbox, db, table)
    definition = query(sandbox, db, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", ['%s_amount' % table])
    write_simple(sandbox, db, prefix, table, [1, 2], day(2026, 1, 1))
    write_simple(sandbox, db, prefix, table, [3], day(2026, 1, 2), body=b'not gzip', sidecar=False)
    write_simple(sandbox, db, prefix, table, [4, 5], day(2026, 1, 3))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, drop_indexes=True)
    assert error.details['indexes_dropped'] == ['%s_amount' % table] == error.details['indexes_recreated']
    assert _indexes(sandbox, db, table) == before
    assert query(sandbox, db, "SELECT indexdef FROM pg_indexes WHERE indexname = %s", ['%s_amount' % table]) == definition
    assert ids_in(sandbox, db, table) == [1, 2, 4, 5]
    assert _store(sandbox, db, table) == []  # recreated, so forgotten
    done = restore(sandbox, db, prefix, table, restore_all=True, drop_indexes=True, ignore_watermark=True,
                   start_date='2026-01-03')
    assert done['indexes_dropped'] == done['indexes_recreated'] == ['%s_amount' % table]
    assert _indexes(sandbox, db, table) == before
    assert _store(sandbox, db, table) == []
    assert not [key for key in list_keys(sandbox, prefix) if 'dropped_indexes' in key]  # nothing of it in S3


def _killed_run(sandbox, db, prefix, table):
    """A ``drop_indexes`` run whose session ends during the load, after the DROP INDEX statements committed and
    before the indexes are recreated: what the database sees of a run killed there (the server rolls back its open
    transaction). Its first INSERT terminates its own backend. Returns the definitions of the dropped indexes."""
    query(sandbox, db, 'CREATE INDEX %s_amount ON %s (amount); CREATE INDEX %s_id_amount ON %s (id, amount)'
          % ((table,) * 4))
    definitions = _definitions(sandbox, db, table)
    assert len(definitions) == 2
    query(sandbox, db, 'CREATE FUNCTION %s_die() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN'
                       ' PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END$$;'
                       ' CREATE TRIGGER die AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s_die()'
          % ((table,) * 3))
    write_simple(sandbox, db, prefix, table, [1, 2], day(2026, 1, 1))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, drop_indexes=True)
    assert error.details['connection_lost'] and error.details['indexes_dropped'] == [name for name, definition in definitions]
    query(sandbox, db, 'DROP TRIGGER die ON %s' % table)
    assert _indexes(sandbox, db, table) == ['%s_pkey' % table]
    assert _store(sandbox, db, table) == definitions  # saved in the transaction of the DROP INDEX statements
    return definitions


def test_indexes_dropped_by_a_killed_run_are_recreated_by_the_next_run(sandbox, db, prefix):
    """A run killed between DROP INDEX and their recreation leaves the definitions in the database; check mode
    and dry runs report them and change nothing; the next run, without drop_indexes, recreates the missing
    indexes before loading and forgets them."""
    table = simple_table(sandbox, db)
    definitions = _killed_run(sandbox, db, prefix, table)
    names = [name for name, definition in definitions]
    checked = restore(sandbox, db, prefix, table, check_mode=True, restore_all=True)
    assert checked['would_recreate_indexes'] == names and checked['changed']
    assert restore(sandbox, db, prefix, table, restore_all=True, dry_run=True)['would_recreate_indexes'] == names
    assert _indexes(sandbox, db, table) == ['%s_pkey' % table] and _store(sandbox, db, table) == definitions
    done = restore(sandbox, db, prefix, table, restore_all=True)
    assert done['indexes_recreated'] == names and done['indexes_dropped'] == []
    assert _definitions(sandbox, db, table) == definitions
    assert _store(sandbox, db, table) == []
    assert ids_in(sandbox, db, table) == [1, 2]
    again = restore(sandbox, db, prefix, table, check_mode=True, restore_all=True)
    assert again['would_recreate_indexes'] == [] and not again['changed']


def test_an_index_that_cannot_be_recreated_keeps_its_definition_for_the_next_run(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    definitions = _killed_run(sandbox, db, prefix, table)
    query(sandbox, db, 'CREATE TABLE %s_amount (x integer)' % table)  # takes the name of one index
    error = restore_fails(sandbox, db, prefix, table, restore_all=True)
    assert 'Could not recreate dropped indexes' in error.msg and definitions[0][1] in error.msg
    assert 'already exists' in error.msg
    assert error.details['indexes_recreated'] == [definitions[1][0]]
    assert _store(sandbox, db, table) == definitions[:1]
    assert ids_in(sandbox, db, table) == []  # nothing loaded before the indexes are back
    query(sandbox, db, 'DROP TABLE %s_amount' % table)
    done = restore(sandbox, db, prefix, table, restore_all=True)
    assert done['indexes_recreated'] == [definitions[0][0]]
    assert _definitions(sandbox, db, table) == definitions and _store(sandbox, db, table) == []
    assert ids_in(sandbox, db, table) == [1, 2]


def test_index_definitions_left_in_s3_by_earlier_versions_are_never_run(sandbox, db, prefix):
    """Earlier versions ran the statements of ``.dropped_indexes.*.json`` from S3 on the next run: whoever could
    write to the bucket could have the restoring role run any SQL. Such an object now only yields a warning."""
    table = simple_table(sandbox, db)
    pwned = new_name('pwned')
    attack = json.dumps({'indexes': [['public.nope', 'CREATE TABLE %s AS SELECT rolname, rolpassword FROM pg_authid'
                                      % pwned]]}).encode()
    saved = ['%s/%s/public/%s/.dropped_indexes.public.json' % (prefix, db, table),
             '%s/%s/%s/.dropped_indexes.public.json' % (prefix, db, table)]  # format 1 location
    for key in saved:
        put_object(sandbox, key, attack)
    write_simple(sandbox, db, prefix, table, [1, 2], day(2026, 1, 1))
    dry = restore(sandbox, db, prefix, table, restore_all=True, dry_run=True)
    done = restore(sandbox, db, prefix, table, restore_all=True)
    assert scalar(sandbox, db, 'SELECT to_regclass(%s) IS NULL', [pwned])
    for result in (dry, done):
        assert len(result['warnings']) == 2
        for key, warning in zip(saved, result['warnings']):
            assert 's3://%s/%s' % (sandbox.s3.bucket, key) in warning
            assert 'earlier version' in warning and 'recreate the missing indexes by hand' in warning
    assert done['indexes_recreated'] == [] and ids_in(sandbox, db, table) == [1, 2]
    assert set(saved) <= set(list_keys(sandbox, prefix))  # left for a person to check
    done = restore(sandbox, db, prefix, table, restore_all=True, drop_indexes=True, ignore_watermark=True)
    assert scalar(sandbox, db, 'SELECT to_regclass(%s) IS NULL', [pwned]) and len(done['warnings']) == 2


def test_a_recorded_definition_is_run_only_as_the_create_index_of_its_index(sandbox, db, prefix):
    """A row of pgops_dropped_indexes that is not the CREATE INDEX of its index on its table alone is refused
    (a role able to write to the store must not get the restoring role to run other SQL)."""
    table = simple_table(sandbox, db)
    definitions = _killed_run(sandbox, db, prefix, table)
    pwned = new_name('pwned')
    steal = 'CREATE TABLE %s AS SELECT rolname, rolpassword FROM pg_authid' % pwned
    query(sandbox, db, 'UPDATE pgops_dropped_indexes SET definition = definition || %s WHERE index_name = %s',
          ['; ' + steal, definitions[0][0]])
    query(sandbox, db, 'INSERT INTO pgops_dropped_indexes (table_oid, table_name, index_name, definition)'
                       ' VALUES (%s::regclass, %s, %s, %s)', [table, table, table + '_other', steal])
    error = restore_fails(sandbox, db, prefix, table, restore_all=True)
    assert scalar(sandbox, db, 'SELECT to_regclass(%s) IS NULL', [pwned])
    assert 'Not run' in error.msg and 'it holds a ;' in error.msg and 'does not start with' in error.msg
    assert error.details['indexes_recreated'] == [definitions[1][0]]
    assert len(_store(sandbox, db, table)) == 2


def test_a_store_created_by_another_role_is_not_used(sandbox, db, prefix):
    schema, role = new_name('s'), new_name('role')
    query(sandbox, db, 'CREATE ROLE %s; CREATE SCHEMA %s; CREATE TABLE %s.t (id integer PRIMARY KEY, name text NOT NULL,'
                       ' amount integer); CREATE INDEX t_amount ON %s.t (amount); CREATE TABLE %s.pgops_dropped_indexes'
                       ' (table_oid oid, table_name text, index_name text, definition text, dropped_at timestamptz);'
                       ' ALTER TABLE %s.pgops_dropped_indexes OWNER TO %s' % (role, schema, schema, schema, schema, schema, role))
    write_archive(sandbox, prefix, db, 't', simple_rows([1]), day(2026, 1, 1), columns=SIMPLE_COLUMNS, schema=schema)
    error = restore_fails(sandbox, db, prefix, 't', schema=schema, restore_all=True, drop_indexes=True)
    assert 'not a table owned by the connected role' in error.msg and role in error.msg
    assert scalar(sandbox, db, 'SELECT to_regclass(%s) IS NOT NULL', ['%s.t_amount' % schema])  # nothing dropped
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s.pgops_dropped_indexes' % schema) == 0


def test_start_date_does_not_move_the_watermark_past_earlier_archives(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    write_simple(sandbox, db, prefix, table, [1], day(2026, 1, 1))
    write_simple(sandbox, db, prefix, table, [2], day(2026, 2, 1))
    done = restore(sandbox, db, prefix, table, restore_all=True, start_date='2026-02-01')
    assert done['records_restored'] == 1 and s3_watermark(sandbox, prefix, db, table) is None
    done = restore(sandbox, db, prefix, table, restore_all=True)
    assert ids_in(sandbox, db, table) == [1, 2] and done['records_restored'] == 1 and done['records_skipped'] == 1


def test_commit_frequency_groups_files_and_isolates_a_bad_one(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = [write_simple(sandbox, db, prefix, table, [2 * n + 1, 2 * n + 2], day(2026, 1, n + 1)) for n in range(5)]
    put_object(sandbox, keys[2], b'damaged')  # the sidecar no longer matches
    query(sandbox, db, 'CREATE TABLE %s_log (n int); CREATE FUNCTION %s_count() RETURNS trigger LANGUAGE plpgsql AS'
                       ' $$BEGIN INSERT INTO %s_log SELECT txid_current(); RETURN NULL; END$$;'
                       ' CREATE TRIGGER c AFTER INSERT ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s_count()'
          % ((table,) * 5))
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, commit_frequency=2, storage_type='database')
    assert [f['status'] for f in error.details['files']] == ['restored', 'restored', 'failed', 'restored', 'restored']
    assert ids_in(sandbox, db, table) == [1, 2, 3, 4, 7, 8, 9, 10]
    # Two files per transaction: files 1-2 in one, 3 (failed) -4-5 in the other(s).
    transactions = query(sandbox, db, 'SELECT count(DISTINCT n), count(*) FROM %s_log' % table)[0]
    assert transactions == (2, 4)
    assert db_watermark(sandbox, db, prefix, table)[0] == keys[1]


def test_dry_run_and_check_mode_write_nothing(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    write_simple(sandbox, db, prefix, table, [9], day(2026, 3, 1), sidecar=False)
    schema = new_name('s')
    query(sandbox, db, 'CREATE SCHEMA %s; CREATE TABLE %s.%s (LIKE %s INCLUDING ALL)' % (schema, schema, table, table))
    for options in (dict(dry_run=True), dict(check_mode=True)):
        done = restore(sandbox, db, prefix, table, restore_all=True, storage_type='both', schema=schema,
                       source_schema='public', **options)
        # Check mode says a run would change the table; a dry run asked for says it changed nothing.
        assert done['dry_run'] is True and done['changed'] is bool(options.get('check_mode'))
        assert done['would_restore_files'] == 4 and done['would_restore_records'] == 6
        assert [f['status'] for f in done['files']] == ['would_restore'] * 4
        assert [f['verified'] for f in done['files']] == [True, True, True, False]
        assert [f['records'] for f in done['files']] == [2, 2, 2, None]
    assert count(sandbox, db, '%s.%s' % (schema, table)) == 0
    assert db_watermark(sandbox, db, prefix, table, schema=schema) is None
    assert s3_watermark(sandbox, prefix, db, table) is None
    assert set(list_keys(sandbox, prefix)) == set(k + s for k in keys for s in ('', fmt.SIDECAR_SUFFIX)) | {
        fmt.batch_key(prefix, db, 'public', table, day(2026, 3, 1), 1)}


@pytest.mark.parametrize('storage', ['s3', 'database', 'both'])
def test_watermark_storage_second_run_and_ignore_watermark(sandbox, db, prefix, storage):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    done = restore(sandbox, db, prefix, table, restore_all=True, storage_type=storage)
    assert done['records_restored'] == 6 and done['watermark']['written'] is True
    assert done['watermark']['current']['last_restored_key'] == keys[2]
    in_s3 = s3_watermark(sandbox, prefix, db, table)
    in_db = db_watermark(sandbox, db, prefix, table)
    if storage in ('s3', 'both'):
        assert in_s3['last_restored_key'] == keys[2] and in_s3['total_archives_restored'] == 3
        assert in_s3['last_restored_date'] == '2026-02-01' and in_s3['table'] == table
    else:
        assert in_s3 is None
    if storage in ('database', 'both'):
        assert in_db == (keys[2], 3)
    else:
        assert in_db is None
    again = restore(sandbox, db, prefix, table, restore_all=True, storage_type=storage)
    assert again['files_skipped'] == 3 and again['files_processed'] == 0 and again['changed'] is False
    assert [f['reason'] for f in again['files']] == ['watermark'] * 3
    assert again['watermark']['previous']['storage'] == ('s3' if storage == 's3' else 'database')
    # A new archive after the watermark is restored by the next run, and only it.
    newer = write_simple(sandbox, db, prefix, table, [7], day(2026, 2, 2))
    third = restore(sandbox, db, prefix, table, restore_all=True, storage_type=storage)
    assert [f['key'] for f in third['files'] if f['status'] == 'restored'] == [newer]
    forced = restore(sandbox, db, prefix, table, restore_all=True, storage_type=storage, ignore_watermark=True)
    assert forced['files_processed'] == 4 and forced['files_skipped'] == 0
    assert forced['records_restored'] == 0 and forced['records_skipped'] == 7  # rows already there: skip
    assert ids_in(sandbox, db, table) == [1, 2, 3, 4, 5, 6, 7]
    # The watermark never moves back: it still names the newest archive.
    if storage in ('s3', 'both'):
        assert s3_watermark(sandbox, prefix, db, table)['last_restored_key'] == newer
    if storage in ('database', 'both'):
        assert db_watermark(sandbox, db, prefix, table)[0] == newer


@pytest.mark.parametrize('each', [True, False])
def test_update_after_each_archive(sandbox, db, prefix, each):
    table = simple_table(sandbox, db)
    keys = _three_days(sandbox, db, prefix, table)
    # Create restore_watermarks (another prefix), then log every write to it.
    other = new_prefix()
    write_simple(sandbox, db, other, table, [100], day(2026, 1, 1))
    restore(sandbox, db, other, table, restore_all=True, storage_type='database')
    log = new_name('wlog')
    query(sandbox, db, 'CREATE TABLE %s (key text); CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS'
                       ' $$BEGIN INSERT INTO %s VALUES (NEW.last_restored_key); RETURN NEW; END$$;'
                       ' CREATE TRIGGER %s AFTER INSERT OR UPDATE ON restore_watermarks FOR EACH ROW'
                       " WHEN (NEW.table_name = '%s') EXECUTE FUNCTION %s()" % (log, log, log, log, table, log))
    try:
        done = restore(sandbox, db, prefix, table, restore_all=True, storage_type='both', update_after_each_archive=each)
    finally:
        query(sandbox, db, 'DROP TRIGGER %s ON restore_watermarks' % log)
    assert done['records_restored'] == 6
    written = [row[0] for row in query(sandbox, db, 'SELECT key FROM %s' % log) if row[0] in keys]
    assert written[-1] == keys[2]
    if each:
        assert written[:3] == keys  # moved with each archive's commit
    else:
        assert set(written) == {keys[2]}  # only at the end
    assert db_watermark(sandbox, db, prefix, table)[0] == keys[2]
    assert s3_watermark(sandbox, prefix, db, table)['last_restored_key'] == keys[2]


def test_error_isolation_keeps_the_watermark_before_the_bad_file(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    keys = [write_simple(sandbox, db, prefix, table, [n], day(2026, 1, n)) for n in range(1, 6)]
    put_object(sandbox, keys[2], gzip.compress(b'{"id": 3, "name": "x", "amount": "not a number"}\n'))
    query(sandbox, db, 'DELETE FROM %s' % table)
    sandbox.s3.client().delete_object(Bucket=sandbox.s3.bucket, Key=keys[2] + fmt.SIDECAR_SUFFIX)
    error = restore_fails(sandbox, db, prefix, table, restore_all=True, storage_type='both')
    assert [f['status'] for f in error.details['files']] == ['restored', 'restored', 'failed', 'restored', 'restored']
    assert 'not a number' in error.msg and keys[2] in error.msg
    assert ids_in(sandbox, db, table) == [1, 2, 4, 5]
    assert s3_watermark(sandbox, prefix, db, table)['last_restored_key'] == keys[1]
    assert db_watermark(sandbox, db, prefix, table)[0] == keys[1]
    # Repaired, the next run retries from the bad file; the ones after it are skipped row by row.
    write_simple(sandbox, db, prefix, table, [3], day(2026, 1, 3))
    done = restore(sandbox, db, prefix, table, restore_all=True, storage_type='both')
    assert [(f['key'], f['status']) for f in done['files']] == [(k, 'skipped') for k in keys[:2]] + [
        (k, 'restored') for k in keys[2:]]
    assert (done['records_restored'], done['records_skipped']) == (1, 2)
    assert ids_in(sandbox, db, table) == [1, 2, 3, 4, 5]
    assert db_watermark(sandbox, db, prefix, table)[0] == keys[4] == s3_watermark(sandbox, prefix, db, table)['last_restored_key']


# --- through Ansible -----------------------------------------------------------------------------------

def test_playbook_wrong_password_never_shows_the_secrets(sandbox, db, prefix, tmp_path):
    password, secret_key = 'Wrong-Pass-8514-zq', 'Secret-Key-2271-xy'
    playbook = tmp_path / 'restore.yml'
    playbook.write_text(json.dumps([{
        'name': 'restore', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
        'tasks': [{'name': 'restore', 'pgops.resilience.archive_restore': dict(
            login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=password, ssl_mode='disable',
            database=db, table='anything', bucket=sandbox.s3.bucket, prefix=prefix, restore_all=True,
            endpoint_url=sandbox.s3.endpoint_url, access_key=sandbox.s3.access_key, secret_key=secret_key),
            'ignore_errors': True},
            {'name': 'archive', 'pgops.resilience.table_archive': dict(
                conninfo='host=127.0.0.1 port=%d user=postgres password=%s dbname=%s sslmode=disable'
                         % (sandbox.primary.port, password, db),
                table='anything', where='true', bucket=sandbox.s3.bucket, prefix=prefix,
                endpoint_url=sandbox.s3.endpoint_url, secret_key=secret_key), 'ignore_errors': True}],
    }]))
    done = run_playbook(sandbox, str(playbook), env={'PGPASSFILE': '/nonexistent'}, verbose=True)
    output = done.stdout + done.stderr
    assert 'failed=0' in done.stdout and 'ignored=2' in done.stdout, output  # both tasks failed (and were ignored)
    assert output.count('FATAL: password authentication failed for user') >= 2, output
    assert 'Traceback' not in output
    assert password not in output and secret_key not in output


def test_playbook_lists_archives(sandbox, db, prefix):
    table = simple_table(sandbox, db)
    _three_days(sandbox, db, prefix, table)
    done = run_playbook(sandbox, 'pgops.resilience.archive_restore', dict(
        archive_restore_database=db, archive_restore_table=table, archive_restore_bucket=sandbox.s3.bucket,
        archive_restore_prefix=prefix))
    assert done.returncode == 0, done.stdout + done.stderr
    assert '3 archive(s) of %s under s3://%s/%s/%s/public/%s/' % (table, sandbox.s3.bucket, prefix, db, table) in \
        ' '.join(done.stdout.split())
    assert 'changed=0' in done.stdout and ids_in(sandbox, db, table) == []


def test_wait_for_wal_flush_returns_once_asynchronous_commits_are_on_disk(sandbox, db):
    """The end of a run whose last rows were committed with synchronous_commit off waits for their WAL."""
    conn = sandbox.primary.connect(dbname=db)
    try:
        conn.autocommit = False
        with conn.cursor() as cursor:
            cursor.execute('CREATE TABLE flush_probe (id int)')
            conn.commit()
            cursor.execute('SET LOCAL synchronous_commit TO off; INSERT INTO flush_probe SELECT generate_series(1, 1000)')
            conn.commit()
            cursor.execute('SELECT pg_current_wal_insert_lsn()')
            committed = cursor.fetchone()[0]
            conn.commit()
        archive_load._wait_for_wal_flush(conn)
        with conn.cursor() as cursor:
            cursor.execute('SELECT pg_current_wal_flush_lsn() >= %s::pg_lsn', [committed])
            assert cursor.fetchone()[0] is True
            cursor.execute('DROP TABLE flush_probe')
        conn.commit()
    finally:
        conn.close()


def test_a_watermark_table_created_by_another_role_is_not_used(sandbox, db, prefix):
    """Another role's restore_watermarks could hold triggers that would run as the restoring role: refused."""
    schema, role = new_name('s'), new_name('role')
    query(sandbox, db, 'CREATE ROLE %s; CREATE SCHEMA %s; CREATE TABLE %s.t (id integer PRIMARY KEY, name text NOT NULL,'
                       ' amount integer); CREATE TABLE %s.restore_watermarks (bucket text); ALTER TABLE %s.restore_watermarks'
                       ' OWNER TO %s' % (role, schema, schema, schema, schema, role))
    write_archive(sandbox, prefix, db, 't', simple_rows([1]), day(2026, 1, 1), columns=SIMPLE_COLUMNS, schema=schema)
    error = restore_fails(sandbox, db, prefix, 't', schema=schema, restore_all=True, storage_type='database')
    assert 'restore_watermarks is not a table owned by the connected role' in error.msg and role in error.msg
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s.t' % schema) == 0
