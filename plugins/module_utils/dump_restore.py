# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a logical dump bundle (see :mod:`dump_bundle`), and the logical restore drill.

The steps of the reference runbook's restore job, each checked: pick the newest (or a named) bundle, verify it
against its checksum file and manifest, apply ``globals.sql`` tolerating only "already exists", create the
extensions, ``pg_restore -j`` from the directory dump (or ``psql`` with ``ON_ERROR_STOP`` from ``records.sql.gz``),
``ANALYZE``, refresh the materialized views, and count the rows of every table.

The drill restores into a scratch database, compares every table's row count and checksum with the source (the
fingerprints recorded in the bundle, or the source database now), and drops the scratch database.
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

from ansible_collections.pgops.resilience.plugins.module_utils import bundle, dump_bundle, pg_tools, sanity
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import (
    connect, connection_secrets, libpq_environment, pg_error_text, pg_errors, psycopg2, sql)

# psql's report of a failed statement: "psql:/path/globals.sql:12: ERROR:  role "app" already exists".
_PSQL_ERROR = re.compile(r'^psql:[^\n]*?:\d+: (ERROR|FATAL|PANIC):\s+(.*)$', re.MULTILINE)
_ALREADY_EXISTS = re.compile(r'already exists$')
# pg_dumpall's role creation line: CREATE ROLE name; with the name quoted when it needs to be (quote_identifier).
_CREATE_ROLE = re.compile(r'^CREATE ROLE ((?:"(?:[^"]|"")+")|[a-z_][a-z0-9_$]*);$', re.MULTILINE)
DRILL_PREFIX = 'pgops_drill_'
MAINTENANCE_DB = 'postgres'


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


def _validate(params):
    if params['jobs'] < 1:
        raise PgopsError('jobs must be at least 1 (pg_restore -j), not %d.' % params['jobs'])
    if not params['drill'] and not params.get('database'):
        raise PgopsError('database is required: name the database to restore into (it is created when missing), or '
                         'set drill=true to restore into a scratch database.')
    if params['drill'] and params.get('database') and not params['database'].startswith(DRILL_PREFIX):
        raise PgopsError('with drill=true the scratch database is dropped afterwards, so its name must start with %s '
                         '(got %r); leave database unset for a generated name.' % (DRILL_PREFIX, params['database']))


def restore(params, check_mode=False):
    """Restore the chosen bundle into ``database`` (or, with ``drill``, into a scratch database that is compared
    with the source and dropped).

    :param params: dict, the module's parameters (connection options plus :func:`argument_spec`); the connection
        options name the server, and ``login_db`` the database to connect to for CREATE DATABASE (default postgres).
    :param check_mode: bool; the bundle is still fetched and verified (into a temporary directory), nothing else.
    :returns: dict, the module result: ``changed``, ``bundle`` (``name``, ``url``, ``created``, ``source_database``),
        ``database``, ``created_database`` (bool), ``source`` (directory or plain), ``globals`` (``applied``,
        ``already_existed`` list), ``extensions`` (list of dicts), ``materialized_views`` (list of dicts with
        ``name``, ``refreshed``, ``seconds``, ``error``), ``tables`` (dict ``schema.name`` -> rows), ``rows`` (total),
        ``seconds`` (phase -> seconds), ``warnings``; with ``drill`` also ``drill`` (``identical``, ``compared_with``,
        ``differences``, ``dropped``).
    :raises PgopsError: when the bundle is refused, a step fails (with the program's or the server's message), or
        the drill finds a difference (``details`` hold the result so far).
    """
    _validate(params)
    store = bundle.BundleStore.from_params(params)
    chosen = _choose(store, params.get('bundle'))
    scratch = tempfile.mkdtemp(prefix='pgops-restore-', dir=params.get('scratch_dir'))
    try:
        seconds = {}
        started = time.monotonic()
        local = store.fetch(chosen['name'], scratch)
        root = os.path.join(scratch, 'bundle')
        # The plain SQL copy is verified but only written out when it is what will be restored.
        skip = () if params['source'] == 'plain' else (dump_bundle.PLAIN_DUMP,)
        manifest = bundle.extract_verified(local, root, hash_only=skip)
        if params['source'] == 'auto' and skip and not os.path.isdir(os.path.join(root, dump_bundle.DIRECTORY_DUMP)):
            shutil.rmtree(root)
            manifest = bundle.extract_verified(local, root)
        seconds['verify'] = round(time.monotonic() - started, 3)
        info = manifest.get('info') or {}
        target = params.get('database') or '%s%s' % (DRILL_PREFIX, utc_now().strftime('%Y%m%d%H%M%S'))
        result = dict(changed=not check_mode, bundle=dict(name=chosen['name'], url=chosen['url'], created=manifest.get('created'),
                                                          source_database=info.get('database')),
                      database=target, source=_source_format(params['source'], root), seconds=seconds, warnings=[])
        if check_mode:
            return result
        return _Restore(params, root, info, target, result).run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


