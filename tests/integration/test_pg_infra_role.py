# -*- coding: utf-8 -*-
"""The pg_infra role renders the runbook's PostgreSQL setup valid and safe, and refuses unsafe layouts.

Every render goes through ansible-playbook, as a user runs the role; no cluster is needed or used. The outcomes
checked are the runbook's (postgres-infra-setup.md): the data claim mounted only at /var/lib/postgresql with PGDATA a
subdirectory (the double-mount pitfall refused before anything renders), root-squash-safe init containers, claims
kept out of the kustomization, nightly dumps at 06:00 and weekly base backups on Sundays at 06:20 in New York time,
and one-shot restore, bootstrap and wipe Jobs that run the collection's playbooks with the right extra variables.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess

import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests
from tests.manifest_checks import CRD_DIR, load_objects, render_role

# The Kubernetes release the rendered objects are validated against (kubernetes-validate, strict).
KUBERNETES_VERSION = '1.33'
EE_IMAGE = 'ghcr.io/pgops/resilience-ee:0.1.0'
PGDATA = '/var/lib/postgresql/data'
KUSTOMIZED = {'configmap-hba.yaml', 'serviceaccount-backup-jobs.yaml', 'serviceaccount-data-jobs.yaml',
              'role-data-jobs.yaml', 'rolebinding-data-jobs.yaml', 'deployment.yaml', 'service.yaml',
              'cronjob-dump.yaml', 'cronjob-basebackup.yaml'}
PVCS = {'pvc-data.yaml', 'pvc-wal-archive.yaml', 'pvc-backups.yaml'}
JOBS = {'job-restore.yaml', 'job-bootstrap.yaml', 'job-wipe.yaml'}
IMAGE_VOLUME_WARNING = 'which holds PGDATA (/var/lib/postgresql/data), and no volume is mounted exactly there'
CUSTOM_VARS = {
    'pg_infra_name': 'records-db', 'pg_infra_namespace': 'records', 'pg_infra_create_namespace': True,
    'pg_infra_labels': {'team': 'platform'}, 'pg_infra_storage_class': 'nfs-client',
    'pg_infra_data_pvc_name': 'pgdata-bigger', 'pg_infra_data_pvc_size': '200Gi',
    'pg_infra_backups_pvc_size': '500Gi', 'pg_infra_backups_pvc_access_modes': ['ReadWriteMany'],
    # PGDATA outside the image's declared volume: no warning.
    'pg_infra_pgdata': '/var/lib/postgresql/pgdata', 'pg_infra_wal_archive_mount_path': '/srv/wal',
    'pg_infra_backups_mount_path': '/srv/backups', 'pg_infra_database': 'ledger', 'pg_infra_superuser': 'admin',
    'pg_infra_superuser_secret_name': 'ledger-admin', 'pg_infra_superuser_secret_key': 'pw', 'pg_infra_port': 5433,
    'pg_infra_extra_volumes': [{'name': 'init-sql', 'configMap': {'name': 'ledger-init'}}],
    'pg_infra_extra_volume_mounts': [{'name': 'init-sql', 'mountPath': '/docker-entrypoint-initdb.d', 'readOnly': True}],
    'pg_infra_postgresql_parameters': {'max_connections': 200, 'wal_compression': True, 'archive_timeout': '5min'},
    'pg_infra_time_zone': 'Europe/Paris', 'pg_infra_dump_schedule': '30 1 * * *', 'pg_infra_dump_jobs': 4,
    'pg_infra_dump_keep': 14, 'pg_infra_basebackup_enabled': False, 'pg_infra_restore_bundle': 'records_dump_20251102.tar.gz',
    'pg_infra_restore_jobs': 8, 'pg_infra_bootstrap_bundle': 'basebackup-20251102-0620.bundle.tar.gz',
    'pg_infra_bootstrap_recovery_target_time': '2025-11-02T05:30:00Z', 'pg_infra_bootstrap_confirm': '/var/lib/postgresql/pgdata',
    'pg_infra_wipe_confirm': '/var/lib/postgresql/pgdata',
    'pg_infra_jobs_scratch_volume': {'ephemeral': {'volumeClaimTemplate': {'spec': {
        'accessModes': ['ReadWriteOnce'], 'resources': {'requests': {'storage': '150Gi'}}}}}},
    'pg_infra_jobs_image': 'registry.local:5000/ee@sha256:' + 'b' * 64,
}


def _render(tmp_path, name='out', **overrides):
    out = tmp_path / name
    proc = render_role(tmp_path, 'pg_infra', dict(pg_infra_manifests_dir=str(out), **overrides))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc.stdout + proc.stderr


def _refused(tmp_path, **overrides):
    """Render with ``overrides`` expecting failure; the run's output. Nothing may have been rendered."""
    out = tmp_path / 'refused'
    proc = render_role(tmp_path, 'pg_infra', dict(pg_infra_manifests_dir=str(out), **overrides))
    assert proc.returncode != 0, proc.stdout
    assert not out.exists()
    return proc.stdout + proc.stderr


