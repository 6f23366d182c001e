"""Embedded sandbox for pgops.resilience: PostgreSQL primary + streaming hot standby + S3 endpoint (moto) on 127.0.0.1.

Usage::

    from pgops_sandbox import Sandbox
    sb = Sandbox("/tmp/sbx")
    sb.up()
    sb.primary.execute("SELECT 1")
    sb.down()

Command line: ``python -m pgops_sandbox [--workdir DIR] {up,down,status,env,promote,rebuild-standby}``.
"""

from . import _collection  # noqa: F401  (first: the modules below import the collection's helpers)
from ._util import DEFAULT_TIMEOUT
from .errors import SandboxError
from .node import Node
from .s3 import S3Endpoint
from .sandbox import DEFAULT_BUCKET, Sandbox

__all__ = ["DEFAULT_BUCKET", "DEFAULT_TIMEOUT", "Node", "S3Endpoint", "Sandbox", "SandboxError"]
__version__ = "0.1.0"
