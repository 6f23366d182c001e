"""Running PostgreSQL server programs as the right operating-system user.

PostgreSQL refuses to run as root. When this process is root, initdb, pg_ctl, pg_basebackup and the server run as
the ``postgres`` system user through ``runuser -u postgres -- ...``, and every file or directory the server needs is
chowned to that user. Otherwise the programs run directly as the current user and nothing is chowned. The user is the
collection's ``ServerUser`` and the programs run through the collection's one process runner; the sandbox adds
directories and files made for that user.
"""

import grp
import logging
import os
import shlex
import stat

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import program_output
from ansible_collections.pgops.resilience.plugins.module_utils._pg import server_user
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import read_tail, server_environment

from ._util import write_private_file
from .errors import SandboxError

LOG = logging.getLogger(__name__)

SERVER_USER = "postgres"
"""System user that runs the servers when the sandbox is driven by root."""

LOG_TAIL_LINES = 40


class ServerUser(server_user.ServerUser):
    """The operating-system user that owns the data directories and runs the PostgreSQL programs: ``postgres`` as
    root, else the current user. Raises SandboxError when root and that user does not exist or runuser is missing."""

    def __init__(self):
        try:
            super().__init__(SERVER_USER if os.geteuid() == 0 else None, "/")
        except PgopsError as exc:
            raise SandboxError("%s Install the server (apt-get install -y postgresql-15 creates the postgres user) or run as a "
                               "non-root user" % exc.msg) from None

    def run_as_server(self, cmd, timeout=300.0, log_file=None, env=None):
        """Run ``cmd`` (a list) as the server user, in ``/`` (an unreadable current directory such as /root does not
        bother the programs), and return its stdout.

        ``env`` is the complete environment (default: the collection's ``server_environment()``, without PG*
        variables: runuser keeps the caller's environment, so a PGPASSWORD or PGPORT would otherwise leak into
        pg_basebackup and from there into the standby's configuration); ``timeout`` is in seconds. Raises SandboxError
        with the collection's failure text (exit status, stderr tail) and, if given, the tail of ``log_file``.
        Commands must never contain a password: passwords travel in passfiles only.
        """
        LOG.debug("running %s", " ".join(self.command(cmd)))
        what = " ".join([os.path.basename(cmd[0])] + list(cmd[1:2]))
        try:
            return program_output(self.command(cmd), env if env is not None else server_environment(), what, timeout=timeout, cwd="/")
        except PgopsError as exc:
            message = exc.msg
            if log_file:
                message += "\n--- last lines of %s ---\n%s" % (log_file, read_tail(log_file, LOG_TAIL_LINES))
            raise SandboxError(message) from None

    def make_dir(self, path, mode=0o700):
        """Create directory ``path`` (and parents) if needed, owned by the server user with permission ``mode``."""
        os.makedirs(path, exist_ok=True)
        self.chown(path)
        os.chmod(path, mode)

    def write_file(self, path, text, mode=0o600):
        """Atomically write ``text`` to ``path``, owned by the server user with permission ``mode``."""
        write_private_file(path, text, mode, (self.uid, self.gid) if self.as_root else None)

    def require_runs(self, program, hint, timeout=120):
        """Check that the server user can run ``program`` (``--version``): archive_command runs as that user. Raises
        SandboxError naming the user, the program, why, and ``hint`` (how to install it where that user reaches it)."""
        try:
            self.run_as_server([program, "--version"], timeout=timeout)
        except SandboxError as exc:
            raise SandboxError("the %s user cannot run %s (%s); %s" % (self.name, program, exc, hint)) from None

    def write_env_file(self, path, values):
        """Write ``values`` (dict str -> str) to ``path`` as shell assignments (values quoted) that archive-wal.sh
        sources: 0600, owned by the server user, since they hold credentials."""
        self.write_file(path, "".join("%s=%s\n" % (key, shlex.quote(value)) for key, value in values.items()), 0o600)

    def ensure_traversable(self, path):
        """Make every directory from / down to ``path`` searchable by the server user.

        Only needed as root (the server runs as another user then). A directory the server user cannot enter gets
        the search bit for "others" (o+x, which allows entering, not listing), e.g. pytest's 0700 /tmp/pytest-of-root.
        Returns the list of directories that were changed.
        """
        if not self.as_root:
            return []
        changed = []
        current = "/"
        for part in os.path.abspath(path).strip("/").split("/"):
            current = os.path.join(current, part)
            if not os.path.isdir(current) or self.can_traverse(current):
                continue
            mode = stat.S_IMODE(os.stat(current).st_mode)
            os.chmod(current, mode | stat.S_IXOTH)
            LOG.info("made %s searchable (o+x) for the %s user", current, self.name)
            changed.append(current)
        return changed

    def describe(self):
        """Return a short text such as "postgres (uid 101, via runuser)"."""
        how = "via runuser" if self.as_root else "current user"
        try:
            group = grp.getgrgid(self.gid).gr_name
        except KeyError:
            group = str(self.gid)
        return "%s:%s (uid %d, %s)" % (self.name, group, self.uid, how)
