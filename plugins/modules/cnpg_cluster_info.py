#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: cnpg_cluster_info
short_description: Read a CloudNativePG Cluster's primary and health, and tell whether it failed over since the last watermark
version_added: 0.1.0
description:
  - Reads one CloudNativePG C(Cluster) (C(postgresql.cnpg.io/v1), resource C(clusters)) from the Kubernetes
    API and returns its primary, target primary, phase, instance counts and per-instance readiness, from the
    object's C(status).
  - Compares the Cluster's C(status.currentPrimary) with the primary recorded before, read from the
    watermark that M(pgops.resilience.pg_unlogged_rebuild) writes with its O(pgops.resilience.pg_unlogged_rebuild#module:current_primary)
    option, or given as O(previous_primary); RV(failover_detected) is true when they differ.
  - Only reads; never reports C(changed).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.k8s
  - pgops.resilience.watermark
options:
  name:
    description: Name of the C(Cluster) object.
    type: str
    required: true
  namespace:
    description: Namespace of the C(Cluster) object.
    type: str
    required: true
  previous_primary:
    description:
      - The primary to compare with, such as the RV(current_primary) of an earlier run. Overrides the
        watermark, which is then not read.
    type: str
  watermark:
    description:
      - Where M(pgops.resilience.pg_unlogged_rebuild) keeps its watermark; its C(current_primary) field is the
        primary to compare with. Give the same location as to that module.
      - A watermark that does not exist yet (first run) or was written without C(current_primary) records
        no primary; RV(failover_detected) is then V(false) and RV(previous_primary) C(null).
      - A watermark that cannot be read is a warning, not a failure, and nothing is compared.
    type: dict
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
notes:
  - The identity the module uses needs RBAC permission C(get) on C(clusters.postgresql.cnpg.io) in O(namespace),
    for example a Role with C(apiGroups=[postgresql.cnpg.io]), C(resources=[clusters]), C(verbs=[get]) and a RoleBinding.
  - A switchover changes the primary as a failover does, so both set RV(failover_detected) once the Cluster's
    C(status.currentPrimary) names the new pod.
seealso:
  - module: pgops.resilience.pg_unlogged_rebuild
  - name: CloudNativePG Cluster status
    description: The fields of the Cluster's status (currentPrimary, targetPrimary, instancesStatus, ...).
    link: https://cloudnative-pg.io/documentation/current/cloudnative-pg.v1/#postgresql-cnpg-io-v1-ClusterStatus
'''

EXAMPLES = r'''
- name: Read the Cluster and compare its primary with the watermark of pg_unlogged_rebuild
  pgops.resilience.cnpg_cluster_info:
    name: rem-db
    namespace: rem
    watermark:
      bucket: rem-io-prod
  register: cnpg

- name: Say when the primary changed
  ansible.builtin.debug:
    msg: "Failover: {{ cnpg.previous_primary }} -> {{ cnpg.current_primary }}"
  when: cnpg.failover_detected

- name: Wait until every instance is ready, with an explicit kubeconfig and context
  pgops.resilience.cnpg_cluster_info:
    name: rem-db
    namespace: rem
    kubeconfig: /etc/pgops/kubeconfig
    context: prod-eu
  register: cnpg_ready
  until: cnpg_ready.ready_instances == cnpg_ready.instances and not cnpg_ready.switchover_in_progress
  retries: 30
  delay: 10
'''

RETURN = r'''
current_primary:
  description: The pod serving as primary (C(status.currentPrimary)); C(null) before the operator elected one.
  returned: always
  type: str
  sample: rem-db-1
target_primary:
  description:
    - The pod the operator wants as primary (C(status.targetPrimary)). It differs from RV(current_primary)
      during a switchover or failover, and is C(pending) while a failover waits for the old primary to stop.
  returned: always
  type: str
  sample: rem-db-1
switchover_in_progress:
  description: Whether RV(target_primary) is set and differs from RV(current_primary) (a switchover or failover under way).
  returned: always
  type: bool
phase:
  description: The Cluster's phase (C(status.phase)).
  returned: always
  type: str
  sample: Cluster in healthy state
phase_reason:
  description: Why the Cluster is in its phase (C(status.phaseReason)), or C(null).
  returned: always
  type: str
  sample: Switching over to rem-db-2
instances:
  description: The desired number of instances (C(spec.instances)).
  returned: always
  type: int
  sample: 3
ready_instances:
  description: The number of ready instance pods (C(status.readyInstances)); C(null) when the Cluster has no status yet.
  returned: always
  type: int
  sample: 3
instance_names:
  description: The instances of the Cluster (C(status.instanceNames)).
  returned: always
  type: list
  elements: str
  sample: [rem-db-1, rem-db-2, rem-db-3]
instances_status:
  description:
    - The pods by state, as CloudNativePG reports them (C(status.instancesStatus)); states are C(healthy)
      (ready), C(replicating) (running, not ready) and C(failed).
  returned: always
  type: dict
  sample: {"healthy": [rem-db-2, rem-db-3], "failed": [rem-db-1]}
instance_readiness:
  description: One entry per instance, from RV(instance_names) and then any other pod in RV(instances_status).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Pod name.
      type: str
    ready:
      description: Whether the pod is listed as C(healthy) (ready).
      type: bool
    role:
      description: C(primary) for RV(current_primary), C(replica) for every other instance.
      type: str
    state:
      description: The RV(instances_status) key that lists the pod, or C(null).
      type: str
  sample: [{"name": "rem-db-1", "ready": true, "role": "primary", "state": "healthy"}]
timeline_id:
  description: The PostgreSQL timeline of the Cluster (C(status.timelineID)); it grows by one at each promotion.
  returned: always
  type: int
  sample: 2
current_primary_timestamp:
  description: When the current primary was promoted (C(status.currentPrimaryTimestamp)).
  returned: always
  type: str
  sample: "2026-11-20T22:49:40.123456Z"
system_id:
  description: The PostgreSQL system identifier (C(status.systemID)), as in the watermark's C(system_identifier).
  returned: always
  type: str
  sample: "7439284711232452633"
api_server:
  description: The Kubernetes API server that answered.
  returned: always
  type: str
  sample: https://10.96.0.1:443
previous_primary:
  description: The primary compared with, from O(previous_primary) or the watermark; C(null) when none is recorded.
  returned: always
  type: str
  sample: rem-db-1
previous_primary_source:
  description: C(option), C(watermark), or C(null) when no primary was recorded.
  returned: always
  type: str
failover_detected:
  description:
    - Whether RV(current_primary) differs from RV(previous_primary). V(false) when either is C(null).
  returned: always
  type: bool
watermark:
  description: The watermark that was read; C(null) unless O(watermark) is set and O(previous_primary) is not.
  returned: always
  type: dict
  contains:
    bucket:
      description: Bucket.
      type: str
    key:
      description: Object key.
      type: str
    found:
      description: Whether the object exists.
      type: bool
    error:
      description: Why it could not be read, or C(null).
      type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import cnpg


def main():
    module_main(AnsibleModule, cnpg.module_spec(), cnpg.read_cluster)


if __name__ == '__main__':
    main()
