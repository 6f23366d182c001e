# -*- coding: utf-8 -*-
"""barman_catalog_info over real catalogs: written by barman itself (barman-cloud-wal-archive as the primary's
archive_command, barman-cloud-backup of the running primary) into moto's S3 server, read through the module_utils
entry point and through the playbooks, and compared with barman's own barman-cloud-backup-list and with direct
listings of the bucket.

Tests that change a catalog (a deleted WAL segment, a FAILED backup.info, another server directory) work on a
server-side copy of it under a name of their own, so the catalog barman wrote stays as it was.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3 import client as s3_client_module

from ansible_collections.pgops.resilience.plugins.module_utils._barman import health as barman_catalog
from pgops_sandbox.barman import require_tool
from tests.integration.helpers import barman_params, run_playbook
from tests.unit.barman.test_catalog import parse_exposition

HEALTH_CHECK = 'pgops.resilience.backup_health_check'
STORAGE_REPORT = 'pgops.resilience.storage_report'


def params_for(settings, **overrides):
    """Module parameters as AnsibleModule fills them in: the defaults, the sandbox's S3 settings, ``overrides``."""
    return barman_params(barman_catalog.argument_spec(), settings, **overrides)


def listing(box, prefix):
    """{key: size} of every object under ``prefix``, listed directly."""
    return box.s3.objects(prefix)


def segment_of(key):
    """The segment name of a WAL object key."""
    return key.rsplit('/', 1)[1][:24]


def copy_server(box, source, target):
    """Copy every object of barman server ``source`` to server ``target`` (server-side copies); returns the keys copied."""
    client = box.s3.client()
    root = 'barman/'
    keys = sorted(listing(box, root + source + '/'))
    for key in keys:
        client.copy_object(Bucket=box.bucket, Key=root + target + key[len(root + source):],
                           CopySource=dict(Bucket=box.bucket, Key=key))
    return keys


def barman_list(box, settings):
    """barman-cloud-backup-list --format json: barman's own reading of the catalog, {backup_id: backup}."""
    tool = require_tool('barman-cloud-backup-list')  # installed with barman-cloud-wal-archive; missing is a failure
    env = dict(os.environ, AWS_ACCESS_KEY_ID=box.s3.access_key, AWS_SECRET_ACCESS_KEY=box.s3.secret_key,
               AWS_DEFAULT_REGION=box.s3.region)
    out = subprocess.run([tool, '--endpoint-url', box.s3.endpoint_url, '--format', 'json', settings['destination_path'],
                          settings['server_name']], env=env, capture_output=True, text=True, timeout=120, check=True)
    return dict((b['backup_id'], b) for b in json.loads(out.stdout)['backups_list'])


def write_and_switch(box, rounds):
    """Write some rows and archive the segment, ``rounds`` times (each round archives at least one segment)."""
    box.primary.execute('CREATE TABLE IF NOT EXISTS catalog_filler (id serial, note text)')
    for index in range(rounds):
        box.primary.execute("INSERT INTO catalog_filler (note) SELECT 'round %d' FROM generate_series(1, 500)" % index)
        box.barman_wait_archived()


@pytest.fixture(scope='module')
def catalog(barman_sandbox):
    """A catalog barman wrote: WAL archived, backup 1, three more archived segments, backup 2, one more segment.

    WAL shipping goes back to the server it went to before, so the catalog stays as it is for the module's tests.
    Returns dict(box, settings, backups=[id1, id2]).
    """
    box = barman_sandbox
    previous = box.barman_settings()['server_name']
    name = 'catalog-%s' % uuid.uuid4().hex[:8]
    settings = box.barman_server(name)
    try:
        box.barman_wait_archived()
        first = box.barman_backup(name)
        write_and_switch(box, 3)
        second = box.barman_backup(name)
        write_and_switch(box, 1)
    finally:
        box.barman_server(previous)
    return dict(box=box, settings=settings, backups=[first, second])