def _assert_valid(out):
    """Every object in the directory and its pvcs/ and jobs/ is valid for KUBERNETES_VERSION; the kustomization
    lists exactly the top-level files."""
    paths = [str(path) for path in (out, out / 'pvcs', out / 'jobs') if path.exists()]
    result = manifests.validate_paths(paths, CRD_DIR, KUBERNETES_VERSION)
    assert result['valid'], '\n'.join(result['errors'])
    return result


def _objects(out):
    """``{relative path: object}`` of every rendered file."""
    objects = {}
    for sub in ('', 'pvcs', 'jobs'):
        if (out / sub).exists():
            objects.update({os.path.join(sub, name): obj for name, obj in load_objects(out / sub).items()})
    return objects


def _pod_specs(objects):
    """``{file: pod spec}`` of the Deployment, the CronJobs and the Jobs."""
    pods = {}
    for name, obj in objects.items():
        if obj['kind'] in ('Deployment', 'Job'):
            pods[name] = obj['spec']['template']['spec']
        elif obj['kind'] == 'CronJob':
            pods[name] = obj['spec']['jobTemplate']['spec']['template']['spec']
    return pods


def _env(container):
    return {item['name']: item.get('value', item.get('valueFrom')) for item in container['env']}


def _run(pod):
    """The playbook a job pod runs and its extra variables (one JSON document, parsed)."""
    container = pod['containers'][0]
    assert container['command'] == ['ansible-playbook'] and container['image'] == EE_IMAGE
    assert len(container['args']) == 3 and container['args'][1] == '--extra-vars'
    return container['args'][0], json.loads(container['args'][2])


@pytest.fixture(scope='module')
def default_run(tmp_path_factory):
    return _render(tmp_path_factory.mktemp('default'))


@pytest.fixture(scope='module')
def default_objects(default_run):
    return _objects(default_run[0])


@pytest.fixture(scope='module')
def custom_run(tmp_path_factory):
    return _render(tmp_path_factory.mktemp('custom'), **CUSTOM_VARS)


def test_default_render_is_valid_and_keeps_claims_and_jobs_out_of_the_kustomization(default_run):
    out, output = default_run
    result = _assert_valid(out)
    assert len(result['objects']) == 15
    assert set(os.listdir(out)) == KUSTOMIZED | {'kustomization.yaml', 'pvcs', 'jobs'}
    assert set(os.listdir(out / 'pvcs')) == PVCS and set(os.listdir(out / 'jobs')) == JOBS
    resources = yaml.safe_load((out / 'kustomization.yaml').read_text())['resources']
    # `kubectl apply -k` can neither patch a bound claim nor start a destructive Job.
    assert set(resources) == KUSTOMIZED and len(resources) == len(KUSTOMIZED)
    assert resources.index('rolebinding-data-jobs.yaml') < resources.index('deployment.yaml') < resources.index('service.yaml')
    # No Secret and no password is ever rendered; the server and jobs reference the existing Secret.
    texts = [path.read_text() for path in out.rglob('*.yaml')]
    assert not any('kind: Secret' in text for text in texts)
    assert all('secretKeyRef' in (out / name).read_text() for name in
               ('deployment.yaml', 'cronjob-dump.yaml', 'cronjob-basebackup.yaml', 'jobs/job-restore.yaml'))
    # The default image declares VOLUME at the default PGDATA: the role says what containerd does with that.
    assert IMAGE_VOLUME_WARNING in output and 'ignore_image_defined_volumes' in output


