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

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_error_text

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # reported by postgres.connect()
    psycopg2 = None
    sql = None

# The lexical pieces of PostgreSQL's scanner (src/backend/parser/scan.l; PostgreSQL docs, "SQL Syntax > Lexical
# Structure") that decide where a string, an identifier or a comment begins and ends. Outside string constants and
# quoted identifiers only ASCII is accepted: PostgreSQL takes every byte from 0x80 on for an identifier character, and
# a reader that does not would be put out of step with it (``$€$`` is a dollar quote to the server).
_IDENTIFIER = re.compile(r'[A-Za-z_][A-Za-z0-9_$]*')
_NUMBER = re.compile(r'(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?')
_DOLLAR_TAG = re.compile(r'\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$')
_PARAMETER = re.compile(r'\$[0-9]+')
_WHITESPACE = ' \t\n\r\f\v'
# Identifiers that, right before a quote, make it a string constant of another kind (PostgreSQL docs, 4.1.2).
_ESCAPE_PREFIX = ('e', 'E')
_UNICODE_PREFIX = ('u', 'U')


def expression_problem(text):
    """What keeps ``text`` from being one SQL expression that can be wrapped in parentheses, or ``None``.

    ``text`` is read token by token as PostgreSQL's scanner reads it. Refused: an empty text, a character that is not
    ASCII outside string constants and quoted identifiers (write such names quoted, ``t."données"``), a ``;`` or a
    ``--`` comment, a parenthesis closed that the text did not open (or one left open), an unterminated string, quoted
    identifier, dollar-quoted string or block comment, a ``$`` that starts no dollar-quoted string, and ``$1``-style
    parameters (there are none to bind). It assumes ``standard_conforming_strings`` on, which
    :func:`check_boolean_expression` and the statements that use the text set.

    :param text: str.
    :returns: str naming the problem and its character position (from 1), or ``None``.
    """
    if not text or not text.strip():
        return 'it is empty'
    depth, pos, length = 0, 0, len(text)
    while pos < length:
        char = text[pos]
        if ord(char) > 127:
            return ('%r at character %d is not ASCII; outside quotes only ASCII is accepted: quote such a name '
                    '("données") and put text in a string constant' % (char, pos + 1))
        if char in _WHITESPACE:
            pos += 1
        elif text.startswith('--', pos):
            return 'a -- comment at character %d would hide the rest of the statement; use /* ... */' % (pos + 1)
        elif text.startswith('/*', pos):
            end = _block_comment_end(text, pos)
            if end < 0:
                return 'the comment starting at character %d is not closed' % (pos + 1)
            pos = end
        elif char in '\'"':
            end = _quoted_end(text, pos, char)
            if end < 0:
                return 'the %s starting at character %d is not closed' % ('string' if char == "'" else 'quoted identifier', pos + 1)
            pos = end
        elif char == '$':
            end, problem = _dollar_token(text, pos)
            if problem:
                return problem
            pos = end
        elif _IDENTIFIER.match(text, pos):
            end, problem = _after_identifier(text, pos, _IDENTIFIER.match(text, pos).end())
            if problem:
                return problem
            pos = end
        elif _NUMBER.match(text, pos):
            pos = _NUMBER.match(text, pos).end()
        elif char == ';':
            return 'a ; at character %d would end the statement; give one expression' % (pos + 1)
        else:
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


def _dollar_token(text, pos):
    """``(end, problem)`` for the ``$`` at ``pos``: a dollar-quoted string read to its closing tag, or a problem."""
    if _PARAMETER.match(text, pos):
        return pos, 'parameter %s at character %d has no value; write the value itself' % (
            _PARAMETER.match(text, pos).group(0), pos + 1)
    tag = _DOLLAR_TAG.match(text, pos)
    if not tag:
        return pos, 'the $ at character %d starts no dollar-quoted string ($$...$$ or $tag$...$tag$)' % (pos + 1)
    end = text.find(tag.group(0), tag.end())
    if end < 0:
        return pos, 'the dollar-quoted string starting at character %d is not closed' % (pos + 1)
    return end + len(tag.group(0)), None


def _after_identifier(text, start, end):
    """``(end, problem)`` for the identifier ``text[start:end]``: with the string constant that follows it when it is
    the prefix of one (``E'...'`` escape string, ``U&'...'`` / ``U&"..."``, and ``B'``/``X'``/``N'`` constants, which
    read like standard strings)."""
    word = text[start:end]
    if text.startswith("'", end) and len(word) == 1:
        close = _quoted_end(text, end, "'", escapes=word in _ESCAPE_PREFIX)
        if close < 0:
            return end, 'the string starting at character %d is not closed' % (start + 1)
        return close, None
    if word in _UNICODE_PREFIX and text.startswith('&', end) and text[end + 1:end + 2] in ('\'', '"'):
        close = _quoted_end(text, end + 1, text[end + 1])
        if close < 0:
            return end, 'the Unicode string or identifier starting at character %d is not closed' % (start + 1)
        return close, None
    return end, None


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
