# -*- coding: utf-8 -*-
"""Helpers of the wal-g integration tests: bare wal-g calls on the sandbox primary, and module parameters for a
storage (the fixtures ``walg_bin`` and ``walg_prefix`` are in conftest.py)."""

from __future__ import annotations

import os
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.process import program_output


def storage_env(sandbox, prefix):
    """wal-g's settings for ``prefix`` (a directory or s3:// on the sandbox's S3 server), as the module sets them."""
    if prefix.startswith('s3://'):
        return dict(WALG_S3_PREFIX=prefix, AWS_ENDPOINT=sandbox.s3.endpoint_url, AWS_S3_FORCE_PATH_STYLE='true',
                    AWS_ACCESS_KEY_ID=sandbox.s3.access_key, AWS_SECRET_ACCESS_KEY=sandbox.s3.secret_key,
                    AWS_REGION=sandbox.s3.region)
    return dict(WALG_FILE_PREFIX=prefix)


def walg(sandbox, walg_bin, prefix, *args, **extra):
    """Bare wal-g on the sandbox primary (its stdout)."""
    env = dict(PATH=os.environ['PATH'], HOME=os.environ.get('HOME', '/root'))
    env.update((k, v) for k, v in sandbox.env('primary').items() if k.startswith('PG'))
    env.update(storage_env(sandbox, prefix))
    env.update(extra)
    return program_output([walg_bin] + list(args), env, 'wal-g %s' % args[0], timeout=300)


def module_params(sandbox, walg_bin, prefix, **overrides):
    values = dict(prefix=prefix, walg_bin=walg_bin, walg_env={}, timeout=120, endpoint_url=None, region='us-east-1',
                  access_key=None, secret_key=None, session_token=None, validate_certs=True)
    if prefix.startswith('s3://'):
        values.update(endpoint_url=sandbox.s3.endpoint_url, region=sandbox.s3.region, access_key=sandbox.s3.access_key,
                      secret_key=sandbox.s3.secret_key)
    values.update(overrides)
    return values


def rows_around_a_target(sandbox, table):
    """Create ``table`` (n int) on the sandbox primary with row 1, take the server's clock as a recovery target (text
    with its UTC offset), then commit row 2 a second later. A PITR drill to the target keeps 1 and not 2."""
    sandbox.primary.execute('DROP TABLE IF EXISTS %s; CREATE TABLE %s (n int); INSERT INTO %s VALUES (1)' % (table, table, table))
    target = sandbox.primary.execute("SELECT pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC',"
                                     " 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")[0][0]
    time.sleep(1.1)
    sandbox.primary.execute('INSERT INTO %s VALUES (2)' % table)
    return target
