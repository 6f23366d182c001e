"""Command line: python -m pgops_sandbox [--workdir DIR] {up,down,status,env,promote,rebuild-standby,demo}."""

import argparse
import json
import logging
import os
import shlex
import sys

from . import DEFAULT_BUCKET, DEFAULT_TIMEOUT, Sandbox, SandboxError
from .demo import run_demo

COMMANDS = ("up", "down", "status", "env", "promote", "rebuild-standby", "demo")


def _add_common(parser, suppress):
    """Options accepted both before and after the sub-command (after it, unset options do not clobber earlier ones)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--workdir", default=default,
                        help="sandbox directory (default: $PGOPS_SANDBOX_WORKDIR or .sandbox under the current directory)")
    parser.add_argument("--primary-port", type=int, default=default, help="port of the primary (default: $PGOPS_SANDBOX_PRIMARY_PORT or a free one)")
    parser.add_argument("--standby-port", type=int, default=default, help="port of the standby (default: $PGOPS_SANDBOX_STANDBY_PORT or a free one)")
    parser.add_argument("--s3-port", type=int, default=default, help="port of the S3 server (default: $PGOPS_SANDBOX_S3_PORT or a free one)")
    parser.add_argument("--bucket", default=default, help="S3 bucket to create (default: %s)" % DEFAULT_BUCKET)
    parser.add_argument("--no-standby", action="store_true", default=default, help="create only the primary (first up only)")
    parser.add_argument("--pg-bindir", default=default, help="directory of initdb/pg_ctl/... (default: $PGOPS_PG_BINDIR, PostgreSQL 15, pg_config)")
    parser.add_argument("--timeout", type=float, default=default, help="seconds to wait for each step (default: %.0f)" % DEFAULT_TIMEOUT)
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="no progress messages on stderr")


def build_parser():
    """Return the argparse parser of the CLI."""
    parser = argparse.ArgumentParser(prog="python -m pgops_sandbox", description="PostgreSQL primary + hot standby + S3 endpoint on 127.0.0.1.")
    _add_common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{%s}" % ",".join(COMMANDS))
    helps = {
        "up": "create/start whatever is missing and print the endpoints",
        "down": "stop everything (files are kept)",
        "status": "show what is running (exit code 3 when something is not)",
        "env": "print shell export lines for libpq and AWS tools",
        "promote": "promote a node (default: the standby)",
        "rebuild-standby": "re-create the standby from a fresh pg_basebackup",
        "demo": "a real failover repaired by pgops.resilience.unlogged_check_and_restore (needs ansible-playbook)",
    }
    commands = {}
    for name in COMMANDS:
        commands[name] = sub.add_parser(name, help=helps[name], description=helps[name])
        _add_common(commands[name], suppress=True)
    commands["status"].add_argument("--json", action="store_true", help="print the status as JSON")
    commands["up"].add_argument("--json", action="store_true", help="print the status as JSON")
    commands["env"].add_argument("--node", default="primary", choices=("primary", "standby"), help="node for the PG* variables")
    commands["promote"].add_argument("--node", default="standby", choices=("primary", "standby"), help="node to promote")
    commands["rebuild-standby"].add_argument("--source", default="primary", help="node to copy from (default: primary)")
    return parser


def _sandbox(args):
    workdir = args.workdir or os.environ.get("PGOPS_SANDBOX_WORKDIR") or ".sandbox"
    return Sandbox(os.path.abspath(workdir), primary_port=args.primary_port, standby_port=args.standby_port, s3_port=args.s3_port,
                   bucket=args.bucket or DEFAULT_BUCKET, pg_bindir=args.pg_bindir, with_standby=not args.no_standby,
                   timeout=args.timeout or DEFAULT_TIMEOUT)


def format_status(status):
    """Return the human-readable status text (DSNs carry passfile=, never the password)."""
    lines = ["workdir:     %s" % status["workdir"]]
    for name in ("primary", "standby"):
        node = status.get(name)
        if node is None:
            continue
        state = "running" if node["running"] else "stopped"
        role = {True: "in recovery", False: "read-write", None: "-"}[node["in_recovery"]]
        action = "  [%s]" % node["action"] if node.get("action") else ""
        lines.append("%-12s %s, pid %s, port %d, %s%s" % (name + ":", state, node["pid"] or "-", node["port"], role, action))
        lines.append("             dsn: %s" % node["dsn"])
    s3 = status["s3"]
    action = "  [%s]" % s3["action"] if s3.get("action") else ""
    lines.append("s3:          %s, pid %s, port %d%s" % ("running" if s3["running"] else "stopped", s3["pid"] or "-", s3["port"], action))
    lines.append("             endpoint: %s  bucket: %s" % (s3["endpoint_url"], s3["bucket"]))
    lines.append("wal archive: %s" % status["archive_dir"])
    walg = status.get("walg") or {}
    if walg.get("enabled"):
        lines.append("wal-g:       %s (%s ships its WAL there with wal-push)" % (walg["prefix"], walg["node"]))
        lines.append("             settings: %s  wal-g: %s" % (walg["env_file"], walg["walg_bin"]))
    elif walg:
        lines.append("wal-g:       off, %s" % walg["skipped"])
    lines.append("passfile:    %s" % status["passfile"])
    return "\n".join(lines)


def _print_status(status, as_json):
    print(json.dumps(status, indent=2, sort_keys=True) if as_json else format_status(status))


def execute(args):
    """Execute the parsed command line; return the process exit code."""
    sandbox = _sandbox(args)
    if args.command == "up":
        _print_status(sandbox.up(), args.json)
    elif args.command == "down":
        for component, what in sandbox.down().items():
            print("%-8s %s" % (component, what))
    elif args.command == "status":
        status = sandbox.status()
        _print_status(status, args.json)
        return 0 if status["running"] else 3
    elif args.command == "env":
        for key, value in sandbox.env(node=args.node).items():
            print("export %s=%s" % (key, shlex.quote(value)))
    elif args.command == "promote":
        node = sandbox.promote(args.node)
        print("%s promoted: %s" % (node.name, node.conninfo()))
    elif args.command == "rebuild-standby":
        node = sandbox.rebuild_standby(source=args.source)
        print("standby rebuilt from %s: %s" % (args.source, node.conninfo()))
    elif args.command == "demo":
        run_demo(sandbox, out=lambda text: print(text, flush=True))
    return 0


def main(argv=None):
    """Entry point; returns the exit code (1 on SandboxError, with the message on stderr)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="pgops_sandbox: %(message)s", stream=sys.stderr)
    try:
        return execute(args)
    except SandboxError as exc:
        print("pgops_sandbox: error: %s" % exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
