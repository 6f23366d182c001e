# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection connects to PostgreSQL, names objects, and takes advisory locks.

Every module builds its connection options with :func:`postgres_argument_spec`, connects with
:func:`connect`, turns user-given names into quoted identifiers with :func:`parse_qualified_name` /
:func:`resolve_table` / :func:`resolve_function` (``psycopg2.sql`` only, never string pasting), and
serialises work with :func:`try_advisory_lock`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, redact, run_module

try:
    import psycopg2
    import psycopg2.extensions
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by require_psycopg2()
    psycopg2 = None
    sql = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()
else:
    PSYCOPG2_IMPORT_ERROR = None

APPLICATION_NAME = 'pgops.resilience'
SSL_MODES = ['allow', 'disable', 'prefer', 'require', 'verify-ca', 'verify-full']
# The options that conninfo replaces (see the doc fragment pgops.resilience.postgres).
_DISCRETE_OPTIONS = {
    'login_host': 'host',
    'login_port': 'port',
    'login_user': 'user',
    'login_password': 'password',
    'login_db': 'dbname',
    'ssl_mode': 'sslmode',
    'ca_cert': 'sslrootcert',
}
# An unquoted identifier: PostgreSQL docs, "SQL Syntax > Lexical Structure > Identifiers and Key Words".
_UNQUOTED_IDENT = re.compile(r'[^\W\d][\w$]*', re.UNICODE)
_PLAIN_LOWER_IDENT = re.compile(r'[a-z_][a-z0-9_$]*\Z')


def postgres_argument_spec():
    """Argument spec of the connection options documented in the ``pgops.resilience.postgres`` doc fragment.

    Fallbacks follow libpq's environment variables (PostgreSQL docs, libpq "Environment Variables").

    :returns: dict usable as (part of) an ``AnsibleModule`` argument_spec.
    """
    return dict(
        login_host=dict(type='str', fallback=(env_fallback, ['PGHOST'])),
        login_port=dict(type='int', default=5432, fallback=(env_fallback, ['PGPORT'])),
        login_user=dict(type='str', default='postgres', fallback=(env_fallback, ['PGUSER'])),
        login_password=dict(type='str', no_log=True, fallback=(env_fallback, ['PGPASSWORD'])),
        login_db=dict(type='str', fallback=(env_fallback, ['PGDATABASE'])),
        ssl_mode=dict(type='str', default='prefer', choices=SSL_MODES, fallback=(env_fallback, ['PGSSLMODE'])),
        ca_cert=dict(type='path', fallback=(env_fallback, ['PGSSLROOTCERT'])),
        connect_timeout=dict(type='int', default=10, fallback=(env_fallback, ['PGCONNECT_TIMEOUT'])),
        connect_params=dict(type='dict', default={}),
        conninfo=dict(type='str', no_log=True),
    )


def require_psycopg2():
    """Raise :class:`PgopsError` saying how to install psycopg2 when it cannot be imported."""
    if psycopg2 is None:
        raise PgopsError('The psycopg2 Python library is required on the host that runs this module: '
                         'pip install psycopg2-binary (or the distribution package python3-psycopg2).',
                         exception=PSYCOPG2_IMPORT_ERROR)


class StandbyRefusesConnections(PgopsError):
    """The server is a standby that refuses connections (``hot_standby = off``): a standby all the same."""


def connection_secrets(params):
    """The secret values among the connection options: ``login_password``, ``conninfo`` and any
    ``password`` / ``sslpassword`` in ``connect_params``. Modules add them to ``no_log_values``.

    :returns: list of str.
    """
    secrets = [params.get('login_password'), params.get('conninfo')]
    secrets += [v for k, v in (params.get('connect_params') or {}).items() if k in ('password', 'sslpassword')]
    return [str(s) for s in secrets if s]


def run_postgres_module(module_class, spec, work, **module_options):
    """Build and run a module that connects to PostgreSQL: the shared connection options plus ``spec``, check
    mode supported, the connection secrets added to ``no_log_values``, then ``work(module)`` through
    :func:`run_module` (which turns :class:`PgopsError` into ``fail_json``).

    :param module_class: ``AnsibleModule``, passed in by the module file, which imports it as Ansible expects.
    :param spec: dict, the module's own argument_spec.
    :param work: callable taking the module and returning the result dict.
    :param module_options: further ``AnsibleModule`` arguments, such as ``mutually_exclusive``.
    """
    argument_spec = postgres_argument_spec()
    argument_spec.update(spec)
    module = module_class(argument_spec=argument_spec, supports_check_mode=True, **module_options)
    module.no_log_values.update(connection_secrets(module.params))
    run_module(module, lambda: work(module))


