# -*- coding: utf-8 -*-
"""Strict manifest validation: the schemas are real (kubernetes-validate's and the upstream CRDs in playbooks/files/crds)."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from tests.manifest_checks import CRD_DIR, validate

CRONJOB = {
    'apiVersion': 'batch/v1', 'kind': 'CronJob', 'metadata': {'name': 'check', 'namespace': 'db'},
    'spec': {'schedule': '*/5 * * * *', 'concurrencyPolicy': 'Forbid', 'jobTemplate': {'spec': {'template': {'spec': {
        'restartPolicy': 'Never', 'containers': [{'name': 'check', 'image': 'example/ee:1.0'}]}}}}},
}
CLUSTER = {
    'apiVersion': 'postgresql.cnpg.io/v1', 'kind': 'Cluster', 'metadata': {'name': 'rem-db', 'namespace': 'db'},
    'spec': {'instances': 3, 'storage': {'size': '10Gi'}},
}
SENSOR = {
    'apiVersion': 'argoproj.io/v1alpha1', 'kind': 'Sensor', 'metadata': {'name': 'trigger', 'namespace': 'db'},
    'spec': {
        'dependencies': [{'name': 'changed', 'eventSourceName': 'cnpg', 'eventName': 'cluster-status',
                          'filters': {'exprs': [{'expr': 'a != b', 'fields': [{'name': 'a', 'path': 'body.x'},
                                                                              {'name': 'b', 'path': 'oldBody.x'}]}]}}],
        'triggers': [{'template': {'name': 'run', 'k8s': {'operation': 'create', 'source': {'resource': {
            'apiVersion': 'batch/v1', 'kind': 'Job', 'metadata': {'generateName': 'run-'},
            'spec': {'template': {'spec': {'restartPolicy': 'Never',
                                           'containers': [{'name': 'run', 'image': 'example/ee:1.0'}]}}}}}}}}],
    },
}


@pytest.fixture(scope='module')
def catalog():
    return manifests.SchemaCatalog(CRD_DIR)


def _errors(obj, catalog):
    return manifests.validate_object(obj, catalog)


def test_strict_schema_rejects_unknown_fields_but_keeps_preserved_and_maps():
    schema = {'type': 'object', 'properties': {
        'known': {'type': 'string', 'nullable': True},
        'free': {'type': 'object', 'x-kubernetes-preserve-unknown-fields': True, 'properties': {'a': {}}},
        'map': {'type': 'object', 'additionalProperties': {'type': 'string'}},
    }}
    strict = manifests.strict_schema(schema)
    assert strict['additionalProperties'] is False
    assert 'additionalProperties' not in strict['properties']['free']
    assert strict['properties']['map']['additionalProperties'] == {'type': 'string'}
    assert strict['properties']['known']['type'] == ['string', 'null']
    assert 'additionalProperties' not in schema, 'the input schema must not be modified'


@pytest.mark.parametrize('obj', [CRONJOB, CLUSTER, SENSOR], ids=['core', 'crd', 'argo'])
def test_valid_objects_pass(obj, catalog):
    assert _errors(obj, catalog) == []


def test_typo_in_core_kind_fails(catalog):
    broken = copy.deepcopy(CRONJOB)
    broken['spec']['concurrencyPolcy'] = broken['spec'].pop('concurrencyPolicy')
    errors = _errors(broken, catalog)
    assert len(errors) == 1 and "'concurrencyPolcy' was unexpected" in errors[0] and errors[0].startswith('spec:')


def test_wrong_type_in_core_kind_fails(catalog):
    broken = copy.deepcopy(CRONJOB)
    broken['spec']['successfulJobsHistoryLimit'] = 'three'
    assert any('successfulJobsHistoryLimit' in e for e in _errors(broken, catalog))


def test_typo_in_custom_resource_fails(catalog):
    broken = copy.deepcopy(CLUSTER)
    broken['spec']['instance'] = broken['spec'].pop('instances')
    assert any("'instance' was unexpected" in e for e in _errors(broken, catalog))


def test_typo_in_custom_resource_metadata_fails(catalog):
    broken = copy.deepcopy(CLUSTER)
    broken['metadata']['label'] = {'a': 'b'}
    assert any(e.startswith('metadata:') and "'label' was unexpected" in e for e in _errors(broken, catalog))


def test_typo_inside_argo_spec_fails(catalog):
    # The Argo CRD accepts any spec; only the full JSON Schema sees this.
    broken = copy.deepcopy(SENSOR)
    broken['spec']['dependencies'][0]['filters']['exprz'] = broken['spec']['dependencies'][0]['filters'].pop('exprs')
    assert any("'exprz' was unexpected" in e for e in _errors(broken, catalog))


def test_typo_in_object_a_sensor_creates_fails(catalog):
    broken = copy.deepcopy(SENSOR)
    job = broken['spec']['triggers'][0]['template']['k8s']['source']['resource']
    job['spec']['template']['spec']['containers'][0]['imagePullPolcy'] = 'Always'
    errors = _errors(broken, catalog)
    assert any(e.startswith('trigger run: ') and "'imagePullPolcy' was unexpected" in e for e in errors)


def test_unknown_kind_fails(catalog):
    errors = _errors({'apiVersion': 'example.com/v1', 'kind': 'Widget', 'metadata': {'name': 'w'}}, catalog)
    assert errors and 'no schema for example.com/v1 Widget' in errors[0]


def test_kustomization_must_list_exactly_the_object_files(tmp_path):
    import yaml
    (tmp_path / 'cronjob.yaml').write_text(yaml.safe_dump(CRONJOB))
    (tmp_path / 'kustomization.yaml').write_text(yaml.safe_dump({'resources': ['missing.yaml']}))
    result = validate([tmp_path])
    assert not result['valid']
    assert any('lists missing.yaml, which does not exist' in e for e in result['errors'])
    assert any('does not list cronjob.yaml' in e for e in result['errors'])


def test_unparsable_file_and_missing_path(tmp_path):
    (tmp_path / 'bad.yaml').write_text('a: [unclosed\n')
    result = validate([tmp_path / 'bad.yaml'])
    assert not result['valid'] and 'cannot parse' in result['errors'][0]
    with pytest.raises(PgopsError, match='does not exist'):
        validate([tmp_path / 'nope'])


def test_unsupported_kubernetes_version_is_named():
    with pytest.raises(PgopsError, match='kubernetes_version 9.99'):
        manifests.validate_paths([CRD_DIR], CRD_DIR, kubernetes_version='9.99')


def test_missing_crd_dir_is_named(tmp_path):
    with pytest.raises(PgopsError, match='crd_dir .* has no readable index.json'):
        manifests.SchemaCatalog(str(tmp_path))
