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
