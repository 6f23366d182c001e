"""barman-cloud in the sandbox: the primary's archive_command, base backups, and where the CLIs are.

The primary's ``archive_command`` is a small script in the work directory (``archive-wal.sh %p %f``). It copies
the segment into ``wal_archive/``, pushes it with ``wal-g wal-push`` when ``walg.env`` exists (see walg.py) and,
when ``barman.env`` exists, ships it with ``barman-cloud-wal-archive``
(gzip) to ``s3://<bucket>/barman/<server name>``. Writing or removing ``barman.env`` switches the shipping on,
off, or to another server name without a reload: the script reads it for every segment. Tests use a server name of
their own so that each sees a catalog of its own.

barman-cloud-wal-archive runs as the server's system user. When the sandbox is driven by root, that user cannot
reach a virtual environment under /root, so the CLIs are looked up first in ``$PGOPS_SERVER_TOOLS_BIN`` (the
Makefile points it at ``.build/server-tools/bin``, a virtual environment made with the system Python), then in the
repository's ``.build/server-tools/bin``, then on PATH.
"""

import contextlib
import logging
import os
import shlex
import shutil

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import run_program
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import read_tail, server_environment

from ._util import wait_for
from .errors import SandboxError
from .node import GENERATION_FILE

LOG = logging.getLogger(__name__)

TOOLS_ENV = "PGOPS_SERVER_TOOLS_BIN"
DEFAULT_SERVER_NAME = "pgops-sandbox"
BARMAN_PREFIX = "barman"
INSTALL_HINT = "run `make server-tools` (installs barman[cloud] into .build/server-tools)"

ARCHIVE_SCRIPT = """\
#!/bin/sh
# archive_command of the pgops sandbox (written by pgops_sandbox; rewritten by up): $1 = %p, $2 = %f.
# Each step that fails fails the script (set -e): PostgreSQL keeps the segment and retries it.
# A segment already archived with the same content is not an error (PostgreSQL retries after a failure).
# A different one is a sandbox quirk: a standby rebuilt from the old primary and promoted again reuses the
# timeline of the previous promotion. The newest generation wins; the older file is kept beside it. (A real
# archive must never do this; give each cluster generation its own archive location instead.)
set -eu
dest={archive_dir}/"$2"
if [ -f "$dest" ] && ! cmp -s "$1" "$dest"; then
  mv "$dest" "$dest.superseded-$(date +%s)"
fi
if [ ! -f "$dest" ]; then
  cp "$1" "$dest.part"
  mv "$dest.part" "$dest"
fi
if [ -f {walg_env_file} ]; then
  # wal-g wal-push into this node's generation (the current directory is the data directory), settings from the
  # environment only; its failure or time-out fails archive_command and PostgreSQL retries the segment.
  (
    . {walg_env_file}
    if [ ! -s {generation_file} ]; then
      echo "archive-wal.sh: no {generation_file} in $(pwd); run the sandbox's up" >&2
      exit 1
    fi
    WALG_S3_PREFIX="$WALG_PREFIX_BASE/$(cat {generation_file})"
    export WALG_S3_PREFIX WALG_PREVENT_WAL_OVERWRITE AWS_ENDPOINT AWS_S3_FORCE_PATH_STYLE AWS_REGION AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
    exec timeout -k 5 "$WALG_PUSH_TIMEOUT" "$WALG_BIN" wal-push "$1"
  )
fi
if [ -f {env_file} ]; then
  . {env_file}
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION
  exec "$BARMAN_WAL_ARCHIVE" --endpoint-url "$BARMAN_ENDPOINT_URL" --gzip "$BARMAN_DESTINATION" "$BARMAN_SERVER" "$1"
fi
"""


def _repo_tools_dir():
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), ".build", "server-tools", "bin")


def find_tool(name):
    """Return the path of barman-cloud program ``name`` (``$PGOPS_SERVER_TOOLS_BIN``, .build/server-tools/bin, PATH) or None."""
    for directory in (os.environ.get(TOOLS_ENV), _repo_tools_dir()):
        if directory:
            path = os.path.join(directory, name)
            if os.access(path, os.X_OK):
                return path
    return shutil.which(name)


def require_tool(name):
    """Like find_tool(), but raise SandboxError saying how to install barman-cloud when ``name`` is missing."""
    path = find_tool(name)
    if path is None:
        raise SandboxError("%s not found ($%s, .build/server-tools/bin, PATH); %s" % (name, TOOLS_ENV, INSTALL_HINT))
    return path


def write_archive_script(sandbox):
    """(Re)write the archive_command script of ``sandbox`` (owned by the server user, mode 0700)."""
    text = ARCHIVE_SCRIPT.format(archive_dir=shlex.quote(sandbox.archive_dir), env_file=shlex.quote(sandbox.barman_env_file),
                                 walg_env_file=shlex.quote(sandbox.walg_env_file), generation_file=GENERATION_FILE)
    sandbox.server_user.write_file(sandbox.archive_script, text, 0o700)


