# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The restore watermark of ``archive_restore``: where it lives, how it is read, and the background writer that
puts its S3 copy after durable commits only (see ``docs/archive-format.md``, "Restore watermark")."""

from __future__ import annotations

import threading
import time

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import trusted_table_exists
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import display_name

try:
    from psycopg2 import sql
except ImportError:  # reported by connect()
    sql = None

WATERMARK_TABLE = 'restore_watermarks'


def watermark_order(document):
    """The archive order (see :func:`fmt.parse_key`) a watermark document points at, or ``None``."""
    key = (document or {}).get('last_restored_key')
    parsed = fmt.parse_key(key) if key else None
    return parsed['order'] if parsed else None


class Watermark:
    """The restore watermark of one table, in S3 (``{prefix}/{database}/{schema}/{table}/.restore_watermark.json``,
    or ``.restore_watermark.{target schema}.json`` when restoring into another schema than the archives'), in the
    database (table ``restore_watermarks`` in the restored table's schema), or both.

    The database copy is written inside the transaction that commits the files it covers, so it is exact;
    the S3 copy is written after a durable commit by :class:`WatermarkWriter` and may trail by about a
    second of work after a crash. With ``both`` the database copy is read first. A watermark written by an
    earlier version at the format 1 location is read when there is none at the new one and it names the same
    schema; the next one is written at the new location.

    :param source: :class:`ArchiveSource`.
    """

    def __init__(self, params, bucket, relation, source):
        self.params = params
        self.storage = params['storage_type']
        name = fmt.WATERMARK_NAME if relation.schema == source.schema else \
            '.restore_watermark.%s.json' % fmt.key_segment(relation.schema)
        self.s3 = bucket.json_object(source.prefix + name)
        self.legacy_s3 = bucket.json_object(source.legacy_prefix + fmt.WATERMARK_NAME)
        self.relation = relation
        self.ident = sql.Identifier(relation.schema, WATERMARK_TABLE)
        self.display = display_name(relation.schema, WATERMARK_TABLE)
        self.row_key = [params['bucket'], params['prefix'], params['database'], relation.schema, relation.name]

    @property
    def uses_database(self):
        """True for ``database`` and ``both``."""
        return self.storage in ('database', 'both')

    @property
    def uses_s3(self):
        """True for ``s3`` and ``both``."""
        return self.storage in ('s3', 'both')

    def ensure_table(self, conn):
        """Create ``restore_watermarks`` when missing (committed on its own).

        :raises PgopsError: when one exists that the restoring role may not trust (another role created it:
            :func:`postgres.trusted_table_exists`).
        """
        with pg_errors('creating %s' % WATERMARK_TABLE), conn.cursor() as cursor:
            trusted_table_exists(cursor, self.ident, self.display)
            cursor.execute(sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} (bucket text NOT NULL, prefix text NOT NULL, database_name text NOT NULL,'
                ' schema_name text NOT NULL, table_name text NOT NULL, last_restored_key text NOT NULL,'
                ' last_restored_date date, total_archives_restored bigint NOT NULL DEFAULT 0,'
                ' updated_at timestamptz NOT NULL DEFAULT now(),'
                ' PRIMARY KEY (bucket, prefix, database_name, schema_name, table_name))').format(self.ident))
        conn.commit()

    def read(self, conn, source=None):
        """The current watermark document (dict) or ``None``; with ``source`` (:class:`ArchiveSource`) also ``None``
        when it points at an archive of another table (restores of two schemas' archives into one table)."""
        document = self._read(conn)
        if document is not None and source is not None:
            key = document.get('last_restored_key') or ''
            if not (key.startswith(source.prefix) or key.startswith(source.legacy_prefix)):
                return None
        return document

    def _read(self, conn):
        if self.uses_database:
            with pg_errors('reading %s' % WATERMARK_TABLE), conn.cursor() as cursor:
                if trusted_table_exists(cursor, self.ident, self.display):
                    # Literals, no parameter list: the schema's name may hold a % (see table_archive.condition).
                    cursor.execute(sql.SQL(
                        'SELECT last_restored_key, last_restored_date::text, total_archives_restored, updated_at FROM {}'
                        ' WHERE bucket = {} AND prefix = {} AND database_name = {} AND schema_name = {} AND table_name = {}'
                    ).format(self.ident, *[sql.Literal(value) for value in self.row_key]))
                    row = cursor.fetchone()
                    conn.commit()
                    if row:
                        return dict(last_restored_key=row[0], last_restored_date=row[1], total_archives_restored=row[2],
                                    updated_at=isoformat_z(row[3]), storage='database')
                conn.commit()
        if self.uses_s3:
            document = self.s3.read()
            if document is None:
                legacy = self.legacy_s3.read()
                if legacy is not None and legacy.get('schema') == self.relation.schema:
                    document = legacy
            if document is not None:
                document['storage'] = 's3'
            return document
        return None

    def document(self, archive, total):
        """The watermark document for ``archive`` (a dict from :func:`list_archives`) after ``total`` archives."""
        return dict(last_restored_key=archive['key'], last_restored_date=archive['date'].isoformat(),
                    total_archives_restored=total, updated_at=isoformat_z(utc_now()), database=self.params['database'],
                    schema=self.relation.schema, table=self.relation.name, bucket=self.params['bucket'],
                    prefix=self.params['prefix'])

    def write_database(self, cursor, document):
        """Upsert the database copy with ``cursor`` (inside the caller's transaction)."""
        values = self.row_key + [document['last_restored_key'], document['last_restored_date'],
                                 document['total_archives_restored']]
        cursor.execute(sql.SQL(
            'INSERT INTO {} AS w (bucket, prefix, database_name, schema_name, table_name, last_restored_key,'
            ' last_restored_date, total_archives_restored, updated_at) VALUES ({}, now())'
            ' ON CONFLICT (bucket, prefix, database_name, schema_name, table_name) DO UPDATE SET'
            ' last_restored_key = EXCLUDED.last_restored_key, last_restored_date = EXCLUDED.last_restored_date,'
            ' total_archives_restored = EXCLUDED.total_archives_restored, updated_at = now()').format(
                self.ident, sql.SQL(', ').join(sql.Literal(value) for value in values)))


class WatermarkWriter:
    """Writes the S3 watermark from a background thread, so that the load does not wait on S3.

    While the restore runs, a new document is taken at most once per :data:`INTERVAL` (a PUT costs about as
    much as copying a thousand rows, and moto or a real endpoint is billed per request): the caller asks
    :meth:`due`, and when it is, commits durably and hands the document over with :meth:`submit`. The S3
    watermark therefore trails the committed data by at most about a second of work while the restore
    runs, and never leads it. :meth:`close` writes the last document submitted and waits for it.

    :param target: :class:`JsonObject`, the watermark object.
    """

    INTERVAL = 1.0  # seconds between documents taken while the restore runs

    def __init__(self, target):
        self.target = target
        self.condition = threading.Condition()
        self.waiting = None
        self.busy = False
        self.closing = False
        self.error = None
        self.written = None
        self.submitted = None
        self.submitted_at = None
        self.thread = threading.Thread(target=self._run, name='watermark-writer', daemon=True)
        self.thread.start()

    def due(self):
        """True when a document submitted now would be written at once, and :data:`INTERVAL` has passed
        since the last one (also true after a failed write, so that :meth:`submit` reports it)."""
        with self.condition:
            if self.error is not None:
                return True
            return self.waiting is None and not self.busy and (
                self.submitted_at is None or time.monotonic() - self.submitted_at >= self.INTERVAL)

    def submit(self, document):
        """Hand over ``document`` (dict), whose transaction has committed durably, replacing one not written
        yet (the same document again is ignored).

        :raises PgopsError: when an earlier write failed.
        """
        with self.condition:
            if self.error is not None:
                raise self.error
            if document is self.submitted:
                return
            self.waiting = self.submitted = document
            self.submitted_at = time.monotonic()
            self.condition.notify()

    def _run(self):
        while True:
            with self.condition:
                while self.waiting is None and not self.closing:
                    self.condition.wait()
                document, self.waiting = self.waiting, None
                self.busy = document is not None
            if document is None:
                return
            try:
                self.target.write(document)
            except Exception as exc:  # pylint: disable=broad-except  # reported to the main thread
                with self.condition:
                    self.busy = False
                    self.error = exc if isinstance(exc, PgopsError) else PgopsError(
                        'Could not write the restore watermark %s: %s: %s' % (self.target.url, type(exc).__name__, exc))
                return
            with self.condition:
                self.busy = False
                self.written = document

    def close(self, check=True):
        """Write the last document submitted, stop the thread and return the last document written (or None).

        :param check: raise when a write failed (False while another error is already on its way).
        :raises PgopsError: when a write failed.
        """
        with self.condition:
            self.closing = True
            self.condition.notify()
        self.thread.join()
        if check and self.error is not None:
            raise self.error
        return self.written
