# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a CloudNativePG ``Cluster`` and tell whether its primary changed since the last watermark.

CloudNativePG (CNPG) records who the primary is in the ``Cluster`` object's status (CRD
``clusters.postgresql.cnpg.io``, version ``v1``; field meanings from the CRD's ``openAPIV3Schema``):
``currentPrimary`` is the pod serving as primary, ``targetPrimary`` the pod the operator wants as primary
(different during a switchover or failover; the literal ``pending`` while a failover waits for the old
primary to stop), ``instancesStatus`` maps a pod state (``healthy`` = ready, ``replicating`` = running but
not ready, ``failed``) to pod names. ``pg_unlogged_rebuild`` stores ``currentPrimary`` in its watermark
(option ``current_primary``); this module compares the Cluster with it.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._k8s.client import (
    api_client, get_namespaced_custom_object, k8s_connection_spec)
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged.watermark import (
    recorded_primary, watermark_spec, watermark_store)

GROUP = 'postgresql.cnpg.io'
VERSION = 'v1'
PLURAL = 'clusters'
KIND = 'Cluster'
# The instancesStatus key of ready pods (CloudNativePG pkg/utils, PodStatus "healthy": the pod is ready).
HEALTHY = 'healthy'


def argument_spec():
    """The options of ``cnpg_cluster_info``: ``name``, ``namespace``, ``previous_primary``, the Kubernetes
    connection options of :func:`~ansible_collections.pgops.resilience.plugins.module_utils._k8s.client.k8s_connection_spec`
    and the ``watermark`` option of :func:`~ansible_collections.pgops.resilience.plugins.module_utils._unlogged.watermark.watermark_spec`."""
    spec = dict(
        name=dict(type='str', required=True),
        namespace=dict(type='str', required=True),
        previous_primary=dict(type='str'),
    )
    spec.update(k8s_connection_spec())
    spec.update(watermark_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=argument_spec())


def instance_readiness(status):
    """One entry per instance: ``[{'name': 'pg-main-1', 'ready': True, 'role': 'primary', 'state': 'healthy'}, ...]``.

    Instances are ``status.instanceNames`` in their order, then any other pod named in
    ``status.instancesStatus`` (sorted). ``ready`` is true for pods listed under ``healthy``; ``state`` is the
    ``instancesStatus`` key listing the pod, or ``None`` when it is listed under none; ``role`` is ``primary``
    for ``status.currentPrimary`` and ``replica`` for every other instance.

    :param status: the Cluster's ``status`` (dict, may be empty).
    :returns: list of dict.
    """
    by_state = status.get('instancesStatus') or {}
    state_of = {}
    for state in sorted(by_state):
        for pod in by_state[state] or []:
            state_of.setdefault(pod, state)
    names = list(status.get('instanceNames') or [])
    names += sorted(pod for pod in state_of if pod not in names)
    primary = status.get('currentPrimary')
    return [dict(name=pod, ready=state_of.get(pod) == HEALTHY, role='primary' if pod == primary else 'replica',
                 state=state_of.get(pod)) for pod in names]


def cluster_facts(cluster):
    """What ``cnpg_cluster_info`` returns about a Cluster object, read from its ``spec`` and ``status``.

    Go's ``omitempty`` drops zero values from CNPG's status, so an absent ``readyInstances`` is ``0``; an
    absent ``currentPrimary``, ``phase`` or ``timelineID`` (a new Cluster the operator has not reconciled
    yet) is ``None``.

    :param cluster: the object as the API server returns it (dict with ``spec`` and ``status``).
    :returns: dict with ``current_primary``, ``target_primary``, ``phase``, ``phase_reason``, ``instances``
        (desired count, ``spec.instances``), ``ready_instances``, ``instance_names`` (``status.instanceNames``),
        ``instances_status`` (``status.instancesStatus`` as returned),
        ``instance_readiness`` (see :func:`instance_readiness`), ``timeline_id``, ``current_primary_timestamp``,
        ``system_id`` and ``switchover_in_progress`` (``targetPrimary`` set and different from
        ``currentPrimary``: a switchover or a failover under way).
    """
    spec = cluster.get('spec') or {}
    status = cluster.get('status') or {}
    current = status.get('currentPrimary') or None
    target = status.get('targetPrimary') or None
    readiness = instance_readiness(status)
    return dict(
        current_primary=current,
        target_primary=target,
        phase=status.get('phase') or None,
        phase_reason=status.get('phaseReason') or None,
        instances=spec.get('instances'),
        ready_instances=status.get('readyInstances', 0) if status else None,
        instance_names=list(status.get('instanceNames') or []),
        instances_status=status.get('instancesStatus') or {},
        instance_readiness=readiness,
        timeline_id=status.get('timelineID'),
        current_primary_timestamp=status.get('currentPrimaryTimestamp') or None,
        system_id=status.get('systemID') or None,
        switchover_in_progress=bool(target and target != current),
    )


