# -*- coding: utf-8 -*-
"""Row archives under the inputs of an unlucky operator and of an attacker (issue 15): same-named tables in two
schemas, hostile names, SQL in ``where``, crafted archives (duplicate members, wrong counts, another table's
sidecar, a gzip that expands without end), archives in the format 1 layout, and a server that goes away."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
import time
import zlib

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore, table_archive
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

from .archive_helpers import (
    archive_params, create_database, day, drop_database, get_object, list_keys, new_name, new_prefix, put_object,
    query, restore_params, scalar, write_archive)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
# Runs one module's logic in a fresh interpreter, as a separate process (what two Ansible tasks are), and prints the
# result or the error with its details as JSON.
RUNNER = """
import json, sys
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore, table_archive
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
request = json.load(sys.stdin)
entry = dict(table_archive=table_archive.archive_rows, archive_restore=archive_restore.restore_archives)[request['module']]
try:
    outcome = dict(ok=True, result=entry(request['params']))
except PgopsError as exc:
    outcome = dict(ok=False, msg=exc.msg, details=exc.details)
# The peak resident memory of this program (VmHWM starts afresh at exec, unlike ru_maxrss), in kB.
outcome['peak_kb'] = int([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])
print(json.dumps(outcome, default=str))
"""


@pytest.fixture(scope='module')
def db(sandbox):
    name = create_database(sandbox)
    yield name
    drop_database(sandbox, name)


@pytest.fixture
def prefix():
    return new_prefix()


def start(module, params):
    """Start ``module`` (``table_archive`` or ``archive_restore``) on ``params`` in a process of its own."""
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    process = subprocess.Popen([sys.executable, '-c', RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    process.stdin.write(json.dumps(dict(module=module, params=params)).encode('utf-8'))
    process.stdin.close()
    return process


def finish(process, timeout=180):
    """The JSON a process started by :func:`start` printed (dict with ``ok``)."""
    out = process.stdout.read()
    process.wait(timeout=timeout)
    assert process.returncode == 0, process.stderr.read()
    return json.loads(out)


def rows_of(sandbox, db, table):
    """Every row of ``table`` as sorted text (the order-independent content)."""
    return sorted(r[0] for r in query(sandbox, db, 'SELECT t::text FROM %s t' % table))


# --- item 1: the schema is part of every key ----------------------------------------------------------------------

def test_same_named_tables_of_two_schemas_archived_at_once_lose_no_row(sandbox, db, prefix):
    """Issue 15 item 1: a.t and b.t archived at the same moment to one prefix wrote the same keys, and one run's
    clean-up deleted the other's batch. Now their keys differ, and every row is in its table or its archives."""
    schemas = [new_name('a'), new_name('b')]
    for number, schema in enumerate(schemas):
        query(sandbox, db, 'CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, who text);'
                           ' INSERT INTO {s}.t SELECT g, %s FROM generate_series(1, 1000) g'.format(s=schema), [schema])
    before = dict((s, rows_of(sandbox, db, '%s.t' % s)) for s in schemas)
    runs = [start('table_archive', archive_params(sandbox, db, prefix, 't', schema=s, where='true', batch_size=50))
            for s in schemas]
    results = [finish(run) for run in runs]
    assert all(r['ok'] for r in results), results
    keys = [set(r['result']['keys']) for r in results]
    assert len(keys[0]) == len(keys[1]) == 20 and not keys[0] & keys[1]
    for schema, done in zip(schemas, results):
        assert all(key.startswith('%s/%s/%s/t/' % (prefix, db, schema)) for key in done['result']['keys'])
        assert scalar(sandbox, db, 'SELECT count(*) FROM %s.t' % schema) == 0
        # Every row is back from its own schema's archives, and no other.
        query(sandbox, db, 'CREATE TABLE {s}.t_back (LIKE {s}.t INCLUDING ALL)'.format(s=schema))
    for schema in schemas:
        params = restore_params(sandbox, db, prefix, 't', schema=schema, restore_all=True)
        done = archive_restore.restore_archives(params)
        assert done['files_processed'] == 20 and done['records_restored'] == 1000
        assert rows_of(sandbox, db, '%s.t' % schema) == before[schema]
    assert not [k for k in list_keys(sandbox, prefix) if k.endswith(fmt.PENDING_SUFFIX)]


