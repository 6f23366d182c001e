# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""psycopg2 errors as messages fit for the user."""

from __future__ import annotations

import contextlib

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
try:
    import psycopg2
except ImportError:  # pragma: no cover - reported by _pg.connection.require_psycopg2()
    psycopg2 = None


@contextlib.contextmanager
def pg_errors(what):
    """Turn a ``psycopg2.Error`` raised in the block into a :class:`PgopsError` saying what was being done.

    :param what: str, such as ``'checking whether kv_store is empty'``.
    """
    try:
        yield
    except psycopg2.Error as exc:
        raise PgopsError('PostgreSQL error while %s: %s' % (what, pg_error_text(exc)))


def pg_error_text(exc):
    """One line from a psycopg2 error: the server's primary message, plus its detail and hint when present."""
    diag = getattr(exc, 'diag', None)
    parts = [getattr(diag, 'message_primary', None) or ' '.join(str(exc).split())]
    for label in ('detail', 'hint'):
        value = getattr(diag, 'message_' + label, None)
        if value:
            parts.append('%s: %s' % (label, value))
    return '; '.join(parts)
