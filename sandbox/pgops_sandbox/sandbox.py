"""The sandbox: a PostgreSQL primary, a streaming hot standby and an S3 endpoint on 127.0.0.1 under one directory.

Layout of the work directory::

    state.json       ports, PIDs, paths, bucket and the superuser password (mode 0600)
    pgpass           libpq passfile for clients (mode 0600) - the only other place the password is stored
    server.pgpass    the same for the server user (used by pg_basebackup and the standby's primary_conninfo)
    primary/         data directory of the primary (server log: primary/server.log)
    standby/         data directory of the standby
    wal_archive/     target of archive_command
    archive-wal.sh   the primary's archive_command: a copy into wal_archive/, then wal-g wal-push when walg.env
                     exists (see walg.py), then barman-cloud-wal-archive when barman.env exists (see barman.py)
    walg.env         wal-g's settings for archive_command (mode 0600, server user); absent when wal-g is not found
    run/             Unix socket directory (a short directory under /tmp when this path would be too long)
    moto.log         output of the S3 server
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import time

from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port

from . import barman, walg
from ._util import DEFAULT_TIMEOUT, LOOPBACK, conninfo_value, read_json, wait_for, write_private_file
from .errors import SandboxError
from .node import SUPERUSER, Node
from .pgbin import find_bindir, program
from .s3 import S3Endpoint, is_moto, start_moto, stop_moto
from .server_user import ServerUser

LOG = logging.getLogger(__name__)

DEFAULT_BUCKET = "pgops-sandbox"
STATE_VERSION = 1
NODE_NAMES = ("primary", "standby")
PORT_ENV = {"primary": "PGOPS_SANDBOX_PRIMARY_PORT", "standby": "PGOPS_SANDBOX_STANDBY_PORT", "s3": "PGOPS_SANDBOX_S3_PORT"}
SOCKET_PATH_LIMIT = 100
"""Longest Unix socket path accepted (the kernel limit is 107 bytes), including "/.s.PGSQL.65535.lock"."""

PG_HBA = """\
# Written by pgops_sandbox. Unix socket: trust (the socket directory is private to the server user).
# TCP: 127.0.0.1 only, SCRAM passwords, for normal and replication connections.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
"""


def _env_port(component):
    value = os.environ.get(PORT_ENV[component])
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SandboxError("$%s must be a port number, not %r" % (PORT_ENV[component], value)) from None


def _socket_dir_for(workdir):
    candidate = os.path.join(workdir, "run")
    if len(candidate) + len("/.s.PGSQL.65535.lock") < SOCKET_PATH_LIMIT:
        return candidate
    return "/tmp/pgops-sbx-" + hashlib.sha256(workdir.encode("utf-8")).hexdigest()[:12]


def _pgpass_escape(value):
    return value.replace("\\", "\\\\").replace(":", "\\:")


class Sandbox:  # pylint: disable=too-many-instance-attributes
    """PostgreSQL primary + hot standby + S3 endpoint on 127.0.0.1, all under ``workdir``.

    Ports (int) are picked free unless given as arguments or in $PGOPS_SANDBOX_PRIMARY_PORT, $PGOPS_SANDBOX_STANDBY_PORT
    and $PGOPS_SANDBOX_S3_PORT. When ``workdir`` already holds a sandbox its state file wins: stored ports, bucket
    and ``with_standby`` are reused, environment ports are ignored, and an explicit port that differs from the port
    of an existing node raises SandboxError. ``pg_bindir`` overrides where the PostgreSQL programs are looked for.
    ``timeout`` (seconds) bounds every wait. With ``barman_server`` (a barman server name), up() also makes the
    primary ship its WAL with barman-cloud-wal-archive to ``s3://<bucket>/barman/<barman_server>`` (see barman.py).
    When wal-g is present, up() makes it ship the WAL with wal-push to ``s3://<bucket>/walg/<generation>`` too
    (see walg.py).
    Nothing is started before up().
    """

    def __init__(self, workdir, primary_port=None, standby_port=None, s3_port=None, bucket=DEFAULT_BUCKET, pg_bindir=None,
                 with_standby=True, timeout=DEFAULT_TIMEOUT, barman_server=None):
        self.workdir = os.path.abspath(workdir)
        self._barman_server = barman_server
        self.timeout = float(timeout)
        self._pg_bindir = pg_bindir
        self._bindir = None
        self._server_user = None
        self._lock_fd = None
        self._lock_depth = 0
        requested = {"primary": primary_port, "standby": standby_port, "s3": s3_port}
        state = read_json(self.state_file)
        if state:
            self._load_state(state, requested, bucket)
        else:
            self._new_state(requested, bucket, with_standby)

    # -- construction -------------------------------------------------------------------------------------------

    def _new_state(self, requested, bucket, with_standby):
        self.password = secrets.token_urlsafe(24)
        self.bucket = bucket
        self.socket_dir = _socket_dir_for(self.workdir)
        components = ["primary", "standby", "s3"] if with_standby else ["primary", "s3"]
        ports = {}
        for name in components:
            port = requested[name] or _env_port(name)
            ports[name] = int(port) if port else None
        given = [p for p in ports.values() if p]
        if len(given) != len(set(given)):
            raise SandboxError("the sandbox ports must differ, got %s" % ", ".join("%s=%s" % item for item in ports.items() if item[1]))
        taken = set(given)
        for name in components:
            if not ports[name]:
                ports[name] = free_port(exclude=taken)
                taken.add(ports[name])
        self.primary = Node(self, "primary", ports["primary"], os.path.join(self.workdir, "primary"))
        self.standby = Node(self, "standby", ports["standby"], os.path.join(self.workdir, "standby")) if with_standby else None
        self.s3 = S3Endpoint(ports["s3"], bucket)
        self._s3_pid = None

    def _load_state(self, state, requested, bucket):
        if state.get("version") != STATE_VERSION:
            raise SandboxError("%s has state version %r, expected %d; use a fresh work directory" % (self.state_file, state.get("version"), STATE_VERSION))
        self.password = state["password"]
        self.bucket = bucket if bucket != DEFAULT_BUCKET else state.get("bucket", DEFAULT_BUCKET)
        self.socket_dir = state["socket_dir"]
        nodes = state["nodes"]
        self.primary = Node(self, "primary", nodes["primary"]["port"], nodes["primary"]["datadir"])
        self.standby = Node(self, "standby", nodes["standby"]["port"], nodes["standby"]["datadir"]) if "standby" in nodes else None
        for node in self.nodes:
            wanted = requested[node.name]
            if wanted and int(wanted) != node.port:
                if node.is_initialised():
                    raise SandboxError("%s in %s already uses port %d (asked for %s); omit the port or use another work directory"
                                       % (node.name, self.workdir, node.port, wanted))
                node.port = int(wanted)
        self._s3_pid = state["s3"].get("pid")
        s3_port = state["s3"]["port"]
        if requested["s3"] and int(requested["s3"]) != s3_port:
            if is_moto(self._s3_pid, s3_port):
                raise SandboxError("the S3 server of %s runs on port %d (asked for %s); run down first" % (self.workdir, s3_port, requested["s3"]))
            s3_port = int(requested["s3"])
        self.s3 = S3Endpoint(s3_port, self.bucket)

    # -- paths and helpers --------------------------------------------------------------------------------------

    @property
    def state_file(self):
        """Path of the state file (JSON, mode 0600, contains the password)."""
        return os.path.join(self.workdir, "state.json")

    @property
    def passfile(self):
        """Path of the libpq passfile for clients (mode 0600)."""
        return os.path.join(self.workdir, "pgpass")

    @property
    def server_passfile(self):
        """Path of the passfile the server user reads (pg_basebackup, the standby's primary_conninfo)."""
        return os.path.join(self.workdir, "server.pgpass")

    @property
    def archive_dir(self):
        """Directory that archive_command copies WAL segments into."""
        return os.path.join(self.workdir, "wal_archive")

    @property
    def archive_script(self):
        """The primary's archive_command script (see barman.py)."""
        return os.path.join(self.workdir, "archive-wal.sh")

    @property
    def barman_env_file(self):
        """Settings of the barman-cloud-wal-archive step of archive_command; absent = WAL stays local."""
        return os.path.join(self.workdir, "barman.env")

    @property
    def walg_env_file(self):
        """Settings of the wal-g wal-push step of archive_command (mode 0600); absent = wal-g not found, step skipped."""
        return os.path.join(self.workdir, "walg.env")

    @property
    def moto_log(self):
        """Log file of the S3 server."""
        return os.path.join(self.workdir, "moto.log")

    @property
    def nodes(self):
        """The PostgreSQL nodes: [primary] or [primary, standby]."""
        return [n for n in (self.primary, self.standby) if n is not None]

    @property
    def with_standby(self):
        """True when this sandbox has a standby."""
        return self.standby is not None

    @property
    def bindir(self):
        """Directory of the PostgreSQL server programs (looked up on first use; SandboxError when missing)."""
        if self._bindir is None:
            self._bindir = find_bindir(self._pg_bindir)
        return self._bindir

    @property
    def server_user(self):
        """The ServerUser that runs PostgreSQL (``postgres`` via runuser when we are root)."""
        if self._server_user is None:
            self._server_user = ServerUser()
        return self._server_user

    def node(self, name):
        """Return the Node called ``name`` ("primary" or "standby"); SandboxError for anything else."""
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise SandboxError("no node called %r in this sandbox (nodes: %s)" % (name, known))

    @contextlib.contextmanager
    def _locked(self):
        """Hold an exclusive lock on the work directory (re-entrant within this object)."""
        if self._lock_depth == 0:
            os.makedirs(self.workdir, exist_ok=True)
            fd = os.open(os.path.join(self.workdir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_fd = fd
        self._lock_depth += 1
        try:
            yield
        finally:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                os.close(self._lock_fd)
                self._lock_fd = None

    def _save_state(self):
        state = {
            "version": STATE_VERSION,
            "workdir": self.workdir,
            "password": self.password,
            "bucket": self.bucket,
            "socket_dir": self.socket_dir,
            "passfile": self.passfile,
            "archive_dir": self.archive_dir,
            "nodes": {n.name: {"port": n.port, "datadir": n.datadir, "pid": n.pid()} for n in self.nodes},
            "s3": {"port": self.s3.port, "pid": self._s3_pid, "endpoint_url": self.s3.endpoint_url, "bucket": self.bucket},
        }
        os.makedirs(self.workdir, exist_ok=True)
        write_private_file(self.state_file, json.dumps(state, indent=2) + "\n", 0o600)

    # -- bringing things up -------------------------------------------------------------------------------------

    def up(self):
        """Start whatever is not running yet and return status() with an "action" per component.

        Idempotent: a missing data directory is created (initdb / pg_basebackup), a stopped node is started, a
        running one is left alone; the same for the S3 server. Actions are "created", "started" or "already running".
        Raises SandboxError when a component cannot be brought up.
        """
        actions = {}
        with self._locked():
            self._prepare()
            # S3 first: archive_command pushes to it (wal-g) from the first segment on.
            actions["s3"] = self._ensure_s3()
            actions["primary"] = self._ensure_primary()
            if self.standby is not None:
                actions["standby"] = self._ensure_standby()
            if self._barman_server:
                barman.configure(self, self._barman_server)
            self._save_state()
        status = self.status()
        for name, action in actions.items():
            status[name]["action"] = action
        return status

    def _prepare(self):
        """Create the work directory, archive and socket directories and the passfiles; save the state first."""
        server = self.server_user
        LOG.debug("PostgreSQL programs in %s", self.bindir)  # fail early, before creating anything, when they are missing
        os.makedirs(self.workdir, exist_ok=True)
        server.ensure_traversable(self.workdir)
        self._save_state()  # the password must be on disk before initdb uses it
        server.make_dir(self.archive_dir, 0o750)
        barman.write_archive_script(self)
        walg.configure(self)
        self._make_socket_dir()
        self._write_passfiles()

    def _make_socket_dir(self):
        server = self.server_user
        if not self.socket_dir.startswith(self.workdir + os.sep) and os.path.lexists(self.socket_dir):
            info = os.lstat(self.socket_dir)
            if os.path.islink(self.socket_dir) or info.st_uid not in (server.uid, os.geteuid()):
                raise SandboxError("socket directory %s exists but is not owned by %s; remove it" % (self.socket_dir, server.name))
        server.make_dir(self.socket_dir, 0o700)
        server.ensure_traversable(self.socket_dir)

    def _write_passfiles(self):
        lines = ["%s:%d:*:%s:%s" % (host, node.port, SUPERUSER, _pgpass_escape(self.password))
                 for node in self.nodes for host in (LOOPBACK, "localhost")]
        text = "\n".join(lines) + "\n"
        write_private_file(self.passfile, text, 0o600)
        self.server_user.write_file(self.server_passfile, text, 0o600)

    def _ensure_primary(self):
        node = self.primary
        created = False
        if not node.is_initialised():
            self._initdb(node)
            created = True
        started = node.start()
        return "created" if created else "started" if started else "already running"

    def _ensure_standby(self):
        node = self.standby
        created = False
        if not node.is_initialised():
            if not self.primary.is_running():
                raise SandboxError("cannot create the standby: the primary is not running")
            self._basebackup(node, self.primary)
            created = True
        started = node.start()
        if (created or started) and node.in_recovery():
            node.wait_streaming(upstream=self.primary)
        return "created" if created else "started" if started else "already running"

    def _ensure_s3(self):
        action = "already running"
        if not is_moto(self._s3_pid, self.s3.port):
            self._s3_pid = start_moto(self.s3.port, self.moto_log, self.workdir, self.timeout)
            self._save_state()
            action = "started"
        self.s3.ensure_bucket()
        return action

    @staticmethod
    def _require_empty(path):
        if os.path.isdir(path) and os.listdir(path):
            raise SandboxError("%s exists but is not a complete sandbox data directory (PG_VERSION or pgops_sandbox.conf missing); "
                               "remove it and run up again" % path)

    def _initdb(self, node):
        """Create ``node``'s data directory with initdb (superuser postgres, random password) and configure it."""
        server = self.server_user
        self._require_empty(node.datadir)
        server.make_dir(node.datadir, 0o700)
        pwfile = os.path.join(self.workdir, ".initdb-pwfile")
        server.write_file(pwfile, self.password + "\n", 0o600)
        LOG.info("initdb %s in %s (server user %s)", node.name, node.datadir, server.describe())
        try:
            server.run_as_server([program(self.bindir, "initdb"), "-D", node.datadir, "-U", SUPERUSER, "--auth-local=trust",
                                  "--auth-host=scram-sha-256", "--pwfile=" + pwfile, "--encoding=UTF8", "--no-locale"],
                                 timeout=max(self.timeout, 120.0))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(pwfile)
        server.write_file(os.path.join(node.datadir, "pg_hba.conf"), PG_HBA, 0o600)
        node.write_config()
        walg.start_generation(self, node)

    def _basebackup(self, node, source):
        """Create ``node`` as a streaming standby of ``source`` with pg_basebackup -R -X stream."""
        server = self.server_user
        self._require_empty(node.datadir)
        server.make_dir(node.datadir, 0o700)
        # passfile= (not a password) ends up in primary_conninfo, written by -R from this connection string.
        params = (("host", LOOPBACK), ("port", source.port), ("user", SUPERUSER), ("passfile", self.server_passfile), ("application_name", node.name))
        conninfo = " ".join("%s=%s" % (key, conninfo_value(value)) for key, value in params)
        LOG.info("pg_basebackup %s from %s (port %d)", node.name, source.name, source.port)
        server.run_as_server([program(self.bindir, "pg_basebackup"), "-d", conninfo, "-D", node.datadir, "-R", "-X", "stream", "-c",
                              "fast", "-w"], timeout=max(self.timeout, 300.0))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node.log_file)  # the copy is the source's log
        self._check_recovery_config(node)
        node.write_config()

    def _check_recovery_config(self, node):
        """Make sure pg_basebackup -R wrote a primary_conninfo that authenticates through the passfile, not a password."""
        path = os.path.join(node.datadir, "postgresql.auto.conf")
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        conninfo = [line for line in text.splitlines() if line.startswith("primary_conninfo")]
        if not conninfo:
            raise SandboxError("pg_basebackup -R wrote no primary_conninfo into %s" % path)
        if "password=" in conninfo[-1]:
            raise SandboxError("pg_basebackup -R put a password into %s; is $PGPASSWORD set for the server user?" % path)
        if "passfile=" not in conninfo[-1]:
            raise SandboxError("primary_conninfo in %s has no passfile=; the standby could not authenticate" % path)

    # -- stopping -----------------------------------------------------------------------------------------------

    def down(self):
        """Stop everything this sandbox started; remove no files.

        PostgreSQL nodes get ``pg_ctl stop -m fast`` (immediate if that fails), the S3 server SIGTERM then SIGKILL,
        after checking that its PID really is a moto server. Returns {component: "stopped" | "not running"}.
        """
        result = {}
        if not os.path.isdir(self.workdir):
            return {name: "not running" for name in [n.name for n in self.nodes] + ["s3"]}
        with self._locked():
            for node in reversed(self.nodes):
                result[node.name] = "stopped" if self._stop_quietly(node) else "not running"
            result["s3"] = "stopped" if stop_moto(self._s3_pid, self.s3.port) else "not running"
            self._s3_pid = None
            if os.path.exists(self.state_file):
                self._save_state()
            self._remove_outside_socket_dir()
        return result

    def _remove_outside_socket_dir(self):
        """Remove the fallback socket directory under /tmp once the servers are down (only when it is empty)."""
        if self.socket_dir.startswith(self.workdir + os.sep) or any(n.is_running() for n in self.nodes):
            return
        with contextlib.suppress(OSError):
            os.rmdir(self.socket_dir)

    def _stop_quietly(self, node):
        try:
            return node.stop("fast")
        except SandboxError as exc:
            LOG.warning("fast shutdown of %s failed (%s); trying immediate", node.name, exc)
            return node.stop("immediate")

    # -- reporting ----------------------------------------------------------------------------------------------

    def status(self):
        """Return {"primary": {...}, "standby": {...}, "s3": {...}, ...}; each component has running, pid and port.

        Nodes also report datadir, initialised, dsn (no password) and in_recovery (None when not running);
        s3 reports endpoint_url and bucket. "running" at the top level is True when every component runs.
        """
        status = {"workdir": self.workdir, "passfile": self.passfile, "archive_dir": self.archive_dir}
        for node in self.nodes:
            status[node.name] = self._node_status(node)
        s3_running = is_moto(self._s3_pid, self.s3.port)
        status["s3"] = {"running": s3_running, "pid": self._s3_pid if s3_running else None, "port": self.s3.port,
                        "endpoint_url": self.s3.endpoint_url, "bucket": self.bucket}
        status["running"] = all(status[name]["running"] for name in [n.name for n in self.nodes] + ["s3"])
        status["walg"] = walg.status(self)
        return status

    @staticmethod
    def _node_status(node):
        pid = node.pid()
        info = {"running": pid is not None, "pid": pid, "port": node.port, "host": node.host, "datadir": node.datadir,
                "initialised": node.is_initialised(), "dsn": node.conninfo(), "in_recovery": None}
        if pid is not None:
            with contextlib.suppress(Exception):
                info["in_recovery"] = node.in_recovery()
        return info

    def env(self, node="primary"):
        """Return the environment variables (str -> str) that point libpq at ``node``, AWS tools at the S3 endpoint and,
        when wal-g is on, wal-g at ``node``'s prefix (WALG_S3_PREFIX, AWS_ENDPOINT, AWS_S3_FORCE_PATH_STYLE)."""
        target = self.node(node)
        return dict(walg.client_environment(self, target), **{
            "PGHOST": target.host,
            "PGPORT": str(target.port),
            "PGUSER": SUPERUSER,
            "PGDATABASE": "postgres",
            "PGPASSFILE": self.passfile,
            "AWS_ENDPOINT_URL": self.s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "AWS_REGION": self.s3.region,
            "AWS_DEFAULT_REGION": self.s3.region,
            "PGOPS_SANDBOX_BUCKET": self.bucket,
        })

    # -- failure drills -----------------------------------------------------------------------------------------

    def stop_node(self, name, mode="fast"):
        """Stop node ``name`` with pg_ctl stop -m ``mode`` (smart, fast, immediate = simulated crash). True if it ran."""
        with self._locked():
            stopped = self.node(name).stop(mode)
            self._save_state()
        return stopped

    def start_node(self, name):
        """Start node ``name`` (pg_ctl start -w) and wait until it accepts connections. True if it was stopped before."""
        with self._locked():
            started = self.node(name).start()
            self._save_state()
        return started

    def promote(self, name="standby", wait=True):
        """Promote node ``name`` (pg_ctl promote); with ``wait``, until pg_is_in_recovery() is false. Returns the Node.

        The other node keeps running (split brain, left to the caller) and names are not swapped. A standby promoted
        here starts a wal-g generation of its own first (see walg.py), so its WAL never lands in another's prefix.
        """
        with self._locked():
            node = self.node(name)
            if node.is_running() and node.in_recovery():
                walg.start_generation(self, node)
            return node.promote(wait=wait)

    # -- wal-g and barman-cloud ---------------------------------------------------------------------------------

    def walg_settings(self, node="primary"):
        """dict(prefix, walg_bin, endpoint_url, access_key, secret_key, region) of node ``node``'s wal-g storage.

        Raises SandboxError when wal-g is off (not found) or the node has no generation (see walg.settings).
        """
        return walg.settings(self, self.node(node))

    def barman_server(self, name):
        """Ship the primary's WAL to barman server ``name`` (None: stop shipping) from the next segment on.

        Returns barman_settings(). Raises SandboxError when barman-cloud-wal-archive is missing.
        """
        return barman.configure(self, name)

    def barman_settings(self, server_name=None):
        """dict(destination_path, server_name, endpoint_url, access_key, secret_key, region) of a barman server."""
        return barman.settings(self, server_name)

    def barman_backup(self, server_name=None, name=None, node="primary"):
        """Take a base backup of ``node`` with barman-cloud-backup; returns its backup ID (see barman.backup)."""
        return barman.backup(self, server_name, name, self.node(node))

    def barman_wait_archived(self, timeout=None, node="primary"):
        """Switch WAL segment on ``node`` and wait until it is archived (and shipped); returns its name."""
        return barman.wait_archived(self, timeout, self.node(node))

    def wait_for_replay(self, source="primary", timeout=None):
        """Wait until the standby has replayed all WAL that node ``source`` has written so far.

        :param timeout: seconds (default: the sandbox timeout).
        :raises SandboxError: when it has not within ``timeout``.
        """
        target = self.node(source).execute("SELECT pg_current_wal_lsn()::text")[0][0]
        wait_for(lambda: self.standby.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])[0][0],
                 "the standby to replay WAL up to %s" % target, timeout=timeout or self.timeout)

    def rebuild_standby(self, source="primary"):
        """Re-create the standby from node ``source``: stop it, delete only its data directory, pg_basebackup, start.

        Waits (up to the sandbox timeout, seconds) until it streams from ``source``. Returns the standby Node.
        Raises SandboxError when there is no standby or ``source`` is the standby itself or not running.
        """
        with self._locked():
            if self.standby is None:
                raise SandboxError("this sandbox was created without a standby")
            src = self.node(source)
            if src is self.standby:
                raise SandboxError("cannot rebuild the standby from itself; use source='primary'")
            if not src.is_running():
                raise SandboxError("cannot rebuild the standby: its source %s is not running" % src.name)
            self._prepare()
            self._stop_quietly(self.standby)
            self._remove_datadir(self.standby)
            self.retire_abandoned_timelines(src)
            self._basebackup(self.standby, src)
            self.standby.start()
            self.standby.wait_streaming(upstream=src)
            self._save_state()
        return self.standby

    def retire_abandoned_timelines(self, source):
        """Move the archived WAL and history files of timelines above ``source``'s aside (``.superseded-<time>``).

        A standby that was promoted and is now rebuilt from the old primary leaves its timeline in the archive.
        PostgreSQL's recovery_target_timeline = 'latest' would then follow that timeline, which forked before any
        later base backup ("requested timeline N is not a child of this server's history"). A real archive gives
        each cluster generation its own location; the sandbox keeps one directory and retires the dead branch.
        Returns the names moved.
        """
        current = int(source.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0][:8], 16)
        stamp = int(time.time())
        moved = []
        for name in sorted(os.listdir(self.archive_dir)):
            head = name[:8]
            if len(name) < 8 or ".superseded" in name or not all(c in "0123456789ABCDEF" for c in head):
                continue
            if int(head, 16) > current:
                os.rename(os.path.join(self.archive_dir, name), os.path.join(self.archive_dir, "%s.superseded-%d" % (name, stamp)))
                moved.append(name)
        if moved:
            LOG.info("retired %d archived file(s) of abandoned timelines above %d: %s ...", len(moved), current, moved[0])
        return moved

    def _remove_datadir(self, node):
        expected = os.path.join(self.workdir, node.name)
        if os.path.abspath(node.datadir) != expected:
            raise SandboxError("refusing to delete %s: not the sandbox data directory %s" % (node.datadir, expected))
        if node.is_running():
            raise SandboxError("refusing to delete %s: %s is still running" % (node.datadir, node.name))
        LOG.info("removing data directory %s", node.datadir)
        shutil.rmtree(node.datadir, ignore_errors=False)

    # -- context manager ----------------------------------------------------------------------------------------

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc_info):
        self.down()
