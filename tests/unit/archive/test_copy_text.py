# -*- coding: utf-8 -*-
"""Unit tests of reading row archive lines as COPY text (archive_copy): the fast and exact paths, values read back
exactly, malformed, duplicate, unknown and oversized lines refused with their line number."""

from __future__ import annotations

import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import copy_text as archive_copy
from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt

KEY = 'archives/db/public/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz'


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
    """Convert each line alone with convert_text (the fast path when the line is in canonical form) and with
    convert (the exact path); returns (convert_text rows, convert rows, numbers of the lines convert_text did not
    take the fast way)."""
    converter = archive_copy.CopyConverter(columns)
    fast, slow, fell_back = [], [], []
    for number, line in enumerate(lines, 1):
        if converter._fast_rows(line + b'\n') is None:  # pylint: disable=protected-access
            fell_back.append(number)
        data, count = converter.convert_text(key, line + b'\n')
        assert count == 1 and data.endswith(b'\n')
        fast.append(data[:-1])
        slow.append(converter.convert(key, [line], number)[:-1])
    return fast, slow, fell_back


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


METADATA = dict(_archived_at='2026-01-04T05:20:21Z', _batch_id='db.public.t_20260104T052021Z_001',
                _source_database='db', _source_table='t')


def with_metadata(line):
    """``line`` (a compact JSON object) with the metadata members appended, as table_archive appends them."""
    return line[:-1] + fmt.metadata_suffix(*METADATA.values()).encode('utf-8') + b'}'


def canonical(line):
    """``line`` as table_archive writes it: every column in COLUMNS order (null when absent), then the metadata,
    compact, non-ASCII as UTF-8 and the escapes row_to_json writes (msgspec writes the same ones)."""
    row = json.loads(line)
    ordered = dict((name, row.get(name)) for name, pg_type in COLUMNS)
    ordered.update(METADATA)
    return fmt.json_text(ordered).encode('utf-8')


def test_fast_and_slow_paths_agree_and_fall_back_only_when_needed():
    canonical_lines = [canonical(line) for line in FAST_LINES]
    fast, slow, fell_back = fast_and_slow(COLUMNS, canonical_lines)
    assert same_values(COLUMNS, fast, slow) and fell_back == []
    # Lines in another form (members missing or in another order, \u escapes, integers as strings, extra members)
    # go the exact way, and give the same values.
    fast, slow, fell_back = fast_and_slow(COLUMNS, FAST_LINES + SLOW_LINES)
    assert same_values(COLUMNS, fast, slow)
    assert fell_back == list(range(1, len(FAST_LINES + SLOW_LINES) + 1))
    # The canonical lines hold the same values as the others.
    assert same_values(COLUMNS, fast[:len(FAST_LINES)], fast_and_slow(COLUMNS, canonical_lines)[0])


def test_duplicate_member_is_refused_on_every_path():
    """Last-wins decoding would restore one of two values silently (issue 15, item 9)."""
    converter = archive_copy.CopyConverter([('id', 'integer'), ('t', 'text')])
    good = b'{"id":1,"t":"a","_archived_at":"x","_batch_id":"b","_source_database":"d","_source_table":"t"}'
    twice = b'{"id":2,"t":"a","t":"b","_archived_at":"x","_batch_id":"b","_source_database":"d","_source_table":"t"}'
    nested = b'{"id":3,"t":"a","_archived_at":"x","_batch_id":"b","_source_database":"d","_source_table":"t"}'
    assert converter.convert_text(KEY, good + b'\n' + nested + b'\n') == (b'1\ta\n3\ta\n', 2)
    for text in (twice, good + b'\n' + twice + b'\n', good + b'\n' + good.replace(b'"id":1', b'"id":1,"id":5')):
        with pytest.raises(fmt.ArchiveFileError) as info:
            converter.convert_text(KEY, text)
        assert KEY in info.value.msg and 'names member' in info.value.msg and 'twice' in info.value.msg
    with pytest.raises(fmt.ArchiveFileError, match='line 2 names member "t" twice'):
        converter.convert(KEY, [good, twice])
    # A duplicate inside a json value is the value's own business (json keeps both, jsonb the last).
    docs = archive_copy.CopyConverter([('id', 'integer'), ('doc', 'json')])
    assert docs.convert(KEY, [b'{"id":1,"doc":{"a":1,"a":2}}']) == b'1\t{"a":1,"a":2}\n'


