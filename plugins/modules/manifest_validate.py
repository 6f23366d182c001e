#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: manifest_validate
short_description: Validate rendered Kubernetes manifests against Kubernetes and CRD schemas, strictly
version_added: 0.1.0
description:
  - Checks the manifests a role of this collection rendered, before anything reaches a cluster, the way an
    API server with strict field validation would. A misspelt field name fails.
  - Core kinds (CronJob, Job, ServiceAccount, Role, RoleBinding, StatefulSet, ...) are checked with
    kubernetes-validate against the OpenAPI schemas of one pinned Kubernetes version, in strict mode.
  - Custom resources are checked against the C(openAPIV3Schema) of their upstream CRD, made strict (an object
    schema that lists its properties rejects unknown fields unless it preserves unknown fields); their
    C(metadata) is checked against the core ObjectMeta schema.
  - Argo Events objects are also checked against upstream's full JSON Schema, because the Argo CRDs check only
    the top level; the object a Sensor's k8s trigger creates is validated too.
  - A directory's C(kustomization.yaml) must list exactly the object files beside it.
  - The module only reads files and never reports a change.
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
options:
  paths:
    description:
      - Manifest files and directories (every C(.yaml) and C(.yml) file in them) to validate.
    type: list
    elements: path
    required: true
  crd_dir:
    description:
      - Directory of CRD schemas laid out like the collection's C(playbooks/files/crds) (an C(index.json) mapping
        C(group/version/Kind) to CRD files, plus C(argoproj.io/argo-events-jsonschema.json)).
      - The playbook C(pgops.resilience.validate_manifests) passes the collection's own copy.
    type: path
    required: true
  kubernetes_version:
    description:
      - Kubernetes version (C(major.minor)) whose schemas the core kinds are checked against.
    type: str
    default: '1.33'
  fail_on_invalid:
    description:
      - Fail when any object is invalid. With V(false) the result reports RV(valid=false) and the errors.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Validation only reads files, so check mode runs it in full.
  diff_mode:
    support: none
requirements:
  - PyYAML
  - jsonschema
  - kubernetes-validate
notes:
  - CEL rules (C(x-kubernetes-validations)) in the CRDs are not evaluated; no Python validator implements CEL.
seealso:
  - name: Kubernetes custom resources, structural schemas and field pruning
    description: Why unknown fields of a custom resource are an error under strict validation.
    link: https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
  - name: kubernetes-validate
    description: The validator of core kinds.
    link: https://github.com/willthames/kubernetes-validate
'''

EXAMPLES = r'''
- name: Validate what the unlogged_restorer role rendered
  pgops.resilience.manifest_validate:
    paths:
      - /tmp/manifests/unlogged-restorer
    crd_dir: /path/to/ansible_collections/pgops/resilience/playbooks/files/crds
    kubernetes_version: '1.33'
'''

RETURN = r'''
valid:
  description: Whether every object and the kustomization are valid.
  returned: always
  type: bool
  sample: true
kubernetes_version:
  description: The Kubernetes version the core kinds were checked against.
  returned: always
  type: str
  sample: '1.33'
objects:
  description: One entry for each object found.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: The file the object is in.
      type: str
    kind:
      description: The object's kind.
      type: str
    name:
      description: C(metadata.name), or C(metadata.generateName) when there is no name.
      type: str
    valid:
      description: Whether the object is valid.
      type: bool
    errors:
      description: The errors, each as C(path, colon, message).
      type: list
      elements: str
errors:
  description: Every error, prefixed with its file and kind.
  returned: always
  type: list
  elements: str
  sample:
    - "cronjob.yaml: CronJob spec: Additional properties are not allowed ('schedul' was unexpected)"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests


def main():
    module_main(AnsibleModule, manifests.module_spec(), manifests.validate_manifests)


if __name__ == '__main__':
    main()
