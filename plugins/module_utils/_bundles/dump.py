# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The nightly logical dump bundle of the reference runbook ``postgres-infra-setup.md``.

``nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz`` (UTC, then 8 random hex digits of the run: see :mod:`bundle`; older bundles
are ``nightly-YYYYMMDD-HHMM.tar.gz``) holds, every file 0600:

- ``records.dir/``: ``pg_dump -Fd -j N`` of the database (what ``pg_restore -j`` restores);
- ``globals.sql``: ``pg_dumpall --globals-only`` (roles, tablespaces);
- ``records.sql.gz``: the same dump as plain SQL, for ``psql`` (written by ``pg_restore -f -`` from the directory
  dump, so it is the same snapshot and the database is read once, not twice);
- ``pg_settings.tsv`` and ``extensions.tsv``: the server's settings, credential-bearing ones masked
  (``common.mask_setting``: ``primary_conninfo``, ``*_command``...), and the database's extensions;
- ``fingerprints.json`` (with ``fingerprints``): row count and checksum of every table in the dumped snapshot, which
  a restore drill compares with what it restored;
- ``manifest.json``: the sha256 of every member (see :mod:`bundle`).

Every file of the dump comes from one snapshot: a REPEATABLE READ transaction exports it
(``pg_export_snapshot()``, PostgreSQL 15 docs 9.27.5 "Snapshot Synchronization Functions") and ``pg_dump
--snapshot`` uses it. The module's sessions are READ ONLY (a dump only reads), in check mode and in a run.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import subprocess
import time

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program, run_program, warnings_of
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import server_facts
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import table_fingerprints
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_client_program, program_major
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import seconds_since, timed
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import mask_setting
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    connect, connection_secrets, libpq_environment)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._core.work import make_staging_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import DIRECTORY_MODE, check_file_mode
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    psycopg2 = None

KIND = 'logical-dump'
NAME_PREFIX = 'nightly'
SUFFIX = '.tar.gz'
PATTERN = bundle.name_pattern(NAME_PREFIX, SUFFIX)
DIRECTORY_DUMP = 'records.dir'
PLAIN_DUMP = 'records.sql.gz'
GLOBALS = 'globals.sql'
SETTINGS = 'pg_settings.tsv'
EXTENSIONS = 'extensions.tsv'
FINGERPRINTS = 'fingerprints.json'
# gzip level of records.sql.gz: the plain copy is for emergencies; speed matters more than the last 20 % of size.
PLAIN_COMPRESS_LEVEL = 1

_SETTINGS_QUERY = 'SELECT name, setting, unit, source, context FROM pg_catalog.pg_settings ORDER BY name'
_EXTENSIONS_QUERY = ('SELECT e.extname, e.extversion, n.nspname FROM pg_catalog.pg_extension AS e '
                     'JOIN pg_catalog.pg_namespace AS n ON n.oid = e.extnamespace ORDER BY e.extname')


