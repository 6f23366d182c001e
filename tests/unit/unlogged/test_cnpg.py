# -*- coding: utf-8 -*-
"""Unit tests of cnpg_cluster_info's pure logic: a Cluster's status -> the result, and the failover rule (no server).

The Cluster objects are the recorded fixtures the integration tests serve (tests/integration/fixtures/cnpg/);
the first test checks that they fit the CloudNativePG CRD schema, so the logic is tested on real shapes.
"""

from __future__ import annotations

import json
import os

import jsonschema
import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import cnpg
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged.cnpg import (
    cluster_facts, failover_detected, instance_readiness)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(TESTS, 'integration', 'fixtures', 'cnpg')
CLUSTER_CRD = os.path.join(os.path.dirname(TESTS), 'playbooks', 'files', 'crds', 'postgresql.cnpg.io', 'clusters.yaml')


def fixture(name):
    with open(os.path.join(FIXTURES, name + '.json'), encoding='utf-8') as handle:
        return json.load(handle)


def _undeclared_fields(value, schema, path=''):
    """Fields of ``value`` that ``schema`` neither declares nor allows (a typo in a fixture)."""
    found = []
    if isinstance(value, dict) and 'properties' in schema:
        open_ended = schema.get('x-kubernetes-preserve-unknown-fields') or 'additionalProperties' in schema
        for name, item in value.items():
            if name in schema['properties']:
                found += _undeclared_fields(item, schema['properties'][name], path + '/' + name)
            elif not open_ended:
                found.append(path + '/' + name)
    elif isinstance(value, dict) and isinstance(schema.get('additionalProperties'), dict):
        for name, item in value.items():
            found += _undeclared_fields(item, schema['additionalProperties'], path + '/' + name)
    elif isinstance(value, list) and 'items' in schema:
        for index, item in enumerate(value):
            found += _undeclared_fields(item, schema['items'], '%s/%d' % (path, index))
    return found


@pytest.mark.parametrize('name', ['healthy', 'failed_over', 'switchover', 'failing_over', 'not_reconciled'])
def test_fixtures_fit_the_cluster_crd_schema(name):
    with open(CLUSTER_CRD, encoding='utf-8') as handle:
        crd = [doc for doc in yaml.safe_load_all(handle) if doc][0]
    version = [v for v in crd['spec']['versions'] if v['name'] == cnpg.VERSION][0]
    schema = version['schema']['openAPIV3Schema']
    cluster = fixture(name)
    assert (cluster['apiVersion'], cluster['kind']) == ('%s/%s' % (cnpg.GROUP, cnpg.VERSION), crd['spec']['names']['kind'])
    assert crd['spec']['names']['plural'] == cnpg.PLURAL
    assert sorted(cluster['metadata']) == ['creationTimestamp', 'generation', 'name', 'namespace', 'resourceVersion', 'uid']
    jsonschema.Draft7Validator(schema).validate(cluster)
    assert _undeclared_fields(dict((k, v) for k, v in cluster.items() if k != 'metadata'), schema) == []


def test_healthy_cluster():
    facts = cluster_facts(fixture('healthy'))
    assert facts == dict(
        current_primary='rem-db-1', target_primary='rem-db-1', phase='Cluster in healthy state', phase_reason=None,
        instances=3, ready_instances=3, instance_names=['rem-db-1', 'rem-db-2', 'rem-db-3'],
        instances_status={'healthy': ['rem-db-1', 'rem-db-2', 'rem-db-3']},
        instance_readiness=[
            dict(name='rem-db-1', ready=True, role='primary', state='healthy'),
            dict(name='rem-db-2', ready=True, role='replica', state='healthy'),
            dict(name='rem-db-3', ready=True, role='replica', state='healthy'),
        ],
        timeline_id=1, current_primary_timestamp='2026-11-02T09:15:31.482107Z', system_id='7439284711232452633',
        switchover_in_progress=False)


def test_after_a_failover_the_primary_and_timeline_moved():
    facts = cluster_facts(fixture('failed_over'))
    assert facts['current_primary'] == facts['target_primary'] == 'rem-db-2'
    assert facts['timeline_id'] == 2 and facts['switchover_in_progress'] is False
    assert [e['name'] for e in facts['instance_readiness'] if e['role'] == 'primary'] == ['rem-db-2']


