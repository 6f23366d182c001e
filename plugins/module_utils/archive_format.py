# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The row archive format that ``table_archive`` writes and ``archive_restore`` reads.

Specified in ``docs/archive-format.md``. In short: one gzip-compressed JSON Lines object per batch at
``{prefix}/{database}/{table}/year=YYYY/month=MM/day=DD/{table}_{YYYYMMDDTHHMMSSZ}_batch_{NNN}.jsonl.gz``,
one JSON object per row, values as PostgreSQL's ``row_to_json`` renders them (PostgreSQL docs, "JSON
Functions and Operators", ``to_json``), plus the metadata fields of :data:`METADATA_COLUMNS`; beside it a
sidecar ``<key>.meta.json`` with the sha256, the size and the columns.

Reading turns each line into a line of PostgreSQL's COPY text format (PostgreSQL docs, "COPY", "Text
Format") without going through Python floats, so ``numeric`` and ``bigint`` keep every digit. The hot
loop is generated per column list (:func:`copy_converter`) because a function call per value would cost
more than the decoding itself.
"""

from __future__ import annotations

import datetime
import decimal
import gzip
import hashlib
import re
import zlib
from typing import Optional

try:
    import msgspec
except ImportError:  # reported by require_msgspec()
    msgspec = None

from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError

FORMAT = 'pgops.resilience.archive/1'
DEFAULT_PREFIX = 'archives'
METADATA_COLUMNS = ('_archived_at', '_batch_id', '_source_database', '_source_table')
SIDECAR_SUFFIX = '.meta.json'
PENDING_SUFFIX = '.pending'
DATA_SUFFIX = '.jsonl.gz'
WATERMARK_NAME = '.restore_watermark.json'
# The key's date partition and file name (the guide's layout); older archivers' names may differ after the date.
_KEY_RE = re.compile(r'/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/(?P<name>[^/]+)\.jsonl\.gz\Z')
_NAME_RE = re.compile(r'_(?P<ts>\d{8}T\d{6}Z)_batch_(?P<batch>\d+)\Z')

# Type kinds that decide how a JSON value becomes COPY text.
INT_TYPES = frozenset(['smallint', 'integer', 'bigint', 'oid'])
JSON_TYPES = frozenset(['json', 'jsonb'])
NULL = b'\\N'
# Bytes of JSON lines decoded and formatted at a time by CopyConverter.convert_text (cut at a line end):
# bounds the decoded rows held at once to a few thousand.
CONVERT_CHUNK = 1 << 16


def require_msgspec():
    """Raise :class:`PgopsError` saying how to install msgspec when it cannot be imported."""
    if msgspec is None:
        raise PgopsError('The msgspec Python library is required on the host that runs this module: pip install msgspec.')


# --- keys -------------------------------------------------------------------------------------------

def table_prefix(prefix, database, table):
    """``{prefix}/{database}/{table}/``: where every object of one table lives (str)."""
    return '%s/%s/%s/' % (prefix.strip('/'), database, table)


def batch_key(prefix, database, table, archived_at, batch_number):
    """The object key of one batch.

    :param archived_at: aware ``datetime`` of the run (its UTC date partitions the key).
    :param batch_number: int from 1; three digits at least (``batch_001``).
    :returns: str such as ``archives/db/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz``.
    """
    when = archived_at.astimezone(datetime.timezone.utc)
    return '%syear=%s/month=%s/day=%s/%s_%s_batch_%03d%s' % (
        table_prefix(prefix, database, table), when.strftime('%Y'), when.strftime('%m'), when.strftime('%d'),
        table, when.strftime('%Y%m%dT%H%M%SZ'), batch_number, DATA_SUFFIX)


def parse_key(key):
    """Date and order of an archive object key.

    :returns: dict with ``date`` (``datetime.date`` from year=/month=/day=) and ``order`` (a tuple that sorts
        keys in the order they were archived: date, run timestamp, batch number, key), or ``None`` when
        ``key`` is not a ``.jsonl.gz`` object under a year=/month=/day= partition.
    """
    match = _KEY_RE.search(key)
    if not match:
        return None
    try:
        day = datetime.date(int(match.group('y')), int(match.group('m')), int(match.group('d')))
    except ValueError:
        return None
    name = _NAME_RE.search(match.group('name'))
    stamp, batch = (name.group('ts'), int(name.group('batch'))) if name else ('', 0)
    return dict(date=day, order=(day.isoformat(), stamp, batch, key))


# --- writing -----------------------------------------------------------------------------------------

def metadata_suffix(archived_at, batch_id, database, table):
    """The metadata fields appended to each row's JSON object, as text starting with a comma (str)."""
    return ',' + ','.join('%s:%s' % (json_text(name), json_text(value)) for name, value in (
        ('_archived_at', archived_at), ('_batch_id', batch_id), ('_source_database', database), ('_source_table', table)))