def argument_spec():
    """The options of ``pg_dump_bundle`` besides the connection options (see the module's DOCUMENTATION)."""
    spec = dict(
        database=dict(type='str'),
        jobs=dict(type='int', default=2),
        keep=dict(type='int', default=7),
        plain_sql=dict(type='bool', default=True),
        role_passwords=dict(type='bool', default=True),
        fingerprints=dict(type='bool', default=True),
        bindir=dict(type='path'),
        scratch_dir=dict(type='path'),
        timeout=dict(type='int', default=6 * 3600),
    )
    spec.update(bundle.file_mode_argument_spec())
    spec.update(bundle.store_argument_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(bundle.store_module_spec(argument_spec()))


def _validate(params):
    database = params.get('database') or params.get('login_db')
    if not database:
        raise PgopsError('database is required: name the database to dump (or set login_db / PGDATABASE).')
    if params['jobs'] < 1:
        raise PgopsError('jobs must be at least 1 (pg_dump -j), not %d.' % params['jobs'])
    if params['keep'] < 0:
        raise PgopsError('keep must be 0 (keep every bundle) or the number of newest bundles to keep, not %d.' % params['keep'])
    if params['timeout'] < 1:
        raise PgopsError('timeout must be at least 1 second, not %d.' % params['timeout'])
    check_file_mode(params.get('mode'))
    if params.get('scratch_dir'):
        # Before anything is made there (check mode too): our staging directory is created and removed in it.
        refuse_system_directory(params['scratch_dir'], 'scratch_dir', within=True)
    return database


def _server_facts(conn):
    """:func:`server_facts` and what the bundle records of the database: ``owner`` and ``encoding`` (str)."""
    with pg_errors('reading the server version'), conn.cursor() as cur:
        facts = server_facts(cur)
        cur.execute('SELECT pg_catalog.pg_get_userbyid(d.datdba), pg_catalog.pg_encoding_to_char(d.encoding)'
                    ' FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()')
        facts['owner'], facts['encoding'] = cur.fetchone()
    return facts


def make_dump_bundle(params, check_mode=False):
    """Dump ``database`` into a new bundle, store it, then delete all but the newest ``keep`` bundles.

    Before it, the work in progress that killed runs left (``.partial-*`` in the directory store, or in the scratch
    directory with S3) is removed: see :func:`bundle.remove_stale_partials`, with ``timeout`` as the age limit for
    entries whose owner cannot be checked.

    :param params: dict, the module's parameters (connection options plus :func:`argument_spec`).
    :param check_mode: bool; when true nothing is run or written: the result says what would be.
    :returns: dict, the module result: ``changed``, ``bundle`` (``name``, ``url``, ``bytes``, ``sha256``), ``database``,
        ``server_version``, ``members`` (int), ``tables`` (int, with fingerprints), ``seconds`` (dict of phase ->
        seconds), ``deleted`` (list of bundle names), ``removed_partials`` (list of paths), ``warnings`` (stderr lines
        of the programs, left-overs that could not be removed).
    :raises PgopsError: for bad options (a system directory as ``scratch_dir``: :func:`refuse_system_directory`),
        or when the connection, a program (with its stderr), the write or the upload fails; then no bundle is stored
        and none is deleted.
    """
    database = _validate(params)
    mode = check_file_mode(params.get('mode'))
    store = bundle.BundleStore.from_params(params)
    conn_params = dict(params, login_db=database)
    conn = connect(conn_params, read_only=True)
    try:
        facts = _server_facts(conn)
        programs = dict((p, find_client_program(p, params.get('bindir'), facts['server_major']))
                        for p in ('pg_dump', 'pg_dumpall', 'pg_restore'))
        name = bundle.bundle_name(NAME_PREFIX, suffix=SUFFIX)
        if store.exists(name):
            raise PgopsError('bundle %s already exists in %s; a bundle is never overwritten. Run again for a new name.'
                             % (name, store.location))
        result = dict(changed=True, database=database, server_version=facts['server_version'],
                      bundle=dict(name=name, url=store.url(name)), warnings=[], seconds={})
        staging_parent = store.staging_directory(params.get('scratch_dir'))
        result['removed_partials'], problems = bundle.remove_stale_partials(staging_parent, NAME_PREFIX, SUFFIX,
                                                                            params['timeout'], check_mode)
        result['warnings'] += problems
        if check_mode:
            existing = store.list(PATTERN) + [dict(name=name, time=PATTERN.match(name).group(1))]
            result['deleted'] = [b['name'] for b in bundle.expired_bundles(existing, params['keep'])]
            result['programs'] = programs
            return result
        staging = make_staging_directory(staging_parent, name)
        try:
            # A directory store: packed beside the staging directory, in the store, and moved into place when complete.
            # S3: packed inside it, uploaded, and removed with it whatever happens.
            packed_in = os.path.dirname(staging) if store.is_local else staging
            packed = _dump_and_pack(conn, conn_params, database, facts, programs, staging, os.path.join(packed_in, name),
                                    mode, result)
            with timed(result['seconds'], 'store'):
                stored = store.store(packed)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        conn.close()
    result['bundle'] = stored
    result['members'] = len(packed['manifest']['members'])
    # Only now, with the new bundle stored and verified, may an old one go (never this run's, nor a newer one).
    result['deleted'] = store.apply_retention(PATTERN, params['keep'], own=name)
    return result


def _dump_and_pack(conn, params, database, facts, programs, staging, dest_path, mode, result):
    """Write every member into ``staging/bundle`` and pack it as ``dest_path`` (``mode``); return :func:`bundle.pack`'s
    result."""
    root = os.path.join(staging, 'bundle')
    os.mkdir(root, DIRECTORY_MODE)
    env = libpq_environment(params, dbname=database)
    secrets = connection_secrets(params)
    timeout = params['timeout']
    seconds = result['seconds']
    started = time.monotonic()
    snapshot = _export_snapshot(conn)
    dump = _start_pg_dump(programs['pg_dump'], env, snapshot, params['jobs'], os.path.join(root, DIRECTORY_DUMP), database)
    side_error = None
    try:
        # While pg_dump runs, the same snapshot gives the settings, the extensions and the fingerprints.
        try:
            _write_settings(conn, os.path.join(root, SETTINGS))
            _copy_query(conn, _EXTENSIONS_QUERY, os.path.join(root, EXTENSIONS))
            if params['fingerprints']:
                result['tables'] = _write_fingerprints(params, snapshot, os.path.join(root, FINGERPRINTS))
        except (PgopsError, OSError) as exc:
            side_error = exc  # pg_dump's own verdict comes first: it names what it could not dump
        dump.wait(timeout)
    finally:
        dump.stop()
        conn.rollback()
    stderr = dump.result(secrets, target=root)
    if isinstance(side_error, OSError):
        raise PgopsError('writing the dump into %s failed: %s. Check the free space and permissions there (or give '
                         'another scratch_dir).' % (staging, side_error))
    if side_error is not None:
        raise side_error
    result['warnings'] += warnings_of(stderr)
    seconds['pg_dump'] = seconds_since(started)
    with timed(seconds, 'pg_dumpall'):
        cmd = [programs['pg_dumpall'], '--globals-only', '--no-password', '-f', os.path.join(root, GLOBALS)]
        if not params['role_passwords']:
            cmd.append('--no-role-passwords')
        result['warnings'] += warnings_of(run_program(cmd, env, 'pg_dumpall --globals-only', secrets, timeout,
                                                      target=root))
    if params['plain_sql']:
        with timed(seconds, 'plain_sql'):
            _plain_copy(programs['pg_restore'], env, os.path.join(root, DIRECTORY_DUMP), os.path.join(root, PLAIN_DUMP), timeout)
    with timed(seconds, 'pack'):
        info = dict(database=database, server_version=facts['server_version'], server_version_num=facts['server_version_num'],
                    owner=facts['owner'], encoding=facts['encoding'], snapshot=snapshot, jobs=params['jobs'],
                    pg_dump=os.path.basename(programs['pg_dump']), pg_dump_major=program_major(programs['pg_dump']),
                    fingerprints=bool(params['fingerprints']))
        return bundle.pack(root, dest_path, KIND, info, mode)


def _export_snapshot(conn):
    """Open a REPEATABLE READ, READ ONLY transaction on ``conn`` and export its snapshot; return the snapshot's name."""
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True, autocommit=False)
    with pg_errors('exporting a snapshot for pg_dump'), conn.cursor() as cur:
        cur.execute('SELECT pg_catalog.pg_export_snapshot()')
        return cur.fetchone()[0]


