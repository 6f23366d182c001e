# -*- coding: utf-8 -*-
"""The cnpg_cluster role renders a valid, safe CloudNativePG + barman-cloud setup and refuses unsafe input.

Every render goes through ansible-playbook, as a user runs the role; no cluster is needed or used. The outcomes
checked are the runbook's: a daily (not hourly) ScheduledBackup, WAL retention by the plugin's sidecar, cleanup /
health-check / storage-report jobs running the collection's playbooks from a pinned image, alerts, and a PITR
that archives under a new server name.
"""

from __future__ import annotations

import copy
import filecmp
import json
import os

import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._k8s import manifests
from tests.manifest_checks import CRD_DIR, assert_valid, load_objects, render_role

BASE_VARS = {'cnpg_cluster_destination_path': 's3://kilobase/barman/backup'}
CORE_FILES = {'objectstore.yaml', 'cluster.yaml', 'scheduledbackup.yaml', 'serviceaccount.yaml',
              'cronjob-backup-cleanup.yaml', 'cronjob-backup-check.yaml', 'cronjob-storage-report.yaml',
              'podmonitor.yaml', 'prometheusrule.yaml'}
CRONJOBS = ('cronjob-backup-cleanup.yaml', 'cronjob-backup-check.yaml', 'cronjob-storage-report.yaml')
EE_IMAGE = 'ghcr.io/pgops/resilience-ee:0.1.0'
PITR_VARS = {
    'cnpg_cluster_name': 'supabase-cluster', 'cnpg_cluster_namespace': 'kilobase',
    'cnpg_cluster_server_name': 'kilobase-postgres-backup-pitr1', 'cnpg_cluster_backup_immediate': True,
    'cnpg_cluster_recovery': {'source_server_name': 'kilobase-postgres-backup', 'target_time': '2024-11-26T10:00:00Z'},
}


def _render(tmp_path, name='out', **overrides):
    out = tmp_path / name
    proc = render_role(tmp_path, 'cnpg_cluster', dict(BASE_VARS, cnpg_cluster_manifests_dir=str(out), **overrides))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _refused(tmp_path, **overrides):
    """Render with ``overrides`` expecting failure; the run's output. Nothing may have been rendered."""
    out = tmp_path / 'refused'
    proc = render_role(tmp_path, 'cnpg_cluster', dict(BASE_VARS, cnpg_cluster_manifests_dir=str(out), **overrides))
    assert proc.returncode != 0, proc.stdout
    assert not out.exists()
    return proc.stdout + proc.stderr


def _container(cronjob):
    return cronjob['spec']['jobTemplate']['spec']['template']['spec']['containers'][0]


# Only the Cluster, the ObjectStore, the ScheduledBackup and the cleanup CronJob, for tests about those (faster).
LEAN_VARS = {'cnpg_cluster_health_check_enabled': False, 'cnpg_cluster_storage_report_enabled': False,
             'cnpg_cluster_monitoring_enabled': False}


@pytest.fixture(scope='module')
def default_run(tmp_path_factory):
    return _render(tmp_path_factory.mktemp('default'))


@pytest.fixture(scope='module')
def default_render(default_run):
    return default_run[0]


@pytest.fixture(scope='module')
def runbook_schedule_render(tmp_path_factory):
    """The runbook's ScheduledBackup schedule, in the 5-field form that ran hourly."""
    return _render(tmp_path_factory.mktemp('runbook'), cnpg_cluster_backup_schedule='0 2 * * *')


@pytest.fixture(scope='module')
def pitr_render(tmp_path_factory):
    out, _proc = _render(tmp_path_factory.mktemp('pitr'), **PITR_VARS)
    return out


def test_default_render_is_valid_and_complete(default_render):
    result = assert_valid(default_render)
    assert set(os.listdir(default_render)) == CORE_FILES | {'kustomization.yaml'}
    assert len(result['objects']) == 9
    kustomization = yaml.safe_load((default_render / 'kustomization.yaml').read_text())
    # The ObjectStore before the Cluster that archives to it.
    assert kustomization['resources'][:3] == ['objectstore.yaml', 'cluster.yaml', 'scheduledbackup.yaml']
    assert set(kustomization['resources']) == CORE_FILES


