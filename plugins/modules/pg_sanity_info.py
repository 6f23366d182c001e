#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_sanity_info
short_description: Report what a PostgreSQL database holds - schemas, tables, row counts, materialized views, extensions
version_added: 0.1.0
description:
  - The runbook's C(make pg.sanity) as a module, typically run after a restore from a logical dump or a base backup.
  - Lists the schemas of the database connected to (O(login_db)) with their owners, the tables in them (ordinary,
    partitioned and foreign tables, partitions with the table they belong to) with row counts and sizes, the
    materialized views with whether they are populated, and the installed extensions.
  - Row counts are estimates by default, read from the catalog without scanning any table; O(exact_counts) counts
    every row. Everything is read in one REPEATABLE READ, READ ONLY transaction, so all counts come from one snapshot.
  - Objects that belong to an extension (and schemas an extension created) are left out, as C(pg_dump) leaves them out.
  - Only reads; never reports C(changed).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
options:
  schemas:
    description:
      - Schemas to report, exactly as named in the catalog (no quoting, case matters).
      - By default every user schema, that is all but C(pg_catalog), C(information_schema), the TOAST and temporary
        schemas and schemas created by an extension.
      - A schema that does not exist is listed in RV(missing_schemas) and gives a warning.
    type: list
    elements: str
  exact_counts:
    description:
      - Count the rows of every table and populated materialized view with C(count(*)), which reads them all.
      - When V(false), rows are estimated as the planner does, from C(pg_class.reltuples) scaled to the table's
        current size, or from C(pg_stat_all_tables.n_live_tup) for a table never vacuumed or analyzed;
        RV(tables[].rows_exact) is then V(false).
    type: bool
    default: false
  checksums:
    description:
      - Also compute a checksum of the rows of every table and populated materialized view (which implies exact
        counts for them), to compare a restore with its source.
      - The checksum is a multiset hash, the sum of the first 64 bits of the MD5 of each row's text, so it does not
        depend on row order and is computed in constant memory. It depends on the column order and types.
      - The session settings that change how values are written as text (C(DateStyle), C(TimeZone),
        C(extra_float_digits), C(bytea_output), C(IntervalStyle), C(lc_monetary), C(search_path)) are pinned while
        reading, so two servers configured differently give the same checksum for the same rows.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details:
      - The module only reads (its session is READ ONLY, so no statement can write), so check mode runs it
        unchanged.
  diff_mode:
    support: none
notes:
  - Counting needs SELECT privilege on a table; a table without it keeps its estimate, with a note in RV(notes).
    Row-level security hides rows from C(count(*)) as from any query.
  - Foreign tables are listed without rows (counting them would query the remote server).
  - A partitioned table's rows and bytes are the sums over its leaf partitions, which are listed too. RV(totals)
    counts the partitions and not the partitioned tables, so no row is counted twice.
  - Works on a hot standby too.
seealso:
  - module: pgops.resilience.pg_space_info
  - name: Statistics Used by the Planner
    description: Where the row estimates come from.
    link: https://www.postgresql.org/docs/current/planner-stats.html
'''

EXAMPLES = r'''
- name: Sanity check after a restore (connection from PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE)
  pgops.resilience.pg_sanity_info:
  register: sanity

- name: Show the tables with their row counts
  ansible.builtin.debug:
    msg: "{{ item.schema }}.{{ item.name }}: {{ item.rows }} rows{{ '' if item.rows_exact else ' (estimate)' }}"
  loop: "{{ sanity.tables }}"

- name: Exact counts and checksums of two schemas
  pgops.resilience.pg_sanity_info:
    login_host: db.example.internal
    login_db: records
    schemas: [public, audit]
    exact_counts: true
    checksums: true
  register: sanity_exact

- name: Fail when a materialized view was restored without data
  ansible.builtin.assert:
    that: sanity_exact.totals.unpopulated_materialized_views == 0
    fail_msg: "Not populated: {{ sanity_exact.materialized_views | rejectattr('populated') | map(attribute='name') | join(', ') }}"
'''

RETURN = r'''
server_version:
  description: The server's version (C(server_version)).
  returned: always
  type: str
  sample: "15.10"
server_version_num:
  description: The server's version as a number (C(server_version_num)).
  returned: always
  type: int
  sample: 150010
database:
  description: The database reported on.
  returned: always
  type: str
  sample: records
in_recovery:
  description: Whether the server is a standby (or recovering).
  returned: always
  type: bool
exact_counts:
  description: Whether rows were counted (O(exact_counts) or O(checksums)) rather than estimated.
  returned: always
  type: bool
