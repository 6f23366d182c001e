#!/usr/bin/env bash
# Provide wal-g for the tests, the sandbox and the demo, as `make setup` does for PostgreSQL and barman-cloud:
#
#   1. WALG_BIN, or the wal-g on PATH, when it runs;
#   2. else built from WALG_SOURCE (default: ../shared/vendor/wal-g-3.0.9-src.tar.gz beside the checkout, wal-g 3.0.9's
#      source with one documented patch, see wal-g-3.0.9.md there), once per source (cached by its sha256);
#   3. else `GOEXPERIMENT=jsonv2 go install github.com/wal-g/wal-g/main/pg@v3.0.9`, what works where GitHub's modules
#      are served.
#
# The binary ends up as $1 (a link to the cache), in a directory the PostgreSQL server user can reach: archive_command
# and restore_command run wal-g as that user. The project contains no wal-g code. With PGOPS_REQUIRE_TOOLS=1 (CI) a
# wal-g that cannot be had fails; otherwise the wal-g tests report it missing.
set -euo pipefail

target=${1:?usage: install-walg.sh <path of the wal-g to provide>}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=$(dirname "$target")/cache
version=v3.0.9
revision=3e493188db28335fb93a45bd680c6ff8fc3028c1
source=${WALG_SOURCE:-$root/../shared/vendor/wal-g-3.0.9-src.tar.gz}

missing() {
  echo "install-walg: $*" >&2
  if [ "${PGOPS_REQUIRE_TOOLS:-0}" = 1 ]; then
    exit 1
  fi
  echo "install-walg: continuing without wal-g (the wal-g tests will say it is missing)" >&2
  rm -f "$target"
  exit 0
}

works() {
  "$1" --version >/dev/null 2>&1
}

place() {
  mkdir -p "$(dirname "$target")"
  chmod 0755 "$(dirname "$target")"
  ln -sfn "$1" "$target"
  echo "install-walg: $target -> $1 ($("$1" --version 2>&1 | head -n 1))"
}

found=${WALG_BIN:-$(command -v wal-g || true)}
if [ -n "$found" ] && [ "$found" != "$target" ] && works "$found"; then
  place "$(readlink -f "$found")"
  exit 0
fi

command -v go >/dev/null || missing "no wal-g on PATH (or WALG_BIN), and no Go toolchain to build one (apt-get install golang-go)"
mkdir -p "$cache"
chmod 0755 "$cache"
ldflags="-X github.com/wal-g/wal-g/cmd/pg.walgVersion=$version -X github.com/wal-g/wal-g/cmd/pg.gitRevision=$revision"

if [ -f "$source" ]; then
  sum=$(sha256sum "$source" | cut -c1-16)
  built=$cache/$sum/wal-g
  if ! works "$built"; then
    work=$(mktemp -d "$cache/build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    echo "install-walg: building wal-g $version from $source (about 2 minutes; modules from the Go module proxy)"
    tar -xzf "$source" -C "$work"
    dir=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    (cd "$dir/main/pg" && GOEXPERIMENT=jsonv2 go build -o "$work/wal-g" -ldflags "$ldflags" .) \
      || missing "building wal-g from $source failed (see above)"
    mkdir -p "$cache/$sum"
    chmod 0755 "$cache/$sum"
    install -m 0755 "$work/wal-g" "$built"
  fi
  works "$built" || missing "the wal-g built from $source does not run"
  place "$built"
  exit 0
fi

built=$cache/go-install/bin/wal-g
if ! works "$built"; then
  echo "install-walg: $source not found; go install github.com/wal-g/wal-g/main/pg@$version"
  GOBIN=$cache/go-install/bin GOEXPERIMENT=jsonv2 go install -ldflags "$ldflags" "github.com/wal-g/wal-g/main/pg@$version" \
    || missing "go install of wal-g $version failed (see above); set WALG_SOURCE to its source tarball or WALG_BIN to a wal-g"
  mv "$cache/go-install/bin/pg" "$built"
fi
place "$built"
