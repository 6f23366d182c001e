#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_space_info
short_description: Report where a PostgreSQL server's disk space goes and judge the free space left
version_added: 0.1.0
description:
  - The runbook's C(make pg.space) as a module, the first step of its "Out of Space" procedure.
  - Reads the size of every database, the largest tables of the database connected to (O(login_db)) split into
    heap, indexes and TOAST, and the WAL in C(pg_wal), with the archiver's counters and the WAL each replication
    slot retains (the usual reasons for C(pg_wal) to grow).
  - Measures the file systems holding the data directory, C(pg_wal) when it is a link to another file system, and
    the WAL archive directory (O(wal_archive_directory)), whose own size is counted too.
  - Gives a RV(verdict), C(ok), C(warning) or C(critical), with its RV(verdict_reasons), from the free space of
    those file systems against the thresholds.
  - Only reads; never reports C(changed).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
options:
  data_directory:
    description:
      - The server's data directory (PGDATA) as the host running the module sees it.
      - By default the server is asked (C(SHOW data_directory), which needs superuser or C(pg_read_all_settings)).
        That path is only meaningful when the module runs on the database host (or in the database pod), so run
        it there, with C(delegate_to) for example.
      - When the module can read C(global/pg_control) in it, the module checks that it is the data directory of the
        server connected to (same system identifier) and fails when it is another cluster's.
    type: path
  wal_archive_directory:
    description:
      - A local WAL archive directory, such as the runbook's C(/wal-archive) volume that C(archive_command) copies
        WAL segments into. Its file system is judged too and its size and file count are reported.
    type: path
  warning_free_percent:
    description:
      - The verdict is at least C(warning) when a file system has less than this percentage of its size available.
      - From 0 to 100, not below O(critical_free_percent).
    type: float
    default: 20
  critical_free_percent:
    description:
      - The verdict is C(critical) when a file system has less than this percentage of its size available.
      - From 0 to 100, not above O(warning_free_percent). Equal thresholds leave no warning band.
    type: float
    default: 10
  warning_free_bytes:
    description:
      - Also C(warning) when a file system has fewer bytes available than this. Not set by default.
    type: int
  critical_free_bytes:
    description:
      - Also C(critical) when a file system has fewer bytes available than this. Not set by default.
      - Not above O(warning_free_bytes) when both are set.
    type: int
  top_tables:
    description: How many of the largest tables and materialized views to list in RV(tables); 0 lists none.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    details:
      - The module only reads (its session is READ ONLY, so no statement can write), so check mode runs it
        unchanged.
  diff_mode:
    support: none
notes:
  - Available space is what an unprivileged user such as the server can still write (C(statvfs) C(f_bavail)); the
    blocks reserved for root count as used. RV(filesystems[].free_percent) is the available space in percent of the
    file system's size.
  - The size of C(pg_wal) needs superuser or membership in C(pg_monitor) (C(pg_ls_waldir)); without it
    RV(wal.bytes) is C(null) and RV(notes) says why. The size of a database needs CONNECT privilege on it or
    C(pg_read_all_stats).
  - A file system reached through several paths (the data directory and the archive on one volume) is listed and
    judged once per path.
seealso:
  - module: pgops.resilience.pg_sanity_info
  - name: Database Object Management Functions
    description: pg_database_size, pg_total_relation_size, pg_table_size, pg_indexes_size.
    link: https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-DBOBJECT
  - name: Generic File Access Functions
    description: pg_ls_waldir.
    link: https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADMIN-GENFILE
'''

EXAMPLES = r'''
- name: Check the space on the database host (libpq settings from the environment)
  pgops.resilience.pg_space_info:
    wal_archive_directory: /wal-archive
  register: space

- name: Fail when a disk is about to fill up
  ansible.builtin.fail:
    msg: "{{ space.verdict_reasons | join('; ') }}"
  when: space.verdict == 'critical'