def test_the_runbook_schedule_becomes_daily_with_a_warning(runbook_schedule_render):
    out, proc = runbook_schedule_render
    assert load_objects(out)['scheduledbackup.yaml']['spec']['schedule'] == '0 0 2 * * *'
    output = proc.stdout + proc.stderr
    assert "[WARNING]: cnpg_schedule: '0 2 * * *' has 5 fields" in output
    assert "Converted to '0 0 2 * * *'" in output and 'every hour (00:02:00, 01:02:00' in output
    assert_valid(out)


def test_the_default_schedule_is_daily_at_2_without_a_warning(default_run):
    out, proc = default_run
    assert load_objects(out)['scheduledbackup.yaml']['spec']['schedule'] == '0 0 2 * * *'
    assert 'cnpg_schedule' not in proc.stdout + proc.stderr


@pytest.mark.parametrize('schedule, explanation', [
    ('0 60 2 * * *', "'60' is out of range in the minute field (0-59)"),
    ('0 2 * * * 2026', 'looks like a year'),
    ('*/5 * * * * *', 'is ambiguous'),
    ('0 2 * * ? *', 'AWS EventBridge'),
    ('every day at 2', 'has 4 fields'),
], ids=['out-of-range', 'year', 'seconds', 'aws', 'garbage'])
def test_an_invalid_schedule_fails_the_run_with_the_explanation(tmp_path, schedule, explanation):
    output = _refused(tmp_path, cnpg_cluster_backup_schedule=schedule)
    assert explanation in output
    assert "for example '0 0 2 * * *' runs once a day at 02:00:00" in output


def test_strict_refuses_a_5_field_schedule(tmp_path):
    output = _refused(tmp_path, cnpg_cluster_backup_schedule='0 2 * * *', cnpg_cluster_backup_schedule_strict=True)
    assert "cnpg_schedule (strict): '0 2 * * *' has 5 fields" in output


def test_scheduled_backup_uses_the_plugin(default_render):
    spec = load_objects(default_render)['scheduledbackup.yaml']['spec']
    assert spec == {'schedule': '0 0 2 * * *', 'immediate': False, 'backupOwnerReference': 'self',
                    'cluster': {'name': 'pg-cluster'}, 'method': 'plugin',
                    'pluginConfiguration': {'name': 'barman-cloud.cloudnative-pg.io'}, 'target': 'prefer-standby'}


def test_cluster_archives_through_the_plugin(default_render):
    spec = load_objects(default_render)['cluster.yaml']['spec']
    assert spec['instances'] == 3
    assert spec['imageName'] == 'ghcr.io/cloudnative-pg/postgresql:16.9-standard-bookworm'
    assert spec['plugins'] == [{'name': 'barman-cloud.cloudnative-pg.io', 'enabled': True, 'isWALArchiver': True,
                                'parameters': {'barmanObjectName': 'pg-cluster-backup-store', 'serverName': 'pg-cluster'}}]
    assert spec['monitoring'] == {'enablePodMonitor': False}
    assert spec['bootstrap'] == {'initdb': {'database': 'app', 'owner': 'app'}}
    assert 'externalClusters' not in spec


def test_object_store_cleans_up_wal_with_the_sidecar(default_render):
    spec = load_objects(default_render)['objectstore.yaml']['spec']
    assert spec['retentionPolicy'] == '7d'
    assert spec['instanceSidecarConfiguration'] == {'retentionPolicyIntervalSeconds': 1800}
    configuration = spec['configuration']
    assert configuration['destinationPath'] == 's3://kilobase/barman/backup'
    assert configuration['s3Credentials'] == {
        'accessKeyId': {'name': 'pg-cluster-s3-credentials', 'key': 'ACCESS_KEY_ID'},
        'secretAccessKey': {'name': 'pg-cluster-s3-credentials', 'key': 'ACCESS_SECRET_KEY'}}
    assert configuration['wal'] == {'compression': 'gzip'}
    # The CRD forbids serverName here (CEL); the Cluster's plugin parameter carries it.
    assert 'serverName' not in configuration and 'endpointURL' not in configuration and 'data' not in configuration


