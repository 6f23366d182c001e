"""Make the collection this sandbox belongs to importable as ``ansible_collections.pgops.resilience``.

The sandbox runs PostgreSQL with the collection's own helpers (server user, program lookup, process runner,
configuration quoting), so it needs the collection on ``sys.path`` even where only ``sandbox/`` is (``make demo``,
``python -m pgops_sandbox`` with ``PYTHONPATH=sandbox``). The collection is exposed as the tests and the Makefile do:
a link ``.build/collections/ansible_collections/pgops/resilience`` -> the repository, and ``.build/collections`` on
``sys.path``.
"""

import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
_LINK = os.path.join(COLLECTIONS, "ansible_collections", "pgops", "resilience")


def _importable():
    try:
        importlib.import_module("ansible_collections.pgops.resilience.plugins.module_utils")
    except ImportError:
        return False
    return True


def expose_collection():
    """Put the repository's collection on ``sys.path`` unless it is importable already. Raises ImportError naming the
    path when it cannot be done (a sandbox copied out of its repository)."""
    if _importable():
        return
    if not os.path.lexists(_LINK):
        os.makedirs(os.path.dirname(_LINK), exist_ok=True)
        os.symlink(ROOT, _LINK, target_is_directory=True)
    if COLLECTIONS not in sys.path:
        sys.path.append(COLLECTIONS)
    importlib.invalidate_caches()
    if not _importable():
        raise ImportError("pgops_sandbox needs the pgops.resilience collection of its repository (%s) as "
                          "ansible_collections.pgops.resilience; %s does not provide it" % (ROOT, _LINK))


expose_collection()
