# -*- coding: utf-8 -*-
"""Unit tests of the row archive format (keys, sidecars, checks, limits) and of the pure planning and option
logic of table_archive and archive_restore (no server)."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore, table_archive
from ansible_collections.pgops.resilience.plugins.module_utils._archive.load import plan_columns
from ansible_collections.pgops.resilience.plugins.module_utils._archive.watermark import watermark_order
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import Column

UTC = datetime.timezone.utc
KEY = 'archives/db/public/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz'
LEGACY_KEY = 'archives/db/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz'


def _defaults(spec):
    return dict((name, option.get('default')) for name, option in spec.items())


# --- keys ----------------------------------------------------------------------------------------------

def test_batch_key_layout_and_utc_date_partition():
    at = datetime.datetime(2026, 1, 4, 5, 20, 21, tzinfo=UTC)
    assert fmt.batch_key('archives', 'db', 'public', 't', at, 1) == KEY
    assert fmt.batch_key('/archives/', 'db', 'public', 't', at, 1) == KEY
    # An aware time in another zone is partitioned by its UTC date (01:00 at +05:00 is the day before in UTC).
    east = datetime.datetime(2026, 1, 4, 1, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5)))
    assert fmt.batch_key('p', 'db', 's', 't', east, 7) == 'p/db/s/t/year=2026/month=01/day=03/t_20260103T200000Z_batch_007.jsonl.gz'
    assert fmt.batch_key('p', 'db', 's', 't', at, 1000).endswith('/t_20260104T052021Z_batch_1000.jsonl.gz')


def test_parse_key_date_and_order_batch_1000_after_batch_999():
    at = datetime.datetime(2026, 1, 4, 5, 20, 21, tzinfo=UTC)
    keys = [fmt.batch_key('p', 'db', 's', 't', at, n) for n in (1000, 2, 999, 1)]
    assert sorted(keys)[-1].endswith('batch_999.jsonl.gz')  # plain string order is wrong...
    ordered = sorted(keys, key=lambda k: fmt.parse_key(k)['order'])
    assert [fmt.parse_key(k)['order'][2] for k in ordered] == [1, 2, 999, 1000]  # ...archive order is right
    parsed = fmt.parse_key(KEY)
    assert parsed['date'] == datetime.date(2026, 1, 4)
    assert parsed['order'] == ('2026-01-04', '20260104T052021Z', 1, KEY)


def test_parse_key_orders_by_date_then_run_then_batch():
    early_run = datetime.datetime(2026, 1, 4, 1, 0, 0, tzinfo=UTC)
    late_run = datetime.datetime(2026, 1, 4, 23, 0, 0, tzinfo=UTC)
    next_day = datetime.datetime(2026, 1, 5, 0, 0, 1, tzinfo=UTC)
    keys = [fmt.batch_key('p', 'db', 's', 't', next_day, 1), fmt.batch_key('p', 'db', 's', 't', late_run, 1),
            fmt.batch_key('p', 'db', 's', 't', early_run, 12), fmt.batch_key('p', 'db', 's', 't', early_run, 3)]
    ordered = sorted(keys, key=lambda k: fmt.parse_key(k)['order'])
    assert ordered == [keys[3], keys[2], keys[1], keys[0]]


@pytest.mark.parametrize('key', [
    'archives/db/t/t_20260104T052021Z_batch_001.jsonl.gz',  # no date partition
    KEY + fmt.SIDECAR_SUFFIX,
    KEY + fmt.PENDING_SUFFIX,
    'archives/db/t/.restore_watermark.json',
    'archives/db/t/year=2026/month=13/day=04/t_20260104T052021Z_batch_001.jsonl.gz',  # no month 13
    'archives/db/t/year=2026/month=02/day=30/t_20260230T052021Z_batch_001.jsonl.gz',  # no 30 February
    'archives/db/t/year=2026/month=1/day=4/t_20260104T052021Z_batch_001.jsonl.gz',  # not two digits
    'archives/db/t/year=2026/month=01/day=04/sub/t_20260104T052021Z_batch_001.jsonl',
])
def test_parse_key_rejects_non_archives(key):
    assert fmt.parse_key(key) is None


@pytest.mark.parametrize('name, segment', [
    ('audit_logs', 'audit_logs'), ('a/b', 'a%2Fb'), ('year=2026', 'year%3D2026'), ('50%', '50%25'), ('.', '%2E'),
    ('..', '%2E%2E'), ('a.b', 'a.b'), ('my table', 'my%20table'), ('é', '%C3%A9'), ('a"b\\c', 'a%22b%5Cc'),
    ('line\nbreak', 'line%0Abreak'), ('~x-y_z', '~x-y_z'),
])
def test_key_segment_encodes_everything_that_could_change_a_key(name, segment):
    assert fmt.key_segment(name) == segment
    assert '/' not in fmt.key_segment(name) and '=' not in fmt.key_segment(name)


def test_schemas_and_awkward_names_never_share_keys():
    at = datetime.datetime(2026, 1, 4, 5, 20, 21, tzinfo=UTC)
    # Two same-named tables in two schemas (issue: format 1 keys were the same for both).
    assert fmt.batch_key('p', 'db', 'a', 't', at, 1) != fmt.batch_key('p', 'db', 'b', 't', at, 1)
    names = ['a/b', 'a', 'b', 'a%2Fb', 'year=2026', '..', '.', 'x y']
    keys = set(fmt.batch_key('p', 'db', s, t, at, 1) for s in names for t in names)
    assert len(keys) == len(names) ** 2
    # A table named a/b adds no level: its key parses under its own prefix.
    key = fmt.batch_key('p', 'db', 'public', 'a/b', at, 1)
    assert fmt.parse_key(key, under=fmt.table_prefix('p', 'db', 'public', 'a/b')) is not None
    assert fmt.batch_id('db', 'a', 't', at, 7) == 'db.a.t_20260104T052021Z_007'


def test_parse_key_under_a_prefix_takes_only_that_tables_archives():
    legacy = fmt.legacy_table_prefix('archives', 'db', 't')
    assert legacy == 'archives/db/t/'
    assert fmt.parse_key(LEGACY_KEY, under=legacy)['date'] == datetime.date(2026, 1, 4)
    # A format 2 key of a schema named t lies under the format 1 prefix of table t, one level deeper: not t's.
    deeper = fmt.batch_key('archives', 'db', 't', 'other', datetime.datetime(2026, 1, 4, tzinfo=UTC), 1)
    assert deeper.startswith(legacy) and fmt.parse_key(deeper, under=legacy) is None
    assert fmt.parse_key(KEY, under=fmt.table_prefix('archives', 'db', 'public', 't')) is not None
    assert fmt.parse_key(KEY, under=fmt.table_prefix('archives', 'db', 'other', 't')) is None


def test_parse_key_accepts_other_names_under_a_date_partition():
    key = 'archives/db/t/year=2025/month=12/day=31/export-from-old-tool.jsonl.gz'
    parsed = fmt.parse_key(key)
    assert parsed['date'] == datetime.date(2025, 12, 31)
    assert parsed['order'] == ('2025-12-31', '', 0, key)
    assert parsed['order'] < fmt.parse_key(KEY)['order']


# --- writing -------------------------------------------------------------------------------------------

def test_encode_batch_appends_metadata_keeps_rows_on_one_line_and_is_deterministic():
    suffix = fmt.metadata_suffix('2026-01-04T05:20:21Z', 'db_t_1', 'db', 't')
    rows = ['{"id":1,"doc":{"a":\n1}}', '{"id":2,"doc":null}']
    body, count, size = fmt.encode_batch(rows, suffix)
    again, again_count, again_size = fmt.encode_batch(rows, suffix)
    assert count == again_count == 2 and body == again  # gzip mtime 0: same rows, same bytes
    assert size == again_size == len(gzip.decompress(body))
    lines = gzip.decompress(body).decode('utf-8').split('\n')
    assert lines[-1] == '' and len(lines) == 3
    first = json.loads(lines[0])
    assert first == {'id': 1, 'doc': {'a': 1}, '_archived_at': '2026-01-04T05:20:21Z', '_batch_id': 'db_t_1',
                     '_source_database': 'db', '_source_table': 't'}
    assert fmt.encode_batch([], suffix) == (gzip.compress(b'', mtime=0, compresslevel=6), 0, 0)


def test_sidecar_document_describes_the_body():
    body = gzip.compress(b'{"id":1}\n', mtime=0)
    doc = fmt.sidecar_document(KEY, body, 1, [('id', 'bigint'), ('at', 'timestamp with time zone')],
                               dict(database='db', schema='public', table='t'), 'b1', '2026-01-04T05:20:21Z',
                               'at', '2026-01-01T00:00:00+00:00', '2026-01-02T00:00:00+00:00', ['id'], 9)
    assert doc['sha256'] == hashlib.sha256(body).hexdigest() and doc['size_bytes'] == len(body)
    assert doc['record_count'] == 1 and doc['format'] == fmt.FORMAT and doc['key'] == KEY
    assert doc['columns'] == [{'name': 'id', 'type': 'bigint'}, {'name': 'at', 'type': 'timestamp with time zone'}]
    assert doc['key_columns'] == ['id'] and doc['date_min'] < doc['date_max'] and doc['uncompressed_bytes'] == 9
    assert doc['format'] == 'pgops.resilience.archive/2'


@pytest.mark.parametrize('source, words', [
    (dict(database='db', schema='a', table='t'), 'schema "a" (not "public")'),
    (dict(database='db', schema='public', table='u'), 'table "u" (not "t")'),
    (dict(database='other', schema='public', table='t'), 'database "other" (not "db")'),
])
def test_verify_sidecar_refuses_another_tables_archive(source, words):
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.verify_sidecar(KEY, dict(format=fmt.FORMAT, source=source), 'db', 'public', 't')
    assert KEY in info.value.msg and words in info.value.msg and 'No row' in info.value.msg


def test_verify_sidecar_accepts_both_formats_and_refuses_unknown_ones():
    source = dict(database='db', schema='public', table='t')
    for form in ('pgops.resilience.archive/1', 'pgops.resilience.archive/2', None):
        fmt.verify_sidecar(KEY, dict(format=form, source=source, key='elsewhere/copied.jsonl.gz'), 'db', 'public', 't')
    fmt.verify_sidecar(KEY, None, 'db', 'public', 't')
    with pytest.raises(fmt.ArchiveFileError, match='format .pgops.resilience.archive/3.'):
        fmt.verify_sidecar(KEY, dict(format='pgops.resilience.archive/3', source=source), 'db', 'public', 't')


@pytest.mark.parametrize('value', [-1, '12', 1.5, True, [1]])
def test_sidecar_int_refuses_what_is_not_a_count(value):
    with pytest.raises(fmt.ArchiveFileError, match='record_count'):
        fmt.sidecar_int(KEY, dict(record_count=value), 'record_count')
    assert fmt.sidecar_int(KEY, dict(record_count=3), 'record_count') == 3
    assert fmt.sidecar_int(KEY, None, 'record_count') is None and fmt.sidecar_int(KEY, {}, 'record_count') is None


# --- checks ------------------------------------------------------------------------------------------

def test_verify_body():
    body = gzip.compress(b'{"id":1}\n')
    good = dict(sha256=hashlib.sha256(body).hexdigest(), size_bytes=len(body))
    assert fmt.verify_body(KEY, body, good) is None
    assert fmt.verify_body(KEY, body, None) is None  # no sidecar: nothing to check
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.verify_body(KEY, body + b'x', good)
    assert KEY in info.value.msg and 'size' in info.value.msg
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.verify_body(KEY, body, dict(good, sha256='0' * 64))
    assert KEY in info.value.msg and 'sha256' in info.value.msg
    flipped = body[:-1] + bytes([body[-1] ^ 1])  # same size, other bytes
    with pytest.raises(fmt.ArchiveFileError, match='sha256'):
        fmt.verify_body(KEY, flipped, good)
    with pytest.raises(fmt.ArchiveFileError, match='sha256'):
        fmt.verify_body(KEY, flipped, dict(sha256=good['sha256']))  # a sidecar without a size


@pytest.mark.parametrize('cut', [1, 8, 20])
def test_decompress_truncated_gzip(cut):
    body = gzip.compress(('{"id":%d}\n' % 1 * 50).encode('utf-8'))
    assert fmt.decompress(KEY, body).startswith(b'{"id":1}')
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.decompress(KEY, body[:-cut])
    assert KEY in info.value.msg and 'truncated' in info.value.msg


def test_decompress_not_gzip():
    with pytest.raises(fmt.ArchiveFileError, match='not a complete gzip file'):
        fmt.decompress(KEY, b'{"id":1}\n')


def test_decompress_stops_at_the_limit_without_holding_the_rest():
    """A small object that expands far (the issue's 389 KB that became one 400 MB line) is refused after
    max_bytes of output, never decompressed whole."""
    bomb = gzip.compress(b'{"id":"' + b'x' * (64 << 20) + b'"}\n', compresslevel=9)
    assert len(bomb) < 200 << 10
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.decompress(KEY, bomb, max_bytes=1 << 20)
    assert KEY in info.value.msg and 'max_archive_bytes (1048576 bytes)' in info.value.msg


def test_decompress_several_members_padding_and_the_declared_size():
    one, two = gzip.compress(b'{"id":1}\n'), gzip.compress(b'{"id":2}\n')
    assert fmt.decompress(KEY, one + two) == b'{"id":1}\n{"id":2}\n'
    assert fmt.decompress(KEY, one + b'\0' * 8) == b'{"id":1}\n'
    assert fmt.decompress(KEY, one, expected_bytes=9) == b'{"id":1}\n'
    with pytest.raises(fmt.ArchiveFileError, match='decompressed size is 9 bytes, its sidecar says 10'):
        fmt.decompress(KEY, one, expected_bytes=10)
    with pytest.raises(fmt.ArchiveFileError, match='max_archive_bytes'):
        fmt.decompress(KEY, one + two, max_bytes=12)
    with pytest.raises(fmt.ArchiveFileError, match='not a complete gzip file'):
        fmt.decompress(KEY, one + b'garbage')


# --- archive_restore planning --------------------------------------------------------------------------

TABLE = [Column('id', 'bigint'), Column('name', 'text'), Column('amount', 'integer'), Column('added', 'text'),
         Column('total', 'integer', generated=True)]
# The archive has 'legacy' (the table lacks it), lacks 'added', and 'amount' was numeric.
ARCHIVED = [('id', 'bigint'), ('name', 'text'), ('amount', 'numeric'), ('legacy', 'text')]


def test_plan_columns_strict_refuses_each_difference():
    with pytest.raises(fmt.ArchiveFileError) as info:
        plan_columns('strict', ARCHIVED, TABLE)
    message = info.value.msg
    assert 'legacy' in message and 'added' in message and 'amount was archived as numeric but is integer' in message
    for archived in ([('id', 'bigint'), ('name', 'text'), ('amount', 'integer'), ('added', 'text'), ('legacy', 'text')],
                     [('id', 'bigint'), ('name', 'text'), ('amount', 'integer')],
                     [('id', 'bigint'), ('name', 'text'), ('amount', 'numeric'), ('added', 'text')]):
        with pytest.raises(fmt.ArchiveFileError):
            plan_columns('strict', archived, TABLE)
    same = [('id', 'bigint'), ('name', 'text'), ('amount', 'integer'), ('added', 'text')]
    plan = plan_columns('strict', same, TABLE)
    assert plan == dict(copy=same, casts={}, dropped=[], defaulted=[])
    # Without types (no sidecar) strict compares names only and reads values by the table's types.
    untyped = plan_columns('strict', [(n, None) for n, t in same], TABLE)
    assert untyped['copy'] == same


def test_plan_columns_lenient_transform_none():
    lenient = plan_columns('lenient', ARCHIVED, TABLE)
    assert lenient == dict(copy=[('id', 'bigint'), ('name', 'text'), ('amount', 'numeric')], casts={},
                           dropped=['legacy'], defaulted=['added'])
    transform = plan_columns('transform', ARCHIVED, TABLE)
    assert transform['copy'] == lenient['copy'] and transform['dropped'] == ['legacy']
    assert transform['defaulted'] == ['added']
    assert transform['casts'] == {'amount': ('numeric', 'integer')}
    none = plan_columns('none', ARCHIVED, TABLE)
    assert none['copy'] == ARCHIVED and none['casts'] == {} and none['dropped'] == []
    untyped = plan_columns('none', [('id', None), ('mystery', None)], TABLE)
    assert untyped['copy'] == [('id', 'bigint'), ('mystery', 'text')]
    # A generated column is never written, even when an archive has it.
    generated = plan_columns('lenient', [('id', 'bigint'), ('total', 'integer')], TABLE)
    assert generated['copy'] == [('id', 'bigint')] and generated['dropped'] == ['total']


def test_watermark_order():
    assert watermark_order(None) is None
    assert watermark_order({'last_restored_key': 'not/an/archive'}) is None
    assert watermark_order({'last_restored_key': KEY}) == fmt.parse_key(KEY)['order']


# --- options -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('value', ['2026-13-01', '01/02/2026', '2026-1-1', 'yesterday', '2026-01-01T00:00',
                                   '20260101', '2026-02-30', '2026-W01-1', '2026-001'])
def test_parse_date_errors_name_the_option(value):
    with pytest.raises(PgopsError) as info:
        archive_restore.parse_date(value, 'start_date')
    assert 'start_date' in info.value.msg and 'YYYY-MM-DD' in info.value.msg


def test_parse_date_values():
    assert archive_restore.parse_date('2026-01-31', 'end_date') == datetime.date(2026, 1, 31)
    assert archive_restore.parse_date(None, 'end_date') is None
    assert archive_restore.parse_date('', 'end_date') is None


def _archive_params(**overrides):
    params = _defaults(table_archive.argument_spec())
    params.update(table='t', bucket='b')
    params.update(overrides)
    return params


@pytest.mark.parametrize('overrides, words', [
    (dict(date_column='at'), 'date_column needs older_than'),
    (dict(older_than='90 days'), 'set date_column too'),
    (dict(before='2026-01-01'), 'set date_column too'),
    (dict(), 'Say which rows to archive'),
    (dict(where='true', batch_size=0), 'batch_size must be at least 1'),
    (dict(where='true', max_batches=0), 'max_batches must be at least 1'),
])
def test_table_archive_validate_errors(overrides, words):
    with pytest.raises(PgopsError) as info:
        table_archive.validate(_archive_params(**overrides))
    assert words in info.value.msg


@pytest.mark.parametrize('overrides', [
    dict(where='true'), dict(date_column='at', older_than='1 day'), dict(date_column='at', before='2026-01-01'),
    dict(date_column='at', before='2026-01-01', where='t.id > 3', max_batches=1, batch_size=1),
])
def test_table_archive_validate_accepts(overrides):
    assert table_archive.validate(_archive_params(**overrides)) is None


def _restore_params(**overrides):
    params = _defaults(archive_restore.argument_spec())
    params.update(database='db', table='t', bucket='b')
    params.update(overrides)
    return params


@pytest.mark.parametrize('overrides, words', [
    (dict(start_date='2026-01-01'), 'set restore_all: true'),
    (dict(end_date='2026-01-01', s3_key=KEY), 'set restore_all: true'),
    (dict(restore_all=True, start_date='2026-02-01', end_date='2026-01-01'), 'is after end_date'),
    (dict(restore_all=True, commit_frequency=0), 'commit_frequency must be at least 1'),
    (dict(restore_all=True, start_date='2026-1-1'), 'start_date'),
    (dict(restore_all=True, end_date='Jan 1'), 'end_date'),
])
def test_archive_restore_validate_errors(overrides, words):
    with pytest.raises(PgopsError) as info:
        archive_restore.validate(_restore_params(**overrides))
    assert words in info.value.msg


def test_archive_restore_validate_returns_the_dates():
    assert archive_restore.validate(_restore_params()) == (None, None)
    assert archive_restore.validate(_restore_params(restore_all=True, start_date='2026-01-01', end_date='2026-01-01')) == (
        datetime.date(2026, 1, 1), datetime.date(2026, 1, 1))


def test_decompress_stops_once_a_line_passes_max_line_bytes(monkeypatch):
    monkeypatch.setattr(fmt, 'DECOMPRESS_STEP', 1 << 10)
    text = b'{"id":1}\n' * 3 + b'{"id":"' + b'x' * 5000 + b'"}\n{"id":2}\n'
    body = gzip.compress(text)
    assert fmt.decompress(KEY, body, max_line_bytes=6000) == text
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.decompress(KEY, body, max_line_bytes=3000)
    assert 'line 4 is over max_record_bytes (3000)' in info.value.msg
