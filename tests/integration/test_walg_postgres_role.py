# -*- coding: utf-8 -*-
"""The walg_postgres role renders the wal-g runbook's eleven objects valid and safe, and what it renders works.

Every render goes through ansible-playbook, as a user runs the role; no cluster is needed or used. The outcomes
checked are the runbook's (walg-single-node.md): a one-replica StatefulSet whose archive_command is ``wal-g wal-push
%p``, a daily backup CronJob on the server's node and claim, restore and PITR drills in the DR namespace, example
Secrets that hold placeholders and are never applied, wal-g installed at start-up only when pinned by version and
checksum. The init containers' scripts run here for real (sh, curl, sha256sum, tar, the real wal-g), and a real
PostgreSQL started with the rendered settings ships its WAL with wal-g to the sandbox's S3, after which the backup
and restore-drill CronJobs' own playbook arguments back it up and restore it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid

import psycopg2
import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port, server_environment
from pgops_sandbox.pgbin import find_bindir, program
from tests.manifest_checks import CRD_DIR, load_objects, render_role, run_ansible_playbook
from tests.requirements import tool_missing

# The Kubernetes release the rendered objects are validated against (kubernetes-validate, strict).
KUBERNETES_VERSION = '1.33'
EE_IMAGE = 'ghcr.io/pgops/resilience-ee:0.1.0'
PREFIX = 's3://ternent-backups/postgres'
PGDATA = '/var/lib/postgresql/data/pgdata'
PLACEHOLDER = 'REPLACE_ME'
BASE_VARS = {'walg_postgres_prefix': PREFIX, 'walg_postgres_image': 'ghcr.io/example/postgres-walg:15.15-3.0.9'}
KUSTOMIZED = ['configmap.yaml', 'service.yaml', 'statefulset.yaml', 'networkpolicy.yaml', 'serviceaccount-backup.yaml',
              'cronjob-backup.yaml', 'namespace-dr.yaml', 'serviceaccount-drill.yaml', 'cronjob-restore-drill.yaml',
              'cronjob-pitr-drill.yaml']
EXAMPLES = {'secret-credentials.example.yaml', 'secret-backup.example.yaml', 'secret-backup-dr.example.yaml'}
SHA256 = 'a' * 64
INSTALL_VARS = {'walg_postgres_walg_install': True, 'walg_postgres_walg_install_version': '3.0.9',
                'walg_postgres_walg_install_sha256': SHA256, 'walg_postgres_image': 'postgres:15.15-bookworm'}
CHECKS = [{'name': 'marker rows', 'query': 'SELECT count(*) FROM walg_role_marker', 'expected': 2}]
CUSTOM_VARS = {
    'walg_postgres_name': 'ledger-db', 'walg_postgres_namespace': 'ledger', 'walg_postgres_create_namespace': True,
    'walg_postgres_dr_namespace': 'ledger-recovery', 'walg_postgres_labels': {'team': 'platform'},
    'walg_postgres_prefix': 's3://ledger-walg/prod', 'walg_postgres_s3_endpoint_url': 'https://fra1.digitaloceanspaces.com',
    'walg_postgres_s3_region': 'fra1', 'walg_postgres_walg_bin': '/usr/local/bin/wal-g', 'walg_postgres_port': 5433,
    'walg_postgres_database': 'ledger', 'walg_postgres_superuser': 'admin', 'walg_postgres_storage_class': 'do-block-storage',
    'walg_postgres_storage_size': '50Gi', 'walg_postgres_archive_timeout_seconds': 60,
    'walg_postgres_postgresql_parameters': {'max_connections': 200, 'wal_level': 'logical', 'log_line_prefix': "%m [%p] '%q'"},
    'walg_postgres_allowed_clients': [{'namespaceSelector': {'matchLabels': {'kubernetes.io/metadata.name': 'api'}}}],
    'walg_postgres_jobs_image': 'registry.local:5000/ee@sha256:' + 'b' * 64, 'walg_postgres_time_zone': 'Europe/Paris',
    'walg_postgres_backup_schedule': '30 1 * * *', 'walg_postgres_delta_max_steps': 6,
    'walg_postgres_retention_enabled': False, 'walg_postgres_keep_daily': 14, 'walg_postgres_keep_weekly': 8,
    'walg_postgres_recovery_window_days': 10, 'walg_postgres_pitr_drill_schedule': '0 4 15 * *',
    'walg_postgres_pitr_recovery_target_time': '2026-03-01T10:30:00Z', 'walg_postgres_drill_checks': CHECKS,
    'walg_postgres_drill_amcheck': False, 'walg_postgres_restore_drill_enabled': False,
    'walg_postgres_drill_scratch_volume': {'ephemeral': {'volumeClaimTemplate': {'spec': {
        'accessModes': ['ReadWriteOnce'], 'resources': {'requests': {'storage': '60Gi'}}}}}},
}


def _render(tmp_path, name='out', **overrides):
    out = tmp_path / name
    proc = render_role(tmp_path, 'walg_postgres', dict(BASE_VARS, walg_postgres_manifests_dir=str(out), **overrides))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _refused(tmp_path, **overrides):
    """Render with ``overrides`` expecting failure; the run's output. Nothing may have been rendered."""
    out = tmp_path / 'refused'
    proc = render_role(tmp_path, 'walg_postgres', dict(BASE_VARS, walg_postgres_manifests_dir=str(out), **overrides))
    assert proc.returncode != 0, proc.stdout
    assert not out.exists()
    return proc.stdout + proc.stderr