def test_the_deployment_mounts_the_claim_only_above_pgdata(default_objects):
    deployment = default_objects['deployment.yaml']
    spec = deployment['spec']
    # Recreate: never two servers on one data directory; no replicas: re-applying never undoes a Job's scale to 0.
    assert spec['strategy'] == {'type': 'Recreate'} and 'replicas' not in spec
    assert spec['selector'] == {'matchLabels': {'app': 'postgres'}}
    pod = spec['template']['spec']
    assert spec['template']['metadata']['labels']['app'] == 'postgres'
    assert pod['automountServiceAccountToken'] is False and pod['enableServiceLinks'] is False
    assert pod['securityContext']['fsGroup'] == 999
    volumes = {volume['name']: volume for volume in pod['volumes']}
    assert volumes['data']['persistentVolumeClaim'] == {'claimName': 'pgdata-big'}
    assert volumes['wal-archive']['persistentVolumeClaim'] == {'claimName': 'pg-wal-archive'}
    assert volumes['run'] == {'name': 'run', 'emptyDir': {'sizeLimit': '16Mi'}}

    fix_run, prep_dirs = pod['initContainers']
    assert fix_run['name'] == 'fix-run' and fix_run['securityContext']['runAsUser'] == 0
    assert fix_run['securityContext']['capabilities'] == {'drop': ['ALL'], 'add': ['CHOWN', 'FOWNER']}
    assert fix_run['volumeMounts'] == [{'name': 'run', 'mountPath': '/var/run/postgresql'}]
    assert prep_dirs['name'] == 'prep-dirs'
    assert (prep_dirs['securityContext']['runAsUser'], prep_dirs['securityContext']['runAsGroup']) == (999, 999)
    assert prep_dirs['securityContext']['runAsNonRoot'] is True
    assert _env(prep_dirs)['PGDATA'] == PGDATA

    db, = pod['containers']
    assert db['name'] == 'db' and db['image'] == 'postgres:15.15-bookworm'
    assert (db['securityContext']['runAsUser'], db['securityContext']['runAsGroup']) == (999, 999)
    assert db['securityContext']['runAsNonRoot'] is True and db['securityContext']['allowPrivilegeEscalation'] is False
    env = _env(db)
    assert env['PGDATA'] == PGDATA and env['POSTGRES_USER'] == 'postgres' and env['POSTGRES_DB'] == 'records'
    assert env['POSTGRES_PASSWORD'] == {'secretKeyRef': {'name': 'postgres-superuser', 'key': 'password'}}
    mounts = {mount['name']: mount['mountPath'] for mount in db['volumeMounts']}
    assert mounts == {'data': '/var/lib/postgresql', 'wal-archive': '/wal-archive', 'run': '/var/run/postgresql',
                      'hba': '/etc/postgresql/pgops'}
    assert db['args'][0] == 'postgres'
    settings = dict(arg.split('=', 1) for arg in db['args'][2::2])
    assert db['args'][1::2] == ['-c'] * len(settings)
    assert settings['archive_mode'] == 'on' and settings['hba_file'] == '/etc/postgresql/pgops/pg_hba.conf'
    assert '/wal-archive/%f' in settings['archive_command']
    assert db['lifecycle']['preStop']['exec']['command'][:2] == ['pg_ctl', 'stop'] and 'livenessProbe' not in db
    # Remote replication connections (pg_basebackup) are allowed, with SCRAM.
    hba = default_objects['configmap-hba.yaml']['data']['pg_hba.conf']
    assert any(line.split() == ['host', 'replication', 'all', 'all', 'scram-sha-256'] for line in hba.splitlines())
    service = default_objects['service.yaml']['spec']
    assert service['selector'] == {'app': 'postgres'} and service['ports'][0]['port'] == 5432


