"""Locating the PostgreSQL server programs."""

import os
import shutil
import subprocess

from .errors import SandboxError

REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
INSTALL_HINT = "apt-get install -y postgresql-15"
BINDIR_ENV = "PGOPS_PG_BINDIR"


def _has_all(directory):
    return all(os.access(os.path.join(directory, prog), os.X_OK) for prog in REQUIRED_PROGRAMS)


def _pg_config_bindir():
    if shutil.which("pg_config") is None:
        return None
    try:
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def _path_bindir():
    found = shutil.which("initdb")
    return os.path.dirname(os.path.realpath(found)) if found else None


def find_bindir(explicit=None):
    """Return the directory holding initdb, pg_ctl, pg_basebackup and postgres.

    Order: ``explicit`` (the pg_bindir argument), $PGOPS_PG_BINDIR, /usr/lib/postgresql/15/bin, ``pg_config --bindir``,
    then the directory of ``initdb`` on PATH. An explicit directory or $PGOPS_PG_BINDIR must be complete; there is
    no fallback from them. Raises SandboxError naming the missing programs and the package to install.
    """
    forced = explicit or os.environ.get(BINDIR_ENV)
    if forced:
        if _has_all(forced):
            return forced
        missing = [p for p in REQUIRED_PROGRAMS if not os.access(os.path.join(forced, p), os.X_OK)]
        source = "pg_bindir" if explicit else "$" + BINDIR_ENV
        raise SandboxError("PostgreSQL server programs %s not found in %s (from %s); install them with `%s`"
                           % (", ".join(missing), forced, source, INSTALL_HINT))
    searched = []
    for candidate in (DEFAULT_BINDIR, _pg_config_bindir(), _path_bindir()):
        if candidate and candidate not in searched:
            searched.append(candidate)
            if _has_all(candidate):
                return candidate
    raise SandboxError("PostgreSQL server programs (%s) not found (searched: %s, pg_config --bindir, PATH); install them with `%s` "
                       "or point $%s at their directory" % (", ".join(REQUIRED_PROGRAMS), ", ".join(searched) or "nothing", INSTALL_HINT, BINDIR_ENV))


def program(bindir, name):
    """Return the full path of program ``name`` in ``bindir``."""
    return os.path.join(bindir, name)
