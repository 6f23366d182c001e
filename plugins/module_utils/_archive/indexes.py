# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Indexes that ``archive_restore`` drops for a load (``drop_indexes``) and their recreation.

The definitions of the dropped indexes are kept in the target database, in the table ``pgops_dropped_indexes``
of the restored table's schema, written in the transaction that drops the indexes: a run killed at any moment
leaves either the indexes or their definitions (PostgreSQL's DDL is transactional). The next run recreates
the missing ones before it loads anything. Nothing read from S3 is ever executed: earlier versions kept the
definitions in S3 (``.dropped_indexes.{schema}.json``), and such an object now only yields a warning (see
``docs/archive-format.md``, "Dropped indexes").

A recorded definition is executed only when it is one ``CREATE INDEX`` of that very index on that very table
(as ``pg_get_indexdef`` writes it) and the store is a plain table owned by the restoring role or a superuser,
so that a role able to write to the store, or to create it first in the schema, cannot have the restoring
role run other SQL.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import trusted_table_exists
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text, pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import display_name

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # reported by connect()
    psycopg2 = None
    sql = None

STORE_TABLE = 'pgops_dropped_indexes'
LEGACY_NAME = '.dropped_indexes.%s.json'


def droppable_indexes(cursor, relation):
    """Indexes that a bulk load can do without: not unique, not backing a constraint (primary keys, unique
    and exclusion constraints stay, since conflict handling needs them).

    :returns: list of ``(index name as the catalog stores it, CREATE INDEX statement from pg_get_indexdef)``.
    """
    cursor.execute('SELECT c.relname, pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i'
                   ' JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid'
                   ' WHERE i.indrelid = pg_catalog.to_regclass(%s) AND NOT i.indisunique'
                   ' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid)'
                   ' ORDER BY 1', [relation.ident.as_string(cursor)])
    return cursor.fetchall()


def legacy_warnings(bucket, source, relation):
    """Warnings (list of str) for the objects in which earlier versions saved the definitions of dropped indexes
    (``{table prefix}.dropped_indexes.{schema}.json`` under the format 2 and the format 1 prefix). They are never
    read: whoever can write to the bucket could have put any SQL in them.

    :param source: ``ArchiveSource`` of the run. :param relation: the restored table.
    :raises PgopsError: when S3 cannot be asked.
    """
    keys = [source.prefix + LEGACY_NAME % fmt.key_segment(relation.schema),
            source.legacy_prefix + LEGACY_NAME % relation.schema]
    return ['s3://%s/%s exists: an earlier version of archive_restore saved there the definitions of indexes of %s '
            'that it dropped (drop_indexes) and had not recreated yet. They are not run from S3 any more, since '
            'anyone who can write to the bucket could have changed them: check each statement in it, recreate the '
            'missing indexes by hand, then delete the object.' % (bucket.bucket, key, relation.display)
            for key in keys if bucket.exists(key)]


class DroppedIndexes:
    """The recorded definitions of the indexes of one table dropped by ``archive_restore``: rows of
    ``{schema}.pgops_dropped_indexes`` (``table_oid``, ``table_name`` for people, ``index_name``, ``definition``,
    ``dropped_at``) for the table's OID.

    :param relation: the restored table (``postgres.Relation``).
    """

    def __init__(self, relation):
        self.relation = relation
        self.ident = sql.Identifier(relation.schema, STORE_TABLE)
        self.display = display_name(relation.schema, STORE_TABLE)

    def _sql(self, cursor, template, *values):
        # Values as literals, no parameter list: the schema's name may hold a % (see archive_watermark).
        cursor.execute(sql.SQL(template).format(self.ident, *[sql.Literal(value) for value in values]))

    def _table(self, cursor):
        return self.relation.ident.as_string(cursor)

    def _exists(self, cursor):
        """True when the store exists. Its rows are run as SQL and its triggers would run as the restoring role: it
        must be one the role may trust (:func:`postgres.trusted_table_exists`, which raises otherwise)."""
        return trusted_table_exists(cursor, self.ident, self.display)

    def _recorded(self, cursor):
        """``(missing, present)``: the recorded ``(index name, definition)`` of the table whose index does not
        exist, and the names of those that exist again."""
        if not self._exists(cursor):
            return [], []
        self._sql(cursor, 'SELECT d.index_name, d.definition, EXISTS (SELECT 1 FROM pg_catalog.pg_index i'
                          ' JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = d.table_oid'
                          ' AND c.relname = d.index_name) FROM {} d'
                          ' WHERE d.table_oid = pg_catalog.to_regclass({})::pg_catalog.oid ORDER BY 1',
                  self._table(cursor))
        rows = cursor.fetchall()
        return [(name, definition) for name, definition, present in rows if not present], \
            [name for name, definition, present in rows if present]

    def pending(self, conn):
        """Names of the recorded indexes that a run would recreate (reads only: check mode and dry runs)."""
        with pg_errors('reading %s' % self.display), conn.cursor() as cursor:
            missing = self._recorded(cursor)[0]
        conn.commit()
        return [display_name(self.relation.schema, name) for name, definition in missing]

    def recreate_recorded(self, conn):
        """Recreate the indexes that an interrupted run dropped, and forget them (and those that exist again).

        :returns: list of the names recreated.
        :raises PgopsError: see :meth:`recreate`.
        """
        with pg_errors('reading %s' % self.display), conn.cursor() as cursor:
            missing, present = self._recorded(cursor)
            for name in present:
                self._forget(cursor, name)
        conn.commit()
        return self.recreate(conn, missing, check=True)

    def drop(self, conn):
        """Drop the table's :func:`droppable_indexes`, recording their definitions in the same transaction
        (creating the store when needed), and commit.

        :returns: list of ``(index name, definition)`` dropped.
        :raises PgopsError: when PostgreSQL refuses (nothing is dropped then).
        """
        with pg_errors('dropping the indexes of %s' % self.relation.display), conn.cursor() as cursor:
            indexes = droppable_indexes(cursor, self.relation)
            if indexes:
                self._sql(cursor, 'CREATE TABLE IF NOT EXISTS {} (table_oid oid NOT NULL, table_name text NOT NULL,'
                                  ' index_name text NOT NULL, definition text NOT NULL,'
                                  ' dropped_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (table_oid, index_name))')
                self._exists(cursor)
            for name, definition in indexes:
                self._sql(cursor, 'INSERT INTO {} (table_oid, table_name, index_name, definition)'
                                  ' VALUES (pg_catalog.to_regclass({})::pg_catalog.oid, {}, {}, {})',
                          self._table(cursor), self.relation.display, name, definition)
                cursor.execute(sql.SQL('DROP INDEX {}').format(sql.Identifier(self.relation.schema, name)))
        conn.commit()
        return indexes

    def recreate(self, conn, indexes, check=True):
        """Run each ``CREATE INDEX`` and delete its row, in one transaction per index.

        :param indexes: list of ``(index name, definition)``.
        :param check: run a definition only when :meth:`_refusal` finds nothing wrong with it (those read back from
            the store); False for the definitions this run itself read from the catalog.
        :returns: list of the names recreated.
        :raises PgopsError: naming the statements that failed (to run by hand once the cause is fixed) and those
            refused; their rows stay, and the next run tries them again.
        """
        done, failed, refused = [], [], []
        for name, definition in indexes:
            try:
                with conn.cursor() as cursor:
                    refusal = self._refusal(cursor, name, definition) if check else None
                    if refusal:
                        refused.append('%s (%s)' % (definition, refusal))
                        continue
                    cursor.execute(definition)
                    self._forget(cursor, name)
                conn.commit()
                done.append(display_name(self.relation.schema, name))
            except psycopg2.Error as exc:
                conn.rollback()
                failed.append('%s (%s)' % (definition, pg_error_text(exc)))
        conn.commit()
        if failed or refused:
            parts = ['Could not recreate dropped indexes of %s; their definitions stay in %s and the next run tries '
                     'again.' % (self.relation.display, self.display)]
            if failed:
                parts.append('Run these statements once the cause is fixed: %s.' % '; '.join(failed))
            if refused:
                parts.append('Not run, since they are not the CREATE INDEX of the recorded index on %s alone: %s. Check '
                             'who wrote them, recreate the indexes by hand from their real definitions, and delete those '
                             'rows.' % (self.relation.display, '; '.join(refused)))
            raise PgopsError(' '.join(parts), indexes_recreated=done)
        return done

    def _refusal(self, cursor, name, definition):
        """Why ``definition`` must not be run for the index ``name`` of the table (str), or ``None``.

        It must start as ``pg_get_indexdef`` writes a plain index of this table (``CREATE INDEX name ON [ONLY]
        schema.table USING``, the names as ``quote_ident`` writes them), and hold no ``;``: without one the text is a
        single statement, whatever its quoting (PostgreSQL docs, "Lexical Structure": a command is terminated by a
        semicolon), so it can only create that index, whose expressions run with the table owner's privileges
        (PostgreSQL 14.3 release notes, CVE-2022-1552).
        """
        cursor.execute('SELECT pg_catalog.quote_ident(%s), pg_catalog.quote_ident(n.nspname) || %s ||'
                       ' pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n'
                       ' ON n.oid = c.relnamespace WHERE c.oid = pg_catalog.to_regclass(%s)', [name, '.', self._table(cursor)])
        index, table = cursor.fetchone()
        starts = ['CREATE INDEX %s ON %s%s USING ' % (index, only, table) for only in ('', 'ONLY ')]
        if not any(definition.startswith(start) for start in starts):
            return 'it does not start with %r' % starts[0]
        if ';' in definition:
            return 'it holds a ;'
        return None

    def _forget(self, cursor, name):
        self._sql(cursor, 'DELETE FROM {} WHERE table_oid = pg_catalog.to_regclass({})::pg_catalog.oid'
                          ' AND index_name = {}', self._table(cursor), name)