def _assert_valid(out):
    """Every object in the directory and in examples/ is valid for KUBERNETES_VERSION; the kustomization lists exactly
    the top-level files. Returns the validation result."""
    paths = [str(path) for path in (out, out / 'examples') if path.exists()]
    result = manifests.validate_paths(paths, CRD_DIR, KUBERNETES_VERSION)
    assert result['valid'], '\n'.join(result['errors'])
    return result


def _objects(out):
    """``{relative path: object}`` of every rendered file."""
    objects = dict(load_objects(out))
    if (out / 'examples').exists():
        objects.update({'examples/' + name: obj for name, obj in load_objects(out / 'examples').items()})
    return objects


def _job_pod(cronjob):
    return cronjob['spec']['jobTemplate']['spec']['template']['spec']


def _env(container):
    return {item['name']: item.get('value', item.get('valueFrom')) for item in container.get('env', [])}


def _run(pod, image=EE_IMAGE):
    """The playbook a job pod runs and its extra variables (one JSON document, parsed)."""
    container, = pod['containers']
    assert container['command'] == ['ansible-playbook'] and container['image'] == image
    assert len(container['args']) == 3 and container['args'][1] == '--extra-vars'
    return container['args'][0], json.loads(container['args'][2])


def _settings(configmap):
    """The ConfigMap's postgresql.conf as ``{name: value}`` (quotes removed, as PostgreSQL reads them)."""
    settings = {}
    for line in configmap['data']['postgresql.conf'].splitlines():
        if line.strip() and not line.startswith('#'):
            name, value = line.split(' = ', 1)
            assert value[0] == value[-1] == "'", line
            settings[name] = value[1:-1].replace("''", "'").replace('\\\\', '\\')
    return settings


def _init(pod, name):
    return {c['name']: c for c in pod['initContainers']}[name]


def _assert_locked_down(pod):
    """No root, no token, nothing to escalate to, no capability, a read-only root filesystem, every container."""
    assert pod['automountServiceAccountToken'] is False and pod['securityContext']['runAsNonRoot'] is True
    assert pod['securityContext']['seccompProfile'] == {'type': 'RuntimeDefault'}
    for container in pod.get('initContainers', []) + pod['containers']:
        context = container['securityContext']
        assert context['runAsNonRoot'] is True and context['runAsUser'] == 999 and context['allowPrivilegeEscalation'] is False
        assert context['readOnlyRootFilesystem'] is True and context['capabilities'] == {'drop': ['ALL']}
        assert container['resources']['limits'] and container['resources']['requests']


@pytest.fixture(scope='module')
def default_out(tmp_path_factory):
    return _render(tmp_path_factory.mktemp('default'))


@pytest.fixture(scope='module')
def default_objects(default_out):
    return _objects(default_out)


def test_default_render_is_the_runbooks_eleven_objects_and_valid(default_out, default_objects):
    result = _assert_valid(default_out)
    # The runbook's eleven (two Secrets, ConfigMap, Service, StatefulSet, NetworkPolicy, backup CronJob, DR namespace,
    # the Secret's DR copy, two drill CronJobs) and the jobs' two ServiceAccounts.
    assert len(result['objects']) == 13
    assert sorted(obj['kind'] for obj in default_objects.values()) == sorted(
        ['Secret'] * 3 + ['ConfigMap', 'Service', 'StatefulSet', 'NetworkPolicy', 'Namespace'] + ['CronJob'] * 3
        + ['ServiceAccount'] * 2)
    assert set(os.listdir(default_out)) == set(KUSTOMIZED) | {'kustomization.yaml', 'examples'}
    assert set(os.listdir(default_out / 'examples')) == EXAMPLES
    # The runbook's apply order; the example Secrets stay out of `kubectl apply -k`.
    assert yaml.safe_load((default_out / 'kustomization.yaml').read_text())['resources'] == KUSTOMIZED
    namespaces = {name: obj['metadata'].get('namespace') for name, obj in default_objects.items()}
    dr = {'namespace-dr.yaml', 'serviceaccount-drill.yaml', 'cronjob-restore-drill.yaml', 'cronjob-pitr-drill.yaml',
          'examples/secret-backup-dr.example.yaml'}
    assert {name for name, ns in namespaces.items() if ns == 'backend-dr'} == dr - {'namespace-dr.yaml'}
    assert {name for name, ns in namespaces.items() if ns == 'backend'} == set(default_objects) - dr
    assert default_objects['namespace-dr.yaml']['metadata']['name'] == 'backend-dr'
    assert default_objects['namespace-dr.yaml']['metadata']['labels']['pod-security.kubernetes.io/enforce'] == 'restricted'


def test_the_example_secrets_hold_placeholders_for_every_credential(default_out, default_objects):
    secrets = {name: obj for name, obj in default_objects.items() if obj['kind'] == 'Secret'}
    assert set(secrets) == {'examples/' + name for name in EXAMPLES}
    assert secrets['examples/secret-credentials.example.yaml']['stringData'] == {
        'POSTGRES_PASSWORD': PLACEHOLDER, 'POSTGRES_USER': 'postgres', 'POSTGRES_DB': 'app'}
    backup = {'AWS_ACCESS_KEY_ID': PLACEHOLDER, 'AWS_SECRET_ACCESS_KEY': PLACEHOLDER, 'WALG_S3_PREFIX': PREFIX,
              'AWS_REGION': 'us-east-1'}
    for name, namespace in (('secret-backup.example.yaml', 'backend'), ('secret-backup-dr.example.yaml', 'backend-dr')):
        secret = secrets['examples/' + name]
        assert (secret['metadata']['name'], secret['metadata']['namespace']) == ('ternent-postgres-backup', namespace)
        assert secret['stringData'] == backup and 'data' not in secret
    # Nothing but the examples carries a Secret; every pod reads the Secrets by reference.
    assert not any('kind: Secret' in path.read_text() for path in default_out.glob('*.yaml'))