def connection_kwargs(params):
    """Translate module parameters into ``(dsn, kwargs)`` for ``psycopg2.connect``.

    With ``conninfo`` the string is the base and only ``connect_timeout`` (when the string has none) and
    ``connect_params`` are added; otherwise the discrete ``login_*`` options are used.

    :param params: dict of the options of :func:`postgres_argument_spec`.
    :returns: tuple ``(dsn or None, dict of libpq keywords)``.
    :raises PgopsError: when ``conninfo`` is not a valid libpq connection string (its text is not echoed).
    """
    kwargs = {}
    dsn = params.get('conninfo') or None
    if dsn:
        try:
            given = psycopg2.extensions.parse_dsn(dsn)
        except psycopg2.ProgrammingError as exc:
            raise PgopsError('conninfo is not a valid libpq connection string (key=value pairs or a postgresql:// URI): %s'
                             % redact(exc, [dsn]))
    else:
        given = {}
        for option, keyword in _DISCRETE_OPTIONS.items():
            if params.get(option) not in (None, ''):
                kwargs[keyword] = params[option]
    if 'connect_timeout' not in given and params.get('connect_timeout') is not None:
        kwargs['connect_timeout'] = params['connect_timeout']
    if 'application_name' not in given:
        kwargs['application_name'] = APPLICATION_NAME
    kwargs.update(params.get('connect_params') or {})
    return dsn, kwargs


# libpq's environment variable for each connection keyword it can take from the environment (PostgreSQL 15 docs,
# 34.15 "Environment Variables"); the client programs (pg_dump, pg_restore, psql, pg_basebackup) read them.
_LIBPQ_ENVIRONMENT = {
    'host': 'PGHOST', 'hostaddr': 'PGHOSTADDR', 'port': 'PGPORT', 'dbname': 'PGDATABASE', 'user': 'PGUSER',
    'password': 'PGPASSWORD', 'passfile': 'PGPASSFILE', 'service': 'PGSERVICE', 'options': 'PGOPTIONS',
    'application_name': 'PGAPPNAME', 'sslmode': 'PGSSLMODE', 'sslcert': 'PGSSLCERT', 'sslkey': 'PGSSLKEY',
    'sslrootcert': 'PGSSLROOTCERT', 'sslcrl': 'PGSSLCRL', 'sslcrldir': 'PGSSLCRLDIR', 'sslsni': 'PGSSLSNI',
    'requirepeer': 'PGREQUIREPEER', 'ssl_min_protocol_version': 'PGSSLMINPROTOCOLVERSION',
    'ssl_max_protocol_version': 'PGSSLMAXPROTOCOLVERSION', 'gssencmode': 'PGGSSENCMODE', 'krbsrvname': 'PGKRBSRVNAME',
    'gsslib': 'PGGSSLIB', 'connect_timeout': 'PGCONNECT_TIMEOUT', 'client_encoding': 'PGCLIENTENCODING',
    'target_session_attrs': 'PGTARGETSESSIONATTRS', 'channel_binding': 'PGCHANNELBINDING',
}


def libpq_environment(params, dbname=None, base=None):
    """The environment for a PostgreSQL client program (pg_dump, pg_restore, psql, pg_basebackup) that connects
    where ``params`` point, so that nothing about the connection, above all no password, is on its command line
    (where ``ps`` shows it to every user of the host).

    What the options set overrides the ``PG*`` variables of ``base``; the others stay (``PGPASSFILE``,
    ``PGSERVICEFILE``...), as they do for the module's own connection, which libpq makes from the same environment.

    :param params: dict of the options of :func:`postgres_argument_spec`.
    :param dbname: str or None, the database to use instead of the one the options name.
    :param base: dict or None, the environment to start from (default ``os.environ``).
    :returns: dict str -> str.
    :raises PgopsError: naming a connection keyword that libpq cannot take from the environment.
    """
    dsn, kwargs = connection_kwargs(params)
    merged = dict(psycopg2.extensions.parse_dsn(dsn)) if dsn else {}
    merged.update(kwargs)
    if dbname is not None:
        merged['dbname'] = dbname
    env = dict(os.environ if base is None else base)
    for keyword, value in merged.items():
        if keyword not in _LIBPQ_ENVIRONMENT:
            raise PgopsError('The connection keyword %r has no libpq environment variable, so the PostgreSQL client '
                             'programs cannot be given it without putting it on their command line; leave it out of '
                             'conninfo / connect_params.' % keyword)
        if value not in (None, ''):
            env[_LIBPQ_ENVIRONMENT[keyword]] = str(value)
    return env


