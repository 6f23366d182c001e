# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a logical dump bundle (see :mod:`.dump`), and the logical restore drill.

The steps of the reference runbook's restore job, each checked: pick the newest (or a named) bundle, verify it
against its checksum file and manifest, apply ``globals.sql`` tolerating only "already exists", create the
extensions, ``pg_restore -j`` from the directory dump (or ``psql`` with ``ON_ERROR_STOP`` from ``records.sql.gz``),
``ANALYZE``, refresh the materialized views, and count the rows of every table.

The drill restores into a scratch database, compares every table's row count and checksum with the source (the
fingerprints recorded in the bundle, or the source database now), and drops the scratch database.

Check mode writes nothing: the bundle is verified where it is (a file, or streamed from S3) and the server is asked,
in READ ONLY sessions, whether the run would be refused; the result says what the run would do (``changed`` true).
Extracted members are 0600 in a 0700 scratch directory (a dump holds the data and the roles' password hashes),
``pgops-restore-pid<pid>@<host>.<hex>`` in ``scratch_dir``, removed at the end. A killed run cannot remove it: the
next run removes such directories whose process is gone (:func:`remove_stale_scratch`).

A database the restore creates carries the comment :data:`INCOMPLETE` (with the run and its start) until it is
filled: a killed run cannot drop what it could not fill, and the next run knows it for an unfinished restore of
this collection (:func:`left_over_databases`): it drops and restores again a target left so, and drops drill
databases left so, but never a database without the comment, one with sessions, or one whose run still lives.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle, dump as dump_bundle
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import RUN_TAG, run_tag
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program, run_program, warnings_of
from ansible_collections.pgops.resilience.plugins.module_utils._core.work import (
    make_work_directory, partial_is_stale, remove_stale_entries)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import server_facts
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import (
    compare_fingerprints, table_fingerprints)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_client_program
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import seconds_since, timed, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    connect, connection_secrets, libpq_environment)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text, pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    psycopg2 = None
    sql = None


# psql's report of a failed statement: "psql:/path/globals.sql:12: ERROR:  role "app" already exists".
_PSQL_ERROR = re.compile(r'^psql:[^\n]*?:\d+: (ERROR|FATAL|PANIC):\s+(.*)$', re.MULTILINE)
_ALREADY_EXISTS = re.compile(r'already exists$')
# Bytes of psql's stderr kept while globals.sql runs, every one read for errors: about 200 000 "already exists" lines.
GLOBALS_STDERR_KEEP = 16 * 1024 * 1024
# pg_dumpall's role creation line: CREATE ROLE name; with the name quoted when it needs to be (quote_identifier).
_CREATE_ROLE = re.compile(r'^CREATE ROLE ((?:"(?:[^"]|"")+")|[a-z_][a-z0-9_$]*);$', re.MULTILINE)
DRILL_PREFIX = 'pgops_drill_'
# COMMENT ON DATABASE of a database a restore created, until the restore is complete (see the module docstring).
INCOMPLETE = 'pgops.resilience: restore in progress'
_INCOMPLETE_COMMENT = re.compile(r'%s, run %s, started (?P<started>\d+)\Z' % (re.escape(INCOMPLETE), RUN_TAG))
MAINTENANCE_DB = 'postgres'
SCRATCH_PREFIX = 'pgops-restore-'
# A scratch directory of this module: SCRATCH_PREFIX and run_tag() (the owner), or, made by earlier
# versions without an owner, tempfile.mkdtemp's 8 random characters.
_SCRATCH_NAME = re.compile(r'%s(?:%s|[a-z0-9_]{8})\Z' % (re.escape(SCRATCH_PREFIX), RUN_TAG))


