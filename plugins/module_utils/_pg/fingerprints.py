# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Table fingerprints: the row count and an order-independent checksum of every table, read in one snapshot, that
prove a restored database holds what its source held.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import transaction
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import display_name


try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    sql = None

# The schemas that are not the user's: the system catalogs, the information schema, TOAST and temporary
# schemas (PostgreSQL docs, "5.9.5 The System Catalog Schema").
_USER_SCHEMA = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"
                " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_namespace'::pg_catalog.regclass"
                " AND d.objid = n.oid AND d.deptype = 'e')")


_NOT_EXTENSION_MEMBER = ("NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
                         " AND d.objid = c.oid AND d.deptype = 'e')")


KINDS = {'r': 'table', 'p': 'partitioned table', 'f': 'foreign table', 'm': 'materialized view'}


# Session settings that change how values are written as text (PostgreSQL docs, "20.11.2 Locale and Formatting"
# and "8.5.2 Date/Time Output"), pinned for the checksums so that two servers configured differently, or a
# database with its own ALTER DATABASE ... SET, give the same text for the same row. extra_float_digits above 0
# gives the shortest exact float text from PostgreSQL 12 on, and 3 gives exact text before.
_OUTPUT_SETTINGS = (
    ('DateStyle', 'ISO, YMD'),
    ('IntervalStyle', 'postgres'),
    ('TimeZone', 'UTC'),
    ('extra_float_digits', '3'),
    ('bytea_output', 'hex'),
    ('lc_monetary', 'C'),
    ('search_path', 'pg_catalog'),
)


def compare_fingerprints(source, restored):
    """Compare two results of :func:`table_fingerprints`, typically a source database and its restore.

    A table only in ``source`` is ``missing``, one only in ``restored`` is ``extra``; when both have it, different
    row counts are ``rows``, and equal counts with different checksums ``checksum``. A checksum that is None
    on either side (taken with ``checksums=False``) is not compared.

    :param source: dict keyed by ``schema.table`` as :func:`table_fingerprints` returns it.
    :param restored: dict of the same shape.
    :returns: dict with ``identical`` (bool) and ``differences``, a list sorted by table of dicts with ``table``,
        ``source_rows``, ``restored_rows``, ``source_checksum``, ``restored_checksum`` (None where a side lacks
        the table) and ``problem`` (``missing``, ``extra``, ``rows`` or ``checksum``).
    """
    differences = []
    for table in sorted(set(source) | set(restored)):
        before, after = source.get(table), restored.get(table)
        if before is None:
            problem = 'extra'
        elif after is None:
            problem = 'missing'
        elif before.get('rows') != after.get('rows'):
            problem = 'rows'
        elif None not in (before.get('checksum'), after.get('checksum')) and before['checksum'] != after['checksum']:
            problem = 'checksum'
        else:
            continue
        differences.append(dict(table=table, problem=problem,
                                source_rows=(before or {}).get('rows'), restored_rows=(after or {}).get('rows'),
                                source_checksum=(before or {}).get('checksum'), restored_checksum=(after or {}).get('checksum')))
    return dict(identical=not differences, differences=differences)


def pin_output_settings(cursor):
    """``SET LOCAL`` the settings that change how rows are written as text (see ``_OUTPUT_SETTINGS``), for the
    rest of the current transaction."""
    for name, value in _OUTPUT_SETTINGS:
        cursor.execute('SELECT pg_catalog.set_config(%s, %s, true)', [name, value])