def test_restore_refuses_another_schemas_archives(sandbox, db, prefix):
    """Issue 15 item 1: restoring with schema b loaded a.t's rows into b.t. Now a.t's archives are not b.t's: they
    are not listed for b, an explicit s3_key of them is refused, and source_schema reads them on purpose."""
    a, b = new_name('a'), new_name('b')
    for schema in (a, b):
        query(sandbox, db, 'CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, who text)'.format(s=schema))
    query(sandbox, db, "INSERT INTO {a}.t SELECT g, 'a' FROM generate_series(1, 10) g".format(a=a))
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, 't', schema=a, where='true'))
    key = done['keys'][0]
    listed = archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=b))
    assert listed['archive_count'] == 0
    assert archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=b, restore_all=True))['files_processed'] == 0
    with pytest.raises(PgopsError) as info:
        archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=b, s3_key=key))
    failed = info.value.details['files'][0]
    assert failed['status'] == 'failed' and 'archived from another table' in failed['error'] and a in failed['error']
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s.t' % b) == 0
    # On purpose: a's archives into b.t, with a watermark of b's own.
    copied = archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=b, source_schema=a, restore_all=True))
    assert copied['records_restored'] == 10 and copied['source']['schema'] == a
    assert '.restore_watermark.%s.json' % b in ''.join(list_keys(sandbox, prefix))


def test_format_1_archives_restore_matched_by_their_sidecars_schema(sandbox, db, prefix):
    """Archives written before the schema was in the keys still restore; under the shared format 1 prefix only
    those whose sidecar names the schema are taken, and a format 1 watermark of the same schema is honoured."""
    a, b = new_name('a'), new_name('b')
    columns = [('id', 'integer'), ('who', 'text')]
    for schema in (a, b):
        query(sandbox, db, 'CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, who text)'.format(s=schema))
    old_a = write_archive(sandbox, prefix, db, 't', [dict(id=1, who='a')], day(2025, 5, 1), columns=columns, schema=a,
                          legacy=True)
    old_b = write_archive(sandbox, prefix, db, 't', [dict(id=2, who='b')], day(2025, 5, 2), columns=columns, schema=b,
                          legacy=True)
    new_b = write_archive(sandbox, prefix, db, 't', [dict(id=3, who='b')], day(2025, 5, 3), columns=columns, schema=b)
    assert old_a.startswith('%s/%s/t/year=' % (prefix, db)) and new_b.startswith('%s/%s/%s/t/' % (prefix, db, b))
    done = archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=b, restore_all=True))
    assert [f['key'] for f in done['files']] == [old_b, new_b] and done['other_schema_archives'] == 1
    assert rows_of(sandbox, db, '%s.t' % b) == ['(2,b)', '(3,b)']
    # A format 1 watermark (at the shared prefix) naming schema a is a's: a restore of a starts after it.
    put_object(sandbox, fmt.legacy_table_prefix(prefix, db, 't') + fmt.WATERMARK_NAME, json.dumps(dict(
        last_restored_key=old_a, schema=a, table='t', total_archives_restored=1)).encode())
    again = archive_restore.restore_archives(restore_params(sandbox, db, prefix, 't', schema=a, restore_all=True))
    assert again['files_skipped'] == 1 and again['files_processed'] == 0
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s.t' % a) == 0


# --- item 2: where is one boolean expression; check mode never writes ------------------------------------------

@pytest.mark.parametrize('check_mode', [True, False])
@pytest.mark.parametrize('where', [
    'true); DELETE FROM {victim}; SELECT (1',  # the input
    'true; DELETE FROM {victim}',
    'id > 0) OR (true',
    "id > 0 -- ; DELETE FROM {victim}",
    "'x'; DELETE FROM {victim}; SELECT '",
    "E'\\''; DELETE FROM {victim}; SELECT '",
    '$$; DELETE FROM {victim}; $$',
    # The review's bypass: a dollar quote PostgreSQL sees where a reader that takes non-ASCII for plain text does not.
    "$€$'$€$ IS NULL) IS NULL; COMMIT; BEGIN READ WRITE; DELETE FROM {victim}; COMMIT; SELECT ($€$'$€$ IS NULL",
    'id',  # not boolean
    'no_such_column > 1',
])
def test_where_that_is_not_one_boolean_expression_is_refused_before_any_row(sandbox, db, prefix, where, check_mode):
    table, victim = new_name('src'), new_name('victim')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 5);'
                       'CREATE TABLE {v} (id int); INSERT INTO {v} SELECT generate_series(1, 5)'.format(t=table, v=victim))
    with pytest.raises(PgopsError) as info:
        table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where=where.format(victim=victim)), check_mode=check_mode)
    assert 'where' in info.value.msg
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % victim) == 5
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 5
    assert list_keys(sandbox, prefix) == []