def test_no_container_mounts_anything_at_or_inside_pgdata(default_objects):
    pods = _pod_specs(default_objects)
    assert set(pods) == {'deployment.yaml', 'cronjob-dump.yaml', 'cronjob-basebackup.yaml', 'jobs/job-restore.yaml',
                         'jobs/job-bootstrap.yaml', 'jobs/job-wipe.yaml'}
    data_mounts = []
    for name, pod in pods.items():
        claims = {v['name']: v['persistentVolumeClaim']['claimName'] for v in pod['volumes'] if 'persistentVolumeClaim' in v}
        for container in pod.get('initContainers', []) + pod['containers']:
            for mount in container['volumeMounts']:
                path = mount['mountPath'].rstrip('/')
                assert path != PGDATA and not path.startswith(PGDATA + '/'), (name, container['name'], mount)
                if claims.get(mount['name']) == 'pgdata-big':
                    data_mounts.append((name, container['name'], path))
    assert data_mounts == [('deployment.yaml', 'prep-dirs', '/var/lib/postgresql'), ('deployment.yaml', 'db', '/var/lib/postgresql'),
                           ('jobs/job-bootstrap.yaml', 'bootstrap', '/var/lib/postgresql'),
                           ('jobs/job-wipe.yaml', 'wipe', '/var/lib/postgresql')]


def test_the_archive_command_refuses_to_overwrite_a_different_segment(default_objects, tmp_path):
    """Run the rendered archive_command the way PostgreSQL does: sh -c, %p relative to PGDATA, %f the file name."""
    args = default_objects['deployment.yaml']['spec']['template']['spec']['containers'][0]['args']
    command = next(arg for arg in args if arg.startswith('archive_command='))[len('archive_command='):]
    pgdata, archive = tmp_path / 'data', tmp_path / 'wal-archive'
    (pgdata / 'pg_wal').mkdir(parents=True)
    archive.mkdir()
    segment = '000000010000000000000003'

    def archive_segment(content):
        (pgdata / 'pg_wal' / segment).write_bytes(content)
        line = command.replace('/wal-archive', str(archive)).replace('%p', shlex.quote('pg_wal/' + segment)).replace('%f', segment)
        return subprocess.run(['sh', '-c', line], cwd=str(pgdata), check=False).returncode

    assert archive_segment(b'A' * 4096) == 0
    assert (archive / segment).read_bytes() == b'A' * 4096 and os.listdir(archive) == [segment]
    # PostgreSQL retries a segment whose success it never saw: the same bytes again are fine.
    assert archive_segment(b'A' * 4096) == 0
    # A different file under that name is history from elsewhere: refused, and the archived one stays.
    assert archive_segment(b'B' * 4096) != 0
    assert (archive / segment).read_bytes() == b'A' * 4096 and os.listdir(archive) == [segment]


@pytest.mark.parametrize('file_name, playbook, schedule, extra_vars', [
    ('cronjob-dump.yaml', 'pgops.resilience.dump_bundle', '0 6 * * *',
     {'dump_database': 'records', 'dump_directory': '/backups', 'dump_jobs': 2, 'dump_keep': 7}),
    ('cronjob-basebackup.yaml', 'pgops.resilience.basebackup_bundle', '20 6 * * 0',
     {'basebackup_directory': '/backups', 'basebackup_keep': 4}),
], ids=['nightly-dump', 'weekly-basebackup'])
def test_cronjobs_run_the_backup_playbooks_in_new_york_time(default_objects, file_name, playbook, schedule, extra_vars):
    cronjob = default_objects[file_name]
    spec = cronjob['spec']
    assert (spec['schedule'], spec['timeZone']) == (schedule, 'America/New_York')
    assert spec['concurrencyPolicy'] == 'Forbid' and spec['startingDeadlineSeconds'] == 600
    assert (spec['successfulJobsHistoryLimit'], spec['failedJobsHistoryLimit']) == (3, 3)
    job = spec['jobTemplate']['spec']
    assert job['activeDeadlineSeconds'] == 21600 and job['backoffLimit'] == 1 and job['ttlSecondsAfterFinished'] > 0
    pod = job['template']['spec']
    assert pod['securityContext'] == {'runAsNonRoot': True, 'runAsUser': 999, 'runAsGroup': 999, 'fsGroup': 999,
                                      'fsGroupChangePolicy': 'OnRootMismatch', 'seccompProfile': {'type': 'RuntimeDefault'}}
    assert pod['serviceAccountName'] == 'postgres-backup-jobs' and pod['automountServiceAccountToken'] is False
    assert _run(pod) == (playbook, extra_vars)
    container = pod['containers'][0]
    assert _env(container) == {
        'PGHOST': 'postgres', 'PGPORT': '5432', 'PGUSER': 'postgres', 'PGDATABASE': 'records',
        'PGPASSWORD': {'secretKeyRef': {'name': 'postgres-superuser', 'key': 'password'}},
        'HOME': '/tmp', 'TMPDIR': '/tmp', 'ANSIBLE_LOCAL_TEMP': '/tmp/.ansible/tmp', 'ANSIBLE_REMOTE_TEMP': '/tmp/.ansible/tmp'}
    assert container['securityContext']['readOnlyRootFilesystem'] is True
    assert {m['name']: m['mountPath'] for m in container['volumeMounts']} == {'backups': '/backups', 'tmp': '/tmp'}
    assert {v['name']: v.get('persistentVolumeClaim') for v in pod['volumes']}['backups'] == {'claimName': 'pgbackups'}
    # Job pods are not the server's pods: the Service and `-l app=postgres` never select them.
    assert job['template']['metadata']['labels']['app'] == cronjob['metadata']['name'] != 'postgres'


