# -*- coding: utf-8 -*-
"""Identifiers PostgreSQL accepts (as quoted identifiers) that break code which pastes names into SQL, paths,
object keys, file names, shell commands or log lines, for round-trip tests of schemas, tables and columns.

A quoted identifier may hold any character but NUL, and at most 63 bytes (NAMEDATALEN - 1; a longer name is
truncated with a NOTICE): PostgreSQL docs, "Identifiers and Key Words". Each entry is ``(label, name)``; every
name is at most 63 bytes of UTF-8 and distinct from the others.
"""

from __future__ import annotations

MAX_IDENTIFIER_BYTES = 63

HOSTILE_IDENTIFIERS = [
    ('double quote', 'a"b'),
    ('quote pair', '""'),
    ('single quote', "o'neil"),
    ('backslash', 'back\\slash'),
    ('slash', 'a/b'),
    ('dot', 'a.b'),
    ('dot dot', '..'),
    ('leading dot dot slash', '../up'),
    ('percent', '100%'),
    ('percent s', '%s'),
    ('brace format', '{}{0}'),
    ('space', 'two words'),
    ('leading and trailing space', ' padded '),
    ('newline', 'line\nbreak'),
    ('carriage return', 'cr\rlf'),
    ('tab', 'tab\tbed'),
    ('control character', 'ctl\x01x'),
    ('escape character', 'esc\x1b[31m'),
    ('non-ASCII', 'café_ünïcødé'),
    ('CJK', '表格'),
    ('emoji', 'rows_📦'),
    ('right-to-left mark', 'rtl\u200fname'),
    ('63 ASCII bytes', 'x' * 63),
    ('63 bytes with multibyte characters', 'é' * 31 + 'x'),
    ('one letter', 'x'),
    ('upper case', 'MixedCase'),
    ('key=value', 'year=2026'),
    ('path-like partition', 'day=01/part'),
    ('SQL keyword', 'select'),
    ('SQL keyword upper', 'TABLE'),
    ('semicolon injection', 'x; DROP TABLE y; --'),
    ('comment start', '--comment'),
    ('dollar quote', '$$x$$'),
    ('shell metacharacters', '$(id)`id`|&'),
    ('glob', '*?[a]'),
    ('asterisk only', '*'),
    ('colon', 'host:5432'),
    ('at sign', 'user@host'),
    ('hash', '#frag'),
    ('question mark', 'q?x=1'),
    ('equals only', '='),
    ('JSON-like', '{"a":1}'),
    ('digits only', '2026'),
    ('leading digit', '1st'),
    ('dash', 'my-table'),
]


def hostile_identifiers(max_bytes=MAX_IDENTIFIER_BYTES, exclude=()):
    """The catalogue's ``(label, name)`` pairs whose name is at most ``max_bytes`` bytes of UTF-8 (a test that
    appends a suffix to the name leaves room for it) and whose label is not in ``exclude``."""
    return [(label, name) for label, name in HOSTILE_IDENTIFIERS
            if len(name.encode('utf-8')) <= max_bytes and label not in exclude]