def test_two_backups_as_barman_lists_them(catalog):
    box, settings = catalog['box'], catalog['settings']
    result = barman_catalog.report_catalog(params_for(settings))
    assert result['changed'] is False and result['server_found'] is True
    assert [b['backup_id'] for b in result['backups']] == catalog['backups']
    barman = barman_list(box, settings)
    assert sorted(barman) == catalog['backups']
    for backup in result['backups']:
        theirs = barman[backup['backup_id']]
        assert backup['readable'] is True and backup['status'] == theirs['status'] == 'DONE'
        assert (backup['begin_wal'], backup['end_wal']) == (theirs['begin_wal'], theirs['end_wal'])
        assert (backup['begin_lsn'], backup['end_lsn']) == (theirs['begin_xlog'], theirs['end_xlog'])
        assert backup['timeline'] == theirs['timeline'] == 1
        assert backup['systemid'] == theirs['systemid'] and backup['xlog_segment_size'] == theirs['xlog_segment_size']
        assert backup['wal_missing'] == 0 and backup['keep'] is None
        assert backup['begin_time'].endswith('Z') and backup['end_time'] > backup['begin_time']
        objects = listing(box, backup['prefix'])
        assert backup['stored_bytes'] == sum(objects.values()) and backup['objects'] == len(objects)
        assert backup['prefix'] + 'backup.info' in objects
    assert result['backup_count'] == 2 and result['backup_counts'] == {'DONE': 2}
    assert result['latest_backup']['backup_id'] == catalog['backups'][1]
    assert 0 <= result['latest_backup']['age_seconds'] < 3600
    assert result['verdict'] == 'ok', result['verdict_reasons']
    assert result['verdict_reasons'] == [] and result['stale_backups'] == []
    # The same results as Prometheus text, for the playbook to write (the module writes nothing).
    samples = parse_exposition(result['prometheus_text'])
    server = ('server', settings['server_name'])
    assert samples[('pgops_barman_verdict', (server,))] == 0
    assert samples[('pgops_barman_backups', (server, ('status', 'DONE')))] == 2
    assert samples[('pgops_barman_last_backup_timestamp_seconds', (server,))] == result['latest_backup']['timestamp']


def test_wal_counts_equal_a_direct_listing(catalog):
    box, settings = catalog['box'], catalog['settings']
    result = barman_catalog.report_catalog(params_for(settings))
    wal = result['wal']
    objects = listing(box, 'barman/%s/wals/' % settings['server_name'])
    assert (wal['count'], wal['bytes']) == (len(objects), sum(objects.values()))
    segments = sorted(k.rsplit('/', 1)[1][:24] for k in objects if re.search(r'/[0-9A-F]{24}\.gz$', k))
    assert wal['segments'] == len(segments) >= 6
    assert (wal['first_segment'], wal['last_segment']) == (segments[0], segments[-1])
    assert wal['backup_labels'] == 2 and wal['timelines'] == [1] and wal['history_files'] == []
    assert wal['gaps'] == [] and wal['gap_count'] == 0 and wal['missing_segments'] == 0
    directories = dict((d['path'], d) for d in result['storage']['directories'])
    assert directories[result['server_prefix'] + 'wals/']['bytes'] == wal['bytes']
    base = listing(box, result['server_prefix'] + 'base/')
    assert (directories[result['server_prefix'] + 'base/']['bytes'], directories[result['server_prefix'] + 'base/']['objects']) == \
        (sum(base.values()), len(base))
    everything = listing(box, 'barman/')
    assert (result['storage']['total_bytes'], result['storage']['total_objects']) == (sum(everything.values()), len(everything))


