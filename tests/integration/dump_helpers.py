# -*- coding: utf-8 -*-
"""Helpers of the dump and restore integration tests: module parameters from the argument specs, a database made
from SQL."""

from __future__ import annotations

import uuid

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump as dump_bundle, dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec

from .helpers import _defaults


def module_params(sandbox, spec, **overrides):
    """Parameters of a module with argument spec ``spec`` as AnsibleModule fills them in, for the sandbox primary."""
    params = _defaults(postgres_argument_spec())
    params.update(_defaults(spec))
    params.update(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                  ssl_mode='disable', connect_timeout=5, connect_params={})
    params.update(overrides)
    return params


def dump_params(sandbox, database, directory=None, **overrides):
    """``pg_dump_bundle``'s parameters for ``database`` into ``directory`` (or the S3 options in ``overrides``)."""
    return module_params(sandbox, dump_bundle.argument_spec(), database=database,
                         directory=str(directory) if directory else None, **overrides)


def restore_params(sandbox, directory=None, **overrides):
    """``pg_dump_restore``'s parameters from ``directory`` (or the S3 options in ``overrides``)."""
    return module_params(sandbox, dump_restore.argument_spec(), directory=str(directory) if directory else None,
                         **overrides)


def database_from(sandbox, stem, statements):
    """A new database ``<stem>_<random>`` on the primary, made by running ``statements`` (SQL); returns its name."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    name = '%s_%s' % (stem, uuid.uuid4().hex[:8])
    sandbox.primary.execute('CREATE DATABASE %s' % name)
    conn = sandbox.primary.connect(dbname=name)
    try:
        with conn.cursor() as cur:
            cur.execute(statements)
    finally:
        conn.close()
    return name