def argument_spec():
    """The options of ``pg_dump_restore`` besides the connection options (see the module's DOCUMENTATION)."""
    spec = dict(
        database=dict(type='str'),
        bundle=dict(type='str', default=''),
        source=dict(type='str', default='auto', choices=['auto', 'directory', 'plain']),
        jobs=dict(type='int', default=2),
        clean=dict(type='bool', default=False),
        globals=dict(type='bool', default=True),
        extensions=dict(type='bool', default=True),
        analyze=dict(type='bool', default=True),
        refresh_materialized_views=dict(type='bool', default=True),
        drill=dict(type='bool', default=False),
        compare_with=dict(type='str', default='auto', choices=['auto', 'bundle', 'database']),
        source_database=dict(type='str'),
        keep_drill_database=dict(type='bool', default=False),
        bindir=dict(type='path'),
        scratch_dir=dict(type='path'),
        timeout=dict(type='int', default=6 * 3600),
    )
    spec.update(bundle.store_argument_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(bundle.store_module_spec(argument_spec()))


def _validate(params):
    if params['jobs'] < 1:
        raise PgopsError('jobs must be at least 1 (pg_restore -j), not %d.' % params['jobs'])
    if not params['drill'] and not params.get('database'):
        raise PgopsError('database is required: name the database to restore into (it is created when missing), or '
                         'set drill=true to restore into a scratch database.')
    if params['drill'] and params.get('database') and not params['database'].startswith(DRILL_PREFIX):
        raise PgopsError('with drill=true the scratch database is dropped afterwards, so its name must start with %s '
                         '(got %r); leave database unset for a generated name.' % (DRILL_PREFIX, params['database']))
    if params.get('scratch_dir'):
        # Before anything is made there (check mode too): our scratch directory is created and removed in it.
        refuse_system_directory(params['scratch_dir'], 'scratch_dir', within=True)


def remove_stale_scratch(parent, max_age, check_mode=False):
    """Remove from ``parent`` the scratch directories (the extracted dump) of restores that are over: a killed run
    (SIGKILL, an evicted pod) leaves its own behind.

    Only plain directories of this user named like this module's (:data:`SCRATCH_PREFIX` and the owner of
    ``run_tag()``, or an earlier version's ``pgops-restore-<8 random characters>``) are considered,
    never a link; one goes when its process is gone from this host and PID namespace, or, for another host's (or
    namespace's) and an earlier
    version's, when nothing in it has changed for longer than ``max_age`` (see ``partial_is_stale``).

    :param parent: str, the scratch directory's parent (``scratch_dir``, default the system temporary directory).
    :param max_age: seconds (the run's ``timeout``), or None to judge by the owning process only.
    :param check_mode: bool; report without removing.
    :returns: ``(removed, problems)``: lists of str, the paths removed (or that would be) and what could not be.
    """
    def run_of(name):
        match = _SCRATCH_NAME.match(name)
        if not match:
            return None
        return name, ((int(match.group('pid')), match.group('host')) if match.group('pid') else (None, None))

    return remove_stale_entries(parent, run_of, max_age, check_mode, 'left-over restore scratch directories',
                                directories_only=True)


def restore_dump(params, check_mode=False):
    """Restore the chosen bundle into ``database`` (or, with ``drill``, into a scratch database that is compared
    with the source and dropped).

    :param params: dict, the module's parameters (connection options plus :func:`argument_spec`); the connection
        options name the server, and ``login_db`` the database to connect to for CREATE DATABASE (default postgres).
    :param check_mode: bool; the bundle is verified where it is and the target checked, writing nothing: the result
        says what a run would do (``changed`` true, ``created_database`` whether it would create it).
    :returns: dict, the module result: ``changed``, ``bundle`` (``name``, ``url``, ``created``, ``source_database``),
        ``removed_scratch`` (paths of the scratch directories of killed runs removed, :func:`remove_stale_scratch`),
        ``database``, ``created_database`` (bool), ``source`` (directory or plain), ``globals`` (``applied``,
        ``already_existed`` list), ``extensions`` (list of dicts), ``materialized_views`` (list of dicts with
        ``name``, ``refreshed``, ``seconds``, ``error``), ``tables`` (dict ``schema.name`` -> rows), ``rows`` (total),
        ``seconds`` (phase -> seconds), ``warnings``; with ``drill`` also ``drill`` (``identical``, ``compared_with``,
        ``differences``, ``dropped``).
    :raises PgopsError: when the bundle is refused, a step fails (with the program's or the server's message), or
        the drill finds a difference (``details`` hold the result so far under ``restore``, its warnings beside it).
    """
    _validate(params)
    store = bundle.BundleStore.from_params(params)
    chosen = _choose(store, params.get('bundle'))
    parent = params.get('scratch_dir') or tempfile.gettempdir()
    left_over = remove_stale_scratch(parent, params['timeout'] if (params.get('timeout') or 0) > 0 else None, check_mode)
    if check_mode:
        started = time.monotonic()
        manifest = store.verify(chosen['name'])
        result = _result(params, chosen, manifest, dict(verify=seconds_since(started)), left_over)
        return _Restore(params, None, manifest.get('info') or {}, result['database'], result).preview()
    scratch = make_work_directory(os.path.join(parent, SCRATCH_PREFIX + run_tag()))  # 0700
    try:
        started = time.monotonic()
        local = store.fetch(chosen['name'], scratch)
        root = os.path.join(scratch, 'bundle')
        # The plain SQL copy is verified but only written out when it is what will be restored.
        skip = () if params['source'] == 'plain' else (dump_bundle.PLAIN_DUMP,)
        manifest = bundle.extract_verified(local, root, hash_only=skip)
        if params['source'] == 'auto' and skip and not os.path.isdir(os.path.join(root, dump_bundle.DIRECTORY_DUMP)):
            shutil.rmtree(root)
            manifest = bundle.extract_verified(local, root)
        result = _result(params, chosen, manifest, dict(verify=seconds_since(started)), left_over)
        return _Restore(params, root, manifest.get('info') or {}, result['database'], result).restore()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _result(params, chosen, manifest, seconds, left_over):
    """The result's first fields, from the verified bundle: what is restored, from what, into which database; and
    ``left_over``, :func:`remove_stale_scratch`'s ``(removed, problems)``."""
    info = manifest.get('info') or {}
    target = params.get('database') or '%s%s' % (DRILL_PREFIX, utc_now().strftime('%Y%m%d%H%M%S'))
    return dict(changed=True, bundle=dict(name=chosen['name'], url=chosen['url'], created=manifest.get('created'),
                                          source_database=info.get('database')),
                database=target, source=_source_format(params['source'], manifest['members']), seconds=seconds,
                removed_scratch=left_over[0], warnings=list(left_over[1]))


def _choose(store, name):
    """The bundle to restore: ``name`` (any file name, such as an uploaded dump) or the newest nightly bundle."""
    if name:
        if '/' in name or name.startswith('.'):
            raise PgopsError('bundle must be a file name in the store, not a path: %r.' % name)
        if not store.exists(name):
            newest = [b['name'] for b in store.list(dump_bundle.PATTERN)[-5:][::-1]]
            raise PgopsError('bundle %s is not in %s; the newest nightly bundles there are: %s.'
                             % (name, store.location, ', '.join(newest) or 'none'))
        return dict(name=name, url=store.url(name))
    return bundle.select_bundle(store.list(dump_bundle.PATTERN), None, store.location)


def _source_format(choice, members):
    """``directory`` or ``plain``: what ``choice`` (``auto``, ``directory``, ``plain``) restores from a bundle whose
    verified manifest lists ``members``."""
    has_directory = dump_bundle.DIRECTORY_DUMP + '/toc.dat' in members
    has_plain = dump_bundle.PLAIN_DUMP in members
    if choice == 'auto':
        choice = 'directory' if has_directory else 'plain'
    if (choice == 'directory' and not has_directory) or (choice == 'plain' and not has_plain):
        raise PgopsError('the bundle holds no %s; use source=%s.' % (
            dump_bundle.DIRECTORY_DUMP if choice == 'directory' else dump_bundle.PLAIN_DUMP,
            'plain' if choice == 'directory' else 'directory'))
    return choice


class _Restore:
    """One restore run over an extracted, verified bundle at ``root``."""

    def __init__(self, params, root, info, target, result):
        self.params = params
        self.root = root
        self.info = info
        self.target = target
        self.result = result
        self.secrets = connection_secrets(params)
        self.maintenance = dict(params, login_db=params.get('login_db') or MAINTENANCE_DB)
        self.created = False

    def _timed(self, phase, work):
        with timed(self.result['seconds'], phase):
            return work()

    def preview(self):
        """Check mode: what :meth:`restore` checks before it changes anything (the client programs, a drill database that
        exists, a non-empty database without ``clean``), in READ ONLY sessions; the result says what it would do."""
        conn = connect(self.maintenance, read_only=True)
        try:
            major = _server_major(conn)
            self.programs = dict((p, find_client_program(p, self.params.get('bindir'), major))
                                 for p in ('pg_restore', 'psql', 'vacuumdb'))
            exists = self._remove_left_over_databases(conn, check_mode=True)
            exists = self._refuse_unusable_target(conn, exists)
        finally:
            conn.close()
        self.result['created_database'] = not exists
        return self.result

    def restore(self):
        """Create the target (and the roles), restore into it, compare, and finish a drill; returns the result."""
        conn = connect(self.maintenance)
        try:
            major = _server_major(conn)
            self.programs = dict((p, find_client_program(p, self.params.get('bindir'), major))
                                 for p in ('pg_restore', 'psql', 'vacuumdb'))
            exists = self._remove_left_over_databases(conn)
            exists = self._refuse_unusable_target(conn, exists)  # before anything changes, roles included
            if self.params['globals'] and self.params['drill']:
                self.result['globals'] = self._timed('globals', lambda: self._create_missing_roles(conn))
            elif self.params['globals']:
                self.result['globals'] = self._timed('globals', self._apply_globals)
            self._create_database(conn, exists)
        finally:
            conn.close()
        try:
            self._restore_into_target()
            compared = self._count_target()
        except PgopsError as exc:
            self._drop_after_failure()
            _add_result(exc, self.result)
            raise
        if self.created and (not self.params['drill'] or self.params['keep_drill_database']):
            self._mark_complete()
        if self.params['drill']:
            self._finish_drill(compared)
        return self.result

    def _remove_left_over_databases(self, conn, check_mode=False):
        """Drop what killed runs left (:func:`left_over_databases`): drill databases, and the target itself when it is
        one (it is then restored afresh). Reported in ``removed_databases``.

        :returns: bool, whether the target database exists afterwards.
        :raises PgopsError: when the target is an unfinished restore whose run may still be at work (a session on it,
            or its process alive).
        """
        left = left_over_databases(conn, self.params['timeout'] if (self.params.get('timeout') or 0) > 0 else None)
        removable = [name for name in left if name.startswith(DRILL_PREFIX) or name == self.target]
        for name in removable:
            if not check_mode:
                _execute(conn, sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(name)),
                         'dropping database %s, left unfinished by a killed run' % name)
        self.result['removed_databases'] = removable
        exists = bool(_one(conn, 'SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s', (self.target,)))
        if exists and self.target not in removable:
            comment = _one(conn, "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database "
                                 "WHERE datname = %s", (self.target,))
            if comment and comment.startswith(INCOMPLETE):
                raise PgopsError('database %s is being restored by another run (%s), or its run ended only now and its '
                                 'sessions are still closing; try again later. A run that was killed is recognised once '
                                 'its process is gone.' % (self.target, comment))
        return exists and self.target not in removable

    # -- steps -------------------------------------------------------------------------------------------------

    def _apply_globals(self):
        """Run globals.sql through psql; only "already exists" errors are tolerated (roles made by an earlier restore,
        or by the server's own initialisation, such as the superuser)."""
        path = os.path.join(self.root, dump_bundle.GLOBALS)
        if not os.path.isfile(path):
            return dict(applied=False, already_existed=[])
        cmd = [self.programs['psql'], '--no-psqlrc', '--no-password', '--quiet', '--file=%s' % path]
        env = libpq_environment(self.maintenance)
        # Every line is read for errors: stderr is kept whole up to GLOBALS_STDERR_KEEP bytes, and refused beyond.
        stderr = run_program(cmd, env, 'psql -f globals.sql', self.secrets, self.params['timeout'],
                             keep=GLOBALS_STDERR_KEEP, complete=True)
        errors = [m.group(2).strip() for m in _PSQL_ERROR.finditer(stderr)]
        other = [e for e in errors if not _ALREADY_EXISTS.search(e)]
        if other:
            raise PgopsError('applying globals.sql failed: %s. Only "already exists" errors are tolerated; nothing else '
                             'was restored.' % '; '.join(other[:5]), stderr=stderr)
        return dict(applied=True, already_existed=errors)

    def _refuse_unusable_target(self, conn, exists):
        """Whether the target database exists (``exists``, as :meth:`_remove_left_over_databases` left it); refuse a
        drill database that exists, and a database that already holds tables unless ``clean``."""
        if exists and self.params['drill']:
            raise PgopsError('the drill database %s already exists; drop it or leave database unset.' % self.target)
        if exists and not self.params['clean']:
            tables = _count_user_tables(self._target_params())
            if tables:
                raise PgopsError('database %s already holds %d tables. Restore into a new database, or set clean=true to '
                                 'drop and recreate the objects the dump holds (pg_restore --clean --if-exists).'
                                 % (self.target, tables))
        return exists

    def _create_database(self, conn, exists):
        """Create the target database when it is missing, owned by the dumped database's owner when that role exists."""
        if not exists:
            owner = self.info.get('owner')
            query = sql.SQL('CREATE DATABASE {}').format(sql.Identifier(self.target))
            if owner and _one(conn, 'SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s', (owner,)):
                query = sql.SQL('{} OWNER {}').format(query, sql.Identifier(owner))
            with pg_errors('creating database %s' % self.target), conn.cursor() as cur:
                cur.execute(query)
                # Marked at once: if this run is killed, the next one knows the half-restored database for its own.
                cur.execute(sql.SQL('COMMENT ON DATABASE {} IS {}').format(
                    sql.Identifier(self.target), sql.Literal('%s, run %s, started %d' % (
                        INCOMPLETE, run_tag(), int(time.time())))))
            self.created = True
        self.result['created_database'] = self.created

    def _create_missing_roles(self, conn):
        """For a drill: only the ``CREATE ROLE`` statements of globals.sql, for roles this server lacks, so the restored
        objects have their owners. The ``ALTER ROLE`` lines (passwords, attributes) would change the live server's
        roles, which a drill must not do."""
        path = os.path.join(self.root, dump_bundle.GLOBALS)
        created, existing = [], []
        if not os.path.isfile(path):
            return dict(applied=False, created_roles=created, already_existed=existing)
        with open(path, encoding='utf-8') as handle:
            statements = [m.group(0) for m in _CREATE_ROLE.finditer(handle.read())]
        for statement in statements:
            name = _role_name(statement)
            if _one(conn, 'SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s', (name,)):
                existing.append(name)
                continue
            # The statement as pg_dumpall wrote it: the role name is already quoted there.
            _execute(conn, statement, 'creating role %s for the drill' % name)
            created.append(name)
        return dict(applied=False, created_roles=created, already_existed=existing)

    def _target_params(self):
        return dict(self.params, login_db=self.target)

    def _restore_into_target(self):
        if self.params['extensions']:
            self.result['extensions'] = self._timed('extensions', self._create_extensions)
        env = libpq_environment(self._target_params())
        if self.result['source'] == 'directory':
            self._timed('pg_restore', lambda: self._pg_restore(env))
        else:
            self._timed('psql', lambda: self._psql_plain(env))
        conn = connect(self._target_params())
        try:
            if self.params['analyze']:
                self._timed('analyze', lambda: self._analyze(env))
            if self.params['refresh_materialized_views']:
                self.result['materialized_views'] = self._timed('refresh', lambda: refresh_materialized_views(conn))
        finally:
            conn.close()

    def _analyze(self, env):
        """``vacuumdb --analyze-only --jobs N``: ANALYZE of every table, on as many connections as the restore used."""
        cmd = [self.programs['vacuumdb'], '--analyze-only', '--jobs=%d' % self.params['jobs'], '--no-password', '--quiet',
               '--dbname=%s' % _conninfo_dbname(self.target)]
        self.result['warnings'] += warnings_of(
            run_program(cmd, env, 'vacuumdb --analyze-only', self.secrets, self.params['timeout']))

    def _create_extensions(self):
        """CREATE EXTENSION IF NOT EXISTS for each row of extensions.tsv whose schema exists (the dump creates the
        others with its schemas; pg_dump writes CREATE EXTENSION IF NOT EXISTS, so both orders work)."""
        path = os.path.join(self.root, dump_bundle.EXTENSIONS)
        if not os.path.isfile(path):
            return []
        with open(path, encoding='utf-8', newline='') as handle:
            rows = list(csv.DictReader(handle, delimiter='\t'))
        done = []
        conn = connect(self._target_params())
        try:
            for row in rows:
                name, schema = row['extname'], row['nspname']
                if name == 'plpgsql':
                    continue
                if not _one(conn, 'SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s', (schema,)):
                    done.append(dict(name=name, schema=schema, version=row['extversion'], created=False,
                                     note='schema %s is created by the dump, which creates the extension' % schema))
                    continue
                before = _one(conn, 'SELECT 1 FROM pg_catalog.pg_extension WHERE extname = %s', (name,))
                _execute(conn, sql.SQL('CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}').format(
                    sql.Identifier(name), sql.Identifier(schema)), 'creating extension %s' % name)
                done.append(dict(name=name, schema=schema, version=row['extversion'], created=not before))
        finally:
            conn.close()
        return done

    def _pg_restore(self, env):
        cmd = [self.programs['pg_restore'], '--jobs=%d' % self.params['jobs'], '--exit-on-error', '--no-password',
               '--dbname=%s' % _conninfo_dbname(self.target)]
        if self.params['clean']:
            cmd += ['--clean', '--if-exists']
        cmd.append(os.path.join(self.root, dump_bundle.DIRECTORY_DUMP))
        stderr = run_program(cmd, env, 'pg_restore into database %s' % self.target, self.secrets,
                             self.params['timeout'])
        self.result['warnings'] += warnings_of(stderr)

    def _psql_plain(self, env):
        """records.sql.gz through ``psql -v ON_ERROR_STOP=1 --single-transaction``: all or nothing."""
        cmd = [self.programs['psql'], '--no-psqlrc', '--no-password', '--quiet', '--set=ON_ERROR_STOP=1',
               '--single-transaction', '--file=-']
        if self.params['clean']:
            raise PgopsError('clean=true needs the directory dump (source=directory): the plain SQL has no DROP statements.')
        psql = Program(cmd, env, 'psql --single-transaction < records.sql.gz', stdin=subprocess.PIPE)
        try:
            try:
                with gzip.open(os.path.join(self.root, dump_bundle.PLAIN_DUMP), 'rb') as source:
                    shutil.copyfileobj(source, psql.stdin, bundle.CHUNK)
            except BrokenPipeError:
                pass  # psql stopped at an error: its exit status and stderr say which
            except (OSError, EOFError) as exc:
                psql.stop()
                raise PgopsError('cannot read %s: %s' % (dump_bundle.PLAIN_DUMP, exc))
            finally:
                try:
                    psql.stdin.close()
                except BrokenPipeError:
                    pass
                psql.wait()
        finally:
            psql.stop()
        self.result['warnings'] += warnings_of(psql.result(self.secrets))

    def _count_target(self):
        """Row counts of every table (and checksums for a drill) of the restored database."""
        conn = connect(self._target_params(), read_only=True)
        try:
            prints = self._timed('count', lambda: table_fingerprints(conn, checksums=self.params['drill']))
        finally:
            conn.close()
        self.result['tables'] = dict((key, value['rows']) for key, value in sorted(prints.items()))
        self.result['rows'] = sum(self.result['tables'].values())
        return prints

    def _mark_complete(self):
        """Take the :data:`INCOMPLETE` comment off the database this run created and filled."""
        conn = connect(self.maintenance)
        try:
            _execute(conn, sql.SQL('COMMENT ON DATABASE {} IS NULL').format(sql.Identifier(self.target)),
                     'marking database %s restored' % self.target)
        finally:
            conn.close()

    def _drop_after_failure(self):
        """A database this run created and could not fill is dropped, so no half-restored database is left."""
        if self.created and not self.params.get('keep_drill_database'):
            self.result['dropped_database'] = self._drop_target()

    def _drop_target(self):
        conn = connect(self.maintenance)
        try:
            _execute(conn, sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(sql.Identifier(self.target)),
                     'dropping database %s' % self.target)
        finally:
            conn.close()
        return True

    # -- drill -------------------------------------------------------------------------------------------------

    def _finish_drill(self, restored):
        source, compared_with = self._source_fingerprints()
        # A materialized view left unpopulated in the source (WITH NO DATA) is populated by the refresh here: only
        # what the source holds is compared for materialized views.
        restored = dict((k, v) for k, v in restored.items() if v.get('kind') != 'materialized view' or k in source)
        outcome = compare_fingerprints(source, restored)
        drill = dict(identical=outcome['identical'], compared_with=compared_with, differences=outcome['differences'],
                     tables=len(source), dropped=False)
        self.result['drill'] = drill
        if not self.params['keep_drill_database']:
            drill['dropped'] = self._drop_target()
        if not outcome['identical']:
            raise _add_result(PgopsError('restore drill of %s: %d tables differ from %s (first: %s). The bundle does not '
                                         'restore what was dumped.' % (self.result['bundle']['name'], len(outcome['differences']),
                                                                       compared_with, outcome['differences'][0])), self.result)

    def _source_fingerprints(self):
        wanted = self.params['compare_with']
        path = os.path.join(self.root, dump_bundle.FINGERPRINTS)
        if wanted in ('auto', 'bundle') and os.path.isfile(path):
            import json  # pylint: disable=import-outside-toplevel
            with open(path, encoding='utf-8') as handle:
                return json.load(handle), 'the fingerprints recorded in the bundle'
        if wanted == 'bundle':
            raise PgopsError('compare_with=bundle, but the bundle holds no %s; dump with fingerprints=true, or use '
                             'compare_with=database.' % dump_bundle.FINGERPRINTS)
        database = self.params.get('source_database') or self.info.get('database')
        if not database:
            raise PgopsError('the bundle does not name its database; set source_database for the drill to compare with.')
        conn = connect(dict(self.params, login_db=database), read_only=True)
        try:
            return table_fingerprints(conn, checksums=True), 'database %s now' % database
        finally:
            conn.close()