def test_the_server_archives_every_wal_segment_with_wal_g(default_objects):
    settings = _settings(default_objects['configmap.yaml'])
    assert settings == {'include_if_exists': PGDATA + '/postgresql.conf', 'archive_mode': 'on',
                        'archive_command': 'wal-g wal-push %p', 'archive_timeout': '300s', 'wal_level': 'replica',
                        'listen_addresses': '*', 'port': '5432'}
    statefulset = default_objects['statefulset.yaml']
    spec = statefulset['spec']
    assert spec['replicas'] == 1 and spec['serviceName'] == 'ternent-postgres'
    assert spec['persistentVolumeClaimRetentionPolicy'] == {'whenDeleted': 'Retain', 'whenScaled': 'Retain'}
    claim, = spec['volumeClaimTemplates']
    assert claim['metadata']['name'] == 'data' and claim['spec']['accessModes'] == ['ReadWriteOnce']
    pod = spec['template']['spec']
    _assert_locked_down(pod)
    # A change of the settings rolls the pod.
    conf = default_objects['configmap.yaml']['data']['postgresql.conf']
    assert spec['template']['metadata']['annotations']['checksum/postgresql.conf'] == hashlib.sha256(conf.encode()).hexdigest()
    assert [c['name'] for c in pod['initContainers']] == ['walg-check']
    db, = pod['containers']
    assert db['args'] == ['postgres', '-c', 'config_file=/etc/postgresql/pgops/postgresql.conf']
    env = _env(db)
    assert env['WALG_S3_PREFIX'] == PREFIX and env['AWS_REGION'] == 'us-east-1' and 'AWS_ENDPOINT' not in env
    assert env['PGDATA'] == PGDATA and env['POSTGRES_USER'] == 'postgres' and env['POSTGRES_DB'] == 'app'
    assert env['POSTGRES_PASSWORD'] == {'secretKeyRef': {'name': 'ternent-postgres', 'key': 'POSTGRES_PASSWORD'}}
    assert db['envFrom'] == [{'secretRef': {'name': 'ternent-postgres-backup'}}]
    assert {m['name']: m['mountPath'] for m in db['volumeMounts']} == {
        'data': '/var/lib/postgresql/data', 'config': '/etc/postgresql/pgops', 'run': '/var/run/postgresql', 'tmp': '/tmp'}
    assert {'name': 'config', 'configMap': {'name': 'ternent-postgres-config'}} in pod['volumes']
    assert 'livenessProbe' not in db and db['lifecycle']['preStop']['exec']['command'][:2] == ['pg_ctl', 'stop']
    service = default_objects['service.yaml']['spec']
    assert service['selector'] == {'app': 'ternent-postgres'} and service['ports'][0]['port'] == 5432


def test_the_backup_cronjob_runs_on_the_servers_node_with_its_claim(default_objects):
    cronjob = default_objects['cronjob-backup.yaml']
    assert (cronjob['spec']['schedule'], cronjob['spec']['timeZone']) == ('0 3 * * *', 'UTC')
    assert cronjob['spec']['concurrencyPolicy'] == 'Forbid'
    pod = _job_pod(cronjob)
    _assert_locked_down(pod)
    assert _run(pod) == ('pgops.resilience.walg_backup', {
        'walg_prefix': PREFIX, 'walg_data_directory': PGDATA, 'walg_delta_max_steps': 0, 'walg_retention_enabled': True,
        'walg_keep_daily': 7, 'walg_keep_weekly': 4, 'walg_recovery_window_days': 7, 'walg_env_from_environment': []})
    # The StatefulSet's claim <template>-<name>-0, read-only, on the node of the pod labelled app=ternent-postgres.
    statefulset = default_objects['statefulset.yaml']
    claim_name = '%s-%s-0' % (statefulset['spec']['volumeClaimTemplates'][0]['metadata']['name'], statefulset['metadata']['name'])
    assert {'name': 'data', 'persistentVolumeClaim': {'claimName': claim_name, 'readOnly': True}} in pod['volumes']
    container = pod['containers'][0]
    assert {'name': 'data', 'mountPath': '/var/lib/postgresql/data', 'readOnly': True} in container['volumeMounts']
    term, = pod['affinity']['podAffinity']['requiredDuringSchedulingIgnoredDuringExecution']
    assert term == {'topologyKey': 'kubernetes.io/hostname',
                    'labelSelector': {'matchLabels': statefulset['spec']['selector']['matchLabels']}}
    # The server's uid, to read PGDATA (0700).
    assert pod['securityContext']['runAsUser'] == statefulset['spec']['template']['spec']['securityContext']['runAsUser'] == 999
    assert pod['serviceAccountName'] == 'ternent-postgres-backup'
    assert default_objects['serviceaccount-backup.yaml']['automountServiceAccountToken'] is False
    env = _env(container)
    assert env == {'AWS_REGION': 'us-east-1', 'PGHOST': 'ternent-postgres', 'PGPORT': '5432', 'PGUSER': 'postgres',
                   'PGPASSWORD': {'secretKeyRef': {'name': 'ternent-postgres', 'key': 'POSTGRES_PASSWORD'}},
                   'PGDATABASE': 'app', 'HOME': '/tmp', 'TMPDIR': '/tmp', 'ANSIBLE_LOCAL_TEMP': '/tmp/.ansible/tmp',
                   'ANSIBLE_REMOTE_TEMP': '/tmp/.ansible/tmp'}
    assert container['envFrom'] == [{'secretRef': {'name': 'ternent-postgres-backup'}}]


