#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_bootstrap_basebackup
short_description: Replace a PostgreSQL data directory with a base backup bundle and recover it from the WAL archive
version_added: 0.1.0
description:
  - The runbook's "Bootstrap from Physical Backup", following PostgreSQL 15 docs, 26.3.4 "Recovering Using a Continuous
    Archive Backup". B(It deletes everything in O(data_directory)), so it refuses unless O(confirm) is that directory,
    and refuses while a server runs on it (a C(postmaster.pid) naming a live process that works there).
  - Fetches the bundle (O(bundle), or the newest C(basebackup-YYYYMMDD-HHMMSSmmm-<run>.bundle.tar.gz), older
    C(basebackup-YYYYMMDD-HHMM.bundle.tar.gz) ones included) and verifies it into a
    scratch directory first - the archive's sha256, every member's sha256 and size against the manifest, the
    C(backup_label) of the base archive. A corrupted bundle is refused before anything in the data directory is
    touched.
  - Only then empties O(data_directory) (the directory itself stays, 0700, owned by the server user), extracts
    C(base.tar.gz) into it and C(pg_wal.tar.gz) into its C(pg_wal), writes C(recovery.signal), and appends to
    C(postgresql.auto.conf) the O(settings), a C(restore_command) (copying from O(wal_archive_directory), or
    O(restore_command)), every recovery target emptied but O(recovery_target_time) (with
    C(recovery_target_action = promote)), and C(recovery_target_timeline = latest).
  - With O(start=true) starts the server with C(pg_ctl) as O(server_user) (PostgreSQL refuses to run as root), waits
    until recovery has ended - the control file says C(in production) with a checkpoint on a new timeline, the moment
    C(pg_is_in_recovery()) turns false (read with C(pg_controldata), so no role or password is needed) - then removes
    the C(recovery_target) lines again and reports the new timeline and where replay ended. The server is left
    running. When recovery fails, the task fails with the server's FATAL lines and the end of its log.
  - With O(start=false) only prepares the data directory, for Kubernetes, where the Deployment starts the server.
  - B(System directories are refused) as O(data_directory), before anything is fetched, in check mode too. The list
    is that of M(pgops.resilience.pg_wipe_data_directory). C(/etc), C(/usr), C(/var/log), C(/var/cache) and the
    other system trees are refused with everything under them. C(/), C(/srv), C(/opt), C(/tmp), C(/var/lib),
    C(/root), C(/home/<name>) and the like are refused themselves only, so C(/var/lib/postgresql/15/main) and
    C(/srv/pgdata/main) are allowed. The path is compared as given, resolved through symbolic links, and by device
    and inode (a bind mount).
  - B(Only a data directory or an empty directory is replaced.) O(data_directory) must be missing, empty (files
    that hold nothing, such as C(lost+found), C(recovery.signal), C(standby.signal) or C(postmaster.pid), aside),
    or hold C(PG_VERSION) and C(global/pg_control). The file C(pgops.resilience-incomplete) is written into it
    before the first deletion and removed once the base backup is restored completely, so that a bootstrap that
    stopped half-way (a full disk) may simply be run again. Any other directory is refused with what it holds.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.bundle_store
  - pgops.resilience.s3
options:
  data_directory:
    description:
      - The data directory (PGDATA) to replace, such as V(/var/lib/postgresql/data). Its parent must exist. A
        symbolic link is refused; give the directory it points to.
      - It must be missing, empty or a PostgreSQL data directory, and not a system directory (see the description).
    type: path
    required: true
  confirm:
    description:
      - Must be exactly O(data_directory), to confirm that everything in it is deleted. Without it the module
        refuses and changes nothing (check mode too).
    type: str
  bundle:
    description:
      - The bundle to restore, by file name. Empty restores the newest.
    type: str
    default: ''
  wal_archive_directory:
    description:
      - The directory of the WAL archive (where C(archive_command) copied the segments). C(restore_command) becomes
        C(cp <directory>/%f "%p"), the directory shell-quoted and any C(%) in it doubled.
      - With O(start=true) it must exist here and be reachable by O(server_user); with O(start=false) it is the path
        as the server that starts later sees it.
      - Exactly one of O(wal_archive_directory) and O(restore_command) is required.
    type: path
  restore_command:
    description:
      - The C(restore_command) to use verbatim instead, such as one fetching from object storage. It must contain
        C(%f) and C(%p); other C(%) escapes than C(%r) and C(%%) are refused.
      - It is written as given to C(postgresql.auto.conf) (0600, in the data directory), and shown masked
        (C(********)) in the result and in every message. Better still, keep secrets out of it (an instance role, a
        credentials file the server user reads).
    type: str
  recovery_target_time:
    description:
      - Point-in-time recovery up to this time (a timestamp with time zone, such as V(2026-11-20 10:30:00+00)); the
        server is promoted there (C(recovery_target_action = promote)). Empty replays the whole archive.
    type: str
  start:
    description:
      - Start the server and wait until recovery has ended (V(true)), or only prepare the data directory (V(false)).
    type: bool
    default: true
  settings:
    description:
      - Further settings appended to C(postgresql.auto.conf) before the recovery settings, such as C(port) or
        C(archive_mode) to run beside another server. They stay after recovery. The recovery settings themselves
        (C(restore_command), C(recovery_target*)) are refused here.
      - The value of a setting that can carry a credential (C(primary_conninfo), any C(*_command), names with
        password, passphrase, secret, token or credential) is shown masked in the result and in every message.
    type: dict
    default: {}
  bindir:
    description:
      - Directory of the PostgreSQL server programs (C(pg_ctl), C(postgres), C(pg_controldata)) of the backup's
        major version. By default found from it (C(/usr/lib/postgresql/<major>/bin), C(/usr/pgsql-<major>/bin), PATH).
    type: path
  server_user:
    description:
      - System user that owns the data directory and runs the server when the module runs as root. Defaults to the
        owner of the data directory (or its parent), else C(postgres).
      - With O(start=false) it may also be given as numbers, V(999:999), for images without that user.
    type: str
  timeout:
    description:
      - Seconds allowed for the server's start and recovery. When they pass, the task fails but the server keeps
        recovering.
    type: int
    default: 3600
  scratch_dir:
    description:
      - Directory in which the bundle is verified before the data directory is touched (default the system temporary
        directory). It needs room for the bundle, twice with O(bucket).
      - A directory of our own is made in it and removed afterwards. C(/etc), C(/usr) and the other system trees
        (see the description) are refused; C(/tmp) and C(/var/tmp) are fine.
    type: path
  log_file:
    description:
      - The server log that C(pg_ctl start -l) appends to. Defaults to C(pgops-bootstrap.log) in the parent of
        O(data_directory).
    type: path
