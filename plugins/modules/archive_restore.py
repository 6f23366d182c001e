#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: archive_restore
short_description: Restore rows archived to S3 by table_archive back into PostgreSQL
version_added: 0.1.0
description:
  - The Restore Guide's utility as a module; options are named after the guide's flags.
  - Without O(s3_key) and O(restore_all) it lists the table's archives. With O(s3_key) it restores one
    archive; with O(restore_all) every archive of the table, optionally between O(start_date) and
    O(end_date) (the date in the key), skipping those the restore watermark says are restored.
  - Each archive is checked against its C(.meta.json) sidecar before any of its rows is written - the source
    database, schema and table it names, the size and sha256 of the object, the decompressed size - and after
    reading, its record count. Archives without a sidecar (older archivers) are restored and reported as
    unverified; their rows' C(_source_database) and C(_source_table) must name the table.
  - Every line must be one JSON object naming each member once (a line with a duplicate member fails its
    archive); with V(strict) it may hold no member the archive does not declare.
  - Memory is bounded per archive by O(max_archive_bytes) and O(max_record_bytes); an archive over either
    fails alone, named, and the others go on.
  - Each archive is loaded with C(COPY ... FROM STDIN) under its own savepoint. A bad archive is rolled back
    and reported and the others go on; the task fails at the end when any archive failed.
  - While one archive is copied, the next ones are downloaded, verified and converted in a background thread.
  - The metadata fields C(_archived_at), C(_batch_id), C(_source_database) and C(_source_table) are not restored.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.s3
