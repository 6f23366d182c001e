"""The S3 API endpoint of the sandbox: a moto server process on 127.0.0.1."""

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ansible_collections.pgops.resilience.plugins.module_utils._pg.postmaster import pid_alive
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import Bucket
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import read_tail

from ._util import LOOPBACK, port_in_use, proc_cmdline, wait_for
from .errors import SandboxError

LOG = logging.getLogger(__name__)

ACCESS_KEY = "pgops-sandbox"
SECRET_KEY = "pgops-sandbox-secret"  # moto accepts any credentials; these are throwaway and may be shown
REGION = "us-east-1"

# Servers started by this Python process, by PID, so they can be reaped (no zombies, no ResourceWarning).
_CHILDREN = {}


class S3Endpoint:
    """Where and how to reach the sandbox's S3 API: endpoint_url, bucket, access_key, secret_key, region, port."""

    access_key = ACCESS_KEY
    secret_key = SECRET_KEY
    region = REGION
    host = LOOPBACK

    def __init__(self, port, bucket):
        self.port = int(port)
        self.bucket = bucket

    def __repr__(self):
        return "<S3Endpoint %s bucket=%s>" % (self.endpoint_url, self.bucket)

    @property
    def endpoint_url(self):
        """The HTTP endpoint, e.g. http://127.0.0.1:5000."""
        return "http://%s:%d" % (self.host, self.port)

    def client(self):
        """Return a boto3 S3 client for this endpoint (path-style addressing, region us-east-1, no proxies)."""
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel

        config = Config(s3={"addressing_style": "path"}, proxies={}, retries={"max_attempts": 3})
        session = boto3.session.Session(aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region)
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def bucket_objects(self):
        """The collection's :class:`Bucket` over this endpoint's bucket: its one ``ListObjectsV2`` paginator, deletions
        in batches, JSON documents."""
        return Bucket(self.client(), self.bucket, self.endpoint_url)

    def objects(self, prefix):
        """{key: size in bytes} of every object under ``prefix`` in the bucket (all pages)."""
        return dict((o["key"], o["size"]) for o in self.bucket_objects().iter_objects(prefix))

    def ensure_bucket(self):
        """Create the bucket unless it exists. Returns True when it was created."""
        from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel

        client = self.client()
        try:
            client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise SandboxError("cannot check bucket %s at %s: %s" % (self.bucket, self.endpoint_url, exc)) from exc
        client.create_bucket(Bucket=self.bucket)
        LOG.info("created bucket %s", self.bucket)
        return True


def is_moto(pid, port):
    """Return True when ``pid`` is alive and its command line is a moto server on ``port``."""
    if not pid or not pid_alive(pid):
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    args = proc_cmdline(pid)
    return "moto.server" in args and str(port) in args


def _http_answers(port):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open("http://%s:%d/" % (LOOPBACK, port), timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


def start_moto(port, log_path, cwd, timeout):
    """Start ``python -m moto.server -H 127.0.0.1 -p port`` in its own session; return its PID once HTTP answers.

    Output goes to ``log_path`` (appended). ``timeout`` is in seconds. Raises SandboxError when moto is not
    installed for this Python, the port is taken, or the server does not answer in time (with the log tail).
    """
    if importlib.util.find_spec("moto") is None:
        raise SandboxError("moto is not importable by %s; install it with `%s -m pip install 'moto[server]'`" % (sys.executable, sys.executable))
    if port_in_use(port):
        raise SandboxError("cannot start the S3 server: 127.0.0.1:%d is already in use" % port)
    cmd = [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)]
    LOG.info("starting moto S3 server on 127.0.0.1:%d", port)
    # A daemon that outlives this process, its output in a log file: not the collection's program runner, whose
    # stderr pipe would break (and stop moto) when the sandbox command exits.
    with open(log_path, "ab") as log:
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,  # pylint: disable=consider-using-with
                                 cwd=cwd, start_new_session=True)
    _CHILDREN[child.pid] = child

    def ready():
        if child.poll() is not None:
            raise SandboxError("moto server exited with code %s:\n%s" % (child.returncode, read_tail(log_path)))
        return _http_answers(port)

    try:
        wait_for(ready, "the moto S3 server to answer on 127.0.0.1:%d" % port, timeout)
    except SandboxError as exc:
        stop_moto(child.pid, port)
        raise SandboxError("%s\n--- last lines of %s ---\n%s" % (exc, log_path, read_tail(log_path))) from exc
    return child.pid


def stop_moto(pid, port, timeout=10.0):
    """Stop the moto server ``pid`` (SIGTERM, then SIGKILL after ``timeout`` seconds).

    Only a process whose /proc/PID/cmdline is a moto server on ``port`` is signalled. Returns True when it was stopped.
    """
    if not is_moto(pid, port):
        _reap(pid)
        return False
    LOG.info("stopping moto S3 server (pid %d)", pid)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(pid)
            if not pid_alive(pid):
                _CHILDREN.pop(pid, None)
                return True
            time.sleep(0.1)
    _reap(pid)
    if pid_alive(pid):
        raise SandboxError("moto server pid %d did not stop after SIGTERM and SIGKILL" % pid)
    _CHILDREN.pop(pid, None)
    return True


def _reap(pid):
    child = _CHILDREN.get(pid)
    if child is not None:
        child.poll()
