# -*- coding: utf-8 -*-
"""The unlogged_restorer role renders valid, safe, stable manifests; validate_manifests catches broken ones.

Every render goes through ansible-playbook, as a user runs the role; no cluster is needed or used.
"""

from __future__ import annotations

import filecmp
import json
import os

import pytest
import yaml

from tests.manifest_checks import assert_valid, load_objects, render_role, run_ansible_playbook

BASE_VARS = {'unlogged_restorer_cnpg_cluster': 'rem-db', 'unlogged_restorer_s3_bucket': 'rem-io-prod'}
ARGO_FILES = {'argo-serviceaccount.yaml', 'argo-role.yaml', 'argo-rolebinding.yaml', 'argo-eventsource.yaml',
              'argo-sensor.yaml'}
CORE_FILES = {'serviceaccount.yaml', 'role.yaml', 'rolebinding.yaml', 'cronjob.yaml'}


def _render(tmp_path, name='out', **overrides):
    out = tmp_path / name
    role_vars = dict(BASE_VARS, unlogged_restorer_manifests_dir=str(out), **overrides)
    proc = render_role(tmp_path, 'unlogged_restorer', role_vars)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _pod_spec(job_spec):
    return job_spec['template']['spec']


@pytest.fixture(scope='module')
def default_render(tmp_path_factory):
    out, _proc = _render(tmp_path_factory.mktemp('default'))
    return out


def test_default_render_is_valid_and_complete(default_render):
    result = assert_valid(default_render)
    assert set(os.listdir(default_render)) == CORE_FILES | ARGO_FILES | {'kustomization.yaml'}
    assert len(result['objects']) == 9
    kustomization = yaml.safe_load((default_render / 'kustomization.yaml').read_text())
    assert set(kustomization['resources']) == CORE_FILES | ARGO_FILES


def test_cronjob_runs_the_playbook_every_5_minutes_safely(default_render):
    cronjob = load_objects(default_render)['cronjob.yaml']
    spec = cronjob['spec']
    assert spec['schedule'] == '*/5 * * * *' and spec['concurrencyPolicy'] == 'Forbid'
    assert spec['successfulJobsHistoryLimit'] == 3 and spec['failedJobsHistoryLimit'] == 3
    job = spec['jobTemplate']['spec']
    assert job['activeDeadlineSeconds'] == 600 and job['backoffLimit'] == 2
    pod = _pod_spec(job)
    container = pod['containers'][0]
    assert container['command'] == ['ansible-playbook']
    assert container['args'][0] == 'pgops.resilience.unlogged_check_and_restore'
    assert json.loads(container['args'][2])['unlogged_target_table'] == 'kv_store'
    # Pinned image, never :latest.
    assert container['image'] == 'ghcr.io/pgops/resilience-ee:0.1.0'
    # The connection string comes from the Secret, never inline.
    env = {item['name']: item for item in container['env']}
    assert env['POSTGRES__CONNECTION_STRING'] == {
        'name': 'POSTGRES__CONNECTION_STRING',
        'valueFrom': {'secretKeyRef': {'name': 'rem-database-credentials', 'key': 'uri'}}}
    assert env['S3__BUCKET_NAME']['value'] == 'rem-io-prod' and env['CNPG__CLUSTER_NAME']['value'] == 'rem-db'
    assert 'postgresql://' not in (default_render / 'cronjob.yaml').read_text()
    # Pod security.
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] > 0
    security = container['securityContext']
    assert security['readOnlyRootFilesystem'] is True and security['allowPrivilegeEscalation'] is False
    assert security['capabilities']['drop'] == ['ALL']
    assert container['resources']['requests'] and container['resources']['limits']
    assert pod['serviceAccountName'] == 'unlogged-restorer'
    assert job['template']['metadata']['labels']['app'] == 'unlogged-restorer'


def test_argo_objects_watch_the_one_cluster_and_trigger_the_same_job(default_render):
    objects = load_objects(default_render)
    source = objects['argo-eventsource.yaml']['spec']['resource']['cluster-status']
    assert (source['group'], source['version'], source['resource']) == ('postgresql.cnpg.io', 'v1', 'clusters')
    assert source['namespace'] == 'default' and source['eventTypes'] == ['UPDATE']
    assert source['filter']['fields'] == [{'key': 'metadata.name', 'operation': '==', 'value': r'^rem\-db$'}]
    sensor = objects['argo-sensor.yaml']['spec']
    dependency = sensor['dependencies'][0]
    assert dependency['eventSourceName'] == objects['argo-eventsource.yaml']['metadata']['name']
    assert dependency['eventName'] == 'cluster-status'
    exprs = dependency['filters']['exprs']
    assert dependency['filters']['exprLogicalOperator'] == 'or'
    assert {f['path'] for f in exprs[0]['fields']} == {'body.status.currentPrimary', 'oldBody.status.currentPrimary'}
    assert "phase == 'Failing over'" in exprs[1]['expr'] and 'phase != previousPhase' in exprs[1]['expr']
    job = sensor['triggers'][0]['template']['k8s']['source']['resource']
    assert sensor['triggers'][0]['template']['k8s']['operation'] == 'create'
    # The event-driven Job runs exactly what the CronJob runs.
    assert job['spec'] == objects['cronjob.yaml']['spec']['jobTemplate']['spec']