def test_a_where_that_switches_standard_strings_off_cannot_change_how_the_next_batch_reads(sandbox, db, prefix):
    """Review: read with standard strings, this is one boolean expression; but its set_config switched the session's
    standard_conforming_strings off, and the next batch's statement, read with backslash escapes, ran the DELETE.
    Every batch's transaction sets it on again, so the same text means the same thing in every batch."""
    table, victim = new_name('src'), new_name('victim')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 5);'
                       'CREATE TABLE {v} (id int); INSERT INTO {v} SELECT generate_series(1, 5)'.format(t=table, v=victim))
    where = ("set_config('standard_conforming_strings','off',false) IS NOT NULL AND t.id <> 0 AND '\\' <> ')) AS x; "
             "COMMIT; DELETE FROM %s; COMMIT; SELECT * FROM (SELECT 1 AS id FROM %s t WHERE (true --'" % (victim, victim))
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where=where, batch_size=1))
    assert done['records_archived'] == 5 and len(done['batches']) == 5
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % victim) == 5


def test_check_mode_runs_in_a_read_only_transaction(sandbox, db, prefix):
    """A where that would write (a sequence's nextval) is refused by the server in check mode, and the sequence does
    not move; a real run may call it."""
    table, sequence = new_name('src'), new_name('seq')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 5);'
                       'CREATE SEQUENCE {s}'.format(t=table, s=sequence))
    where = "nextval('%s') > 0" % sequence
    with pytest.raises(PgopsError) as info:
        table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where=where), check_mode=True)
    assert 'read-only transaction' in info.value.msg
    assert scalar(sandbox, db, 'SELECT last_value FROM %s' % sequence) == 1
    assert scalar(sandbox, db, 'SELECT is_called FROM %s' % sequence) is False
    counted = table_archive.archive_rows(archive_params(sandbox, db, prefix, table,
                                                        where="current_setting('transaction_read_only')::boolean"), check_mode=True)
    assert counted['would_archive_records'] == 5  # every check-mode query saw a read-only transaction
    assert table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where="t.id % 2 = 0"))['records_archived'] == 2


# --- item 4: whatever is archived can be restored ----------------------------------------------------------------

HOSTILE_TABLES = ['a/b', 'year=2026', '..', '50% off', 'Mixed Case', 'é_中文', 'select', 'x' * 63]
HOSTILE_COLUMNS = ['x', 'a"b', 'back\\slash', 'line\nbreak', 'tab\there', 'ctl\x01char', 'é', 'select', 'y' * 63,
                   'sp ace', '%s', '{}']


@pytest.mark.parametrize('table', HOSTILE_TABLES)
def test_round_trip_of_the_names_postgresql_allows(sandbox, db, prefix, table):
    """Issue 15 item 4: a column named with a quote archived and deleted its rows and then never restored; a table
    named a/b restored 0 files; a column named x could not be archived. Every name now goes round."""
    schema = new_name('Sch/é')
    quoted = '"%s"."%s"' % (schema.replace('"', '""'), table.replace('"', '""'))
    columns = ', '.join('"%s" text' % name.replace('"', '""') for name in HOSTILE_COLUMNS)
    query(sandbox, db, 'CREATE SCHEMA "%s"; CREATE TABLE %s (id int PRIMARY KEY, %s)' % (schema, quoted, columns))
    values = ', '.join("g::text || %s" % n for n in range(len(HOSTILE_COLUMNS)))
    query(sandbox, db, 'INSERT INTO %s SELECT g, %s FROM generate_series(1, 30) g' % (quoted, values))
    before = rows_of(sandbox, db, quoted)
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, schema=schema, where='true', batch_size=7))
    assert done['records_archived'] == 30 and len(done['keys']) == 5
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % quoted) == 0
    back = archive_restore.restore_archives(restore_params(sandbox, db, prefix, table, schema=schema, restore_all=True))
    assert back['files_processed'] == 5 and back['files_failed'] == 0 and back['records_restored'] == 30
    assert rows_of(sandbox, db, quoted) == before


