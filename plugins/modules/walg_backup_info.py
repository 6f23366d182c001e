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
  - With O(verify), also runs C(wal-g wal-verify integrity timeline --json) and returns each check's status and a
    verdict. wal-g exits 0 whatever it finds; the module reads the status fields, and never fails on a verdict (the
    C(walg_verify) playbook does).
  - wal-g calls every missing segment since the earliest backup lost. After M(pgops.resilience.walg_retention) has
    deleted the WAL between kept weekly backups, that is by design, so a lost segment fails the integrity check only
    when a backup needs it, to become consistent (its start to finish LSN) or for the recovery window
    (O(recovery_window_days); without it, everything from the earliest backup on).
  - Only reads; never reports C(changed).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.walg
  - pgops.resilience.s3
  - pgops.resilience.postgres
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
options:
  verify:
    description:
      - WAL checks of C(wal-g wal-verify) to run, C(integrity) (every segment since the earliest backup up to the
        server's current one is in the storage) and C(timeline) (the server's timeline is the highest in the storage).
      - They ask the server for its current WAL segment, through the connection options (libpq's environment).
      - wal-g takes a segment missing within E(WALG_UPLOAD_CONCURRENCY) (default 16) segments of the newest for one
        still being archived, a C(WARNING), not a C(FAILURE).
    type: list
    elements: str
    choices: [integrity, timeline]
    default: []
  recovery_window_days:
    description:
      - The recovery window that retention keeps (M(pgops.resilience.walg_retention)'s option of that name). A lost
        segment fails the integrity check when it is at or after the start of the window's base backup, on a timeline
        newer than the base's, or inside a backup's start to finish LSN. C(0) counts from the newest backup, as
        retention does. Unset, every segment from the earliest backup on is needed.
    type: int
notes:
  - Needs wal-g (3.0 or later) on the host that runs the module; the identity used needs read access to the storage.
  - The connection options are used only by O(verify).
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

- name: Verify the WAL the backups and a 7-day recovery window need (the server through PG* variables)
  pgops.resilience.walg_backup_info:
    prefix: s3://backups/walg/main
    verify: [integrity, timeline]
    recovery_window_days: 7
  register: walg_verified

- name: Fail on a lost segment or a timeline behind the storage
  ansible.builtin.assert:
    that: walg_verified.verdict != 'failure'

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
verify:
  description: Each check of O(verify) with its status, C(OK), C(WARNING) or C(FAILURE).
  returned: when O(verify) is given
  type: dict
  contains:
    integrity:
      description: >-
        C(status); C(walg_status), what wal-g said before the lost runs were judged against what the backups need;
        C(details), the runs of segments (C(timeline_id), C(start_segment), C(end_segment), C(segments_count),
        C(status) C(FOUND), C(MISSING_DELAYED), C(MISSING_UPLOADING) or C(MISSING_LOST), and C(needed)); C(lost), the
        needed runs that are lost.
      type: dict
    timeline:
      description: C(status) and C(details) (C(current_timeline_id), C(highest_storage_timeline_id)) as wal-g gives them.
      type: dict
  sample:
    integrity:
      status: OK
      walg_status: FAILURE
      lost: []
      details:
        - {timeline_id: 1, start_segment: "000000010000000000000002", end_segment: "000000010000000000000005",
           segments_count: 4, status: MISSING_LOST, needed: false}
        - {timeline_id: 1, start_segment: "000000010000000000000006", end_segment: "000000010000000000000009",
           segments_count: 4, status: FOUND, needed: false}
    timeline:
      status: OK
      details: {current_timeline_id: 1, highest_storage_timeline_id: 1}
verdict:
  description: The worst status of RV(verify), C(ok), C(warning) or C(failure).
  returned: when O(verify) is given
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._walg import info


def main():
    module_main(AnsibleModule, info.module_spec(), info.list_backups, info.secrets)


if __name__ == '__main__':
    main()