@pytest.mark.parametrize('file_name, playbook, schedule, limits, extra_vars', [
    ('cronjob-backup-cleanup.yaml', 'pgops.resilience.barman_retention', '0 4 * * *', (3, 2), {
        'barman_destination_path': 's3://kilobase/barman/backup', 'barman_server_name': 'pg-cluster',
        'barman_retention_policy': 'RECOVERY WINDOW OF 7 DAYS', 'barman_minimum_redundancy': 1,
        'barman_remove_servers': []}),
    ('cronjob-backup-check.yaml', 'pgops.resilience.backup_health_check', '0 6 * * 0', (4, 2), {
        'barman_destination_path': 's3://kilobase/barman/backup', 'barman_server_name': 'pg-cluster',
        'barman_backup_age_warning_hours': 48, 'barman_backup_age_critical_hours': 168}),
    ('cronjob-storage-report.yaml', 'pgops.resilience.storage_report', '0 8 1 * *', (3, 2), {
        'barman_destination_path': 's3://kilobase/barman/backup', 'barman_server_name': 'pg-cluster'}),
], ids=['cleanup', 'health-check', 'storage-report'])
def test_cronjobs_run_the_playbooks_safely(default_render, file_name, playbook, schedule, limits, extra_vars):
    cronjob = load_objects(default_render)[file_name]
    spec = cronjob['spec']
    assert spec['schedule'] == schedule and spec['concurrencyPolicy'] == 'Forbid'
    assert (spec['successfulJobsHistoryLimit'], spec['failedJobsHistoryLimit']) == limits
    job = spec['jobTemplate']['spec']
    assert job['activeDeadlineSeconds'] == 3600 and job['ttlSecondsAfterFinished'] > 0 and job['backoffLimit'] == 1
    pod = job['template']['spec']
    assert pod['serviceAccountName'] == 'pg-cluster-backup-jobs' and pod['automountServiceAccountToken'] is False
    assert pod['securityContext']['runAsNonRoot'] is True and pod['securityContext']['runAsUser'] == 1000
    container = _container(cronjob)
    # Pinned image; the playbook is the command, its extra variables one JSON document: no shell in between.
    assert container['image'] == EE_IMAGE
    assert container['command'] == ['ansible-playbook']
    assert container['args'][:2] == [playbook, '--extra-vars'] and len(container['args']) == 3
    assert json.loads(container['args'][2]) == extra_vars
    env = dict((item['name'], item) for item in container['env'])
    assert env['AWS_ACCESS_KEY_ID']['valueFrom'] == {'secretKeyRef': {'name': 'pg-cluster-s3-credentials', 'key': 'ACCESS_KEY_ID'}}
    assert env['AWS_SECRET_ACCESS_KEY']['valueFrom'] == {
        'secretKeyRef': {'name': 'pg-cluster-s3-credentials', 'key': 'ACCESS_SECRET_KEY'}}
    assert env['AWS_REGION']['value'] == 'us-east-1' and 'AWS_ENDPOINT_URL' not in env
    security = container['securityContext']
    assert security['readOnlyRootFilesystem'] is True and security['allowPrivilegeEscalation'] is False
    assert security['capabilities']['drop'] == ['ALL'] and security['runAsNonRoot'] is True
    assert container['resources']['requests'] and container['resources']['limits']
    assert cronjob['metadata']['labels']['app'] == cronjob['metadata']['name']


def test_every_image_is_pinned(default_render, pitr_render):
    for directory in (default_render, pitr_render):
        objects = load_objects(directory)
        images = [_container(objects[name])['image'] for name in CRONJOBS] + [objects['cluster.yaml']['spec']['imageName']]
        for image in images:
            assert not image.endswith(':latest') and ':' in image.rsplit('/', 1)[-1]


def test_the_job_service_account_has_no_token(default_render):
    account = load_objects(default_render)['serviceaccount.yaml']
    assert account['automountServiceAccountToken'] is False
    assert account['metadata']['name'] == 'pg-cluster-backup-jobs'


def test_podmonitor_scrapes_the_cluster_instances(default_render):
    spec = load_objects(default_render)['podmonitor.yaml']['spec']
    assert spec == {'selector': {'matchLabels': {'cnpg.io/cluster': 'pg-cluster', 'cnpg.io/podRole': 'instance'}},
                    'podMetricsEndpoints': [{'port': 'metrics'}]}