@pytest.mark.parametrize('file_name, playbook, account, extra_vars', [
    ('jobs/job-restore.yaml', 'pgops.resilience.restore_dump', 'postgres-backup-jobs',
     {'restore_database': 'records', 'restore_directory': '/backups', 'restore_bundle': '', 'restore_jobs': 2}),
    ('jobs/job-bootstrap.yaml', 'pgops.resilience.bootstrap_from_basebackup', 'postgres-data-jobs',
     {'bootstrap_data_directory': PGDATA, 'bootstrap_directory': '/backups', 'bootstrap_bundle': '',
      'bootstrap_wal_archive_directory': '/wal-archive', 'bootstrap_recovery_target_time': '', 'bootstrap_confirm': '',
      'bootstrap_start': False, 'bootstrap_deployment': 'postgres', 'bootstrap_namespace': 'record-platform'}),
    ('jobs/job-wipe.yaml', 'pgops.resilience.wipe_pgdata', 'postgres-data-jobs',
     {'wipe_data_directory': PGDATA, 'wipe_confirm': '', 'wipe_deployment': 'postgres', 'wipe_namespace': 'record-platform'}),
], ids=['restore', 'bootstrap', 'wipe'])
def test_one_shot_jobs_run_their_playbooks(default_objects, file_name, playbook, account, extra_vars):
    job = default_objects[file_name]
    # generateName: every `kubectl create -f` is a new run, and `kubectl apply` refuses it.
    assert 'name' not in job['metadata'] and job['metadata']['generateName'].startswith('postgres-')
    assert job['spec']['backoffLimit'] == 0
    pod = job['spec']['template']['spec']
    assert _run(pod) == (playbook, extra_vars)
    assert pod['serviceAccountName'] == account
    assert pod['automountServiceAccountToken'] is (account == 'postgres-data-jobs')
    assert pod['securityContext']['runAsUser'] == 999 and pod['securityContext']['fsGroup'] == 999
    env = _env(pod['containers'][0])
    # The wipe works on files only: it gets no password.
    assert ('PGPASSWORD' in env) is (file_name != 'jobs/job-wipe.yaml')
    mounts = {m['name']: m['mountPath'] for m in pod['containers'][0]['volumeMounts']}
    # The restore and bootstrap unpack a whole bundle in TMPDIR: a scratch volume, not the 2Gi /tmp.
    unpacks = file_name != 'jobs/job-wipe.yaml'
    assert (mounts.get('scratch'), env['TMPDIR']) == (('/scratch', '/scratch') if unpacks else (None, '/tmp'))
    if account == 'postgres-data-jobs':
        assert mounts['data'] == '/var/lib/postgresql'
        # Scheduled next to the server, so a ReadWriteOnce claim can attach before the server is scaled down.
        term = pod['affinity']['podAffinity']['preferredDuringSchedulingIgnoredDuringExecution'][0]['podAffinityTerm']
        assert term == {'topologyKey': 'kubernetes.io/hostname', 'labelSelector': {'matchLabels': {'app': 'postgres'}}}
    else:
        assert 'data' not in mounts and 'affinity' not in pod


