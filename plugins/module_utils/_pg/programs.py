# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's programs: where they are and which version they are. One search for every program the collection
runs, client programs (pg_dump, pg_restore, psql, pg_basebackup) and server programs (pg_ctl, postgres, initdb).

The search (:func:`program_directory`), in this order:

1. the ``bindir`` option; else ``$PGOPS_PG_BINDIR``. Either one is the only place looked at: no fallback from a
   directory someone chose.
2. the directories of the packages, newest major first: ``/usr/lib/postgresql/<major>/bin`` (Debian, Ubuntu) and
   ``/usr/pgsql-<major>/bin`` (PGDG RPMs);
3. ``pg_config --bindir``;
4. the directory of the first program on ``PATH``, as found (Debian's ``/usr/bin`` wrappers) and with its links
   resolved (the package's directory, where the other programs are).

A directory must hold every program asked for, and their version must fit: a server program must be the major
version of the data directory it runs (the data directory's ``PG_VERSION``: a server starts only its own major's
data directory, PostgreSQL 15 docs, 19.6 "Upgrading a PostgreSQL Cluster"); a client program must be at least the
server's major (pg_dump and pg_basebackup refuse, or misbehave with, a newer server: "pg_dump" Notes). The first
directory that fits wins.
"""

from __future__ import annotations

import glob
import os
import re
import shutil

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import program_output


BINDIR_ENV = 'PGOPS_PG_BINDIR'


SERVER_PROGRAMS = ('pg_ctl', 'postgres')  # what a drill and a bootstrap run


VERSION_TIMEOUT = 30  # seconds a ``--version`` or ``pg_config --bindir`` may take


_VERSION = re.compile(r'\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?')


_PACKAGE_DIRS = ('/usr/lib/postgresql/*/bin', '/usr/pgsql-*/bin')


def program_version(path):
    """``(major, minor)`` of a PostgreSQL program, from ``<program> --version`` (every PostgreSQL program, the
    server ``postgres`` included, prints ``<name> (PostgreSQL) 15.4``): ``major`` an int, ``minor`` a str or None.

    :raises PgopsError: when it cannot be run or does not print a PostgreSQL version.
    """
    try:
        out = program_output([path, '--version'], dict(os.environ), '%s --version' % path, timeout=VERSION_TIMEOUT)
    except PgopsError as exc:
        raise PgopsError('cannot run %s --version: %s. Check bindir.' % (path, exc.msg.rstrip('.')))
    match = _VERSION.search(out or '')
    if not match:
        raise PgopsError('%s --version printed %r, not a PostgreSQL version. Check bindir.' % (path, (out or '').strip()[:80]))
    return int(match.group(1)), match.group(2)


def program_major(path):
    """The major version (int) of a PostgreSQL program (see :func:`program_version`)."""
    return program_version(path)[0]


def server_major(bindir):
    """The major version (str: ``'15'``, or ``'9.6'`` before 10, as ``PG_VERSION`` writes it) of the ``postgres``
    program in ``bindir``.

    :raises PgopsError: when it cannot be run or its output is not understood (see :func:`program_version`).
    """
    major, minor = program_version(os.path.join(bindir, 'postgres'))
    return str(major) if major >= 10 else '%d.%s' % (major, minor or '0')


def _version_of(directory, programs):
    """The major version of ``directory``'s programs, as PG_VERSION writes it (str), from its ``postgres`` when it
    holds one (a server directory), else from the first program."""
    if 'postgres' in programs:
        return server_major(directory)
    return str(program_major(os.path.join(directory, programs[0])))


def _fits(found, major, exact):
    """Whether version ``found`` (str) is ``major`` (``exact``) or at least ``major`` (str or int; None: any)."""
    if major is None:
        return True
    if exact:
        return found == str(major)
    return major_number(found) >= major_number(major)


def major_number(version):
    """The leading number of a major version: ``'15'`` -> 15, ``'9.6'`` -> 9, 14 -> 14."""
    return int(str(version).split('.', maxsplit=1)[0])


def _dir_major(path):
    match = re.search(r'/(?:postgresql/|pgsql-)(\d+)', path)
    return int(match.group(1)) if match else 0


def _pg_config_bindir():
    """``pg_config --bindir``, or None when there is no pg_config or it fails."""
    if shutil.which('pg_config') is None:
        return None
    try:
        return program_output(['pg_config', '--bindir'], dict(os.environ), 'pg_config --bindir', timeout=VERSION_TIMEOUT).strip() or None
    except PgopsError:
        return None


def _candidates(first):
    """The directories of steps 2 to 4 of the search (see the module docstring), computed as they are needed."""
    yield from sorted((d for pattern in _PACKAGE_DIRS for d in glob.glob(pattern)), key=_dir_major, reverse=True)
    yield _pg_config_bindir()
    on_path = shutil.which(first)
    if on_path:
        yield os.path.dirname(on_path)
        yield os.path.dirname(os.path.realpath(on_path))


def _missing(directory, programs):
    return [p for p in programs if not os.access(os.path.join(directory, p), os.X_OK)]


def program_directory(programs, bindir=None, major=None, exact=False):
    """The directory holding all of ``programs`` in a fitting version (the search of the module docstring).

    :param programs: tuple of program names, such as :data:`SERVER_PROGRAMS` or ``('pg_dump',)``.
    :param bindir: str or None, the option (then the only place looked at).
    :param major: the version wanted (str such as ``'15'``, or int), or None for any.
    :param exact: bool: the version must be ``major`` (server programs), else at least ``major`` (client programs).
    :returns: str.
    :raises PgopsError: naming what was searched, what was found, and what to install or set.
    """
    forced = bindir or os.environ.get(BINDIR_ENV)
    if forced:
        source = 'bindir' if bindir else '$' + BINDIR_ENV
        missing = _missing(forced, programs)
        if missing and exact:
            raise PgopsError('%s %s lacks the PostgreSQL server programs %s; point it at the directory holding %s (such as '
                             '/usr/lib/postgresql/15/bin).' % (source, forced, ', '.join(missing), ' and '.join(programs)))
        if missing:
            raise PgopsError('%s %s has no %s program; point %s at the directory of the PostgreSQL client programs (such as '
                             '/usr/lib/postgresql/15/bin).' % (source, forced, ', '.join(missing), source))
        found = _version_of(forced, programs)
        if not _fits(found, major, exact) and exact:
            raise PgopsError('%s %s holds PostgreSQL %s programs, but the data directory is PostgreSQL %s: point %s at the '
                             'PostgreSQL %s programs.' % (source, forced, found, major, source, major))
        if not _fits(found, major, exact):
            raise PgopsError('%s %s is older than the PostgreSQL %s server; point %s at PostgreSQL %s (or newer) programs.'
                             % (source, os.path.join(forced, programs[0]), major, source, major))
        return forced
    seen, other = [], []
    for candidate in _candidates(programs[0]):
        if not candidate or candidate in seen:
            continue
        seen.append(candidate)
        if _missing(candidate, programs):
            continue
        found = _version_of(candidate, programs)
        if _fits(found, major, exact):
            return candidate
        other.append('%s (PostgreSQL %s)' % (candidate, found))
    kind = 'server' if exact else 'client'
    wanted = '' if major is None else 'PostgreSQL %s%s ' % (major, '' if exact else ' (or newer)')
    package = 'postgresql-%s' % (major or 15) if exact else 'postgresql-client-%s' % (major or 15)
    raise PgopsError('%s%s program%s %s not found (searched %s, pg_config --bindir, PATH%s). Install them (apt-get install -y '
                     '%s) or pass bindir.' % (wanted, kind, 's' if len(programs) > 1 else '', ', '.join(programs),
                                              ', '.join(_PACKAGE_DIRS), '; found only ' + ', '.join(other) if other else '', package))


def find_bindir(explicit=None, pg_version=None, programs=SERVER_PROGRAMS):
    """The directory of the PostgreSQL server programs for a data directory of ``pg_version``
    (:func:`program_directory` with the exact version rule).

    :param explicit: str or None, the ``bindir`` option.
    :param pg_version: str such as ``'15'`` (PG_VERSION of the data directory), or None for any version.
    :param programs: the programs the directory must hold (default :data:`SERVER_PROGRAMS`; the sandbox adds
        initdb and pg_basebackup).
    :returns: str.
    :raises PgopsError: see :func:`program_directory`.
    """
    return program_directory(tuple(programs), explicit, pg_version, exact=True)


def find_client_program(name, bindir=None, server_major=None):  # pylint: disable=redefined-outer-name
    """The path of the client program ``name`` whose major version is at least the server's
    (:func:`program_directory` with the minimum version rule).

    :param name: str, such as ``'pg_dump'``.
    :param bindir: str or None.
    :param server_major: int or None (any version).
    :returns: str.
    :raises PgopsError: see :func:`program_directory`.
    """
    return os.path.join(program_directory((name,), bindir, server_major, exact=False), name)