def test_alerts_cover_backups_wal_archiving_and_certificates(default_render):
    rules = load_objects(default_render)['prometheusrule.yaml']['spec']['groups'][0]['rules']
    by_name = {}
    for rule in rules:
        by_name.setdefault(rule['alert'], []).append(rule)
        assert rule['labels']['severity'] in ('warning', 'critical')
        assert rule['labels']['cnpg_cluster'] == 'pg-cluster'
        assert rule['annotations']['summary'] and len(rule['annotations']['description']) > 100
        assert 'runbook_url' not in rule['annotations']
    assert sorted(by_name) == ['CNPGBackupFailed', 'CNPGBackupMetricsAbsent', 'CNPGBackupTooOld',
                               'CNPGCertificateExpiringSoon', 'CNPGWALArchivingFailing']
    too_old = {rule['labels']['severity']: rule['expr'] for rule in by_name['CNPGBackupTooOld']}
    assert 'barman_cloud_cloudnative_pg_io_last_available_backup_timestamp{namespace="default", pod=~"pg-cluster-[0-9]+"}' \
        in too_old['warning']
    assert too_old['warning'].endswith('> 26 * 3600') and too_old['critical'].endswith('> 50 * 3600')
    failed = by_name['CNPGBackupFailed'][0]['expr']
    assert failed.index('last_failed_backup_timestamp') < failed.index('>') < failed.index('last_available_backup_timestamp')
    wal = by_name['CNPGWALArchivingFailing'][0]
    assert wal['labels']['severity'] == 'critical'
    assert 'cnpg_pg_stat_archiver_last_failed_time' in wal['expr'] and 'cnpg_pg_stat_archiver_last_archived_time' in wal['expr']
    certificate = by_name['CNPGCertificateExpiringSoon'][0]['expr']
    assert 'x509_cert_not_after' in certificate and 'pg-cluster-(ca|server|replication)' in certificate
    assert certificate.endswith('< 6 * 86400')


def test_pitr_bootstraps_from_the_old_server_and_archives_under_a_new_one(pitr_render):
    assert_valid(pitr_render)
    objects = load_objects(pitr_render)
    spec = objects['cluster.yaml']['spec']
    assert spec['bootstrap'] == {'recovery': {'source': 'kilobase-postgres-backup',
                                              'recoveryTarget': {'targetTime': '2024-11-26T10:00:00Z'}}}
    assert spec['externalClusters'] == [{'name': 'kilobase-postgres-backup', 'plugin': {
        'name': 'barman-cloud.cloudnative-pg.io',
        'parameters': {'barmanObjectName': 'supabase-cluster-backup-store', 'serverName': 'kilobase-postgres-backup'}}}]
    assert spec['plugins'][0]['parameters'] == {'barmanObjectName': 'supabase-cluster-backup-store',
                                                'serverName': 'kilobase-postgres-backup-pitr1'}
    assert objects['scheduledbackup.yaml']['spec']['immediate'] is True
    for name in CRONJOBS:
        assert json.loads(_container(objects[name])['args'][2])['barman_server_name'] == 'kilobase-postgres-backup-pitr1'


@pytest.mark.parametrize('target, expected', [
    ({'target_lsn': '0/1234567'}, {'targetLSN': '0/1234567'}),
    ({'target_xid': '1234567', 'exclusive': True}, {'targetXID': '1234567', 'exclusive': True}),
    ({'target_name': 'before-migration'}, {'targetName': 'before-migration'}),
    ({}, None),
], ids=['lsn', 'xid', 'name', 'full'])
def test_pitr_targets(tmp_path, target, expected):
    recovery = dict(source_server_name='old-server', object_store='old-store', **target)
    out, _proc = _render(tmp_path, cnpg_cluster_recovery=recovery, **LEAN_VARS)
    assert_valid(out)
    spec = load_objects(out)['cluster.yaml']['spec']
    assert spec['bootstrap']['recovery'].get('recoveryTarget') == expected
    assert spec['externalClusters'][0]['plugin']['parameters'] == {'barmanObjectName': 'old-store', 'serverName': 'old-server'}


@pytest.mark.parametrize('overrides', [
    {'cnpg_cluster_recovery': {'source_server_name': 'pg-cluster', 'target_time': '2024-11-26T10:00:00Z'}},
    {'cnpg_cluster_server_name': 'kilobase-postgres-backup',
     'cnpg_cluster_recovery': {'source_server_name': 'kilobase-postgres-backup'}},
], ids=['default-server-name', 'explicit-server-name'])
def test_recovering_into_the_same_server_name_is_refused(tmp_path, overrides):
    output = _refused(tmp_path, **overrides)
    assert 'new timeline' in output and 'Set cnpg_cluster_server_name to a new name' in output


