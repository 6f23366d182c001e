# -*- coding: utf-8 -*-
"""``walg_backup_info`` against the real wal-g (``make setup`` builds 3.0.9) on the sandbox primary: backups pushed
with bare ``wal-g backup-push`` to a directory and to moto's S3 server, then listed by the module and compared with
what ``wal-g backup-list --detail --json`` says, field by field."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg import info

from .conftest import ROOT
from .walg_helpers import module_params, walg


def test_the_module_lists_what_wal_g_lists_field_by_field(sandbox, walg_bin, walg_prefix):
    prefix = walg_prefix
    datadir = sandbox.primary.datadir
    walg(sandbox, walg_bin, prefix, 'backup-push', datadir)
    sandbox.primary.execute('CREATE TABLE IF NOT EXISTS walg_it (n int); INSERT INTO walg_it SELECT generate_series(1, 1000)')
    walg(sandbox, walg_bin, prefix, 'backup-push', datadir, WALG_DELTA_MAX_STEPS='2')
    walg(sandbox, walg_bin, prefix, 'backup-push', '--permanent', '--add-user-data', '{"ticket": "OPS-1"}', datadir)
    listed = json.loads(walg(sandbox, walg_bin, prefix, 'backup-list', '--detail', '--json'))

    result = info.list_backups(module_params(sandbox, walg_bin, prefix))

    assert result['changed'] is False and result['count'] == 3 == len(listed)
    by_name = dict((b['name'], b) for b in result['backups'])
    for entry in listed:
        record = by_name[entry['backup_name']]
        for field in ('is_permanent', 'compressed_size', 'uncompressed_size', 'pg_version'):
            assert record[field] == entry[field], field
        assert record['system_identifier'] == str(entry['system_identifier'])
        for field in ('start_lsn', 'finish_lsn'):
            high, low = record[field].split('/')
            assert (int(high, 16) << 32) + int(low, 16) == entry[field], field
        assert record['start_time'][:19] == entry['start_time'][:19] and record['finish_time'][:19] == entry['finish_time'][:19]
        assert record['timeline'] == int(entry['backup_name'][5:13], 16)
    full, delta, permanent = result['backups']
    assert full['is_full'] and full['delta_origin'] is None
    assert not delta['is_full'] and delta['delta_origin'] == full['name'] == delta['delta_full_name']
    assert permanent['is_permanent'] and permanent['user_data'] == {'ticket': 'OPS-1'}
    assert result['newest'] == permanent
    assert int(full['system_identifier']) > 1 << 53  # why it is text: exact beyond a JSON number's 53 bits


def test_an_empty_storage_lists_no_backup(sandbox, walg_bin, tmp_path):
    result = info.list_backups(module_params(sandbox, walg_bin, str(tmp_path)))
    assert result['backups'] == [] and result['count'] == 0 and result['newest'] is None


def test_an_unreachable_endpoint_ends_at_the_timeout_without_the_secret(sandbox, walg_bin):
    """wal-g retries an endpoint that does not answer instead of exiting: the call ends at ``timeout`` with what was
    being done and where, and the secret key reaches no message."""
    secret = 'wrong-secret-%s' % uuid.uuid4().hex
    with pytest.raises(PgopsError) as info_error:
        info.list_backups(module_params(sandbox, walg_bin, 's3://%s/walg-it/x' % sandbox.bucket, timeout=5,
                                        endpoint_url='http://127.0.0.1:9', secret_key=secret))
    assert 'listing the backups' in info_error.value.msg and 'timeout=5' in info_error.value.msg
    assert secret not in info_error.value.msg and secret not in json.dumps(info_error.value.details)


def test_a_missing_wal_g_says_how_to_get_it(sandbox, tmp_path):
    with pytest.raises(PgopsError) as info_error:
        info.list_backups(module_params(sandbox, str(tmp_path / 'wal-g'), str(tmp_path)))
    assert 'was not found' in info_error.value.msg


def test_through_ansible_walg_env_values_never_show_even_at_vvv(walg_bin, tmp_path):
    """The module as a playbook runs it, at -vvv: a call that fails (the storage directory does not exist) and one
    that succeeds; a walg_env value (such as WALG_LIBSODIUM_KEY) appears in neither."""
    secret = 'k' * 8 + uuid.uuid4().hex
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    for prefix, fails in ((str(tmp_path / 'missing'), True), (str(tmp_path), False)):
        args = dict(prefix=prefix, walg_bin=walg_bin, walg_env=dict(WALG_LIBSODIUM_KEY=secret))
        done = subprocess.run(['ansible', 'localhost', '-m', 'pgops.resilience.walg_backup_info', '-a', json.dumps(args),
                               '-vvv'], env=env, capture_output=True, text=True, check=False, timeout=300)
        output = done.stdout + done.stderr
        assert (done.returncode != 0) is fails, output[-2000:]
        assert secret not in output
        if fails:
            assert 'listing the backups' in output and "doesn't exist" in output
