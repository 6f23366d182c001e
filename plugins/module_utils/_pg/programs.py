# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's client programs: found not older than the server, and their versions."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


BINDIR_ENV = 'PGOPS_PG_BINDIR'


_VERSION = re.compile(r'\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?')


def program_version(path):
    """``(major, minor)`` of a PostgreSQL program, from ``<program> --version`` (every PostgreSQL program, the
    server ``postgres`` included, prints ``<name> (PostgreSQL) 15.4``): ``major`` an int, ``minor`` a str or None.

    :raises PgopsError: when it cannot be run or does not print a PostgreSQL version.
    """
    try:
        out = subprocess.run([path, '--version'], capture_output=True, text=True, timeout=30, check=False,
                             stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgopsError('cannot run %s --version: %s. Check bindir.' % (path, exc))
    match = _VERSION.search(out or '')
    if not match:
        raise PgopsError('%s --version printed %r, not a PostgreSQL version. Check bindir.' % (path, (out or '').strip()[:80]))
    return int(match.group(1)), match.group(2)


def program_major(path):
    """The major version (int) of a PostgreSQL program (see :func:`program_version`)."""
    return program_version(path)[0]


def find_client_program(name, bindir=None, server_major=None):
    """The path of the client program ``name`` whose major version is at least the server's.

    pg_dump and pg_basebackup refuse (or misbehave with) a newer server, so an older program is skipped. Order:
    ``bindir`` (the option; no fallback from it), $PGOPS_PG_BINDIR, /usr/lib/postgresql/<major>/bin (Debian; the
    newest first), /usr/pgsql-<major>/bin (PGDG RPMs), then PATH.

    :param name: str, such as ``'pg_dump'``.
    :param bindir: str or None.
    :param server_major: int or None (any version).
    :returns: str.
    :raises PgopsError: naming what was searched and what to install.
    """
    forced = bindir or os.environ.get(BINDIR_ENV)
    if forced:
        path = os.path.join(forced, name)
        if not os.access(path, os.X_OK):
            raise PgopsError('%s has no %s program; point bindir at the directory of the PostgreSQL client programs '
                             '(such as /usr/lib/postgresql/15/bin).' % (forced, name))
        _check_version(path, server_major, 'bindir' if bindir else '$' + BINDIR_ENV)
        return path
    candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name) + glob.glob('/usr/pgsql-*/bin/' + name),
                        key=_dir_major, reverse=True)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    too_old = []
    for path in candidates:
        major = program_major(path)
        if server_major is None or major >= server_major:
            return path
        too_old.append('%s (PostgreSQL %d)' % (path, major))
    raise PgopsError('no %s %sfound (searched /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin and PATH%s). Install the '
                     'PostgreSQL client programs (apt-get install -y postgresql-client-%s) or pass bindir.'
                     % (name, 'of PostgreSQL %d or newer ' % server_major if server_major else '',
                        '; too old: ' + ', '.join(too_old) if too_old else '', server_major or 15))


def _dir_major(path):
    match = re.search(r'/(?:postgresql/|pgsql-)(\d+)', path)
    return int(match.group(1)) if match else 0


def _check_version(path, server_major, source):
    if server_major is not None and program_major(path) < server_major:
        raise PgopsError('%s %s is older than the PostgreSQL %d server; point %s at PostgreSQL %d (or newer) programs.'
                         % (source, path, server_major, source, server_major))
