# -*- coding: utf-8 -*-
"""Pure logic of the wal-g capability: the storage and settings wal-g gets, and how its backup list is read
(wal-g 3.0.9's output, as measured)."""

from __future__ import annotations

import os

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg import backups, cli

# Two entries of wal-g 3.0.9's `backup-list --detail --json`, as it printed them (a full backup and a delta).
LISTED = ('[{"backup_name":"base_000000010000000000000002","time":"2026-12-08T00:16:11.70556782Z",'
          '"wal_file_name":"000000010000000000000002","storage_name":"default","start_time":"2026-12-08T00:16:10.471377Z",'
          '"finish_time":"2026-12-08T00:16:11.699839Z","date_fmt":"%Y-%m-%dT%H:%M:%S.%fZ","hostname":"vm",'
          '"data_dir":"/tmp/wx/pg","pg_version":150018,"start_lsn":33554472,"finish_lsn":33554688,"is_permanent":false,'
          '"system_identifier":7716720356758748542,"uncompressed_size":23223641,"compressed_size":4341364},'
          '{"backup_name":"base_000000010000000000000004_D_000000010000000000000002","time":"2026-12-08T00:16:12.953567866Z",'
          '"wal_file_name":"000000010000000000000004","storage_name":"default","start_time":"2026-12-08T00:16:11.794454Z",'
          '"finish_time":"2026-12-08T00:16:12.952478Z","pg_version":150018,"start_lsn":67108904,"finish_lsn":67109120,'
          '"is_permanent":true,"system_identifier":7716720356758748542,"uncompressed_size":395475,"compressed_size":83474}]')


def params(**overrides):
    values = dict(prefix='s3://backups/walg/main', walg_bin='wal-g', walg_env={}, timeout=60, endpoint_url=None,
                  region='us-east-1', access_key=None, secret_key=None, session_token=None, validate_certs=True)
    values.update(overrides)
    return values


@pytest.mark.parametrize('prefix,expected', [
    ('s3://backups/walg/main/', dict(WALG_S3_PREFIX='s3://backups/walg/main')),
    ('file:///srv/walg', dict(WALG_FILE_PREFIX='/srv/walg')),
    ('/srv/walg/', dict(WALG_FILE_PREFIX='/srv/walg')),
])
def test_the_prefix_names_the_storage(prefix, expected):
    assert cli.storage_settings(prefix) == expected


@pytest.mark.parametrize('prefix', ['', 's3://', 'srv/walg', 'file://srv', 'gs://bucket/x', '/', 's3://b/x?y=1'])
def test_a_malformed_prefix_is_refused_with_the_forms_accepted(prefix):
    with pytest.raises(PgopsError) as info:
        cli.storage_settings(prefix)
    assert 's3://bucket/path' in info.value.msg and 'file:///absolute/path' in info.value.msg


def test_s3_options_become_wal_gs_environment_and_walg_env_comes_last():
    env = cli.walg_environment(params(endpoint_url='http://127.0.0.1:9000', access_key='AK', secret_key='SK',
                                      walg_env=dict(WALG_COMPRESSION_METHOD='zstd', WALG_LIBSODIUM_KEY='k' * 32)))
    assert env == dict(WALG_S3_PREFIX='s3://backups/walg/main', AWS_ENDPOINT='http://127.0.0.1:9000', AWS_S3_FORCE_PATH_STYLE='true',
                       AWS_ACCESS_KEY_ID='AK', AWS_SECRET_ACCESS_KEY='SK', AWS_REGION='us-east-1',
                       WALG_COMPRESSION_METHOD='zstd', WALG_LIBSODIUM_KEY='k' * 32)
    assert cli.walg_secrets(params(secret_key='SK', walg_env=dict(WALG_LIBSODIUM_KEY='sodium'))) == ['SK', 'sodium']
    # A directory storage gets no S3 settings.
    assert cli.walg_environment(params(prefix='/srv/walg', access_key='AK')) == dict(WALG_FILE_PREFIX='/srv/walg')