def test_the_data_jobs_role_can_scale_the_deployment_and_nothing_else(default_objects):
    role = default_objects['role-data-jobs.yaml']
    assert role['metadata']['namespace'] == 'record-platform'
    assert role['rules'] == [
        {'apiGroups': ['apps'], 'resources': ['deployments'], 'verbs': ['get', 'list', 'patch']},
        {'apiGroups': ['apps'], 'resources': ['deployments/scale'], 'verbs': ['get', 'patch', 'update']},
        {'apiGroups': [''], 'resources': ['pods'], 'verbs': ['get', 'list', 'watch']}]
    binding = default_objects['rolebinding-data-jobs.yaml']
    assert binding['roleRef'] == {'apiGroup': 'rbac.authorization.k8s.io', 'kind': 'Role', 'name': 'postgres-data-jobs'}
    assert binding['subjects'] == [{'kind': 'ServiceAccount', 'name': 'postgres-data-jobs', 'namespace': 'record-platform'}]
    assert 'automountServiceAccountToken' not in default_objects['serviceaccount-data-jobs.yaml']
    assert default_objects['serviceaccount-backup-jobs.yaml']['automountServiceAccountToken'] is False


def test_the_claims_are_the_runbooks(default_objects):
    claims = {name: default_objects['pvcs/' + name] for name in PVCS}
    assert {(c['metadata']['name'], c['spec']['resources']['requests']['storage'], tuple(c['spec']['accessModes']))
            for c in claims.values()} == {('pgdata-big', '100Gi', ('ReadWriteOnce',)),
                                          ('pg-wal-archive', '20Gi', ('ReadWriteOnce',)),
                                          ('pgbackups', '200Gi', ('ReadWriteOnce',))}
    assert not any('storageClassName' in claim['spec'] for claim in claims.values())


