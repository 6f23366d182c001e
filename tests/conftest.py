# -*- coding: utf-8 -*-
"""Make the collection importable as ``ansible_collections.pgops.resilience`` and the sandbox as ``pgops_sandbox``.

The collection is exposed through a symlink ``.build/collections/ansible_collections/pgops/resilience`` ->
the repository, the same path ``ANSIBLE_COLLECTIONS_PATH`` points at when the tests run playbooks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / '.build' / 'collections'
_LINK = COLLECTIONS / 'ansible_collections' / 'pgops' / 'resilience'


def _expose_collection():
    if not _LINK.exists():
        _LINK.parent.mkdir(parents=True, exist_ok=True)
        _LINK.symlink_to(ROOT, target_is_directory=True)
    for path in (str(ROOT / 'sandbox'), str(COLLECTIONS)):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ['ANSIBLE_COLLECTIONS_PATH'] = str(COLLECTIONS)


# ansible-test copies the tree into its own ansible_collections/ layout, where the collection is
# importable already; there is nothing to link.
if 'ansible_collections' not in ROOT.parts:
    _expose_collection()
