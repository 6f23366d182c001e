#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: pg_dump_restore
short_description: Restore a logical dump bundle into a database, or prove it restores with a drill
version_added: 0.1.0
description:
  - Restores a bundle written by M(pgops.resilience.pg_dump_bundle), the newest C(nightly-*.tar.gz) or the one named
    in O(bundle), from a directory or S3.
  - Before anything is changed the bundle is verified, the archive against its C(.sha256) file and every member
    against the manifest. A bundle with a corrupted, missing or extra member is refused.
  - Then, as the runbook's restore job does, each step checked - C(globals.sql) is applied with C(psql), tolerating
    only C(already exists) errors; the extensions of C(extensions.tsv) are created; C(pg_restore -j --exit-on-error)
    restores C(records.dir) (or C(psql --single-transaction -v ON_ERROR_STOP=1) restores C(records.sql.gz));
    C(ANALYZE) runs; every materialized view is refreshed and reported; every table's rows are counted.
  - The target database is created when missing. A database that already holds tables is refused unless O(clean=true).
    A database the module created is dropped again when the restore fails, so no half-restored database is left; when
    the run is killed instead, the next run drops it and restores afresh (RV(removed_databases)).
  - With O(drill=true) the bundle is restored into a scratch database C(pgops_drill_<time>), every table's row count
    and checksum is compared with the source, and the scratch database is dropped. The task fails on any difference.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.postgres
  - pgops.resilience.bundle_store
  - pgops.resilience.s3