@pytest.mark.parametrize('walg_env,says', [
    (dict(PGPASSWORD='x'), 'not a wal-g setting'),
    (dict(WALG_S3_PREFIX='s3://other/x'), 'set from the options'),
    (dict(AWS_SECRET_ACCESS_KEY='x'), 'set from the options'),
])
def test_walg_env_may_not_bypass_the_options(walg_env, says):
    with pytest.raises(PgopsError) as info:
        cli.walg_environment(params(walg_env=walg_env))
    assert says in info.value.msg


def test_skipping_certificate_checks_is_refused_with_what_to_do():
    with pytest.raises(PgopsError) as info:
        cli.walg_environment(params(validate_certs=False))
    assert 'WALG_S3_CA_CERT_FILE' in info.value.msg


def test_inherited_walg_settings_do_not_reach_wal_g(tmp_path):
    program = tmp_path / 'wal-g'
    program.write_text('#!/bin/sh\n')
    os.chmod(str(program), 0o755)
    made = cli.WalgCli(params(walg_bin=str(program)), base_env=dict(PATH='/usr/bin', WALG_S3_PREFIX='s3://elsewhere/x',
                                                                    AWS_SECRET_ACCESS_KEY='inherited'))
    assert made.env == dict(PATH='/usr/bin', WALG_S3_PREFIX='s3://backups/walg/main', AWS_REGION='us-east-1')


def test_a_missing_wal_g_says_how_to_get_it(tmp_path):
    with pytest.raises(PgopsError) as info:
        cli.find_walg(str(tmp_path / 'nowhere' / 'wal-g'))
    assert 'was not found' in info.value.msg and 'hacking/install-walg.sh' in info.value.msg


@pytest.mark.parametrize('value,text', [(33554472, '0/2000028'), (0x1_0000_0000, '1/0'), ('0/2000028', '0/2000028'),
                                        ('1a/b', '1A/B'), (None, None)])
def test_lsns_in_both_forms_become_postgresql_text(value, text):
    assert backups.lsn_text(value) == text


@pytest.mark.parametrize('value', ['12', True, -1, 1 << 64, '0/X', 1.5])
def test_what_is_not_an_lsn_is_refused(value):
    with pytest.raises(PgopsError):
        backups.lsn_text(value, 'start_lsn')


def test_the_list_becomes_records_with_exact_identifier_timeline_and_delta_origin():
    full, delta = backups.parse_backup_list(LISTED)
    sentinel = dict(DeltaFrom='base_000000010000000000000002', DeltaFullName='base_000000010000000000000002')
    record = backups.backup_record(delta, sentinel)
    assert record == dict(
        name='base_000000010000000000000004_D_000000010000000000000002', start_time='2026-12-08T00:16:11.794454Z',
        finish_time='2026-12-08T00:16:12.952478Z', start_lsn='0/4000028', finish_lsn='0/4000100', timeline=1,
        is_permanent=True, is_full=False, delta_origin='base_000000010000000000000002',
        delta_full_name='base_000000010000000000000002', compressed_size=83474, uncompressed_size=395475, pg_version=150018,
        system_identifier='7716720356758748542', user_data=None)
    assert backups.backup_record(full, {'DeltaFrom': ''})['is_full'] is True
    assert backups.backup_record(delta)['is_full'] is False and backups.backup_record(delta)['delta_origin'] is None


def test_backups_are_ordered_by_time_not_by_name():
    # After a promotion the new timeline's backup sorts after by name; a restored cluster's backup can sort before.
    older = dict(name='base_000000020000000000000009', start_time='2026-12-01T00:00:00Z', finish_time='2026-12-01T00:01:00Z')
    newer = dict(name='base_000000010000000000000003', start_time='2026-12-02T00:00:00Z', finish_time='2026-12-02T00:01:00Z')
    assert [r['name'] for r in backups.oldest_first([newer, older])] == [older['name'], newer['name']]


