# -*- coding: utf-8 -*-
"""No secret in ``ansible-playbook -vvv`` output, nor in any file a run writes, for every playbook of the
collection that takes a secret.

The secrets: the sandbox password (in ``PGPASSWORD`` and in a ``postgresql://`` URI), the S3 secret key
(``AWS_SECRET_ACCESS_KEY``), and three server settings that carry one, set with ALTER SYSTEM and reset afterwards:
``primary_conninfo`` (a password), ``restore_command`` (an AWS secret key) and ``ssl_passphrase_command`` (a
passphrase); a primary uses none of them. The wal-g playbooks get one more: a value in ``walg_env``. Searched
afterwards: stdout and stderr of every run, every file under the runs' Ansible home and temporary directories
(``TMPDIR`` too, where the modules make their scratch directories), the bundles (member by member, gzip members
decompressed), the archives, watermarks and bundles written to S3, the metrics file, the kept work files of a restore
drill, and the JSON objects wal-g wrote.

The one expected place: a base backup is a copy of the data directory, so its ``postgresql.auto.conf`` holds the
server's own settings as ALTER SYSTEM wrote them (the bootstrap needs them); only the three settings' secrets may be
there, never the password or the S3 key. The test requires them to be found there: it proves that the search reaches
into the bundle's nested archives.
"""

from __future__ import annotations

import os
import uuid

import pytest

from ..archive_helpers import drop_database, list_keys, new_name, new_prefix
from ..helpers import barman_params
from ..test_walg_restore_drill import ship_wal
from .rows import create_source_table
from .runner import playbook_environment, run_module, run_playbook_vvv
from .secret_grep import SecretGrep
from .setups import (
    barman_catalog, create_rem_database, remove_tree, secret_settings, server_reachable_dir)
from .snapshots import db_snapshot, s3_snapshot
from .test_walg_faults import new_prefix as new_walg_prefix, write_marker

pytestmark = pytest.mark.faults

# The labels of the server settings' secrets (see setups.secret_values).
SETTING_SECRETS = ('primary_conninfo password', 'restore_command secret key', 'ssl_passphrase_command secret')
# A base backup's copy of the server's own files: postgresql.auto.conf (the settings as ALTER SYSTEM wrote them) and
# the server log the sandbox keeps in the data directory (PostgreSQL logs each reloaded setting's new value).
IN_BASE_BACKUP = [('base.tar.gz (gunzipped)!postgresql.auto.conf', SETTING_SECRETS),
                  ('base.tar.gz (gunzipped)!server.log', SETTING_SECRETS)]


def _objects(sandbox, *prefixes):
    """``{s3 URL: bytes}`` of every object under ``prefixes``."""
    client = sandbox.s3.client()
    return dict(('s3://%s/%s' % (sandbox.s3.bucket, key), client.get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read())
                for prefix in prefixes for key in list_keys(sandbox, prefix))


class Runs:
    """The playbook runs of one test: each one's stdout and stderr are kept for the search."""

    def __init__(self, env):
        self.env = env
        self.outputs = {}

    def play(self, playbook, extra_vars, check=False, env=None, expect=None):
        """Run ``pgops.resilience.<playbook>`` at -vvv; assert it passed and printed ``expect``; return stdout."""
        name = playbook + (' --check' if check else '')
        done = run_playbook_vvv('pgops.resilience.' + playbook, extra_vars, dict(self.env, **(env or {})), check=check)
        self.outputs.update({name + ' stdout': done.stdout, name + ' stderr': done.stderr})
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
        assert 'ESTABLISH LOCAL CONNECTION' in done.stdout, 'not run at -vvv'
        if expect:
            assert expect in done.stdout, (expect, done.stdout[-3000:])
        return done.stdout

    def module(self, name, args, workdir, check_mode=False):
        """Run module ``name`` as Ansible does; assert it passed; return its result."""
        done = run_module(name, args, workdir, check_mode=check_mode, timeout=180)
        self.outputs.update({name + ' module stdout': done.stdout, name + ' module stderr': done.stderr})
        assert done.returncode == 0 and done.result and not done.failed, done
        return done.result