- name: Tighter thresholds, an explicit data directory, the ten largest tables
  pgops.resilience.pg_space_info:
    login_db: records
    data_directory: /var/lib/postgresql/data
    warning_free_percent: 30
    critical_free_percent: 15
    critical_free_bytes: 5368709120
    top_tables: 10
  register: space

- name: Show the largest tables
  ansible.builtin.debug:
    msg: "{{ item.schema }}.{{ item.name }}: {{ item.total_pretty }} ({{ item.index_pretty }} in indexes)"
  loop: "{{ space.tables }}"
'''

RETURN = r'''
server_version:
  description: The server's version.
  returned: always
  type: str
  sample: "15.10"
database:
  description: The database connected to, whose tables RV(tables) lists.
  returned: always
  type: str
  sample: records
in_recovery:
  description: Whether the server is a standby (or recovering).
  returned: always
  type: bool
databases:
  description: Every database, largest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Database name.
      type: str
    bytes:
      description: Size in bytes (C(pg_database_size)); C(null) without the privilege to read it.
      type: int
    pretty:
      description: The size as C(pg_size_pretty) writes it.
      type: str
  sample: [{"name": "records", "bytes": 10737418240, "pretty": "10 GB"}]
databases_total_bytes:
  description: The sum of RV(databases[].bytes).
  returned: always
  type: int
  sample: 10752483328
databases_total_pretty:
  description: RV(databases_total_bytes) as C(pg_size_pretty) writes it.
  returned: always
  type: str
  sample: 10254 MB
tables:
  description: The O(top_tables) largest tables and materialized views of RV(database), largest first.
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
      description: C(table) or C(materialized view).
      type: str
    total_bytes:
      description: Everything, in bytes (C(pg_total_relation_size)), the sum of the three next fields.
      type: int
    table_bytes:
      description: The table's own data with its free space and visibility maps, in bytes.
      type: int
    index_bytes:
      description: Its indexes, in bytes (C(pg_indexes_size)).
      type: int
    toast_bytes:
      description: Its TOAST table with the TOAST index, in bytes.
      type: int
    total_pretty:
      description: RV(tables[].total_bytes) as C(pg_size_pretty) writes it.
      type: str
    table_pretty:
      description: RV(tables[].table_bytes) as C(pg_size_pretty) writes it.
      type: str
    index_pretty:
      description: RV(tables[].index_bytes) as C(pg_size_pretty) writes it.
      type: str
    toast_pretty:
      description: RV(tables[].toast_bytes) as C(pg_size_pretty) writes it.
      type: str
  sample: [{"schema": "public", "name": "records", "kind": "table", "total_bytes": 4294967296, "table_bytes": 3221225472,
            "index_bytes": 805306368, "toast_bytes": 268435456, "total_pretty": "4096 MB", "table_pretty": "3072 MB",
            "index_pretty": "768 MB", "toast_pretty": "256 MB"}]
wal:
  description: The WAL of the server.
  returned: always
  type: dict
  contains:
    directory:
      description: The C(pg_wal) directory under the data directory.
      type: str
    readable:
      description: Whether the user may list C(pg_wal) (superuser or C(pg_monitor)).
      type: bool
    files:
      description: Files in C(pg_wal); C(null) when not readable.
      type: int
    bytes:
      description: Their bytes; C(null) when not readable.
      type: int
    pretty:
      description: RV(wal.bytes) as C(pg_size_pretty) writes it.
      type: str
    segment_size:
      description: The WAL segment size in bytes.
      type: int
    archiver:
      description:
        - The archiver's counters (C(pg_stat_archiver)) with C(archived_count), C(last_archived_wal),
          C(last_archived_time), C(failed_count), C(last_failed_wal) and C(last_failed_time) (ISO 8601, UTC).
        - A failing C(archive_command) keeps every WAL segment in C(pg_wal).
      type: dict
    slots:
      description:
        - Replication slots with C(name), C(type), C(active), C(wal_status) and the WAL they retain,
          C(retained_bytes) and C(retained_pretty). An inactive slot keeps WAL until it is dropped.
      type: list
      elements: dict
  sample: {"directory": "/var/lib/postgresql/data/pg_wal", "readable": true, "files": 12, "bytes": 201326592, "pretty": "192 MB",
           "segment_size": 16777216, "archiver": {"archived_count": 4711, "last_archived_wal": "00000001000000120000004F",
           "last_archived_time": "2026-01-31T05:59:02Z", "failed_count": 0, "last_failed_wal": null, "last_failed_time": null},
           "slots": []}
