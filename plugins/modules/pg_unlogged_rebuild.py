#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_unlogged_rebuild
short_description: Rebuild an UNLOGGED cache table that came back empty after a crash, restart or failover
version_added: 0.1.0
description:
  - UNLOGGED tables are not written to WAL. Crash recovery truncates them and a standby has them empty,
    so after a failover the new primary serves an empty cache such as C(kv_store).
  - On a primary, when the target table is empty and any source (entity) table has rows, the module calls
    the rebuild function once, in one transaction, under a transaction-level advisory lock, then records a
    watermark (a JSON document) in S3.
  - The emptiness check uses C(EXISTS), so it costs the same at 10 rows and at 10 million; it is safe to
    run every few minutes.
  - Two runs never rebuild twice. A run that cannot take the lock skips with RV(skipped_reason=locked), and
    the check is repeated after the lock is taken.
  - On a standby (the function C(pg_is_in_recovery)) the module changes nothing and reports RV(skipped_reason=standby).
  - The watermark records the system identifier, timeline, postmaster start time and address of the primary;
    the next run compares them and reports C(events) such as C(failover) or C(restart).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.watermark
options:
  state:
    description:
      - V(checked) rebuilds only when needed (the runbook's C(--check-and-restore)).
      - V(rebuilt) rebuilds whatever the check says (the runbook's C(--restore)).
      - V(snapshot) only writes the watermark (the runbook's C(--snapshot)).
    type: str
    default: checked
    choices: [checked, rebuilt, snapshot]
  target_table:
    description:
      - The UNLOGGED table to keep filled, written as SQL writes it, for example C(kv_store),
        C(app.kv_store) or C(app."Documents"). Unqualified names follow the C(search_path).
    type: str
    default: kv_store
  source_tables:
    description:
      - The entity tables the target is built from. The target needs a rebuild when it is empty and any of
        these has rows. Names as in O(target_table).
    type: list
    elements: str
    required: true
  rebuild_function:
    description:
      - Function without arguments that fills the target, called in a C(SELECT * FROM) clause with no arguments.
      - It may return C(void), a row count, or a set of rows such as C(RETURNS TABLE) with columns C(table_name text, rows_inserted bigint);
        rows are returned in RV(tables).
    type: str
    default: rebuild_kv_store
  lock_key:
    description:
      - Key of the advisory lock (a signed 64-bit integer) that serialises rebuilds.
      - Defaults to a key derived from the resolved schema and name of O(target_table), the same on every host.
    type: int
  lock_timeout:
    description:
      - Seconds to wait for a table lock (PostgreSQL C(lock_timeout)) in the check and in the rebuild, for
        example while another session holds an exclusive lock on a table. V(0) waits for ever.
      - When it expires, nothing is changed and the task fails naming the step.
    type: int
    default: 30
  updated_at_column:
    description:
      - Column whose maximum the watermark records for each source table (C(max_updated_at)); tables
        without it record C(null).
    type: str
    default: updated_at
  watermark:
    description:
      - Where to keep the watermark. Without it, nothing is written to S3 and events are not detected.
      - The watermark is written after a rebuild commits, for O(state=snapshot), on the first run, and when
        the server changed (an event); a run that finds nothing to do writes nothing.
      - M(pgops.resilience.cnpg_cluster_info) reads the same location to tell whether the primary changed.
    type: dict
  watermark_required:
    description:
      - When V(false), a watermark that cannot be read or written is a warning, and the rebuild result stands.
      - When V(true), a failed upload fails the task; the message says that the rebuild itself was committed.
    type: bool
    default: false
  current_primary:
    description:
      - The name the orchestrator gives the primary, for example CloudNativePG's C(status.currentPrimary) pod
        name, as returned by M(pgops.resilience.cnpg_cluster_info) in RV(pgops.resilience.cnpg_cluster_info#module:current_primary).
      - Stored in the watermark as C(current_primary) (only when given) and returned.
      - When the previous watermark and this run both name a primary and the names differ, the event
        C(primary_changed) is reported, also where the service address the module connects to
        (C(<cluster>-rw)) stays the same across a failover.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Reports whether it would rebuild (RV(rebuild_needed)) and whether a watermark would be written; changes
        nothing.
  diff_mode:
    support: none
notes:
  - Run it against the primary's service address. A run against a standby is harmless and reports RV(skipped_reason=standby).
  - Where EXECUTE on the function C(pg_control_system) was revoked from the connecting role (it is granted to PUBLIC by
    default), C(system_identifier) is C(null) and a change of cluster is not detected.
  - A standby that refuses connections (C(hot_standby=off)) is reported as a standby too.
seealso:
  - name: PostgreSQL CREATE TABLE, UNLOGGED
    description: Why UNLOGGED tables are empty after a crash and on standbys.
    link: https://www.postgresql.org/docs/15/sql-createtable.html#SQL-CREATETABLE-UNLOGGED
  - name: PostgreSQL advisory lock functions
    description: C(pg_try_advisory_xact_lock).
    link: https://www.postgresql.org/docs/15/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS
'''

EXAMPLES = r'''
- name: Rebuild kv_store if it came back empty, and record a watermark
  pgops.resilience.pg_unlogged_rebuild:
    conninfo: "{{ lookup('ansible.builtin.env', 'DATABASE_URL') }}"
    source_tables: [resources, moments]
    watermark:
      bucket: rem-io-prod
  register: cache

- name: Force a rebuild of a cache in another schema, with a function returning per-table rows
  pgops.resilience.pg_unlogged_rebuild:
    login_host: db.example.internal
    login_user: maintainer
    login_db: app
    state: rebuilt
    target_table: cache."Documents"
    source_tables: [app.documents]
    rebuild_function: cache.rebuild_documents

- name: Read the CloudNativePG Cluster, then record its primary with the watermark
  pgops.resilience.cnpg_cluster_info:
    name: rem-db
    namespace: rem
    watermark:
      bucket: rem-io-prod
  register: cnpg

- name: Rebuild if needed; primary_changed is reported when the Cluster's primary changed
  pgops.resilience.pg_unlogged_rebuild:
    conninfo: "{{ lookup('ansible.builtin.env', 'DATABASE_URL') }}"
    source_tables: [resources, moments]
    current_primary: "{{ cnpg.current_primary }}"
    watermark:
      bucket: rem-io-prod

- name: Only write the watermark, against an S3-compatible store
  pgops.resilience.pg_unlogged_rebuild:
    state: snapshot
    source_tables: [resources, moments]
    watermark:
      bucket: backups
      key: state/unlogged-watermark.json
      endpoint_url: https://minio.example.internal:9000
'''

RETURN = r'''
rebuild_needed:
  description: Whether the target needed a rebuild (or one was forced with O(state=rebuilt)).
  returned: always
  type: bool
rebuilt:
  description: Whether this run rebuilt the target and committed.
  returned: always
  type: bool
reason:
  description: Why the run did or did not rebuild, in words.
  returned: always
  type: str
  sample: kv_store is empty while resources, moments have rows
skipped_reason:
  description:
    - C(standby) (connected to a standby), C(locked) (another run holds the advisory lock) or
      C(already_rebuilt) (another run rebuilt the target before this one took the lock); C(null) otherwise.
  returned: always
  type: str
is_primary:
  description: Whether the server is a primary (not in recovery).
  returned: always
  type: bool
target_table:
  description: The resolved target table.
  returned: on a primary
  type: str
  sample: kv_store
target_unlogged:
  description: Whether the target table is UNLOGGED.
  returned: on a primary
  type: bool
lock_key:
  description: The advisory lock key used.
  returned: on a primary
  type: int
target_rows_before:
  description: Rows in the target before the rebuild; C(0) when the check found it empty; C(null) when not counted.
  returned: always
  type: int
target_rows_after:
  description: Rows in the target after the rebuild or when the watermark was written; C(null) when not counted.
  returned: always
  type: int
tables:
  description: The rows returned by a set-returning rebuild function, one dict per row.
  returned: always
  type: list
  elements: dict
  sample: [{"table_name": "resources", "rows_inserted": 5000}]
function_result:
  description: The value returned by a rebuild function that returns a single value (such as a row count).
  returned: always
  type: raw
duration_ms:
  description: Duration of the run in milliseconds.
  returned: always
  type: int
events:
  description:
    - What happened to the server since the previous watermark, from C(system_changed), C(failover)
      (timeline changed), C(restart) (postmaster start time changed) and C(primary_changed) (the address
      of the primary changed, or O(current_primary) differs from the one recorded in the watermark).
  returned: always
  type: list
  elements: str
  sample: [failover, primary_changed]
server:
  description: Identity of the server as recorded in the watermark.
  returned: always
  type: dict
  contains:
    system_identifier:
      description: Database system identifier (a 64-bit number as text).
      type: str
    timeline:
      description: Current timeline ID.
      type: int
    lsn:
      description: Current WAL location (C(X/Y)).
      type: str
    postmaster_start_time:
      description: When the server started (ISO 8601, UTC).
      type: str
    primary_instance:
      description: Address and port of the server as this connection reached it.
      type: str
previous_watermark:
  description:
    - The main fields of the watermark found at the start of the run (C(snapshot_ts), C(primary_instance),
      C(timeline), C(system_identifier), C(postmaster_start_time), C(kv_store_count), C(current_primary)), or C(null).
  returned: always
  type: dict
current_primary:
  description: The value of O(current_primary), or C(null) when it was not given.
  returned: always
  type: str
  sample: rem-db-2
watermark:
  description: Where the watermark is kept, whether it was written, and the document written.
  returned: when O(watermark) is set and a watermark was due
  type: dict
  contains:
    bucket:
      description: Bucket.
      type: str
    key:
      description: Object key.
      type: str
    written:
      description: Whether the document was uploaded.
      type: bool
    document:
      description:
        - The watermark document (C(snapshot_ts), C(primary_instance), C(kv_store_count), C(tables), identity
          fields, and C(current_primary) when O(current_primary) was given).
      type: dict
    error:
      description: Why the upload failed, when it failed and O(watermark_required=false).
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import rebuild as unlogged_rebuild


def main():
    module_main(AnsibleModule, unlogged_rebuild.module_spec(), unlogged_rebuild.check_and_rebuild, connection_secrets)


if __name__ == '__main__':
    main()