@pytest.fixture(scope='module')
def postgresql_leaks(sandbox, fault_db, tmp_path_factory):
    """Every PostgreSQL playbook run with the secrets, then the search: ``(leaks, server copies)``, lists of
    :class:`~.secret_grep.Leak`; ``server copies`` are those in a base backup's copy of the server's own files
    (:data:`IN_BASE_BACKUP`)."""
    tmp_path = tmp_path_factory.mktemp('leaks')
    with secret_settings(sandbox) as settings:
        grep = SecretGrep(dict(settings, **{'sandbox password': sandbox.password, 'S3 secret key': sandbox.s3.secret_key}))
        rem = create_rem_database(sandbox, rows=200)
        restored = 'restored_%s' % uuid.uuid4().hex[:8]
        try:
            outputs = _postgresql_playbooks(sandbox, fault_db, rem, restored, tmp_path)
        finally:
            drop_database(sandbox, rem)
            drop_database(sandbox, restored)
    # tmp_path holds ANSIBLE_HOME, both Ansible temporary directories, TMPDIR, and the bundle directories.
    leaks = grep.leaks_in_texts(outputs) + grep.leaks_in_dirs(tmp_path)
    copies = [leak for leak in leaks if any(leak.where.endswith(suffix) and leak.label in labels
                                            for suffix, labels in IN_BASE_BACKUP)]
    return [leak for leak in leaks if leak not in copies], copies


def test_postgresql_playbooks_leak_no_secret(postgresql_leaks):
    leaks, copies = postgresql_leaks
    assert not leaks, '%d secret leak(s):\n%s' % (len(leaks), '\n'.join(leaks[:50]))
    # The search does reach into the base backup's nested archive: the server's own settings file is found there.
    assert sorted(set(leak.label for leak in copies if leak.where.endswith('!postgresql.auto.conf'))) == \
        sorted(SETTING_SECRETS), copies


def test_a_base_backup_bundle_holds_the_server_settings_only_where_the_data_directory_does(postgresql_leaks):
    """A base backup is a copy of the data directory: postgresql.auto.conf (which a bootstrap needs) and a server log
    kept inside it (the sandbox's server.log; log/ under logging_collector with a relative log_directory, which
    pg_basebackup_bundle warns about) hold the settings in clear, as they do on the server; nothing else does."""
    leaks, copies = postgresql_leaks
    elsewhere = [leak for leak in copies
                 if not (leak.where.endswith('!postgresql.auto.conf') or leak.where.endswith('!server.log'))]
    assert not elsewhere, '\n'.join(elsewhere)


def _uri(sandbox, dbname):
    return 'postgresql://postgres:%s@127.0.0.1:%d/%s?sslmode=disable' % (sandbox.password, sandbox.primary.port, dbname)