def test_strict_refuses_members_the_archive_does_not_declare():
    """known_only (schema_migration_strategy strict): a member that is neither an archived column nor metadata is
    refused, naming the line (issue 15, item 9); otherwise it is ignored."""
    line = b'{"id":1,"t":"a","extra":5,"_archived_at":"x","_batch_id":"b","_source_database":"d","_source_table":"t"}'
    strict = archive_copy.CopyConverter([('id', 'integer'), ('t', 'text')], known_only=True)
    with pytest.raises(fmt.ArchiveFileError) as info:
        strict.convert_text(KEY, line + b'\n')
    assert 'line 1 holds member(s) "extra"' in info.value.msg
    lenient = archive_copy.CopyConverter([('id', 'integer'), ('t', 'text')])
    assert lenient.convert_text(KEY, line) == (b'1\ta\n', 1)


def test_column_names_msgspec_cannot_rename_are_read_by_the_exact_path():
    """A column named with a quote, a backslash or a control character (issue 15, item 4: every restore failed)."""
    columns = [('id', 'integer'), ('a"b', 'text'), ('c\\d', 'text'), ('e\x01f', 'integer'), ('x', 'text')]
    converter = archive_copy.CopyConverter(columns)
    row = dict(zip([name for name, pg_type in columns], [1, 'quote', 'back', 7, 'x']))
    row.update(METADATA)
    line = fmt.json_text(row).encode('utf-8')
    assert converter.convert_text(KEY, line + b'\n' + line) == (b'1\tquote\tback\t7\tx\n' * 2, 2)


def test_a_line_over_max_record_bytes_is_refused_with_its_number(monkeypatch):
    monkeypatch.setattr(archive_copy, 'CONVERT_CHUNK', 64)
    converter = archive_copy.CopyConverter([('id', 'integer'), ('t', 'text')], max_record_bytes=200)
    short = b'{"id":1,"t":"a"}'
    long_line = b'{"id":2,"t":"' + b'y' * 300 + b'"}'
    text = b'\n'.join([short] * 5 + [long_line, short]) + b'\n'
    with pytest.raises(fmt.ArchiveFileError) as info:
        converter.convert_text(KEY, text)
    assert 'line 6 is 315 bytes, over max_record_bytes (200)' in info.value.msg
    with pytest.raises(fmt.ArchiveFileError, match='line 2 is 315 bytes'):
        converter.convert(KEY, [short, long_line])
    assert converter.convert_text(KEY, b'\n'.join([short] * 20))[1] == 20


