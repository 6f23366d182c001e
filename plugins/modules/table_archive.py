#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: table_archive
short_description: Move rows older than a cutoff from a PostgreSQL table to S3 as verified JSONL.gz batches
version_added: 0.1.0
description:
  - Selects the rows to archive (O(date_column) older than O(older_than) or O(before), and/or a O(where)
    expression) in key order, O(batch_size) rows per batch, and writes each batch as one gzip-compressed
    JSON Lines object with a C(.meta.json) sidecar holding its sha256, size, record count and columns.
    The format is specified in C(docs/archive-format.md) of the collection; M(pgops.resilience.archive_restore) reads it.
  - Each batch is one transaction. Its rows are locked (C(SELECT ... FOR UPDATE)), uploaded, the upload is
    verified (Content-MD5, then size and ETag), and only then are the rows deleted and the transaction committed.
  - A C(.pending) marker is written before a batch is uploaded and removed after its commit. The next run
    finishes or undoes a batch a crash interrupted, so no row is lost and none is archived twice.
  - One run per table at a time (a session advisory lock). Keys name the database, the schema and the table, and
    the marker, the batch and its sidecar are written with C(If-None-Match) (S3 conditional writes), so runs on
    any two tables never write one key, and a run deletes only objects it wrote or that its own table's markers name.
  - Before any row is touched the table is checked for what M(pgops.resilience.archive_restore) could not bring
    back, and refused - a column named like a metadata field (C(_archived_at), C(_batch_id), C(_source_database),
    C(_source_table)), and columns whose JSON form is not their text form (composite types, arrays of them, and
    types with a cast to json such as C(hstore)). Any other table, schema and column name is fine; names are
    percent-encoded in keys.
  - A batch's DELETE removes only the archived rows. A batch whose deletion would also delete or change rows of
    another table through a foreign key (C(ON DELETE CASCADE), C(SET NULL), C(SET DEFAULT)) is rolled back and the
    task fails naming that table - archive the referencing table first. Of a table with inheritance children only
    the parent's own rows are archived (C(ONLY)); the rows of a partitioned table's partitions are all archived.
  - The marker names the batch's transaction; the next run asks PostgreSQL whether it committed (C(txid_status))
    and completes or undoes the batch accordingly. Markers written by another cluster or database sharing the
    prefix (same names) are left alone and reported in RV(unresolved_markers); give each cluster a prefix of its own.
  - When the connection to PostgreSQL is lost (the server stopped, a failover), the task fails saying so, with
    C(changed) true and the batches committed before it in RV(batches); a batch whose commit was cut is
    resolved from its marker by the next run.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.s3
options:
  table:
    description:
      - Name of the table, exactly as in the catalog (no quoting). Also the C({table}) part of the object keys.
    type: str
    required: true
  schema:
    description: Schema of O(table), exactly as in the catalog. Also the C({schema}) part of the object keys.
    type: str
    default: public
  database:
    description:
      - The C({database}) part of the object keys. Defaults to the name of the database connected to.
    type: str
  bucket:
    description: Bucket the archives are written to.
    type: str
    required: true
  prefix:
    description: First part of the object keys, C({prefix}/{database}/{schema}/{table}/year=YYYY/month=MM/day=DD/...).
    type: str
    default: archives
  date_column:
    description:
      - Timestamp or date column compared with O(older_than) or O(before). Its minimum and maximum in each
        batch are recorded in the sidecar.
    type: str
  older_than:
    description:
      - Archive rows whose O(date_column) is older than this PostgreSQL interval before now, such as C(90 days).
    type: str
  before:
    description:
      - Archive rows whose O(date_column) is before this date or timestamp, such as C(2026-01-01).
    type: str
  where:
    description:
      - An SQL boolean expression over the table's columns (alias C(t)), combined with the date cutoff by AND.
        C(true) archives every row.
      - It must be one expression. Refused before any row is read, in check mode too, are a C(;) or a C(--)
        comment outside string constants and quoted identifiers, a closing parenthesis that closes a parenthesis the expression
        did not open, unterminated strings or comments, and anything the server does not accept as a boolean
        expression over the table (it is planned with C(EXPLAIN) in a read-only transaction, not run).
      - The expression runs inside the batch's transaction in a real run, so a function it calls could still
        write; in check mode every statement runs in a READ ONLY transaction.
    type: str
  batch_size:
    description: Rows per archive object.
    type: int
    default: 10000
  max_batches:
    description: Stop after this many batches (the rest waits for the next run). Unset means until no row matches.
    type: int
  key_columns:
    description:
      - Columns that identify a row, used to order batches and to delete exactly the archived rows.
        Defaults to the primary key; a table without one needs this option.
    type: list
    elements: str
  lock_timeout:
    description: Seconds to wait for row locks held by other sessions before a batch fails.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
    details:
      - Counts the rows and batches that would be archived and lists interrupted batches; writes nothing (every
        statement runs in a READ ONLY transaction, and nothing is written to S3).
  diff_mode:
    support: none
