"""Small helpers shared by the sandbox modules: ports, waiting, quoting, files and processes."""

import json
import os
import socket
import tempfile
import time

from .errors import SandboxError

LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 60.0
"""Default time limit for every waiting loop, in seconds."""


def free_port(exclude=()):
    """Return a TCP port (int) on 127.0.0.1 that is free right now and not in ``exclude``.

    The port is found by binding port 0; another process may still take it before the caller does.
    """
    for dummy in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise SandboxError("could not find a free TCP port on %s" % LOOPBACK)


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


def conf_quote(value):
    """Quote ``value`` as a postgresql.conf string literal."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def conninfo_value(value):
    """Quote ``value`` for a libpq key=value connection string when it needs quoting."""
    text = str(value)
    if text and not any(c in text for c in " '\\\t\n"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_tail(path, lines=40):
    """Return the last ``lines`` lines of the text file ``path``, or a note when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(cannot read %s: %s)" % (path, exc.strerror)
    return "\n".join(data.splitlines()[-lines:])


def write_private_file(path, text, mode=0o600):
    """Atomically write ``text`` to ``path`` with permission ``mode`` (the file never exists with wider permissions)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path):
    """Return the JSON document in ``path``, or None when the file does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SandboxError("cannot read sandbox state file %s: %s" % (path, exc)) from exc


def pid_alive(pid):
    """Return True when process ``pid`` exists and is not a zombie (Linux /proc based)."""
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % int(pid), encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
    except OSError:
        return False
    # The state letter follows the command name, which is in parentheses and may itself contain ')'.
    state = stat.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def proc_cmdline(pid):
    """Return the argument list of process ``pid`` (empty when it is gone or unreadable)."""
    try:
        with open("/proc/%d/cmdline" % int(pid), "rb") as handle:
            raw = handle.read()
    except (OSError, ValueError, TypeError):
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]