@pytest.mark.parametrize('file_name, playbook, schedule, extra', [
    ('cronjob-restore-drill.yaml', 'pgops.resilience.walg_restore_drill', '0 5 * * 0', {}),
    # Without a target time the playbook picks one inside the recovery window.
    ('cronjob-pitr-drill.yaml', 'pgops.resilience.walg_pitr_drill', '0 6 1 * *', {'walg_recovery_window_days': 7}),
], ids=['restore', 'pitr'])
def test_the_drills_run_in_the_dr_namespace_from_a_scratch_volume(default_objects, file_name, playbook, schedule, extra):
    cronjob = default_objects[file_name]
    assert cronjob['metadata']['namespace'] == 'backend-dr'
    assert (cronjob['spec']['schedule'], cronjob['spec']['timeZone']) == (schedule, 'UTC')
    pod = _job_pod(cronjob)
    _assert_locked_down(pod)
    assert _run(pod) == (playbook, dict({
        'walg_prefix': PREFIX, 'walg_drill_checks': [], 'walg_drill_amcheck': True, 'walg_drill_database': 'app',
        'walg_drill_scratch_parent': '/scratch', 'walg_env_from_environment': []}, **extra))
    assert pod['serviceAccountName'] == 'ternent-postgres-drill' and 'affinity' not in pod
    assert default_objects['serviceaccount-drill.yaml']['automountServiceAccountToken'] is False
    container = pod['containers'][0]
    env = _env(container)
    # No connection to the server at all; the storage's settings and the DR copy of the backup Secret only.
    assert not [name for name in env if name.startswith('PG')]
    assert env['TMPDIR'] == '/scratch' and env['AWS_REGION'] == 'us-east-1'
    assert container['envFrom'] == [{'secretRef': {'name': 'ternent-postgres-backup'}}]
    assert {m['name']: m['mountPath'] for m in container['volumeMounts']} == {'scratch': '/scratch', 'tmp': '/tmp'}
    assert {'name': 'scratch', 'emptyDir': {}} in pod['volumes']


def test_only_the_application_and_the_backup_reach_the_server(default_objects):
    policy = default_objects['networkpolicy.yaml']['spec']
    assert policy['podSelector'] == {'matchLabels': {'app': 'ternent-postgres'}}
    assert policy['policyTypes'] == ['Ingress', 'Egress']
    rule, = policy['ingress']
    assert rule['from'] == [{'podSelector': {'matchLabels': {'app': 'ternent-api'}}},
                            {'podSelector': {'matchLabels': {'app': 'ternent-postgres-backup'}}}]
    assert rule['ports'] == [{'protocol': 'TCP', 'port': 5432}]
    # The backup pods carry the label the policy admits.
    assert _job_pod_labels(default_objects['cronjob-backup.yaml'])['app'] == 'ternent-postgres-backup'
    dns, storage = policy['egress']
    assert {p['port'] for p in dns['ports']} == {53} and 'to' not in dns
    assert storage == {'to': [{'ipBlock': {'cidr': '0.0.0.0/0'}}], 'ports': [{'protocol': 'TCP', 'port': 443}]}


def _job_pod_labels(cronjob):
    return cronjob['spec']['jobTemplate']['spec']['template']['metadata']['labels']


@pytest.mark.parametrize('overrides', [
    {'walg_postgres_walg_install': True},
    {'walg_postgres_walg_install': True, 'walg_postgres_walg_install_version': '3.0.9'},
    {'walg_postgres_walg_install': True, 'walg_postgres_walg_install_sha256': SHA256},
    {'walg_postgres_walg_install': True, 'walg_postgres_walg_install_version': 'latest', 'walg_postgres_walg_install_sha256': SHA256},
    {'walg_postgres_walg_install': True, 'walg_postgres_walg_install_version': '3.0.9', 'walg_postgres_walg_install_sha256': 'abc'},
    dict(INSTALL_VARS, walg_postgres_walg_install_url='http://example.com/wal-g.tar.gz'),
], ids=['neither', 'version-only', 'checksum-only', 'floating-version', 'short-checksum', 'plain-http'])
def test_installing_wal_g_at_start_up_is_refused_unless_version_and_checksum_are_pinned(tmp_path, overrides):
    output = _refused(tmp_path, **overrides)
    assert 'downloads wal-g when the server starts, so it needs both' in output and 'Nothing was rendered' in output