def test_columns_archive_restore_could_not_bring_back_are_refused_before_any_row(sandbox, db, prefix):
    table = new_name('meta')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY, _archived_at text); INSERT INTO {t} VALUES (1, %s)'
          .format(t=table), ['mine'])
    with pytest.raises(PgopsError, match='named like the metadata fields'):
        table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='true'))
    kind, composite = new_name('pair'), new_name('comp')
    query(sandbox, db, 'CREATE TYPE {k} AS (a int, b text); CREATE TABLE {t} (id int PRIMARY KEY, p {k}, ps {k}[]);'
                       " INSERT INTO {t} VALUES (1, ROW(1, 'x'), ARRAY[ROW(2, 'y')::{k}])".format(k=kind, t=composite))
    with pytest.raises(PgopsError) as info:
        table_archive.archive_rows(archive_params(sandbox, db, prefix, composite, where='true'))
    assert 'JSON form is not their text form' in info.value.msg and '"p"' in info.value.msg and '"ps"' in info.value.msg
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 1
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % composite) == 1
    assert list_keys(sandbox, prefix) == []


# --- items 8 and 9: crafted archives fail alone ---------------------------------------------------------------------

def _simple(sandbox, db):
    table = new_name('r')
    query(sandbox, db, 'CREATE TABLE %s (id int PRIMARY KEY, name text)' % table)
    return table


COLUMNS = [('id', 'integer'), ('name', 'text')]


def _restore_all(sandbox, db, prefix, table, **options):
    with pytest.raises(PgopsError) as info:
        archive_restore.restore_archives(restore_params(sandbox, db, prefix, table, restore_all=True, **options))
    return dict((f['key'], f) for f in info.value.details['files'])


def test_duplicate_members_wrong_counts_and_unknown_members_fail_their_file_only(sandbox, db, prefix):
    table = _simple(sandbox, db)
    good = write_archive(sandbox, prefix, db, table, [dict(id=1, name='a')], day(2026, 1, 1), columns=COLUMNS)
    twice = write_archive(sandbox, prefix, db, table, ['{"id":2,"name":"b","name":"evil"}'], day(2026, 1, 2),
                          columns=COLUMNS)
    miscounted = write_archive(sandbox, prefix, db, table, [dict(id=3, name='c')], day(2026, 1, 3), columns=COLUMNS)
    sidecar = json.loads(get_object(sandbox, miscounted + fmt.SIDECAR_SUFFIX))
    put_object(sandbox, miscounted + fmt.SIDECAR_SUFFIX, json.dumps(dict(sidecar, record_count=2)).encode())
    unknown = write_archive(sandbox, prefix, db, table, [dict(id=4, name='d', smuggled='x')], day(2026, 1, 4),
                            columns=COLUMNS)
    last = write_archive(sandbox, prefix, db, table, [dict(id=5, name='e')], day(2026, 1, 5), columns=COLUMNS)
    files = _restore_all(sandbox, db, prefix, table)
    assert files[good]['status'] == files[last]['status'] == 'restored'
    assert 'names member "name" twice' in files[twice]['error']
    assert 'holds 1 rows, its sidecar says 2' in files[miscounted]['error']
    assert 'member(s) "smuggled" that the archive does not declare' in files[unknown]['error']
    assert sorted(r[0] for r in query(sandbox, db, 'SELECT id FROM %s' % table)) == [1, 5]
    # lenient ignores the unknown member (as the format says readers do).
    done = archive_restore.restore_archives(restore_params(sandbox, db, prefix, table, s3_key=unknown,
                                                           schema_migration_strategy='lenient'))
    assert done['records_restored'] == 1


def _peak_rss_of_restore(params):
    """Run archive_restore in a child process; returns (its JSON outcome, its peak RSS in bytes)."""
    outcome = finish(start('archive_restore', params), timeout=300)
    return outcome, outcome['peak_kb'] * 1024


def _gzip_of_one_long_line(length):
    """gzip (bytes) of one JSON line whose text value is ``length`` bytes, made without holding the line."""
    deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
    parts = [deflate.compress(b'{"id":1,"name":"')]
    parts.extend(deflate.compress(block) for block in itertools.repeat(b'x' * (1 << 20), length >> 20))
    parts.append(deflate.compress(b'"}\n'))
    parts.append(deflate.flush())
    return b''.join(parts)


