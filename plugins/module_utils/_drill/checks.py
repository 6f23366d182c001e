# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of a restore drill: read-only SQL run against the recovered server, each compared with what it should
return (:func:`normalize_checks`, :func:`row_value`, :func:`values_match`), the default checks (the catalog answers,
every database that allows connections accepts one) and the row counts of every user table (:func:`check_server`).

Every statement runs in a READ ONLY transaction that is rolled back (PostgreSQL 15 docs, SET TRANSACTION), with the
drill's ``statement_timeout``; ``count(*)`` reads every page of a table, so a damaged table fails the drill.
"""

from __future__ import annotations

import datetime
import decimal
import json

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError, phase_error
from ansible_collections.pgops.resilience.plugins.module_utils._core.jsonable import jsonable

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # reported by the runner before any check runs
    psycopg2 = None
    sql = None

CHECK_KEYS = ('name', 'query', 'expected', 'database')
MAX_ROW_COUNT_TABLES = 1000
_TABLES = ("SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
           "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
           "AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)' ORDER BY 1, 2 LIMIT %d" % (MAX_ROW_COUNT_TABLES + 1))


def normalize_checks(checks):
    """Validate user checks: a list of dicts ``{query, name?, expected?, database?}``.

    :returns: list of dicts with every key of :data:`CHECK_KEYS` (``name`` defaults to ``check <n>``), or None for
        None (the default checks).
    :raises PgopsError: naming the check and the problem.
    """
    if checks is None:
        return None
    if not isinstance(checks, (list, tuple)):
        raise PgopsError('checks must be a list of {name, query, expected, database}, not %s.' % type(checks).__name__)
    out = []
    for number, check in enumerate(checks, 1):
        if not isinstance(check, dict):
            raise PgopsError('checks[%d] must be a dict with at least query, not %r.' % (number - 1, check))
        unknown = sorted(set(check) - set(CHECK_KEYS))
        if unknown:
            raise PgopsError('checks[%d]: unknown key(s) %s; a check has %s.' % (number - 1, ', '.join(unknown), ', '.join(CHECK_KEYS)))
        query = check.get('query')
        if not isinstance(query, str) or not query.strip():
            raise PgopsError('checks[%d] (%s) has no query: give the SQL to run.' % (number - 1, check.get('name') or 'unnamed'))
        out.append(dict(name=str(check.get('name') or 'check %d' % number), query=query, expected=check.get('expected'),
                        database=check.get('database') or None))
    return out


def _text(value):
    """Text form of a value for comparison: bools ``true``/``false``, numbers by ``str()``, None ``null``."""
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if value is None:
        return 'null'
    if isinstance(value, datetime.datetime):
        return jsonable(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def values_match(value, expected):
    """Whether a check's ``value`` matches its ``expected`` value.

    Lists (rows, or the values of a row) match element by element. Scalars match when they are equal as Python
    values (a bool only equals a bool: ``expected: 1`` does not match ``true``), or equal as text, where bools are
    ``true`` / ``false`` (either case in ``expected``), numbers are rendered by ``str()`` and datetimes as ISO 8601.
    So YAML ``expected: 42`` and ``expected: "42"`` both match ``count(*)`` 42, ``expected: true`` matches a boolean
    true, ``expected: "1.50"`` matches numeric 1.50.
    """
    if isinstance(value, (list, tuple)) or isinstance(expected, (list, tuple)):
        if not (isinstance(value, (list, tuple)) and isinstance(expected, (list, tuple))) or len(value) != len(expected):
            return False
        return all(values_match(v, e) for v, e in zip(value, expected))
    if isinstance(value, bool) == isinstance(expected, bool):
        try:
            if value == expected:
                return True
        except (TypeError, ValueError, decimal.InvalidOperation):
            pass
    if isinstance(value, bool) and isinstance(expected, str):
        return _text(value) == expected.strip().lower()
    return _text(value) == _text(expected)


def row_value(rows, description):
    """The value a check compares: ``rows[0][0]`` when the result is exactly one row of one column, None when
    the statement returned no result set, else the list of rows as lists."""
    if description is None:
        return None
    if len(rows) == 1 and len(rows[0]) == 1:
        return rows[0][0]
    return [list(row) for row in rows]


def _show(value):
    return json.dumps(jsonable(value), default=str)


class _Session:
    """One read-only connection per database, opened when first needed (``connect(database)`` -> connection)."""

    def __init__(self, connect):
        self.connect = connect
        self.conns = {}

    def query(self, database, query):
        """Run ``query`` (str or ``psycopg2.sql.Composed``) in a read-only transaction of ``database``, rolled back.

        :returns: tuple ``(value, error)``: :func:`row_value` and None, or None and the error text (str).
        """
        try:
            if database not in self.conns:
                self.conns[database] = self.connect(database)
                self.conns[database].set_session(readonly=True, autocommit=False)
            conn = self.conns[database]
        except psycopg2.Error as exc:
            return None, 'cannot connect to database %s: %s' % (database, ' '.join(str(exc).split()))
        try:
            with conn.cursor() as cur:
                cur.execute(query)
                rows = cur.fetchall() if cur.description is not None else []
                value = row_value(rows, cur.description)
            conn.rollback()
            return value, None
        except psycopg2.Error as exc:
            text = ' '.join(str(exc).split())
            try:
                conn.rollback()
            except psycopg2.Error:
                self.conns.pop(database).close()
            return None, text

    def close(self):
        for conn in self.conns.values():
            conn.close()
        self.conns = {}


def _default_checks(session, database):
    """The checks run without the caller's: the catalog answers, and every database that allows connections accepts
    one (or the listing itself, when it fails, as the failing check)."""
    checks = [dict(name='catalog', query='SELECT count(*) > 0 FROM pg_catalog.pg_class', expected=True, database=None)]
    value, error = session.query(database, 'SELECT datname FROM pg_catalog.pg_database WHERE datallowconn ORDER BY datname')
    if error:
        checks.append(dict(name='databases', query='SELECT datname FROM pg_database WHERE datallowconn', expected=None, database=None))
        return checks
    names = [value] if isinstance(value, str) else [row[0] for row in (value or [])]
    return checks + [dict(name='connect %s' % name, query='SELECT current_database()', expected=name, database=name) for name in names]


def _count_rows(session, database, result):
    """``count(*)`` of every user table of ``database`` (at most :data:`MAX_ROW_COUNT_TABLES`) into
    ``result['row_counts']``, and one outcome named ``row counts`` appended to ``result['checks']``."""
    tables, error = session.query(database, _TABLES)
    errors = []
    if error:
        errors.append(error)
        tables = []
    tables = tables or []  # two columns: always a list of rows
    result['row_counts_truncated'] = len(tables) > MAX_ROW_COUNT_TABLES
    for schema, table in tables[:MAX_ROW_COUNT_TABLES]:
        value, error = session.query(database, sql.SQL('SELECT count(*) FROM {}.{}').format(sql.Identifier(schema), sql.Identifier(table)))
        if error:
            errors.append('%s.%s: %s' % (schema, table, error))
        else:
            result['row_counts']['%s.%s' % (schema, table)] = jsonable(value)
    result['checks'].append(dict(
        name='row counts', query='SELECT count(*) FROM each user table of %s (%d table(s)%s)'
        % (database, min(len(tables), MAX_ROW_COUNT_TABLES), ', capped' if result['row_counts_truncated'] else ''),
        database=database, expected=None, value=len(result['row_counts']), passed=not errors, error='; '.join(errors) or None))


def check_server(connect, database, checks, row_counts, result):
    """Run the checks against a recovered server and record them in ``result``.

    :param connect: callable ``(database) -> psycopg2 connection`` (the drill's socket, role and statement_timeout).
    :param database: str, the database of checks that name none, and of the row counts.
    :param checks: the output of :func:`normalize_checks`; None runs the default checks.
    :param row_counts: bool, count the rows of every user table of ``database``.
    :param result: dict with ``checks`` (list), ``row_counts`` (dict) and ``row_counts_truncated``, filled in: one
        dict per check ``{name, query, database, expected, value, passed, error}`` (JSON-safe values).
    :raises PgopsError: with ``phase = 'checks'``, naming each failed check, its query and what it returned.
    """
    session = _Session(connect)
    outcomes = result['checks']
    try:
        for check in checks if checks is not None else _default_checks(session, database):
            where = check['database'] or database
            value, error = session.query(where, check['query'])
            passed = error is None and (check['expected'] is None or values_match(value, check['expected']))
            outcomes.append(dict(name=check['name'], query=check['query'], database=where, expected=jsonable(check['expected']),
                                 value=jsonable(value), passed=passed, error=error))
        if row_counts:
            _count_rows(session, database, result)
    finally:
        session.close()
    failed = [c for c in outcomes if not c['passed']]
    if failed:
        parts = []
        for check in failed:
            where = '' if check['database'] == database else ' in database %s' % check['database']
            if check['error']:
                parts.append('check %r (%s%s) failed: %s' % (check['name'], check['query'], where, check['error']))
            else:
                parts.append('check %r (%s%s) returned %s, expected %s'
                             % (check['name'], check['query'], where, _show(check['value']), _show(check['expected'])))
        raise phase_error('checks', '%d of %d checks failed: %s' % (len(failed), len(outcomes), '; '.join(parts)))
