"""Locating the PostgreSQL server programs: the collection's one program lookup
(``_pg.programs.find_bindir``), asked for the programs the sandbox runs."""

import os

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg import programs

from .errors import SandboxError

REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
INSTALL_HINT = "apt-get install -y postgresql-15"
BINDIR_ENV = programs.BINDIR_ENV


def find_bindir(explicit=None):
    """Return the directory holding initdb, pg_ctl, pg_basebackup and postgres, of any major version.

    The search is the collection's (``_pg.programs``): ``explicit`` (the pg_bindir argument) or $PGOPS_PG_BINDIR
    alone (no fallback from them), else the package directories (newest major first), ``pg_config --bindir``, then
    the directory of ``initdb`` on PATH. Raises SandboxError naming what is missing and the package to install.
    """
    try:
        return programs.find_bindir(explicit, None, REQUIRED_PROGRAMS)
    except PgopsError as exc:
        raise SandboxError("%s (the sandbox: `%s`)" % (exc.msg.rstrip("."), INSTALL_HINT)) from None


def program(bindir, name):
    """Return the full path of program ``name`` in ``bindir``."""
    return os.path.join(bindir, name)