def test_custom_settings_reach_every_object(custom_run):
    out, output = custom_run
    result = _assert_valid(out)
    objects = _objects(out)
    assert set(objects) == (KUSTOMIZED - {'cronjob-basebackup.yaml'}) | {'namespace.yaml'} | \
        {'pvcs/' + name for name in PVCS} | {'jobs/' + name for name in JOBS}
    assert len(result['objects']) == 15
    assert IMAGE_VOLUME_WARNING not in output
    assert {obj['metadata'].get('namespace', 'records') for obj in objects.values()} == {'records'}
    assert {obj['metadata']['labels']['team'] for obj in objects.values()} == {'platform'}
    assert objects['pvcs/pvc-data.yaml']['metadata']['name'] == 'pgdata-bigger'
    assert objects['pvcs/pvc-backups.yaml']['spec'] == {
        'accessModes': ['ReadWriteMany'], 'storageClassName': 'nfs-client', 'resources': {'requests': {'storage': '500Gi'}}}

    pod = objects['deployment.yaml']['spec']['template']['spec']
    db = pod['containers'][0]
    assert _env(db)['PGDATA'] == '/var/lib/postgresql/pgdata' and _env(pod['initContainers'][1])['PGDATA'] == '/var/lib/postgresql/pgdata'
    assert _env(db)['POSTGRES_PASSWORD'] == {'secretKeyRef': {'name': 'ledger-admin', 'key': 'pw'}}
    assert {m['name']: m['mountPath'] for m in db['volumeMounts']} == {
        'data': '/var/lib/postgresql', 'wal-archive': '/srv/wal', 'run': '/var/run/postgresql',
        'hba': '/etc/postgresql/pgops', 'init-sql': '/docker-entrypoint-initdb.d'}
    assert {'name': 'init-sql', 'configMap': {'name': 'ledger-init'}} in pod['volumes']
    settings = dict(arg.split('=', 1) for arg in db['args'][2::2])
    assert settings['max_connections'] == '200' and settings['wal_compression'] == 'true'
    assert settings['archive_timeout'] == '5min' and '/srv/wal/%f' in settings['archive_command']
    assert db['ports'][0]['containerPort'] == 5433 and objects['service.yaml']['metadata']['name'] == 'records-db'

    dump = objects['cronjob-dump.yaml']
    assert dump['metadata']['name'] == 'records-db-dump'
    assert (dump['spec']['schedule'], dump['spec']['timeZone']) == ('30 1 * * *', 'Europe/Paris')
    dump_pod = dump['spec']['jobTemplate']['spec']['template']['spec']
    assert dump_pod['containers'][0]['image'] == CUSTOM_VARS['pg_infra_jobs_image']
    assert json.loads(dump_pod['containers'][0]['args'][2]) == {
        'dump_database': 'ledger', 'dump_directory': '/srv/backups', 'dump_jobs': 4, 'dump_keep': 14}
    assert _env(dump_pod['containers'][0])['PGHOST'] == 'records-db' and _env(dump_pod['containers'][0])['PGPORT'] == '5433'
    bootstrap = objects['jobs/job-bootstrap.yaml']['spec']['template']['spec']['containers'][0]
    assert json.loads(bootstrap['args'][2]) == {
        'bootstrap_data_directory': '/var/lib/postgresql/pgdata', 'bootstrap_directory': '/srv/backups',
        'bootstrap_bundle': 'basebackup-20251102-0620.bundle.tar.gz', 'bootstrap_wal_archive_directory': '/srv/wal',
        'bootstrap_recovery_target_time': '2025-11-02T05:30:00Z', 'bootstrap_confirm': '/var/lib/postgresql/pgdata',
        'bootstrap_start': False, 'bootstrap_deployment': 'records-db', 'bootstrap_namespace': 'records'}
    restore = objects['jobs/job-restore.yaml']['spec']['template']['spec']['containers'][0]
    assert json.loads(restore['args'][2]) == {'restore_database': 'ledger', 'restore_directory': '/srv/backups',
                                              'restore_bundle': 'records_dump_20251102.tar.gz', 'restore_jobs': 8}
    restore_pod = objects['jobs/job-restore.yaml']['spec']['template']['spec']
    assert {'name': 'scratch', **CUSTOM_VARS['pg_infra_jobs_scratch_volume']} in restore_pod['volumes']
    wipe = objects['jobs/job-wipe.yaml']['spec']['template']['spec']['containers'][0]
    assert json.loads(wipe['args'][2]) == {'wipe_data_directory': '/var/lib/postgresql/pgdata', 'wipe_confirm': '/var/lib/postgresql/pgdata',
                                           'wipe_deployment': 'records-db', 'wipe_namespace': 'records'}
    assert objects['rolebinding-data-jobs.yaml']['subjects'][0] == {
        'kind': 'ServiceAccount', 'name': 'records-db-data-jobs', 'namespace': 'records'}


def test_rerendering_is_idempotent_and_removes_what_is_turned_off(tmp_path):
    out, _output = _render(tmp_path)
    first = {str(path): path.read_bytes() for path in out.rglob('*.yaml')}
    again = render_role(tmp_path, 'pg_infra', {'pg_infra_manifests_dir': str(out)})
    assert again.returncode == 0 and 'changed=0' in again.stdout, again.stdout
    assert {str(path): path.read_bytes() for path in out.rglob('*.yaml')} == first
    out, _output = _render(tmp_path, pg_infra_dump_enabled=False)
    assert not (out / 'cronjob-dump.yaml').exists() and (out / 'cronjob-basebackup.yaml').exists()
    assert 'cronjob-dump.yaml' not in yaml.safe_load((out / 'kustomization.yaml').read_text())['resources']
    _assert_valid(out)


