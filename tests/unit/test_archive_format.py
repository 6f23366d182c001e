# -*- coding: utf-8 -*-
"""Unit tests of the row archive format (keys, COPY conversion, checks) and of the pure planning and option
logic of table_archive and archive_restore (no server)."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils import archive_format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils import archive_restore, table_archive
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import Column

UTC = datetime.timezone.utc
KEY = 'archives/db/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz'


def _defaults(spec):
    return dict((name, option.get('default')) for name, option in spec.items())


def copy_fields(row):
    """Parse one row of COPY text format (bytes, no newline) into str / None values: the reference reading
    of the format (PostgreSQL docs, "COPY", "Text Format"), independent of the code under test."""
    values = []
    for field in row.split(b'\t'):
        if field == b'\\N':
            values.append(None)
            continue
        out, i = [], 0
        while i < len(field):
            char = field[i:i + 1]
            if char == b'\\':
                nxt = field[i + 1:i + 2]
                out.append({b'n': b'\n', b'r': b'\r', b't': b'\t', b'\\': b'\\'}[nxt])
                i += 2
            else:
                assert char not in (b'\n', b'\r'), 'raw line break in COPY data: %r' % row
                out.append(char)
                i += 1
        values.append(b''.join(out).decode('utf-8'))
    return values


def same_values(columns, fast, slow):
    """Fast and slow rows hold the same values (booleans may be spelled t/true, f/false: same input)."""
    spell = {'true': 't', 'false': 'f'}
    assert len(fast) == len(slow)
    for fast_row, slow_row in zip(fast, slow):
        a, b = copy_fields(fast_row), copy_fields(slow_row)
        assert len(a) == len(b) == len(columns)
        for (name, pg_type), x, y in zip(columns, a, b):
            if pg_type == 'boolean':
                x, y = spell.get(x, x), spell.get(y, y)
            assert x == y, (name, x, y)
    return True


def fast_and_slow(columns, lines, key=KEY):
    """Run the generated fast path and the slow path on each line; returns (fast rows, slow rows, lines
    that fell back to the slow path)."""
    converter = fmt.CopyConverter(columns)
    fell_back = []

    def fallback(line, number):
        fell_back.append(number)
        return converter._slow_row(key, line, number)  # pylint: disable=protected-access
    fast = converter._fast(lines, fallback)  # pylint: disable=protected-access
    slow = [converter._slow_row(key, line, n) for n, line in enumerate(lines, 1)]  # pylint: disable=protected-access
    return fast, slow, fell_back


# --- keys ----------------------------------------------------------------------------------------------

def test_batch_key_layout_and_utc_date_partition():
    at = datetime.datetime(2026, 1, 4, 5, 20, 21, tzinfo=UTC)
    assert fmt.batch_key('archives', 'db', 't', at, 1) == KEY
    assert fmt.batch_key('/archives/', 'db', 't', at, 1) == KEY
    # An aware time in another zone is partitioned by its UTC date (01:00 at +05:00 is the day before in UTC).
    east = datetime.datetime(2026, 1, 4, 1, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=5)))
    assert fmt.batch_key('p', 'db', 't', east, 7) == 'p/db/t/year=2026/month=01/day=03/t_20260103T200000Z_batch_007.jsonl.gz'
    assert fmt.batch_key('p', 'db', 't', at, 1000).endswith('/t_20260104T052021Z_batch_1000.jsonl.gz')


def test_parse_key_date_and_order_batch_1000_after_batch_999():
    at = datetime.datetime(2026, 1, 4, 5, 20, 21, tzinfo=UTC)
    keys = [fmt.batch_key('p', 'db', 't', at, n) for n in (1000, 2, 999, 1)]
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
    keys = [fmt.batch_key('p', 'db', 't', next_day, 1), fmt.batch_key('p', 'db', 't', late_run, 1),
            fmt.batch_key('p', 'db', 't', early_run, 12), fmt.batch_key('p', 'db', 't', early_run, 3)]
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
    body, count = fmt.encode_batch(rows, suffix)
    again, again_count = fmt.encode_batch(rows, suffix)
    assert count == again_count == 2 and body == again  # gzip mtime 0: same rows, same bytes
    lines = gzip.decompress(body).decode('utf-8').split('\n')
    assert lines[-1] == '' and len(lines) == 3
    first = json.loads(lines[0])
    assert first == {'id': 1, 'doc': {'a': 1}, '_archived_at': '2026-01-04T05:20:21Z', '_batch_id': 'db_t_1',
                     '_source_database': 'db', '_source_table': 't'}
    assert fmt.encode_batch([], suffix) == (gzip.compress(b'', mtime=0, compresslevel=6), 0)


def test_sidecar_document_describes_the_body():
    body = gzip.compress(b'{"id":1}\n', mtime=0)
    doc = fmt.sidecar_document(KEY, body, 1, [('id', 'bigint'), ('at', 'timestamp with time zone')],
                               dict(database='db', schema='public', table='t'), 'b1', '2026-01-04T05:20:21Z',
                               'at', '2026-01-01T00:00:00+00:00', '2026-01-02T00:00:00+00:00', ['id'])
    assert doc['sha256'] == hashlib.sha256(body).hexdigest() and doc['size_bytes'] == len(body)
    assert doc['record_count'] == 1 and doc['format'] == fmt.FORMAT and doc['key'] == KEY
    assert doc['columns'] == [{'name': 'id', 'type': 'bigint'}, {'name': 'at', 'type': 'timestamp with time zone'}]
    assert doc['key_columns'] == ['id'] and doc['date_min'] < doc['date_max']


# --- COPY conversion -----------------------------------------------------------------------------------

COLUMNS = [('id', 'bigint'), ('txt', 'text'), ('ok', 'boolean'), ('num', 'numeric'), ('doc', 'jsonb'),
           ('ints', 'integer[]'), ('texts', 'text[]'), ('grid', 'integer[]'), ('docs', 'jsonb[]'),
           ('blob', 'bytea'), ('at', 'timestamp with time zone'), ('small', 'smallint')]
NASTY = 'tab\there\nnew line\r\\back\\slash "quoted" é 中文 😀 \u2028 \x0b end'


def _line(**values):
    return json.dumps(values, ensure_ascii=False, separators=(',', ':')).encode('utf-8')


FAST_LINES = [
    # utf-8 as row_to_json writes it
    _line(id=9223372036854775807, txt=NASTY, ok=True, doc={'path': 'C:\\dir\\x', 'note': None, 'list': [1, [2, None]]},
          ints=[1, None, 3], texts=['a,b', None, 'NULL', '{x}', 'q"uote', 'back\\slash', 'tab\tnl\n', ''],
          grid=[[1, 2], [None, 4]], docs=[{'a': 1}, None, [1, 2], 'str', True], blob='\\x00ff10',
          at='2026-01-04T05:20:21.123456+00:00', small=-32768),
    # \u escapes, as Python's json.dumps writes them by default (older archivers)
    json.dumps(dict(id=-9223372036854775808, txt=NASTY, ok=False, doc=None, ints=[], texts=[None]),
               ensure_ascii=True).encode('ascii'),
    _line(id=3, txt=None, ok=None, num=None, doc=None, ints=None, texts=None, grid=None, docs=None, blob=None, at=None,
          small=None),
    _line(id=4, txt='plain', _archived_at='2026-01-04T05:20:21Z', _batch_id='b', unknown_field={'x': 1}),
]
SLOW_LINES = [
    # numbers with every digit kept (never through a float)
    b'{"id":5,"num":123456789012345678901234567890,"txt":"x"}',
    b'{"id":6,"num":1234567890.12345678901234567890,"txt":"x"}',
    b'{"id":7,"num":-0.000000000000000000000000000001}',
    # integers given as strings (older archivers) and numbers given as strings
    b'{"id":"8","small":"12","num":"NaN","ok":"true"}',
]


def test_fast_and_slow_paths_agree_and_fall_back_only_when_needed():
    fast, slow, fell_back = fast_and_slow(COLUMNS, FAST_LINES + SLOW_LINES)
    assert same_values(COLUMNS, fast, slow)
    # The typed decode takes every line except the one whose integers are written as strings.
    assert fell_back == [len(FAST_LINES) + 4]


def test_copy_values_read_back_exactly():
    converter = fmt.CopyConverter(COLUMNS)
    data = converter.convert(KEY, FAST_LINES + SLOW_LINES)
    assert data.endswith(b'\n')
    rows = [copy_fields(row) for row in data[:-1].split(b'\n')]
    assert len(rows) == len(FAST_LINES) + len(SLOW_LINES)
    names = [name for name, pg_type in COLUMNS]
    first = dict(zip(names, rows[0]))
    assert first['id'] == '9223372036854775807' and first['small'] == '-32768'
    assert first['txt'] == NASTY
    assert first['ok'] == 't'
    assert json.loads(first['doc']) == {'path': 'C:\\dir\\x', 'note': None, 'list': [1, [2, None]]}
    assert first['ints'] == '{1,NULL,3}'
    assert first['texts'] == '{"a,b",NULL,"NULL","{x}","q\\"uote","back\\\\slash","tab\tnl\n",""}'
    assert first['grid'] == '{{1,2},{NULL,4}}'
    assert first['docs'] == '{"{\\"a\\":1}",NULL,"[1,2]","\\"str\\"","true"}'
    assert first['blob'] == '\\x00ff10'
    assert first['at'] == '2026-01-04T05:20:21.123456+00:00'
    assert first['num'] is None  # a column missing from the line is SQL NULL
    second = dict(zip(names, rows[1]))
    assert second['txt'] == NASTY and second['id'] == '-9223372036854775808' and second['ok'] == 'f'
    assert second['ints'] == '{}' and second['texts'] == '{NULL}'
    assert rows[2] == ['3'] + [None] * (len(COLUMNS) - 1)
    assert rows[3][:2] == ['4', 'plain']  # metadata and unknown fields are ignored
    assert dict(zip(names, rows[4]))['num'] == '123456789012345678901234567890'
    assert dict(zip(names, rows[5]))['num'] == '1234567890.12345678901234567890'
    assert dict(zip(names, rows[6]))['num'] == '-0.000000000000000000000000000001'
    eighth = dict(zip(names, rows[7]))
    assert (eighth['id'], eighth['small'], eighth['num'], eighth['ok']) == ('8', '12', 'NaN', 'true')


def test_jsonb_with_backslashes_and_tabs_is_escaped_on_both_paths():
    columns = [('id', 'integer'), ('doc', 'jsonb')]
    lines = [b'{"id":1,"doc":{"p":"a\\\\b\\tc","u":"\\u00e9"}}', b'{"id":"2","doc":{"p":"a\\\\b\\tc"}}',
             b'{"id":3,"doc":"just a string"}', b'{"id":4,"doc":[1,{"n":null}]}']
    fast, slow, fell_back = fast_and_slow(columns, lines)
    assert fast == slow and fell_back == [2]
    values = [copy_fields(row) for row in fast]
    assert json.loads(values[0][1]) == {'p': 'a\\b\tc', 'u': 'é'}
    assert values[0][1] == '{"p":"a\\\\b\\tc","u":"\\u00e9"}'  # the JSON text itself, unchanged
    assert values[2][1] == '"just a string"' and values[3][1] == '[1,{"n":null}]'


def test_json_value_with_a_carriage_return_agrees_on_both_paths():
    fast, slow, fell_back = fast_and_slow([('id', 'integer'), ('doc', 'json')], [b'{"id":1,"doc":{"a":\r1}}'])
    assert fell_back == []
    assert fast == slow


def test_jsonb_array_elements_keep_their_numbers():
    converter = fmt.CopyConverter([('docs', 'jsonb[]')])
    row = copy_fields(converter.convert(KEY, [b'{"docs":[{"a":1.5},2.25]}'])[:-1])
    assert row == ['{"{\\"a\\":1.5}","2.25"}']


@pytest.mark.parametrize('pg_type, kind', [
    ('integer', 'int'), ('bigint', 'int'), ('smallint', 'int'), ('boolean', 'bool'), ('jsonb', 'json'),
    ('json', 'json'), ('numeric', 'number'), ('numeric(10,2)', 'number'), ('double precision', 'number'),
    ('text', 'text'), ('uuid', 'text'), ('bytea', 'text'), ('timestamp with time zone', 'text'),
    ('integer[]', 'array'), ('text[]', 'array'), ('jsonb[]', 'array'),
])
def test_type_kind(pg_type, kind):
    assert fmt.type_kind(pg_type) == kind


@pytest.mark.parametrize('pg_type', ['character varying(20)[]', 'numeric(10,2)[]', 'timestamp(3) with time zone[]'])
def test_type_kind_arrays_of_types_with_a_modifier(pg_type):
    assert fmt.type_kind(pg_type) == 'array'
    converter = fmt.CopyConverter([('a', pg_type)])
    assert converter.convert(KEY, [b'{"a":["1",null]}']) == b'{"1",NULL}\n'


def test_malformed_line_error_names_key_and_line_number():
    converter = fmt.CopyConverter([('id', 'integer'), ('txt', 'text')])
    good = b'{"id":1,"txt":"a"}'
    for bad in (b'{"id": 2, "txt": ', b'[1, 2]', b'not json', b'{"id":1}{"id":2}'):
        with pytest.raises(fmt.ArchiveFileError) as info:
            converter.convert(KEY, [good, good, bad, good])
        assert KEY in info.value.msg and 'line 3' in info.value.msg


def test_empty_line_is_an_error_naming_its_number():
    converter = fmt.CopyConverter([('id', 'integer')])
    lines = fmt.split_lines(KEY, b'{"id":1}\n\n{"id":2}\n')
    assert lines == [b'{"id":1}', b'', b'{"id":2}']
    with pytest.raises(fmt.ArchiveFileError) as info:
        converter.convert(KEY, lines)
    assert KEY in info.value.msg and 'line 2 is empty' in info.value.msg
    with pytest.raises(fmt.ArchiveFileError, match='line 1 is empty'):
        converter.convert(KEY, [b'   '])
    assert fmt.split_lines(KEY, b'') == [] and converter.convert(KEY, []) == b''
    assert fmt.split_lines(KEY, b'{"id":1}') == [b'{"id":1}']


@pytest.mark.parametrize('chunk', [1 << 20, 1, 200])
@pytest.mark.parametrize('ending', [b'\n', b''])
def test_convert_text_agrees_with_convert_line_by_line(monkeypatch, chunk, ending):
    """Whole-text decoding (per chunk, checked only where a line holds a backslash) gives the same COPY text
    as the per-line path, whatever the chunk size and with or without a final newline."""
    monkeypatch.setattr(fmt, 'CONVERT_CHUNK', chunk)
    converter = fmt.CopyConverter(COLUMNS)
    plain = [_line(id=n, txt='row %d' % n, doc={'n': n}) for n in range(10)]
    escaped = [_line(id=20, txt='a\\b'), _line(id=21, txt='tab\there', texts=['x\ny'])]
    for lines in (plain, escaped + plain + escaped, FAST_LINES + plain, FAST_LINES + SLOW_LINES + plain):
        text = b'\n'.join(lines) + ending
        assert converter.convert_text(KEY, text) == (converter.convert(KEY, lines), len(lines))
    assert converter.convert_text(KEY, b'') == (b'', 0)


def test_not_null_integers_format_directly_and_a_null_there_still_reaches_copy():
    columns = [('id', 'bigint'), ('n', 'integer'), ('t', 'text')]
    lines = [b'{"id":1,"n":2,"t":"a"}', b'{"id":2,"n":null,"t":null}']
    plain = fmt.CopyConverter(columns)
    strict = fmt.CopyConverter(columns, not_null=['id', 'n'])
    text = b'\n'.join(lines)
    # The null in the NOT NULL column comes out as \N, for COPY to refuse with its own message.
    assert strict.convert_text(KEY, text) == plain.convert_text(KEY, text) == (b'1\t2\ta\n2\t\\N\t\\N\n', 2)
    assert strict.convert_text(KEY, lines[0]) == (b'1\t2\ta\n', 1)


def test_convert_text_json_with_raw_tabs_is_checked():
    converter = fmt.CopyConverter([('id', 'integer'), ('doc', 'json')])
    lines = [b'{"id":1,"doc":{"a":\t1}}', b'{"id":2,"doc":{"b":2}}']
    data, records = converter.convert_text(KEY, b'\n'.join(lines))
    assert records == 2 and data == converter.convert(KEY, lines) and b'\\t' in data


@pytest.mark.parametrize('text, line', [
    (b'{"id":1}\n\n{"id":2}\n', 'line 2 is empty'),
    (b'{"id":1}\n{"id":2} {"id":3}\n', 'line 2'),
    (b'{"id":1}\n{"id":2}\n{"id": \n', 'line 3'),
])
def test_convert_text_refuses_what_convert_refuses(text, line):
    with pytest.raises(fmt.ArchiveFileError) as info:
        fmt.CopyConverter([('id', 'integer')]).convert_text(KEY, text)
    assert KEY in info.value.msg and line in info.value.msg


def test_line_helpers():
    text = b'{"a":"x\\y"}\n{"a":1}\n{"a":"\\\\"}\n{"a":2}'
    assert fmt.line_count(text) == 4 and fmt.line_count(text + b'\n') == 4 and fmt.line_count(b'') == 0
    assert fmt.lines_holding(text, b'\\') == [0, 2]
    assert fmt.lines_holding(b'a\nb\nc\\', b'\\') == [2] and fmt.lines_holding(b'abc', b'\\') == []
    assert fmt.first_line(text) == [b'{"a":"x\\y"}'] and fmt.first_line(b'{}') == [b'{}'] and fmt.first_line(b'') == []


def test_key_values_and_first_line_columns():
    lines = [b'{"id":1,"at":"2026-01-01T00:00:00+00:00","_batch_id":"b"}', b'{"id":22,"at":null}', b'{"at":"x"}']
    assert fmt.first_line_columns(KEY, lines) == ['id', 'at']
    assert fmt.key_values(KEY, lines, ['id', 'at']) == [['1', '22', None], ['2026-01-01T00:00:00+00:00', None, 'x']]
    with pytest.raises(fmt.ArchiveFileError, match='line 2'):
        fmt.key_values(KEY, [lines[0], b'{'], ['id'])


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


# --- archive_restore planning --------------------------------------------------------------------------

TABLE = [Column('id', 'bigint'), Column('name', 'text'), Column('amount', 'integer'), Column('added', 'text'),
         Column('total', 'integer', generated=True)]
# The archive has 'legacy' (the table lacks it), lacks 'added', and 'amount' was numeric.
ARCHIVED = [('id', 'bigint'), ('name', 'text'), ('amount', 'numeric'), ('legacy', 'text')]


def test_plan_columns_strict_refuses_each_difference():
    with pytest.raises(fmt.ArchiveFileError) as info:
        archive_restore.plan_columns('strict', ARCHIVED, TABLE)
    message = info.value.msg
    assert 'legacy' in message and 'added' in message and 'amount was archived as numeric but is integer' in message
    for archived in ([('id', 'bigint'), ('name', 'text'), ('amount', 'integer'), ('added', 'text'), ('legacy', 'text')],
                     [('id', 'bigint'), ('name', 'text'), ('amount', 'integer')],
                     [('id', 'bigint'), ('name', 'text'), ('amount', 'numeric'), ('added', 'text')]):
        with pytest.raises(fmt.ArchiveFileError):
            archive_restore.plan_columns('strict', archived, TABLE)
    same = [('id', 'bigint'), ('name', 'text'), ('amount', 'integer'), ('added', 'text')]
    plan = archive_restore.plan_columns('strict', same, TABLE)
    assert plan == dict(copy=same, casts={}, dropped=[], defaulted=[])
    # Without types (no sidecar) strict compares names only and reads values by the table's types.
    untyped = archive_restore.plan_columns('strict', [(n, None) for n, t in same], TABLE)
    assert untyped['copy'] == same


def test_plan_columns_lenient_transform_none():
    lenient = archive_restore.plan_columns('lenient', ARCHIVED, TABLE)
    assert lenient == dict(copy=[('id', 'bigint'), ('name', 'text'), ('amount', 'numeric')], casts={},
                           dropped=['legacy'], defaulted=['added'])
    transform = archive_restore.plan_columns('transform', ARCHIVED, TABLE)
    assert transform['copy'] == lenient['copy'] and transform['dropped'] == ['legacy']
    assert transform['defaulted'] == ['added']
    assert transform['casts'] == {'amount': ('numeric', 'integer')}
    none = archive_restore.plan_columns('none', ARCHIVED, TABLE)
    assert none['copy'] == ARCHIVED and none['casts'] == {} and none['dropped'] == []
    untyped = archive_restore.plan_columns('none', [('id', None), ('mystery', None)], TABLE)
    assert untyped['copy'] == [('id', 'bigint'), ('mystery', 'text')]
    # A generated column is never written, even when an archive has it.
    generated = archive_restore.plan_columns('lenient', [('id', 'bigint'), ('total', 'integer')], TABLE)
    assert generated['copy'] == [('id', 'bigint')] and generated['dropped'] == ['total']


def test_watermark_order():
    assert archive_restore.watermark_order(None) is None
    assert archive_restore.watermark_order({'last_restored_key': 'not/an/archive'}) is None
    assert archive_restore.watermark_order({'last_restored_key': KEY}) == fmt.parse_key(KEY)['order']


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
