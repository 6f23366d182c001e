#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_dump_bundle
short_description: Write the nightly logical dump bundle of a PostgreSQL database to a directory or S3
version_added: 0.1.0
description:
  - Dumps one database into C(nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz), the bundle of the runbook's nightly job, holding
    C(records.dir/) (C(pg_dump -Fd -j N)), C(globals.sql) (C(pg_dumpall --globals-only)), C(records.sql.gz) (the same
    dump as plain SQL), C(pg_settings.tsv), C(extensions.tsv), optionally C(fingerprints.json), and C(manifest.json)
    with the sha256 and size of every member. A C(.sha256) file beside the archive holds the archive's own sha256.
  - The name holds the time the run started (UTC, to the second) and C(<run>), 8 hex digits drawn at random by each
    run, so two runs started together (a manual run beside the CronJob's) never write to, or report, the same
    bundle. Sorted by name, bundles are in time order. Bundles named C(nightly-YYYYMMDD-HHMM.tar.gz) by earlier
    versions are still listed, restored and expired, oldest first within their minute.
  - Secrets at rest - the bundle and its C(.sha256) are created with O(mode) (0600), every file of the dump while it
    is built is 0600 and every directory 0700, and the members are recorded 0600 inside the archive. C(globals.sql)
    holds the roles' password hashes (see O(role_passwords)). In C(pg_settings.tsv) the value of every setting that
    can carry a credential (C(primary_conninfo), C(restore_command), C(archive_command), any C(*_command), and
    settings named like a password, secret, token or credential) is masked as C(********).
  - Every member comes from one snapshot, exported by the module's transaction and passed to C(pg_dump --snapshot).
    The plain SQL is written by C(pg_restore -f -) from the directory dump, so the database is read once.
  - Every program's exit status is checked. When one fails, the task fails with the program's own message (its stderr),
    nothing is stored and no old bundle is deleted.
  - Connection settings and the password reach the programs only through libpq's environment variables, never their
    command line.
  - The bundle is written under a temporary name and renamed when complete (a directory), or uploaded and its size
    checked (S3). Only then are all but the newest O(keep) bundles deleted; a run never deletes its own bundle, nor
    one newer than it.
  - Work in progress has hidden names, C(.partial-<bundle name>.pid<pid>@<host>.<random>). Before it starts, a run
    removes those of nightly bundles that killed runs left in O(directory) (or, with O(bucket), in O(scratch_dir)) -
    entries whose process is gone from this host, and entries of other hosts (or of earlier versions, without an
    owner) in which nothing has changed for longer than O(timeout). Only plain directories and files of this user
    with such names are removed, never a link. They are listed in RV(removed_partials).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.bundle_store
  - pgops.resilience.bundle_store.file_mode
  - pgops.resilience.s3
options:
  database:
    description:
      - The database to dump. Defaults to O(login_db).
    type: str
  jobs:
    description:
      - Parallel jobs of C(pg_dump -j). Each one holds a connection for the whole dump.
    type: int
    default: 2
  keep:
    description:
      - How many of the newest bundles to keep, the new one included. V(0) keeps every bundle.
      - Only files named C(nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz) or C(nightly-YYYYMMDD-HHMM.tar.gz) (and their
        C(.sha256)) count and are ever deleted.
    type: int
    default: 7
  plain_sql:
    description:
      - Whether to add C(records.sql.gz), the plain SQL form, restorable with C(psql) alone.
    type: bool
    default: true
  role_passwords:
    description:
      - Whether C(globals.sql) includes the roles' password hashes. Reading them needs a superuser; with V(false)
        C(pg_dumpall --no-role-passwords) works for other roles too.
    type: bool
    default: true
  fingerprints:
    description:
      - Whether to record the row count and a checksum of every table of the dumped snapshot in C(fingerprints.json),
        so that a restore drill (M(pgops.resilience.pg_dump_restore) with O(pgops.resilience.pg_dump_restore#module:drill=true))
        compares with exactly what was dumped, even when the database has changed since. Reads every table once more,
        on one more connection while pg_dump runs.
    type: bool
    default: true
  bindir:
    description:
      - Directory of the PostgreSQL client programs. By default the newest C(/usr/lib/postgresql/*/bin),
        C(/usr/pgsql-*/bin), then PATH, skipping programs older than the server.
    type: path
  scratch_dir:
    description:
      - Where the bundle is built before it is uploaded, with O(bucket) (default C($TMPDIR) or C(/tmp)). With
        O(directory) it is built there.
      - A directory of our own is made in it and removed afterwards. C(/etc), C(/usr) and the other system trees
        (those of M(pgops.resilience.pg_wipe_data_directory)) are refused, check mode too; C(/tmp) and C(/var/tmp)
        are fine.
    type: path
  timeout:
    description:
      - Seconds each program may run. Also the age after which the work in progress of another host's run, or of an
        earlier version, counts as left over.
    type: int
    default: 21600
attributes:
  check_mode:
    support: full
    details:
      - Connects in READ ONLY sessions, finds the programs, and reports the bundle name, the bundles retention
        would delete and the left-over work in progress that would be removed. Dumps nothing and writes nothing.
  diff_mode:
    support: none
notes:
  - A bundle is never overwritten; concurrent runs write bundles of different names.
  - Restore with M(pgops.resilience.pg_dump_restore) or the playbook C(pgops.resilience.restore_dump).
seealso:
  - name: pg_dump
    description: PostgreSQL 15 docs, pg_dump (directory format, --jobs, --snapshot).
    link: https://www.postgresql.org/docs/15/app-pgdump.html
  - module: pgops.resilience.pg_dump_restore
'''

EXAMPLES = r'''
- name: Nightly dump of records into the backups volume, keeping a week
  pgops.resilience.pg_dump_bundle:
    database: records
    directory: /backups
    jobs: 2
    keep: 7

- name: Nightly dump that the off-site copy job (same group) may read
  pgops.resilience.pg_dump_bundle:
    database: records
    directory: /backups
    mode: '0640'

- name: Dump to S3, without the plain SQL copy
  pgops.resilience.pg_dump_bundle:
    database: records
    bucket: pg-backups
    prefix: records/nightly
    plain_sql: false
'''

RETURN = r'''
bundle:
  description: The bundle written (in check mode, a name like the one it would have; each run draws its own C(<run>)).
  returned: always
  type: dict
  contains:
    name:
      description: File name, C(nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz).
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
database:
  description: The database dumped.
  returned: always
  type: str
server_version:
  description: The server's version.
  returned: always
  type: str
members:
  description: Number of files in the bundle, the manifest left out.
  returned: when a bundle was written
  type: int
tables:
  description: Number of tables and materialized views fingerprinted.
  returned: with O(fingerprints=true), when a bundle was written
  type: int
seconds:
  description: Seconds per phase (C(pg_dump), C(pg_dumpall), C(plain_sql), C(pack), C(store)).
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
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump as dump_bundle


def main():
    module_main(AnsibleModule, dump_bundle.module_spec(), dump_bundle.make_dump_bundle, connection_secrets)


if __name__ == '__main__':
    main()