def refresh_materialized_views(conn):
    """REFRESH MATERIALIZED VIEW for every materialized view of the database, each reported; one that fails (for
    example because it reads another one not refreshed yet) is tried again after the others.

    :param conn: an autocommit connection to the database.
    :returns: list of dicts ``{'name': 'schema.view', 'refreshed': bool, 'seconds': float, 'error': str or None}``.
    """
    with pg_errors('listing the materialized views'), conn.cursor() as cur:
        cur.execute('SELECT schemaname, matviewname FROM pg_catalog.pg_matviews ORDER BY 1, 2')
        pending = cur.fetchall()
    report = {}
    for dummy in range(2):
        failed = []
        for schema, name in pending:
            started = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL('REFRESH MATERIALIZED VIEW {}.{}').format(sql.Identifier(schema), sql.Identifier(name)))
                error = None
            except psycopg2.Error as exc:
                error = pg_error_text(exc)
                failed.append((schema, name))
            key = '%s.%s' % (schema, name)
            report[key] = dict(name=key, refreshed=error is None, seconds=seconds_since(started), error=error)
        if not failed or len(failed) == len(pending):
            break
        pending = failed
    return [report[k] for k in sorted(report)]


def left_over_databases(conn, max_age):
    """Databases a restore or drill of this collection created and did not finish, whose run is over: they carry the
    :data:`INCOMPLETE` comment, no session is connected to them, and the run named in the comment is gone from this
    host and PID namespace, or, for another host's (or namespace's) run, started more than ``max_age`` seconds ago
    (``partial_is_stale``).

    :param conn: psycopg2 connection to the maintenance database.
    :param max_age: seconds (the run's ``timeout``) or None.
    :returns: list of database names.
    """
    with pg_errors('looking for databases killed restores left'), conn.cursor() as cur:
        cur.execute("SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database'), "
                    "(SELECT count(*) FROM pg_catalog.pg_stat_activity AS a WHERE a.datid = d.oid) "
                    "FROM pg_catalog.pg_database AS d "
                    "WHERE pg_catalog.shobj_description(d.oid, 'pg_database') LIKE %s ORDER BY 1", (INCOMPLETE + '%',))
        rows = cur.fetchall()
    left, now = [], time.time()
    for name, comment, sessions in rows:
        match = _INCOMPLETE_COMMENT.match(comment or '')
        if match and not sessions and partial_is_stale(
                (int(match.group('pid')), match.group('host')), int(match.group('started')), now, max_age):
            left.append(name)
    return left