notes:
  - Stored generated columns are not archived; they are computed again when rows are restored.
  - Archives written before format 2 (keys without the schema) are still restored by
    M(pgops.resilience.archive_restore); their pending markers are resolved by this module when their sidecar names
    the table's schema, and reported in RV(unresolved_markers) otherwise.
  - Values are written as C(row_to_json) renders them, with the session's C(TimeZone) set to UTC,
    C(bytea_output) to C(hex) and C(extra_float_digits) to 1, so every type round-trips exactly.
requirements:
  - psycopg2
  - boto3
  - msgspec
seealso:
  - module: pgops.resilience.archive_restore
'''

EXAMPLES = r'''
- name: Archive audit rows older than 90 days
  pgops.resilience.table_archive:
    login_host: db.example.internal
    login_db: production_db
    table: audit_logs
    date_column: created_at
    older_than: 90 days
    bucket: company-archives
    endpoint_url: https://minio.example:9000

- name: Preview (no writes)
  pgops.resilience.table_archive:
    login_db: production_db
    table: audit_logs
    where: "t.action = 'logout'"
    bucket: company-archives
  check_mode: true
'''

RETURN = r'''
table:
  description: The table, as SQL writes it.
  returned: always
  type: str
database:
  description: The C({database}) part of the keys.
  returned: always
  type: str
prefix:
  description: Where this table's objects live, C({prefix}/{database}/{schema}/{table}/) (each name percent-encoded).
  returned: always
  type: str
keys:
  description: Object keys written by this run, in order.
  returned: always
  type: list
  elements: str
batches:
  description: One entry per batch written.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: Object key.
      type: str
    records:
      description: Rows in the batch.
      type: int
    sha256:
      description: Hex sha256 of the object.
      type: str
    size_bytes:
      description: Size of the object in bytes.
      type: int
    date_min:
      description: Smallest O(date_column) value in the batch (ISO 8601), or null.
      type: str
    date_max:
      description: Largest O(date_column) value in the batch (ISO 8601), or null.
      type: str
records_archived:
  description: Rows moved to S3 by this run.
  returned: always
  type: int
recovered:
  description: Batches an interrupted run left behind and this run finished (C(completed)) or undid (C(rolled_back)).
  returned: when not in check mode
  type: list
  elements: dict
would_archive_records:
  description: Rows that would be archived.
  returned: in check mode
  type: int
would_write_batches:
  description: Batches that would be written.
  returned: in check mode
  type: int
pending_markers:
  description: Markers of interrupted batches that the next run will resolve.
  returned: in check mode
  type: list
  elements: str
unresolved_markers:
  description:
    - Markers this run leaves alone, with a warning - those an earlier version (format 1 keys) left under the table's
      name without a sidecar (whose schema they belong to is not known), and those another cluster or database
      sharing the prefix wrote.
  returned: always
  type: list
  elements: str
connection_lost:
  description: True when the task failed because the connection to PostgreSQL was lost.
  returned: on failure
  type: bool
in_doubt:
  description: The key of a batch whose commit was cut off; the next run completes or undoes it from its marker.
  returned: on failure, when a commit was cut off
  type: str
duration_ms:
  description: Duration of the run in milliseconds.
  returned: when not in check mode
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._archive import table_archive


def main():
    module_main(AnsibleModule, table_archive.module_spec(), table_archive.archive_rows, connection_secrets)


if __name__ == '__main__':
    main()
