#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: walg_restore_drill
short_description: Prove that a wal-g base backup really restores - fetch it, recover it, start it, check it, time it
version_added: 0.1.0
description:
  - Fetches a base backup of a wal-g storage with C(wal-g backup-fetch) into a new scratch directory, checks
    C(PG_VERSION), C(global/pg_control) and C(backup_label), and starts PostgreSQL on it with C(wal-g wal-fetch %f %p)
    as C(restore_command) (PostgreSQL 15 docs, 26.3.4 "Recovering Using a Continuous Archive Backup").
  - Waits until recovery reaches a consistent state and the server is promoted, runs SQL checks (O(checks), or a
    default set - the catalog answers, every database accepts a connection, exact row counts of the user tables),
    reports the RTO (fetch + recovery + checks, in seconds), stops the server and removes the scratch directory.
  - The drill instance listens on no TCP address (a private Unix socket only) and has archiving off, so it never
    writes into the production storage, which is only read.
  - A drill fails loudly, with the query and what it returned, with the server log's FATAL lines, or with the backup
    and the storage named when a part of the backup is missing.
  - Runs the server as O(server_user) when the module runs as root (PostgreSQL refuses to run as root); that user
    runs C(wal-g wal-fetch), so O(walg_bin) must be reachable by it. The storage settings reach it in the server's
    environment, never in a file.
  - O(timeout) bounds each wal-g call, and also the start, recovery and promotion of the drill server, and each check.
  - Check mode only resolves the backup and reports the restore_command.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.walg
  - pgops.resilience.s3
  - pgops.resilience.drill
options:
  backup_name:
    description:
      - The backup to restore, by name (C(base_000000010000000000000002)). C(LATEST) is the one wal-g calls LATEST,
        the backup whose stop sentinel was written last.
    type: str
    default: LATEST
attributes:
  check_mode:
    support: full
    details:
      - Check mode resolves the backup and reports the restore_command; nothing is fetched or started.
  diff_mode:
    support: none
seealso:
  - module: pgops.resilience.walg_backup_info
  - module: pgops.resilience.barman_restore_drill
'''

EXAMPLES = r'''
- name: Restore the newest wal-g backup and check it
  pgops.resilience.walg_restore_drill:
    prefix: s3://backups/walg/main
    database: app
    checks:
      - name: orders are there
        query: SELECT count(*) > 0 FROM public.orders
        expected: true
  register: drill

- name: PITR drill to a point in time
  pgops.resilience.walg_restore_drill:
    prefix: s3://backups/walg/main
    recovery_target_time: "2026-11-20 10:30:00+00"
'''

RETURN = r'''
verdict:
  description: C(passed) (a failed drill fails the task, with C(verdict) C(failed) and the C(phase)).
  returned: always
  type: str
backup:
  description:
    - The backup restored, with the fields of the RV(pgops.resilience.walg_backup_info#module:backups) of
      M(pgops.resilience.walg_backup_info).
  returned: always
  type: dict
prefix:
  description: The storage read (O(prefix)).
  returned: always
  type: str
rto_seconds:
  description: Fetch + recovery + checks, in seconds.
  returned: when the drill ran
  type: float
seconds:
  description: Seconds per phase (C(fetch), C(prepare), C(start_to_consistent), C(recovery), C(checks), C(stop), C(total)).
  returned: when the drill ran
  type: dict
timeline:
  description: The timeline the drill server was promoted to (the backup's is C(backup.timeline)).
  returned: when the drill ran
  type: int
checks:
  description: Each check with C(name), C(query), C(database), C(expected), C(value), C(passed) and C(error).
  returned: when the drill ran
  type: list
  elements: dict
row_counts:
  description: Exact row counts of the user tables of O(database), C(schema.table) to rows.
  returned: when the drill ran
  type: dict
recovery:
  description: What the server log says of the recovery (consistent LSN, end LSN, where it stopped, last transaction time).
  returned: when the drill ran
  type: dict
restore_command:
  description: The restore_command the drill server would use.
  returned: in check mode
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill


def main():
    module_main(AnsibleModule, drill.module_spec(), drill.restore_drill, drill.secrets)


if __name__ == '__main__':
    main()