options:
  database:
    description:
      - The C({database}) part of the archive keys (the source database). Also the database connected to, unless
        O(login_db) is given.
      - In this module O(login_db) does not fall back to E(PGDATABASE), so that the restore never lands in
        another database than the one named here.
    type: str
    required: true
  table:
    description: Table to restore into, exactly as in the catalog; also the C({table}) part of the keys.
    type: str
    required: true
  schema:
    description: Schema of O(table), the table restored into.
    type: str
    default: public
  source_schema:
    description:
      - The schema the archives were taken from (the C({schema}) part of their keys and the C(source.schema) of their
        sidecars). Defaults to O(schema).
      - Give it to restore one schema's archives into a table of another schema (a copy to inspect); archives whose
        sidecar names another schema are never restored, even by O(s3_key).
      - Archives of format 1 (keys without the schema, C({prefix}/{database}/{table}/...)) are read too, when their
        sidecar names this schema, or when they have no sidecar.
    type: str
  bucket:
    description: Bucket holding the archives.
    type: str
    required: true
  prefix:
    description: First part of the archive keys, C({prefix}/{database}/{schema}/{table}/...).
    type: str
    default: archives
  s3_key:
    description: Restore this one archive (the full object key).
    type: str
  restore_all:
    description: Restore every archive of the table (within O(start_date) and O(end_date) when given).
    type: bool
    default: false
  start_date:
    description: With O(restore_all), the first key date (C(YYYY-MM-DD)) to restore.
    type: str
  end_date:
    description: With O(restore_all), the last key date (C(YYYY-MM-DD)) to restore.
    type: str
  conflict_strategy:
    description:
      - V(skip) leaves existing rows alone (C(ON CONFLICT DO NOTHING)); an archive is first copied straight
        into the table and only goes through a staging table when that meets a duplicate key.
      - V(overwrite) replaces the archived columns of existing rows (C(ON CONFLICT DO UPDATE)).
      - V(upsert) updates existing rows whose archived values differ and inserts new ones
        (C(ON CONFLICT DO UPDATE ... WHERE ... IS DISTINCT FROM)); unchanged rows count as skipped.
      - V(fail) fails the archive on the first duplicate key (no C(ON CONFLICT) clause).
    type: str
    default: skip
    choices: [skip, overwrite, fail, upsert]
  conflict_columns:
    description:
      - The conflict target of C(ON CONFLICT). Defaults to the primary key; V(overwrite) and V(upsert) need
        one or the other.
    type: list
    elements: str
  schema_migration_strategy:
    description:
      - V(strict) fails an archive whose columns (names, and types when the sidecar has them) differ from the table's.
      - V(lenient) restores the columns both have; table columns missing from the archive get their defaults
        and archived columns the table lacks are dropped (reported per file).
      - V(transform) does what V(lenient) does and casts columns whose archived type differs to the table's
        type; a value that does not cast fails the archive, naming the column.
      - V(none) loads the archive's columns as they are; PostgreSQL's errors tell what does not match.
    type: str
    default: strict
    choices: [strict, lenient, transform, none]
  drop_indexes:
    description:
      - Drop the table's indexes that are neither unique nor behind a constraint before loading, and recreate
        them afterwards, also after a failure. Primary keys and unique indexes stay, since conflicts need them.
      - Their definitions (C(pg_get_indexdef)) are recorded in the table C(pgops_dropped_indexes) of the target
        schema (created when first needed), in the transaction that drops them. Every restore, with or without
        O(drop_indexes), first recreates the recorded indexes of the table that are missing (those a run killed
        before recreating them left) and deletes their rows. An index that cannot be recreated is named in the
        error with its statement, and its row stays for the next run.
      - A recorded definition is run only when it is the C(CREATE INDEX) of that index on that table alone, and
        only from a C(pgops_dropped_indexes) owned by the restoring role or a superuser.
      - Earlier versions kept the definitions in S3 (C(.dropped_indexes.<schema>.json) beside the archives).
        Such an object is never run; the result warns about it, and its indexes must be checked and recreated
        by hand, and the object deleted.
      - In check mode and with O(dry_run), nothing is recreated; RV(would_recreate_indexes) names what would be.
    type: bool
    default: false
  commit_frequency:
    description:
      - Archives per transaction.
      - While the restore runs, transactions commit with C(synchronous_commit) off (atomic and visible at once, on
        disk within a few hundred milliseconds); the last commit of the run, and each commit after which the S3
        watermark is written, wait for the WAL flush with the server's own C(synchronous_commit) setting. After
        a crash of the server the rows and the database watermark of the last transactions are lost together,
        and the next run restores those archives again.
    type: int
    default: 1
  dry_run:
    description: List what would be restored (with record counts from the sidecars) and write nothing. Check mode does the same.
    type: bool
    default: false
  restore_watermark:
    description:
      - Track restored archives with the restore watermark (O(restore_all) only), at
        C({prefix}/{database}/{source_schema}/{table}/.restore_watermark.json) in S3 (C(.restore_watermark.{schema}.json)
        when O(schema) differs from O(source_schema)) and/or in the table C(restore_watermarks), created in O(schema)
        when needed. A watermark an earlier version wrote at C({prefix}/{database}/{table}/.restore_watermark.json)
        is read when it names O(schema).
    type: bool
    default: true
  storage_type:
    description:
      - Where the watermark is kept, V(s3), V(database) or V(both). The database copy is written in the
        transaction of the archives it covers. The S3 copy is written from a background thread after a
        durable commit, at most once a second while the restore runs (one PUT per archive cost as much time
        as copying a thousand rows each), and at the end of the run; it may trail the restored data by about a
        second of work, and never leads it.
    type: str
    default: s3
    choices: [s3, database, both]
  update_after_each_archive:
    description:
      - Move the watermark while the restore runs (the database copy with each commit, the S3 copy at most once
        a second); otherwise only at the end of the run.
    type: bool
    default: true
  ignore_watermark:
    description:
      - Restore archives the watermark says are restored already. The watermark is still updated at the end.
    type: bool
    default: false
  max_archive_bytes:
    description:
      - The largest decompressed archive read, in bytes (at least 1 MiB). Decompression stops there, so a small
        object that expands without end fails alone instead of taking the host's memory.
      - The restore holds about three archives at a time (the one being copied and two prepared ahead), each up to
        twice this size while it is decompressed.
    type: int
    default: 268435456
  max_record_bytes:
    description:
      - The longest line (one row's JSON) read, in bytes (at least 1 MiB); a longer line fails its archive, named by
        its number, as soon as decompression reaches it.
    type: int
    default: 67108864
attributes:
  check_mode:
    support: full
    details:
      - Same as O(dry_run); every statement runs in a READ ONLY transaction.
  diff_mode:
    support: none
notes:
  - The watermark only moves over archives restored with no failed or pending archive before them, so a
    re-run retries the failed one; with V(skip) the archives after it are skipped row by row.
  - Archives a C(table_archive) run was interrupted on (a C(.pending) marker beside them) are skipped and reported.
requirements:
  - psycopg2
  - boto3
  - msgspec
seealso:
  - module: pgops.resilience.table_archive
'''

EXAMPLES = r'''
- name: List the archives of a table
  pgops.resilience.archive_restore:
    database: production_db
    table: audit_logs
    bucket: company-archives
  register: listing

- name: Restore January, skipping rows that are already there
  pgops.resilience.archive_restore:
    database: production_db
    table: audit_logs
    bucket: company-archives
    restore_all: true
    start_date: "2026-01-01"
    end_date: "2026-01-31"
    conflict_strategy: skip

- name: Restore one batch into a table whose columns changed since
  pgops.resilience.archive_restore:
    database: production_db
    table: audit_logs
    bucket: company-archives
    s3_key: archives/production_db/public/audit_logs/year=2026/month=01/day=15/audit_logs_20260115T020000Z_batch_001.jsonl.gz
    schema_migration_strategy: lenient
'''

RETURN = r'''
mode:
  description: V(list), V(s3_key) or V(restore_all).
  returned: always
  type: str
table:
  description: The table, as SQL writes it.
  returned: always
  type: str
prefix:
  description: The format 2 prefix of the archives read, C({prefix}/{database}/{source_schema}/{table}/).
  returned: always
  type: str
source:
  description: The C(database), C(schema) and C(table) the archives must come from.
  returned: always
  type: dict
other_schema_archives:
  description: Format 1 archives under the table's name left out because their sidecar names another schema.
  returned: always
  type: int
archives:
  description: The table's archives, oldest first, each with C(key), C(date), C(size_bytes), C(has_sidecar), C(pending) and C(restored) (per the watermark).
  returned: in list mode
  type: list
  elements: dict
files_processed:
  description: Archives attempted (restored or failed).
  returned: when restoring
  type: int
files_failed:
  description: Archives rolled back because of an error.
  returned: when restoring
  type: int
files_skipped:
  description: Archives skipped because the watermark covers them or a table_archive run is pending on them.
  returned: when restoring
  type: int
records_restored:
  description: Rows inserted or updated.
  returned: when restoring
  type: int
records_skipped:
  description: Rows left alone because of a conflict (or unchanged, with V(upsert)).
  returned: when restoring
  type: int
records_failed:
  description: Rows in archives that failed.
  returned: when restoring
  type: int
files:
  description:
    - Per archive, C(key), C(status) (V(restored), V(failed), V(skipped), V(would_restore)), C(verified) (a sidecar
      was checked), C(records), C(restored), C(skipped), C(error), C(reason), C(dropped_columns), C(defaulted_columns).
  returned: when restoring
  type: list
  elements: dict
watermark:
  description: C(previous) and C(current) watermark documents, C(storage_type) and whether it was C(written).
  returned: with O(restore_all)
  type: dict
indexes_dropped:
  description: Indexes dropped for the load (O(drop_indexes)).
  returned: when restoring
  type: list
  elements: str
indexes_recreated:
  description: Indexes recreated, those an interrupted run had dropped (before loading) and those dropped for the load.
  returned: when restoring
  type: list
  elements: str
would_recreate_indexes:
  description: Indexes an interrupted run dropped that a restore would recreate before loading (O(drop_indexes)).
  returned: with O(dry_run) or in check mode, when restoring
  type: list
  elements: str
would_restore_files:
  description: Archives that would be restored.
  returned: with O(dry_run) or in check mode
  type: int
would_restore_records:
  description: Rows in the archives that would be restored, from their sidecars (archives without one count 0).
  returned: with O(dry_run) or in check mode
  type: int
dry_run:
  description: Whether nothing was written (O(dry_run) or check mode).
  returned: always
  type: bool
duration_ms:
  description: Duration of the run in milliseconds.
  returned: when restoring
  type: int
committed:
  description: C(files), C(records_restored) and C(records_skipped) as of the last commit.
  returned: when restoring, once a transaction committed
  type: dict
connection_lost:
  description:
    - True when the task failed because the connection to PostgreSQL was lost. RV(records_restored) then counts the
      committed rows only, and the archives of the open transaction are listed with status V(rolled_back).
  returned: on failure
  type: bool
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore


def main():
    module_main(AnsibleModule, archive_restore.module_spec(), archive_restore.restore_archives, connection_secrets)


if __name__ == '__main__':
    main()
