# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the catalog says of a table and of the server: columns, keys, identity, trusted tables."""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
try:
    import psycopg2
    import psycopg2.errors
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    psycopg2 = None


def walfile_timeline(walfile_name):
    """Timeline ID of a WAL file name: its first 8 hex digits (``000000020000000000000003`` -> 2)."""
    return int(walfile_name[:8], 16)


def server_facts(cursor):
    """What every module reports of the server it is connected to, read in one query (the one place the collection
    reads them). Every role may read them (PostgreSQL docs: ``server_version`` and ``server_version_num`` in "Preset
    Options", ``current_database()`` in "System Information Functions", ``pg_is_in_recovery()`` in "Recovery Control
    Functions"), so this never fails for want of a privilege, on a primary or a standby, in a READ ONLY transaction
    too.

    :param cursor: psycopg2 cursor (of a connection in any mode; the query writes nothing).
    :returns: dict with ``server_version`` (str, such as ``'16.4 (Debian 16.4-1)'``), ``server_version_num`` (int,
        such as 160004), ``server_major`` (int, ``server_version_num // 10000``: 16; PostgreSQL 10 and later number
        their major versions with one number), ``database`` (str) and ``in_recovery`` (bool: a standby, or a server
        still recovering).
    :raises psycopg2.Error: when the query fails (the caller turns it into a message, see ``_pg.errors.pg_errors``).
    """
    cursor.execute("SELECT pg_catalog.current_setting('server_version'), pg_catalog.current_setting('server_version_num')::int,"
                   ' pg_catalog.current_database(), pg_catalog.pg_is_in_recovery()')
    version, version_num, database, in_recovery = cursor.fetchone()
    return dict(server_version=version, server_version_num=version_num, server_major=version_num // 10000,
                database=database, in_recovery=in_recovery)


def server_identity(conn):
    """Who and where the connected server is, for detecting failovers and restarts between runs: :func:`server_facts`
    and the facts that change with a failover or a restart.

    The timeline of a primary is read from the current WAL file name
    (``pg_walfile_name(pg_current_wal_lsn())``): ``pg_control_checkpoint()`` still shows the old timeline
    right after a promotion, until the next checkpoint. For a standby only ``is_primary`` and ``lsn``
    (last replayed) are read; ``timeline`` and ``system_identifier`` are ``None``. ``system_identifier``
    is also ``None`` where EXECUTE on ``pg_control_system()`` was revoked (it is granted to PUBLIC by default).

    :param conn: psycopg2 connection in autocommit mode.
    :returns: dict with :func:`server_facts`' keys (``server_version``, ``server_version_num``, ``server_major``,
        ``database``, ``in_recovery``) and ``is_primary`` (bool), ``system_identifier`` (str: a 64-bit number),
        ``timeline`` (int), ``lsn`` (str, ``X/Y``), ``postmaster_start_time`` (aware datetime), ``primary_instance``
        (``address:port`` of the server as this connection reached it).
    :raises psycopg2.Error: when a query fails (the caller turns it into a message).
    """
    with conn.cursor() as cursor:
        identity = server_facts(cursor)
        cursor.execute(
            "SELECT pg_catalog.pg_postmaster_start_time(), host(pg_catalog.inet_server_addr()), pg_catalog.current_setting('port')")
        started, address, port = cursor.fetchone()
        identity.update(is_primary=not identity['in_recovery'], postmaster_start_time=started,
                        primary_instance='%s:%s' % (address or 'local-socket', port))
        if identity['in_recovery']:
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