def test_installing_wal_g_at_start_up_checks_the_pinned_checksum(tmp_path, walg_bin):
    if not all(shutil.which(tool) for tool in ('curl', 'sha256sum', 'tar')):
        tool_missing('curl, sha256sum and tar are needed to run the walg-install init container here')
    # The release's shape: a tar.gz holding the program alone.
    asset = tmp_path / 'wal-g-pg-ubuntu-22.04-amd64.tar.gz'
    with tarfile.open(asset, 'w:gz', compresslevel=1) as archive:
        archive.add(os.path.realpath(walg_bin), arcname='wal-g-pg-ubuntu-22.04-amd64')
    checksum = hashlib.sha256(asset.read_bytes()).hexdigest()
    out = _render(tmp_path, **{**INSTALL_VARS, 'walg_postgres_walg_install_sha256': checksum})
    _assert_valid(out)
    objects = _objects(out)
    pod = objects['statefulset.yaml']['spec']['template']['spec']
    _assert_locked_down(pod)
    assert [c['name'] for c in pod['initContainers']] == ['walg-install', 'walg-check']
    install = _init(pod, 'walg-install')
    assert install['image'] == 'curlimages/curl:8.11.1'
    assert _env(install) == {
        'WALG_DIR': '/opt/walg', 'WALG_VERSION': '3.0.9', 'WALG_SHA256': checksum,
        'WALG_URL': 'https://github.com/wal-g/wal-g/releases/download/v3.0.9/wal-g-pg-ubuntu-22.04-amd64.tar.gz'}
    assert _settings(objects['configmap.yaml'])['archive_command'] == '/opt/walg/wal-g wal-push %p'
    db = pod['containers'][0]
    assert {'name': 'walg', 'mountPath': '/opt/walg', 'readOnly': True} in db['volumeMounts']

    # The init container's own script, with the URL pointed at the local file (curl reads file:// URLs).
    def run_install(sha256):
        walg_dir = tmp_path / ('installed-' + sha256[:8])
        walg_dir.mkdir()
        env = dict(_env(install), WALG_DIR=str(walg_dir), WALG_URL=asset.as_uri(), WALG_SHA256=sha256,
                   PATH=os.environ['PATH'])
        proc = subprocess.run(install['command'], env=env, capture_output=True, text=True, timeout=300, check=False)
        return proc, walg_dir / 'wal-g'

    proc, installed = run_install(checksum)
    assert proc.returncode == 0, proc.stderr
    assert 'wal-g 3.0.9 installed from' in proc.stdout
    assert installed.read_bytes() == open(walg_bin, 'rb').read() and os.access(installed, os.X_OK)
    assert sorted(os.listdir(installed.parent)) == ['wal-g']
    version = subprocess.run([str(installed), '--version'], capture_output=True, text=True, timeout=60, check=True)
    assert 'v3.0.9' in version.stdout + version.stderr

    proc, installed = run_install('0' * 64)
    assert proc.returncode == 1 and not installed.exists()
    assert 'does not have the pinned sha256 %s; not installed' % ('0' * 64) in proc.stderr


@pytest.mark.parametrize('secret_env, walg, message', [
    ({}, None, None),
    ({'AWS_SECRET_ACCESS_KEY': PLACEHOLDER}, None, "AWS_SECRET_ACCESS_KEY still holds the example Secret's placeholder"),
    ({'POSTGRES_PASSWORD': PLACEHOLDER}, None, "POSTGRES_PASSWORD still holds the example Secret's placeholder"),
    ({'WALG_S3_PREFIX': 's3://elsewhere/postgres'}, None,
     'the backup Secret sets WALG_S3_PREFIX=s3://elsewhere/postgres, the role WALG_S3_PREFIX=' + PREFIX),
    ({'AWS_ENDPOINT': 'https://nyc3.digitaloceanspaces.com'}, None, 'the role leaves AWS_ENDPOINT unset'),
    ({'WALG_S3_PREFIX': PREFIX}, None, None),
    ({}, '/nonexistent/wal-g', '/nonexistent/wal-g cannot run in ghcr.io/example/postgres-walg:15.15-3.0.9'),
], ids=['passes', 'placeholder-key', 'placeholder-password', 'other-prefix', 'endpoint-not-the-roles', 'same-prefix',
        'no-walg'])
def test_the_servers_walg_check_stops_a_pod_that_could_not_archive(default_objects, walg_bin, secret_env, walg, message):
    check = _init(default_objects['statefulset.yaml']['spec']['template']['spec'], 'walg-check')
    env = {name: value for name, value in _env(check).items() if isinstance(value, str)}
    env.update({'PATH': os.environ['PATH'], 'WALG': walg or walg_bin, 'POSTGRES_PASSWORD': 'a-real-password',
                'AWS_ACCESS_KEY_ID': 'AKIAREAL', 'AWS_SECRET_ACCESS_KEY': 'real-secret'})
    env.update(secret_env)
    proc = subprocess.run(check['command'], env=env, capture_output=True, text=True, timeout=60, check=False)
    if message is None:
        assert proc.returncode == 0, proc.stderr
        assert 'v3.0.9' in proc.stdout + proc.stderr
    else:
        assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    # The credentials themselves are never printed.
    assert 'real-secret' not in proc.stdout + proc.stderr and 'a-real-password' not in proc.stdout + proc.stderr


