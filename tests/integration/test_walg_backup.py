# -*- coding: utf-8 -*-
"""``walg_backup`` against the real wal-g on the sandbox primary: full, delta and permanent pushes, what check mode
predicts against what a run then takes, and each backup as ``wal-g backup-list --detail --json`` lists it."""

from __future__ import annotations

import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec
from ansible_collections.pgops.resilience.plugins.module_utils._walg import push

from .helpers import _defaults
from .walg_helpers import module_params, walg


def backup_params(sandbox, walg_bin, prefix, **overrides):
    """walg_backup's parameters as AnsibleModule fills them in, against the sandbox primary."""
    params = _defaults(postgres_argument_spec())
    params.update(module_params(sandbox, walg_bin, prefix))
    params.update(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                  login_db='postgres', ssl_mode='disable', connect_timeout=5, data_directory=sandbox.primary.datadir,
                  permanent=False, delta_max_steps=0, user_data=None)
    params.update(overrides)
    return params


def listed(sandbox, walg_bin, prefix):
    return dict((e['backup_name'], e) for e in json.loads(walg(sandbox, walg_bin, prefix, 'backup-list', '--detail', '--json')))


def test_check_mode_predicts_what_a_run_takes_full_delta_and_permanent(sandbox, walg_bin, walg_prefix):
    params = backup_params(sandbox, walg_bin, walg_prefix, delta_max_steps=1)
    planned = push.take_backup(params, check_mode=True)
    assert planned['kind'] == 'full' and planned['backup'] is None and 'no backup yet' in planned['reason']
    assert listed(sandbox, walg_bin, walg_prefix) == {}  # check mode pushed nothing

    first = push.take_backup(params)
    assert first['changed'] and first['kind'] == 'full' and first['backup']['is_full']
    assert first['seconds']['push'] > 0 and first['backup']['name'] in listed(sandbox, walg_bin, walg_prefix)

    sandbox.primary.execute('CREATE TABLE IF NOT EXISTS walg_push_it (n int); INSERT INTO walg_push_it SELECT generate_series(1, 500)')
    assert push.take_backup(params, check_mode=True)['kind'] == 'delta'
    second = push.take_backup(dict(params, user_data={'job': 'nightly'}))
    assert second['kind'] == 'delta' and second['delta_origin'] == first['backup']['name']
    assert second['backup']['user_data'] == {'job': 'nightly'}

    # The chain of the newest backup holds delta_max_steps=1 delta: the next one is full again, as predicted.
    predicted = push.take_backup(params, check_mode=True)
    assert predicted['kind'] == 'full' and 'already holds delta_max_steps=1' in predicted['reason']
    third = push.take_backup(dict(params, permanent=True))
    assert third['kind'] == 'full' and third['backup']['is_permanent']
    # wal-g takes no delta from a permanent backup for one that is not.
    predicted = push.take_backup(params, check_mode=True)
    assert predicted['kind'] == 'full' and 'is permanent' in predicted['reason']
    assert push.take_backup(params)['kind'] == 'full'
    assert len(listed(sandbox, walg_bin, walg_prefix)) == 4


@pytest.mark.parametrize('overrides,says', [
    (dict(delta_max_steps=-1), 'delta_max_steps must be 0'),
    (dict(data_directory='/etc'), 'not a PostgreSQL data directory'),
    (dict(walg_env={'WALG_DELTA_MAX_STEPS': '3'}), 'set from the options'),
])
def test_bad_options_are_refused_before_wal_g_runs(sandbox, walg_bin, tmp_path, overrides, says):
    with pytest.raises(PgopsError) as info:
        push.take_backup(backup_params(sandbox, walg_bin, str(tmp_path), **overrides))
    assert says in info.value.msg
    assert list(tmp_path.iterdir()) == []


def test_a_wrong_password_is_refused_before_wal_g_pushes_without_the_password(sandbox, walg_bin, tmp_path):
    # The push lock's connection meets the wrong password first: nothing reaches the storage.
    with pytest.raises(PgopsError) as info:
        push.take_backup(backup_params(sandbox, walg_bin, str(tmp_path), login_password='not-the-password-42', timeout=60))
    assert 'Cannot connect to PostgreSQL' in info.value.msg and 'password authentication failed' in info.value.msg
    assert list(tmp_path.iterdir()) == []
    assert 'not-the-password-42' not in info.value.msg + json.dumps(info.value.details)
