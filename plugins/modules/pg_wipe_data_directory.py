#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_wipe_data_directory
short_description: Empty a PostgreSQL data directory and recreate it 0700 for the server user
version_added: 0.1.0
description:
  - The runbook's C(pgdata-wipe-full) job. B(It deletes everything in O(data_directory)), so it refuses unless
    O(confirm) is that directory, and refuses while a server runs on it (a C(postmaster.pid) naming a live process
    that works there). Nothing is changed when it refuses.
  - With O(clear_parent=true) also deletes everything else in the parent directory - the mount point of the data
    volume in the runbook's layout (PVC at C(/var/lib/postgresql), PGDATA C(/var/lib/postgresql/data)) - except
    C(lost+found). The parent itself is never removed; a system directory as parent is refused (see below), and so
    is a parent that holds another cluster (see O(clear_parent)).
  - B(System directories are refused) as O(data_directory) and as the parent O(clear_parent) empties, in check mode
    too. Refused with everything under them - C(/bin), C(/boot), C(/dev), C(/etc), C(/lib), C(/lib32), C(/lib64),
    C(/libx32), C(/proc), C(/run), C(/sbin), C(/snap), C(/sys), C(/usr) (all of it), C(/var/backups),
    C(/var/cache), C(/var/lock), C(/var/log), C(/var/mail), C(/var/run), C(/var/spool), C(/var/lib/apt),
    C(/var/lib/dnf), C(/var/lib/dpkg), C(/var/lib/rpm), C(/var/lib/systemd), C(/var/lib/yum). Refused themselves,
    while a directory below them is allowed - C(/), C(/home), C(/media), C(/mnt), C(/opt), C(/srv), C(/tmp),
    C(/var), C(/var/lib), C(/var/local), C(/var/opt), C(/var/tmp), and the home directories C(/root) and
    C(/home/<name>). So C(/var/lib/postgresql/15/main) or C(/srv/pgdata/main) is allowed; C(/var/lib), C(/srv) or
    C(/usr/share) is not. A service account's home elsewhere (C(/var/lib/postgresql) of C(postgres)) is not refused, as
    it is the data volume's mount point in the runbook's layout.
  - The path is compared as given (C(/etc/../etc) is C(/etc)), as resolved through symbolic links (a path through a
    link to C(/etc) is C(/etc)), and by device and inode, so a bind mount of a listed directory is refused too.
  - B(Only a data directory or an empty directory is emptied.) O(data_directory) must be missing, empty, or hold
    C(PG_VERSION) and C(global/pg_control). Files that hold nothing (C(lost+found), C(recovery.signal),
    C(standby.signal), C(postmaster.pid), C(postmaster.opts)) count as empty. Before deleting, the module writes
    C(pgops.resilience-incomplete) into the data directory and removes it last, so that a directory left half-wiped
    (or half-restored by M(pgops.resilience.pg_bootstrap_basebackup)) is accepted by a run again. Any other
    directory is refused with what it holds (check mode too); check the path, and empty it by hand if it may go.
  - The data directory is recreated empty, mode 0700, owned by the server user (PostgreSQL 15 docs, 19.2 "Creating a
    Database Cluster"), so that C(initdb) or a restore can use it. Mount points inside are refused, not emptied.
  - Returns the listings before and after (names and bytes), as the runbook's job shows them.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
options:
  data_directory:
    description:
      - The data directory (PGDATA) to empty, such as V(/var/lib/postgresql/data). A symbolic link is refused.
      - It must be missing, empty or a PostgreSQL data directory, and not a system directory (see the description).
    type: path
    required: true
  confirm:
    description:
      - Must be exactly O(data_directory), to confirm that everything in it is deleted.
    type: str
  clear_parent:
    description:
      - Also delete everything else in the parent directory of O(data_directory), except C(lost+found).
      - B(Refused when the parent holds another PostgreSQL cluster), since O(confirm) names only O(data_directory).
        A cluster is an entry of the parent, or a directory anywhere below one, that is a data directory (the entry
        holds C(PG_VERSION); a directory below it holds C(PG_VERSION) and C(global/)) or that holds a
        C(postmaster.pid) naming a live process; and the parent itself when it is one. So in the Debian layout
        C(/var/lib/postgresql/16/main) with O(clear_parent=true) is refused while the cluster C(/var/lib/postgresql/16/replica)
        is there, whether a server runs on it or not. The error names each cluster; nothing is changed (check mode
        refuses too). Set O(clear_parent=false) to empty only O(data_directory), or stop the other clusters' servers
        and remove them by hand first. Symbolic links in the parent are removed, never followed.
    type: bool
    default: false
  server_user:
    description:
      - System user that gets the recreated data directory when the module runs as root, by name or as numbers
        V(999:999). Defaults to the owner of the data directory (or its parent), else C(postgres). When not root,
        the directory stays the current user's.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - Reports what would be removed (O(confirm) is still required) and refuses what a real run refuses; deletes
        and writes nothing. C(changed) is true only when something would be removed, or the data directory would
        be created or get its mode or owner.
  diff_mode:
    support: none
seealso:
  - module: pgops.resilience.pg_bootstrap_basebackup
'''

EXAMPLES = r'''
- name: Wipe the PGDATA volume completely (the runbook's pgdata-wipe-full job)
  pgops.resilience.pg_wipe_data_directory:
    data_directory: /var/lib/postgresql/data
    confirm: /var/lib/postgresql/data
    clear_parent: true
  register: wiped

- name: Show what was there
  ansible.builtin.debug:
    msg: "{{ wiped.before.data_directory | map(attribute='name') | list }}"
'''

RETURN = r'''
data_directory:
  description: The data directory, normalised.
  returned: always
  type: str
parent:
  description: Its parent directory.
  returned: always
  type: str
before:
  description:
    - C(data_directory), the entries of the data directory, and with O(clear_parent) C(parent), the other entries of
      the parent, before. Each entry has C(name), C(type) (directory, file, link, other) and C(bytes).
  returned: always
  type: dict
after:
  description: The same listings afterwards (empty in check mode).
  returned: always
  type: dict
removed:
  description: The paths deleted (or that would be, in check mode).
  returned: always
  type: list
  elements: str
bytes_removed:
  description: Bytes of the files deleted.
  returned: always
  type: int
server_user:
  description: The user the data directory belongs to.
  returned: always
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import wipe


def main():
    module_main(AnsibleModule, wipe.module_spec(), wipe.wipe_data_directory)


if __name__ == '__main__':
    main()