def test_a_deleted_wal_segment_is_one_gap(catalog):
    box, settings = catalog['box'], catalog['settings']
    first, second = barman_catalog.report_catalog(params_for(settings))['backups']
    name = 'gap-%s' % uuid.uuid4().hex[:8]
    copy_server(box, settings['server_name'], name)
    client = box.s3.client()
    wals = 'barman/%s/wals/' % name
    between = sorted(k for k in listing(box, wals)
                     if re.search(r'/[0-9A-F]{24}\.gz$', k) and first['end_wal'] < k.rsplit('/', 1)[1][:24] < second['begin_wal'])
    assert len(between) >= 3, between
    doomed = between[len(between) // 2]
    client.delete_object(Bucket=box.bucket, Key=doomed)
    result = barman_catalog.report_catalog(params_for(settings, server_name=name))
    wal = result['wal']
    assert wal['gap_count'] == 1 and wal['missing_segments'] == 1
    index = between.index(doomed)
    assert wal['gaps'] == [dict(timeline=1, after=segment_of(between[index - 1]), before=segment_of(between[index + 1]),
                                missing=1, impact='pitr')]
    assert result['verdict'] == 'warning'
    assert any('1 gap(s) in the WAL archive' in reason for reason in result['verdict_reasons'])
    # Deleting the WAL the newest backup needs makes it unrestorable: critical.
    needed = [k for k in listing(box, wals) if k.endswith('/%s.gz' % second['begin_wal'])]
    client.delete_object(Bucket=box.bucket, Key=needed[0])
    result = barman_catalog.report_catalog(params_for(settings, server_name=name))
    assert result['verdict'] == 'critical' and result['wal']['gap_count'] == 2
    assert 'cannot be restored' in result['verdict_reasons'][0]
    assert [b['wal_missing'] for b in result['backups']] == [0, 1]


def test_other_server_directory_and_failed_backup(catalog):
    box, settings = catalog['box'], catalog['settings']
    client = box.s3.client()
    name = 'own-%s' % uuid.uuid4().hex[:8]
    old = 'renamed-%s' % uuid.uuid4().hex[:8]
    copy_server(box, settings['server_name'], name)
    copied = copy_server(box, settings['server_name'], old)
    failed_id = '20200101T000000'
    client.put_object(Bucket=box.bucket, Key='barman/%s/base/%s/backup.info' % (name, failed_id), Body=(
        'backup_id=%s\nbegin_time=2020-01-01 00:00:00.000000+00:00\nbegin_wal=000000010000000000000001\n'
        'error=failure uploading data (connection lost)\nserver_name=cloud\nstatus=FAILED\ntimeline=1\n'
        'xlog_segment_size=16777216\n' % failed_id).encode('utf-8'))
    client.put_object(Bucket=box.bucket, Key='barman/%s/base/%s/data.tar.gz' % (name, failed_id), Body=b'\0' * 512)
    started_id = '20200102T000000'
    client.put_object(Bucket=box.bucket, Key='barman/%s/base/%s/backup.info' % (name, started_id),
                      Body=b'begin_time=2020-01-02 00:00:00+00:00\nstatus=STARTED\ntimeline=1\n')
    client.put_object(Bucket=box.bucket, Key='barman/%s/base/20200103T000000/data.tar' % name, Body=b'x')

    result = barman_catalog.report_catalog(params_for(settings, server_name=name))
    others = dict((o['name'], o) for o in result['other_servers'])
    assert name not in others and settings['server_name'] in others
    theirs = listing(box, 'barman/%s/' % old)
    assert len(theirs) == len(copied)
    assert (others[old]['bytes'], others[old]['objects'], others[old]['backup_count'], others[old]['barman_layout']) == \
        (sum(theirs.values()), len(theirs), 2, True)
    directories = dict((d['path'], d) for d in result['storage']['directories'])
    assert directories['barman/%s/' % old]['kind'] == 'other' and directories['barman/%s/' % old]['bytes'] == others[old]['bytes']
    assert round(sum(d['percent'] for d in result['storage']['directories'])) in (99, 100, 101)

    stale = dict((s['backup_id'], s) for s in result['stale_backups'])
    assert sorted(stale) == [failed_id, started_id]
    assert stale[failed_id]['reason'] == 'FAILED: failure uploading data (connection lost)'
    assert stale[failed_id]['stored_bytes'] == sum(listing(box, 'barman/%s/base/%s/' % (name, failed_id)).values())
    assert stale[started_id]['status'] == 'STARTED'
    by_id = dict((b['backup_id'], b) for b in result['backups'])
    assert by_id['20200103T000000']['readable'] is False and 'no barman/' in by_id['20200103T000000']['unreadable_reason']
    assert result['backup_counts'] == {'DONE': 2, 'FAILED': 1, 'STARTED': 1, 'UNREADABLE': 1}
    assert result['verdict'] == 'warning'
    assert any('2 stale backup(s)' in reason for reason in result['verdict_reasons'])
    assert any('1 backup directory without a readable backup.info' == reason for reason in result['verdict_reasons'])
    # A STARTED backup younger than stale_started_hours is not stale.
    result = barman_catalog.report_catalog(params_for(settings, server_name=name, now='2020-01-02T06:00:00Z'))
    assert [s['backup_id'] for s in result['stale_backups']] == [failed_id]


def test_keep_annotations_written_by_barman(catalog):
    box, settings = catalog['box'], catalog['settings']
    tool = require_tool('barman-cloud-backup-keep')
    name = 'keep-%s' % uuid.uuid4().hex[:8]
    copy_server(box, settings['server_name'], name)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=box.s3.access_key, AWS_SECRET_ACCESS_KEY=box.s3.secret_key,
               AWS_DEFAULT_REGION=box.s3.region)
    for backup_id, target in zip(catalog['backups'], ('standalone', 'full')):
        subprocess.run([tool, '--endpoint-url', box.s3.endpoint_url, '--target', target, settings['destination_path'], name,
                        backup_id], env=env, capture_output=True, text=True, timeout=120, check=True)
    result = barman_catalog.report_catalog(params_for(settings, server_name=name))
    assert [(b['backup_id'], b['keep']) for b in result['backups']] == list(zip(catalog['backups'], ('standalone', 'full')))
    assert all(b['objects'] == 3 for b in result['backups']), 'backup.info, data.tar.gz and annotations/keep'
    assert result['verdict'] == 'ok', result['verdict_reasons']