@pytest.mark.parametrize('recovery, message', [
    ({'target_time': '2024-11-26T10:00:00Z'}, 'needs source_server_name'),
    ({'source_server_name': 'old', 'target_time': '2024-11-26T10:00:00Z', 'target_lsn': '0/1'}, 'at most one of'),
    ({'source_server_name': 'old', 'target_time': 'yesterday'}, 'RFC 3339'),
    ({'source_server_name': 'old', 'target_tme': '2024-11-26T10:00:00Z'}, 'target_tme'),
], ids=['no-source', 'two-targets', 'bad-time', 'typo'])
def test_incomplete_recovery_settings_are_refused(tmp_path, recovery, message):
    assert message in _refused(tmp_path, cnpg_cluster_recovery=recovery)


def test_the_recovery_source_cannot_be_cleaned_up(tmp_path):
    output = _refused(tmp_path, cnpg_cluster_recovery={'source_server_name': 'old'}, cnpg_cluster_server_name='new',
                      cnpg_cluster_cleanup_remove_servers=['old'])
    assert 'keep the source server out of cnpg_cluster_cleanup_remove_servers' in output


def test_the_own_server_cannot_be_cleaned_up(tmp_path):
    assert 'must not name this cluster\'s own server' in _refused(tmp_path, cnpg_cluster_cleanup_remove_servers=['pg-cluster'])


@pytest.mark.parametrize('policy, barman', [('14d', 'RECOVERY WINDOW OF 14 DAYS'), ('2w', 'RECOVERY WINDOW OF 2 WEEKS'),
                                            ('1m', 'RECOVERY WINDOW OF 1 MONTHS')])
def test_the_cleanup_applies_the_object_store_retention_in_barman_words(tmp_path, policy, barman):
    out, _proc = _render(tmp_path, cnpg_cluster_retention_policy=policy, **LEAN_VARS)
    objects = load_objects(out)
    assert objects['objectstore.yaml']['spec']['retentionPolicy'] == policy
    assert json.loads(_container(objects['cronjob-backup-cleanup.yaml'])['args'][2])['barman_retention_policy'] == barman


