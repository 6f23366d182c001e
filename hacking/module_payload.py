# -*- coding: utf-8 -*-
"""What each module of the collection ships: the module file and every ``module_utils`` file it imports, directly or
through another (what Ansible's AnsiballZ payload holds of this collection), with their lines of code.

    python3 hacking/module_payload.py            # one line per module, largest first
    python3 hacking/module_payload.py --files    # and the files each one ships

Imports are read with ``ast`` (``from ...module_utils.x import y``, ``from ...module_utils import x``, and their
package ``__init__`` files), as Ansible's module finder follows them; optional imports inside ``try`` count too.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = 'ansible_collections.pgops.resilience.plugins.module_utils'
MODULE_UTILS = os.path.join(ROOT, 'plugins', 'module_utils')


def code_lines(path):
    """Lines that are neither blank nor only a comment."""
    with open(path, encoding='utf-8') as handle:
        return sum(1 for line in handle if line.strip() and not line.strip().startswith('#'))


def module_path(dotted):
    """The file of a ``module_utils`` module or package named ``dotted`` (after PREFIX), or None."""
    base = os.path.join(MODULE_UTILS, *dotted.split('.')) if dotted else MODULE_UTILS
    for candidate in (base + '.py', os.path.join(base, '__init__.py')):
        if os.path.isfile(candidate):
            return candidate
    return None


def imported(path):
    """The ``module_utils`` files ``path`` imports (set of paths), package ``__init__`` files included."""
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read(), path)
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PREFIX):
            rest = node.module[len(PREFIX):].lstrip('.')
            names.append(rest)
            names.extend('%s.%s' % (rest, alias.name) if rest else alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.extend(a.name[len(PREFIX):].lstrip('.') for a in node.names if a.name.startswith(PREFIX))
        for name in names:
            parts = name.split('.') if name else []
            for end in range(len(parts) + 1):  # every package on the way, and the module
                target = module_path('.'.join(parts[:end]))
                if target:
                    found.add(target)
    return found


def shipped(module_file):
    """Every file a module ships (set of paths), itself included."""
    seen, todo = set(), [module_file]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(imported(path) - seen)
    return seen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--files', action='store_true', help='list the files each module ships')
    args = parser.parse_args(argv)
    modules_dir = os.path.join(ROOT, 'plugins', 'modules')
    rows = []
    for name in sorted(os.listdir(modules_dir)):
        if name.endswith('.py') and name != '__init__.py':
            files = shipped(os.path.join(modules_dir, name))
            rows.append((sum(code_lines(f) for f in files), name[:-3], sorted(files)))
    for total, name, files in sorted(rows, reverse=True):
        print('%-26s %6d lines of code in %2d files' % (name, total, len(files)))
        if args.files:
            for path in files:
                print('    %5d  %s' % (code_lines(path), os.path.relpath(path, ROOT)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
