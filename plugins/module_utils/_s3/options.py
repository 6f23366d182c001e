# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The S3 connection options (the ``pgops.resilience.s3`` doc fragment), apart from the client: a module that passes
them to a program (wal-g reads them from its environment) does not import boto3, about 0.09 s of every run
(benchmarks/walg.py)."""

from __future__ import annotations

from ansible.module_utils.basic import env_fallback


def s3_connection_spec():
    """Argument spec of the options documented in the ``pgops.resilience.s3`` doc fragment.

    Fallbacks are the AWS SDK's environment variables. Used top-level, or as the ``options`` of a dict
    option such as ``pg_unlogged_rebuild``'s ``watermark``.

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(
        endpoint_url=dict(type='str', fallback=(env_fallback, ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'])),
        region=dict(type='str', default='us-east-1', fallback=(env_fallback, ['AWS_REGION', 'AWS_DEFAULT_REGION'])),
        access_key=dict(type='str', no_log=False, fallback=(env_fallback, ['AWS_ACCESS_KEY_ID'])),
        secret_key=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SECRET_ACCESS_KEY'])),
        session_token=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SESSION_TOKEN'])),
        validate_certs=dict(type='bool', default=True),
    )
