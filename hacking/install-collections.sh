#!/usr/bin/env bash
# Install the collections pgops.resilience depends on (galaxy.yml: kubernetes.core) into a collections path.
#
#   hacking/install-collections.sh <collections-path> <python>
#
# Galaxy first; where only PyPI is reachable (CI mirrors, these build machines), the same collection is taken
# from the `ansible` community package on PyPI, which bundles it. The versions are pinned here, so that both
# paths give the same files.
set -euo pipefail

dest=${1:?collections path}
python=${2:?python of the virtualenv}
collection=kubernetes.core
version=6.2.0
# The ansible community package release that bundles kubernetes.core 6.2.0.
ansible_package=ansible==12.3.0

manifest="$dest/ansible_collections/kubernetes/core/MANIFEST.json"
installed_version() {
  "$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["collection_info"]["version"])' "$manifest" 2>/dev/null || true
}

if [ "$(installed_version)" = "$version" ]; then
  exit 0
fi
mkdir -p "$dest"
if timeout 120 "$(dirname "$python")/ansible-galaxy" collection install --force "$collection:==$version" -p "$dest" >/dev/null 2>&1; then
  echo "installed $collection $version from Galaxy"
  exit 0
fi

echo "Galaxy is not reachable; taking $collection $version from $ansible_package on PyPI" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m pip download -q --no-deps --dest "$tmp" "$ansible_package"
"$python" - "$tmp"/ansible-*.whl "$dest" <<'PY'
import shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
prefix = 'ansible_collections/kubernetes/core/'
shutil.rmtree(dest + '/' + prefix, ignore_errors=True)
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if name.startswith(prefix)]
    if not members:
        sys.exit('%s has no %s' % (wheel, prefix))
    archive.extractall(dest, members)
PY
if [ "$(installed_version)" != "$version" ]; then
  echo "expected $collection $version in $dest, found '$(installed_version)'" >&2
  exit 1
fi
echo "installed $collection $version from $ansible_package"