def _start_pg_dump(program, env, snapshot, jobs, target, database):
    """Start ``pg_dump --format=directory`` of the exported snapshot into ``target``; returns the
    :class:`Program` (its stderr read into memory, so that a full staging volume cannot swallow it)."""
    cmd = [program, '--format=directory', '--jobs=%d' % jobs, '--snapshot=%s' % snapshot, '--no-password',
           '--file=%s' % target]
    return Program(cmd, env, 'pg_dump of database %s' % database)


def _private_text(path):
    """A new 0600 text file (UTF-8) at ``path``."""
    return io.TextIOWrapper(private_file(path), encoding='utf-8', newline='')


def _copy_query(conn, query, path):
    """Write the rows of ``query`` as a tab-separated file with a header (COPY ... CSV, tab delimiter)."""
    with pg_errors('writing %s' % os.path.basename(path)), conn.cursor() as cur, _private_text(path) as out:
        cur.copy_expert("COPY (%s) TO STDOUT WITH (FORMAT csv, DELIMITER E'\\t', HEADER)" % query, out)


def _write_settings(conn, path):
    """pg_settings.tsv: the server's settings as a tab-separated file with a header, the value of every setting that
    can carry a credential masked (``common.mask_setting``: a password in ``primary_conninfo``, a secret key in
    ``restore_command`` or ``archive_command``), so the bundle holds no credential of the server's configuration."""
    with pg_errors('reading pg_settings'), conn.cursor() as cur:
        cur.execute(_SETTINGS_QUERY)
        columns = [d[0] for d in cur.description]
        rows = cur.fetchall()
    with _private_text(path) as out:
        writer = csv.writer(out, delimiter='\t', lineterminator='\n')
        writer.writerow(columns)
        for row in rows:
            writer.writerow([row[0], mask_setting(row[0], row[1])] + list(row[2:]))


def _write_fingerprints(params, snapshot, path):
    """fingerprints.json: row count and checksum of every table, read in the dump's snapshot on a connection of its
    own (the exporting transaction must stay open, and idle, until pg_dump has taken the snapshot)."""
    conn = connect(params, read_only=True)
    try:
        prints = table_fingerprints(conn, checksums=True, snapshot=snapshot)
    finally:
        conn.close()
    with _private_text(path) as out:
        json.dump(prints, out, indent=1, sort_keys=True)
    return len(prints)


def _plain_copy(pg_restore, env, directory_dump, target, timeout):
    """records.sql.gz from the directory dump: ``pg_restore -f -`` streams the SQL script, gzip compresses it.

    :raises PgopsError: when pg_restore fails (its stderr), runs longer than ``timeout`` seconds, or ``target`` cannot
        be written (a full volume).
    """
    cmd = [pg_restore, '--file=-', directory_dump]
    deadline = time.monotonic() + timeout
    program = Program(cmd, env, 'pg_restore --file=- (the plain SQL copy)', stdout=subprocess.PIPE)
    try:
        try:
            with private_file(target) as raw, gzip.GzipFile(filename='', mode='wb', fileobj=raw,
                                                            compresslevel=PLAIN_COMPRESS_LEVEL) as out:
                for block in iter(lambda: program.stdout.read(bundle.CHUNK), b''):
                    out.write(block)
                    if time.monotonic() > deadline:
                        raise PgopsError('writing %s took longer than timeout and was stopped.' % PLAIN_DUMP)
        except OSError as exc:
            raise PgopsError('writing %s failed: %s. Check the free space and permissions of %s (or give another '
                             'scratch_dir).' % (PLAIN_DUMP, exc, os.path.dirname(target)))
        program.wait()
    finally:
        program.stop()
    program.result()
