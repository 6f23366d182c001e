#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: walg_backup
short_description: Push a base backup of a PostgreSQL data directory with wal-g, full or delta
version_added: 0.1.0
description:
  - Runs C(wal-g backup-push) of O(data_directory) to O(prefix); wal-g connects to the server through libpq's
    environment, made from the connection options (never its command line).
  - Takes a full backup, or with O(delta_max_steps) a delta against the newest backup while its chain holds fewer
    deltas than that (wal-g's E(WALG_DELTA_MAX_STEPS) rule). Check mode says which, and why, and runs nothing but
    reads of the storage.
  - Returns the backup it made as M(pgops.resilience.walg_backup_info) describes it, read back from the storage.
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
      - Reads the storage to say whether a run would take a full or a delta backup; pushes nothing.
  diff_mode:
    support: none
options:
  data_directory:
    description:
      - The data directory of the server the connection options reach. The module's user must be able to read it
        (the server's system user, or root).
      - It must not hold a Unix socket (wal-g cannot archive one); keep C(unix_socket_directories) outside it.
    type: path
    required: true
  permanent:
    description:
      - Mark the backup permanent (C(backup-push --permanent)); retention keeps it.
    type: bool
    default: false
  delta_max_steps:
    description:
      - C(0) takes a full backup every time. C(N) takes a delta against the newest backup while its chain holds fewer
        than C(N) deltas, else a full one. wal-g takes no delta from a permanent backup for one that is not.
    type: int
    default: 0
  user_data:
    description:
      - Recorded with the backup (C(backup-push --add-user-data)), returned by M(pgops.resilience.walg_backup_info).
    type: raw
notes:
  - Needs wal-g (3.0 or later) on the host that runs the module, and a role that may run C(pg_backup_start) (a
    superuser, or one granted it).
seealso:
  - module: pgops.resilience.walg_backup_info
'''

EXAMPLES = r'''
- name: Nightly backup, a full one each week and deltas in between
  pgops.resilience.walg_backup:
    prefix: s3://backups/walg/main
    data_directory: /var/lib/postgresql/15/main
    login_host: /var/run/postgresql
    delta_max_steps: 6
    user_data:
      job: nightly
  register: pushed

- name: A permanent backup before an upgrade
  pgops.resilience.walg_backup:
    prefix: file:///mnt/backups/walg
    data_directory: /var/lib/postgresql/15/main
    permanent: true
    timeout: 7200
'''

RETURN = r'''
kind:
  description: C(full) or C(delta), what was taken (in check mode, what would be).
  returned: always
  type: str
delta_origin:
  description: The backup the delta was taken against, C(null) for a full backup.
  returned: always
  type: str
reason:
  description: Why wal-g takes a full or a delta backup (in check mode and in a run).
  returned: always
  type: str
backup:
  description:
    - The backup made, with the fields of the RV(pgops.resilience.walg_backup_info#module:backups) of
      M(pgops.resilience.walg_backup_info); C(null) in check mode.
  returned: always
  type: dict
seconds:
  description: Seconds of the push (C(push)) and of the whole run (C(total)); empty in check mode.
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._walg import push


def main():
    module_main(AnsibleModule, push.module_spec(), push.take_backup, push.secrets)


if __name__ == '__main__':
    main()
