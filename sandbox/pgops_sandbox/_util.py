"""Small helpers shared by the sandbox modules: ports, waiting, quoting, files and processes.

Ports, process liveness, log tails and atomic writes are the collection's own helpers (``_pg.server.free_port``,
``_pg.postmaster.pid_alive``, ``_pg.server.read_tail``, ``_core.files.write_durably``): the sandbox modules import them
from there.
"""

import json
import socket
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.files import write_durably

from .errors import SandboxError

LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 60.0
"""Default time limit for every waiting loop, in seconds."""


def port_in_use(port):
    """Return True when something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOOPBACK, port)) == 0


def wait_for(predicate, what, timeout=DEFAULT_TIMEOUT, interval=0.25):
    """Call ``predicate()`` until it returns a true value and return that value.

    ``timeout`` and ``interval`` are in seconds. Exceptions raised by the predicate count as "not yet"; the last one
    is quoted in the error. Raises SandboxError naming ``what`` was waited for when the timeout expires.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            result = predicate()
        except Exception as exc:  # pylint: disable=broad-except
            result, last_error = None, exc
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = " (last error: %s)" % str(last_error).strip() if last_error else ""
            raise SandboxError("timed out after %.0f s waiting for %s%s" % (timeout, what, detail))
        time.sleep(interval)


def shell_quote(value):
    """Quote ``value`` for a POSIX shell, always with single quotes (so quoting is visible in generated commands)."""
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def conninfo_value(value):
    """Quote ``value`` for a libpq key=value connection string when it needs quoting."""
    text = str(value)
    if text and not any(c in text for c in " '\\\t\n"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def write_private_file(path, text, mode=0o600, owner=None):
    """Atomically and durably write ``text`` to ``path`` with permission ``mode`` and ``owner`` (``(uid, gid)`` or None),
    through the collection's one atomic write: the file never exists with wider permissions or half written."""
    write_durably(path, text.encode("utf-8"), mode, owner)


def read_json(path):
    """Return the JSON document in ``path``, or None when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError("cannot read sandbox state file %s: %s" % (path, exc)) from exc


def proc_cmdline(pid):
    """Return the argument list of process ``pid`` (empty when it is gone or unreadable)."""
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as handle:
            raw = handle.read()
    except (OSError, ValueError, TypeError):
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
