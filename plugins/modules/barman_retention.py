#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: barman_retention
short_description: Enforce a barman retention policy on a barman-cloud catalog, WAL included, and remove orphaned server directories
version_added: 0.1.0
description:
  - Computes which base backups the retention policy makes obsolete and which WAL objects go with them, the way
    barman does (the exact object keys, WAL ranges and bytes freed), before anything is touched.
  - Checks that plan against barman's own C(barman-cloud-backup-delete --dry-run) and refuses to go on when they
    differ; then runs C(barman-cloud-backup-delete --retention-policy) itself, so base backups and the WAL they no
    longer need are removed together, and checks the catalog afterwards.
  - Never leaves the catalog without a backup, never removes WAL a kept backup needs, never deletes a backup with
    a keep annotation (C(barman-cloud-backup-keep)); FAILED or STARTED backups are reported by
    M(pgops.resilience.barman_catalog_info), not deleted.
  - Removes the server directories of old or renamed clusters under the same O(destination_path) only when named
    in O(remove_servers), never the active O(server_name), with a size report first.
  - In check mode, reports exactly what would be deleted and deletes nothing.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.barman
  - pgops.resilience.s3
options:
  retention_policy:
    description:
      - barman's retention policy syntax, C(REDUNDANCY n) or C(RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS) (a month is
        31 days, as in barman). CloudNativePG's ObjectStore C(retentionPolicy) C(7d) is C(RECOVERY WINDOW OF 7 DAYS).
      - When unset, only O(remove_servers) is acted on.
    type: str
  minimum_redundancy:
    description:
      - The number of newest DONE backups that are always kept, whatever the policy (barman's C(minimum_redundancy)).
      - At least 1.
    type: int
    default: 1
  remove_servers:
    description:
      - Names of other server directories under O(destination_path) to delete entirely (orphaned catalogs of old
        clusters). Each must look like a barman server directory (C(base/) or C(wals/) under it).
    type: list
    elements: str
    default: []
  verify_with_dry_run:
    description:
      - Run C(barman-cloud-backup-delete --dry-run) first and refuse to delete when its list of objects differs from
        the plan.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Check mode computes the plan, checks it against barman's dry run, and deletes nothing.
  diff_mode:
    support: none
seealso:
  - module: pgops.resilience.barman_catalog_info
  - name: barman-cloud-backup-delete
    description: The barman manual, "barman-cloud-backup-delete".
    link: https://docs.pgbarman.org/release/latest/user_guide/barman_cloud.html
'''

EXAMPLES = r'''
- name: Keep a 7-day recovery window, WAL included
  pgops.resilience.barman_retention:
    destination_path: s3://kilobase/barman/backup
    server_name: kilobase-postgres-backup
    retention_policy: RECOVERY WINDOW OF 7 DAYS
    minimum_redundancy: 2

- name: Preview the removal of two orphaned server directories of old clusters
  pgops.resilience.barman_retention:
    destination_path: s3://kilobase/barman/backup
    server_name: kilobase-postgres-backup
    remove_servers:
      - supabase
      - supabase-release-supabase-db
  check_mode: true
  register: preview
'''

RETURN = r'''
plan:
  description: What the retention policy removes (computed before anything is touched).
  returned: when O(retention_policy) is set
  type: dict
  contains:
    policy:
      description: The policy in barman's spelling.
      type: str
    delete_backups:
      description: IDs of the backups removed.
      type: list
      elements: str
    kept_backups:
      description: IDs of the DONE backups kept.
      type: list
      elements: str
    backups:
      description: Every backup with its status, end time, barman retention status (VALID, OBSOLETE, OBSOLETE*, KEEP:FULL, ...) and C(delete).
      type: list
      elements: dict
    wal_ranges:
      description: Runs of removed WAL objects per timeline, with C(first), C(last), C(objects) and C(bytes).
      type: list
      elements: dict
    backup_objects:
      description: Keys of the base backup objects removed.
      type: list
      elements: str
    wal_objects:
      description: Keys of the WAL objects removed.
      type: list
      elements: str
    objects:
      description: Number of objects removed.
      type: int
    bytes_freed:
      description: Bytes the removed backups and WAL take.
      type: int
dry_run_agrees:
  description: True when barman's C(--dry-run) listed exactly the planned objects; null when not checked.
  returned: when backups are to be removed
  type: bool
removed_servers:
  description: The orphaned server directories removed (or that would be), with C(name), C(prefix), C(objects) and C(bytes).
  returned: always
  type: list
  elements: dict
bytes_freed:
  description: Bytes freed in all (backups, WAL and server directories).
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._barman import retention as barman_retention


def main():
    module_main(AnsibleModule, barman_retention.module_spec(), barman_retention.apply_retention)


if __name__ == '__main__':
    main()