@pytest.mark.parametrize('text', ['', '   ', 'null', '[]'])
def test_an_empty_storage_lists_nothing(text):
    assert backups.parse_backup_list(text) == []


@pytest.mark.parametrize('text', ['No backups found', '{"backup_name": "x"}', '[1, 2]'])
def test_an_answer_that_is_not_a_backup_list_is_refused(text):
    with pytest.raises(PgopsError):
        backups.parse_backup_list(text)


@pytest.mark.parametrize('name', ['base_1', 'backup_000000010000000000000002', 'base_000000010000000000000002_D_1'])
def test_a_name_that_is_not_a_base_backup_is_refused(name):
    with pytest.raises(PgopsError):
        backups.timeline_of(name)


def test_times_keep_microseconds_and_become_utc():
    assert backups.utc_text('2026-12-08T00:16:11.70556782Z', 't') == '2026-12-08T00:16:11.705567Z'
    assert backups.utc_text('2026-12-08T02:16:11+02:00', 't') == '2026-12-08T00:16:11Z'
    with pytest.raises(PgopsError):
        backups.utc_text('yesterday', 'start_time')


def test_the_last_log_entry_is_the_last_error_with_its_continuation_lines():
    log = ('INFO: 2026/12/08 02:00:00.1 Selecting the latest backup...\n'
           'ERROR: 2026/12/08 02:00:01.2 failed to write part_001: write /scratch/base/x: no space left on device\n'
           '  caused by: short write\n'
           'INFO: 2026/12/08 02:00:02.3 retrying in 60 s, retries left: 14\n')
    assert cli.last_log_entry(log) == ('ERROR: 2026/12/08 02:00:01.2 failed to write part_001: write /scratch/base/x: '
                                       'no space left on device caused by: short write')
    assert cli.last_log_entry('INFO: a\nINFO: b\n') == 'INFO: b'
    assert cli.last_log_entry('') == ''
    assert cli.last_log_entry('ERROR: ' + 'x' * 1000).endswith('...')


def test_credentials_the_endpoint_refuses_are_named_with_what_to_give(tmp_path):
    walg = tmp_path / 'wal-g'
    walg.write_text('#!/bin/sh\necho "ERROR: ... SignatureDoesNotMatch: The request signature we calculated does not match" >&2\nexit 1\n')
    walg.chmod(0o755)
    client = cli.WalgCli(params(walg_bin=str(walg), prefix='s3://bucket/walg', endpoint_url='http://127.0.0.1:9',
                                access_key='AKIA', secret_key='wrong-secret-123'), base_env={'PATH': '/usr/bin:/bin'})
    with pytest.raises(PgopsError) as info:
        client.output(['backup-list', '--json'], 'listing the backups')
    assert 'refused the credentials: secret_key is not the secret of access_key' in info.value.msg
    assert 'wrong-secret-123' not in info.value.msg


def test_a_call_stopped_at_its_bound_says_what_and_where_and_what_wal_g_logged_last(tmp_path):
    walg = tmp_path / 'wal-g'
    walg.write_text('#!/bin/sh\necho "ERROR: dial tcp 127.0.0.1:9: connect: connection refused" >&2\n'
                    'echo "INFO: retrying" >&2\nexec sleep 30\n')
    walg.chmod(0o755)
    client = cli.WalgCli(params(walg_bin=str(walg), prefix='s3://bucket/walg', endpoint_url='http://127.0.0.1:9'),
                         base_env={'PATH': '/usr/bin:/bin'})
    with pytest.raises(PgopsError) as info:
        client.log(['backup-push', '/data'], 'pushing a base backup', timeout=1)
    assert 'wal-g backup-push, pushing a base backup in s3://bucket/walg (endpoint_url http://127.0.0.1:9)' in info.value.msg
    assert 'did not finish within timeout=1 seconds' in info.value.msg
    assert 'What wal-g logged last as an error: ERROR: dial tcp 127.0.0.1:9: connect: connection refused' in info.value.msg