def test_an_archive_that_expands_without_end_fails_alone_in_bounded_memory(sandbox, db, prefix):
    """Issue 15 item 8: a 389 KB archive with a valid sidecar expanding to one 400 MB line took archive_restore to
    1.6 GB RSS. Now decompression stops at max_archive_bytes and the line limit holds too."""
    table = _simple(sandbox, db)
    body = _gzip_of_one_long_line(400 << 20)
    assert len(body) < 2 << 20
    bomb_key = fmt.batch_key(prefix, db, 'public', table, day(2026, 1, 1), 1)
    put_object(sandbox, bomb_key, body)
    document = fmt.sidecar_document(bomb_key, body, 1, COLUMNS, dict(database=db, schema='public', table=table), 'b',
                                    '2026-01-01T12:00:00Z')
    put_object(sandbox, bomb_key + fmt.SIDECAR_SUFFIX, json.dumps(document).encode())
    del body
    good = write_archive(sandbox, prefix, db, table, [dict(id=2, name='fine')], day(2026, 1, 2), columns=COLUMNS)
    outcome, peak = _peak_rss_of_restore(restore_params(sandbox, db, prefix, table, restore_all=True))
    assert outcome['ok'] is False
    files = dict((f['key'], f) for f in outcome['details']['files'])
    assert 'line 1 is over max_record_bytes (67108864)' in files[bomb_key]['error']
    assert files[good]['status'] == 'restored'
    assert peak < 250 << 20, 'peak RSS %d MB' % (peak >> 20)  # stopped once the line passed 64 MB
    # With longer lines allowed, the archive limit stops it.
    outcome, peak = _peak_rss_of_restore(restore_params(sandbox, db, prefix, table, s3_key=bomb_key,
                                                        max_record_bytes=1 << 30))
    assert outcome['ok'] is False and 'max_archive_bytes (268435456 bytes)' in outcome['msg']
    assert peak < 450 << 20, 'peak RSS %d MB' % (peak >> 20)
    assert sorted(r[0] for r in query(sandbox, db, 'SELECT id FROM %s' % table)) == [2]


# --- item 7: a lost connection is reported as such -------------------------------------------------------------------

def test_server_stopped_during_table_archive_reports_what_committed(sandbox, db, prefix):
    """Issue 15 item 7: PostgreSQL stopped with -m immediate during table_archive said "connection already closed",
    changed false and no batches, though batches had committed. Now: lost connection, changed, the committed batches;
    and the next run, with the server back, ends with every row in the table or the archives exactly once."""
    table = new_name('big')
    query(sandbox, db, "CREATE TABLE {t} (id int PRIMARY KEY, pad text); INSERT INTO {t} SELECT g, repeat('p', 200)"
                       ' FROM generate_series(1, 60000) g'.format(t=table))
    before = scalar(sandbox, db, 'SELECT count(*) FROM %s' % table)
    process = start('table_archive', archive_params(sandbox, db, prefix, table, where='true', batch_size=200))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) <= before - 2000:
                break
            time.sleep(0.05)
        sandbox.stop_node('primary', mode='immediate')
        outcome = finish(process)
    finally:
        if not sandbox.primary.is_running():
            sandbox.start_node('primary')
    assert outcome['ok'] is False
    details = outcome['details']
    assert 'Lost the connection to PostgreSQL' in outcome['msg'] and details['connection_lost'] is True
    assert details['changed'] is True and len(details['batches']) >= 10
    committed = set(b['key'] for b in details['batches'])
    assert committed <= set(list_keys(sandbox, prefix))
    again = archive_the_rest(sandbox, db, prefix, table, before)
    assert again['changed'] is True


@pytest.mark.parametrize('delay', [0.05, 0.3, 0.7, 1.2])
def test_server_stopped_at_any_moment_of_table_archive_fails_cleanly(sandbox, db, prefix, delay):
    """Whenever the server stops (reading the table's definition, between batches, inside one), the run ends with
    an error that says so, never a traceback; and the next run leaves every row in the archives exactly once."""
    table = new_name('big')
    query(sandbox, db, "CREATE TABLE {t} (id int PRIMARY KEY, pad text); INSERT INTO {t} SELECT g, repeat('p', 200)"
                       ' FROM generate_series(1, 20000) g'.format(t=table))
    process = start('table_archive', archive_params(sandbox, db, prefix, table, where='true', batch_size=200))
    try:
        time.sleep(delay)
        sandbox.stop_node('primary', mode='immediate')
        outcome = finish(process)
    finally:
        if not sandbox.primary.is_running():
            sandbox.start_node('primary')
    if not outcome['ok']:
        assert 'PostgreSQL' in outcome['msg'], outcome['msg']
    archive_the_rest(sandbox, db, prefix, table, 20000)


