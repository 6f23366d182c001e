# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading the JSON Lines of a row archive (``docs/archive-format.md``) as PostgreSQL COPY text.

Each line becomes a line of COPY's text format (PostgreSQL docs, "COPY", "Text Format") without going
through Python floats, so ``numeric`` and ``bigint`` keep every digit.

Two paths give the same rows:

- the fast path decodes a chunk of lines in one msgspec call into a generated struct and formats it with
  generated code (a function call per value would cost more than the decoding); it is taken only for a chunk
  that msgspec writes back byte for byte (:meth:`CopyConverter.convert_text`): such lines are in the canonical
  form ``table_archive`` writes, so each holds every archived column and metadata field exactly once, in order,
  and nothing else (no duplicate key, whose value "last wins" would pick silently);
- the exact path reads one line at a time, refuses a duplicate member name, a member the archive does not
  declare (when asked) and a line over the record size limit, and names the line it cannot read.
"""

from __future__ import annotations

import decimal
import json
import re
from typing import Optional

try:
    import msgspec
except ImportError:  # reported by archive_format.require_msgspec()
    msgspec = None

from ansible_collections.pgops.resilience.plugins.module_utils._archive.format import (
    METADATA_COLUMNS, ArchiveFileError, json_text, require_msgspec)

# Type kinds that decide how a JSON value becomes COPY text.
INT_TYPES = frozenset(['smallint', 'integer', 'bigint', 'oid'])
JSON_TYPES = frozenset(['json', 'jsonb'])
NULL = b'\\N'
# Bytes of JSON lines decoded and formatted at a time by CopyConverter.convert_text (cut at a line end):
# bounds the decoded rows held at once to a few thousand.
CONVERT_CHUNK = 1 << 16
# The longest line (one row, bytes of JSON) read by default: a row of PostgreSQL can be larger (a field holds
# up to 1 GB), but such rows are rare and a bound keeps one crafted line from taking the host's memory.
DEFAULT_MAX_RECORD_BYTES = 64 << 20
# msgspec cannot rename a struct field to a name holding these; such columns are read by the exact path only.
_UNSAFE_FIELD_NAME = re.compile(r'[\\"\x00-\x1f]')


# --- lines -------------------------------------------------------------------------------------------

def split_lines(key, text):
    """The JSON lines of a decompressed object: a trailing newline is allowed, an empty line is not.

    :returns: list of bytes.
    """
    if not text:
        return []
    lines = text.split(b'\n')
    if lines[-1] == b'':
        lines.pop()
    return lines


def line_count(text):
    """Lines of ``text`` (bytes): its newlines, plus one for a last line without a newline."""
    return text.count(b'\n') + (1 if text and not text.endswith(b'\n') else 0)


def first_line(text):
    """The first line of ``text`` (bytes) without its newline: a list of it, or an empty list."""
    end = text.find(b'\n')
    return [text[:end] if end >= 0 else text] if text else []


def lines_holding(text, byte):
    """Indexes (from 0) of the lines of ``text`` (bytes) that hold ``byte`` (a one-byte bytes), in order.
    Each step is a C search (``find`` and ``count``), so a text where few lines match is scanned quickly."""
    indexes, line, last = [], 0, 0
    position = text.find(byte)
    while position >= 0:
        line += text.count(b'\n', last, position)
        indexes.append(line)
        last = text.find(b'\n', position)
        if last < 0:
            break
        position = text.find(byte, last)
    return indexes


def decode_object(key, line, number, max_record_bytes=None):
    """One line as a dict of member name -> ``msgspec.Raw`` value.

    :raises ArchiveFileError: naming ``key`` and the line ``number`` when the line is empty, longer than
        ``max_record_bytes``, not a JSON object, or names a member twice (RFC 8259 section 4 leaves such an object's
        meaning open; readers that keep the last value would restore one of two values silently).
    """
    if max_record_bytes is not None and len(line) > max_record_bytes:
        raise ArchiveFileError('%s: line %d is %d bytes, over max_record_bytes (%d). Raise max_record_bytes if rows '
                               'this large are expected. No row of this file was written.'
                               % (key, number, len(line), max_record_bytes))
    try:
        row = msgspec.json.decode(line, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        what = 'is empty' if not line.strip() else 'is not a JSON object (%s)' % exc
        raise ArchiveFileError('%s: line %d %s. No row of this file was written.' % (key, number, what))
    duplicate = _duplicate_member(line, len(row))
    if duplicate is not None:
        raise ArchiveFileError('%s: line %d names member %s twice; which value is the row\'s cannot be known. No row of '
                               'this file was written.' % (key, number, json_text(duplicate)))
    return row


def _duplicate_member(line, distinct):
    """The first member name the top-level object of ``line`` holds more than once, or ``None``.

    :param distinct: the number of distinct names (from msgspec's decode, which keeps the last of duplicates).
    """
    members = []

    def keep(pairs):
        members.append(pairs)
        return None  # nested objects are not needed, only the names of the outermost one
    json.loads(line, object_pairs_hook=keep, parse_float=_ignore, parse_int=_ignore, parse_constant=_ignore)
    outermost = members[-1]  # the hook sees inner objects first
    if len(outermost) == distinct:
        return None
    seen = set()
    for name, value in outermost:
        if name in seen:
            return name
        seen.add(name)
    return None


def _ignore(text):
    return None


def first_line_columns(key, lines):
    """Column names of an archive without a sidecar: the keys of its first row minus the metadata fields."""
    if not lines:
        return []
    row = decode_object(key, lines[0], 1)
    return [name for name in row if name not in METADATA_COLUMNS]


def key_values(key, lines, names):
    """The values of columns ``names`` in every line, as text the way PostgreSQL would print them.

    :returns: list with one list per name, each holding str or ``None`` per line.
    :raises ArchiveFileError: for a line that is not a JSON object.
    """
    columns = [[] for name in names]
    for number, line in enumerate(lines, 1):
        row = decode_object(key, line, number)
        for index, name in enumerate(names):
            raw = bytes(row[name]) if name in row else b'null'
            columns[index].append(None if raw == b'null' else
                                  msgspec.json.decode(raw) if raw[:1] == b'"' else raw.decode('utf-8'))
    return columns


def edge_rows(data, positions):
    """The fields at ``positions`` of the first and of the last row of COPY text ``data`` (bytes, rows ending
    with a newline), unescaped: a list of two lists of str or ``None`` (SQL NULL); ``None`` when ``data`` is
    empty or a field holds an escape other than the ones :func:`copy_escape` writes."""
    if not data:
        return None
    first = data[:data.find(b'\n')]
    last = data[data.rfind(b'\n', 0, len(data) - 1) + 1:-1]
    rows = []
    for line in (first, last):
        fields = line.split(b'\t')
        values = []
        for position in positions:
            field = fields[position] if position < len(fields) else None
            if field is None or field == NULL:
                values.append(None)
                continue
            if b'\\' in field:
                if not set(_COPY_UNESCAPE.findall(field)) <= set(_COPY_UNESCAPES):
                    return None
                field = _COPY_UNESCAPE.sub(lambda match: _COPY_UNESCAPES[match.group(1)], field)
            try:
                values.append(field.decode('utf-8'))
            except UnicodeDecodeError:
                return None
        rows.append(values)
    return rows


_COPY_UNESCAPE = re.compile(rb'\\(.)', re.S)
_COPY_UNESCAPES = {b'\\': b'\\', b'n': b'\n', b'r': b'\r', b't': b'\t'}


# --- values ------------------------------------------------------------------------------------------

def type_kind(pg_type):
    """How values of a PostgreSQL type (``format_type`` text) are read: int, bool, json, number, array or text."""
    if pg_type.strip().endswith('[]'):  # before the typmod is cut: character varying(20)[]
        return 'array'
    base = pg_type.split('(')[0].strip()
    if base in INT_TYPES:
        return 'int'
    if base == 'boolean':
        return 'bool'
    if base in JSON_TYPES:
        return 'json'
    if base in ('numeric', 'real', 'double precision'):
        return 'number'
    return 'text'


def copy_escape(text):
    """Escape ``text`` (str) for COPY's text format: backslash, newline, carriage return and tab."""
    return text.replace('\\', '\\\\').replace('\n', '\\n').replace('\r', '\\r').replace('\t', '\\t')


def _copy_escape_bytes(data):
    if b'\\' in data or b'\t' in data or b'\n' in data or b'\r' in data:
        return data.replace(b'\\', b'\\\\').replace(b'\n', b'\\n').replace(b'\r', b'\\r').replace(b'\t', b'\\t')
    return data


def _quoted_element(text):
    return '"' + text.replace('\\', '\\\\').replace('"', '\\"') + '"'


def _array_element(value):
    """One element of an array literal (PostgreSQL docs, "Arrays", "Array Value Input")."""
    if value is None:
        return 'NULL'
    if isinstance(value, list):
        return '{' + ','.join(_array_element(item) for item in value) + '}'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    return _quoted_element(value if isinstance(value, str) else json_text(value))


def array_literal(raw, element_json=False):
    """Turn a JSON array (bytes) into a PostgreSQL array literal (str).

    Nested JSON arrays become dimensions, except in arrays of json/jsonb (``element_json``), where each
    element is one JSON value. Numbers keep every digit (decoded as ``Decimal``).

    :raises ValueError: when ``raw`` is not a JSON array.
    """
    if element_json:
        # Each element is a JSON document: keep its text as written (numbers too), quoted for the literal.
        try:
            items = msgspec.json.decode(raw, type=list[msgspec.Raw])
        except msgspec.ValidationError:
            raise ValueError('expected a JSON array for an array column')
        return '{' + ','.join('NULL' if bytes(item) == b'null' else _quoted_element(bytes(item).decode('utf-8'))
                              for item in items) + '}'
    value = msgspec.json.Decoder(float_hook=decimal.Decimal).decode(raw)
    if not isinstance(value, list):
        raise ValueError('expected a JSON array for an array column')
    return '{' + ','.join(_array_element(item) for item in value) + '}'


def value_to_copy(raw, kind, element_json=False):
    """One JSON value (bytes) as a COPY text field (bytes): the slow path, right for every kind.

    Numbers, ``true`` and ``false`` pass through as written (every digit kept); strings are unescaped
    from JSON and escaped for COPY; objects and arrays stay JSON text, except for array columns, whose
    JSON arrays become array literals.
    """
    raw = bytes(raw).strip()
    if raw == b'null':
        return NULL
    if kind == 'json':
        return _copy_escape_bytes(raw)
    first = raw[:1]
    if first == b'"':
        return copy_escape(msgspec.json.decode(raw)).encode('utf-8')
    if first == b'[' and kind == 'array':
        return copy_escape(array_literal(raw, element_json)).encode('utf-8')
    return _copy_escape_bytes(raw)


# --- the converter -----------------------------------------------------------------------------------

class CopyConverter:
    """Turns the JSON lines of one archive into COPY text rows for a fixed list of columns.

    :param columns: list of ``(name, pg_type)``: the columns to load, in COPY's column order, with the type
        that decides how values are read (the archived type when it is known, else the table's).
    :param not_null: names of the columns that are NOT NULL in the table: their integers are formatted
        without a NULL check (a chunk that holds a null there anyway goes the checked way, and COPY refuses it).
    :param archived: the archive's column names in line order (its sidecar's ``columns``, or the first line's
        members); default the names of ``columns``. Lines in the canonical form hold exactly these, then the
        metadata fields of :data:`METADATA_COLUMNS`.
    :param known_only: refuse a line holding a member that is neither an archived column nor a metadata field
        (``schema_migration_strategy: strict``); otherwise such members are ignored.
    :param max_record_bytes: the longest line read (bytes).
    Rows missing a column give SQL NULL there; fields not in ``columns`` (metadata, dropped columns) are ignored.
    """

    def __init__(self, columns, not_null=(), archived=None, known_only=False, max_record_bytes=DEFAULT_MAX_RECORD_BYTES):
        require_msgspec()
        self.columns = list(columns)
        self.not_null = frozenset(not_null)
        self.archived = list(archived) if archived is not None else [name for name, pg_type in self.columns]
        self.known = frozenset(self.archived) | frozenset(METADATA_COLUMNS)
        self.known_only = known_only
        self.max_record_bytes = max_record_bytes
        self.kinds = [type_kind(pg_type) for name, pg_type in self.columns]
        self.element_json = [pg_type.split('[')[0].strip() in JSON_TYPES for name, pg_type in self.columns]
        self._fast = self._compile() if self._fast_path_possible() else None

    def _fast_path_possible(self):
        """The generated struct needs every column once among the archived names, each a name msgspec can rename
        a field to, and none named like a metadata field."""
        names = self.archived + list(METADATA_COLUMNS)
        copied = [name for name, pg_type in self.columns]
        return len(set(names)) == len(names) and set(copied) <= set(self.archived) and \
            not any(_UNSAFE_FIELD_NAME.search(name) for name in names)

    def _compile(self):
        """Generate the per-row code for these columns: a typed msgspec struct and formatting expressions.

        :returns: dict of functions: ``decode_lines(text)`` and ``encode_lines(rows)`` (msgspec's, through the
            struct of the archived columns and metadata fields), and three that format decoded rows into COPY
            lines ending with a newline: ``clean(rows)``, for lines that hold no backslash, tab or carriage
            return, ``checked(rows)`` for any line, and ``checked_one(row)``.
        """
        position = dict((name, index) for index, (name, pg_type) in enumerate(self.columns))
        fields, rename = [], {}
        for index, name in enumerate(self.archived + list(METADATA_COLUMNS)):
            field = 'f%d' % index
            rename[field] = name
            field_type = _FAST[self.kinds[position[name]]][0] if name in position else msgspec.Raw
            fields.append((field, field_type, msgspec.Raw(b'null') if field_type is msgspec.Raw else None))
        exprs, clean, clean_formats = [], [], []
        for index, (name, pg_type) in enumerate(self.columns):
            kind, value = self.kinds[index], 'r.f%d' % self.archived.index(name)
            expr = _FAST[kind][1].replace('V', value).replace('SLOW', 'slow%d' % index)
            exprs.append(expr)
            if kind == 'int' and name in self.not_null:
                clean_formats.append('%d')  # straight into the row's format: a None raises TypeError
                clean.append(value)
            else:
                clean_formats.append('%s')
                clean.append(_CLEAN.get(kind, _FAST[kind][1]).replace('V', value).replace('SLOW', 'slow%d' % index))
        # gc=False: the structs hold only ints, strs, bools and Raw, so they cannot be part of a cycle, and
        # ten thousand of them per archive would otherwise set off the cyclic garbage collector many times.
        row_type = msgspec.defstruct('ArchiveRow', fields, rename=rename, gc=False)
        namespace = dict(N=NULL, NULLRAW=msgspec.Raw(b'null'), esc=copy_escape, escb=_copy_escape_bytes,
                         DIGITS=frozenset(b'-0123456789'))
        for index, kind in enumerate(self.kinds):
            namespace['slow%d' % index] = _slow_value(kind, self.element_json[index])
        template = '\\t'.join(['%s'] * len(exprs))
        values = dict(line=template + '\\n', clean_line='\\t'.join(clean_formats) + '\\n', exprs=', '.join(exprs),
                      clean=', '.join(clean))
        source = ('def clean(rows):\n'
                  '    return [b"%(clean_line)s" %% (%(clean)s,) for r in rows]\n'
                  'def checked(rows):\n'
                  '    return [b"%(line)s" %% (%(exprs)s,) for r in rows]\n'
                  'def checked_one(r):\n'
                  '    return b"%(line)s" %% (%(exprs)s,)\n') % values
        exec(compile(source, '<archive row converter>', 'exec'), namespace)  # pylint: disable=exec-used
        functions = dict((name, namespace[name]) for name in ('clean', 'checked', 'checked_one'))
        functions.update(decode_lines=msgspec.json.Decoder(row_type).decode_lines,
                         encode_lines=msgspec.json.Encoder().encode_lines)
        return functions

    def convert(self, key, lines, first_number=1):
        """COPY text for ``lines`` (list of bytes), one line at a time: the exact path.

        :param first_number: the line number of ``lines[0]`` in the archive, for messages.
        :returns: bytes, one row per line, each ending with a newline.
        :raises ArchiveFileError: naming ``key`` and the line number of a line that is not a JSON object, names a
            member twice, holds a member the archive does not declare (``known_only``), is too long, or whose
            value cannot be read for its column.
        """
        rows = [self._exact_row(key, line, number) for number, line in enumerate(lines, first_number)]
        return b'\n'.join(rows) + b'\n' if rows else b''

    def convert_text(self, key, text):
        """COPY text for a whole decompressed archive (bytes), the same as :meth:`convert` of its lines.

        The text is read a chunk of lines at a time. A chunk goes the fast way when msgspec decodes it into one
        struct per line and writes those structs back as exactly the same bytes (the canonical form); then a
        line without a backslash holds no JSON escape, so none of its strings holds a character that COPY must
        escape, and its row skips those checks; only the lines that hold a backslash are checked (every line of
        a chunk with a tab or carriage return: raw JSON whitespace that only a json value keeps). Any other chunk
        goes the exact way, line by line.

        :returns: tuple ``(bytes, record count)``.
        :raises ArchiveFileError: as :meth:`convert` does, and for a line longer than ``max_record_bytes``.
        """
        data, records, start, number = [], 0, 0, 1
        while start < len(text):
            end = text.find(b'\n', start + CONVERT_CHUNK)
            end = len(text) if end < 0 else end + 1
            self._check_last_line_length(key, text, start, end, number)
            chunk = text[start:end]
            rows = self._fast_rows(chunk)
            if rows is None:
                lines = split_lines(key, chunk)
                data.append(self.convert(key, lines, number))
                count = len(lines)
            else:
                # Joined a chunk at a time: short C calls that hold the GIL the COPY thread waits for.
                data.append(b''.join(self._format(rows, chunk)))
                count = len(rows)
            records += count
            number += count
            start = end
            del rows, chunk
        return b''.join(data), records

    def _check_last_line_length(self, key, text, start, end, number):
        """Refuse the chunk ``text[start:end]`` when its last line is longer than ``max_record_bytes``: the lines
        before it end within :data:`CONVERT_CHUNK` bytes, which is less than the limit."""
        if end - start <= CONVERT_CHUNK:
            return
        line_start = text.rfind(b'\n', start, start + CONVERT_CHUNK) + 1 or start
        length = end - line_start - (1 if text[end - 1:end] == b'\n' else 0)
        if length > self.max_record_bytes:
            number += text.count(b'\n', start, line_start)
            raise ArchiveFileError('%s: line %d is %d bytes, over max_record_bytes (%d). Raise max_record_bytes if '
                                   'rows this large are expected. No row of this file was written.'
                                   % (key, number, length, self.max_record_bytes))

    def _fast_rows(self, chunk):
        """The decoded structs of ``chunk`` when it is in the canonical form, else ``None``."""
        if self._fast is None:
            return None
        try:
            rows = self._fast['decode_lines'](chunk)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        if len(rows) != line_count(chunk):
            return None
        written = self._fast['encode_lines'](rows)
        if written != chunk and written != chunk + b'\n':
            return None
        return rows

    def _format(self, rows, chunk):
        if b'\t' in chunk or b'\r' in chunk:
            return self._fast['checked'](rows)
        try:
            out = self._fast['clean'](rows)
        except TypeError:  # a null in a NOT NULL integer column: written as \N, for COPY to refuse
            return self._fast['checked'](rows)
        for index in lines_holding(chunk, b'\\'):
            out[index] = self._fast['checked_one'](rows[index])
        return out

    def _exact_row(self, key, line, number):
        row = decode_object(key, line, number, self.max_record_bytes)
        if self.known_only:
            unknown = [name for name in row if name not in self.known]
            if unknown:
                raise ArchiveFileError('%s: line %d holds member(s) %s that the archive does not declare; '
                                       'schema_migration_strategy strict refuses them (lenient ignores them). No row of '
                                       'this file was written.' % (key, number, ', '.join(json_text(n) for n in unknown)))
        fields = []
        for (name, pg_type), kind, element_json in zip(self.columns, self.kinds, self.element_json):
            raw = row.get(name)
            try:
                fields.append(NULL if raw is None else value_to_copy(raw, kind, element_json))
            except (ValueError, msgspec.DecodeError) as exc:
                raise ArchiveFileError('%s: line %d, column %s: %s. No row of this file was written.'
                                       % (key, number, json_text(name), exc))
        return b'\t'.join(fields)


def _slow_value(kind, element_json):
    def convert(raw):
        return value_to_copy(raw, kind, element_json)
    return convert


# Per kind: the msgspec field type of the fast path and the expression that formats it (V is the value).
# A value of another JSON type fails the typed decode, and that chunk goes the exact way instead.
_FAST = dict(
    int=(Optional[int], 'N if V is None else b"%d" % V'),
    bool=(Optional[bool], 'N if V is None else (b"t" if V else b"f")'),
    text=(Optional[str], 'N if V is None else (V if "\\\\" not in V and V.isprintable() else esc(V)).encode()'),
    # JSON text from row_to_json holds no raw newline; a backslash or tab needs COPY escaping.
    json=(None, 'N if V == NULLRAW else (B if b"\\\\" not in (B := bytes(V)) and b"\\t" not in B and b"\\r" not in B'
          ' else escb(B))'),
    # A JSON number is its own COPY text (every digit kept); anything else goes the slow way.
    number=(None, 'N if V == NULLRAW else (B if (B := bytes(V))[0] in DIGITS else SLOW(V))'),
    array=(None, 'SLOW(V)'),
)
# The expressions for lines without a backslash, tab or carriage return (see CopyConverter.convert_text): their
# strings hold nothing that COPY escapes, and a Raw value is written as it is (bytes formatting takes buffers).
_CLEAN = dict(
    text='N if V is None else V.encode()',
    json='N if V == NULLRAW else V',
)
if msgspec is not None:
    _FAST = {kind: (msgspec.Raw if field_type is None else field_type, expr) for kind, (field_type, expr) in _FAST.items()}
