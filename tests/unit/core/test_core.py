# -*- coding: utf-8 -*-
"""Unit tests of redaction, time formatting and S3 endpoint rules (no server)."""

from __future__ import annotations

import datetime
import os

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, timed
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError, run_module
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import (
    REDACTED, mask_setting, redact, secret_setting)
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import is_aws_endpoint


@pytest.mark.parametrize('text, secret', [
    ('host=db password=hunter22 user=x', 'hunter22'),
    ("host=db password='hun ter\\'22' user=x", 'hun ter'),
    ('postgresql://app:hunter22@db:5432/app', 'hunter22'),
    ('postgresql://db/app?user=a&password=hunter22&sslmode=require', 'hunter22'),
    ('s3://AKIA:wJalrXUtnFEMI@bucket/key', 'wJalrXUtnFEMI'),
])
def test_redact_patterns(text, secret):
    out = redact(text)
    assert secret not in out
    assert '********' in out


def test_redact_literal_secrets_and_keeps_other_text():
    out = redact('could not log in with topsecret as ops', secrets=['topsecret', None, '', 'ab'])
    assert out == 'could not log in with ******** as ops'
    assert redact(None) == ''


def test_isoformat_z():
    value = datetime.datetime(2025, 1, 29, 10, 30, tzinfo=datetime.timezone.utc)
    assert isoformat_z(value) == '2025-01-29T10:30:00Z'
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert isoformat_z(datetime.datetime(2025, 1, 29, 11, 30, 0, 5, tzinfo=cet)) == '2025-01-29T10:30:00.000005Z'
    assert isoformat_z(None) is None


@pytest.mark.parametrize('url, aws', [
    (None, True),
    ('https://s3.eu-west-1.amazonaws.com', True),
    ('http://127.0.0.1:9000', False),
    ('https://minio.example.internal', False),
    ('https://amazonaws.com.evil.example', False),
])
def test_is_aws_endpoint(url, aws):
    assert is_aws_endpoint(url) is aws


@pytest.mark.parametrize('name', ['primary_conninfo', 'archive_command', 'restore_command', 'archive_cleanup_command',
                                  'recovery_end_command', 'ssl_passphrase_command', 'myext.api_token',
                                  'app.db_password', 'x.secret_key', 'aws.credentials', 'app.api_key',
                                  'pgsodium.encryption_key', 'anon.salt', 'app.auth_header', 'myext.AUTH_BEARER',
                                  'ssl_key_file'])
def test_settings_that_can_carry_a_credential_are_masked(name):
    assert secret_setting(name)
    assert mask_setting(name, 'AWS_SECRET_ACCESS_KEY=abc123 wal-g wal-fetch %f %p') == REDACTED
    assert mask_setting(name, '') == '' and mask_setting(name, None) is None  # "not set" stays visible


@pytest.mark.parametrize('name', ['shared_buffers', 'archive_mode', 'wal_level', 'port', 'wal_keep_size',
                                  'tcp_keepalives_idle', 'ssl_cert_file', 'log_line_prefix', 'search_path',
                                  'max_connections', 'app.tenant'])
def test_other_settings_keep_their_value_with_dsn_passwords_masked(name):
    assert not secret_setting(name)
    assert mask_setting(name, '128MB') == '128MB'
    assert mask_setting(name, 'postgresql://u:hunter22@h/db') == 'postgresql://u:%s@h/db' % REDACTED


def test_private_file_is_0600_whatever_the_umask_and_refuses_links(tmp_path):
    old = os.umask(0)
    try:
        with private_file(str(tmp_path / 'data')) as handle:
            handle.write(b'rows')
        existing = tmp_path / 'existing'
        existing.write_bytes(b'old')
        existing.chmod(0o644)
        with private_file(str(existing)) as handle:
            handle.write(b'new')
    finally:
        os.umask(old)
    assert (tmp_path / 'data').stat().st_mode & 0o777 == 0o600
    assert existing.stat().st_mode & 0o777 == 0o600 and existing.read_bytes() == b'new'
    (tmp_path / 'link').symlink_to(tmp_path / 'data')
    with pytest.raises(OSError):
        private_file(str(tmp_path / 'link'))


class _Module:
    """The parts of AnsibleModule that run_module uses; records what it was given."""

    def __init__(self):
        self.no_log_values = {'hunter22'}
        self.warned, self.exited, self.failed = [], None, None

    def warn(self, message):
        self.warned.append(message)

    def exit_json(self, **result):
        self.exited = result

    def fail_json(self, **result):
        self.failed = result


def test_run_module_hands_warnings_to_module_warn_not_to_exit_json():
    """A warnings key in exit_json is deprecated since ansible-core 2.19 (an error from 2.23)."""
    module = _Module()
    run_module(module, lambda: dict(changed=True, warnings=['pg_dump: notice'], bundle='b'))
    assert module.warned == ['pg_dump: notice'] and module.exited == dict(changed=True, bundle='b')
    module = _Module()

    def fails():
        raise PgopsError('password hunter22 refused', changed=True, warnings=['w1'], batches=[1])
    run_module(module, fails)
    assert module.warned == ['w1']
    assert module.failed == dict(msg='password %s refused' % REDACTED, changed=True, batches=[1])


def test_a_missing_library_gets_ansibles_message_and_how_to_install_it():
    require_library('boto3', True, 'pip install boto3')  # present: nothing happens
    with pytest.raises(PgopsError) as info:
        require_library('boto3', False, 'pip install boto3', 'Traceback: ImportError', reason='to read S3')
    assert info.value.msg.startswith('Failed to import the required Python library (boto3)')
    assert 'This is required to read S3.' in info.value.msg and info.value.msg.endswith('Install it with: pip install boto3.')
    assert info.value.details == dict(exception='Traceback: ImportError')


def test_timed_records_a_phase_that_completes_and_not_one_that_raises():
    seconds = {}
    with timed(seconds, 'pack'):
        pass
    with pytest.raises(ValueError):
        with timed(seconds, 'store'):
            raise ValueError('no room')
    assert list(seconds) == ['pack'] and 0 <= seconds['pack'] < 1