def test_switchover_in_progress():
    facts = cluster_facts(fixture('switchover'))
    assert facts['switchover_in_progress'] is True
    assert (facts['current_primary'], facts['target_primary']) == ('rem-db-1', 'rem-db-2')
    assert (facts['phase'], facts['phase_reason']) == ('Switchover in progress', 'Switching over to rem-db-2')
    assert facts['ready_instances'] == 2
    assert facts['instance_readiness'][0] == dict(name='rem-db-1', ready=False, role='primary', state='replicating')


def test_failing_over_marks_the_target_pending():
    facts = cluster_facts(fixture('failing_over'))
    assert facts['target_primary'] == 'pending' and facts['switchover_in_progress'] is True
    assert facts['instances_status'] == {'failed': ['rem-db-1'], 'healthy': ['rem-db-2', 'rem-db-3']}
    assert facts['instance_readiness'][0] == dict(name='rem-db-1', ready=False, role='primary', state='failed')


def test_a_cluster_without_status():
    facts = cluster_facts(fixture('not_reconciled'))
    assert facts['instances'] == 3
    assert facts['current_primary'] is None and facts['target_primary'] is None and facts['phase'] is None
    assert facts['ready_instances'] is None and facts['timeline_id'] is None
    assert facts['instance_names'] == [] and facts['instance_readiness'] == [] and facts['instances_status'] == {}
    assert facts['switchover_in_progress'] is False


def test_zero_ready_instances_are_omitted_by_the_operator():
    """Go's omitempty drops readyInstances: 0, so an absent count in a present status is 0."""
    status = dict(currentPrimary='db-1', targetPrimary='db-1', instanceNames=['db-1'], instancesStatus={'replicating': ['db-1']})
    assert cluster_facts(dict(spec=dict(instances=1), status=status))['ready_instances'] == 0


def test_instance_readiness_lists_pods_missing_from_instance_names():
    status = dict(currentPrimary='db-2', instanceNames=['db-2', 'db-1'],
                  instancesStatus={'healthy': ['db-2'], 'replicating': ['db-4'], 'failed': ['db-3']})
    assert instance_readiness(status) == [
        dict(name='db-2', ready=True, role='primary', state='healthy'),
        dict(name='db-1', ready=False, role='replica', state=None),
        dict(name='db-3', ready=False, role='replica', state='failed'),
        dict(name='db-4', ready=False, role='replica', state='replicating'),
    ]


@pytest.mark.parametrize('current, previous, expected', [
    ('rem-db-2', 'rem-db-1', True),
    ('rem-db-1', 'rem-db-1', False),
    ('rem-db-1', None, False),   # nothing recorded yet
    (None, 'rem-db-1', False),   # the operator has not elected a primary
    (None, None, False),
])
def test_failover_rule(current, previous, expected):
    assert failover_detected(current, previous) is expected


def test_previous_primary_option_overrides_the_watermark_without_reading_it():
    params = dict(previous_primary='rem-db-1', watermark=dict(bucket='b', key='k', endpoint_url='not a url'))
    assert cnpg.previous_primary_from(params, warn=None) == ('rem-db-1', 'option', None)
    assert cnpg.previous_primary_from(dict(previous_primary=None, watermark=None), warn=None) == (None, None, None)


def test_argument_spec_reuses_the_watermark_spec_of_pg_unlogged_rebuild():
    from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import rebuild as unlogged_rebuild
    assert cnpg.argument_spec()['watermark'] == unlogged_rebuild.argument_spec()['watermark']
    secret = cnpg.argument_spec()['watermark']['options']['secret_key']
    assert secret['no_log'] is True


@pytest.mark.parametrize('option', ['name', 'namespace'])
def test_an_empty_name_or_namespace_is_refused_before_any_request(option):
    params = dict(name='rem-db', namespace='rem', kubeconfig='/nonexistent')
    params[option] = ''
    with pytest.raises(PgopsError, match='%s must name the Cluster' % option):
        cnpg.read_cluster(params)
