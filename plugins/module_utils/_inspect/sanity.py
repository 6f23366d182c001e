# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a database holds: schemas, tables, row counts, materialized views, extensions (the module
``pg_sanity_info``).
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import server_facts
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import transaction
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import display_name
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import (
    KINDS, _NOT_EXTENSION_MEMBER, _schema_filter, pin_output_settings, scan_relation)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting


def argument_spec():
    """The module's own options (the PostgreSQL connection options are added by ``run_postgres_module``).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(
        schemas=dict(type='list', elements='str'),
        exact_counts=dict(type='bool', default=False),
        checksums=dict(type='bool', default=False),
    )


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(dict(argument_spec=argument_spec()))


def estimate_rows(reltuples, relpages, current_pages, live_tuples):
    """Estimate a table's rows without reading it, as the planner does.

    The planner scales the tuple density recorded by the last VACUUM or ANALYZE (``pg_class.reltuples`` /
    ``pg_class.relpages``) to the table's current number of pages (PostgreSQL docs, "14.2 Statistics Used by the
    Planner" and "How the Planner Uses Statistics > Row Estimation Examples"). A table never vacuumed or analyzed (``reltuples`` -1 from
    PostgreSQL 14 on; 0 with 0 pages before) has no density; then the statistics system's live row count
    (``pg_stat_all_tables.n_live_tup``, docs "The Cumulative Statistics System > pg_stat_all_tables") is used.

    :param reltuples: float, ``pg_class.reltuples``.
    :param relpages: int, ``pg_class.relpages``.
    :param current_pages: int, the main fork's size now in blocks (``pg_relation_size / block_size``).
    :param live_tuples: int or None, ``n_live_tup`` (None when the statistics system has no entry).
    :returns: ``(rows, source)``: rows (int or None) and ``'reltuples'``, ``'n_live_tup'`` or None.
    """
    if reltuples is not None and reltuples >= 0:
        if relpages and relpages > 0:
            return int(round(float(reltuples) / relpages * (current_pages or 0))), 'reltuples'
        if not current_pages:
            return int(round(float(reltuples))), 'reltuples'
    if live_tuples is not None:
        return int(live_tuples), 'n_live_tup'
    return None, None


_RELATIONS = (
    "WITH chosen AS (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind IN ('r', 'p', 'f', 'm') AND {condition} AND " + _NOT_EXTENSION_MEMBER + "),"
    " leaves AS (SELECT p.oid AS parent, t.relid AS leaf FROM chosen p"
    " CROSS JOIN LATERAL pg_catalog.pg_partition_tree(p.oid) t"
    " WHERE t.isleaf AND t.relid <> p.oid AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = p.oid) = 'p')"
    " SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispopulated, c.reltuples, c.relpages,"
    " pg_catalog.pg_relation_size(c.oid) / pg_catalog.current_setting('block_size')::int,"
    " s.n_live_tup, CASE WHEN c.relkind IN ('r', 'm') THEN pg_catalog.pg_total_relation_size(c.oid) END,"
    " pg_catalog.has_table_privilege(c.oid, 'SELECT'), pn.nspname, pc.relname,"
    " c.oid IN (SELECT oid FROM chosen),"
    " ARRAY(SELECT l.leaf::int8 FROM leaves l WHERE l.parent = c.oid ORDER BY 1)"
    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid"
    " LEFT JOIN pg_catalog.pg_inherits i ON c.relispartition AND i.inhrelid = c.oid"
    " LEFT JOIN pg_catalog.pg_class pc ON pc.oid = i.inhparent"
    " LEFT JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace"
    " WHERE c.oid IN (SELECT oid FROM chosen UNION SELECT leaf FROM leaves)"
    " ORDER BY n.nspname, c.relname"
)


_RELATION_FIELDS = ('oid', 'schema', 'name', 'relkind', 'populated', 'reltuples', 'relpages', 'current_pages', 'live_tuples',
                    'bytes', 'readable', 'parent_schema', 'parent_name', 'chosen', 'leaves')


def _count(cursor, rel, exact, checksums, notes):
    """Rows (and checksum) of one ``r`` or ``m`` relation: the fields ``rows``, ``rows_exact``, ``rows_source``, ``checksum``."""
    if rel['relkind'] == 'm' and not rel['populated']:
        return dict(rows=None, rows_exact=False, rows_source=None, checksum=None)
    if (exact or checksums) and rel['readable']:
        with pg_errors('reading the rows of %s' % display_name(rel['schema'], rel['name'])):
            rows, checksum = scan_relation(cursor, rel['schema'], rel['name'], checksums)
        return dict(rows=rows, rows_exact=True, rows_source='count', checksum=checksum)
    if exact or checksums:
        notes.append('No SELECT privilege on %s: its row count is an estimate and it has no checksum.'
                     % display_name(rel['schema'], rel['name']))
    rows, source = estimate_rows(rel['reltuples'], rel['relpages'], rel['current_pages'], rel['live_tuples'])
    return dict(rows=rows, rows_exact=False, rows_source=source, checksum=None)


def _partitioned(rel, counted, by_oid):
    """Rows and bytes of a partitioned table: the sums over its leaf partitions (None when one is unknown)."""
    leaves = [counted.get(oid) or {} for oid in rel['leaves']]
    rows = [leaf.get('rows') for leaf in leaves]
    known = None not in rows
    return dict(rows=sum(rows) if known else None, rows_exact=known and all(leaf.get('rows_exact') for leaf in leaves),
                rows_source='partitions', checksum=None,
                bytes=sum(by_oid[oid]['bytes'] or 0 for oid in rel['leaves']))


def describe_database(cursor, schemas=None, exact_counts=False, checksums=False):
    """The report of :func:`inspect_database`, from the current transaction (call it in a REPEATABLE READ one).

    :returns: dict with ``schemas``, ``missing_schemas``, ``tables``, ``materialized_views``, ``extensions``,
        ``totals`` and ``notes``; see the module's RETURN for the fields.
    """
    notes = []
    condition, args = _schema_filter(schemas)
    cursor.execute('SELECT n.nspname, pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n WHERE '
                   + condition + ' ORDER BY 1', args)
    schema_rows = cursor.fetchall()
    missing = sorted(set(schemas or ()) - set(row[0] for row in schema_rows))
    cursor.execute(_RELATIONS.format(condition=condition), args)
    relations = [dict(zip(_RELATION_FIELDS, row)) for row in cursor.fetchall()]
    by_oid = dict((rel['oid'], rel) for rel in relations)
    counted = {}
    if checksums:
        pin_output_settings(cursor)
    for rel in relations:
        if rel['relkind'] in ('r', 'm'):
            counted[rel['oid']] = _count(cursor, rel, exact_counts, checksums, notes)
        elif rel['relkind'] == 'f':
            counted[rel['oid']] = dict(rows=None, rows_exact=False, rows_source=None, checksum=None)
    tables, views = [], []
    for rel in relations:
        if not rel['chosen']:
            continue  # a leaf partition in a schema not reported, read only for its parent's sums
        entry = dict(schema=rel['schema'], name=rel['name'], bytes=rel['bytes'])
        entry.update(_partitioned(rel, counted, by_oid) if rel['relkind'] == 'p' else counted[rel['oid']])
        if rel['relkind'] == 'm':
            entry['populated'] = bool(rel['populated'])
            views.append(entry)
            continue
        entry.update(kind=KINDS[rel['relkind']],
                     partition_of='%s.%s' % (rel['parent_schema'], rel['parent_name']) if rel['parent_name'] else None,
                     partitions=len(rel['leaves']) if rel['relkind'] == 'p' else None)
        tables.append(entry)
    if not exact_counts and not checksums:
        notes.insert(0, 'Row counts are estimates (rows_exact false): pg_class.reltuples scaled to the current table size, '
                     'or pg_stat_all_tables.n_live_tup for tables never vacuumed or analyzed. Set exact_counts to count rows.')
    cursor.execute('SELECT e.extname, e.extversion, n.nspname FROM pg_catalog.pg_extension e'
                   ' JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace ORDER BY 1')
    extensions = [dict(name=row[0], version=row[1], schema=row[2]) for row in cursor.fetchall()]
    schema_list = [dict(name=name, owner=owner, tables=sum(1 for t in tables if t['schema'] == name),
                        materialized_views=sum(1 for v in views if v['schema'] == name)) for name, owner in schema_rows]
    return dict(schemas=schema_list, missing_schemas=missing, tables=tables, materialized_views=views, extensions=extensions,
                totals=totals(schema_list, tables, views, extensions), notes=notes)


def totals(schemas, tables, views, extensions):
    """Counts and sums over a report: rows and bytes of ordinary tables (partitions included, partitioned parents
    not, so nothing is counted twice) and of populated materialized views; unknown values count as 0."""
    ordinary = [t for t in tables if t['kind'] == 'table']
    return dict(
        schemas=len(schemas), tables=len(ordinary), partitions=sum(1 for t in ordinary if t['partition_of']),
        partitioned_tables=sum(1 for t in tables if t['kind'] == 'partitioned table'),
        foreign_tables=sum(1 for t in tables if t['kind'] == 'foreign table'),
        materialized_views=len(views), unpopulated_materialized_views=sum(1 for v in views if not v['populated']),
        extensions=len(extensions),
        table_rows=sum(t['rows'] or 0 for t in ordinary), materialized_view_rows=sum(v['rows'] or 0 for v in views),
        bytes=sum(t['bytes'] or 0 for t in ordinary) + sum(v['bytes'] or 0 for v in views),
    )


def inspect_database(params, check_mode=False):
    """Run ``pg_sanity_info``: see the module's documentation for options and return values. It only reads, in
    READ ONLY sessions, so check mode changes nothing.

    :param params: the module parameters (connection options, ``schemas``, ``exact_counts``, ``checksums``).
    :param check_mode: bool (the same run either way).
    :returns: dict, the module result (never changed), with ``warnings`` for schemas that do not exist.
    :raises PgopsError: for a failed connection or query.
    """
    schemas = params.get('schemas')
    if schemas is not None and not all(s for s in schemas):
        raise PgopsError('schemas: give schema names exactly as in the catalog; an empty name is not one.')
    conn = connect(params, read_only=True)
    try:
        with transaction(conn, read_only_snapshot=True) as cursor:
            with pg_errors('reading the server'):
                facts = server_facts(cursor)
            database = facts['database']
            with pg_errors('describing database %s' % database):
                report = describe_database(cursor, schemas, params.get('exact_counts'), params.get('checksums'))
    finally:
        conn.close()
    result = dict(changed=False, server_version=facts['server_version'], server_version_num=facts['server_version_num'],
                  database=database, in_recovery=facts['in_recovery'], exact_counts=bool(params.get('exact_counts') or params.get('checksums')),
                  warnings=['schemas: %s not found in database %s.' % (', '.join(report['missing_schemas']), database)]
                  if report['missing_schemas'] else [])
    result.update(report)
    return result
