# -*- coding: utf-8 -*-
"""Helpers shared by the integration tests: module parameters for a sandbox node, playbook runs."""

from __future__ import annotations

import os

from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import rebuild as unlogged_rebuild
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec
from tests.manifest_checks import run_ansible_playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _defaults(spec):
    return dict((name, option.get('default')) for name, option in spec.items())


def params_for(sandbox, node, dbname, watermark_key=None, **overrides):
    """Module parameters for a run against ``node`` of the sandbox: the argument spec's defaults, as
    AnsibleModule would fill them in, plus the sandbox's connection and S3 settings."""
    spec = postgres_argument_spec()
    spec.update(unlogged_rebuild.argument_spec())
    params = _defaults(spec)
    params.update(login_host='127.0.0.1', login_port=getattr(sandbox, node).port, login_password=sandbox.password,
                  login_db=dbname, ssl_mode='disable', connect_timeout=5, source_tables=['resources', 'moments'])
    if watermark_key:
        params['watermark'] = _defaults(spec['watermark']['options'])
        params['watermark'].update(bucket=sandbox.s3.bucket, key=watermark_key, endpoint_url=sandbox.s3.endpoint_url,
                                   region=sandbox.s3.region, access_key=sandbox.s3.access_key, secret_key=sandbox.s3.secret_key)
    params.update(overrides)
    return params


def barman_params(spec, settings, **overrides):
    """Parameters of a barman module as AnsibleModule fills them in: the defaults of ``spec`` (its argument
    spec), the catalog and S3 settings of ``settings`` (from ``Sandbox.barman_settings()``), then ``overrides``."""
    params = _defaults(spec)
    params.update(destination_path=settings['destination_path'], server_name=settings['server_name'],
                  endpoint_url=settings['endpoint_url'], access_key=settings['access_key'],
                  secret_key=settings['secret_key'], region=settings['region'])
    params.update(overrides)
    return params


def run_playbook(sandbox, playbook, extra_vars=None, env=None, check=False, verbose=False):
    """Run ``ansible-playbook <playbook>`` (an FQCN or a path) as a user would; return the CompletedProcess.

    With a ``sandbox``, libpq and the AWS variables point at its primary and S3 endpoint; ``None`` adds none."""
    full_env = dict(sandbox.env('primary')) if sandbox is not None else {}
    full_env.update(env or {})
    return run_ansible_playbook(playbook, extra_vars, check=check, verbose=verbose, env=full_env)
