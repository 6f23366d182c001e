#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: walg_backup_info
short_description: List the base backups of a wal-g storage, with their LSNs, timeline, delta origin and permanence
version_added: 0.1.0
description:
  - Lists the base backups of a wal-g storage (S3 or a directory) with C(wal-g backup-list --detail --json), and reads
    each backup's stop sentinel (C(wal-g st cat basebackups_005/<name>_backup_stop_sentinel.json)) for what the list
    lacks, full or delta and the backup a delta was taken against.
  - LSNs are returned in PostgreSQL's C(X/Y) form (wal-g 3.0.9 prints integers), times as ISO 8601 in UTC, the
    timeline from the backup's name, and the system identifier as text (it exceeds what a JSON number keeps exactly).
  - Backups are ordered by their start and finish times, never by name or LSN (a new timeline or a restored cluster
    can give a newer backup a smaller one).
  - Only reads; never reports C(changed).
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
      - The module only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
notes:
  - Needs wal-g (3.0 or later) on the host that runs the module; the identity used needs read access to the storage.
seealso:
  - name: wal-g for PostgreSQL
    description: wal-g's commands and settings.
    link: https://github.com/wal-g/wal-g/blob/master/docs/PostgreSQL.md
'''

EXAMPLES = r'''
- name: The backups in S3 (credentials from the AWS_* environment variables)
  pgops.resilience.walg_backup_info:
    prefix: s3://backups/walg/main
  register: walg

- name: Fail when there is no full backup
  ansible.builtin.assert:
    that: walg.backups | selectattr('is_full') | list | length > 0
    fail_msg: "no full wal-g backup in {{ walg.prefix }}"

- name: A directory on a mounted volume, a MinIO-style endpoint for another
  pgops.resilience.walg_backup_info:
    prefix: file:///mnt/backups/walg
    walg_bin: /usr/local/bin/wal-g
    timeout: 120
'''

RETURN = r'''
prefix:
  description: The storage read (O(prefix)).
  returned: always
  type: str
count:
  description: How many base backups there are.
  returned: always
  type: int
backups:
  description: The base backups, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name, C(base_<WAL file>) or C(base_<WAL file>_D_<WAL file of its origin>) for a delta.
      type: str
    start_time:
      description: When the backup started, ISO 8601 in UTC.
      type: str
    finish_time:
      description: When it finished, ISO 8601 in UTC.
      type: str
    start_lsn:
      description: The LSN the backup starts at (C(X/Y)); recovery from it needs WAL from here.
      type: str
    finish_lsn:
      description: The LSN it ends at (C(X/Y)); recovery reaches consistency there.
      type: str
    timeline:
      description: The timeline of its start, from its name.
      type: int
    is_permanent:
      description: Whether C(wal-g backup-mark) made it permanent (retention keeps it).
      type: bool
    is_full:
      description: True for a full backup, false for a delta.
      type: bool
    delta_origin:
      description: The backup a delta was taken against (the stop sentinel's C(DeltaFrom)), C(null) for a full one.
      type: str
    delta_full_name:
      description: The full backup a delta's chain starts from (C(DeltaFullName)), C(null) for a full one.
      type: str
    compressed_size:
      description: Bytes stored.
      type: int
    uncompressed_size:
      description: Bytes of the data backed up.
      type: int
    pg_version:
      description: The server's version number (C(server_version_num), such as C(150018)).
      type: int
    system_identifier:
      description: The database system identifier of the cluster backed up, as text (exact).
      type: str
    user_data:
      description: What C(backup-push --add-user-data) recorded, or C(null).
      type: raw
  sample:
    - name: base_000000010000000000000002
      start_time: "2026-12-08T00:16:10.471377Z"
      finish_time: "2026-12-08T00:16:11.699839Z"
      start_lsn: 0/2000028
      finish_lsn: 0/2000100
      timeline: 1
      is_permanent: false
      is_full: true
      delta_origin: null
      delta_full_name: null
      compressed_size: 4341364
      uncompressed_size: 23223641
      pg_version: 150018
      system_identifier: "7716720356758748542"
      user_data: null
newest:
  description: The newest backup (the last of RV(backups)), or C(null) when there is none.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._walg import info


def main():
    module_main(AnsibleModule, info.module_spec(), info.list_backups, info.secrets)


if __name__ == '__main__':
    main()