def describe_server(params):
    """A password-free description of where the options point, such as ``postgres@127.0.0.1:5432/app``."""
    dsn, kwargs = connection_kwargs(params)
    merged = dict(psycopg2.extensions.parse_dsn(dsn)) if dsn else {}
    merged.update(kwargs)
    host = merged.get('host') or merged.get('hostaddr') or 'local socket'
    return '%s@%s:%s/%s' % (merged.get('user') or 'default user', host, merged.get('port') or 'default port',
                            merged.get('dbname') or 'default database')


def connect(params, autocommit=True, read_only=False):
    """Open a psycopg2 connection from module parameters.

    The session is READ COMMITTED whatever ``default_transaction_isolation`` says, because the
    advisory-lock protocol of :func:`try_advisory_lock` relies on each statement seeing the latest commits.

    With ``read_only`` (check mode, and every ``_info`` module) every transaction of the session is READ ONLY
    (``default_transaction_read_only``, set by libpq's ``options`` at connection start and again by
    ``set_session``), so no statement of the run can write, whatever it calls (PostgreSQL docs, "SET
    TRANSACTION": a read-only transaction refuses INSERT, UPDATE, DELETE, DDL, ``nextval`` and COPY FROM).

    :param params: dict of the options of :func:`postgres_argument_spec`.
    :param autocommit: bool, the initial autocommit mode.
    :param read_only: bool, make every transaction READ ONLY.
    :returns: ``psycopg2.extensions.connection``.
    :raises StandbyRefusesConnections: when the server is a standby with ``hot_standby = off``.
    :raises PgopsError: naming the server (never the password) and libpq's reason, for a wrong password,
        an unreachable host, a missing database, and so on.
    """
    require_psycopg2()
    dsn, kwargs = connection_kwargs(params)
    secrets = connection_secrets(params)
    if read_only:
        # Added to the options the user gave (in connect_params or in conninfo), which kwargs would replace.
        given = kwargs.get('options') or (psycopg2.extensions.parse_dsn(dsn).get('options') if dsn else None) or ''
        kwargs['options'] = (given + ' -c default_transaction_read_only=on').strip()
    try:
        conn = psycopg2.connect(dsn, **kwargs)
    except psycopg2.Error as exc:
        reason = ' '.join(str(exc).split())
        if 'Hot standby mode is disabled' in reason:
            raise StandbyRefusesConnections('%s is a standby that does not accept connections (hot_standby = off).'
                                            % describe_server(params))
        raise PgopsError('Cannot connect to PostgreSQL at %s: %s. Check login_host, login_port, login_user, '
                         'login_password, login_db (or conninfo) and that the server accepts the connection.'
                         % (describe_server(params), redact(reason, secrets)))
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED, autocommit=autocommit,
                     readonly=True if read_only else None)
    return conn