def test_custom_settings_reach_every_object(tmp_path):
    out = _render(tmp_path, **CUSTOM_VARS)
    result = _assert_valid(out)
    objects = _objects(out)
    assert set(objects) == (set(KUSTOMIZED) - {'cronjob-restore-drill.yaml'}) | {'namespace.yaml'} | \
        {'examples/' + name for name in EXAMPLES}
    assert len(result['objects']) == 13
    assert {obj['metadata']['labels']['team'] for obj in objects.values()} == {'platform'}
    assert {obj['metadata'].get('namespace') for obj in objects.values()} == {None, 'ledger', 'ledger-recovery'}
    assert objects['namespace.yaml']['metadata']['name'] == 'ledger'
    assert 'pod-security.kubernetes.io/enforce' not in objects['namespace.yaml']['metadata']['labels']

    settings = _settings(objects['configmap.yaml'])
    assert settings['archive_command'] == '/usr/local/bin/wal-g wal-push %p' and settings['archive_timeout'] == '60s'
    assert settings['wal_level'] == 'logical' and settings['max_connections'] == '200' and settings['port'] == '5433'
    assert settings['log_line_prefix'] == "%m [%p] '%q'"
    statefulset = objects['statefulset.yaml']
    assert statefulset['metadata']['name'] == 'ledger-db'
    assert statefulset['spec']['volumeClaimTemplates'][0]['spec']['storageClassName'] == 'do-block-storage'
    db = statefulset['spec']['template']['spec']['containers'][0]
    env = _env(db)
    assert (env['WALG_S3_PREFIX'], env['AWS_ENDPOINT'], env['AWS_S3_FORCE_PATH_STYLE'], env['AWS_REGION']) == (
        's3://ledger-walg/prod', 'https://fra1.digitaloceanspaces.com', 'true', 'fra1')
    assert env['POSTGRES_PASSWORD'] == {'secretKeyRef': {'name': 'ledger-db', 'key': 'POSTGRES_PASSWORD'}}
    assert objects['examples/secret-backup.example.yaml']['stringData']['AWS_ENDPOINT'] == 'https://fra1.digitaloceanspaces.com'

    backup = objects['cronjob-backup.yaml']
    assert (backup['metadata']['name'], backup['spec']['schedule'], backup['spec']['timeZone']) == (
        'ledger-db-backup', '30 1 * * *', 'Europe/Paris')
    pod = _job_pod(backup)
    assert _run(pod, CUSTOM_VARS['walg_postgres_jobs_image']) == ('pgops.resilience.walg_backup', {
        'walg_prefix': 's3://ledger-walg/prod', 'walg_data_directory': PGDATA, 'walg_delta_max_steps': 6,
        'walg_retention_enabled': False, 'walg_keep_daily': 14, 'walg_keep_weekly': 8, 'walg_recovery_window_days': 10,
        'walg_env_from_environment': []})
    job_env = _env(pod['containers'][0])
    assert (job_env['PGHOST'], job_env['PGPORT'], job_env['PGUSER'], job_env['PGDATABASE']) == ('ledger-db', '5433', 'admin', 'ledger')
    assert job_env['AWS_ENDPOINT_URL'] == 'https://fra1.digitaloceanspaces.com' and job_env['AWS_REGION'] == 'fra1'
    assert {'name': 'data', 'persistentVolumeClaim': {'claimName': 'data-ledger-db-0', 'readOnly': True}} in pod['volumes']

    pitr = objects['cronjob-pitr-drill.yaml']
    assert (pitr['metadata']['namespace'], pitr['spec']['schedule']) == ('ledger-recovery', '0 4 15 * *')
    pitr_pod = _job_pod(pitr)
    assert _run(pitr_pod, CUSTOM_VARS['walg_postgres_jobs_image']) == ('pgops.resilience.walg_pitr_drill', {
        'walg_prefix': 's3://ledger-walg/prod', 'walg_drill_checks': CHECKS, 'walg_drill_amcheck': False,
        'walg_drill_database': 'ledger', 'walg_drill_scratch_parent': '/scratch', 'walg_recovery_window_days': 10,
        'walg_pitr_recovery_target_time': '2026-03-01T10:30:00Z', 'walg_env_from_environment': []})
    assert {'name': 'scratch', **CUSTOM_VARS['walg_postgres_drill_scratch_volume']} in pitr_pod['volumes']

    policy = objects['networkpolicy.yaml']['spec']
    assert policy['ingress'][0]['from'] == CUSTOM_VARS['walg_postgres_allowed_clients'] + [
        {'podSelector': {'matchLabels': {'app': 'ledger-db-backup'}}}]
    assert policy['ingress'][0]['ports'] == [{'protocol': 'TCP', 'port': 5433}]
    assert policy['egress'][1]['ports'] == [{'protocol': 'TCP', 'port': 443}]


def test_rerendering_is_idempotent_and_removes_what_is_turned_off(tmp_path):
    out = _render(tmp_path)
    first = {str(path): path.read_bytes() for path in out.rglob('*.yaml')}
    again = render_role(tmp_path, 'walg_postgres', dict(BASE_VARS, walg_postgres_manifests_dir=str(out)))
    assert again.returncode == 0 and 'changed=0' in again.stdout, again.stdout
    assert {str(path): path.read_bytes() for path in out.rglob('*.yaml')} == first
    out = _render(tmp_path, walg_postgres_restore_drill_enabled=False, walg_postgres_pitr_drill_enabled=False,
                  walg_postgres_backup_enabled=False, walg_postgres_allowed_clients=[])
    assert sorted(os.listdir(out)) == ['configmap.yaml', 'examples', 'kustomization.yaml', 'networkpolicy.yaml',
                                       'service.yaml', 'statefulset.yaml']
    assert sorted(os.listdir(out / 'examples')) == ['secret-backup.example.yaml', 'secret-credentials.example.yaml']
    # Nobody left to admit: an empty ingress list, never an empty "from" (which would admit everyone).
    assert load_objects(out)['networkpolicy.yaml']['spec']['ingress'] == []
    _assert_valid(out)


