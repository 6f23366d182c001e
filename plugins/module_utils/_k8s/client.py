# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way this collection builds a Kubernetes API client, and reads an object with clear errors.

Options and their environment fallbacks follow kubernetes.core (``kubeconfig`` <- ``K8S_AUTH_KUBECONFIG``
then ``KUBECONFIG``, ``context`` <- ``K8S_AUTH_CONTEXT``, ``validate_certs`` <- ``K8S_AUTH_VERIFY_SSL``);
they are documented once in the ``pgops.resilience.k8s`` doc fragment. The client is the official
``kubernetes`` Python package, imported lazily so that modules which do not talk to Kubernetes never
need it.
"""

from __future__ import annotations

import json
import os
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library

try:
    import kubernetes.client
    import kubernetes.config
    import urllib3
    import yaml
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException
except ImportError:  # pragma: no cover - reported by require_kubernetes()
    kubernetes = None
    KUBERNETES_IMPORT_ERROR = traceback.format_exc()
else:
    KUBERNETES_IMPORT_ERROR = None

# Per request: seconds to open the TCP connection, and seconds to wait for the answer. urllib3 retries
# a failed connection 3 times, so an API server that drops packets costs at most 4 x CONNECT_TIMEOUT.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 30
# Where kubectl and the kubernetes client look when nothing else is configured.
DEFAULT_KUBECONFIG = '~/.kube/config'
# Set by the kubelet in every container of a pod (Kubernetes docs, "Accessing the Kubernetes API from
# a Pod"); its presence selects the pod's service-account credentials.
IN_CLUSTER_ENV = 'KUBERNETES_SERVICE_HOST'


def k8s_connection_spec():
    """Argument spec of the options documented in the ``pgops.resilience.k8s`` doc fragment.

    :returns: dict usable as (part of) an ``AnsibleModule`` argument_spec.
    """
    return dict(
        kubeconfig=dict(type='path', fallback=(env_fallback, ['K8S_AUTH_KUBECONFIG', 'KUBECONFIG'])),
        context=dict(type='str', fallback=(env_fallback, ['K8S_AUTH_CONTEXT'])),
        validate_certs=dict(type='bool', aliases=['verify_ssl'], fallback=(env_fallback, ['K8S_AUTH_VERIFY_SSL'])),
    )


def require_kubernetes():
    """Raise :class:`PgopsError` saying how to install the kubernetes client when it cannot be imported."""
    require_library('kubernetes', kubernetes is not None, 'pip install kubernetes (the official Kubernetes client)',
                    KUBERNETES_IMPORT_ERROR)


def _kubeconfig_paths(value):
    """The files of a kubeconfig value, which like ``KUBECONFIG`` may list several, separated by ``:``."""
    return [os.path.expanduser(path) for path in value.split(os.pathsep) if path]


def _load_kubeconfig(configuration, kubeconfig, context, source):
    try:
        kubernetes.config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration,
                                           persist_config=False)
    except (ConfigException, yaml.YAMLError, OSError, ValueError, TypeError, KeyError) as exc:
        raise PgopsError('Cannot use %s%s: %s' % (source, ' with context %r' % context if context else '', exc))


def api_client(params):
    """Build a ``kubernetes.client.ApiClient`` from the options of :func:`k8s_connection_spec`.

    Where the configuration comes from, first match wins:

    1. ``kubeconfig`` (a path, or several joined by ``:`` as in ``KUBECONFIG``), with ``context`` or the
       file's ``current-context``;
    2. with neither ``kubeconfig`` nor ``context``, inside a pod (``KUBERNETES_SERVICE_HOST`` set): the pod's
       service account (token and CA under ``/var/run/secrets/kubernetes.io/serviceaccount/``);
    3. ``~/.kube/config``.

    ``validate_certs``, when not ``None``, overrides the kubeconfig's ``insecure-skip-tls-verify``.
    The kubeconfig file is only read, never rewritten (``persist_config=False``).

    :param params: dict with ``kubeconfig``, ``context``, ``validate_certs``.
    :returns: ``kubernetes.client.ApiClient``; close it with ``.close()``.
    :raises PgopsError: when the kubernetes library is missing, ``kubeconfig`` names no existing file, the
        file or the context is not valid, or the in-pod configuration is incomplete.
    """
    require_kubernetes()
    configuration = kubernetes.client.Configuration()
    kubeconfig, context = params.get('kubeconfig'), params.get('context')
    if kubeconfig:
        paths = _kubeconfig_paths(kubeconfig)
        if not any(os.path.isfile(path) for path in paths):
            raise PgopsError('kubeconfig %r does not exist (option kubeconfig, or the environment variables '
                             'K8S_AUTH_KUBECONFIG / KUBECONFIG). Give the path of a kubeconfig file, or leave them '
                             'unset inside a pod to use its service account.' % kubeconfig)
        _load_kubeconfig(configuration, os.pathsep.join(paths), context, 'kubeconfig %r' % kubeconfig)
    elif not context and os.environ.get(IN_CLUSTER_ENV):
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except (ConfigException, OSError) as exc:
            raise PgopsError('Cannot use the service account of this pod (%s is set, and no kubeconfig was given): %s '
                             'Mount a service-account token (automountServiceAccountToken), or give kubeconfig.'
                             % (IN_CLUSTER_ENV, exc))
    else:
        default = os.path.expanduser(DEFAULT_KUBECONFIG)
        if not os.path.isfile(default):
            raise PgopsError('No Kubernetes configuration: the option kubeconfig, K8S_AUTH_KUBECONFIG and KUBECONFIG are '
                             'unset, this is not a pod (%s is unset), and %s does not exist.'
                             % (IN_CLUSTER_ENV, DEFAULT_KUBECONFIG))
        _load_kubeconfig(configuration, default, context, 'the default kubeconfig %s' % DEFAULT_KUBECONFIG)
    if params.get('validate_certs') is not None:
        configuration.verify_ssl = bool(params['validate_certs'])
    return kubernetes.client.ApiClient(configuration)


def client_secrets(client):
    """The credentials held by an ``ApiClient``'s configuration (bearer tokens, basic-auth password), to
    mask in any message. Each token is listed with and without its ``Bearer`` prefix.

    :returns: list of str.
    """
    configuration = client.configuration
    secrets = []
    for value in list((configuration.api_key or {}).values()) + [configuration.password]:
        if value:
            secrets.append(str(value))
            secrets.append(str(value).split(' ', 1)[-1])
    return secrets


def _status_of(exc):
    """The ``Status`` object a failed API call returned (Kubernetes API conventions: every error body is a
    ``kind: Status`` object), or ``{}`` when the body is not one (``404 page not found`` is plain text)."""
    try:
        body = json.loads(exc.body or b'{}')
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) and body.get('kind') == 'Status' else {}


def get_namespaced_custom_object(client, group, version, plural, namespace, name, kind=None):
    """GET one namespaced custom object, such as a CloudNativePG ``Cluster``.

    :param client: ``kubernetes.client.ApiClient`` (see :func:`api_client`).
    :param group: API group, such as ``postgresql.cnpg.io``; ``version`` such as ``v1``; ``plural`` such as ``clusters``.
    :param kind: the kind's name for messages (``Cluster``); defaults to ``plural``.
    :returns: the object as the API server returns it (a dict: ``apiVersion``, ``kind``, ``metadata``,
        ``spec``, ``status``).
    :raises PgopsError: naming the object, the API server and what to do: not found (404), missing
        resource type (404 without a Status, so the CRD is not installed), bad credentials (401), missing
        RBAC (403, naming the verb, resource and namespace needed), unreachable server, TLS failures.
        Credentials are masked in every message.
    """
    kind = kind or plural
    server = client.configuration.host
    secrets = client_secrets(client)
    resource = '%s.%s' % (plural, group)
    api = kubernetes.client.CustomObjectsApi(client)
    try:
        return api.get_namespaced_custom_object(group, version, namespace, plural, name,
                                                _request_timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    except ApiException as exc:
        status = _status_of(exc)
        said = redact(status.get('message') or exc.reason or '', secrets)
        if exc.status == 404 and status.get('reason') == 'NotFound':
            raise PgopsError('%s %s/%s not found at the Kubernetes API server %s (%s). Check the name and the namespace.'
                             % (kind, namespace, name, server, said))
        if exc.status == 404:
            raise PgopsError('The Kubernetes API server %s does not serve %s/%s %s (404 %s). Is the operator that '
                             'defines it installed (its CustomResourceDefinition %s)?'
                             % (server, group, version, plural, said.strip() or 'Not Found', resource))
        if exc.status == 401:
            raise PgopsError('The Kubernetes API server %s rejected the credentials (401 Unauthorized: %s). Check the '
                             'token or client certificate of the kubeconfig user, or the service account token.'
                             % (server, said))
        if exc.status == 403:
            raise PgopsError('Forbidden (403) to read %s %s/%s at %s: %s. The identity needs RBAC permission "get" on '
                             '%s in namespace %s (a Role with apiGroups: [%s], resources: [%s], verbs: [get], bound '
                             'to it by a RoleBinding in that namespace).'
                             % (kind, namespace, name, server, said, resource, namespace, group, plural))
        if not exc.status:  # TLS and request-preparation failures come back with status 0
            raise PgopsError('Cannot talk to the Kubernetes API server %s: %s. Check validate_certs and the '
                             'certificate-authority of the kubeconfig cluster.'
                             % (server, redact(str(exc.reason).replace('\n', ' '), secrets)))
        raise PgopsError('Reading %s %s/%s from the Kubernetes API server %s failed: %s %s'
                         % (kind, namespace, name, server, exc.status, said))
    except urllib3.exceptions.HTTPError as exc:
        reason = getattr(exc, 'reason', None) or exc
        if isinstance(reason, urllib3.exceptions.SSLError):
            hint = 'Check the certificate-authority of the kubeconfig cluster, or validate_certs.'
        else:
            hint = 'Check that the server address in the kubeconfig is right and that this host can reach it.'
        raise PgopsError('Cannot reach the Kubernetes API server %s: %s. %s' % (server, redact(reason, secrets), hint))
