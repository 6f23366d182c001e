"""One PostgreSQL node (primary or standby) of the sandbox."""

import logging
import os

from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive, postmaster_pid
from ansible_collections.pgops.resilience.plugins.module_utils._pg.recovery import conf_literal
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import read_tail

from ._util import LOOPBACK, conninfo_value, proc_cmdline, shell_quote, wait_for
from .errors import SandboxError
from .pgbin import program

LOG = logging.getLogger(__name__)

SUPERUSER = "postgres"
CONF_FILE = "pgops_sandbox.conf"
"""Settings file written by the sandbox into each data directory and included from postgresql.conf."""
GENERATION_FILE = "pgops_walg_generation"
"""File in each data directory naming the cluster generation (the WAL history) the node writes; see walg.py."""
LOG_FILE = "server.log"
"""Server log (pg_ctl -l) inside the data directory."""
STOP_MODES = ("smart", "fast", "immediate")


class Node:
    """A PostgreSQL server of the sandbox, listening on 127.0.0.1:``port`` with data directory ``datadir``.

    ``name`` is "primary" or "standby". Names never change: after a promotion the node called "standby" is a
    primary, and callers keep addressing it by that name.
    """

    host = LOOPBACK
    user = SUPERUSER

    def __init__(self, sandbox, name, port, datadir):
        self._sandbox = sandbox
        self.name = name
        self.port = int(port)
        self.datadir = datadir

    def __repr__(self):
        return "<Node %s 127.0.0.1:%d %s>" % (self.name, self.port, self.datadir)

    @property
    def log_file(self):
        """Path of the server log file (inside the data directory)."""
        return os.path.join(self.datadir, LOG_FILE)

    # -- connecting ---------------------------------------------------------------------------------------------

    def conninfo(self, dbname="postgres"):
        """Return a libpq key=value connection string for ``dbname``; the password comes from ``passfile=``."""
        parts = [("host", self.host), ("port", self.port), ("user", self.user), ("dbname", dbname), ("passfile", self._sandbox.passfile)]
        return " ".join("%s=%s" % (key, conninfo_value(value)) for key, value in parts)

    def connect(self, dbname="postgres", autocommit=True, connect_timeout=10):
        """Open and return a psycopg2 connection to ``dbname`` (``connect_timeout`` in seconds)."""
        import psycopg2  # pylint: disable=import-outside-toplevel

        conn = psycopg2.connect(self.conninfo(dbname), connect_timeout=connect_timeout, application_name="pgops_sandbox")
        conn.autocommit = autocommit
        return conn

    def execute(self, sql, params=None, dbname="postgres"):
        """Run one statement in autocommit mode and return its rows as a list of tuples ([] when it returns none)."""
        conn = self.connect(dbname=dbname, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        finally:
            conn.close()

    # -- state --------------------------------------------------------------------------------------------------

    def is_initialised(self):
        """Return True when the data directory is complete (PG_VERSION and the sandbox settings file exist)."""
        return all(os.path.exists(os.path.join(self.datadir, name)) for name in ("PG_VERSION", CONF_FILE))

    def pid(self):
        """Return the postmaster PID (int) from postmaster.pid when that process is alive, else None."""
        pid = postmaster_pid(self.datadir)
        if pid and pid_alive(pid) and any("postgres" in arg for arg in proc_cmdline(pid)[:1]):
            return pid
        return None

    def is_running(self):
        """Return True when the postmaster of this node is alive."""
        return self.pid() is not None

    def accepts_connections(self):
        """Return True when a superuser connection over TCP succeeds."""
        try:
            self.execute("SELECT 1")
        except Exception:  # pylint: disable=broad-except
            return False
        return True

    def in_recovery(self):
        """Return pg_is_in_recovery() (True on a standby). Raises psycopg2 errors when the node is down."""
        return bool(self.execute("SELECT pg_is_in_recovery()")[0][0])

    def is_streaming(self, upstream=None):
        """Return True when this node is a standby whose WAL receiver streams (and ``upstream`` Node, if given, sees it)."""
        rows = self.execute("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver LIMIT 1), pg_last_wal_receive_lsn()")
        in_recovery, status, received = rows[0]
        if not (in_recovery and status == "streaming" and received is not None):
            return False
        if upstream is None:
            return True
        seen = upstream.execute("SELECT count(*) FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'", (self.name,))
        return seen[0][0] > 0

    def wait_streaming(self, upstream=None, timeout=None):
        """Wait (``timeout`` seconds, default the sandbox's) until is_streaming(upstream); raises SandboxError on timeout."""
        what = "%s to stream WAL%s" % (self.name, " from %s" % upstream.name if upstream else "")
        wait_for(lambda: self.is_streaming(upstream), what, self._timeout(timeout))

    def log_tail(self, lines=40):
        """Return the last ``lines`` lines of the server log."""
        return read_tail(self.log_file, lines)

    # -- configuration ------------------------------------------------------------------------------------------

    def settings(self):
        """Return the sandbox settings of this node as an ordered list of (name, postgresql.conf literal)."""
        archive_command = "%s %%p %%f" % shell_quote(self._sandbox.archive_script)
        values = [
            ("listen_addresses", LOOPBACK),
            ("port", self.port),
            ("unix_socket_directories", self._sandbox.socket_dir),
            ("wal_level", "replica"),
            ("archive_mode", True),
            ("archive_command", archive_command),
            ("max_wal_senders", 10),
            ("hot_standby", True),
            ("wal_keep_size", "64MB"),
            ("cluster_name", "pgops-sandbox-" + self.name),
        ]
        return [(name, conf_literal(name, value)) for name, value in values]

    def write_config(self):
        """Write pgops_sandbox.conf for this node (port, socket, WAL archiving, replication) and include it from postgresql.conf."""
        server = self._sandbox.server_user
        lines = ["# Written by pgops_sandbox for node %r; rewritten when the node is (re)created." % self.name]
        lines += ["%s = %s" % item for item in self.settings()]
        main_conf = os.path.join(self.datadir, "postgresql.conf")
        with open(main_conf, encoding="utf-8") as handle:
            text = handle.read()
        include = "include '%s'" % CONF_FILE
        if include not in text.splitlines():
            # Appending keeps the file's owner and mode; the include comes last, so these settings win.
            with open(main_conf, "a", encoding="utf-8") as handle:
                handle.write("\n# pgops_sandbox settings\n%s\n" % include)
        server.write_file(os.path.join(self.datadir, CONF_FILE), "\n".join(lines) + "\n", 0o600)

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def _timeout(self, timeout):
        return self._sandbox.timeout if timeout is None else timeout

    def _pg_ctl(self, *args, timeout):
        cmd = [program(self._sandbox.bindir, "pg_ctl")] + list(args)
        return self._sandbox.server_user.run_as_server(cmd, timeout=timeout + 30, log_file=self.log_file)

    def start(self, timeout=None):
        """Start the node with ``pg_ctl start -w`` and wait until it accepts connections (``timeout`` in seconds).

        Returns True when it was started, False when it was already running. Raises SandboxError with the tail of
        the server log when the start fails.
        """
        timeout = self._timeout(timeout)
        if self.is_running():
            return False
        if not self.is_initialised():
            raise SandboxError("cannot start %s: %s is not an initialised data directory (run up() or rebuild_standby())" % (self.name, self.datadir))
        self._remove_stale_pidfile()
        LOG.info("starting %s on 127.0.0.1:%d", self.name, self.port)
        try:
            self._pg_ctl("start", "-D", self.datadir, "-l", self.log_file, "-w", "-t", str(int(timeout)), timeout=timeout)
        except SandboxError as exc:
            raise SandboxError("could not start %s (port %d): %s" % (self.name, self.port, exc)) from None
        wait_for(self.accepts_connections, "%s to accept connections on 127.0.0.1:%d" % (self.name, self.port), timeout)
        return True

    def _remove_stale_pidfile(self):
        """Remove postmaster.pid and the socket lock file when they name a postmaster that died unreaped (a zombie).

        After ``kill -9`` of a postmaster whose parent is an init that does not reap promptly (common in
        containers), the zombie still "exists" for kill(pid, 0) and PostgreSQL refuses to start ("lock file
        already exists"). A PID that does not exist at all is left to PostgreSQL, which handles that itself.
        """
        lock_files = [os.path.join(self.datadir, "postmaster.pid"), os.path.join(self._sandbox.socket_dir, ".s.PGSQL.%d.lock" % self.port)]
        for path in lock_files:
            try:
                with open(path, encoding="utf-8") as handle:
                    pid = int(handle.readline().strip())
            except (OSError, ValueError):
                continue
            if os.path.exists("/proc/%d" % pid) and not pid_alive(pid):
                LOG.warning("removing stale %s of dead (zombie) postmaster %d", path, pid)
                os.unlink(path)

    def stop(self, mode="fast", timeout=None):
        """Stop the node with ``pg_ctl stop -m mode`` (smart, fast or immediate; immediate simulates a crash).

        Waits up to ``timeout`` seconds. Returns True when it was stopped, False when it was not running.
        """
        if mode not in STOP_MODES:
            raise SandboxError("unknown stop mode %r; use one of %s" % (mode, ", ".join(STOP_MODES)))
        timeout = self._timeout(timeout)
        if not self.is_running():
            return False
        LOG.info("stopping %s (mode %s)", self.name, mode)
        self._pg_ctl("stop", "-D", self.datadir, "-m", mode, "-w", "-t", str(int(timeout)), timeout=timeout)
        return True

    def promote(self, wait=True, timeout=None):
        """Promote this standby with ``pg_ctl promote``; with ``wait``, wait until pg_is_in_recovery() is false.

        ``timeout`` is in seconds. A node that is already a primary is left alone. Raises SandboxError when the
        node is not running or the promotion does not complete in time.
        """
        timeout = self._timeout(timeout)
        if not self.is_running():
            raise SandboxError("cannot promote %s: it is not running" % self.name)
        if not self.in_recovery():
            LOG.info("%s is not in recovery; nothing to promote", self.name)
            return self
        LOG.info("promoting %s", self.name)
        self._pg_ctl("promote", "-D", self.datadir, "-w" if wait else "-W", "-t", str(int(timeout)), timeout=timeout)
        if wait:
            wait_for(lambda: not self.in_recovery(), "%s to leave recovery after promotion" % self.name, timeout)
        return self