def _source_format(choice, root):
    has_directory = os.path.isfile(os.path.join(root, dump_bundle.DIRECTORY_DUMP, 'toc.dat'))
    has_plain = os.path.isfile(os.path.join(root, dump_bundle.PLAIN_DUMP))
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
        started = time.monotonic()
        value = work()
        self.result['seconds'][phase] = round(time.monotonic() - started, 3)
        return value

    def run(self):
        conn = connect(self.maintenance)
        try:
            major = _server_major(conn)
            self.programs = dict((p, pg_tools.find_client_program(p, self.params.get('bindir'), major))
                                 for p in ('pg_restore', 'psql', 'vacuumdb'))
            exists = self._refuse_unusable_target(conn)  # before anything changes, roles included
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
            exc.details.setdefault('restore', self.result)
            raise
        if self.params['drill']:
            self._finish_drill(compared)
        return self.result

    # -- steps -------------------------------------------------------------------------------------------------

    def _apply_globals(self):
        """Run globals.sql through psql; only "already exists" errors are tolerated (roles made by an earlier restore,
        or by the server's own initialisation, such as the superuser)."""
        path = os.path.join(self.root, dump_bundle.GLOBALS)
        if not os.path.isfile(path):
            return dict(applied=False, already_existed=[])
        cmd = [self.programs['psql'], '--no-psqlrc', '--no-password', '--quiet', '--file=%s' % path]
        env = libpq_environment(self.maintenance)
        stderr = pg_tools.run_program(cmd, env, 'psql -f globals.sql', self.secrets, self.params['timeout'])
        errors = [m.group(2).strip() for m in _PSQL_ERROR.finditer(stderr)]
        other = [e for e in errors if not _ALREADY_EXISTS.search(e)]
        if other:
            raise PgopsError('applying globals.sql failed: %s. Only "already exists" errors are tolerated; nothing else '
                             'was restored.' % '; '.join(other[:5]), stderr=stderr)
        return dict(applied=True, already_existed=errors)

    def _refuse_unusable_target(self, conn):
        """Whether the target database exists; refuse a drill database that exists, and a database that already
        holds tables unless ``clean``."""
        exists = bool(_one(conn, 'SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s', (self.target,)))
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
        self.result['warnings'] += pg_tools.warnings_of(
            pg_tools.run_program(cmd, env, 'vacuumdb --analyze-only', self.secrets, self.params['timeout']))

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
        stderr = pg_tools.run_program(cmd, env, 'pg_restore into database %s' % self.target, self.secrets,
                                      self.params['timeout'])
        self.result['warnings'] += pg_tools.warnings_of(stderr)

    def _psql_plain(self, env):
        """records.sql.gz through ``psql -v ON_ERROR_STOP=1 --single-transaction``: all or nothing."""
        cmd = [self.programs['psql'], '--no-psqlrc', '--no-password', '--quiet', '--set=ON_ERROR_STOP=1',
               '--single-transaction', '--file=-']
        if self.params['clean']:
            raise PgopsError('clean=true needs the directory dump (source=directory): the plain SQL has no DROP statements.')
        with tempfile.TemporaryFile() as err:
            try:
                proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
            except OSError as exc:
                raise PgopsError('cannot run psql (%s): %s' % (cmd[0], exc))
            try:
                with gzip.open(os.path.join(self.root, dump_bundle.PLAIN_DUMP), 'rb') as source:
                    shutil.copyfileobj(source, proc.stdin, bundle.CHUNK)
            except BrokenPipeError:
                pass  # psql stopped at an error: its exit status and stderr say which
            except (OSError, EOFError) as exc:
                proc.kill()
                raise PgopsError('cannot read %s: %s' % (dump_bundle.PLAIN_DUMP, exc))
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
                proc.wait()
            err.seek(0)
            stderr = err.read().decode('utf-8', 'replace')
        if proc.returncode != 0:
            raise pg_tools.failure('psql --single-transaction < records.sql.gz', proc.returncode, stderr, self.secrets)
        self.result['warnings'] += pg_tools.warnings_of(stderr)

    def _count_target(self):
        """Row counts of every table (and checksums for a drill) of the restored database."""
        conn = connect(self._target_params())
        try:
            prints = self._timed('count', lambda: sanity.table_fingerprints(conn, checksums=self.params['drill']))
        finally:
            conn.close()
        self.result['tables'] = dict((key, value['rows']) for key, value in sorted(prints.items()))
        self.result['rows'] = sum(self.result['tables'].values())
        return prints

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
        outcome = sanity.compare_fingerprints(source, restored)
        drill = dict(identical=outcome['identical'], compared_with=compared_with, differences=outcome['differences'],
                     tables=len(source), dropped=False)
        self.result['drill'] = drill
        if not self.params['keep_drill_database']:
            drill['dropped'] = self._drop_target()
        if not outcome['identical']:
            raise PgopsError('restore drill of %s: %d tables differ from %s (first: %s). The bundle does not restore '
                             'what was dumped.' % (self.result['bundle']['name'], len(outcome['differences']),
                                                   compared_with, outcome['differences'][0]), restore=self.result)

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
        conn = connect(dict(self.params, login_db=database))
        try:
            return sanity.table_fingerprints(conn, checksums=True), 'database %s now' % database
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
            report[key] = dict(name=key, refreshed=error is None, seconds=round(time.monotonic() - started, 3), error=error)
        if not failed or len(failed) == len(pending):
            break
        pending = failed
    return [report[k] for k in sorted(report)]


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
    return int(_one(conn, "SELECT current_setting('server_version_num')::int", ())) // 10000


def _one(conn, query, args):
    with pg_errors('querying the catalog'), conn.cursor() as cur:
        cur.execute(query, args)
        row = cur.fetchone()
    return row[0] if row else None


def _execute(conn, query, what):
    with pg_errors(what), conn.cursor() as cur:
        cur.execute(query)


def _count_user_tables(params):
    conn = connect(params)
    try:
        return _one(conn, "SELECT count(*) FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n "
                          "ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') "
                          "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'", ())
    finally:
        conn.close()