@pytest.mark.parametrize('overrides, found', [
    # The runbook's mistake: the claim mounted at /var/lib/postgresql and again at PGDATA.
    ({'pg_infra_extra_volumes': [{'name': 'pgdata', 'persistentVolumeClaim': {'claimName': 'pgdata-big'}}],
      'pg_infra_extra_volume_mounts': [{'name': 'pgdata', 'mountPath': '/var/lib/postgresql/data/'}]},
     '["db at /var/lib/postgresql/data"]'),
    # The claim itself at PGDATA (its root's lost+found makes PGDATA non-empty).
    ({'pg_infra_data_mount_path': '/var/lib/postgresql//data'}, 'prep-dirs at /var/lib/postgresql/data'),
    ({'pg_infra_extra_volumes': [{'name': 'wal', 'emptyDir': {}}],
      'pg_infra_extra_volume_mounts': [{'name': 'wal', 'mountPath': '/var/lib/postgresql/data/pg_wal'}]},
     '["db at /var/lib/postgresql/data/pg_wal"]'),
    ({'pg_infra_pgdata': '/var/lib/postgresql/x/data', 'pg_infra_extra_volumes': [{'name': 'x', 'emptyDir': {}}],
      'pg_infra_extra_volume_mounts': [{'name': 'x', 'mountPath': '/var/lib/postgresql/x'}]},
     '["db at /var/lib/postgresql/x"]'),
    ({'pg_infra_pgdata': '/srv/pgdata'}, 'found []'),
], ids=['extra-mount-at-pgdata', 'claim-at-pgdata', 'inside-pgdata', 'between', 'outside-claim'])
def test_the_double_mount_is_refused_at_render_time(tmp_path, overrides, found):
    output = _refused(tmp_path, **overrides)
    assert found in output
    assert 'initdb: error: directory \\"' in output and 'exists but is not empty' in output
    assert 'Fix: mount the claim only at the parent directory' in output


@pytest.mark.parametrize('overrides, message', [
    ({'pg_infra_image': 'postgres:latest'}, 'needs a pinned tag'),
    ({'pg_infra_jobs_image': 'ghcr.io/pgops/resilience-ee'}, 'needs a pinned tag'),
    ({'pg_infra_time_zone': 'EST'}, 'must be an IANA time zone name'),
    ({'pg_infra_time_zone': 'America/New York'}, 'must be an IANA time zone name'),
    ({'pg_infra_dump_schedule': '0 0 6 * * *'}, 'the 5 fields of a Kubernetes CronJob'),
    ({'pg_infra_dump_schedule': 'TZ=UTC 0 6 * * *'}, 'without a TZ= prefix'),
    ({'pg_infra_wipe_confirm': 'yes'}, 'or exactly PGDATA'),
    ({'pg_infra_run_job': 'bootstrap'}, 'pg_infra_run_job=bootstrap or wipe needs that confirmation'),
    ({'pg_infra_postgresql_parameters': {'archive_command': '/bin/true'}}, 'may not set what the role owns'),
    ({'pg_infra_restore_bundle': '../etc/passwd'}, 'bundle names are file names'),
    ({'pg_infra_extra_volumes': [{'name': 'data', 'emptyDir': {}}]}, 'a name that the role does not use itself'),
], ids=['latest', 'ee-untagged', 'abbreviation', 'space', 'six-fields', 'tz-prefix', 'wrong-confirm',
        'unconfirmed-run', 'owned-parameter', 'bundle-path', 'reserved-volume'])
def test_unsafe_or_invalid_values_are_refused_before_anything_renders(tmp_path, overrides, message):
    assert message in _refused(tmp_path, **overrides)


def test_strict_validation_catches_a_typo_in_the_rendered_kinds(default_objects):
    # The render passes the same validation (test_default_render_is_valid_...); one misspelt field fails it.
    catalog = manifests.SchemaCatalog(CRD_DIR)
    deployment = copy.deepcopy(default_objects['deployment.yaml'])
    pod = deployment['spec']['template']['spec']
    pod['securityContext']['fsGroupChangePolicyy'] = pod['securityContext'].pop('fsGroupChangePolicy')
    assert any("'fsGroupChangePolicyy' was unexpected" in e for e in manifests.validate_object(deployment, catalog, KUBERNETES_VERSION))
    cronjob = copy.deepcopy(default_objects['cronjob-dump.yaml'])
    cronjob['spec']['timezone'] = cronjob['spec'].pop('timeZone')
    assert any("'timezone' was unexpected" in e for e in manifests.validate_object(cronjob, catalog, KUBERNETES_VERSION))
