# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection connects to PostgreSQL: the connection options, libpq's environment for the client
programs, and modules that connect.
"""

from __future__ import annotations

import os
import traceback
from ansible.module_utils.basic import env_fallback
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library
try:
    import psycopg2
    import psycopg2.extensions
except ImportError:  # pragma: no cover - reported by require_psycopg2()
    psycopg2 = None
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
    require_library('psycopg2', psycopg2 is not None, 'pip install psycopg2-binary (or the distribution package '
                    'python3-psycopg2)', PSYCOPG2_IMPORT_ERROR)


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


def connecting(spec):
    """``spec`` (a capability's ``module_spec()`` dict) with the shared connection options of
    :func:`postgres_argument_spec` added to its ``argument_spec``: what a module that connects to PostgreSQL is built
    from (with :func:`connection_secrets` as its secrets, see ``_core.module.module_main``)."""
    argument_spec = postgres_argument_spec()
    argument_spec.update(spec['argument_spec'])
    return dict(spec, argument_spec=argument_spec)


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
