#!/usr/bin/env bash
# Make sure the system programs that `make demo` and `make test` need are present:
#   - the PostgreSQL 15 server binaries (initdb, pg_ctl, postgres, pg_basebackup) for the sandbox;
#   - the system Python's venv module, for the barman-cloud tools the server user runs (make server-tools);
#   - shellcheck, which ansible-test sanity runs on the shell scripts.
# As root, install the missing Debian packages; otherwise print the exact command and stop.
set -euo pipefail

missing=()

pg_bindir=""
for dir in "${PGOPS_PG_BINDIR:-}" /usr/lib/postgresql/15/bin "$(pg_config --bindir 2>/dev/null || true)"; do
  if [ -n "$dir" ] && [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_basebackup" ]; then
    pg_bindir=$dir
    break
  fi
done
[ -n "$pg_bindir" ] || missing+=(postgresql-15)
if [ -x /usr/bin/python3 ] && ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3-venv)
fi
[ "${1:-}" = "--with-test-tools" ] && ! command -v shellcheck >/dev/null && missing+=(shellcheck)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages: ${missing[*]}. Install them, then run make again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "Installing Debian packages: ${missing[*]}"
  apt-get update -q
  # postgresql-15's own cluster is not used: the sandbox runs its own servers on other ports.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  [ -n "$pg_bindir" ] || pg_bindir=/usr/lib/postgresql/15/bin
fi
echo "PostgreSQL server binaries: $pg_bindir ($("$pg_bindir/postgres" --version))"