def _postgresql_playbooks(sandbox, db, rem, restored, tmp_path):
    """Run the playbooks; return ``{name: text}`` of their outputs and of the S3 objects they wrote."""
    bucket = sandbox.s3.bucket
    env = playbook_environment(sandbox, tmp_path, extra={'POSTGRES__CONNECTION_STRING': _uri(sandbox, db)})
    runs = Runs(env)

    # The UNLOGGED cache came back empty: the check (check mode, then for real) rebuilds it and writes a watermark.
    sandbox.primary.execute('TRUNCATE kv_store', dbname=rem)
    watermark = 'faults-leak/%s/unlogged-watermark.json' % uuid.uuid4().hex[:8]
    unlogged = dict(unlogged_watermark_bucket=bucket, unlogged_watermark_key=watermark)
    rem_env = {'POSTGRES__CONNECTION_STRING': _uri(sandbox, rem)}
    runs.play('unlogged_check_and_restore', unlogged, check=True, env=rem_env, expect='would rebuild')
    runs.play('unlogged_check_and_restore', unlogged, env=rem_env, expect='rebuilt kv_store: 400 rows')

    # Rows archived (check mode first, which writes nothing), then restored.
    table, prefix = new_name('leak'), new_prefix()
    create_source_table(sandbox, db, table, 300)
    archive = dict(table_archive_table=table, table_archive_where='true', table_archive_bucket=bucket,
                   table_archive_prefix=prefix, table_archive_batch_size=100)
    before = (db_snapshot(sandbox, db), s3_snapshot(sandbox, prefix))
    runs.play('table_archive', archive, check=True, expect='would archive 300 rows in 3 batch(es)')
    assert (db_snapshot(sandbox, db), s3_snapshot(sandbox, prefix)) == before  # check mode wrote nothing
    runs.play('table_archive', archive, expect='archived 300 rows')
    runs.play('archive_restore', dict(archive_restore_database=db, archive_restore_table=table, archive_restore_bucket=bucket,
                                      archive_restore_prefix=prefix, archive_restore_all=True),
              expect='Records restored: 300')

    # Dump bundles into a directory and into S3 (built in a scratch directory here), restored and drilled.
    bundles, scratch, dump_prefix = tmp_path / 'bundles', tmp_path / 'scratch', new_prefix()
    bundles.mkdir()
    scratch.mkdir()
    no_uri = {'POSTGRES__CONNECTION_STRING': ''}  # these playbooks take libpq's environment
    runs.play('dump_bundle', dict(dump_database=db, dump_directory=str(bundles)), env=no_uri, expect='written to')
    runs.play('dump_bundle', dict(dump_database=db, dump_bucket=bucket, dump_prefix=dump_prefix, dump_scratch_dir=str(scratch)),
              env=no_uri, expect='written to s3://')
    runs.play('restore_dump', dict(restore_database=restored, restore_directory=str(bundles)), env=no_uri,
              expect='restored into %s' % restored)
    runs.play('restore_dump', dict(restore_drill=True, restore_directory=str(bundles)), env=no_uri, expect='drill: identical')

    # A base backup bundle of the primary.
    base = tmp_path / 'basebackups'
    base.mkdir()
    runs.play('basebackup_bundle', dict(basebackup_directory=str(base)), env=no_uri, expect='written to %s' % base)

    # The read-only reports: the password in a conninfo URI, then in libpq's environment.
    runs.play('sanity_report', dict(sanity_conninfo=_uri(sandbox, db), sanity_exact_counts=True, sanity_checksums=True),
              env=no_uri, expect='Database %s' % db)
    runs.play('space_check', dict(space_wal_archive_directory=sandbox.archive_dir, space_warning_free_percent=0.01,
                                  space_critical_free_percent=0.01), env=no_uri, expect='Space check of')

    outputs = dict(runs.outputs)
    outputs.update(_objects(sandbox, prefix, watermark, dump_prefix))
    assert len([k for k in outputs if k.startswith('s3://')]) > 6, 'the archives, the watermark and the S3 bundle'
    return outputs


def test_barman_playbooks_leak_no_secret(barman_sandbox, tmp_path, workdir):
    box = barman_sandbox
    drill_parent = server_reachable_dir('pgops-faults-drill-')
    # Set before the backups are taken: the restored data directory of a drill holds them too.
    with secret_settings(box) as settings:
        grep = SecretGrep(dict(settings, **{'sandbox password': box.password, 'S3 secret key': box.s3.secret_key}))
        try:
            _barman_playbooks(box, tmp_path, workdir, drill_parent, grep, settings)
        finally:
            remove_tree(drill_parent)