options:
  database:
    description:
      - The database to restore into; created (owned by the dumped database's owner, when that role exists) when missing.
      - Required unless O(drill=true). With O(drill=true) it must start with C(pgops_drill_); by default a name with
        the time is made.
      - The connection options (O(login_db), default C(postgres)) name the database used to create it.
    type: str
  bundle:
    description:
      - File name of the bundle to restore, such as a copy of a bundle this collection wrote, uploaded under another
        name with its C(.sha256). Empty for the newest nightly bundle, C(nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz) or
        C(nightly-YYYYMMDD-HHMM.tar.gz) (written by earlier versions), by the time in the name.
      - A dump made by hand (no C(manifest.json), no C(.sha256)) is refused, since it cannot be verified.
    type: str
    default: ''
  source:
    description:
      - What to restore from - V(directory) (C(records.dir) with C(pg_restore -j)), V(plain) (C(records.sql.gz) with
        C(psql), in one transaction), or V(auto) (the directory dump when the bundle holds one).
    type: str
    default: auto
    choices: [auto, directory, plain]
  jobs:
    description:
      - Parallel jobs of C(pg_restore -j).
    type: int
    default: 2
  clean:
    description:
      - Restore into a database that already holds tables, dropping the dumped objects first
        (C(pg_restore --clean --if-exists)). Objects the dump does not hold are left as they are.
    type: bool
    default: false
  globals:
    description:
      - Whether to apply C(globals.sql) (roles, tablespaces). Note that it sets the dumped roles' passwords, the
        connecting superuser's included. It runs after the target database has been checked, so a refused restore
        changes no role. See O(drill) for what a drill applies.
    type: bool
    default: true
  extensions:
    description:
      - Whether to create the extensions listed in C(extensions.tsv) before the restore.
    type: bool
    default: true
  analyze:
    description:
      - Whether to run C(ANALYZE) after the restore (C(vacuumdb --analyze-only -j) with O(jobs)), so the planner has statistics at once.
    type: bool
    default: true
  refresh_materialized_views:
    description:
      - Whether to refresh every materialized view after the restore; each one is reported in RV(materialized_views).
    type: bool
    default: true
  drill:
    description:
      - Restore into a scratch database, compare, then drop it (see O(compare_with)).
      - Of C(globals.sql) only the C(CREATE ROLE) lines of roles the server lacks are run, so the restored objects have
        their owners; its C(ALTER ROLE) lines (passwords, attributes) are not, since they would change the live
        server's roles. Nothing else is changed.
    type: bool
    default: false
  compare_with:
    description:
      - What the drill compares the restored tables with. V(bundle) - the fingerprints recorded at dump time
        (O(pgops.resilience.pg_dump_bundle#module:fingerprints=true)), exactly what was dumped. V(database) - the
        source database now (O(source_database)), which only matches while nothing has changed since the dump.
        V(auto) - the bundle's fingerprints when it holds them, else the database.
    type: str
    default: auto
    choices: [auto, bundle, database]
  source_database:
    description:
      - The database the drill compares with when comparing with a database. Defaults to the database named in the bundle.
    type: str
  keep_drill_database:
    description:
      - Keep the drill's scratch database (for a look after a failed drill).
    type: bool
    default: false
  bindir:
    description:
      - Directory of the PostgreSQL client programs (C(pg_restore), C(psql)). By default the newest installed, not
        older than the server.
    type: path
  scratch_dir:
    description:
      - Where the bundle is downloaded and extracted (needs room for the extracted bundle), in a directory of its own
        (0700, files 0600), C(pgops-restore-pid<pid>@<host>.<random>). Removed afterwards. Default the system
        temporary directory (C($TMPDIR) or C(/tmp)).
      - A run that was killed cannot remove its directory, which holds the extracted dump. Before it starts, a run
        removes such directories of this user (plain directories named as above, never a link) whose process is gone
        from this host, and those of other hosts or of earlier versions (C(pgops-restore-<random>)) in which nothing
        has changed for longer than O(timeout). They are listed in RV(removed_scratch).
      - C(/etc), C(/usr) and the other system trees (those of M(pgops.resilience.pg_wipe_data_directory)) are
        refused, check mode too; C(/tmp) and C(/var/tmp) are fine.
    type: path
  timeout:
    description:
      - Seconds each program may run. Also the age after which a scratch directory of another host's run, or of an
        earlier version, counts as left over (see O(scratch_dir)).
    type: int
    default: 21600
attributes:
  check_mode:
    support: full
    details:
      - Verifies the bundle where it is (a file, or read from S3 once) without writing anything, then checks in
        READ ONLY sessions what the run checks before it changes anything (the client programs, a target that
        already holds tables without O(clean), a drill database that exists) and fails as the run would.
      - Reports C(changed=true) and what the run would restore, into which database, and RV(created_database).
        Writes no file and changes no database and no role; the left-over scratch directories that would be
        removed are only reported.
  diff_mode:
    support: none
notes:
  - C(pg_restore -j) cannot run in one transaction; that is why a database the module created is dropped when the
    restore fails, and why an existing non-empty database needs O(clean=true).
seealso:
  - name: pg_restore
    description: PostgreSQL 15 docs, pg_restore (--jobs, --exit-on-error, --clean).
    link: https://www.postgresql.org/docs/15/app-pgrestore.html
  - module: pgops.resilience.pg_dump_bundle
'''

EXAMPLES = r'''
- name: Restore the newest nightly bundle into records
  pgops.resilience.pg_dump_restore:
    database: records
    directory: /backups
    jobs: 2

- name: Restore an uploaded dump from S3
  pgops.resilience.pg_dump_restore:
    database: records
    bucket: pg-backups
    prefix: uploads
    bundle: records_dump_20251102.tar.gz

- name: Prove that last night's bundle restores what was dumped
  pgops.resilience.pg_dump_restore:
    drill: true
    directory: /backups
'''

RETURN = r'''
bundle:
  description: The bundle restored.
  returned: always
  type: dict
  contains:
    name:
      description: File name.
      type: str
    url:
      description: Path or C(s3://) URL.
      type: str
    created:
      description: When it was written (UTC, ISO 8601).
      type: str
    source_database:
      description: The database it was dumped from.
      type: str
database:
  description: The database restored into (the scratch database for a drill).
  returned: always
  type: str
created_database:
  description: Whether the module created the database (in check mode, whether it would).
  returned: when something was restored, and in check mode
  type: bool
source:
  description: What was restored from, V(directory) or V(plain).
  returned: always
  type: str
removed_scratch:
  description: Scratch directories of killed runs that were removed (in check mode, that would be); see O(scratch_dir).
  returned: always
  type: list
  elements: str
removed_databases:
  description:
    - Databases that killed runs of this module created and left unfinished, dropped before this run (in check mode,
      that would be) - drill databases, and the target when it is one, which is then restored afresh.
    - A database this module creates carries a comment that starts with C(pgops.resilience) and says the restore is
      in progress, with its run and start, until it is filled. Only such a database is dropped, and only when no session is connected to it and its
      run is gone (its process on this host, or, for another host's run, started longer ago than O(timeout)).
  returned: when the server was reached
  type: list
  elements: str
globals:
  description:
    - C(applied) (bool) and C(already_existed) (the tolerated errors); for a drill C(created_roles) and
      C(already_existed) (role names).
  returned: with O(globals=true), when something was restored
  type: dict
extensions:
  description: The extensions of the bundle, each with C(name), C(schema), C(version) and C(created).
  returned: with O(extensions=true), when something was restored
  type: list
  elements: dict
materialized_views:
  description: Each materialized view with C(name), C(refreshed), C(seconds) and C(error).
  returned: with O(refresh_materialized_views=true), when something was restored
  type: list
  elements: dict
tables:
  description: Rows of each restored table and populated materialized view, keyed by C(schema.name).
  returned: when something was restored
  type: dict
rows:
  description: Total of RV(tables).
  returned: when something was restored
  type: int
drill:
  description:
    - C(identical) (bool), C(compared_with) (str), C(tables) (int compared), C(differences) (list of dicts with
      C(table), C(problem), the source's and the restore's rows and checksums), C(dropped) (bool).
  returned: with O(drill=true)
  type: dict
seconds:
  description: Seconds per phase (C(verify), C(globals), C(extensions), C(pg_restore) or C(psql), C(analyze), C(refresh), C(count)).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_secrets
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump_restore


def main():
    module_main(AnsibleModule, dump_restore.module_spec(), dump_restore.restore_dump, connection_secrets)


if __name__ == '__main__':
    main()
