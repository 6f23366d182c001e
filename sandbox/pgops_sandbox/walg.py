"""wal-g in the sandbox: the primary also ships its WAL with ``wal-g wal-push`` to ``s3://<bucket>/walg/<generation>``.

The primary's ``archive_command`` (``archive-wal.sh``, see barman.py) copies each segment into ``wal_archive/``,
then, when ``walg.env`` exists, runs ``wal-g wal-push %p`` as the server user, then barman-cloud-wal-archive when
``barman.env`` exists. ``walg.env`` (mode 0600, owned by the server user) holds wal-g's settings: the storage, the S3
endpoint and credentials. They reach wal-g through its environment, never its command line (visible to every user
of the host). A failing or hanging wal-push (bounded by ``timeout``) fails archive_command, so PostgreSQL keeps the
segment in ``pg_wal`` and retries it: no WAL is lost.

Cluster generations. Each data directory holds ``pgops_walg_generation``, the name of the WAL history it writes:
initdb starts one, a promotion through :meth:`Sandbox.promote` starts one, and pg_basebackup copies the primary's
into a new standby (a standby does not archive; it continues the primary's history until promoted). The name is
the UTC time it started and the node, such as ``20261208T101530Z-standby``. Each generation is its own prefix, so a
standby rebuilt from the old primary and promoted again (which reuses the timeline number of the previous
promotion) never writes into the storage of the earlier one; ``WALG_PREVENT_WAL_OVERWRITE`` would make such a
collision fail archive_command loudly instead of replacing a segment. archive_command runs in the data directory
(PostgreSQL documentation, "Setting Up WAL Archiving": %p is relative to it), which is how the script finds the
node's generation.

wal-g is looked up in ``$PGOPS_WALG_BIN``, the repository's ``.build/walg/wal-g`` (``make setup`` puts it where
the server user can run it), then PATH. Without it the sandbox skips the wal-g steps and says so in its status.
"""

import contextlib
import logging
import os
import shlex
import shutil
import time

from .barman import wait_archived
from .errors import SandboxError
from .node import GENERATION_FILE

LOG = logging.getLogger(__name__)

WALG_BIN_ENV = "PGOPS_WALG_BIN"
WALG_PREFIX = "walg"
"""Every generation's storage lives under ``s3://<bucket>/walg/``."""
PUSH_TIMEOUT = 120
"""Seconds one wal-push may take in archive_command: wal-g retries an unreachable storage instead of exiting."""
INSTALL_HINT = "run `make walg` (hacking/install-walg.sh provides wal-g 3.0.9 in .build/walg, where the server user can run it)"
NOT_FOUND = "wal-g not found ($%s, .build/walg/wal-g, PATH): the wal-g steps are skipped" % WALG_BIN_ENV


def _repo_walg():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".build", "walg", "wal-g")


def find_walg():
    """Return the path of wal-g (``$PGOPS_WALG_BIN``, then ``.build/walg/wal-g``, then PATH), or None when absent."""
    for path in (os.environ.get(WALG_BIN_ENV), _repo_walg()):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("wal-g")


def configure(sandbox):
    """Make the primary's archive_command ship WAL with wal-g when wal-g is present; remove ``walg.env`` when not.

    Writes ``walg.env`` (0600, server user) and gives every initialised data directory without one a generation.
    Returns the wal-g path, or None when wal-g is absent (the steps are skipped). Raises SandboxError when wal-g is
    present but the server user cannot run it (archive_command runs as that user).
    """
    program = find_walg()
    if program is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sandbox.walg_env_file)
        LOG.info("%s", NOT_FOUND)
        return None
    sandbox.server_user.require_runs(program, INSTALL_HINT)
    values = {
        "WALG_BIN": program,
        "WALG_PREFIX_BASE": base_prefix(sandbox),
        "WALG_PUSH_TIMEOUT": str(PUSH_TIMEOUT),
        # A segment already in the storage with other content is an error, never replaced (the same content is fine:
        # a retry after a push whose success PostgreSQL did not hear about).
        "WALG_PREVENT_WAL_OVERWRITE": "true",
        "AWS_ENDPOINT": sandbox.s3.endpoint_url,
        "AWS_S3_FORCE_PATH_STYLE": "true",
        "AWS_REGION": sandbox.s3.region,
        "AWS_ACCESS_KEY_ID": sandbox.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": sandbox.s3.secret_key,
    }
    sandbox.server_user.write_env_file(sandbox.walg_env_file, values)
    for node in sandbox.nodes:
        if node.is_initialised() and generation(node) is None:
            start_generation(sandbox, node)
    return program


def enabled(sandbox):
    """True when archive_command ships WAL with wal-g (``walg.env`` exists)."""
    return os.path.exists(sandbox.walg_env_file)


def base_prefix(sandbox):
    """``s3://<bucket>/walg``: where every generation's prefix lives."""
    return "s3://%s/%s" % (sandbox.bucket, WALG_PREFIX)