def test_copy_values_read_back_exactly():
    converter = archive_copy.CopyConverter(COLUMNS)
    data = converter.convert(KEY, FAST_LINES + SLOW_LINES)
    assert data.endswith(b'\n')
    rows = [copy_fields(row) for row in data[:-1].split(b'\n')]
    assert len(rows) == len(FAST_LINES) + len(SLOW_LINES)
    names = [name for name, pg_type in COLUMNS]
    first = dict(zip(names, rows[0]))
    assert first['id'] == '9223372036854775807' and first['small'] == '-32768'
    assert first['txt'] == NASTY
    assert first['ok'] == 'true'  # the exact path passes JSON's true through; COPY reads it as t
    assert json.loads(first['doc']) == {'path': 'C:\\dir\\x', 'note': None, 'list': [1, [2, None]]}
    assert first['ints'] == '{1,NULL,3}'
    assert first['texts'] == '{"a,b",NULL,"NULL","{x}","q\\"uote","back\\\\slash","tab\tnl\n",""}'
    assert first['grid'] == '{{1,2},{NULL,4}}'
    assert first['docs'] == '{"{\\"a\\":1}",NULL,"[1,2]","\\"str\\"","true"}'
    assert first['blob'] == '\\x00ff10'
    assert first['at'] == '2026-01-04T05:20:21.123456+00:00'
    assert first['num'] is None  # a column missing from the line is SQL NULL
    second = dict(zip(names, rows[1]))
    assert second['txt'] == NASTY and second['id'] == '-9223372036854775808' and second['ok'] == 'false'
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
    lines = [with_metadata(line) for line in (
        b'{"id":1,"doc":{"p":"a\\\\b\\tc","u":"\\u00e9"}}', b'{"id":"2","doc":{"p":"a\\\\b\\tc"}}',
        b'{"id":3,"doc":"just a string"}', b'{"id":4,"doc":[1,{"n":null}]}')]
    fast, slow, fell_back = fast_and_slow(columns, lines)
    assert fast == slow and fell_back == [2]
    values = [copy_fields(row) for row in fast]
    assert json.loads(values[0][1]) == {'p': 'a\\b\tc', 'u': 'é'}
    assert values[0][1] == '{"p":"a\\\\b\\tc","u":"\\u00e9"}'  # the JSON text itself, unchanged
    assert values[2][1] == '"just a string"' and values[3][1] == '[1,{"n":null}]'


def test_json_value_with_a_carriage_return_agrees_on_both_paths():
    fast, slow, fell_back = fast_and_slow([('id', 'integer'), ('doc', 'json')], [with_metadata(b'{"id":1,"doc":{"a":\r1}}')])
    assert fell_back == []
    assert fast == slow


def test_jsonb_array_elements_keep_their_numbers():
    converter = archive_copy.CopyConverter([('docs', 'jsonb[]')])
    row = copy_fields(converter.convert(KEY, [b'{"docs":[{"a":1.5},2.25]}'])[:-1])
    assert row == ['{"{\\"a\\":1.5}","2.25"}']


@pytest.mark.parametrize('pg_type, kind', [
    ('integer', 'int'), ('bigint', 'int'), ('smallint', 'int'), ('boolean', 'bool'), ('jsonb', 'json'),
    ('json', 'json'), ('numeric', 'number'), ('numeric(10,2)', 'number'), ('double precision', 'number'),
    ('text', 'text'), ('uuid', 'text'), ('bytea', 'text'), ('timestamp with time zone', 'text'),
    ('integer[]', 'array'), ('text[]', 'array'), ('jsonb[]', 'array'),
])
def test_type_kind(pg_type, kind):
    assert archive_copy.type_kind(pg_type) == kind


@pytest.mark.parametrize('pg_type', ['character varying(20)[]', 'numeric(10,2)[]', 'timestamp(3) with time zone[]'])
def test_type_kind_arrays_of_types_with_a_modifier(pg_type):
    assert archive_copy.type_kind(pg_type) == 'array'
    converter = archive_copy.CopyConverter([('a', pg_type)])
    assert converter.convert(KEY, [b'{"a":["1",null]}']) == b'{"1",NULL}\n'


def test_malformed_line_error_names_key_and_line_number():
    converter = archive_copy.CopyConverter([('id', 'integer'), ('txt', 'text')])
    good = b'{"id":1,"txt":"a"}'
    for bad in (b'{"id": 2, "txt": ', b'[1, 2]', b'not json', b'{"id":1}{"id":2}'):
        with pytest.raises(fmt.ArchiveFileError) as info:
            converter.convert(KEY, [good, good, bad, good])
        assert KEY in info.value.msg and 'line 3' in info.value.msg