def archive_the_rest(sandbox, db, prefix, table, rows):
    """Run table_archive on what is left of ``table`` (ids 1..``rows``) and check that every row is in exactly one
    batch under ``prefix`` and no marker is left; returns the run's result."""
    again = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='true', batch_size=5000))
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 0
    archived = set()
    for key in [k for k in list_keys(sandbox, prefix) if k.endswith(fmt.DATA_SUFFIX)]:
        ids = [json.loads(line)['id'] for line in gzip.decompress(get_object(sandbox, key)).splitlines()]
        assert not archived & set(ids), 'a row archived twice'
        archived |= set(ids)
    assert archived == set(range(1, rows + 1))
    assert not [k for k in list_keys(sandbox, prefix) if k.endswith(fmt.PENDING_SUFFIX)]
    return again


# --- what a DELETE reaches beyond the archived rows (review) ---------------------------------------------------------

def test_rows_a_foreign_key_would_cascade_to_are_never_deleted_unarchived(sandbox, db, prefix):
    """Deleting an order cascades to its items, which are in no archive: the batch is refused and rolled back. Once
    the items are archived, the orders archive."""
    orders, items = new_name('orders'), new_name('items')
    query(sandbox, db, 'CREATE TABLE {o} (id int PRIMARY KEY);'
                       ' CREATE TABLE {i} (id int PRIMARY KEY, order_id int REFERENCES {o} ON DELETE CASCADE);'
                       ' INSERT INTO {o} SELECT generate_series(1, 10);'
                       ' INSERT INTO {i} SELECT g, g FROM generate_series(1, 10) g'.format(o=orders, i=items))
    with pytest.raises(PgopsError) as info:
        table_archive.archive_rows(archive_params(sandbox, db, prefix, orders, where='true'))
    assert 'would also delete or change 10 row(s) of %s through ON DELETE CASCADE' % items in info.value.msg
    assert info.value.details['batches'] == [] and info.value.details['changed'] is False
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % orders) == scalar(sandbox, db, 'SELECT count(*) FROM %s' % items) == 10
    assert list_keys(sandbox, prefix) == []  # the rolled-back batch's objects are gone too
    assert table_archive.archive_rows(archive_params(sandbox, db, prefix, items, where='true'))['records_archived'] == 10
    assert table_archive.archive_rows(archive_params(sandbox, db, prefix, orders, where='true'))['records_archived'] == 10


def test_a_parent_table_archives_only_its_own_rows_not_its_inheritance_childrens(sandbox, db, prefix):
    """Rows of an INHERITS child have columns the parent's archive would not hold (review: archiving the parent lost
    the child-only column): the parent's archive holds its own rows, and the child's stay in place."""
    parent, child = new_name('parent'), new_name('child')
    query(sandbox, db, 'CREATE TABLE {p} (id int PRIMARY KEY, note text); CREATE TABLE {c} (extra text) INHERITS ({p});'
                       " INSERT INTO {p} VALUES (1, 'parent row'); INSERT INTO {c} VALUES (2, 'child row', 'only here')"
                       .format(p=parent, c=child))
    check = table_archive.archive_rows(archive_params(sandbox, db, prefix, parent, where='true'), check_mode=True)
    assert check['would_archive_records'] == 1
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, parent, where='true'))
    assert done['records_archived'] == 1
    assert query(sandbox, db, 'SELECT id, note, extra FROM %s' % child) == [(2, 'child row', 'only here')]
    assert query(sandbox, db, 'SELECT id FROM ONLY %s' % parent) == []


# --- markers: the batch's transaction decides, another cluster's are left alone (review) -----------------------------

def _committed_xid(sandbox, db):
    conn = sandbox.primary.connect(dbname=db, autocommit=False)
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT txid_current()::text')
            xid = cursor.fetchone()[0]
        conn.commit()
    finally:
        conn.close()
    return xid


