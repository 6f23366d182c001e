# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""User-written SQL fragments (such as ``table_archive``'s ``where``) checked to be one expression before use.

A fragment is pasted into a statement the collection writes, so it must not be able to end that statement
(``;``), close the parentheses it is wrapped in (``true) OR (true``: a different condition than the one
written), or comment out the rest (``--``). :func:`expression_problem` reads the fragment with PostgreSQL's
lexical rules (PostgreSQL docs, "SQL Syntax > Lexical Structure": string constants with ``''``, escape strings
``E'...'``, dollar quoting, quoted identifiers, nested block comments) and :func:`check_boolean_expression` then
has the server parse and plan it, without running it, in a READ ONLY transaction.
"""

from __future__ import annotations

import re

from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import pg_error_text

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # reported by postgres.connect()
    psycopg2 = None
    sql = None

# A dollar-quote tag: $$ or $name$ (an identifier without $ of its own); PostgreSQL docs, 4.1.2.4.
_DOLLAR_TAG = re.compile(r'\$([^\W\d]\w*)?\$', re.UNICODE)
_PARAMETER = re.compile(r'\$\d')


def expression_problem(text):
    """What keeps ``text`` from being one SQL expression that can be wrapped in parentheses, or ``None``.

    Refused: an empty text, a ``;`` or a ``--`` comment outside string constants and quoted identifiers, a
    parenthesis closed that the text did not open (or one left open), an unterminated string, quoted identifier,
    dollar-quoted string or block comment, and ``$1``-style parameters (there are none to bind).

    :param text: str.
    :returns: str naming the problem and its character position (from 1), or ``None``.
    """
    if not text or not text.strip():
        return 'it is empty'
    depth, pos, length = 0, 0, len(text)
    while pos < length:
        char = text[pos]
        if char in '\'"':
            end = _quoted_end(text, pos, char, escapes=char == "'" and _escape_string(text, pos))
            if end < 0:
                return 'the %s starting at character %d is not closed' % (
                    'string' if char == "'" else 'quoted identifier', pos + 1)
            pos = end
            continue
        if char == '$':
            tag = _DOLLAR_TAG.match(text, pos)
            if tag and not (pos and (text[pos - 1].isalnum() or text[pos - 1] in '_$')):
                end = text.find(tag.group(0), tag.end())
                if end < 0:
                    return 'the dollar-quoted string starting at character %d is not closed' % (pos + 1)
                pos = end + len(tag.group(0))
                continue
            if _PARAMETER.match(text, pos):
                return 'parameter %s at character %d has no value; write the value itself' % (text[pos:pos + 2], pos + 1)
        if text.startswith('--', pos):
            return 'a -- comment at character %d would hide the rest of the statement; use /* ... */' % (pos + 1)
        if text.startswith('/*', pos):
            end = _block_comment_end(text, pos)
            if end < 0:
                return 'the comment starting at character %d is not closed' % (pos + 1)
            pos = end
            continue
        if char == ';':
            return 'a ; at character %d would end the statement; give one expression' % (pos + 1)
        if char == '(':
            depth += 1
        elif char == ')':
            depth -= 1
            if depth < 0:
                return 'the ) at character %d closes a parenthesis the expression did not open' % (pos + 1)
        pos += 1
    if depth:
        return '%d parenthesis(es) left open' % depth
    return None


def _escape_string(text, quote):
    """True when the string constant at ``quote`` is an escape string (``E'...'``, backslash escapes)."""
    return quote > 0 and text[quote - 1] in 'eE' and (quote == 1 or not (text[quote - 2].isalnum() or text[quote - 2] in '_$'))


def _quoted_end(text, start, quote, escapes=False):
    """The position after the closing ``quote`` of the string or identifier opened at ``start`` (a doubled quote
    stands for one, and in an escape string a backslash escapes the next character), or -1."""
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if escapes and char == '\\':
            pos += 2
            continue
        if char == quote:
            if text.startswith(quote, pos + 1):
                pos += 2
                continue
            return pos + 1
        pos += 1
    return -1


def _block_comment_end(text, start):
    """The position after the ``*/`` that closes the (nesting) block comment opened at ``start``, or -1."""
    depth, pos = 0, start
    while pos < len(text) - 1:
        pair = text[pos:pos + 2]
        if pair == '/*':
            depth += 1
            pos += 2
        elif pair == '*/':
            depth -= 1
            pos += 2
            if depth == 0:
                return pos
        else:
            pos += 1
    return -1


def expression_sql(text):
    """``text`` as a parenthesised ``psycopg2.sql`` fragment, to compose into a statement run without a parameter
    list (psycopg2 would read its ``%`` as a placeholder otherwise). Check it with :func:`expression_problem` first;
    the closing parenthesis is on a line of its own."""
    return sql.SQL('(') + sql.SQL(text) + sql.SQL('\n)')


def check_boolean_expression(conn, relation, text, option, alias='t'):
    """Refuse ``text`` unless it is one boolean expression over the columns of ``relation`` (aliased ``alias``).

    First :func:`expression_problem`; then the server parses, analyses and plans ``SELECT 1 FROM relation AS
    alias WHERE (text)`` (``EXPLAIN``, which does not run the query) in a READ ONLY transaction that is rolled
    back, so unknown columns and functions, syntax errors and a non-boolean result are reported before any row
    is touched (PostgreSQL docs, "EXPLAIN"). The session's ``standard_conforming_strings`` is set on, so that the
    statements that use ``text`` later read its strings as the check did.

    :param conn: psycopg2 connection (autocommit or idle).
    :param relation: :class:`~postgres.Relation`.
    :param text: str, the expression.
    :param option: str, the option's name for messages.
    :raises PgopsError: naming ``option``, the problem and what to do.
    """
    problem = expression_problem(text)
    if problem:
        raise PgopsError('%s is not one SQL expression: %s. Write a boolean condition such as '
                         '"t.status = \'done\' AND t.id < 1000".' % (option, problem))
    previous = conn.autocommit
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            # For the rest of the session: with it off, a backslash would escape a quote in '...' and the server
            # would read the string constants differently from expression_problem (PostgreSQL docs, 4.1.2.2).
            cursor.execute('SET standard_conforming_strings = on')
        conn.autocommit = False
        with conn.cursor() as cursor:
            cursor.execute('SET TRANSACTION READ ONLY')
            cursor.execute(sql.SQL('EXPLAIN SELECT 1 FROM {} AS {} WHERE ').format(relation.ident, sql.Identifier(alias))
                           + expression_sql(text))
    except psycopg2.Error as exc:
        raise PgopsError('%s is not a boolean expression over table %s (aliased %s): %s. Correct it; nothing was '
                         'changed.' % (option, relation.display, alias, pg_error_text(exc)))
    finally:
        conn.rollback()
        conn.autocommit = previous