def generation(node):
    """The generation ``node``'s data directory writes (str), or None when it has none yet."""
    try:
        with open(os.path.join(node.datadir, GENERATION_FILE), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def start_generation(sandbox, node):
    """Give ``node`` a new generation, ``<UTC time>-<node name>``, from its next archived file on. Returns its name.

    Call it before the node writes a history of its own (after initdb, before a promotion). A name that a node has
    now or that already holds objects in S3 is never reused: this waits for the next second instead.
    """
    while True:
        name = "%s-%s" % (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), node.name)
        if name not in [generation(n) for n in sandbox.nodes] and not _prefix_used(sandbox, name):
            break
        time.sleep(0.2)
    sandbox.server_user.write_file(os.path.join(node.datadir, GENERATION_FILE), name + "\n", 0o600)
    LOG.info("%s starts wal-g generation %s", node.name, name)
    return name


def _prefix_used(sandbox, name):
    """True when ``walg/<name>/`` holds an object in the sandbox's S3 (False when S3 does not answer: not started yet)."""
    try:
        return bool(sandbox.s3.client().list_objects_v2(Bucket=sandbox.bucket, Prefix="%s/%s/" % (WALG_PREFIX, name), MaxKeys=1).get("KeyCount"))
    except Exception:  # pylint: disable=broad-except  # no server or no bucket yet: nothing can be in it
        return False


def prefix(sandbox, node):
    """``s3://<bucket>/walg/<generation>`` of ``node`` (a Node), or None when it has no generation."""
    name = generation(node)
    return "%s/%s" % (base_prefix(sandbox), name) if name else None


def _writing_node(sandbox):
    """The node whose WAL is archived now: the first running node out of recovery, else the primary."""
    for node in sandbox.nodes:
        with contextlib.suppress(Exception):
            if node.is_running() and not node.in_recovery():
                return node
    return sandbox.primary


def status(sandbox):
    """dict(enabled, walg_bin, env_file, node, prefix, generations, skipped) for status(); no secrets.

    ``node``/``prefix``: the node archiving now (out of recovery) and its prefix; ``generations``: {node name:
    generation or None}; ``skipped``: why the wal-g steps do not run (None when they do).
    """
    on = enabled(sandbox)
    writing = _writing_node(sandbox)
    info = {"enabled": on, "walg_bin": read_setting(sandbox, "WALG_BIN") if on else None,
            "env_file": sandbox.walg_env_file if on else None, "node": writing.name, "prefix": prefix(sandbox, writing),
            "generations": {node.name: generation(node) for node in sandbox.nodes}, "skipped": None}
    if not on:
        info["skipped"] = NOT_FOUND if find_walg() is None else "wal-g is present but not configured yet: run up"
    return info


def read_setting(sandbox, name):
    """The value of ``name`` in ``walg.env`` (str), or None."""
    try:
        with open(sandbox.walg_env_file, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(name + "="):
                    return shlex.split(line.split("=", 1)[1])[0]
    except FileNotFoundError:
        return None
    return None


def client_environment(sandbox, node):
    """The wal-g variables for a shell pointed at ``node`` (``env``): WALG_S3_PREFIX, AWS_ENDPOINT and path-style
    addressing, so that ``wal-g backup-list`` reads that node's storage. Empty when wal-g is off."""
    where = prefix(sandbox, node)
    if not enabled(sandbox) or where is None:
        return {}
    return {"WALG_S3_PREFIX": where, "AWS_ENDPOINT": sandbox.s3.endpoint_url, "AWS_S3_FORCE_PATH_STYLE": "true"}


def settings(sandbox, node):
    """dict(prefix, walg_bin, endpoint_url, access_key, secret_key, region) of ``node``'s wal-g storage, for the
    collection's wal-g modules and playbooks. Raises SandboxError when wal-g is off or the node has no generation."""
    if not enabled(sandbox):
        raise SandboxError(status(sandbox)["skipped"])
    where = prefix(sandbox, node)
    if where is None:
        raise SandboxError("%s has no wal-g generation (%s); run up" % (node.name, os.path.join(node.datadir, GENERATION_FILE)))
    return {"prefix": where, "walg_bin": read_setting(sandbox, "WALG_BIN"), "endpoint_url": sandbox.s3.endpoint_url,
            "access_key": sandbox.s3.access_key, "secret_key": sandbox.s3.secret_key, "region": sandbox.s3.region}


def wait_pushed(sandbox, node, timeout=None):
    """Complete ``node``'s current WAL segment and wait until archive_command has succeeded for it, which with wal-g
    on means wal-push stored it. Writes a WAL record first, so the switch always completes a segment. Returns the
    segment name; raises SandboxError on timeout (``timeout`` seconds, default the sandbox's)."""
    node.execute("SELECT pg_logical_emit_message(false, 'pgops_sandbox', 'segment switch')")
    return wait_archived(sandbox, timeout, node)
