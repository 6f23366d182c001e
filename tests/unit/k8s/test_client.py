# -*- coding: utf-8 -*-
"""Unit tests of the Kubernetes client factory: where the configuration comes from, and its errors (no server).

Each test writes a real kubeconfig file and lets the kubernetes client load it; nothing is sent.
"""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._k8s.client import (
    api_client, client_secrets, k8s_connection_spec)

TOKEN = 'unit-test-token-0123456789'


def kubeconfig(path, current='prod', insecure=None):
    clusters = {'prod': 'https://10.96.0.1:6443', 'staging': 'https://staging.example:6443'}
    document = {
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': current,
        'clusters': [{'name': name, 'cluster': dict({'server': url}, **({'insecure-skip-tls-verify': insecure} if insecure else {}))}
                     for name, url in clusters.items()],
        'users': [{'name': 'ops', 'user': {'token': TOKEN}}],
        'contexts': [{'name': name, 'context': {'cluster': name, 'user': 'ops'}} for name in clusters],
    }
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture
def no_k8s_environment(monkeypatch, tmp_path):
    """No kubeconfig, not a pod, and a home directory without ~/.kube/config."""
    for name in ('K8S_AUTH_KUBECONFIG', 'KUBECONFIG', 'K8S_AUTH_CONTEXT', 'KUBERNETES_SERVICE_HOST', 'KUBERNETES_SERVICE_PORT'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))


def params(**given):
    result = dict((name, option.get('default')) for name, option in k8s_connection_spec().items())
    result.update(given)
    return result


def test_kubeconfig_current_context_and_token(tmp_path):
    client = api_client(params(kubeconfig=kubeconfig(tmp_path / 'config')))
    assert client.configuration.host == 'https://10.96.0.1:6443'
    assert client.configuration.api_key['BearerToken'] == 'Bearer %s' % TOKEN
    assert client.configuration.verify_ssl is True
    assert TOKEN in client_secrets(client) and 'Bearer %s' % TOKEN in client_secrets(client)
    client.close()


def test_context_option_selects_another_cluster(tmp_path):
    client = api_client(params(kubeconfig=kubeconfig(tmp_path / 'config'), context='staging'))
    assert client.configuration.host == 'https://staging.example:6443'
    client.close()


def test_validate_certs_overrides_the_kubeconfig(tmp_path):
    path = kubeconfig(tmp_path / 'config', insecure=True)
    assert api_client(params(kubeconfig=path)).configuration.verify_ssl is False
    assert api_client(params(kubeconfig=path, validate_certs=True)).configuration.verify_ssl is True
    assert api_client(params(kubeconfig=kubeconfig(tmp_path / 'other'), validate_certs=False)).configuration.verify_ssl is False


def test_a_kubeconfig_list_like_KUBECONFIG(tmp_path):  # pylint: disable=invalid-name
    path = kubeconfig(tmp_path / 'config')
    client = api_client(params(kubeconfig='%s:%s' % (tmp_path / 'missing', path)))
    assert client.configuration.host == 'https://10.96.0.1:6443'


def test_missing_kubeconfig_names_the_option(tmp_path):
    with pytest.raises(PgopsError) as err:
        api_client(params(kubeconfig=str(tmp_path / 'nope')))
    assert "kubeconfig '%s' does not exist (option kubeconfig" % (tmp_path / 'nope') in err.value.msg
    assert 'K8S_AUTH_KUBECONFIG / KUBECONFIG' in err.value.msg


def test_unknown_context_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(PgopsError) as err:
        api_client(params(kubeconfig=kubeconfig(tmp_path / 'config'), context='nowhere'))
    assert "with context 'nowhere'" in err.value.msg and 'nowhere' in err.value.msg.split(':', 1)[1]
    broken = tmp_path / 'broken'
    broken.write_text('clusters: [\n')
    with pytest.raises(PgopsError) as err:
        api_client(params(kubeconfig=str(broken)))
    assert err.value.msg.startswith("Cannot use kubeconfig '%s'" % broken)


@pytest.mark.usefixtures('no_k8s_environment')
def test_no_configuration_at_all():
    with pytest.raises(PgopsError) as err:
        api_client(params())
    assert 'No Kubernetes configuration' in err.value.msg and '~/.kube/config does not exist' in err.value.msg


@pytest.mark.usefixtures('no_k8s_environment')
def test_default_kubeconfig_in_the_home_directory(tmp_path):
    (tmp_path / 'home' / '.kube').mkdir(parents=True)
    kubeconfig(tmp_path / 'home' / '.kube' / 'config')
    assert api_client(params()).configuration.host == 'https://10.96.0.1:6443'


@pytest.mark.skipif(os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token'),
                    reason='this machine is a pod with a service account token')
@pytest.mark.usefixtures('no_k8s_environment')
def test_in_a_pod_without_a_service_account_token(monkeypatch):
    monkeypatch.setenv('KUBERNETES_SERVICE_HOST', '10.96.0.1')
    monkeypatch.setenv('KUBERNETES_SERVICE_PORT', '443')
    with pytest.raises(PgopsError) as err:
        api_client(params())
    assert 'service account of this pod' in err.value.msg
    assert 'KUBERNETES_SERVICE_HOST is set' in err.value.msg


def test_spec_follows_kubernetes_core_environment():
    spec = k8s_connection_spec()
    assert spec['kubeconfig']['fallback'][1] == ['K8S_AUTH_KUBECONFIG', 'KUBECONFIG']
    assert spec['context']['fallback'][1] == ['K8S_AUTH_CONTEXT']
    assert spec['validate_certs']['fallback'][1] == ['K8S_AUTH_VERIFY_SSL']
