# -*- coding: utf-8 -*-
"""The playbook users and the CronJob run, by FQCN, against the real sandbox: outcomes and clean errors."""

from __future__ import annotations

import json

from .helpers import run_playbook
from .test_unlogged_rebuild import closed_port, kv_count, read_watermark

PLAYBOOK = 'pgops.resilience.unlogged_check_and_restore'


def _vars(db, key=None, **more):
    extra = dict(unlogged_source_tables=['resources', 'moments'])
    if key:
        extra.update(unlogged_watermark_bucket='pgops-sandbox', unlogged_watermark_key=key)
    extra.update(more)
    return extra


def test_playbook_rebuilds_after_failover_then_changes_nothing(healthy, rem_db, bucket_key):
    sandbox = healthy
    baseline = run_playbook(sandbox, PLAYBOOK, _vars(rem_db, bucket_key), env={'PGDATABASE': rem_db})
    assert baseline.returncode == 0 and 'changed=1' in baseline.stdout  # the first watermark
    sandbox.stop_node('primary', mode='immediate')
    sandbox.promote('standby')
    env = {'PGPORT': str(sandbox.standby.port), 'PGDATABASE': rem_db}
    first = run_playbook(sandbox, PLAYBOOK, _vars(rem_db, bucket_key), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'rebuilt kv_store: 4000 rows' in first.stdout
    assert 'events: failover, primary_changed' in first.stdout
    assert kv_count(sandbox.standby, rem_db) == 4000
    assert read_watermark(sandbox, bucket_key)['last_run']['events'] == ['failover', 'primary_changed']
    second = run_playbook(sandbox, PLAYBOOK, _vars(rem_db, bucket_key), env=env)
    assert second.returncode == 0
    assert 'changed=0' in second.stdout and 'no rebuild: kv_store has rows' in second.stdout


def test_conninfo_from_the_runbook_variable(healthy, rem_db):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    conninfo = 'postgresql://postgres@127.0.0.1:%d/%s' % (healthy.primary.port, rem_db)
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db), env={'POSTGRES__CONNECTION_STRING': conninfo, 'PGPORT': '1'})
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'rebuilt kv_store: 4000 rows' in done.stdout


def test_check_mode_reports_and_changes_nothing(healthy, rem_db):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db), env={'PGDATABASE': rem_db}, check=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'changed=1' in done.stdout and 'would rebuild: kv_store is empty' in done.stdout
    assert kv_count(healthy.primary, rem_db) == 0


def test_standby_run_is_a_clean_skip(healthy, rem_db):
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db), env={'PGPORT': str(healthy.standby.port), 'PGDATABASE': rem_db})
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'no rebuild: standby' in done.stdout and 'changed=0' in done.stdout


def test_wrong_password_fails_clearly_without_leaking_it(healthy, rem_db):
    secret = 'Leak-Me-Not-4711'
    conninfo = 'postgresql://postgres:%s@127.0.0.1:%d/%s' % (secret, healthy.primary.port, rem_db)
    done = run_playbook(healthy, PLAYBOOK, dict(_vars(rem_db), unlogged_conninfo=conninfo))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert 'password authentication failed for user "postgres"' in output
    assert 'Traceback' not in output
    assert secret not in output
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db), env={'PGPASSWORD': secret, 'PGPASSFILE': '/nonexistent'})
    output = done.stdout + done.stderr
    assert done.returncode != 0 and 'password authentication failed' in output and secret not in output


def test_unreachable_s3_required_watermark_fails_saying_the_rebuild_committed(healthy, rem_db, bucket_key):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    endpoint = 'http://127.0.0.1:%d' % closed_port()
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db, bucket_key, unlogged_watermark_required=True),
                        env={'PGDATABASE': rem_db, 'AWS_ENDPOINT_URL': endpoint})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert 'The rebuild itself was committed (4000 rows in kv_store)' in output
    assert endpoint in output and 'Traceback' not in output
    assert healthy.s3.secret_key not in output
    assert kv_count(healthy.primary, rem_db) == 4000


def test_missing_table_fails_with_its_name(healthy, rem_db):
    done = run_playbook(healthy, PLAYBOOK, _vars(rem_db, unlogged_target_table='app."Missing"'), env={'PGDATABASE': rem_db})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert 'table app."Missing" does not exist in schema app' in output
    assert 'Traceback' not in output


def test_module_defaults_group(healthy, rem_db, tmp_path):
    """Connection options set once for the whole collection with module_defaults."""
    playbook = tmp_path / 'group.yml'
    playbook.write_text(json.dumps([{
        'name': 'module_defaults group', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
        'module_defaults': {'group/pgops.resilience.postgres': {'login_port': healthy.standby.port, 'login_db': rem_db}},
        'tasks': [{'pgops.resilience.pg_unlogged_rebuild': {'source_tables': ['resources']}, 'register': 'out'},
                  {'ansible.builtin.assert': {'that': ["out.skipped_reason == 'standby'"]}}],
    }]))
    done = run_playbook(healthy, str(playbook), env={'PGPORT': str(healthy.primary.port)})
    assert done.returncode == 0, done.stdout + done.stderr


def _adhoc_playbook(tmp_path, task, module_defaults=None):
    playbook = tmp_path / 'adhoc.yml'
    play = {'name': 'ad hoc', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
            'tasks': [dict(task, register='out'), {'ansible.builtin.debug': {'var': 'out'}}]}
    if module_defaults:
        play['module_defaults'] = module_defaults
    playbook.write_text(json.dumps([play]))
    return str(playbook)


def test_snapshot_needs_a_watermark(healthy, rem_db, tmp_path):
    task = {'pgops.resilience.pg_unlogged_rebuild': {'state': 'snapshot', 'source_tables': ['resources'], 'login_db': rem_db}}
    done = run_playbook(healthy, _adhoc_playbook(tmp_path, task))
    assert done.returncode != 0
    assert 'state is snapshot but all of the following are missing: watermark' in done.stdout


def test_no_secret_in_verbose_output(healthy, rem_db, bucket_key, tmp_path):
    """-vvv prints module arguments and results: every secret must be masked, wherever it was given."""
    healthy.primary.execute("CREATE ROLE verbose LOGIN SUPERUSER PASSWORD 'Verbose-Secret-987'")
    try:
        task = {'pgops.resilience.pg_unlogged_rebuild': {
            'state': 'rebuilt', 'source_tables': ['resources'], 'login_db': rem_db, 'login_user': 'verbose',
            'connect_params': {'password': 'Verbose-Secret-987'},
            'watermark': {'bucket': healthy.s3.bucket, 'key': bucket_key, 'secret_key': 'S3-Secret-Key-654'}}}
        done = run_playbook(healthy, _adhoc_playbook(tmp_path, task), verbose=True,
                            env={'PGPASSFILE': '/nonexistent', 'AWS_SECRET_ACCESS_KEY': 'S3-Secret-Key-654'})
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert '"rebuilt": true' in output and '"written": true' in output
        assert 'Verbose-Secret-987' not in output and 'S3-Secret-Key-654' not in output
    finally:
        healthy.primary.execute('DROP ROLE verbose')
