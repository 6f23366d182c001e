#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_basebackup_bundle
short_description: Write the weekly physical base backup bundle of a PostgreSQL server to a directory or S3
version_added: 0.1.0
description:
  - Takes a base backup with C(pg_basebackup -Ft -z -X stream --checkpoint fast) and stores it as
    C(basebackup-YYYYMMDD-HHMMSSmmm-<run>.bundle.tar.gz), the bundle of the runbook's weekly job, holding C(base.tar.gz)
    (the data directory), C(pg_wal.tar.gz) (the WAL written during the backup, streamed alongside), C(backup_manifest),
    and C(manifest.json) with the sha256 and size of every member and what the backup is (server version, system
    identifier, timeline, start and stop LSN, label). A C(.sha256) file beside the archive holds its own sha256.
  - The name holds the time the run started (UTC, to the second) and C(<run>), 8 hex digits drawn at random by each
    run, so two runs started together never write to, or report, the same bundle. Sorted by name, bundles are in time
    order; bundles named C(basebackup-YYYYMMDD-HHMM.bundle.tar.gz) by earlier versions still count, oldest first
    within their minute.
  - The bundle and its C(.sha256) are created with O(mode) (0600), and its members are recorded 0600 (a base backup
    holds all the data); what pg_basebackup writes is 0600 and staging directories are 0700.
  - The connection settings and the password reach C(pg_basebackup) only through libpq's environment variables,
    never its command line. The role needs the REPLICATION attribute (or SUPERUSER) and C(pg_hba.conf) must allow
    its replication connections.
  - pg_basebackup's exit status is checked. When it fails, the task fails with its own message (stderr), the partial
    files are removed, nothing is stored and no old bundle is deleted.
  - The bundle is written under a temporary name and renamed when complete, then read back and its sha256 compared
    (a directory), or uploaded and its size checked (S3). Only then are all but the newest O(keep) bundles deleted; a
    run never deletes its own bundle, nor one newer than it.
  - Work in progress has hidden names, C(.partial-<bundle name>.pid<pid>@<host>.<random>). Before it starts, a run
    removes those of base backup bundles that killed runs left in O(scratch_dir) and O(directory) (with O(bucket)
    and no O(scratch_dir), in the system temporary directory) - entries whose process is gone from this host, and
    entries of other hosts (or of earlier versions, without an owner) in which nothing has changed for longer than
    O(timeout). Only plain directories and files of this user with such names are removed, never a link. They are
    listed in RV(removed_partials).
  - Restore with M(pgops.resilience.pg_bootstrap_basebackup) (PostgreSQL 15 docs, 26.3.4 "Recovering Using a
    Continuous Archive Backup"), which needs the WAL archive from the backup's start on.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.bundle_store
  - pgops.resilience.bundle_store.file_mode
  - pgops.resilience.s3
options:
  keep:
    description:
      - How many of the newest bundles to keep, the new one included. V(0) keeps every bundle.
      - Only files named C(basebackup-YYYYMMDD-HHMMSSmmm-<run>.bundle.tar.gz) or C(basebackup-YYYYMMDD-HHMM.bundle.tar.gz)
        (and their C(.sha256)) count and are ever deleted.
    type: int
    default: 4
  bindir:
    description:
      - Directory of the PostgreSQL client programs. By default the newest C(/usr/lib/postgresql/*/bin),
        C(/usr/pgsql-*/bin), then PATH, skipping programs older than the server.
    type: path
  scratch_dir:
    description:
      - Where pg_basebackup writes before the bundle is packed (it needs room for the compressed backup). By default
        a hidden C(.partial-*) directory in O(directory), or the system temporary directory with O(bucket), where the
        bundle is also packed before the upload.
      - A directory of our own is made in it and removed afterwards. C(/etc), C(/usr) and the other system trees
        (those of M(pgops.resilience.pg_wipe_data_directory)) are refused, check mode too; C(/tmp) and C(/var/tmp)
        are fine.
    type: path
  checkpoint:
    description:
      - C(pg_basebackup --checkpoint). V(fast) starts at once with an immediate checkpoint; V(spread) waits for a
        checkpoint spread over C(checkpoint_completion_target), sparing the server's I/O.
    type: str
    choices: [fast, spread]
    default: fast
  max_rate:
    description:
      - C(pg_basebackup --max-rate), the most data read from the server per second, such as V(50M) (kB by default).
    type: str
  label:
    description:
      - The backup label (C(pg_basebackup --label)), recorded in C(backup_label). Defaults to
        C(pgops.resilience basebackup-YYYYMMDD-HHMMSSmmm-<run>).
    type: str
  timeout:
    description:
      - Seconds pg_basebackup may run before it is stopped (and the task fails). V(0) sets no limit.
      - Also the age after which the work in progress of another host's run, or of an earlier version, counts as
        left over (with V(0), never by age).
    type: int
    default: 21600
attributes:
  check_mode:
    support: full
    details:
      - Connects in a READ ONLY session, checks that the role and server allow the backup (REPLICATION or
        SUPERUSER, two free WAL senders, C(wal_level) not minimal), finds pg_basebackup, and reports the bundle
        name, the bundles retention would delete and the left-over work in progress that would be removed. Runs
        nothing and writes nothing.
  diff_mode:
    support: none
notes:
  - A bundle is never overwritten; concurrent runs write bundles of different names.
  - Tablespaces become further C(<oid>.tar.gz) members, which M(pgops.resilience.pg_bootstrap_basebackup) refuses.
seealso:
  - name: pg_basebackup
    description: PostgreSQL 15 docs, pg_basebackup (tar format, --wal-method stream, backup_manifest).
    link: https://www.postgresql.org/docs/15/app-pgbasebackup.html
  - module: pgops.resilience.pg_bootstrap_basebackup
'''

EXAMPLES = r'''
- name: Weekly base backup into the backups volume, keeping four
  pgops.resilience.pg_basebackup_bundle:
    directory: /backups
    keep: 4

- name: Weekly base backup that the off-site copy job (same group) may read
  pgops.resilience.pg_basebackup_bundle:
    directory: /backups
    mode: '0640'

- name: Base backup to S3, throttled, as a replication role
  pgops.resilience.pg_basebackup_bundle:
    login_host: postgres.records.svc
    login_user: replicator
    bucket: pg-backups
    prefix: records/basebackup
    max_rate: 50M
'''

RETURN = r'''
bundle:
  description: The bundle written (in check mode, a name like the one it would have; each run draws its own C(<run>)).
  returned: always
  type: dict
  contains:
    name:
      description: File name, C(basebackup-YYYYMMDD-HHMMSSmmm-<run>.bundle.tar.gz).
      type: str
    url:
      description: Path or C(s3://) URL.
      type: str
    bytes:
      description: Size of the archive in bytes.
      type: int
    sha256:
      description: sha256 of the archive, also in its C(.sha256) file.
      type: str
server:
  description: Where the backup was taken from, C(user@host:port/database), without a password.
  returned: always
  type: str
server_version:
  description: The server's version.
  returned: always
  type: str
system_identifier:
  description: The server's system identifier (a 64-bit number as text); every restore of this backup has it.
  returned: always
  type: str
timeline:
  description: The timeline the backup was taken on.
  returned: when a bundle was written
  type: int
start_lsn:
  description: The LSN where the backup starts; recovery needs the WAL from its segment (RV(start_wal_file)) on.
  returned: when a bundle was written
  type: str
stop_lsn:
  description: The LSN where the backup ends; a restore is consistent once replay has reached it.
  returned: when a bundle was written
  type: str
start_wal_file:
  description: The WAL segment holding RV(start_lsn).
  returned: when a bundle was written
  type: str
label:
  description: The backup label.
  returned: always
  type: str
members:
  description: Files pg_basebackup wrote, name to bytes.
  returned: when a bundle was written
  type: dict
pg_basebackup:
  description: The program used, C(path) and C(major) version.
  returned: always
  type: dict
seconds:
  description: Seconds per phase (C(basebackup), C(pack), C(store), C(total)).
  returned: always
  type: dict
deleted:
  description: Bundles deleted by retention (in check mode, those that would be), oldest first.
  returned: always
  type: list
  elements: str
removed_partials:
  description: Paths of the left-over work in progress of killed runs that were removed (in check mode, that would be).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import basebackup


def main():
    module_main(AnsibleModule, basebackup.module_spec(), basebackup.take_base_backup, connection_secrets)


if __name__ == '__main__':
    main()