def test_empty_line_is_an_error_naming_its_number():
    converter = archive_copy.CopyConverter([('id', 'integer')])
    lines = archive_copy.split_lines(KEY, b'{"id":1}\n\n{"id":2}\n')
    assert lines == [b'{"id":1}', b'', b'{"id":2}']
    with pytest.raises(fmt.ArchiveFileError) as info:
        converter.convert(KEY, lines)
    assert KEY in info.value.msg and 'line 2 is empty' in info.value.msg
    with pytest.raises(fmt.ArchiveFileError, match='line 1 is empty'):
        converter.convert(KEY, [b'   '])
    assert archive_copy.split_lines(KEY, b'') == [] and converter.convert(KEY, []) == b''
    assert archive_copy.split_lines(KEY, b'{"id":1}') == [b'{"id":1}']


@pytest.mark.parametrize('chunk', [1 << 20, 1, 200])
@pytest.mark.parametrize('ending', [b'\n', b''])
def test_convert_text_agrees_with_convert_line_by_line(monkeypatch, chunk, ending):
    """Whole-text decoding (per chunk, checked only where a line holds a backslash) gives the same COPY text
    as the per-line path, whatever the chunk size and with or without a final newline."""
    monkeypatch.setattr(archive_copy, 'CONVERT_CHUNK', chunk)
    converter = archive_copy.CopyConverter(COLUMNS)
    plain = [_line(id=n, txt='row %d' % n, doc={'n': n}) for n in range(10)]
    escaped = [_line(id=20, txt='a\\b'), _line(id=21, txt='tab\there', texts=['x\ny'])]
    for lines in (plain, escaped + plain + escaped, FAST_LINES + plain, FAST_LINES + SLOW_LINES + plain):
        text = b'\n'.join(lines) + ending
        assert converter.convert_text(KEY, text) == (converter.convert(KEY, lines), len(lines))
    assert converter.convert_text(KEY, b'') == (b'', 0)


def test_not_null_integers_format_directly_and_a_null_there_still_reaches_copy():
    columns = [('id', 'bigint'), ('n', 'integer'), ('t', 'text')]
    lines = [b'{"id":1,"n":2,"t":"a"}', b'{"id":2,"n":null,"t":null}']
    plain = archive_copy.CopyConverter(columns)
    strict = archive_copy.CopyConverter(columns, not_null=['id', 'n'])
    text = b'\n'.join(lines)
    # The null in the NOT NULL column comes out as \N, for COPY to refuse with its own message.
    assert strict.convert_text(KEY, text) == plain.convert_text(KEY, text) == (b'1\t2\ta\n2\t\\N\t\\N\n', 2)
    assert strict.convert_text(KEY, lines[0]) == (b'1\t2\ta\n', 1)


def test_convert_text_json_with_raw_tabs_is_checked():
    converter = archive_copy.CopyConverter([('id', 'integer'), ('doc', 'json')])
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
        archive_copy.CopyConverter([('id', 'integer')]).convert_text(KEY, text)
    assert KEY in info.value.msg and line in info.value.msg


def test_line_helpers():
    text = b'{"a":"x\\y"}\n{"a":1}\n{"a":"\\\\"}\n{"a":2}'
    assert archive_copy.line_count(text) == 4 and archive_copy.line_count(text + b'\n') == 4 and archive_copy.line_count(b'') == 0
    assert archive_copy.lines_holding(text, b'\\') == [0, 2]
    assert archive_copy.lines_holding(b'a\nb\nc\\', b'\\') == [2] and archive_copy.lines_holding(b'abc', b'\\') == []
    assert archive_copy.first_line(text) == [b'{"a":"x\\y"}'] and archive_copy.first_line(b'{}') == [b'{}'] and archive_copy.first_line(b'') == []


def test_key_values_and_first_line_columns():
    lines = [b'{"id":1,"at":"2026-01-01T00:00:00+00:00","_batch_id":"b"}', b'{"id":22,"at":null}', b'{"at":"x"}']
    assert archive_copy.first_line_columns(KEY, lines) == ['id', 'at']
    assert archive_copy.key_values(KEY, lines, ['id', 'at']) == [['1', '22', None], ['2026-01-01T00:00:00+00:00', None, 'x']]
    with pytest.raises(fmt.ArchiveFileError, match='line 2'):
        archive_copy.key_values(KEY, [lines[0], b'{'], ['id'])
