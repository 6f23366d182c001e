"""Running PostgreSQL server programs as the right operating-system user.

PostgreSQL refuses to run as root. When this process is root, initdb, pg_ctl, pg_basebackup and the server run as
the ``postgres`` system user through ``runuser -u postgres -- ...``, and every file or directory the server needs is
chowned to that user. Otherwise the programs run directly as the current user and nothing is chowned.
"""

import grp
import logging
import os
import pwd
import shutil
import stat
import subprocess

from ._util import read_tail, write_private_file
from .errors import SandboxError

LOG = logging.getLogger(__name__)

SERVER_USER = "postgres"
"""System user that runs the servers when the sandbox is driven by root."""


def server_environment(extra=None):
    """Return a copy of os.environ without libpq variables (PGPASSWORD, PGHOST, ...), plus ``extra``.

    runuser keeps the caller's environment (only HOME, SHELL, USER and LOGNAME change), so a PGPASSWORD or PGPORT
    of the caller would otherwise leak into pg_basebackup and from there into the standby's configuration.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(extra or {})
    return env


class ServerUser:
    """The operating-system user that owns the data directories and runs the PostgreSQL programs."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise SandboxError(
                    "running as root, but the system user %r does not exist; PostgreSQL refuses to run as root. "
                    "Install the server (apt-get install -y postgresql-15 creates the user) or run as a non-root user" % SERVER_USER
                ) from None
            if shutil.which("runuser") is None:
                raise SandboxError("running as root needs 'runuser' (util-linux) to start PostgreSQL as %r; apt-get install -y util-linux" % SERVER_USER)
            self.name, self.uid, self.gid = entry.pw_name, entry.pw_uid, entry.pw_gid
        else:
            self.uid, self.gid = os.geteuid(), os.getegid()
            self.name = pwd.getpwuid(self.uid).pw_name
        self.groups = set(os.getgrouplist(self.name, self.gid))

    def command(self, cmd):
        """Return ``cmd`` (a list) wrapped so that it runs as the server user."""
        if self.as_root:
            return ["runuser", "-u", self.name, "--"] + list(cmd)
        return list(cmd)

    def run(self, cmd, env=None, timeout=300.0, check=True, log_file=None):
        """Run ``cmd`` as the server user and return the CompletedProcess (text output captured).

        ``env`` is the complete environment (default: server_environment()); ``timeout`` is in seconds. The working
        directory is ``/`` so that an unreadable current directory (such as /root) does not bother the programs.
        With ``check`` a non-zero exit raises SandboxError quoting the command's output and, if given, the tail of
        ``log_file``. Commands must never contain a password: passwords travel in passfiles only.
        """
        full = self.command(cmd)
        LOG.debug("running %s", " ".join(full))
        try:
            result = subprocess.run(full, env=env if env is not None else server_environment(), cwd="/", capture_output=True,
                                    text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            raise SandboxError("cannot run %s: %s" % (full[0], exc.strerror)) from exc
        except subprocess.TimeoutExpired as exc:
            raise SandboxError("%s did not finish within %.0f s" % (os.path.basename(cmd[0]), timeout)) from exc
        if check and result.returncode != 0:
            raise SandboxError(self.failure_message(cmd, result, log_file))
        return result

    @staticmethod
    def failure_message(cmd, result, log_file=None):
        """Build the error text for a failed server command: exit code, its output and the server log tail."""
        output = "\n".join(part.strip() for part in (result.stdout, result.stderr) if part and part.strip())
        message = "%s failed with exit code %d" % (" ".join([os.path.basename(cmd[0])] + list(cmd[1:2])), result.returncode)
        if output:
            message += ":\n" + output
        if log_file:
            message += "\n--- last lines of %s ---\n%s" % (log_file, read_tail(log_file))
        return message

    def chown(self, path):
        """Give ``path`` to the server user (only when running as root)."""
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def make_dir(self, path, mode=0o700):
        """Create directory ``path`` (and parents) if needed, owned by the server user with permission ``mode``."""
        os.makedirs(path, exist_ok=True)
        self.chown(path)
        os.chmod(path, mode)

    def write_file(self, path, text, mode=0o600):
        """Atomically write ``text`` to ``path``, owned by the server user with permission ``mode``."""
        write_private_file(path, text, mode)
        self.chown(path)

    def can_traverse(self, path):
        """Return True when the server user may enter (search) directory ``path``."""
        info = os.stat(path)
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)

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