def json_text(value):
    """Compact JSON for ``value`` (str, number, list, dict), non-ASCII kept as UTF-8."""
    require_msgspec()
    return msgspec.json.encode(value).decode('utf-8')


def encode_batch(json_rows, suffix):
    """gzip the JSON Lines of one batch.

    :param json_rows: iterable of str, each a JSON object from ``row_to_json`` (``{...}``).
    :param suffix: str from :func:`metadata_suffix`, inserted before each closing brace.
    :returns: tuple ``(body bytes, record count)``.
    """
    lines = []
    for row in json_rows:
        if '\n' in row or '\r' in row:
            # Only a json (not jsonb) column's verbatim whitespace can hold a line break (JSON strings
            # escape theirs); a space means the same to JSON and keeps the row on one line.
            row = row.replace('\r\n', ' ').replace('\n', ' ').replace('\r', ' ')
        lines.append(row[:-1] + suffix + '}')
    text = '\n'.join(lines) + '\n' if lines else ''
    # mtime=0: the same rows give the same bytes, so a re-upload has the same checksum.
    return gzip.compress(text.encode('utf-8'), compresslevel=6, mtime=0), len(lines)


def sha256_hex(body):
    """Hex sha256 of ``body`` (bytes)."""
    return hashlib.sha256(body).hexdigest()


def sidecar_document(key, body, record_count, columns, source, batch_id, archived_at, date_column=None,
                     date_min=None, date_max=None, key_columns=()):
    """The ``<key>.meta.json`` document of one batch (see docs/archive-format.md).

    :param columns: list of ``(name, type)`` with the PostgreSQL type as ``format_type`` writes it.
    :param source: dict with ``database``, ``schema``, ``table``.
    :returns: dict.
    """
    return dict(format=FORMAT, key=key, sha256=sha256_hex(body), size_bytes=len(body), record_count=record_count,
                columns=[dict(name=name, type=type_) for name, type_ in columns], key_columns=list(key_columns),
                date_column=date_column, date_min=date_min, date_max=date_max, batch_id=batch_id,
                archived_at=archived_at, source=source)


# --- reading -----------------------------------------------------------------------------------------

class ArchiveFileError(PgopsError):
    """One archive object cannot be restored (checksum, gzip, JSON, columns); the others go on."""


def verify_body(key, body, sidecar):
    """Check ``body`` against its sidecar before any row is written.

    :raises ArchiveFileError: when the size or the sha256 differ.
    """
    if sidecar is None:
        return
    if sidecar.get('size_bytes') is not None and int(sidecar['size_bytes']) != len(body):
        raise ArchiveFileError('%s: size is %d bytes, its sidecar says %s; the object is damaged or was replaced.'
                               % (key, len(body), sidecar['size_bytes']))
    if sidecar.get('sha256') and sidecar['sha256'] != sha256_hex(body):
        raise ArchiveFileError('%s: sha256 differs from its sidecar (%s); the object is damaged or was replaced. '
                               'No row of it was written.' % (key, sidecar['sha256']))


def decompress(key, body):
    """gunzip ``body``; a truncated or corrupt object raises :class:`ArchiveFileError`."""
    try:
        # One gzip member, as encode_batch writes it, in one zlib call (it checks the CRC and the size, and
        # releases the GIL, which the thread that runs COPY needs back quickly: python-isal's twice faster
        # gunzip keeps it and made the restore slower); anything else (several members, trailing bytes,
        # damage) is left to gzip.
        inflate = zlib.decompressobj(wbits=31)
        text = inflate.decompress(body)
        if inflate.eof and not inflate.unused_data:
            return text
    except zlib.error:
        pass
    try:
        return gzip.decompress(body)
    except (EOFError, OSError, zlib.error) as exc:
        raise ArchiveFileError('%s is not a complete gzip file (%s); it may be truncated. No row of it was written.'
                               % (key, exc))


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