def test_runbook_settings_reach_the_objects(tmp_path):
    out, _proc = _render(
        tmp_path, cnpg_cluster_name='supabase-cluster', cnpg_cluster_namespace='kilobase', cnpg_cluster_create_namespace=True,
        cnpg_cluster_server_name='kilobase-postgres-backup', cnpg_cluster_object_store_name='kilobase-backup-store',
        cnpg_cluster_s3_secret_name='kilobase-s3-secret', cnpg_cluster_s3_access_key_id_key='keyId',
        cnpg_cluster_s3_secret_access_key_key='accessKey', cnpg_cluster_s3_endpoint_url='https://minio.kilobase.svc:9000',
        cnpg_cluster_retention_policy='3d', cnpg_cluster_storage_class='longhorn', cnpg_cluster_data_compression='gzip',
        cnpg_cluster_cleanup_retention_policy='REDUNDANCY 3', cnpg_cluster_cleanup_minimum_redundancy=2,
        cnpg_cluster_cleanup_remove_servers=['supabase', 'supabase-release-supabase-db'],
        cnpg_cluster_postgresql_parameters={'max_connections': 200, 'wal_compression': True},
        cnpg_cluster_labels={'team': 'platform'}, cnpg_cluster_monitoring_labels={'release': 'kube-prometheus-stack'},
        cnpg_cluster_jobs_time_zone='Europe/Paris', cnpg_cluster_alert_runbook_url='https://runbooks.example/cnpg',
        cnpg_cluster_jobs_image='registry.local:5000/ee@sha256:' + 'a' * 64)
    assert_valid(out)
    objects = load_objects(out)
    assert objects['namespace.yaml']['metadata']['name'] == 'kilobase'
    assert {o['metadata'].get('namespace', 'kilobase') for o in objects.values()} == {'kilobase'}
    assert {o['metadata']['labels']['team'] for o in objects.values()} == {'platform'}
    assert objects['podmonitor.yaml']['metadata']['labels']['release'] == 'kube-prometheus-stack'
    assert objects['prometheusrule.yaml']['metadata']['labels']['release'] == 'kube-prometheus-stack'
    store = objects['objectstore.yaml']['spec']
    assert store['configuration']['endpointURL'] == 'https://minio.kilobase.svc:9000'
    assert store['configuration']['data'] == {'compression': 'gzip'} and store['retentionPolicy'] == '3d'
    cluster = objects['cluster.yaml']['spec']
    assert cluster['storage'] == {'size': '10Gi', 'storageClass': 'longhorn'}
    assert cluster['postgresql']['parameters'] == {'max_connections': '200', 'wal_compression': 'true'}
    assert cluster['plugins'][0]['parameters'] == {'barmanObjectName': 'kilobase-backup-store',
                                                   'serverName': 'kilobase-postgres-backup'}
    cleanup = objects['cronjob-backup-cleanup.yaml']
    assert cleanup['metadata']['name'] == 'supabase-cluster-backup-cleanup' and cleanup['spec']['timeZone'] == 'Europe/Paris'
    container = _container(cleanup)
    assert container['image'] == 'registry.local:5000/ee@sha256:' + 'a' * 64
    assert json.loads(container['args'][2]) == {
        'barman_destination_path': 's3://kilobase/barman/backup', 'barman_server_name': 'kilobase-postgres-backup',
        'barman_retention_policy': 'REDUNDANCY 3', 'barman_minimum_redundancy': 2,
        'barman_remove_servers': ['supabase', 'supabase-release-supabase-db']}
    env = dict((item['name'], item) for item in container['env'])
    assert env['AWS_ENDPOINT_URL']['value'] == 'https://minio.kilobase.svc:9000'
    assert env['AWS_ACCESS_KEY_ID']['valueFrom']['secretKeyRef'] == {'name': 'kilobase-s3-secret', 'key': 'keyId'}
    rules = objects['prometheusrule.yaml']['spec']['groups'][0]['rules']
    assert {rule['annotations']['runbook_url'] for rule in rules} == {'https://runbooks.example/cnpg'}


def test_turning_features_off_removes_their_files(tmp_path):
    out, _proc = _render(tmp_path, cnpg_cluster_create_namespace=True, cnpg_cluster_alert_certificate_enabled=False,
                         cnpg_cluster_health_check_enabled=False)
    objects = load_objects(out)
    assert set(objects) == CORE_FILES - {'cronjob-backup-check.yaml'} | {'namespace.yaml'}
    rules = objects['prometheusrule.yaml']['spec']['groups'][0]['rules']
    assert 'CNPGCertificateExpiringSoon' not in {rule['alert'] for rule in rules}
    # Into the same directory: the files of what is now off disappear, the kustomization follows.
    out, _proc = _render(tmp_path, cnpg_cluster_cleanup_enabled=False, **LEAN_VARS)
    assert set(os.listdir(out)) == {'objectstore.yaml', 'cluster.yaml', 'scheduledbackup.yaml', 'kustomization.yaml'}
    assert len(assert_valid(out)['objects']) == 3


@pytest.mark.parametrize('overrides, message', [
    ({'cnpg_cluster_jobs_image': 'ghcr.io/pgops/resilience-ee:latest'}, 'needs a pinned tag'),
    ({'cnpg_cluster_jobs_image': 'ghcr.io/pgops/resilience-ee'}, 'needs a pinned tag'),
    ({'cnpg_cluster_image': 'ghcr.io/cloudnative-pg/postgresql:latest'}, 'needs a pinned tag'),
    ({'cnpg_cluster_destination_path': 'kilobase/barman/backup'}, 's3://<bucket>[/<prefix>]'),
    ({'cnpg_cluster_destination_path': 's3://kilobase/barman/backup/'}, 's3://<bucket>[/<prefix>]'),
    ({'cnpg_cluster_retention_policy': '7'}, '^[1-9][0-9]*[dwm]$'),
    ({'cnpg_cluster_retention_policy': '0d'}, '^[1-9][0-9]*[dwm]$'),
    ({'cnpg_cluster_retention_policy': '1y'}, '^[1-9][0-9]*[dwm]$'),
    ({'cnpg_cluster_cleanup_retention_policy': 'keep a week'}, "'RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS'"),
    ({'cnpg_cluster_name': 'PG_Cluster'}, 'DNS-1035 label'),
    ({'cnpg_cluster_name': 'a' * 38}, 'at most 37 characters'),
    ({'cnpg_cluster_name': 'pg\nkind: Secret'}, 'DNS-1035 label'),
    ({'cnpg_cluster_server_name': 'pg-cluster\n'}, 'server names (the folders under the destination path)'),
    ({'cnpg_cluster_cleanup_schedule': '0 0 4 * * *'}, 'the 5 fields of a Kubernetes CronJob'),
    ({'cnpg_cluster_health_check_backup_age_warning_hours': 200}, 'warning must come before the'),
    ({'cnpg_cluster_backup_target': 'standby'}, 'cnpg_cluster_backup_target'),
    ({'cnpg_cluster_instances': 'three'}, 'cnpg_cluster_instances'),
], ids=['ee-latest', 'ee-untagged', 'pg-latest', 'not-s3', 'trailing-slash', 'no-unit', 'zero', 'years',
        'barman-policy', 'name', 'long-name', 'newline-name', 'newline-server', 'six-field-cronjob', 'thresholds', 'choice', 'type'])