def scan_relation(cursor, schema, name, checksum=True):
    """Read every row of one table or populated materialized view (``FROM ONLY``: without inheritance children).

    The checksum is a multiset hash of the rows' text: the sum, as ``numeric``, of the first 64 bits of the MD5 of
    each row's text (``ROW(t.*)::text``) read as a signed ``bigint``. A sum does not depend on row order and is
    computed while streaming, in constant memory (no ``string_agg`` of the table, which would hit the 1 GB limit
    of a value). It depends on the column order and types (the text of a row), so it tells whether a restore
    holds the same rows as its source; it is no cryptographic proof. Sources: PostgreSQL docs, "9.4 String
    Functions and Operators" (``md5``), "9.6 Bit String Functions and Operators" (``bit(64)`` to ``bigint``) and
    "8.16.6 Composite Type Input and Output Syntax" (row text). Call :func:`pin_output_settings` first.

    :returns: ``(rows, checksum)``: int and str (decimal digits, perhaps with a minus sign), or None without ``checksum``.
    :raises psycopg2.Error: for a missing privilege and the like.
    """
    if checksum:
        query = sql.SQL("SELECT pg_catalog.count(*), pg_catalog.sum(('x' || pg_catalog.left(pg_catalog.md5(ROW(t.*)::text), 16))"
                        '::pg_catalog.bit(64)::pg_catalog.int8) FROM ONLY {} AS t').format(sql.Identifier(schema, name))
    else:
        query = sql.SQL('SELECT pg_catalog.count(*), NULL FROM ONLY {} AS t').format(sql.Identifier(schema, name))
    cursor.execute(query)
    rows, total = cursor.fetchone()
    if not checksum:
        return int(rows), None
    return int(rows), str(total if total is not None else 0)


def _schema_filter(schemas):
    """SQL condition (on alias ``n``) and its parameters for the chosen schemas: the given ones, or the user's."""
    if schemas is None:
        return _USER_SCHEMA, []
    return 'n.nspname = ANY(%s)', [list(schemas)]


def table_fingerprints(conn, schemas=None, checksums=True, snapshot=None):
    """Row count and checksum of every ordinary table and populated materialized view, from one snapshot.

    Covers relkind ``r`` (partitions included, partitioned parents not, so no row is counted twice) and
    populated ``m`` in the user's schemas (or ``schemas``), without extension members. Counts are exact
    (``count(*)``), read in one REPEATABLE READ, READ ONLY transaction; see :func:`scan_relation` for the checksum.

    :param conn: psycopg2 connection, not inside a transaction (autocommit, or idle); its autocommit mode is restored.
    :param schemas: list of exact schema names, or None for every user schema (not ``pg_catalog``,
        ``information_schema``, TOAST, temporary or extension schemas). Schemas that do not exist give no tables.
    :param checksums: bool; without it ``checksum`` is None and only rows are counted.
    :param snapshot: str or None, the name of a snapshot exported by another transaction (``pg_export_snapshot()``,
        PostgreSQL docs "9.27.5 Snapshot Synchronization Functions") to read in, with ``SET TRANSACTION SNAPSHOT``: the
        fingerprints of exactly what a ``pg_dump --snapshot`` of it dumps. The exporting transaction must still be open.
    :returns: dict keyed by ``schema.table`` (names as in the catalog, unquoted) of dicts with ``schema``, ``name``,
        ``kind`` (``table`` or ``materialized view``), ``rows`` (int) and ``checksum`` (str or None).
    :raises PgopsError: naming the table when a query fails (for example without SELECT privilege).
    """
    condition, args = _schema_filter(schemas)
    fingerprints = {}
    with transaction(conn, read_only_snapshot=True) as cursor:
        if snapshot is not None:
            with pg_errors('importing snapshot %s' % snapshot):
                cursor.execute('SET TRANSACTION SNAPSHOT %s', [snapshot])
        with pg_errors('listing the tables'):
            pin_output_settings(cursor)
            cursor.execute('SELECT n.nspname, c.relname, c.relkind FROM pg_catalog.pg_class c'
                           ' JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace'
                           " WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) AND " + condition +
                           ' AND ' + _NOT_EXTENSION_MEMBER + ' ORDER BY n.nspname, c.relname', args)
            relations = cursor.fetchall()
        for schema, name, relkind in relations:
            with pg_errors('reading the rows of %s' % display_name(schema, name)):
                rows, checksum = scan_relation(cursor, schema, name, checksums)
            fingerprints['%s.%s' % (schema, name)] = dict(schema=schema, name=name, kind=KINDS[relkind], rows=rows, checksum=checksum)
    return fingerprints