def test_rbac_grants_only_the_verbs_needed(default_render):
    objects = load_objects(default_render)
    assert objects['role.yaml']['rules'] == [{'apiGroups': ['postgresql.cnpg.io'], 'resources': ['clusters'],
                                              'resourceNames': ['rem-db'], 'verbs': ['get']}]
    assert objects['argo-role.yaml']['rules'] == [
        {'apiGroups': ['postgresql.cnpg.io'], 'resources': ['clusters'], 'verbs': ['get', 'list', 'watch']},
        {'apiGroups': ['batch'], 'resources': ['jobs'], 'verbs': ['create']}]
    for binding, account in (('rolebinding.yaml', 'serviceaccount.yaml'), ('argo-rolebinding.yaml', 'argo-serviceaccount.yaml')):
        assert objects[binding]['subjects'][0]['name'] == objects[account]['metadata']['name']
    for name in ('argo-eventsource.yaml', 'argo-sensor.yaml'):
        assert objects[name]['spec']['template']['serviceAccountName'] == 'unlogged-restorer-argo'


def test_argo_off_renders_only_the_cronjob_side_and_removes_stale_files(tmp_path):
    out, _proc = _render(tmp_path)
    assert ARGO_FILES <= set(os.listdir(out))
    out, _proc = _render(tmp_path, unlogged_restorer_argo_enabled=False)
    assert set(os.listdir(out)) == CORE_FILES | {'kustomization.yaml'}
    assert len(assert_valid(out)['objects']) == 4


def test_custom_names_are_valid_and_used_everywhere(tmp_path):
    out, _proc = _render(
        tmp_path, unlogged_restorer_name='cache-fixer', unlogged_restorer_namespace='payments',
        unlogged_restorer_cnpg_cluster='pay-db', unlogged_restorer_database_secret_name='pay-db-app',
        unlogged_restorer_database_secret_key='uri', unlogged_restorer_s3_credentials_secret_name='pay-s3',
        unlogged_restorer_s3_endpoint_url='https://minio.payments.svc:9000', unlogged_restorer_time_zone='Europe/Paris',
        unlogged_restorer_labels={'team': 'payments'}, unlogged_restorer_image='registry.local:5000/ee@sha256:' + 'a' * 64,
        unlogged_restorer_source_tables=['orders', 'customers'])
    assert_valid(out)
    objects = load_objects(out)
    assert {o['metadata']['namespace'] for o in objects.values()} == {'payments'}
    assert {o['metadata']['labels']['team'] for o in objects.values()} == {'payments'}
    assert objects['cronjob.yaml']['metadata']['name'] == 'cache-fixer'
    assert objects['cronjob.yaml']['spec']['timeZone'] == 'Europe/Paris'
    assert objects['argo-sensor.yaml']['metadata']['name'] == 'cache-fixer-trigger'
    container = _pod_spec(objects['cronjob.yaml']['spec']['jobTemplate']['spec'])['containers'][0]
    assert container['envFrom'] == [{'secretRef': {'name': 'pay-s3'}}]
    assert json.loads(container['args'][2])['unlogged_source_tables'] == ['orders', 'customers']
    assert objects['role.yaml']['rules'][0]['resourceNames'] == ['pay-db']


def test_rendering_is_stable(tmp_path):
    first, _proc = _render(tmp_path, 'first')
    second, proc = _render(tmp_path, 'second')
    comparison = filecmp.dircmp(str(first), str(second))
    assert sorted(os.listdir(first)) == sorted(os.listdir(second))
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    for name in os.listdir(first):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    # Rendering again into the same directory changes nothing.
    _again, proc = _render(tmp_path, 'second')
    assert 'changed=0' in proc.stdout, proc.stdout


