# -*- coding: utf-8 -*-
"""Test helpers for rendered Kubernetes manifests: render a role with ansible-playbook, validate the result.

Validation is the collection's own (module_utils/_k8s/manifests.py, also behind the module manifest_validate and the
playbook pgops.resilience.validate_manifests): core kinds with kubernetes-validate in strict mode, custom
resources against the upstream CRDs copied into playbooks/files/crds (see its SOURCES.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRD_DIR = os.path.join(ROOT, 'playbooks', 'files', 'crds')
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')


def ansible_env(**extra):
    """Environment for ansible-playbook runs against this checkout's collection."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    env.update(extra)
    return env


def run_ansible_playbook(playbook, extra_vars=None, check=False, diff=False, verbose=False, env=None):
    """Run ``ansible-playbook`` (FQCN or path) with JSON extra vars; return the CompletedProcess.

    :param env: variables added to :func:`ansible_env` (for example a sandbox's libpq and AWS settings).
    """
    # The ansible-playbook installed beside the Python running the tests (the project's virtualenv).
    command = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), playbook]
    if extra_vars:
        command += ['-e', json.dumps(extra_vars)]
    if check:
        command.append('--check')
    if diff:
        command.append('--diff')
    if verbose:
        command.append('-vvv')
    return subprocess.run(command, env=ansible_env(**(env or {})), capture_output=True, text=True, timeout=300,
                          check=False)


def render_role(tmp_path, role, role_vars, check=False, diff=False):
    """Render ``pgops.resilience.<role>`` with ``role_vars`` through a one-task playbook in ``tmp_path``.

    :returns: CompletedProcess of ``ansible-playbook``.
    """
    playbook = tmp_path / ('render-%s.yml' % role)
    playbook.write_text(yaml.safe_dump([{
        'name': 'Render %s' % role, 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
        'tasks': [{'name': 'Render', 'ansible.builtin.include_role': {'name': 'pgops.resilience.%s' % role},
                   'vars': role_vars}],
    }]))
    return run_ansible_playbook(str(playbook), check=check, diff=diff)


def validate(paths):
    """Validate files and directories; the dict of :func:`manifests.validate_paths`."""
    return manifests.validate_paths([str(p) for p in paths], CRD_DIR)


def assert_valid(path):
    """Fail the test with every error unless every object under ``path`` and its kustomization are valid."""
    result = validate([path])
    assert result['valid'], '\n'.join(result['errors'])
    assert result['objects'], 'no objects found in %s' % path
    return result


def load_objects(directory):
    """``{file name: object}`` for every object file (not the kustomization) in ``directory``."""
    objects = {}
    for name in sorted(os.listdir(str(directory))):
        if name.endswith('.yaml') and name != manifests.KUSTOMIZATION_FILE:
            with open(os.path.join(str(directory), name), encoding='utf-8') as handle:
                objects[name] = yaml.safe_load(handle)
    return objects
