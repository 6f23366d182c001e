# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The row archive format that ``table_archive`` writes and ``archive_restore`` reads: keys, sidecars, batches.

Specified in ``docs/archive-format.md``. In short (format 2): one gzip-compressed JSON Lines object per batch at
``{prefix}/{database}/{schema}/{table}/year=YYYY/month=MM/day=DD/{table}_{YYYYMMDDTHHMMSSZ}_batch_{NNN}.jsonl.gz``
(each name percent-encoded, :func:`key_segment`), one JSON object per row, values as PostgreSQL's
``row_to_json`` renders them (PostgreSQL docs, "JSON Functions and Operators", ``to_json``), plus the metadata
fields of :data:`METADATA_COLUMNS`; beside it a sidecar ``<key>.meta.json`` with the sha256, the sizes, the record
count, the source and the columns. Format 1 keys, ``{prefix}/{database}/{table}/...`` without the schema, are still
read (:func:`legacy_table_prefix`); which table they hold is then told by their sidecar alone.

Reading the lines as COPY text is :mod:`.copy_text`'s.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import re
import urllib.parse
import zlib

try:
    import msgspec
except ImportError:  # reported by require_msgspec()
    msgspec = None

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library

FORMAT = 'pgops.resilience.archive/2'
# Sidecar formats this reader knows; format 1 differs only in its keys (no schema) and in lacking uncompressed_bytes.
READABLE_FORMATS = ('pgops.resilience.archive/1', FORMAT)
DEFAULT_PREFIX = 'archives'
METADATA_COLUMNS = ('_archived_at', '_batch_id', '_source_database', '_source_table')
SIDECAR_SUFFIX = '.meta.json'
PENDING_SUFFIX = '.pending'
DATA_SUFFIX = '.jsonl.gz'
WATERMARK_NAME = '.restore_watermark.json'
# The largest decompressed archive read by default (bytes): a default batch of 10,000 rows is a few MB; the
# bound keeps one crafted object (a small gzip that expands without end) from taking the host's memory.
DEFAULT_MAX_ARCHIVE_BYTES = 256 << 20
# Decompressed bytes asked of zlib per call (see decompress).
DECOMPRESS_STEP = 16 << 20
# The key's date partition and file name (the guide's layout); older archivers' names may differ after the date.
_KEY_RE = re.compile(r'/year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/(?P<name>[^/]+)\.jsonl\.gz\Z')
# What follows a table's prefix in a batch key: nothing else may come between (another table's objects may live
# below a format 1 prefix, such as a schema named like the table).
_RELATIVE_KEY_RE = re.compile(r'year=\d{4}/month=\d{2}/day=\d{2}/[^/]+\.jsonl\.gz\Z')
_NAME_RE = re.compile(r'_(?P<ts>\d{8}T\d{6}Z)_batch_(?P<batch>\d+)\Z')


def require_msgspec():
    """Raise :class:`PgopsError` saying how to install msgspec when it cannot be imported."""
    require_library('msgspec', msgspec is not None, 'pip install msgspec')


# --- keys -------------------------------------------------------------------------------------------

def key_segment(name):
    """``name`` (a database, schema or table name as the catalog stores it) as one segment of an object key.

    Every byte of its UTF-8 form outside RFC 3986's unreserved characters (``A-Z a-z 0-9 - . _ ~``) is
    percent-encoded (``%2F`` for ``/``, ``%3D`` for ``=``, ``%25`` for ``%``), and a name made of dots only is
    encoded whole (``%2E%2E``), so that no name can add a level to a key, look like a date partition, or be taken
    for ``.`` or ``..`` by a tool. ``audit_logs`` stays ``audit_logs``.
    """
    text = urllib.parse.quote(name, safe='')
    if text.strip('.') == '':
        text = text.replace('.', '%2E')
    return text


def table_prefix(prefix, database, schema, table):
    """``{prefix}/{database}/{schema}/{table}/``, each name a :func:`key_segment`: where every object of one table
    lives in format 2 (str)."""
    return '%s/%s/%s/%s/' % (prefix.strip('/'), key_segment(database), key_segment(schema), key_segment(table))


def legacy_table_prefix(prefix, database, table):
    """``{prefix}/{database}/{table}/`` with the names as they are: format 1's prefix, shared by the same-named
    tables of every schema. Objects under it are taken only when their sidecar names the table and schema."""
    return '%s/%s/%s/' % (prefix.strip('/'), database, table)


def batch_key(prefix, database, schema, table, archived_at, batch_number):
    """The object key of one batch (format 2).

    :param archived_at: aware ``datetime`` of the run (its UTC date partitions the key).
    :param batch_number: int from 1; three digits at least (``batch_001``).
    :returns: str such as ``archives/db/public/t/year=2026/month=01/day=04/t_20260104T052021Z_batch_001.jsonl.gz``.
    """
    when = archived_at.astimezone(datetime.timezone.utc)
    return '%syear=%s/month=%s/day=%s/%s_%s_batch_%03d%s' % (
        table_prefix(prefix, database, schema, table), when.strftime('%Y'), when.strftime('%m'), when.strftime('%d'),
        key_segment(table), when.strftime('%Y%m%dT%H%M%SZ'), batch_number, DATA_SUFFIX)