def configure(sandbox, server_name):
    """Ship the primary's WAL to barman server ``server_name`` from the next segment on; None stops the shipping.

    Checks first that the server user can run barman-cloud-wal-archive. Returns the settings dict of
    settings() (None when switched off). Raises SandboxError when the CLI is missing or unusable.
    """
    if server_name is None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sandbox.barman_env_file)
        return None
    tool = require_tool("barman-cloud-wal-archive")
    sandbox.server_user.require_runs(tool, INSTALL_HINT)
    values = {
        "BARMAN_WAL_ARCHIVE": tool,
        "BARMAN_ENDPOINT_URL": sandbox.s3.endpoint_url,
        "BARMAN_DESTINATION": destination_path(sandbox),
        "BARMAN_SERVER": server_name,
        "AWS_ACCESS_KEY_ID": sandbox.s3.access_key,
        "AWS_SECRET_ACCESS_KEY": sandbox.s3.secret_key,
        "AWS_DEFAULT_REGION": sandbox.s3.region,
    }
    sandbox.server_user.write_env_file(sandbox.barman_env_file, values)
    LOG.info("the primary ships WAL to %s/%s", destination_path(sandbox), server_name)
    return settings(sandbox)


def current_server(sandbox):
    """The barman server name WAL is shipped to now, or None."""
    try:
        with open(sandbox.barman_env_file, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("BARMAN_SERVER="):
                    return shlex.split(line.split("=", 1)[1])[0]
    except FileNotFoundError:
        return None
    return None


def destination_path(sandbox):
    """``s3://<bucket>/barman``: the destination every sandbox barman server lives under."""
    return "s3://%s/%s" % (sandbox.bucket, BARMAN_PREFIX)


def settings(sandbox, server_name=None):
    """dict(destination_path, server_name, endpoint_url, access_key, secret_key, region) for modules and CLIs."""
    return {
        "destination_path": destination_path(sandbox),
        "server_name": server_name or current_server(sandbox),
        "endpoint_url": sandbox.s3.endpoint_url,
        "access_key": sandbox.s3.access_key,
        "secret_key": sandbox.s3.secret_key,
        "region": sandbox.s3.region,
    }


def cli_environment(sandbox):
    """Environment for barman-cloud CLIs run by this process: the AWS credentials and the primary's passfile."""
    return server_environment(dict(AWS_ACCESS_KEY_ID=sandbox.s3.access_key, AWS_SECRET_ACCESS_KEY=sandbox.s3.secret_key,
                                   AWS_DEFAULT_REGION=sandbox.s3.region, PGPASSFILE=sandbox.passfile))


def wait_archived(sandbox, timeout=None, node=None):
    """Switch to a new WAL segment on ``node`` (default the primary) and wait until the one just completed is archived.

    archive_command succeeds only when barman-cloud-wal-archive did, so pg_stat_archiver tells. ``timeout`` in
    seconds (default: the sandbox's). Returns the segment name. Raises SandboxError on timeout.
    """
    primary = node or sandbox.primary
    segment = primary.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]

    def archived():
        last, failed = primary.execute("SELECT last_archived_wal, last_failed_wal FROM pg_stat_archiver")[0]
        if last is not None and len(last) == 24 and last >= segment:
            return True
        if failed is not None and failed >= segment:
            LOG.debug("archiving %s failed; PostgreSQL retries", failed)
        return False

    wait_for(archived, "WAL segment %s to be archived (server log: %s)" % (segment, primary.log_file), timeout or sandbox.timeout, 0.2)
    return segment


def backup(sandbox, server_name=None, name=None, node=None):
    """Take a base backup of ``node`` (default the primary) with the real ``barman-cloud-backup`` into ``server_name``.

    ``server_name`` defaults to the server WAL is shipped to. Waits until the WAL the backup needs is archived. Returns the new
    backup ID (str, ``YYYYMMDDTHHMMSS``). Raises SandboxError with barman's output when it fails.
    """
    server_name = server_name or current_server(sandbox)
    if not server_name:
        raise SandboxError("no barman server: call barman_server(name) first")
    before = set(backup_ids(sandbox, server_name))
    node = node or sandbox.primary
    cmd = [require_tool("barman-cloud-backup"), "--endpoint-url", sandbox.s3.endpoint_url, "-h", node.host,
           "-p", str(node.port), "-U", "postgres", "--immediate-checkpoint", "--gzip"]
    if name:
        cmd += ["--name", name]
    cmd += [destination_path(sandbox), server_name]
    try:
        run_program(cmd, cli_environment(sandbox), "barman-cloud-backup", secrets=[sandbox.s3.secret_key], timeout=600)
    except PgopsError as exc:
        raise SandboxError("%s\n--- primary log ---\n%s" % (exc.msg, read_tail(node.log_file))) from None
    wait_archived(sandbox, node=node)
    new = sorted(set(backup_ids(sandbox, server_name)) - before)
    if len(new) != 1:
        raise SandboxError("expected one new backup in %s/%s, found %s" % (destination_path(sandbox), server_name, new))
    return new[0]


def backup_ids(sandbox, server_name):
    """The backup IDs under ``barman/<server_name>/base/`` (directories only), sorted."""
    prefix = "%s/%s/base/" % (BARMAN_PREFIX, server_name)
    ids = []
    for page in sandbox.s3.bucket_objects().pages(prefix, delimiter="/"):
        ids += [entry["Prefix"][len(prefix):].rstrip("/") for entry in page.get("CommonPrefixes", ())]
    return sorted(ids)
