# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Transactions and advisory locks (PostgreSQL docs, "Advisory Lock Functions")."""

from __future__ import annotations

import contextlib
import hashlib

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


def advisory_lock_key(*parts):
    """A stable signed 64-bit advisory lock key derived from text parts.

    PostgreSQL's advisory locks take a ``bigint`` key (docs, "Advisory Lock Functions"); the key is the
    first 8 bytes of the SHA-256 of the parts joined by U+001F, read as a signed big-endian integer, so it
    is the same in every Python process and on every host.

    :returns: int in ``[-2**63, 2**63)``.
    """
    digest = hashlib.sha256('\x1f'.join(str(p) for p in parts).encode('utf-8')).digest()
    return int.from_bytes(digest[:8], 'big', signed=True)


LOCK_KEY_RANGE = (-2 ** 63, 2 ** 63 - 1)


def validate_lock_key(key, option='lock_key'):
    """Return ``key`` when it fits PostgreSQL's ``bigint`` advisory lock keys.

    :raises PgopsError: naming ``option`` when it does not.
    """
    if not LOCK_KEY_RANGE[0] <= key <= LOCK_KEY_RANGE[1]:
        raise PgopsError('%s %d is outside the bigint range of advisory lock keys (%d to %d).' % ((option, key) + LOCK_KEY_RANGE))
    return key


@contextlib.contextmanager
def transaction(conn, read_only_snapshot=False):
    """Run a block in one transaction: commit when it exits normally, roll back on an exception.

    Yields a cursor. With ``read_only_snapshot`` the transaction is REPEATABLE READ, READ ONLY, so several
    queries see one consistent snapshot (PostgreSQL docs, "Transaction Isolation").

    :param conn: psycopg2 connection; switched out of autocommit for the block and restored afterwards.
    :raises psycopg2.Error: from the block's statements or from COMMIT.
    """
    previous = conn.autocommit
    conn.autocommit = False
    try:
        with conn:
            with conn.cursor() as cursor:
                if read_only_snapshot:
                    cursor.execute('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY')
                yield cursor
    finally:
        conn.autocommit = previous


@contextlib.contextmanager
def try_advisory_lock(conn, key):
    """Open a transaction (see :func:`transaction`) and try the transaction-level advisory lock ``key``
    without waiting.

    Yields ``(cursor, acquired)``. The lock is released by the transaction's commit or rollback
    (``pg_try_advisory_xact_lock``, PostgreSQL docs "Advisory Lock Functions"), so a run that takes the
    lock afterwards sees what was committed. When ``acquired`` is false the caller must not do the locked work.

    :param conn: psycopg2 connection.
    :param key: int, a signed 64-bit key (see :func:`advisory_lock_key` and :func:`validate_lock_key`).
    :raises psycopg2.Error: from the block's statements or from COMMIT.
    """
    with transaction(conn) as cursor:
        cursor.execute('SELECT pg_catalog.pg_try_advisory_xact_lock(%s)', [key])
        yield cursor, bool(cursor.fetchone()[0])


def try_session_advisory_lock(conn, key):
    """Try the session-level advisory lock ``key`` without waiting (``pg_try_advisory_lock``, PostgreSQL docs
    "Advisory Lock Functions"), for work done outside the database while the session idles (an external program):
    the lock lasts until the session ends, also when the process holding it is killed. From PostgreSQL 14 on the
    session's ``idle_session_timeout`` is turned off, so a server-wide setting cannot end it, and the lock, mid-way.

    :param conn: psycopg2 connection in autocommit mode, kept open for as long as the lock is needed.
    :param key: int, a signed 64-bit key (see :func:`advisory_lock_key`).
    :returns: bool, whether the lock was taken.
    :raises psycopg2.Error: from the statements.
    """
    with conn.cursor() as cursor:
        if conn.server_version >= 140000:
            cursor.execute('SET idle_session_timeout = 0')
        cursor.execute('SELECT pg_catalog.pg_try_advisory_lock(%s)', [key])
        return bool(cursor.fetchone()[0])