def test_no_backup_is_critical_then_ok_after_a_backup(barman_sandbox, tmp_path):
    box = barman_sandbox
    previous = box.barman_settings()['server_name']
    name = 'fresh-%s' % uuid.uuid4().hex[:8]
    settings = box.barman_server(name)
    try:
        write_and_switch(box, 1)
        metrics = tmp_path / 'barman.prom'
        extra = dict(barman_destination_path=settings['destination_path'], barman_server_name=name,
                     barman_metrics_file=str(metrics))
        result = barman_catalog.report_catalog(params_for(settings))
        assert result['verdict'] == 'critical' and result['latest_backup'] is None and result['wal']['count'] >= 1
        assert result['verdict_reasons'][0].startswith('no completed (DONE) backup')

        run = run_playbook(box, HEALTH_CHECK, extra)
        assert run.returncode != 0, run.stdout
        assert 'Verdict: CRITICAL' in run.stdout and 'no completed (DONE) backup' in run.stdout
        assert re.search(r'CRITICAL: backups of %s in .*no completed \(DONE\) backup' % name, run.stdout + run.stderr)
        samples = parse_exposition(metrics.read_text())
        assert samples[('pgops_barman_verdict', (('server', name),))] == 2
        assert metrics.stat().st_mode & 0o777 == 0o600  # only its owner reads it, unless barman_metrics_file_mode says so
        assert samples[('pgops_barman_backup_age_seconds', (('server', name),))] == float('inf')

        backup_id = box.barman_backup(name)
        result = barman_catalog.report_catalog(params_for(settings))
        assert result['verdict'] == 'ok', result['verdict_reasons']
        assert result['latest_backup']['backup_id'] == backup_id

        run = run_playbook(box, HEALTH_CHECK, extra)
        assert run.returncode == 0, run.stdout + run.stderr
        assert 'Verdict: OK' in run.stdout and 'Latest DONE backup: %s' % backup_id in run.stdout
        text = metrics.read_text()
        samples = parse_exposition(text)
        server = ('server', name)
        assert samples[('pgops_barman_verdict', (server,))] == 0
        assert samples[('pgops_barman_backups', (server, ('status', 'DONE')))] == 1
        assert samples[('pgops_barman_wal_objects', (server,))] == result['wal']['count']
        assert 0 <= samples[('pgops_barman_backup_age_seconds', (server,))] < 3600
        assert [p.name for p in tmp_path.iterdir()] == ['barman.prom']

        # Check mode reads but does not write the metrics file.
        metrics.unlink()
        run = run_playbook(box, HEALTH_CHECK, extra, check=True)
        assert run.returncode == 0 and not metrics.exists()
    finally:
        box.barman_server(previous)