def _conninfo_dbname(name):
    """``dbname='name'`` for a program's ``--dbname``, which reads a value holding ``=`` or a URI prefix as a connection
    string (libpq "Connection Strings"): quoted, a database name is only ever a name. The rest of the connection comes
    from the environment."""
    return "dbname='%s'" % name.replace('\\', '\\\\').replace("'", "\\'")


def _role_name(statement):
    """The role name of a ``CREATE ROLE`` line matched by ``_CREATE_ROLE`` (unquoted)."""
    text = _CREATE_ROLE.match(statement).group(1)
    return text[1:-1].replace('""', '"') if text.startswith('"') else text


def _server_major(conn):
    """The major version (int) of the server ``conn`` is connected to (:func:`server_facts`)."""
    with pg_errors('reading the server version'), conn.cursor() as cur:
        return server_facts(cur)['server_major']


def _one(conn, query, args):
    with pg_errors('querying the catalog'), conn.cursor() as cur:
        cur.execute(query, args)
        row = cur.fetchone()
    return row[0] if row else None


def _execute(conn, query, what):
    with pg_errors(what), conn.cursor() as cur:
        cur.execute(query)


def _add_result(exc, result):
    """``exc`` with the result so far in its details (``restore``), its warnings beside it, where ``run_module`` hands
    them to ``module.warn`` (a ``warnings`` key inside a result is not one Ansible shows)."""
    result = dict(result)
    exc.details['warnings'] = list(exc.details.get('warnings') or ()) + list(result.pop('warnings', None) or ())
    exc.details.setdefault('restore', result)
    return exc


def _count_user_tables(params):
    conn = connect(params, read_only=True)
    try:
        return _one(conn, "SELECT count(*) FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
                          "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') "
                          "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'", ())
    finally:
        conn.close()