attributes:
  check_mode:
    support: full
    details:
      - Refuses what a real run refuses, fetches and verifies the bundle in a scratch directory of its own
        (removed again) and reports what would be deleted; the data directory is not touched and nothing is
        started.
  diff_mode:
    support: none
notes:
  - Bundles with tablespaces (further C(<oid>.tar.gz) members) are refused.
  - The WAL archive must hold every segment from the backup's start on. The new timeline's history file is archived
    by the restored server when C(archive_mode) is on; pass C(archive_mode=off) in O(settings) for a copy beside the
    production server, so that it never writes into the production archive.
seealso:
  - module: pgops.resilience.pg_basebackup_bundle
  - module: pgops.resilience.pg_wipe_data_directory
  - name: Recovering Using a Continuous Archive Backup
    description: PostgreSQL 15 docs, 26.3.4.
    link: https://www.postgresql.org/docs/15/continuous-archiving.html#BACKUP-PITR-RECOVERY
'''

EXAMPLES = r'''
- name: Bootstrap this host's PGDATA from the newest base backup and the WAL archive
  pgops.resilience.pg_bootstrap_basebackup:
    data_directory: /var/lib/postgresql/15/main
    confirm: /var/lib/postgresql/15/main
    directory: /backups
    wal_archive_directory: /wal-archive

- name: Point-in-time copy beside the production server, on another port, never archiving
  pgops.resilience.pg_bootstrap_basebackup:
    data_directory: /srv/pitr/data
    confirm: /srv/pitr/data
    bucket: pg-backups
    prefix: records/basebackup
    wal_archive_directory: /wal-archive
    recovery_target_time: "2026-11-20 10:30:00+00"
    settings:
      port: 5433
      archive_mode: "off"

- name: Prepare the PVC only; the Deployment starts the server
  pgops.resilience.pg_bootstrap_basebackup:
    data_directory: /var/lib/postgresql/data
    confirm: /var/lib/postgresql/data
    directory: /backups
    wal_archive_directory: /wal-archive
    start: false
    server_user: "999:999"
'''

RETURN = r'''
data_directory:
  description: The data directory, normalised.
  returned: always
  type: str
bundle:
  description: The bundle restored, with C(name), C(url), C(bytes), C(created) and C(info) (its manifest's info).
  returned: always
  type: dict
backup:
  description: What the backup's C(backup_label) and manifest say, C(start_lsn), C(stop_lsn), C(timeline), C(start_wal_file), C(start_time), C(label).
  returned: always
  type: dict
wiped:
  description: Whether the data directory was emptied (also in a failure's result - V(false) means nothing was deleted).
  returned: always
  type: bool
removed:
  description: The entries of the data directory before (or, in check mode, that would be deleted), each with C(name), C(type), C(bytes).
  returned: always
  type: list
  elements: dict
restore_command:
  description: The restore_command written, masked (C(********)); C(postgresql.auto.conf) holds the real one.
  returned: always
  type: str
recovery_target_time:
  description: The recovery target time written, or null.
  returned: always
  type: str
settings:
  description:
    - The lines appended to C(postgresql.auto.conf), the values of C(restore_command) and of other settings that can
      carry a credential masked (C(********)).
  returned: always
  type: list
  elements: str
restored:
  description: Files and bytes extracted (C(files), C(bytes)).
  returned: when the data directory was replaced
  type: dict
started:
  description: Whether the server was started.
  returned: always
  type: bool
pid:
  description: The postmaster's PID.
  returned: when the server was started
  type: int
timeline:
  description: The new timeline the server chose at the end of recovery.
  returned: when recovery ended
  type: int
recovered_to_lsn:
  description: Where replay ended (the server log's C(redo done at)), else the end-of-recovery checkpoint's REDO location.
  returned: when recovery ended
  type: str
recovery:
  description:
    - What the server log and the control file say of the recovery, C(consistent_lsn), C(redo_done_lsn), C(stop),
      C(last_transaction_time), C(checkpoint_lsn), C(cluster_state).
  returned: when recovery ended
  type: dict
seconds:
  description: Seconds per phase (C(verify), C(restore), C(recovery), C(total)).
  returned: always
  type: dict
log_file:
  description: The server log, with O(start=true).
  returned: always
  type: str
log_tail:
  description: The last lines of the server log.
  returned: when recovery failed
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bootstrap


def main():
    module_main(AnsibleModule, bootstrap.module_spec(), bootstrap.bootstrap_data_directory, bootstrap.bootstrap_secrets)


if __name__ == '__main__':
    main()