def test_the_playbook_writes_the_metrics_the_module_returns(catalog, tmp_path):
    """barman_catalog_info writes nothing (an _info module); backup_health_check writes its prometheus_text."""
    box, settings = catalog['box'], catalog['settings']
    now = isoformat_z(utc_now())  # the playbook and the call below judge the catalog as of the same moment
    metrics = tmp_path / 'textfile' / 'barman.prom'
    metrics.parent.mkdir()
    extra = dict(barman_destination_path=settings['destination_path'], barman_server_name=settings['server_name'],
                 barman_now=now, barman_metrics_file=str(metrics), barman_metrics_file_mode='0640')
    run = run_playbook(box, HEALTH_CHECK, extra)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'Metrics written to %s' % metrics in run.stdout
    assert metrics.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in metrics.parent.iterdir()] == ['barman.prom'], 'no temporary file is left beside it'
    result = barman_catalog.report_catalog(params_for(settings, now=now))
    assert 'metrics_file' not in result
    written, returned = parse_exposition(metrics.read_text()), parse_exposition(result['prometheus_text'])

    def own(samples):
        # Other server directories under the same destination path (the sandbox's own, still archiving) may grow.
        return dict((k, v) for k, v in samples.items() if ('directory', 'other') not in k[1] and k[0] != 'pgops_barman_other_servers')
    assert own(written) == own(returned) and len(own(written)) > 10
    assert written[('pgops_barman_verdict', (('server', settings['server_name']),))] == 0

    for mode in ('0666', '0600x'):
        refused = run_playbook(box, HEALTH_CHECK, dict(extra, barman_metrics_file_mode=mode))
        assert refused.returncode != 0 and 'barman_metrics_file_mode must be' in refused.stdout, refused.stdout
    assert metrics.stat().st_mode & 0o777 == 0o640

    # The options that made the module write a file are gone: AnsibleModule refuses them.
    playbook = tmp_path / 'old-options.yml'
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False, 'tasks': [
        {'pgops.resilience.barman_catalog_info': dict(destination_path=settings['destination_path'],
                                                      server_name=settings['server_name'], metrics_file=str(metrics))}]}]))
    old = run_playbook(box, str(playbook))
    assert old.returncode != 0 and 'Unsupported parameters' in old.stdout + old.stderr and 'metrics_file' in old.stdout + old.stderr


def test_storage_report_playbook(catalog):
    box, settings = catalog['box'], catalog['settings']
    run = run_playbook(box, STORAGE_REPORT, dict(barman_destination_path=settings['destination_path'],
                                                 barman_server_name=settings['server_name']))
    assert run.returncode == 0, run.stdout + run.stderr
    result = barman_catalog.report_catalog(params_for(settings))
    wals = [d for d in result['storage']['directories'] if d['kind'] == 'wals'][0]
    assert 'Storage usage report of s3://%s/barman/' % box.bucket in run.stdout
    assert 'Total size: ' in run.stdout and 'Total files: ' in run.stdout
    assert '"%s"' % wals['path'] in run.stdout
    assert '(%d bytes, ' % wals['bytes'] in run.stdout and 'Files: %d (wals' % wals['objects'] in run.stdout
    assert 'Orphan candidates (other server directories): ' in run.stdout


def test_playbooks_require_their_variables():
    for playbook in (HEALTH_CHECK, STORAGE_REPORT):
        run = run_playbook(None, playbook, dict(barman_server_name='pg'))
        assert run.returncode != 0
        assert 'Set barman_destination_path' in run.stdout, run.stdout


def test_unreachable_endpoint_names_the_prefix(catalog, monkeypatch):
    monkeypatch.setattr(s3_client_module, 'MAX_ATTEMPTS', 1)  # no retries of the refused connection
    settings = dict(catalog['settings'], endpoint_url='http://127.0.0.1:9')
    with pytest.raises(PgopsError, match=r'S3 listing of s3://.*/barman/ at http://127\.0\.0\.1:9 failed'):
        barman_catalog.report_catalog(params_for(settings))
