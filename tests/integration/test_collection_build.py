# -*- coding: utf-8 -*-
"""`ansible-galaxy collection build` gives a tarball that installs, and whose modules ansible-doc renders."""

from __future__ import annotations

import json
import os
import subprocess

from .helpers import ROOT


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300, **kwargs)
    assert done.returncode == 0, '%s\n%s\n%s' % (' '.join(command), done.stdout, done.stderr)
    return done.stdout


def test_build_install_and_render_docs(tmp_path):
    # Only the freshly installed copy is visible: not the checkout that the other tests use.
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / 'installed'))
    _run(['ansible-galaxy', 'collection', 'build', ROOT, '--output-path', str(tmp_path / 'dist')], env=env)
    tarballs = list((tmp_path / 'dist').glob('pgops-resilience-*.tar.gz'))
    assert len(tarballs) == 1
    # The dependency (kubernetes.core) comes from the copy `make collection` installed: Galaxy may be unreachable.
    _run(['ansible-galaxy', 'collection', 'install', '--no-deps', str(tarballs[0]), '-p', str(tmp_path / 'installed')], env=env)
    (tmp_path / 'installed' / 'ansible_collections' / 'kubernetes').symlink_to(
        os.path.join(ROOT, '.build', 'collections', 'ansible_collections', 'kubernetes'))
    installed = tmp_path / 'installed' / 'ansible_collections' / 'pgops' / 'resilience'
    assert (installed / 'plugins' / 'modules' / 'pg_unlogged_rebuild.py').is_file()
    assert not (installed / 'sandbox').exists() and not (installed / '.ci').exists()
    listing = json.loads(_run(['ansible-doc', '--json', '-t', 'module', '-l', 'pgops.resilience'], env=env))
    assert 'pgops.resilience.pg_unlogged_rebuild' in listing
    for module in listing:
        doc = json.loads(_run(['ansible-doc', '--json', module], env=env))[module]
        assert doc['doc']['options'] and doc['examples'] and doc['return']
    for playbook in ('unlogged_check_and_restore', 'validate_manifests'):
        assert playbook in _run(['ansible-playbook', '--syntax-check', 'pgops.resilience.' + playbook], env=env)
    # Roles: their argument specs render as documentation, and the CRD schemas ship for validate_manifests.
    roles = json.loads(_run(['ansible-doc', '--json', '-t', 'role', '-l', 'pgops.resilience'], env=env))
    assert {'pgops.resilience.unlogged_restorer', 'pgops.resilience.k8s_manifests'} <= set(roles)
    doc = json.loads(_run(['ansible-doc', '--json', '-t', 'role', 'pgops.resilience.unlogged_restorer'], env=env))
    assert 'unlogged_restorer_argo_enabled' in doc['pgops.resilience.unlogged_restorer']['entry_points']['main']['options']
    assert (installed / 'playbooks' / 'files' / 'crds' / 'index.json').is_file()
