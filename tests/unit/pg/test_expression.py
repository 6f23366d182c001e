# -*- coding: utf-8 -*-
"""Unit tests of the lexical check of user-written SQL expressions (no server): what could end the statement,
leave the parentheses it is wrapped in, or hide the rest of it is refused; strings, quoted identifiers, dollar
quotes and comments are read as PostgreSQL reads them."""

from __future__ import annotations

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._pg.expression import expression_problem


@pytest.mark.parametrize('text', [
    'true',
    "t.action = 'view'",
    "t.note = 'a;b' AND t.x <> ')'",
    "t.note = 'it''s; fine'",
    "t.note = E'back\\\\slash \\'; quoted'",
    't."odd;name" > 3',
    't."a""b)" IS NULL',
    "t.body = $$ ; ) -- $$",
    "t.body = $tag$ $$ ; $tag$",
    'a$b$c = 1',  # an identifier with $ in it, not a dollar quote
    '/* a ; comment ) */ true',
    '/* nested /* ; */ still comment */ true',
    '(t.a = 1 OR (t.b = 2)) AND t.c % 2 = 0',
    "t.name LIKE 'x%'",
    'count_is(3) > 0',
    't."données" = \'ünïcode in a string is fine\'',
    "U&'d\\0061t\\+000061' = t.a AND U&\"d\\0061t\\+000061\" > 0",
    "b'101' = t.bits AND x'ff' = t.hex AND n'national' = t.n",
    "t.price * 1.5e3 > .5 AND t.x = 1e2",
    "t.label = $q$ ünïcode inside ; $q$",
    'date \'2026-01-01\' < t.at',
])
def test_single_expressions_pass(text):
    assert expression_problem(text) is None


@pytest.mark.parametrize('text, words', [
    ('true); DELETE FROM victim; SELECT (1', 'closes a parenthesis'),  # the injection
    ('true; DELETE FROM victim', 'would end the statement'),
    ('t.a = 1) OR (true', 'closes a parenthesis'),  # a different condition than the one written
    ('(true', 'left open'),
    ('true -- and the rest', 'comment'),
    ("t.a = 'unclosed", 'string starting at character 7 is not closed'),
    ('t."unclosed = 1', 'quoted identifier'),
    ('t.a = $$ never closed', 'dollar-quoted'),
    ('/* open comment true', 'comment starting at character 1 is not closed'),
    ('/* /* */ still open', 'not closed'),
    ('t.id = $1', 'parameter $1'),
    ('', 'empty'),
    ('   ', 'empty'),
    ("E'\\''; DELETE FROM victim; SELECT ''", 'would end the statement'),
    ("'a'';' ; 1", 'would end the statement'),
    # Non-ASCII outside quotes: PostgreSQL reads every byte from 0x80 as an identifier character, so "$€$" is a dollar
    # quote to the server and plain text to a reader that does not (the review's bypass, which ran a DELETE).
    ("$€$'$€$ IS NULL) IS NULL; COMMIT; BEGIN READ WRITE; DELETE FROM victim; COMMIT; SELECT ($€$'$€$ IS NULL",
     'the $ at character 1 starts no dollar-quoted string'),
    ("€$a$ = 1; DELETE FROM victim; SELECT $a$", 'not ASCII'),
    ('t.a\u00a0= 1', 'not ASCII'),  # a no-break space
    ('t.zero\u200bwidth = 1', 'not ASCII'),
    ('$x = 1', 'starts no dollar-quoted string'),
    ('$ = 1', 'starts no dollar-quoted string'),
    ("U&'unclosed", 'Unicode string'),
    ("u&\"unclosed", 'Unicode string'),
    ("x'0f' = t.b; DELETE FROM victim", 'would end the statement'),
    ("e'\\'' ; x'", 'would end the statement'),
])
def test_what_could_escape_the_expression_is_refused(text, words):
    problem = expression_problem(text)
    assert problem is not None and words in problem, problem


def test_backslash_quote_in_a_standard_string_ends_it():
    """With standard_conforming_strings on (which the check sets for the session), '\\' is a whole string: the ; after
    it is outside any string."""
    assert 'would end the statement' in expression_problem("t.a = '\\'; DELETE FROM victim; SELECT '")
