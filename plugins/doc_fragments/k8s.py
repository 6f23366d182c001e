# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes API connection options shared by every module that reads Kubernetes objects."""

from __future__ import annotations


class ModuleDocFragment:
    """How to reach the Kubernetes API server (named and with the environment fallbacks of kubernetes.core)."""

    DOCUMENTATION = r'''
options:
  kubeconfig:
    description:
      - Path of a kubeconfig file, or several joined by C(:) as in E(KUBECONFIG).
      - Falls back to the E(K8S_AUTH_KUBECONFIG) and then E(KUBECONFIG) environment variables.
      - When none is set, a process in a pod (E(KUBERNETES_SERVICE_HOST) set) uses the pod's service account,
        and any other process C(~/.kube/config).
      - The file is only read; refreshed tokens are not written back to it.
    type: path
  context:
    description:
      - Name of the kubeconfig context to use; the file's C(current-context) when unset.
      - Falls back to the E(K8S_AUTH_CONTEXT) environment variable.
      - Setting it makes the module read a kubeconfig (C(~/.kube/config) when O(kubeconfig) is unset), even in a pod.
    type: str
  validate_certs:
    description:
      - Whether to verify the API server's TLS certificate. When unset, the kubeconfig decides
        (C(insecure-skip-tls-verify)); the pod's service account always verifies against its CA.
      - Falls back to the E(K8S_AUTH_VERIFY_SSL) environment variable.
    type: bool
    aliases: [verify_ssl]
requirements:
  - kubernetes (the official Kubernetes Python client)
'''