def test_a_committed_batch_is_completed_even_when_rows_with_its_keys_came_back(sandbox, db, prefix):
    """Review: counting rows took a committed batch whose keys were inserted again for a rolled-back one, and deleted
    its only archive. The marker names the batch's transaction; committed means completed, whatever the rows say."""
    table = new_name('again')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY, note text);'
                       " INSERT INTO {t} SELECT g, 'new ' || g FROM generate_series(1, 3) g".format(t=table))
    key = write_archive(sandbox, prefix, db, table, [dict(id=n, note='archived %d' % n) for n in (1, 2, 3)],
                        day(2026, 2, 1), columns=[('id', 'integer'), ('note', 'text')])
    put_object(sandbox, key + fmt.PENDING_SUFFIX, json.dumps(dict(batch_id='b', started_at='x', xid=_committed_xid(sandbox, db),
                                                                  database=db)).encode())
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='false'))
    assert done['recovered'] == [dict(key=key, outcome='completed')]
    assert key in list_keys(sandbox, prefix) and key + fmt.PENDING_SUFFIX not in list_keys(sandbox, prefix)
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 3


def test_a_marker_of_another_cluster_sharing_the_prefix_is_left_alone(sandbox, db, prefix):
    """Review: two clusters with the same names and prefix, and one's recovery deleted the other's batch in flight."""
    table = new_name('shard')
    query(sandbox, db, 'CREATE TABLE {t} (id int PRIMARY KEY); INSERT INTO {t} SELECT generate_series(1, 3)'.format(t=table))
    key = write_archive(sandbox, prefix, db, table, [dict(id=n) for n in (1, 2, 3)], day(2026, 2, 1),
                        columns=[('id', 'integer')])
    put_object(sandbox, key + fmt.PENDING_SUFFIX, json.dumps(dict(batch_id='b', started_at='x', xid='999999999',
                                                                  system_identifier='1', database=db)).encode())
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='false'))
    assert done['recovered'] == [] and done['unresolved_markers'] == [key + fmt.PENDING_SUFFIX]
    assert set(list_keys(sandbox, prefix)) >= {key, key + fmt.SIDECAR_SUFFIX, key + fmt.PENDING_SUFFIX}
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 3


def test_a_conditional_write_takes_its_own_earlier_attempt_and_refuses_another_object(sandbox, prefix):
    """A PUT whose answer was lost and is retried finds its own object (412): that counts as written. Another object
    at the key is never replaced."""
    from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import ObjectExists, s3_client
    from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket
    s3 = sandbox.s3
    bucket = Bucket(s3_client(s3.endpoint_url, s3.region, s3.access_key, s3.secret_key), s3.bucket, s3.endpoint_url)
    key = '%s/conditional.bin' % prefix
    bucket.put_verified(key, b'ours', 'application/octet-stream', only_if_absent=True)
    assert bucket.put_verified(key, b'ours', 'application/octet-stream', only_if_absent=True)['size'] == 4
    with pytest.raises(ObjectExists):
        bucket.put_verified(key, b'other', 'application/octet-stream', only_if_absent=True)
    assert get_object(sandbox, key) == b'ours'
    marker = bucket.json_object('%s/conditional.json' % prefix)
    marker.write(dict(a=1), only_if_absent=True)
    marker.write(dict(a=1), only_if_absent=True)
    with pytest.raises(ObjectExists):
        marker.write(dict(a=2), only_if_absent=True)
    assert json.loads(get_object(sandbox, '%s/conditional.json' % prefix)) == dict(a=1)


def test_a_partitioned_table_round_trips_through_its_partitions(sandbox, db, prefix):
    """Partitions hold the parent's columns only, so a partitioned table archives every row of every partition."""
    table = new_name('parted')
    query(sandbox, db, "CREATE TABLE {t} (id int, at date, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
                       " CREATE TABLE {t}_a PARTITION OF {t} FOR VALUES FROM ('2025-01-01') TO ('2025-07-01');"
                       " CREATE TABLE {t}_b PARTITION OF {t} FOR VALUES FROM ('2025-07-01') TO ('2026-01-01');"
                       " INSERT INTO {t} SELECT g, date '2025-01-01' + g, 'n' || g FROM generate_series(1, 300) g"
                       .format(t=table))
    before = rows_of(sandbox, db, table)
    done = table_archive.archive_rows(archive_params(sandbox, db, prefix, table, where='true', batch_size=100))
    assert done['records_archived'] == 300 and scalar(sandbox, db, 'SELECT count(*) FROM %s' % table) == 0
    back = archive_restore.restore_archives(restore_params(sandbox, db, prefix, table, restore_all=True))
    assert back['records_restored'] == 300 and rows_of(sandbox, db, table) == before
