# -*- coding: utf-8 -*-
"""The layering of ``plugins/module_utils`` (docs/architecture.md), checked on the source: infrastructure packages
never import a capability, a capability never imports another capability, every package's ``__init__.py`` is empty,
and no file grows past the size a reader can hold in mind."""

from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULE_UTILS = os.path.join(ROOT, 'plugins', 'module_utils')
PREFIX = 'ansible_collections.pgops.resilience.plugins.module_utils.'
INFRASTRUCTURE = ('_core', '_pg', '_s3', '_k8s', '_drill')
CAPABILITIES = ('_unlogged', '_archive', '_bundles', '_barman', '_inspect', '_walg')
# Infrastructure is layered too: _core at the bottom, then _pg / _s3 / _k8s, then _drill (which runs servers).
MAY_IMPORT = dict(_core=('_core',), _pg=('_core', '_pg'), _s3=('_core', '_s3'), _k8s=('_core', '_k8s'),
                  _drill=('_core', '_pg', '_drill'))
MAX_LINES = 700


def _sources():
    for package in sorted(os.listdir(MODULE_UTILS)):
        directory = os.path.join(MODULE_UTILS, package)
        if not os.path.isdir(directory) or package == '__pycache__':
            continue
        for name in sorted(os.listdir(directory)):
            if name.endswith('.py'):
                yield package, os.path.join(directory, name)


def _imported_packages(path):
    """The module_utils packages ``path`` imports from (set of names such as ``'_pg'``)."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module + '.' + alias.name for alias in node.names]
            if node.level:
                raise AssertionError('%s uses a relative import; write the absolute name' % path)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.startswith(PREFIX):
                found.add(name[len(PREFIX):].split('.')[0])
    return found


def test_every_package_is_known_and_private():
    packages = sorted(p for p in os.listdir(MODULE_UTILS) if os.path.isdir(os.path.join(MODULE_UTILS, p)) and p != '__pycache__')
    assert packages == sorted(INFRASTRUCTURE + CAPABILITIES)
    assert not [n for n in os.listdir(MODULE_UTILS) if n.endswith('.py')], 'module_utils holds packages only'


@pytest.mark.parametrize('package,path', list(_sources()), ids=lambda value: os.path.relpath(value, MODULE_UTILS)
                         if isinstance(value, str) and os.sep in value else value)
def test_imports_follow_the_layers(package, path):
    imported = _imported_packages(path)
    allowed = MAY_IMPORT.get(package, INFRASTRUCTURE + (package,))
    assert imported <= set(allowed), '%s imports %s; it may import only %s' % (
        os.path.relpath(path, ROOT), ', '.join(sorted(imported - set(allowed))), ', '.join(allowed))


@pytest.mark.parametrize('package,path', list(_sources()), ids=lambda value: os.path.relpath(value, MODULE_UTILS)
                         if isinstance(value, str) and os.sep in value else value)
def test_files_stay_readable(package, path):
    if os.path.basename(path) == '__init__.py':
        assert open(path).read().strip() == '', '%s must be empty' % path
    with open(path, encoding='utf-8') as handle:
        lines = len(handle.readlines())
    assert lines <= MAX_LINES, '%s has %d lines (at most %d): split it by concern' % (path, lines, MAX_LINES)


def test_modules_use_one_capability():
    """A module file imports its own capability (and infrastructure for the shared contract), never two."""
    modules = os.path.join(ROOT, 'plugins', 'modules')
    for name in sorted(os.listdir(modules)):
        if name.endswith('.py'):
            capabilities = _imported_packages(os.path.join(modules, name)) & set(CAPABILITIES)
            assert len(capabilities) <= 1, '%s imports %s' % (name, ', '.join(sorted(capabilities)))
