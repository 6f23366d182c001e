#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: walg_retention
short_description: Delete the wal-g base backups and WAL that a daily, weekly and recovery-window policy does not keep
version_added: 0.1.0
description:
  - Computes which base backups and WAL segments of a wal-g storage to keep, in UTC, and deletes the rest with wal-g's
    own commands. The default is the runbook's policy, 7 daily and 4 weekly backups and WAL for a 7-day
    point-in-time recovery (PITR) window.
  - Kept are the newest backup finished on each of the last O(keep_daily) calendar days and in each of the last
    O(keep_weekly) ISO weeks (today and this week count); every backup finished inside the recovery window (the last
    O(recovery_window_days) days) and the newest one finished before it, the base a recovery to the window's first
    moment starts from; always the newest backup and every permanent one; and a kept delta backup's whole chain.
  - WAL is kept from the start of the window's base backup onward, on every timeline, and all of any timeline newer
    than the base's (a restore that forked below the base's start and went on archiving); older WAL only where a kept
    backup needs it to become consistent (its start to finish LSN). Timeline history files are always kept. So the
    WAL between two kept weekly backups is deleted, which C(wal-g delete retain) cannot do.
  - Backups are ordered by their times, never by name or LSN (after a promotion a newer backup can have a smaller one).
  - Deletes with C(wal-g delete target <backup> --confirm), C(wal-g delete garbage ARCHIVES --confirm) for the WAL
    before the oldest kept backup, and C(wal-g st rm) for each other WAL object of the plan. Each C(delete) runs as a
    dry run first and is confirmed only when every object it marks is one the plan deletes.
  - Afterwards the storage is listed again; the module fails when an object the plan keeps is gone or a planned
    deletion is still there.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.walg
  - pgops.resilience.s3
attributes:
  check_mode:
    support: full
    details:
      - Returns the same plan and deletes nothing.
  diff_mode:
    support: none
options:
  keep_daily:
    description:
      - How many calendar days (UTC, today included) keep their newest backup.
    type: int
    default: 7
  keep_weekly:
    description:
      - How many ISO weeks (this week included) keep their newest backup.
    type: int
    default: 4
  recovery_window_days:
    description:
      - The point-in-time recovery window, in days back from now. Every backup finished inside it is kept, with the
        newest one finished before it and all WAL from that backup's start. C(0) keeps WAL from the newest backup on.
    type: int
    default: 7
notes:
  - Needs wal-g (3.0 or later) on the host that runs the module, and an identity that may delete in the storage.
  - Run it after the backup (the M(pgops.resilience.walg_backup) playbook does, with C(walg_retention_enabled)), not
    while one is being pushed.
seealso:
  - module: pgops.resilience.walg_backup_info
  - module: pgops.resilience.walg_backup
'''

EXAMPLES = r'''
- name: What the runbook's policy would delete (nothing is deleted)
  pgops.resilience.walg_retention:
    prefix: s3://backups/walg/main
  check_mode: true
  register: plan

- name: Apply it
  pgops.resilience.walg_retention:
    prefix: s3://backups/walg/main
    keep_daily: 7
    keep_weekly: 4
    recovery_window_days: 7
'''

RETURN = r'''
prefix:
  description: The storage (O(prefix)).
  returned: always
  type: str
keep:
  description: The backups kept, oldest first, each with why.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name.
      type: str
    reasons:
      description: >-
        Why it is kept, such as C(daily 2026-12-08), C(weekly 2026-W50), C(recovery window), C(base of the recovery
        window), C(newest), C(permanent), C(delta chain of <name>).
      type: list
      elements: str
  sample:
    - name: base_000000010000000000000002
      reasons: [weekly 2026-W49, base of the recovery window]
delete:
  description: The backups deleted (in check mode, that would be), oldest first.
  returned: always
  type: list
  elements: str
wal_delete:
  description: The WAL segments deleted, as runs of consecutive segments per timeline.
  returned: always
  type: list
  elements: dict
  contains:
    timeline:
      description: The timeline.
      type: int
    first:
      description: The first WAL file of the run.
      type: str
    last:
      description: The last WAL file of the run.
      type: str
    segments:
      description: How many segments.
      type: int
    bytes:
      description: Bytes stored for them.
      type: int
bytes_freed:
  description: Bytes of the objects deleted (backups and WAL).
  returned: always
  type: int
window_start:
  description: The first moment of the recovery window, ISO 8601 in UTC; C(null) with O(recovery_window_days=0).
  returned: always
  type: str
window_base:
  description: The backup a recovery to the window's start begins from, C(null) without backups.
  returned: always
  type: str
wal_keep_from:
  description: The WAL file from which on every segment is kept, C(null) without backups.
  returned: always
  type: str
wal_bytes:
  description: Bytes of the WAL deleted.
  returned: always
  type: int
seconds:
  description: Seconds spent planning (C(plan)), deleting (C(delete)) and in all (C(total)).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._walg import prune


def main():
    module_main(AnsibleModule, prune.module_spec(), prune.apply_retention, prune.secrets)


if __name__ == '__main__':
    main()
