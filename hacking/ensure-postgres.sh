#!/usr/bin/env bash
# Make sure the PostgreSQL 15 server binaries (initdb, pg_ctl, postgres, pg_basebackup) are present.
# As root, install Debian's postgresql-15; otherwise print the exact command and stop.
set -euo pipefail

for dir in "${PGOPS_PG_BINDIR:-}" /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null || true)"; do
  if [ -n "$dir" ] && [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_basebackup" ]; then
    echo "PostgreSQL server binaries: $dir ($("$dir/postgres" --version))"
    exit 0
  fi
done

if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL 15 server binaries are missing. Install them, then run make again:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y postgresql-15" >&2
  exit 1
fi
echo "Installing Debian's postgresql-15 (server binaries for the sandbox and the tests)"
apt-get update -q
# The package's own cluster is not used; the sandbox runs its own servers on other ports.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql-15
test -x /usr/lib/postgresql/15/bin/postgres