schemas:
  description: The schemas reported, by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Schema name.
      type: str
    owner:
      description: Role owning the schema.
      type: str
    tables:
      description: Entries of RV(tables) in the schema (tables of every kind).
      type: int
    materialized_views:
      description: Entries of RV(materialized_views) in the schema.
      type: int
  sample: [{"name": "public", "owner": "postgres", "tables": 12, "materialized_views": 1}]
missing_schemas:
  description: Schemas of O(schemas) that do not exist.
  returned: always
  type: list
  elements: str
  sample: []
tables:
  description: Ordinary, partitioned and foreign tables, by schema and name.
  returned: always
  type: list
  elements: dict
  contains:
    schema:
      description: Schema name.
      type: str
    name:
      description: Table name.
      type: str
    kind:
      description: C(table), C(partitioned table) or C(foreign table).
      type: str
    rows:
      description:
        - Rows; C(null) when unknown (foreign tables, a table never vacuumed or analyzed and without statistics).
        - For a partitioned table, the sum over its leaf partitions.
      type: int
    rows_exact:
      description: Whether RV(tables[].rows) was counted rather than estimated.
      type: bool
    rows_source:
      description:
        - C(count) (counted), C(reltuples) (the planner's estimate), C(n_live_tup) (the statistics system's live
          rows), C(partitions) (a partitioned table's sum) or C(null).
      type: str
    bytes:
      description:
        - Size on disk in bytes with indexes and TOAST (C(pg_total_relation_size)); for a partitioned table the sum
          over its leaf partitions; C(null) for foreign tables.
      type: int
    partition_of:
      description: For a partition, its parent as C(schema.table); else C(null).
      type: str
    partitions:
      description: For a partitioned table, the number of its leaf partitions; else C(null).
      type: int
    checksum:
      description: With O(checksums), the checksum of the rows (decimal digits); else C(null).
      type: str
  sample:
    - {"schema": "public", "name": "records", "kind": "table", "rows": 120000, "rows_exact": false, "rows_source": "reltuples",
       "bytes": 25165824, "partition_of": null, "partitions": null, "checksum": null}
materialized_views:
  description: Materialized views, by schema and name.
  returned: always
  type: list
  elements: dict
  contains:
    schema:
      description: Schema name.
      type: str
    name:
      description: Name of the materialized view.
      type: str
    populated:
      description: Whether it holds data; V(false) after C(WITH NO DATA) or a restore that did not refresh it.
      type: bool
    rows:
      description: Rows (estimated unless RV(materialized_views[].rows_exact)); C(null) when not populated.
      type: int
    rows_exact:
      description: Whether RV(materialized_views[].rows) was counted.
      type: bool
    rows_source:
      description: As RV(tables[].rows_source).
      type: str
    bytes:
      description: Size on disk in bytes with indexes.
      type: int
    checksum:
      description: With O(checksums), the checksum of its rows; else C(null).
      type: str
  sample: [{"schema": "public", "name": "daily_totals", "populated": true, "rows": 365, "rows_exact": true,
            "rows_source": "count", "bytes": 65536, "checksum": null}]
extensions:
  description: Installed extensions of the database, by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Extension name.
      type: str
    version:
      description: Installed version.
      type: str
    schema:
      description: Schema of its objects.
      type: str
  sample: [{"name": "pg_trgm", "version": "1.6", "schema": "public"}, {"name": "plpgsql", "version": "1.0", "schema": "pg_catalog"}]
totals:
  description: Counts and sums over the report. Unknown rows and bytes count as 0.
  returned: always
  type: dict
  contains:
    schemas:
      description: Schemas reported.
      type: int
    tables:
      description: Ordinary tables, partitions included.
      type: int
    partitions:
      description: Of RV(totals.tables), the partitions.
      type: int
    partitioned_tables:
      description: Partitioned tables.
      type: int
    foreign_tables:
      description: Foreign tables.
      type: int
    materialized_views:
      description: Materialized views.
      type: int
    unpopulated_materialized_views:
      description: Materialized views that hold no data.
      type: int
    extensions:
      description: Installed extensions.
      type: int
    table_rows:
      description: Rows of the ordinary tables (partitions included).
      type: int
    materialized_view_rows:
      description: Rows of the populated materialized views.
      type: int
    bytes:
      description: Bytes of the ordinary tables and materialized views.
      type: int
  sample: {"schemas": 2, "tables": 14, "partitions": 2, "partitioned_tables": 1, "foreign_tables": 0, "materialized_views": 1,
           "unpopulated_materialized_views": 0, "extensions": 2, "table_rows": 120500, "materialized_view_rows": 365, "bytes": 26214400}
notes:
  description: How to read the numbers (estimates, tables that could not be counted).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._inspect import sanity


def main():
    module_main(AnsibleModule, sanity.module_spec(), sanity.inspect_database, connection_secrets)


if __name__ == '__main__':
    main()
