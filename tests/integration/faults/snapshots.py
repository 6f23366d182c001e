# -*- coding: utf-8 -*-
"""Snapshots of a database, an S3 prefix and a directory, to compare before and after a fault.

Each snapshot is a :class:`Snapshot`: a dict that compares with ``==`` and explains a difference with
:meth:`Snapshot.diff` (the faults conftest makes pytest print that diff when ``assert before == after`` fails).
"""

from __future__ import annotations

import hashlib
import os
import stat


class Snapshot(dict):
    """``{name: value}`` of one kind of thing (``kind``: ``'database'``, ``'s3'``, ``'directory'``)."""

    def __init__(self, kind, entries):
        super().__init__(entries)
        self.kind = kind

    def diff(self, other, limit=40):
        """Lines saying what differs from ``other`` (a dict): entries only here, only there, or changed."""
        lines = []
        for name in sorted(set(self) | set(other), key=str):
            if name not in other:
                lines.append('- only before: %s = %r' % (name, self[name]))
            elif name not in self:
                lines.append('+ only after:  %s = %r' % (name, other[name]))
            elif self[name] != other[name]:
                lines.append('~ changed:     %s: %r -> %r' % (name, self[name], other[name]))
        if len(lines) > limit:
            lines = lines[:limit] + ['... and %d more differences' % (len(lines) - limit)]
        return ['%s snapshots differ:' % self.kind] + lines


# -- database ----------------------------------------------------------------------------------------------

_TABLES = """
SELECT c.oid::regclass::text, c.relispopulated FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1"""
_RELATIONS = """
SELECT c.oid::regclass::text, c.relkind::text, c.relpersistence::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'"""
_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid), i.indisvalid
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"""
_ROLES = """
SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls,
       rolconnlimit, rolvaliduntil::text FROM pg_catalog.pg_roles"""
# Settings a new session sees, those of the server, database and role included (not the session's own clock).
_SETTINGS = """
SELECT name, setting FROM pg_catalog.pg_settings WHERE source NOT IN ('client', 'session')"""
_ROLE_SETTINGS = """
SELECT coalesce(d.datname, '*') || '/' || coalesce(r.rolname, '*'), s.setconfig::text
FROM pg_catalog.pg_db_role_setting s LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole"""
# Order-independent: the sum of a 64-bit hash of each row's text (the same rows in any order give the same sum,
# one row more, less or changed changes it), with the row count beside it.
_TABLE_PRINT = 'SELECT count(*), coalesce(sum(pg_catalog.hashtextextended(t::text, 0)), 0)::text FROM %s AS t'


def db_snapshot(sandbox, dbname, node='primary'):
    """Everything a fault or check mode must not change in ``dbname``:

    - ``table <name>``: ``(row count, order-independent checksum of the rows' text)`` of every user table and
      materialized view (``('not populated',)`` for a materialized view that holds no data yet);
    - ``relation <name>``: ``(relkind, relpersistence)`` of every user relation (tables, sequences, views...);
    - ``index <name>``: ``(definition, valid)``;
    - ``role <name>``: the role's attributes; ``setting <name>``: the server's value (not the session's);
      ``role setting <db/role>``: ``ALTER ROLE / DATABASE ... SET`` values.
    """
    conn = sandbox.node(node).connect(dbname=dbname)
    entries = {}
    try:
        with conn.cursor() as cursor:
            cursor.execute(_TABLES)
            for table, populated in cursor.fetchall():
                if not populated:  # a materialized view created WITH NO DATA (or not refreshed yet) cannot be read
                    entries['table ' + table] = ('not populated',)
                    continue
                cursor.execute(_TABLE_PRINT % table)
                entries['table ' + table] = tuple(cursor.fetchone())
            for label, query in (('relation', _RELATIONS), ('index', _INDEXES), ('role', _ROLES),
                                 ('setting', _SETTINGS), ('role setting', _ROLE_SETTINGS)):
                cursor.execute(query)
                for row in cursor.fetchall():
                    entries['%s %s' % (label, row[0])] = tuple(row[1:])
    finally:
        conn.close()
    return Snapshot('database', entries)


_DATABASES = """
SELECT d.datname, pg_catalog.pg_get_userbyid(d.datdba), pg_catalog.pg_encoding_to_char(d.encoding), d.datallowconn,
       d.datconnlimit FROM pg_catalog.pg_database d"""


def cluster_snapshot(sandbox, node='primary'):
    """What a module that creates or drops databases, or roles, must not change in check mode: ``database
    <name>``: ``(owner, encoding, allows connections, connection limit)`` of every database of the server, and
    ``role <name>``: its attributes."""
    entries = {}
    for label, query in (('database', _DATABASES), ('role', _ROLES)):
        for row in sandbox.node(node).execute(query):
            entries['%s %s' % (label, row[0])] = tuple(row[1:])
    return Snapshot('cluster', entries)


# -- S3 ----------------------------------------------------------------------------------------------------

def s3_snapshot(sandbox, prefix=''):
    """``{key: (size in bytes, ETag)}`` of every object under ``prefix`` in the sandbox's bucket."""
    client = sandbox.s3.client()
    entries = {}
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=sandbox.s3.bucket, Prefix=prefix):
        for item in page.get('Contents', ()):
            entries[item['Key']] = (item['Size'], item['ETag'].strip('"'))
    return Snapshot('s3', entries)


# -- directory ---------------------------------------------------------------------------------------------

def _sha256(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def dir_snapshot(path, ignore=()):
    """``{relative path: (type, mode, size, sha256 or link target)}`` of every entry under ``path`` (itself
    included as ``.``); ``type`` is ``file``, ``dir``, ``link`` or ``other``; symbolic links are not followed.

    :param ignore: relative paths to leave out (a filler file, say).
    """
    entries = {}
    for current, dirs, files in os.walk(path):
        for name in ['.'] + dirs + files if current == path else dirs + files:
            full = os.path.normpath(os.path.join(current, name))
            rel = os.path.relpath(full, path)
            if rel in ignore:
                continue
            info = os.lstat(full)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = ('link', mode, None, os.readlink(full))
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = ('dir', mode, None, None)
            elif stat.S_ISREG(info.st_mode):
                entries[rel] = ('file', mode, info.st_size, _sha256(full))
            else:
                entries[rel] = ('other', mode, None, None)
    return Snapshot('directory', entries)


def assert_same(before, after, what=''):
    """Raise AssertionError with the diff when the snapshots differ."""
    if before != after:
        raise AssertionError('\n'.join(([what] if what else []) + before.diff(after)))
