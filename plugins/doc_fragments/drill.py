# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the physical restore drill modules (barman-cloud's and wal-g's)."""

from __future__ import annotations


class ModuleDocFragment:
    """The recovery target, the checks and the drill instance (``_drill.options.drill_argument_spec``)."""

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