def _barman_playbooks(box, tmp_path, workdir, drill_parent, grep, settings):
    run_root = tmp_path / 'runs'  # beside workdir, which holds the module's arguments file (the secret key is in it)
    catalog, ids = barman_catalog(box, 2)
    box.barman_wait_archived()
    server = catalog['server_name']
    env = playbook_environment(box, run_root)
    runs = Runs(env)
    where = dict(barman_destination_path=catalog['destination_path'], barman_server_name=server)
    metrics = run_root / 'metrics' / 'barman.prom'
    metrics.parent.mkdir()
    runs.play('backup_health_check', dict(where, barman_metrics_file=str(metrics)), expect='Verdict:')
    assert metrics.is_file()
    runs.play('storage_report', where, expect='Storage usage report')
    runs.play('barman_restore_drill', dict(where, barman_drill_scratch_parent=drill_parent), expect='Restore drill PASSED')
    # A drill that keeps its work files (the playbook has no variable for it): its logs are searched too.
    kept = runs.module('barman_restore_drill', barman_params({}, catalog, keep=True, scratch_parent=drill_parent,
                                                             timeout=120), workdir)
    assert kept['verdict'] == 'passed' and kept['kept'] and os.path.isdir(kept['scratch_dir']), kept
    restored = [os.path.join(kept['scratch_dir'], 'data')]
    # The restored server had the secrets in its configuration, so its log could have shown them; the log is kept
    # outside the restored data directory, and searched.
    with open(os.path.join(restored[0], 'postgresql.auto.conf'), encoding='utf-8') as handle:
        assert settings['primary_conninfo password'] in handle.read()
    assert os.path.isfile(kept['log_file']) and not kept['log_file'].startswith(restored[0] + os.sep), kept['log_file']
    runs.play('barman_retention', dict(where, barman_retention_policy='REDUNDANCY 1'), check=True, expect='Would remove 1 backup(s)')
    runs.play('barman_retention', dict(where, barman_retention_policy='REDUNDANCY 1'), expect='Removed 1 backup(s)')

    outputs = dict(runs.outputs)
    # The restored data directory is the backed-up server's own: it holds what ALTER SYSTEM wrote there.
    grep.assert_clean(outputs, dirs=[run_root, drill_parent], skip=restored)
    assert ids[0] not in box.s3.objects('barman/%s/base/' % server), 'the retention run did delete'


def test_walg_playbooks_leak_no_secret(sandbox, walg_bin, tmp_path):
    """The wal-g playbooks at -vvv with a secret in ``walg_env`` (``WALG_PGP_KEY_PASSPHRASE``, a long random value
    like a ``WALG_LIBSODIUM_KEY``: wal-g reads it only beside a PGP key, so it changes nothing here, and the collection
    keeps every ``walg_env`` value secret; the wal-g built here has no libsodium), the S3 secret key
    (``AWS_SECRET_ACCESS_KEY``) and the password (``PGPASSWORD``): a backup with retention, WAL verification,
    retention in check mode, and a restore drill. Searched: the outputs, every file under the runs' directories and
    the drill's scratch parent, and the JSON objects wal-g wrote (sentinels, metadata)."""
    walg_secret = 'walg-env-%s%s' % (uuid.uuid4().hex, uuid.uuid4().hex)
    grep = SecretGrep({'walg_env value': walg_secret, 'S3 secret key': sandbox.s3.secret_key, 'sandbox password': sandbox.password})
    run_root, drill_parent = tmp_path / 'runs', server_reachable_dir('pgops-faults-walg-drill-')
    prefix = new_walg_prefix(sandbox, 'leaks')
    runs = Runs(playbook_environment(sandbox, run_root))
    where = dict(walg_prefix=prefix, walg_bin=walg_bin, walg_env={'WALG_PGP_KEY_PASSPHRASE': walg_secret})
    try:
        pushed = runs.play('walg_backup', dict(where, walg_data_directory=sandbox.primary.datadir, walg_retention_enabled=True),
                           expect='Took a full backup base_')
        name = pushed.split('Took a full backup ')[1].split()[0]
        write_marker(sandbox, 7)
        ship_wal(sandbox, walg_bin, prefix, name[5:29])
        runs.play('walg_verify', dict(where, walg_recovery_window_days=1), expect='WAL verification')
        runs.play('walg_retention', where, check=True, expect='Would delete 0 backup(s)')
        runs.play('walg_restore_drill', dict(where, walg_drill_scratch_parent=drill_parent, walg_drill_checks=[
            dict(name='marker', query='SELECT bool_or(n = 7) FROM walg_faults_marker', expected=True)]),
            expect='Restore drill PASSED: backup %s' % name)
        outputs = dict(runs.outputs)
        # Each module got the walg_env secret, and Ansible shows it masked (no_log).
        masked = '"WALG_PGP_KEY_PASSPHRASE": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"'
        assert all(masked in text for label, text in outputs.items() if label.endswith(' stdout')), sorted(outputs)
        root = prefix[len('s3://%s/' % sandbox.bucket):] + '/'
        outputs.update(_objects(sandbox, *[k for k in list_keys(sandbox, root) if k.endswith('.json')]))
        assert len([k for k in outputs if k.startswith('s3://')]) >= 3, 'the sentinel and the metadata files'
        grep.assert_clean(outputs, dirs=[run_root, drill_parent])
    finally:
        remove_tree(drill_parent)
