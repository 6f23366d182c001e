# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the physical restore drill modules (barman-cloud's and wal-g's)."""

from __future__ import annotations


class ModuleDocFragment:
    """The recovery target, the checks, pg_amcheck and the drill instance (``_drill.options.drill_argument_spec``)."""

    DOCUMENTATION = r'''
options:
  recovery_target_time:
    description:
      - Point-in-time recovery up to this time (C(recovery_target_time), a timestamp with time zone such as
        C(2026-11-20 10:30:00+00)). At most one of the four recovery targets.
    type: str
  recovery_target_lsn:
    description: Recovery up to this LSN (C(0/3000060)).
    type: str
  recovery_target_xid:
    description: Recovery up to this transaction ID.
    type: str
  recovery_target_name:
    description: Recovery up to this restore point (made with C(pg_create_restore_point)).
    type: str
  recovery_target_inclusive:
    description: Stop just after the target (true) or just before it (false).
    type: bool
    default: true
  checks:
    description:
      - SQL checks run in read-only transactions once the server is promoted. Each is a dict with C(query), and
        optional C(name), C(expected) and C(database).
      - The value compared with C(expected) is the single value of a one-row, one-column result, otherwise the
        list of rows. Equal as values or as text (an C(expected) of C(42) matches a C(count(*)) of 42).
      - When unset, the default checks run and the exact row counts of the user tables of O(database) are returned.
    type: list
    elements: dict
  row_counts:
    description: Count the rows of every user table of O(database) (default only with the default checks).
    type: bool
  amcheck:
    description:
      - After the checks, run C(pg_amcheck) on the drill instance to prove the restored data physically consistent,
        checking every database that allows connections, every table (C(verify_heapam), TOAST pointers followed) and every
        B-tree index (C(bt_index_parent_check) with C(heapallindexed)), installing the C(amcheck) extension where it
        is missing (C(--install-missing); the drill instance is thrown away afterwards).
      - Corruption fails the drill in phase C(amcheck), naming the database, the relation and the block that
        C(pg_amcheck) reported; the RV(amcheck) result lists the databases and the number of relations and pages
        checked.
      - Runs as O(user), which must be a superuser, through the drill's private socket, bounded by O(timeout). Reads
        every page of every table and index (each index once more for C(heapallindexed)); not counted in RV(rto_seconds).
      - Needs PostgreSQL 14 or later and C(pg_amcheck) (package C(postgresql-client-<major>) on Debian) in the directory
        of the server programs (O(pg_bindir)).
    type: bool
    default: false
  database:
    description: The database the checks connect to.
    type: str
    default: postgres
  user:
    description: The role the checks connect as (the drill's own pg_hba.conf trusts the private socket).
    type: str
    default: postgres
  scratch_parent:
    description:
      - Directory in which the scratch directory is made (default the system temporary directory). It needs room for the whole data directory.
      - The scratch directory made in it is removed at the end. System trees (C(/etc), C(/usr) and all under it, C(/var/log), ... as listed by
        M(pgops.resilience.pg_wipe_data_directory)) are refused, by name, through a symbolic link or a bind mount, in check mode too.
    type: path
  pg_bindir:
    description: Directory of the PostgreSQL server programs of the backup's major version (default found from C(PG_VERSION)).
    type: path
  server_user:
    description: System user that runs the drill server when the module runs as root (default the data directory's owner, else C(postgres)).
    type: str
  keep:
    description: Keep the scratch directory (data directory and server log) for inspection. The server is stopped anyway.
    type: bool
    default: false
'''
