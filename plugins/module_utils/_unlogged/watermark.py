# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the watermark of ``pg_unlogged_rebuild`` lives, built once for every module that reads or writes it.

The watermark is the JSON record of the last successful run (see ``docs/unlogged-rebuild.md``).
``pg_unlogged_rebuild`` writes it; ``cnpg_cluster_info`` reads the primary recorded in it. Both take the
same ``watermark`` option, documented once in the ``pgops.resilience.watermark`` doc fragment.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec
from ansible_collections.pgops.resilience.plugins.module_utils._s3.objects import JsonObject

DEFAULT_WATERMARK_KEY = 'state/unlogged-watermark.json'
# The field holding the name the orchestrator gives the primary (CloudNativePG's status.currentPrimary).
PRIMARY_FIELD = 'current_primary'


def watermark_spec():
    """The argument spec of the ``watermark`` option (a dict): ``bucket``, ``key`` and the S3 connection options.

    :returns: dict for an ``AnsibleModule`` argument_spec, ``{'watermark': {...}}``.
    """
    options = dict(bucket=dict(type='str', required=True), key=dict(type='str', default=DEFAULT_WATERMARK_KEY, no_log=False))
    options.update(s3_connection_spec())
    return dict(watermark=dict(type='dict', options=options))


def watermark_store(options):
    """The :class:`~ansible_collections.pgops.resilience.plugins.module_utils._s3.objects.JsonObject` for the value of
    the ``watermark`` option, or ``None`` when no watermark is configured.

    :raises PgopsError: when ``endpoint_url`` or ``region`` is not valid, or boto3 is missing.
    """
    if not options:
        return None
    return JsonObject(client_from_params(options), options['bucket'], options['key'], options.get('endpoint_url'))


def recorded_primary(document):
    """The primary name recorded in a watermark document, or ``None`` (no document, or written without
    ``current_primary``, such as by a run not told the orchestrator's primary)."""
    if not document:
        return None
    return document.get(PRIMARY_FIELD) or None