data_directory:
  description: The data directory measured.
  returned: always
  type: str
  sample: /var/lib/postgresql/data
data_directory_source:
  description: C(option) (O(data_directory)) or C(server) (C(SHOW data_directory)).
  returned: always
  type: str
data_directory_verified:
  description:
    - V(true) when RV(data_directory) holds the C(global/pg_control) of the server connected to; C(null) when that
      could not be checked.
  returned: always
  type: bool
wal_archive:
  description: The contents of O(wal_archive_directory), counted recursively; C(null) without it.
  returned: always
  type: dict
  contains:
    path:
      description: The directory.
      type: str
    bytes:
      description: Bytes of the regular files under it.
      type: int
    files:
      description: Number of regular files under it.
      type: int
    pretty:
      description: RV(wal_archive.bytes) as C(pg_size_pretty) writes it.
      type: str
  sample: {"path": "/wal-archive", "bytes": 3221225472, "files": 192, "pretty": "3072 MB"}
filesystems:
  description: The file systems judged, one per path, C(data_directory) first.
  returned: always
  type: list
  elements: dict
  contains:
    option:
      description: What the path is, C(data_directory), C(pg_wal) or C(wal_archive_directory).
      type: str
    path:
      description: The path measured.
      type: str
    mount_point:
      description: The mount point of its file system.
      type: str
    device:
      description: The device number of its file system (equal numbers, same file system).
      type: int
    total_bytes:
      description: Size of the file system in bytes.
      type: int
    used_bytes:
      description: Bytes in use, including the blocks reserved for root.
      type: int
    free_bytes:
      description: Free bytes, including the blocks reserved for root.
      type: int
    available_bytes:
      description: Bytes an unprivileged user can still write.
      type: int
    free_percent:
      description: RV(filesystems[].available_bytes) in percent of RV(filesystems[].total_bytes), two decimals.
      type: float
    total_pretty:
      description: RV(filesystems[].total_bytes), human readable.
      type: str
    used_pretty:
      description: RV(filesystems[].used_bytes), human readable.
      type: str
    available_pretty:
      description: RV(filesystems[].available_bytes), human readable.
      type: str
  sample: [{"option": "data_directory", "path": "/var/lib/postgresql/data", "mount_point": "/var/lib/postgresql", "device": 2049,
            "total_bytes": 107374182400, "used_bytes": 96636764160, "free_bytes": 10737418240, "available_bytes": 10737418240,
            "free_percent": 10.0, "total_pretty": "100 GB", "used_pretty": "90 GB", "available_pretty": "10 GB"}]
thresholds:
  description: The thresholds applied.
  returned: always
  type: dict
  sample: {"warning_free_percent": 20.0, "critical_free_percent": 10.0, "warning_free_bytes": null, "critical_free_bytes": null}
verdict:
  description: C(ok), C(warning) or C(critical), the worst over RV(filesystems).
  returned: always
  type: str
  sample: warning
verdict_reasons:
  description: Why the verdict is not C(ok), critical ones first (empty when it is C(ok)).
  returned: always
  type: list
  elements: str
  sample: ["data_directory /var/lib/postgresql/data: 9.50% free (9728 MB of 100 GB available), critical below 10%"]
notes:
  description: What could not be read or checked, and why.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._inspect import space


def main():
    module_main(AnsibleModule, space.module_spec(), space.measure_space, connection_secrets)


if __name__ == '__main__':
    main()