def failover_detected(current_primary, previous_primary):
    """The failover rule: the Cluster's primary differs from the one recorded before.

    :param current_primary: ``status.currentPrimary`` now (str or ``None``).
    :param previous_primary: the primary recorded in the watermark, or given (str or ``None``).
    :returns: bool; ``False`` when either is unknown, since nothing can be compared. A switchover changes
        the primary too, and counts.
    """
    return bool(current_primary and previous_primary and current_primary != previous_primary)


def previous_primary_from(params, warn):
    """The primary to compare with: ``previous_primary`` when given, else the one recorded in the watermark.

    A missing watermark object is a first run, not an error. A watermark that cannot be read (store
    unreachable, not JSON) is a warning, so the check of the Cluster still stands.

    :returns: tuple ``(previous_primary or None, source, watermark_info or None)``: ``source`` is
        ``'option'``, ``'watermark'`` or ``None`` (nothing recorded); ``watermark_info`` is
        ``{'bucket', 'key', 'found', 'error'}`` when the watermark was consulted.
    :raises PgopsError: when the watermark's ``endpoint_url`` or ``region`` is not valid.
    """
    if params.get('previous_primary'):
        return params['previous_primary'], 'option', None
    store = watermark_store(params.get('watermark'))
    if store is None:
        return None, None, None
    info = dict(bucket=store.bucket, key=store.key, found=False, error=None)
    try:
        document = store.read()
    except PgopsError as exc:
        info['error'] = exc.msg
        warn('Could not read the watermark, so a failover cannot be detected in this run: %s' % exc.msg)
        return None, None, info
    info['found'] = document is not None
    primary = recorded_primary(document)
    return primary, ('watermark' if primary else None), info


def read_cluster(params, check_mode=False):
    """GET the Cluster, derive its facts, and compare its primary with the recorded one. It only reads, so check mode
    changes nothing.

    :param params: dict of module parameters (see :func:`argument_spec`).
    :param check_mode: bool (the same run either way).
    :returns: the module result dict (see the module's RETURN); ``changed`` is always ``False``; ``warnings`` lists
        what could not be read of the watermark.
    :raises PgopsError: see :func:`~ansible_collections.pgops.resilience.plugins.module_utils._k8s.client.api_client`
        and :func:`~ansible_collections.pgops.resilience.plugins.module_utils._k8s.client.get_namespaced_custom_object`
        (Cluster not found, missing RBAC, unreachable API server, bad kubeconfig), an empty ``name`` or
        ``namespace``, and invalid S3 settings.
    """
    warnings = []
    for option in ('name', 'namespace'):
        if not params.get(option):
            raise PgopsError('%s must name the Cluster: it is empty.' % option)
    client = api_client(params)
    try:
        cluster = get_namespaced_custom_object(client, GROUP, VERSION, PLURAL, params['namespace'], params['name'], kind=KIND)
    finally:
        client.close()
    result = dict(changed=False, api_server=client.configuration.host)
    result.update(cluster_facts(cluster))
    previous, source, info = previous_primary_from(params, warnings.append)
    result.update(previous_primary=previous, previous_primary_source=source, watermark=info,
                  failover_detected=failover_detected(result['current_primary'], previous), warnings=warnings)
    return result
