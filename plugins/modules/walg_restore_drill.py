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
  - With O(amcheck) (the drill playbook turns it on), C(pg_amcheck) then checks every table and B-tree index of every
    database for physical corruption; corruption fails the drill, naming the relation and the block.
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
        the backup whose stop sentinel was written last; with O(recovery_target_time), the newest backup that finished
        before that moment. Give that time with its UTC offset, such as C(2026-11-20 10:30:00+00), since PostgreSQL
        would read one without in the restored server's time zone.
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
  description: Fetch + recovery + checks, in seconds (C(pg_amcheck) of O(amcheck) not included).
  returned: when the drill ran
  type: float
seconds:
  description:
    - Seconds per phase (C(fetch), C(prepare), C(start_to_consistent), C(recovery), C(checks), C(stop), C(total)),
      and C(amcheck) when O(amcheck) is true.
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
amcheck:
  description:
    - What C(pg_amcheck) checked and found, with O(amcheck). A drill that found corruption fails, and its result holds
      this too.
  returned: when O(amcheck) is true and the drill ran
  type: dict
  contains:
    databases:
      description: The databases checked, those that allow connections.
      type: list
      elements: str
      sample: [app, postgres, template1]
    relations_checked:
      description: Tables (TOAST tables and the catalogs included) and B-tree indexes checked, from C(pg_amcheck --progress).
      type: int
    pages_checked:
      description: Pages of those relations checked.
      type: int
    options:
      description: The C(pg_amcheck) options used.
      type: list
      elements: str
      sample: [--all, --install-missing, --parent-check, --heapallindexed]
    corruption:
      description:
        - >-
          What C(pg_amcheck) reported, one line per finding (at most 100), such as
          C(heap table "app.public.orders", block 0, offset 61: data begins at offset 255 beyond the tuple length 61).
        - Empty when the drill passed.
      type: list
      elements: str
    corruption_count:
      description: The number of findings, all of them.
      type: int
    corrupt_relations:
      description: Each relation with findings (at most 100), with C(kind) (C(heap table) or C(btree index)), C(database),
        C(relation) (C(schema.name)) and C(blocks) (the heap blocks named, at most 20).
      type: list
      elements: dict
    seconds:
      description: Seconds C(pg_amcheck) took.
      type: float
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