def test_unsafe_or_invalid_values_are_refused_before_anything_renders(tmp_path, overrides, message):
    assert message in _refused(tmp_path, **overrides)


def test_the_destination_path_is_required(tmp_path):
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'cnpg_cluster', {'cnpg_cluster_manifests_dir': str(out)})
    assert proc.returncode != 0 and 'cnpg_cluster_destination_path' in proc.stdout
    assert 'Validating arguments against arg spec' in proc.stdout and not out.exists()


@pytest.mark.parametrize('file_name, path, typo, expected', [
    ('cluster.yaml', ['spec', 'plugins', 0], ('isWALArchiver', 'isWalArchiver'), "'isWalArchiver' was unexpected"),
    ('objectstore.yaml', ['spec', 'instanceSidecarConfiguration'],
     ('retentionPolicyIntervalSeconds', 'retentionIntervalSeconds'), "'retentionIntervalSeconds' was unexpected"),
    ('scheduledbackup.yaml', ['spec'], ('backupOwnerReference', 'ownerReference'), "'ownerReference' was unexpected"),
    ('podmonitor.yaml', ['spec'], ('podMetricsEndpoints', 'endpoints'), "'endpoints' was unexpected"),
    ('prometheusrule.yaml', ['spec', 'groups', 0, 'rules', 0], ('annotations', 'annotation'), "'annotation' was unexpected"),
    ('cronjob-backup-cleanup.yaml', ['spec'], ('concurrencyPolicy', 'concurrencyPolcy'), "'concurrencyPolcy' was unexpected"),
], ids=['cluster', 'objectstore', 'scheduledbackup', 'podmonitor', 'prometheusrule', 'cronjob'])
def test_strict_validation_catches_a_typo_in_each_kind(default_render, file_name, path, typo, expected):
    # The render passes the same validation (test_default_render_is_valid_and_complete); one misspelt field fails it.
    obj = copy.deepcopy(load_objects(default_render)[file_name])
    node = obj
    for key in path:
        node = node[key]
    node[typo[1]] = node.pop(typo[0])
    catalog = manifests.SchemaCatalog(CRD_DIR)
    errors = manifests.validate_object(obj, catalog)
    assert any(expected in error for error in errors), errors


def test_rendering_is_stable_and_idempotent(tmp_path):
    first, _proc = _render(tmp_path, 'first', **PITR_VARS)
    second, _proc = _render(tmp_path, 'second', **PITR_VARS)
    comparison = filecmp.dircmp(str(first), str(second))
    assert not comparison.diff_files and not comparison.left_only and not comparison.right_only
    for name in os.listdir(first):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    _again, proc = _render(tmp_path, 'second', **PITR_VARS)
    assert 'changed=0' in proc.stdout, proc.stdout


def test_check_mode_shows_the_diff_and_writes_nothing(tmp_path):
    out = tmp_path / 'out'
    proc = render_role(tmp_path, 'cnpg_cluster', dict(BASE_VARS, cnpg_cluster_manifests_dir=str(out)), check=True, diff=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '+kind: ScheduledBackup' in proc.stdout and '+kind: ObjectStore' in proc.stdout
    assert not out.exists()
