# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names as SQL writes them: parsing, quoting (``psycopg2.sql`` only), and resolving tables and functions in the
catalog.
"""

from __future__ import annotations

import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    sql = None


# An unquoted identifier: PostgreSQL docs, "SQL Syntax > Lexical Structure > Identifiers and Key Words".
_UNQUOTED_IDENT = re.compile(r'[^\W\d][\w$]*', re.UNICODE)


_PLAIN_LOWER_IDENT = re.compile(r'[a-z_][a-z0-9_$]*\Z')


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


def resolve_schema_table(cursor, schema, table, option='table'):
    """:func:`resolve_table` for a schema and a table given as exact catalog names (not SQL text)."""
    return resolve_table(cursor, sql.Identifier(schema, table).as_string(cursor), option)