@pytest.mark.parametrize('overrides, message', [
    ({'walg_postgres_image': 'postgres:latest'}, 'needs a pinned tag'),
    ({'walg_postgres_jobs_image': 'ghcr.io/pgops/resilience-ee'}, 'needs a pinned tag'),
    ({'walg_postgres_prefix': 's3://ternent-backups/postgres/'}, 'the prefix must be s3://<bucket>[/<path>]'),
    ({'walg_postgres_prefix': '/var/backups/walg'}, 'the prefix must be s3://<bucket>[/<path>]'),
    ({'walg_postgres_walg_bin': 'wal-g; rm -rf /'}, 'without spaces or shell characters'),
    ({'walg_postgres_dr_namespace': 'backend'}, 'must be two different DNS labels'),
    ({'walg_postgres_name': 'a-postgres-name-that-is-far-too-long-for-it'}, 'at most 38 characters'),
    ({'walg_postgres_pgdata': '/var/lib/postgresql/data'}, 'a subdirectory of the claim'),
    ({'walg_postgres_postgresql_parameters': {'archive_command': '/bin/true'}}, 'may not set what the role owns'),
    ({'walg_postgres_postgresql_parameters': {'wal_level': 'minimal'}}, 'wal_level must stay replica or logical'),
    ({'walg_postgres_postgresql_parameters': {'work_mem': "4MB'\narchive_mode = 'off"}}, 'plain one-line values'),
    ({'walg_postgres_keep_daily': 0}, 'retention keeps at least 1 daily backup'),
    ({'walg_postgres_time_zone': 'EST'}, 'must be an IANA time zone name'),
    ({'walg_postgres_pitr_drill_schedule': '0 0 6 1 * *'}, 'the 5 fields of a Kubernetes CronJob'),
    ({'walg_postgres_pitr_recovery_target_time': '2026-03-01 10:30'}, 'a timestamp with its time zone'),
    ({'walg_postgres_drill_checks': [{'name': 'no query'}]}, 'with a non-empty SQL query each'),
    ({'walg_postgres_allowed_clients': [{'app': 'ternent-api'}]}, 'a list of NetworkPolicy peers'),
], ids=['latest', 'ee-untagged', 'trailing-slash', 'file-prefix', 'shell-in-walg-bin', 'same-namespace', 'long-name',
        'pgdata-at-mount', 'owned-parameter', 'minimal-wal', 'newline-value', 'no-daily', 'abbreviation', 'six-fields',
        'target-without-zone', 'check-without-query', 'labels-not-peers'])
def test_unsafe_or_invalid_values_are_refused_before_anything_renders(tmp_path, overrides, message):
    assert message in _refused(tmp_path, **overrides)


def test_apply_never_hands_the_example_secrets_to_kubernetes(tmp_path):
    # No cluster runs here: the kubeconfig points at a closed port, so every apply fails. What this shows is that
    # walg_postgres_apply reaches kubernetes.core.k8s with the objects and skips the example Secrets.
    kubeconfig = tmp_path / 'kubeconfig'
    kubeconfig.write_text(yaml.safe_dump({
        'apiVersion': 'v1', 'kind': 'Config', 'current-context': 'nowhere',
        'clusters': [{'name': 'nowhere', 'cluster': {'server': 'http://127.0.0.1:9'}}],
        'contexts': [{'name': 'nowhere', 'context': {'cluster': 'nowhere', 'user': 'nobody'}}],
        'users': [{'name': 'nobody', 'user': {'token': 'not-a-real-token'}}]}))
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'walg_postgres', dict(BASE_VARS, walg_postgres_manifests_dir=str(out),
                                                       walg_postgres_apply=True, walg_postgres_kubeconfig=str(kubeconfig)))
    assert proc.returncode != 0
    for name in EXAMPLES:
        assert 'skipping: [localhost] => (item=examples/%s)' % name in proc.stdout, proc.stdout
    assert 'failed: [localhost] (item=statefulset.yaml)' in proc.stdout and '127.0.0.1' in proc.stdout, proc.stdout
    _assert_valid(out)


# -- what the role renders, run for real -------------------------------------------------------------------------


def _start_server(sandbox, workdir, objects):
    """Start PostgreSQL as the StatefulSet would: initdb, then the server with the ConfigMap's postgresql.conf and the
    db container's environment plus the backup Secret's credentials. Returns the socket directory."""
    user = sandbox.server_user
    bindir = find_bindir()
    statefulset = objects['statefulset.yaml']['spec']['template']['spec']
    db = statefulset['containers'][0]
    env = {name: value for name, value in _env(db).items() if isinstance(value, str)}
    pgdata = env['PGDATA']
    user.make_dir(os.path.dirname(pgdata))
    run_dir = os.path.join(workdir, 'run')
    user.make_dir(run_dir)
    config_file = os.path.join(workdir, 'config', 'postgresql.conf')
    os.makedirs(os.path.dirname(config_file))
    os.chmod(os.path.dirname(config_file), 0o755)
    user.write_file(config_file, objects['configmap.yaml']['data']['postgresql.conf'])
    user.run_as_server([program(bindir, 'initdb'), '-D', pgdata, '-U', 'postgres', '-A', 'trust'])
    server_env = server_environment(dict(env, AWS_ACCESS_KEY_ID=sandbox.s3.access_key,
                                         AWS_SECRET_ACCESS_KEY=sandbox.s3.secret_key))
    options = db['args'][1:]
    options[1] = 'config_file=' + config_file  # the ConfigMap's mount point, here
    options += ['-c', 'unix_socket_directories=' + run_dir]
    log_file = os.path.join(run_dir, 'server.log')
    user.run_as_server([program(bindir, 'pg_ctl'), 'start', '-D', pgdata, '-w', '-t', '60', '-l', log_file,
                        '-o', ' '.join(options)], env=server_env, log_file=log_file)
    return run_dir, config_file


def _stop_server(sandbox, pgdata):
    """Stop the server of ``pgdata`` if it runs (pg_ctl stop -m fast)."""
    if os.path.exists(os.path.join(pgdata, 'postmaster.pid')):
        subprocess.run(sandbox.server_user.command([program(find_bindir(), 'pg_ctl'), 'stop', '-D', pgdata, '-m', 'fast']),
                       capture_output=True, timeout=120, check=False, cwd='/')


def _playbook_env(sandbox, pod, walg_bin, **extra):
    """A CronJob container's plain environment, the backup Secret's credentials, and wal-g on PATH."""
    env = {name: value for name, value in _env(pod['containers'][0]).items() if isinstance(value, str)}
    env.update(AWS_ACCESS_KEY_ID=sandbox.s3.access_key, AWS_SECRET_ACCESS_KEY=sandbox.s3.secret_key,
               PATH=os.path.dirname(walg_bin) + os.pathsep + os.environ['PATH'], **extra)
    return env