def parse_qualified_name(text, option='name', allow_call=False):
    """Split a name written as SQL writes it into ``(schema or None, name)``.

    ``kv_store`` -> ``(None, 'kv_store')``; ``App.KV`` -> ``('app', 'kv')`` (unquoted names fold to lower
    case); ``app."Documents"`` -> ``('app', 'Documents')``; a quoted name with a doubled quote keeps one quote. With
    ``allow_call`` a trailing empty argument list, ``rebuild()``, is accepted and dropped. The rules are
    those of PostgreSQL docs, "SQL Syntax > Lexical Structure > Identifiers and Key Words".

    :param text: str.
    :param option: the option name used in error messages.
    :raises PgopsError: for an empty name, unbalanced quotes, more than two parts, or stray characters.
    """
    source = (text or '').strip()
    if allow_call and source.endswith(')'):
        head, sep, args = source.rpartition('(')
        if not sep or args.strip(' )'):
            raise PgopsError('%s %r: give the function name only; the function is called without arguments.' % (option, text))
        source = head.strip()
    parts = []
    pos = 0
    while True:
        part, pos = _next_identifier(source, pos, option, text)
        parts.append(part)
        while pos < len(source) and source[pos].isspace():
            pos += 1
        if pos == len(source):
            break
        if source[pos] != '.':
            raise PgopsError('%s %r: unexpected %r at character %d. Write names as SQL does: kv_store, app.kv_store or app."Documents".'
                             % (option, text, source[pos], pos + 1))
        pos += 1
    if len(parts) > 2:
        raise PgopsError('%s %r: use at most schema.name (a database part is not allowed).' % (option, text))
    return (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def _next_identifier(source, pos, option, original):
    """Read one identifier of ``source`` at ``pos``; return ``(name, next position)``."""
    while pos < len(source) and source[pos].isspace():
        pos += 1
    if pos < len(source) and source[pos] == '"':
        chars = []
        pos += 1
        while pos < len(source):
            if source[pos] == '"':
                if source[pos + 1:pos + 2] == '"':
                    chars.append('"')
                    pos += 2
                    continue
                name = ''.join(chars)
                if not name:
                    raise PgopsError('%s %r: a quoted identifier cannot be empty.' % (option, original))
                return name, pos + 1
            chars.append(source[pos])
            pos += 1
        raise PgopsError('%s %r: unterminated quoted identifier (a double quote inside a name is written "").' % (option, original))
    match = _UNQUOTED_IDENT.match(source, pos)
    if not match:
        raise PgopsError('%s %r: expected a name at character %d. Quote names with spaces or capitals: "My Table".'
                         % (option, original, pos + 1))
    return _fold_case(match.group(0)), match.end()


def _fold_case(name):
    """Lower-case an unquoted identifier as PostgreSQL does in a UTF-8 database: A-Z only
    (``downcase_identifier`` in scansup.c); ``Ümlaut`` stays ``Ümlaut``."""
    return ''.join(chr(ord(c) + 32) if 'A' <= c <= 'Z' else c for c in name)


def display_name(schema, name):
    """Human form of a qualified name: ``kv_store`` for ``public``, ``app.kv_store``, ``app."Documents"``."""
    parts = [name] if schema in (None, 'public') else [schema, name]
    return '.'.join(p if _PLAIN_LOWER_IDENT.match(p) else '"%s"' % p.replace('"', '""') for p in parts)


class Relation:
    """A resolved table: ``schema`` and ``name`` as stored in the catalog, ``persistence`` (``p`` permanent,
    ``u`` UNLOGGED, ``t`` temporary), ``ident`` (a ``psycopg2.sql.Identifier`` to compose into SQL) and
    ``display`` (see :func:`display_name`)."""

    def __init__(self, schema, name, persistence='p'):
        self.schema = schema
        self.name = name
        self.persistence = persistence
        self.ident = sql.Identifier(schema, name)
        self.display = display_name(schema, name)

    @property
    def unlogged(self):
        """True when the table is UNLOGGED (truncated by crash recovery, not replicated)."""
        return self.persistence == 'u'


class Function:
    """A resolved function without arguments: ``schema``, ``name``, ``ident``, ``display``, ``result`` (the
    text of ``pg_get_function_result``, such as ``void``, ``bigint`` or ``TABLE(table_name text, rows_inserted bigint)``)
    and ``shape``, see :func:`function_shape`."""

    def __init__(self, schema, name, result, shape):
        self.schema = schema
        self.name = name
        self.result = result
        self.shape = shape
        self.ident = sql.Identifier(schema, name)
        self.display = display_name(schema, name) + '()'


def function_shape(returns_set, return_type, type_kind):
    """How to read what a function returns: ``rows`` (a set, ``record`` or a composite type: one dict per
    row), ``void`` (nothing), or ``count`` (one scalar value, typically a row count).

    :param returns_set: bool, ``pg_proc.proretset``.
    :param return_type: str, the return type's name (``pg_proc.prorettype::regtype``).
    :param type_kind: str, ``pg_type.typtype`` of the return type (``c`` composite, ``p`` pseudo-type, ...).
    """
    if returns_set or return_type == 'record' or type_kind == 'c':
        return 'rows'
    if return_type == 'void':
        return 'void'
    return 'count'


def _quoted(cursor, schema, name):
    parts = (schema, name) if schema else (name,)
    return sql.Identifier(*parts).as_string(cursor)


def resolve_table(cursor, text, option='table'):
    """Find the table a user-given name refers to, following ``search_path`` for unqualified names.

    :param cursor: psycopg2 cursor.
    :param text: the name as SQL writes it (see :func:`parse_qualified_name`).
    :param option: the option name for error messages.
    :returns: :class:`Relation`.
    :raises PgopsError: when the name is malformed, the table does not exist, or it is not a table.
    """
    schema, name = parse_qualified_name(text, option)
    cursor.execute(
        'SELECT n.nspname, c.relname, c.relpersistence, c.relkind'
        ' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace'
        ' WHERE c.oid = pg_catalog.to_regclass(%s)', [_quoted(cursor, schema, name)])
    row = cursor.fetchone()
    if row is None:
        where = 'schema %s' % display_name(None, schema) if schema else 'the search_path (%s)' % _search_path(cursor)
        raise PgopsError('%s %r: table %s does not exist in %s of database %s. Create it or correct %s.'
                         % (option, text, display_name(schema, name), where, _current_database(cursor), option))
    if row[3] not in ('r', 'p'):
        raise PgopsError('%s %r: %s is not a table (relkind %r).' % (option, text, display_name(row[0], row[1]), row[3]))
    return Relation(row[0], row[1], row[2])


def resolve_function(cursor, text, option='function'):
    """Find a function without arguments, following ``search_path`` for unqualified names.

    :returns: :class:`Function`.
    :raises PgopsError: when the name is malformed, no such function without arguments exists, or it is a
        procedure or aggregate.
    """
    schema, name = parse_qualified_name(text, option, allow_call=True)
    cursor.execute(
        'SELECT n.nspname, p.proname, pg_catalog.pg_get_function_result(p.oid), p.proretset,'
        ' p.prorettype::pg_catalog.regtype::text, t.typtype, p.prokind'
        ' FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace'
        ' JOIN pg_catalog.pg_type t ON t.oid = p.prorettype'
        ' WHERE p.oid = pg_catalog.to_regprocedure(%s)', [_quoted(cursor, schema, name) + '()'])
    row = cursor.fetchone()
    if row is None:
        values = (option, text, display_name(schema, name), _current_database(cursor), _search_path(cursor), option)
        raise PgopsError('%s %r: function %s() without arguments does not exist in database %s (search_path: %s). '
                         'Create it or correct %s.' % values)
    if row[6] != 'f':
        raise PgopsError('%s %r: %s is not a plain function (prokind %r); give a function that can be called with SELECT.'
                         % (option, text, display_name(row[0], row[1]), row[6]))
    return Function(row[0], row[1], row[2], function_shape(row[3], row[4], row[5]))


def _search_path(cursor):
    cursor.execute("SELECT pg_catalog.current_setting('search_path')")
    return cursor.fetchone()[0]


def _current_database(cursor):
    cursor.execute('SELECT pg_catalog.current_database()')
    return cursor.fetchone()[0]


def advisory_lock_key(*parts):
    """A stable signed 64-bit advisory lock key derived from text parts.

    PostgreSQL's advisory locks take a ``bigint`` key (docs, "Advisory Lock Functions"); the key is the
    first 8 bytes of the SHA-256 of the parts joined by U+001F, read as a signed big-endian integer, so it
    is the same in every Python process and on every host.

    :returns: int in ``[-2**63, 2**63)``.
    """
    digest = hashlib.sha256('\x1f'.join(str(p) for p in parts).encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big', signed=True)


LOCK_KEY_RANGE = (-2 ** 63, 2 ** 63 - 1)


def validate_lock_key(key, option='lock_key'):
    """Return ``key`` when it fits PostgreSQL's ``bigint`` advisory lock keys.

    :raises PgopsError: naming ``option`` when it does not.
    """
    if not LOCK_KEY_RANGE[0] <= key <= LOCK_KEY_RANGE[1]:
        raise PgopsError('%s %d is outside the bigint range of advisory lock keys (%d to %d).' % ((option, key) + LOCK_KEY_RANGE))
    return key


@contextlib.contextmanager
def transaction(conn, read_only_snapshot=False):
    """Run a block in one transaction: commit when it exits normally, roll back on an exception.

    Yields a cursor. With ``read_only_snapshot`` the transaction is REPEATABLE READ, READ ONLY, so several
    queries see one consistent snapshot (PostgreSQL docs, "Transaction Isolation").

    :param conn: psycopg2 connection; switched out of autocommit for the block and restored afterwards.
    :raises psycopg2.Error: from the block's statements or from COMMIT.
    """
    previous = conn.autocommit
    conn.autocommit = False
    try:
        with conn:
            with conn.cursor() as cursor:
                if read_only_snapshot:
                    cursor.execute('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY')
                yield cursor
    finally:
        conn.autocommit = previous


@contextlib.contextmanager
def try_advisory_lock(conn, key):
    """Open a transaction (see :func:`transaction`) and try the transaction-level advisory lock ``key``
    without waiting.

    Yields ``(cursor, acquired)``. The lock is released by the transaction's commit or rollback
    (``pg_try_advisory_xact_lock``, PostgreSQL docs "Advisory Lock Functions"), so a run that takes the
    lock afterwards sees what was committed. When ``acquired`` is false the caller must not do the locked work.

    :param conn: psycopg2 connection.
    :param key: int, a signed 64-bit key (see :func:`advisory_lock_key` and :func:`validate_lock_key`).
    :raises psycopg2.Error: from the block's statements or from COMMIT.
    """
    with transaction(conn) as cursor:
        cursor.execute('SELECT pg_catalog.pg_try_advisory_xact_lock(%s)', [key])
        yield cursor, bool(cursor.fetchone()[0])


def walfile_timeline(walfile_name):
    """Timeline ID of a WAL file name: its first 8 hex digits (``000000020000000000000003`` -> 2)."""
    return int(walfile_name[:8], 16)


def server_identity(conn):
    """Who and where the connected server is, for detecting failovers and restarts between runs.

    The timeline of a primary is read from the current WAL file name
    (``pg_walfile_name(pg_current_wal_lsn())``): ``pg_control_checkpoint()`` still shows the old timeline
    right after a promotion, until the next checkpoint. For a standby only ``is_primary`` and ``lsn``
    (last replayed) are read; ``timeline`` and ``system_identifier`` are ``None``. ``system_identifier``
    is also ``None`` where EXECUTE on ``pg_control_system()`` was revoked (it is granted to PUBLIC by default).

    :param conn: psycopg2 connection in autocommit mode.
    :returns: dict with ``is_primary`` (bool), ``system_identifier`` (str: a 64-bit number), ``timeline``
        (int), ``lsn`` (str, ``X/Y``), ``postmaster_start_time`` (aware datetime), ``primary_instance``
        (``address:port`` of the server as this connection reached it), ``server_version`` (str),
        ``database`` (str).
    :raises psycopg2.Error: when a query fails (the caller turns it into a message).
    """
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.pg_postmaster_start_time(),"
            " host(pg_catalog.inet_server_addr()), pg_catalog.current_setting('port'),"
            " pg_catalog.current_setting('server_version'), pg_catalog.current_database()")
        in_recovery, started, address, port, version, database = cursor.fetchone()
        identity = dict(is_primary=not in_recovery, postmaster_start_time=started,
                        primary_instance='%s:%s' % (address or 'local-socket', port),
                        server_version=version, database=database)
        if in_recovery:
            # Nothing more is needed of a standby, and nothing that could be refused.
            cursor.execute('SELECT pg_catalog.pg_last_wal_replay_lsn()::text')
            identity.update(lsn=cursor.fetchone()[0], timeline=None, system_identifier=None)
            return identity
        cursor.execute('SELECT lsn::text, pg_catalog.pg_walfile_name(lsn) FROM pg_catalog.pg_current_wal_lsn() AS lsn')
        lsn, walfile = cursor.fetchone()
        identity['lsn'], identity['timeline'] = lsn, walfile_timeline(walfile)
    identity['system_identifier'] = system_identifier(conn)
    return identity


def system_identifier(conn):
    """The cluster's system identifier (str, from ``pg_control_system()``), or None when the role may not call it
    (EXECUTE revoked from PUBLIC). ``conn`` must be in autocommit mode: the refusal would abort a transaction."""
    try:
        with conn.cursor() as cursor:
            cursor.execute('SELECT system_identifier::text FROM pg_catalog.pg_control_system()')
            return cursor.fetchone()[0]
    except psycopg2.errors.InsufficientPrivilege:
        return None


def has_column(cursor, relation, column):
    """True when ``relation`` (a :class:`Relation`) has a live column named exactly ``column``."""
    cursor.execute('SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass(%s)'
                   ' AND attname = %s AND attnum > 0 AND NOT attisdropped)', [relation.ident.as_string(cursor), column])
    return cursor.fetchone()[0]


@contextlib.contextmanager
def pg_errors(what):
    """Turn a ``psycopg2.Error`` raised in the block into a :class:`PgopsError` saying what was being done.

    :param what: str, such as ``'checking whether kv_store is empty'``.
    """
    try:
        yield
    except psycopg2.Error as exc:
        raise PgopsError('PostgreSQL error while %s: %s' % (what, pg_error_text(exc)))


def pg_error_text(exc):
    """One line from a psycopg2 error: the server's primary message, plus its detail and hint when present."""
    diag = getattr(exc, 'diag', None)
    parts = [getattr(diag, 'message_primary', None) or ' '.join(str(exc).split())]
    for label in ('detail', 'hint'):
        value = getattr(diag, 'message_' + label, None)
        if value:
            parts.append('%s: %s' % (label, value))
    return '; '.join(parts)


class Column:
    """A live column of a table: ``name``, ``type`` (``format_type`` text such as ``numeric(10,2)`` or
    ``timestamp with time zone``), ``identity`` (``a`` GENERATED ALWAYS, ``d`` BY DEFAULT, ``''`` none),
    ``generated`` (True for a stored generated column, which cannot be written) and ``not_null`` (bool)."""

    def __init__(self, name, type_, identity='', generated=False, not_null=False):
        self.name = name
        self.type = type_
        self.identity = identity
        self.generated = generated
        self.not_null = not_null


def table_columns(cursor, relation):
    """The live columns of ``relation`` (a :class:`Relation`) in table order.

    :returns: list of :class:`Column`.
    """
    cursor.execute('SELECT attname, pg_catalog.format_type(atttypid, atttypmod), attidentity, attgenerated <> %s, attnotnull'
                   ' FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass(%s) AND attnum > 0'
                   ' AND NOT attisdropped ORDER BY attnum', ['', relation.ident.as_string(cursor)])
    return [Column(*row) for row in cursor.fetchall()]


def primary_key(cursor, relation):
    """Column names of the primary key of ``relation`` in key order, or ``[]`` when it has none."""
    cursor.execute('SELECT a.attname FROM pg_catalog.pg_index i'
                   ' CROSS JOIN LATERAL pg_catalog.unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)'
                   ' JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum'
                   ' WHERE i.indrelid = pg_catalog.to_regclass(%s) AND i.indisprimary ORDER BY k.position',
                   [relation.ident.as_string(cursor)])
    return [row[0] for row in cursor.fetchall()]


def resolve_schema_table(cursor, schema, table, option='table'):
    """:func:`resolve_table` for a schema and a table given as exact catalog names (not SQL text)."""
    return resolve_table(cursor, sql.Identifier(schema, table).as_string(cursor), option)


def trusted_table_exists(cursor, ident, display, user_of='archive_restore'):
    """Whether the collection's own table ``ident`` (a ``psycopg2.sql.Identifier``) exists, when it is one the
    connected role may trust: a plain table owned by that role or by a superuser. Another role that created it first
    could have given it triggers (run as the connected role) or rows the collection acts on.

    :param display: str, the table as messages name it.
    :param user_of: str, the module that uses it, for messages.
    :raises PgopsError: when it exists and is not such a table, naming its owner and what to do.
    """
    cursor.execute('SELECT c.relkind = %s AND (c.relowner = r.oid OR o.rolsuper), o.rolname, r.rolname'
                   ' FROM pg_catalog.pg_class c JOIN pg_catalog.pg_roles o ON o.oid = c.relowner'
                   ' JOIN pg_catalog.pg_roles r ON r.rolname = current_user'
                   ' WHERE c.oid = pg_catalog.to_regclass(%s)', ['r', ident.as_string(cursor)])
    row = cursor.fetchone()
    if row and not row[0]:
        raise PgopsError('%s is not a table owned by the connected role %s or by a superuser (its owner is %s): %s does '
                         'not use it. Check who created it and what it holds, then drop it or give it to %s (ALTER '
                         'TABLE ... OWNER TO).' % (display, row[2], row[1], user_of, row[2]), table=display, owner=row[1])
    return row is not None