def first_line_columns(key, lines):
    """Column names of an archive without a sidecar: the keys of its first row minus the metadata fields."""
    if not lines:
        return []
    row = _decode_object(key, lines[0], 1)
    return [name for name in row if name not in METADATA_COLUMNS]


def key_values(key, lines, names):
    """The values of columns ``names`` in every line, as text the way PostgreSQL would print them.

    :returns: list with one list per name, each holding str or ``None`` per line.
    :raises ArchiveFileError: for a line that is not a JSON object.
    """
    columns = [[] for name in names]
    for number, line in enumerate(lines, 1):
        row = _decode_object(key, line, number)
        for index, name in enumerate(names):
            raw = bytes(row[name]) if name in row else b'null'
            columns[index].append(None if raw == b'null' else
                                  msgspec.json.decode(raw) if raw[:1] == b'"' else raw.decode('utf-8'))
    return columns


def _decode_object(key, line, number):
    try:
        row = msgspec.json.decode(line, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        what = 'is empty' if not line.strip() else 'is not a JSON object (%s)' % exc
        raise ArchiveFileError('%s: line %d %s. No row of this file was written.' % (key, number, what))
    return row


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


class CopyConverter:
    """Turns the JSON lines of one archive into COPY text rows for a fixed list of columns.

    :param columns: list of ``(name, pg_type)``: the columns to load, in COPY's column order, with the type
        that decides how values are read (the archived type when it is known, else the table's).
    :param not_null: names of the columns that are NOT NULL in the table: their integers are formatted
        without a NULL check (a chunk that holds a null there anyway goes the checked way, and COPY refuses it).
    Rows missing a column give SQL NULL there; fields not in ``columns`` (metadata, dropped columns) are ignored.
    """

    def __init__(self, columns, not_null=()):
        require_msgspec()
        self.columns = list(columns)
        self.not_null = frozenset(not_null)
        self.kinds = [type_kind(pg_type) for name, pg_type in self.columns]
        self.element_json = [pg_type.split('[')[0].strip() in JSON_TYPES for name, pg_type in self.columns]
        self._fast, self._decode_lines, self._clean, self._checked, self._checked_one = self._compile()

    def _compile(self):
        """Generate the per-row code for these columns: a typed msgspec struct and formatting expressions.

        :returns: tuple of functions: ``convert(lines, fallback)`` (per line, checked, rows without newline),
            ``decode_lines(text)`` (msgspec's, the structs of newline-delimited JSON; raises on the first
            value the typed decode refuses), and three that format decoded rows into COPY lines ending with a
            newline: ``clean(rows)``, for lines that hold no backslash, tab or carriage return,
            ``checked(rows)`` for any line, and ``checked_one(row)``.
        """
        fields, exprs, clean, clean_formats, rename = [], [], [], [], {}
        for index, kind in enumerate(self.kinds):
            name = 'f%d' % index
            rename[name] = self.columns[index][0]
            field_type, expr = _FAST[kind]
            fields.append((name, field_type, msgspec.Raw(b'null') if field_type is msgspec.Raw else None))
            exprs.append(expr.replace('V', 'r.' + name).replace('SLOW', 'slow%d' % index))
            if kind == 'int' and self.columns[index][0] in self.not_null:
                clean_formats.append('%d')  # straight into the row's format: a None raises TypeError
                clean.append('r.' + name)
            else:
                clean_formats.append('%s')
                clean.append(_CLEAN.get(kind, expr).replace('V', 'r.' + name).replace('SLOW', 'slow%d' % index))
        # gc=False: the structs hold only ints, strs, bools and Raw, so they cannot be part of a cycle, and
        # ten thousand of them per archive would otherwise set off the cyclic garbage collector many times.
        row_type = msgspec.defstruct('ArchiveRow', fields, rename=rename, gc=False)
        decoder = msgspec.json.Decoder(row_type)
        namespace = dict(decode=decoder.decode, errors=(msgspec.DecodeError, msgspec.ValidationError),
                         N=NULL, NULLRAW=msgspec.Raw(b'null'), esc=copy_escape, escb=_copy_escape_bytes,
                         DIGITS=frozenset(b'-0123456789'))
        for index, kind in enumerate(self.kinds):
            namespace['slow%d' % index] = _slow_value(kind, self.element_json[index])
        template = '\\t'.join(['%s'] * len(exprs))
        values = dict(row=template, line=template + '\\n', clean_line='\\t'.join(clean_formats) + '\\n',
                      exprs=', '.join(exprs), clean=', '.join(clean))
        source = ('def convert(lines, fallback):\n'
                  '    out = []\n'
                  '    append = out.append\n'
                  '    for line in lines:\n'
                  '        try:\n'
                  '            r = decode(line)\n'
                  '        except errors:\n'
                  '            append(fallback(line, len(out) + 1))\n'
                  '            continue\n'
                  '        append(b"%(row)s" %% (%(exprs)s,))\n'
                  '    return out\n'
                  'def clean(rows):\n'
                  '    return [b"%(clean_line)s" %% (%(clean)s,) for r in rows]\n'
                  'def checked(rows):\n'
                  '    return [b"%(line)s" %% (%(exprs)s,) for r in rows]\n'
                  'def checked_one(r):\n'
                  '    return b"%(line)s" %% (%(exprs)s,)\n') % values
        exec(compile(source, '<archive row converter>', 'exec'), namespace)  # pylint: disable=exec-used
        return (namespace['convert'], decoder.decode_lines) + tuple(namespace[name] for name in ('clean', 'checked', 'checked_one'))

    def convert(self, key, lines):
        """COPY text for ``lines`` (list of bytes).

        :returns: bytes, one row per line, each ending with a newline.
        :raises ArchiveFileError: naming ``key`` and the line number of a line that is not a JSON object or
            whose value cannot be read for its column.
        """
        def fallback(line, number):
            return self._slow_row(key, line, number)
        rows = self._fast(lines, fallback)
        return b'\n'.join(rows) + b'\n' if rows else b''

    def convert_text(self, key, text):
        """COPY text for a whole decompressed archive (bytes), the same as :meth:`convert` of its lines.

        The text is decoded a chunk of lines at a time by msgspec's ``decode_lines`` (one call per chunk
        instead of one per line). A line without a backslash holds no JSON escape, so none of its strings
        holds a character that COPY must escape, and its row skips those checks; only the lines that hold
        a backslash are checked (every line of a chunk with a tab or carriage return: raw JSON whitespace
        that only a json value keeps). A chunk that does not decode into exactly one row per line (a line
        that is not a JSON object of the expected types, an empty line, two objects on one line) sends the
        whole archive down the per-line path, which reads what it can and names the line it cannot.

        :returns: tuple ``(bytes, record count)``.
        :raises ArchiveFileError: as :meth:`convert` does.
        """
        data, records, start = [], 0, 0
        while start < len(text):
            end = text.find(b'\n', start + CONVERT_CHUNK)
            end = len(text) if end < 0 else end + 1
            chunk = text[start:end]
            try:
                rows = self._decode_lines(chunk)
            except (msgspec.DecodeError, msgspec.ValidationError):
                rows = None
            if rows is None or len(rows) != line_count(chunk):
                lines = split_lines(key, text)
                return self.convert(key, lines), len(lines)
            # Joined a chunk at a time: short C calls that hold the GIL the COPY thread waits for.
            data.append(b''.join(self._format(rows, chunk)))
            records += len(rows)
            start = end
            del rows, chunk
        return b''.join(data), records

    def _format(self, rows, chunk):
        if b'\t' in chunk or b'\r' in chunk:
            return self._checked(rows)
        try:
            out = self._clean(rows)
        except TypeError:  # a null in a NOT NULL integer column: written as \N, for COPY to refuse
            return self._checked(rows)
        for index in lines_holding(chunk, b'\\'):
            out[index] = self._checked_one(rows[index])
        return out

    def _slow_row(self, key, line, number):
        row = _decode_object(key, line, number)
        fields = []
        for (name, pg_type), kind, element_json in zip(self.columns, self.kinds, self.element_json):
            raw = row.get(name)
            try:
                fields.append(NULL if raw is None else value_to_copy(raw, kind, element_json))
            except (ValueError, msgspec.DecodeError) as exc:
                raise ArchiveFileError('%s: line %d, column %s: %s. No row of this file was written.'
                                       % (key, number, name, exc))
        return b'\t'.join(fields)


def _slow_value(kind, element_json):
    def convert(raw):
        return value_to_copy(raw, kind, element_json)
    return convert


# Per kind: the msgspec field type of the fast path and the expression that formats it (V is the value).
# A value of another JSON type fails the typed decode, and that line goes through the slow path instead.
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