@pytest.mark.parametrize('overrides, message', [
    ({'unlogged_restorer_backoff_limit': 'lots'}, 'unlogged_restorer_backoff_limit'),
    ({'unlogged_restorer_argo_enabled': 'sometimes'}, 'unlogged_restorer_argo_enabled'),
    ({'unlogged_restorer_cnpg_cluster': None}, 'unlogged_restorer_cnpg_cluster'),
], ids=['int', 'bool', 'required'])
def test_wrong_type_fails_before_anything_renders(tmp_path, overrides, message):
    out = tmp_path / 'out'
    role_vars = dict(BASE_VARS, unlogged_restorer_manifests_dir=str(out))
    role_vars.update(overrides)
    role_vars = dict((k, v) for k, v in role_vars.items() if v is not None)
    proc = render_role(tmp_path, 'unlogged_restorer', role_vars)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert 'Validating arguments against arg spec' in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize('image', ['ghcr.io/pgops/resilience-ee:latest', 'ghcr.io/pgops/resilience-ee',
                                   'registry.local:5000/ee'])
def test_unpinned_image_is_refused(tmp_path, image):
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'unlogged_restorer', dict(BASE_VARS, unlogged_restorer_manifests_dir=str(out),
                                                           unlogged_restorer_image=image))
    assert proc.returncode != 0 and 'pinned tag' in proc.stdout
    assert not out.exists()


def test_validate_manifests_playbook_accepts_the_render(default_render):
    proc = run_ansible_playbook('pgops.resilience.validate_manifests', {'validate_manifests_paths': str(default_render)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '9 objects valid against Kubernetes 1.33' in proc.stdout


@pytest.mark.parametrize('file_name, path, typo, expected', [
    ('cronjob.yaml', ['spec'], ('concurrencyPolicy', 'concurrencyPolcy'), "'concurrencyPolcy' was unexpected"),
    ('argo-sensor.yaml', ['spec', 'dependencies', 0], ('eventSourceName', 'eventSrcName'), "'eventSrcName' was unexpected"),
    ('argo-eventsource.yaml', ['spec', 'resource', 'cluster-status'], ('eventTypes', 'eventType'), "'eventType' was unexpected"),
], ids=['core', 'sensor', 'eventsource'])
def test_validate_manifests_playbook_fails_on_a_typo(tmp_path, default_render, file_name, path, typo, expected):
    obj = load_objects(default_render)[file_name]
    node = obj
    for key in path:
        node = node[key]
    node[typo[1]] = node.pop(typo[0])
    broken = tmp_path / file_name
    broken.write_text(yaml.safe_dump(obj))
    proc = run_ansible_playbook('pgops.resilience.validate_manifests', {'validate_manifests_paths': [str(broken)]})
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout


def test_apply_true_hands_the_rendered_files_to_kubernetes_core(tmp_path):
    # No cluster runs here: the kubeconfig points at a closed port, so the first apply fails. What this shows is
    # that rendering finished first and that unlogged_restorer_apply reaches kubernetes.core.k8s with that file.
    kubeconfig = tmp_path / 'kubeconfig'
    kubeconfig.write_text(yaml.safe_dump({
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'nowhere',
        'clusters': [{'name': 'nowhere', 'cluster': {'server': 'http://127.0.0.1:9'}}],
        'contexts': [{'name': 'nowhere', 'context': {'cluster': 'nowhere', 'user': 'nobody'}}],
        'users': [{'name': 'nobody', 'user': {'token': 'not-a-real-token'}}]}))
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'unlogged_restorer', dict(
        BASE_VARS, unlogged_restorer_manifests_dir=str(out), unlogged_restorer_apply=True,
        unlogged_restorer_kubeconfig=str(kubeconfig)))
    assert proc.returncode != 0
    assert 'TASK [pgops.resilience.k8s_manifests : Apply the manifests]' in proc.stdout
    assert 'serviceaccount.yaml' in proc.stdout and '127.0.0.1' in proc.stdout, proc.stdout
    assert_valid(out)


def test_apply_false_never_contacts_a_cluster(default_render, tmp_path):
    proc = render_role(tmp_path, 'unlogged_restorer', dict(BASE_VARS, unlogged_restorer_manifests_dir=str(default_render)))
    assert proc.returncode == 0
    assert 'skipping: [localhost] => (item=serviceaccount.yaml)' in proc.stdout, proc.stdout


def test_check_mode_shows_the_diff_and_writes_nothing(tmp_path):
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'unlogged_restorer', dict(BASE_VARS, unlogged_restorer_manifests_dir=str(out)),
                       check=True, diff=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '+kind: CronJob' in proc.stdout and '+kind: Sensor' in proc.stdout
    assert not out.exists()