def batch_id(database, schema, table, archived_at, batch_number):
    """The ``_batch_id`` of a batch: ``{database}.{schema}.{table}_{YYYYMMDDTHHMMSSZ}_{NNN}`` (str)."""
    when = archived_at.astimezone(datetime.timezone.utc)
    return '%s.%s.%s_%s_%03d' % (database, schema, table, when.strftime('%Y%m%dT%H%M%SZ'), batch_number)


def parse_key(key, under=None):
    """Date and order of an archive object key.

    :param under: a table's prefix (:func:`table_prefix` or :func:`legacy_table_prefix`): then only a key whose
        rest is exactly ``year=YYYY/month=MM/day=DD/<name>.jsonl.gz`` is an archive of that table.
    :returns: dict with ``date`` (``datetime.date`` from year=/month=/day=) and ``order`` (a tuple that sorts
        keys in the order they were archived: date, run timestamp, batch number, key), or ``None`` when
        ``key`` is not a ``.jsonl.gz`` object under a year=/month=/day= partition.
    """
    if under is not None and not (key.startswith(under) and _RELATIVE_KEY_RE.match(key, len(under))):
        return None
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
    :returns: tuple ``(body bytes, record count, uncompressed size in bytes)``.
    """
    lines = []
    for row in json_rows:
        if '\n' in row or '\r' in row:
            # Only a json (not jsonb) column's verbatim whitespace can hold a line break (JSON strings
            # escape theirs); a space means the same to JSON and keeps the row on one line.
            row = row.replace('\r\n', ' ').replace('\n', ' ').replace('\r', ' ')
        lines.append(row[:-1] + suffix + '}')
    text = ('\n'.join(lines) + '\n' if lines else '').encode('utf-8')
    # mtime=0: the same rows give the same bytes, so a re-upload has the same checksum.
    return gzip.compress(text, compresslevel=6, mtime=0), len(lines), len(text)


def sha256_hex(body):
    """Hex sha256 of ``body`` (bytes)."""
    return hashlib.sha256(body).hexdigest()


def sidecar_document(key, body, record_count, columns, source, batch_id, archived_at, date_column=None,
                     date_min=None, date_max=None, key_columns=(), uncompressed_bytes=None):
    """The ``<key>.meta.json`` document of one batch (see docs/archive-format.md).

    :param columns: list of ``(name, type)`` with the PostgreSQL type as ``format_type`` writes it.
    :param source: dict with ``database``, ``schema``, ``table``.
    :param uncompressed_bytes: int, the size of the JSON Lines before gzip.
    :returns: dict.
    """
    return dict(format=FORMAT, key=key, sha256=sha256_hex(body), size_bytes=len(body), record_count=record_count,
                uncompressed_bytes=uncompressed_bytes, columns=[dict(name=name, type=type_) for name, type_ in columns],
                key_columns=list(key_columns), date_column=date_column, date_min=date_min, date_max=date_max,
                batch_id=batch_id, archived_at=archived_at, source=source)


# --- reading -----------------------------------------------------------------------------------------

class ArchiveFileError(PgopsError):
    """One archive object cannot be restored (checksum, gzip, JSON, columns); the others go on."""


def verify_sidecar(key, sidecar, database, schema, table):
    """Check that a sidecar can be read and describes this key of this table, before anything else is read.

    :param database: str, the key's database part (the source database).
    :param schema: str, the schema the archives are read for (the source schema).
    :param table: str, the table name.
    :raises ArchiveFileError: for a format this reader does not know, or a ``source`` naming another database,
        schema or table (format 1 keys do not hold the schema, so same-named tables of two schemas share them). The
        sidecar's ``key`` is not compared: archives copied to another prefix or bucket still restore.
    """
    if sidecar is None:
        return
    if sidecar.get('format') not in READABLE_FORMATS + (None,):
        raise ArchiveFileError('%s: its sidecar is in format %r, which this version does not read (it reads %s). Use '
                               'a newer pgops.resilience.' % (key, sidecar.get('format'), ', '.join(READABLE_FORMATS)))
    source = sidecar.get('source') or {}
    wanted = dict(database=database, schema=schema, table=table)
    differs = ['%s %s (not %s)' % (part, json_text(source.get(part)), json_text(wanted[part]))
               for part in ('database', 'schema', 'table') if part in source and source[part] != wanted[part]]
    if differs:
        raise ArchiveFileError('%s: archived from another table: its sidecar names %s. No row of it was written; '
                               'restore it with that schema and table (source_schema), or move it.'
                               % (key, ', '.join(differs)))


def sidecar_int(key, sidecar, name):
    """The non-negative integer member ``name`` of a sidecar, or ``None`` when the sidecar or member is absent.

    :raises ArchiveFileError: when the member is not a non-negative integer.
    """
    value = (sidecar or {}).get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArchiveFileError('%s: its sidecar\'s %s is %s, not a count of bytes or rows. No row of it was written.'
                               % (key, name, json_text(value)))
    return value


def verify_body(key, body, sidecar):
    """Check ``body`` against its sidecar before any row is written.

    :raises ArchiveFileError: when the size or the sha256 differ.
    """
    if sidecar is None:
        return
    size = sidecar_int(key, sidecar, 'size_bytes')
    if size is not None and size != len(body):
        raise ArchiveFileError('%s: size is %d bytes, its sidecar says %s; the object is damaged or was replaced.'
                               % (key, len(body), size))
    if sidecar.get('sha256') and sidecar['sha256'] != sha256_hex(body):
        raise ArchiveFileError('%s: sha256 differs from its sidecar (%s); the object is damaged or was replaced. '
                               'No row of it was written.' % (key, sidecar['sha256']))


class _LineWatch:
    """Follows the length of the line being decompressed, piece after piece (see :func:`decompress`)."""

    def __init__(self, key, limit):
        self.key, self.limit, self.length, self.number = key, limit, 0, 1

    def feed(self, piece):
        """Take the next decompressed ``piece`` (bytes).

        :raises ArchiveFileError: when the current line has grown past the limit.
        """
        if self.limit is None:
            return
        first, last = piece.find(b'\n'), piece.rfind(b'\n')
        if first < 0:
            self.length += len(piece)
        elif self.length + first > self.limit:
            self.length += first
        else:
            self.number += piece.count(b'\n')
            self.length = len(piece) - last - 1
        if self.length > self.limit:
            raise ArchiveFileError('%s: line %d is over max_record_bytes (%d) (at least %d bytes). Raise '
                                   'max_record_bytes if rows this large are expected. No row of it was written.'
                                   % (self.key, self.number, self.limit, self.length))


def decompress(key, body, max_bytes=DEFAULT_MAX_ARCHIVE_BYTES, expected_bytes=None, max_line_bytes=None):
    """gunzip ``body`` (one gzip member or several, RFC 1952), never holding more than ``max_bytes`` of output.

    :param max_bytes: int, the most decompressed bytes read (``max_archive_bytes``).
    :param expected_bytes: int or None, the size the sidecar declares (``uncompressed_bytes``).
    :param max_line_bytes: int or None (``max_record_bytes``): stop as soon as a line grows past it, rather than
        decompress it whole (lines shorter than :data:`DECOMPRESS_STEP` are left to the reader to check).
    :returns: bytes.
    :raises ArchiveFileError: for a truncated or corrupt object, one that expands beyond ``max_bytes``, one whose
        size differs from ``expected_bytes``, or a line longer than ``max_line_bytes``.
    """
    pieces, total, data = [], 0, body
    line = _LineWatch(key, max_line_bytes)
    while True:
        # zlib calls of at most DECOMPRESS_STEP bytes of output each: a batch of a usual size takes one (zlib checks
        # the CRC and the size, and releases the GIL, which the thread that runs COPY needs back quickly; python-isal's
        # twice faster gunzip keeps it and made the restore slower), and an object that expands without end is
        # dropped after max_bytes, holding no more than that.
        inflate = zlib.decompressobj(wbits=31)
        while True:
            wanted = min(DECOMPRESS_STEP, max_bytes + 1 - total)
            try:
                piece = inflate.decompress(data, wanted)
            except zlib.error as exc:
                raise ArchiveFileError('%s is not a complete gzip file (%s); it may be truncated. No row of it was '
                                       'written.' % (key, exc))
            total += len(piece)
            pieces.append(piece)
            line.feed(piece)
            if total > max_bytes:
                del pieces
                raise ArchiveFileError('%s expands to more than max_archive_bytes (%d bytes) (%d compressed). Raise '
                                       'max_archive_bytes if batches this large are expected. No row of it was '
                                       'written.' % (key, max_bytes, len(body)))
            data = inflate.unconsumed_tail
            # Input used up and the output not full: nothing is pending in zlib either.
            if inflate.eof or (not data and len(piece) < wanted):
                break
        if not inflate.eof:
            raise ArchiveFileError('%s is not a complete gzip file (it ends inside the compressed data); it may be '
                                   'truncated. No row of it was written.' % key)
        data = inflate.unused_data
        if not data.strip(b'\0'):  # trailing zero bytes are padding (as gzip tolerates them)
            break
    text = pieces[0] if len(pieces) == 1 else b''.join(pieces)
    if expected_bytes is not None and len(text) != expected_bytes:
        raise ArchiveFileError('%s: decompressed size is %d bytes, its sidecar says %d; the object is damaged or was '
                               'replaced. No row of it was written.' % (key, len(text), expected_bytes))
    return text