def _wait_archived(conn, timeout=120):
    deadline = time.monotonic() + timeout
    with conn.cursor() as cur:
        cur.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')
        current, = cur.fetchone()
        cur.execute('SELECT pg_switch_wal()')
        while time.monotonic() < deadline:
            cur.execute('SELECT archived_count, failed_count, last_archived_wal FROM pg_stat_archiver')
            archived, failed, last = cur.fetchone()
            assert failed == 0, 'archive_command failed %d time(s)' % failed
            if archived and last >= current:
                return last
            time.sleep(0.5)
    raise AssertionError('segment %s was not archived within %d s' % (current, timeout))


def test_the_rendered_server_ships_wal_with_wal_g_and_the_cronjobs_back_it_up_and_restore_it(sandbox, walg_bin):
    workdir = tempfile.mkdtemp(prefix='pgops-it-walg-role-')
    os.chmod(workdir, 0o755)
    prefix = 's3://%s/walg-role/%s' % (sandbox.bucket, uuid.uuid4().hex[:8])
    port = free_port()
    out = _render(pathlib.Path(workdir), **{
        'walg_postgres_prefix': prefix, 'walg_postgres_s3_endpoint_url': sandbox.s3.endpoint_url,
        'walg_postgres_s3_region': sandbox.s3.region, 'walg_postgres_walg_bin': walg_bin, 'walg_postgres_port': port,
        'walg_postgres_data_mount_path': workdir + '/data', 'walg_postgres_pgdata': workdir + '/data/pgdata',
        'walg_postgres_drill_checks': CHECKS, 'walg_postgres_walg_env_names': ['WALG_COMPRESSION_METHOD']})
    objects = _objects(out)
    pgdata = workdir + '/data/pgdata'
    # A further wal-g setting of the backup Secret (envFrom), which the jobs' playbooks read from the environment.
    secret_settings = dict(WALG_COMPRESSION_METHOD='zstd')
    try:
        run_dir, config_file = _start_server(sandbox, workdir, objects)
        conn = psycopg2.connect(host=run_dir, port=port, user='postgres', dbname='postgres')
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT name, setting, sourcefile FROM pg_settings WHERE name IN "
                        "('archive_mode', 'archive_command', 'wal_level', 'archive_timeout', 'max_wal_size')")
            settings = {name: (setting, source) for name, setting, source in cur.fetchall()}
            cur.execute('CREATE DATABASE app')
        # The role's settings from the ConfigMap, initdb's own (max_wal_size) through its include.
        assert settings['archive_command'] == ('%s wal-push %%p' % walg_bin, config_file)
        assert settings['archive_mode'] == ('on', config_file) and settings['wal_level'] == ('replica', config_file)
        assert settings['archive_timeout'] == ('300', config_file)
        assert settings['max_wal_size'][1] == pgdata + '/postgresql.conf'
        app = psycopg2.connect(host=run_dir, port=port, user='postgres', dbname='app')
        app.autocommit = True
        with app.cursor() as cur:
            cur.execute('CREATE TABLE walg_role_marker (n int); INSERT INTO walg_role_marker VALUES (1)')
        segment = _wait_archived(conn)
        wal_keys = list(sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/wal_005/'))
        assert any(os.path.basename(key).startswith(segment) for key in wal_keys), wal_keys

        # The backup CronJob's own playbook and extra variables; PGHOST is the socket here instead of the Service.
        backup_pod = _job_pod(objects['cronjob-backup.yaml'])
        playbook, extra_vars = _run(backup_pod)
        assert extra_vars['walg_env_from_environment'] == ['WALG_COMPRESSION_METHOD']
        proc = run_ansible_playbook(playbook, extra_vars, env=_playbook_env(
            sandbox, backup_pod, walg_bin, PGHOST=run_dir, **secret_settings))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert 'Took a full backup base_' in proc.stdout, proc.stdout[-2000:]
        parts = [k for k in sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/basebackups_005/') if '/tar_partitions/' in k]
        assert parts and all(k.endswith('.zst') for k in parts), parts  # the Secret's setting reached wal-g

        # Written after the backup: only the WAL the server archived with wal-g brings it back.
        with app.cursor() as cur:
            cur.execute('INSERT INTO walg_role_marker VALUES (2)')
        _wait_archived(conn)
        app.close()
        conn.close()
        # The drill needs no server: it restores from the storage alone, which nothing writes to any more.
        _stop_server(sandbox, pgdata)

        # The restore drill CronJob's own playbook and extra variables; its /scratch volume is a directory here.
        drill_pod = _job_pod(objects['cronjob-restore-drill.yaml'])
        playbook, extra_vars = _run(drill_pod)
        assert extra_vars['walg_drill_scratch_parent'] == '/scratch'
        extra_vars['walg_drill_scratch_parent'] = os.path.join(workdir, 'scratch')
        sandbox.server_user.make_dir(extra_vars['walg_drill_scratch_parent'], 0o755)
        before = sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/')
        proc = run_ansible_playbook(playbook, extra_vars, env=_playbook_env(sandbox, drill_pod, walg_bin, **secret_settings))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        assert 'Restore drill PASSED' in proc.stdout and '1 of 1 checks passed' in proc.stdout, proc.stdout[-2000:]
        assert sandbox.s3.objects(prefix[len('s3://%s/' % sandbox.bucket):] + '/') == before
    finally:
        _stop_server(sandbox, pgdata)
        shutil.rmtree(workdir, ignore_errors=True)
