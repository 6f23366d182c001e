# -*- coding: utf-8 -*-
"""Pure logic of the base backup bundle, bootstrap and wipe (module_utils/_bundles/basebackup.py, bootstrap.py, wipe.py,
_pg/datadir.py, _pg/recovery.py): restore_command quoting, the confirmation, the recovery settings and their
removal, the pg_basebackup command line, safe extraction, and a whole bootstrap with start=false over a synthetic
base backup (no server)."""

from __future__ import annotations

import io
import json
import os
import shlex
import stat
import subprocess
import sys
import tarfile

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import basebackup, bootstrap, bundle, wipe
from ansible_collections.pgops.resilience.plugins.module_utils._pg import (
    datadir as data_directory, recovery as recovery_config)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.datadir import (
    INCOMPLETE_MARKER, data_directory_state)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from tests.requirements import tool_missing

LABEL = (b'START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\nCHECKPOINT LOCATION: 0/4000060\n'
         b'BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-22 06:20:00 UTC\nLABEL: weekly\nSTART TIMELINE: 1\n')


# -- restore_command -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('directory', ['/wal-archive', '/mnt/wal archive', "/srv/o'brien/wal", '/srv/100%/wal', '/srv/$HOME;rm -rf'])
def test_the_archive_directory_is_shell_quoted_and_percent_signs_doubled(directory):
    command = recovery_config.archive_restore_command(directory)
    # What the server runs: %f and %p replaced, %% turned into % (PostgreSQL 15 docs, 20.5.4), then sh -c.
    expanded = command.replace('%f', '000000010000000000000004').replace('%p', 'pg_wal/RECOVERYXLOG').replace('%%', '%')
    assert shlex.split(expanded) == ['cp', directory + '/000000010000000000000004', 'pg_wal/RECOVERYXLOG']
    recovery_config.validate_restore_command(command)  # and it passes the verbatim checks


def test_the_archive_directory_must_be_absolute_and_on_one_line():
    assert recovery_config.archive_restore_command('/wal-archive/') == 'cp /wal-archive/%f "%p"'
    with pytest.raises(PgopsError, match='absolute path'):
        recovery_config.archive_restore_command('wal-archive')
    with pytest.raises(PgopsError, match='line break'):
        recovery_config.archive_restore_command('/wal\narchive')


@pytest.mark.parametrize('command', ['cp /a/%f "%p"', 'wal-g wal-fetch %f %p', 'pg_restore_wal %f %p %r', 'cp /100%%/%f %p'])
def test_valid_restore_commands(command):
    assert recovery_config.validate_restore_command(command) == command


@pytest.mark.parametrize('command, message', [
    ('cp /a/%f /b', 'must contain %f'),
    ('cp /a/x "%p"', 'must contain %f'),
    ('cp /100%/%f %p', "'%/'"),
    ('cp /a/%F %p', "'%F'"),
    ('cp /a/%f %p %', "'%'"),
    ('', 'empty'),
    ('cp /a/%f %p\nrm -rf /', 'line break'),
])
def test_bad_restore_commands_are_refused(command, message):
    with pytest.raises(PgopsError) as refused:
        recovery_config.validate_restore_command(command)
    assert message in refused.value.msg


# -- confirmation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('confirm', ['/var/lib/postgresql/data', '/var/lib/postgresql/data/', '/var/lib/postgresql//data'])
def test_the_confirmation_names_the_data_directory(confirm):
    assert data_directory.check_confirm('/var/lib/postgresql/data', confirm) == '/var/lib/postgresql/data'


@pytest.mark.parametrize('confirm', [None, '', '  ', 'yes', 'true', '/var/lib/postgresql', '/var/lib/postgresql/data2',
                                     'var/lib/postgresql/data', '/VAR/lib/postgresql/data'])
def test_anything_else_is_refused_saying_what_to_set(confirm):
    with pytest.raises(PgopsError) as refused:
        data_directory.check_confirm('/var/lib/postgresql/data', confirm, option='bootstrap_confirm')
    assert 'set bootstrap_confirm to exactly /var/lib/postgresql/data' in refused.value.msg.lower()
    assert 'Nothing was changed' in refused.value.msg


@pytest.mark.parametrize('path, message', [('/', 'never a data directory'), ('data', 'absolute'), ('', 'required')])
def test_impossible_data_directories_are_refused(path, message):
    with pytest.raises(PgopsError, match=message):
        data_directory.check_confirm(path, path)


# -- recovery settings -----------------------------------------------------------------------------------------


def _effective(text, before=''):
    """What the server ends up with: the last value of each setting wins (PostgreSQL 15 docs, 20.1.2)."""
    values = {}
    for line in (before + '\n' + text).splitlines():
        if line.strip().startswith('#') or '=' not in line:
            continue
        name, value = line.split('=', 1)
        values[name.strip()] = value.strip()
    return values


def test_settings_first_then_the_restore_command_then_every_target_emptied_but_the_chosen_one():
    target = recovery_config.normalize_recovery_target({'time': '2026-11-20 10:30:00+00'})
    settings = bootstrap.recovery_settings('cp /w/%f "%p"', target, {'port': 5433, 'archive_mode': 'off'})
    names = [name for name, value in settings]
    assert names[:3] == ['archive_mode', 'port', 'restore_command']
    assert names.index('recovery_target_time') > max(names.index(n) for n in ('recovery_target', 'recovery_target_lsn',
                                                                              'recovery_target_name', 'recovery_target_xid'))
    text = bootstrap.render_recovery_settings(settings, 'test')
    # A target left over in the restored configuration must not survive (nor clash: "multiple recovery targets").
    values = _effective(text, before="recovery_target_name = 'old'\nrestore_command = 'false'\nport = 5432")
    assert values['recovery_target_name'] == "''" and values['recovery_target_time'] == "'2026-11-20 10:30:00+00'"
    assert values['recovery_target_action'] == "'promote'" and values['recovery_target_inclusive'] == 'on'
    assert values['recovery_target_timeline'] == "'latest'" and values['port'] == '5433' and values['archive_mode'] == "'off'"
    assert values['restore_command'] == '\'cp /w/%f "%p"\''
    assert text.startswith('\n' + bootstrap.CONF_MARK + ' test\n')


def test_without_a_target_every_kind_is_emptied_and_no_action_is_set():
    settings = dict(bootstrap.recovery_settings("cp '/my wal'/%f \"%p\""))
    emptied = ('recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_xid')
    assert all(settings[name] == '' for name in emptied)
    assert 'recovery_target_action' not in settings and settings['recovery_target_timeline'] == 'latest'
    line = [l for l in bootstrap.render_recovery_settings(list(settings.items())).splitlines() if l.startswith('restore_command')]
    assert line == ["restore_command = 'cp ''/my wal''/%f \"%p\"'"]


def test_what_a_result_shows_of_the_settings_and_which_values_ansible_masks():
    command = 'AWS_SECRET_ACCESS_KEY="s3cr3t/Key+1" PGPASSWORD=pw-0123 wal-g wal-fetch %f %p'
    extra = {'port': 5433, 'archive_mode': 'off', 'primary_conninfo': 'host=a password=conn-pw-9',
             'application_name': 'postgresql://u:uri-pw-7@h/db', 'ssl_passphrase_command': ''}
    settings = bootstrap.recovery_settings(command, None, extra)
    shown = recovery_config.shown_settings(settings)
    assert "restore_command = '********'" in shown and "primary_conninfo = '********'" in shown
    assert "ssl_passphrase_command = ''" in shown, 'an empty value stays visible'
    assert "application_name = 'postgresql://u:********@h/db'" in shown, 'a URI password in another setting'
    assert 'port = 5433' in shown and "archive_mode = 'off'" in shown and "recovery_target_timeline = 'latest'" in shown
    text = '\n'.join(shown)
    for secret in ('s3cr3t', 'pw-0123', 'conn-pw-9', 'uri-pw-7'):
        assert secret not in text
    # The file keeps them: the server needs them.
    assert 's3cr3t/Key+1' in bootstrap.render_recovery_settings(settings)
    secrets = bootstrap.bootstrap_secrets(dict(restore_command=command, settings=extra))
    assert secrets == [command, 's3cr3t/Key+1', 'pw-0123', 'host=a password=conn-pw-9']
    assert bootstrap.bootstrap_secrets(dict(restore_command=None, settings={'port': 5433})) == []


@pytest.mark.parametrize('extra, message', [
    ({'restore_command': 'x'}, 'written by the bootstrap itself'),
    ({'Recovery_Target_Time': 'x'}, 'written by the bootstrap itself'),
    ({'port; rm': 1}, 'not a configuration parameter name'),
    ({'shared_buffers': ['1GB']}, 'single value'),
    ({'cluster_name': 'a\nb'}, 'line break'),
])
def test_bad_settings_are_refused(extra, message):
    with pytest.raises(PgopsError, match=message):
        bootstrap.recovery_settings('cp /w/%f %p', None, extra)


def test_the_targets_of_the_block_are_removed_after_recovery_and_nothing_else():
    before = "# Do not edit this file manually!\nrecovery_target_time = 'kept: not ours'\nwork_mem = '8MB'\n"
    target = recovery_config.normalize_recovery_target({'time': '2026-11-20 10:30:00+00'})
    text = before + bootstrap.render_recovery_settings(bootstrap.recovery_settings('cp /w/%f %p', target, {'port': 5433}))
    cleaned = bootstrap.without_recovery_targets(text)
    assert cleaned.startswith(before)
    block = cleaned[len(before):]
    assert not [line for line in block.splitlines() if line.startswith('recovery_target')]
    assert "restore_command = 'cp /w/%f %p'" in block and 'port = 5433' in block
    assert bootstrap.without_recovery_targets(before) == before


@pytest.mark.parametrize('state, timeline, ended', [
    ('in production', '1', False),  # the backup's own copy of pg_control, before the server wrote its own
    ('in archive recovery', '1', False),
    ('in archive recovery', '3', False),  # a restartpoint on a later timeline of the archive
    ('in production', '2', True),  # the end-of-recovery checkpoint on the new timeline
    ('in production', '', False),
])
def test_recovery_has_ended_only_on_a_new_timeline_in_production(state, timeline, ended):
    control = {'Database cluster state': state, "Latest checkpoint's TimeLineID": timeline}
    assert bootstrap.recovery_ended(control, 1) is ended


# -- pg_basebackup ---------------------------------------------------------------------------------------------


def test_the_command_line_holds_no_connection_settings():
    cmd = basebackup.basebackup_command('/usr/bin/pg_basebackup', '/s/basebackup', 'weekly', 'spread', '50M')
    assert cmd[:2] == ['/usr/bin/pg_basebackup', '--pgdata'] and '--no-password' in cmd
    for flag, value in (('--format', 'tar'), ('--wal-method', 'stream'), ('--checkpoint', 'spread'), ('--max-rate', '50M'),
                        ('--label', 'weekly')):
        assert cmd[cmd.index(flag) + 1] == value
    assert '--gzip' in cmd
    assert not set(cmd) & {'-h', '-p', '-U', '-d', '--host', '--port', '--username', '--dbname', '-W', '--password'}
    with pytest.raises(PgopsError):
        basebackup.basebackup_command('pg_basebackup', '/s', 'x', 'slow')


@pytest.mark.parametrize('facts, problems', [
    (dict(superuser=False, replication=True, max_wal_senders=10, wal_senders_in_use=1, wal_level='replica'), []),
    (dict(superuser=True, replication=False, max_wal_senders=2, wal_senders_in_use=0, wal_level='logical'), []),
    (dict(superuser=False, replication=False, max_wal_senders=10, wal_senders_in_use=0, wal_level='replica'), ['REPLICATION']),
    (dict(superuser=True, replication=False, max_wal_senders=0, wal_senders_in_use=0, wal_level='replica'), ['max_wal_senders']),
    (dict(superuser=True, replication=False, max_wal_senders=3, wal_senders_in_use=2, wal_level='minimal'),
     ['max_wal_senders', 'minimal']),
])
def test_replication_problems(facts, problems):
    found = basebackup.replication_problems(dict(facts, user='app'))
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found))


def test_bundle_names_and_their_time():
    name = bundle.bundle_name(basebackup.NAME_PREFIX, suffix=basebackup.SUFFIX)
    assert basebackup.PATTERN.match(name) and basebackup.bundle_time('basebackup-20261122-0620.bundle.tar.gz') == '20261122-0620'
    assert not basebackup.PATTERN.match('nightly-20261122-0620.tar.gz')


# -- synthetic backups -----------------------------------------------------------------------------------------


def _tar_gz(path, entries):
    """Write a gzip tar: entries are (name, bytes) for files, (name, None) for directories, (name, '->target') links."""
    with tarfile.open(path, 'w:gz') as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            elif isinstance(data, str):
                info.type, info.linkname = tarfile.SYMTYPE, data[2:]
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))


BASE_ENTRIES = [
    ('backup_label', LABEL), ('PG_VERSION', b'15\n'), ('global', None), ('global/pg_control', b'\0' * 64), ('base', None),
    ('base/1', None), ('base/1/1259', b'x' * 100), ('pg_wal', None), ('postgresql.conf', b"port = 5432\n"),
    ('postgresql.auto.conf', b"recovery_target_name = 'left over'\n"), ('standby.signal', b''),
]
WAL_ENTRIES = [('archive_status', None), ('000000010000000000000004', b'w' * 1000),
               ('archive_status/000000010000000000000004.done', b'')]


def _backup_dir(root):
    """A pg_basebackup -Ft -z output: base.tar.gz, pg_wal.tar.gz, backup_manifest."""
    out = root / 'basebackup'
    out.mkdir()
    _tar_gz(str(out / 'base.tar.gz'), BASE_ENTRIES)
    _tar_gz(str(out / 'pg_wal.tar.gz'), WAL_ENTRIES)
    ranges = [{'Timeline': 1, 'Start-LSN': '0/4000028', 'End-LSN': '0/4000100'}]
    (out / 'backup_manifest').write_text(json.dumps({'WAL-Ranges': ranges}))
    return out


def test_backup_facts_come_from_the_label_and_the_manifest(tmp_path):
    facts = basebackup.backup_facts(str(_backup_dir(tmp_path)))
    assert facts['start_lsn'] == '0/4000028' and facts['stop_lsn'] == '0/4000100' and facts['timeline'] == 1
    assert facts['start_wal_file'] == '000000010000000000000004' and facts['label'] == 'weekly' and facts['tablespaces'] == []
    assert set(facts['members']) == {'base.tar.gz', 'pg_wal.tar.gz', 'backup_manifest'}


@pytest.mark.parametrize('entries, message', [
    ([('../escape', b'x')], 'outside the data directory'),
    ([('/etc/passwd', b'x')], 'outside the data directory'),
    ([('pg_tblspc', None), ('pg_tblspc/16390', '->/srv/tablespace')], 'tablespaces'),
])
def test_extraction_refuses_what_a_data_directory_cannot_hold(tmp_path, entries, message):
    _tar_gz(str(tmp_path / 'bad.tar.gz'), entries)
    dest = tmp_path / 'dest'
    dest.mkdir()
    with pytest.raises(PgopsError, match=message):
        basebackup.extract_base_tar(str(tmp_path / 'bad.tar.gz'), str(dest))
    assert not (tmp_path / 'escape').exists()


def _store_with_bundle(tmp_path):
    store = tmp_path / 'store'
    store.mkdir()
    name = 'basebackup-20261122-0620.bundle.tar.gz'
    bundle.pack(str(_backup_dir(tmp_path)), str(store / name), basebackup.KIND, {'server_major': 15, 'timeline': 1})
    return store, name


def _bootstrap_params(datadir, store, **overrides):
    params = dict((k, v.get('default')) for k, v in bootstrap.bootstrap_argument_spec().items())
    params.update(data_directory=str(datadir), confirm=str(datadir), directory=str(store), wal_archive_directory='/wal-archive',
                  start=False, scratch_dir=str(datadir.parent))
    params.update(overrides)
    return params


def _previous_cluster(datadir):
    """A data directory of a previous cluster (PG_VERSION, global/pg_control and some of its files); its listing."""
    (datadir / 'global').mkdir(parents=True)
    (datadir / 'global' / 'pg_control').write_bytes(b'\0' * 8192)
    (datadir / 'PG_VERSION').write_text('15\n')
    (datadir / 'old-file').write_text('from the previous cluster')
    (datadir / 'old-dir').mkdir()
    return sorted(os.listdir(datadir))


def test_a_prepared_data_directory_is_ready_for_archive_recovery(tmp_path):
    store, name = _store_with_bundle(tmp_path)
    datadir = tmp_path / 'data'
    listing = _previous_cluster(datadir)
    check = bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store), check_mode=True)
    assert check['changed'] and not check['wiped'] and [e['name'] for e in check['removed']] == listing
    assert sorted(os.listdir(datadir)) == listing
    result = bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store, settings={'port': 5433}))
    assert result['wiped'] and not result['started'] and result['bundle']['name'] == name
    assert result['backup']['start_lsn'] == '0/4000028' and result['restored']['files'] == 9
    names = set(os.listdir(datadir))
    assert 'old-file' not in names and 'standby.signal' not in names and 'recovery.signal' in names
    assert (datadir / 'pg_wal' / '000000010000000000000004').read_bytes() == b'w' * 1000
    assert os.path.isfile(datadir / 'pg_wal' / 'archive_status' / '000000010000000000000004.done')
    assert stat.S_IMODE(os.stat(datadir).st_mode) == 0o700
    values = _effective((datadir / 'postgresql.auto.conf').read_text())
    assert values['restore_command'] == '\'cp /wal-archive/%f "%p"\'' and values['recovery_target_name'] == "''"
    assert values['port'] == '5433'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('pgops-bootstrap-')], 'the scratch directory is removed'
    assert INCOMPLETE_MARKER not in names


def test_a_bootstrap_that_stopped_half_way_can_be_run_again(tmp_path):
    store, name = _store_with_bundle(tmp_path)
    # A base backup whose extraction fails after the wipe (a tablespace link after the backup_label).
    broken_dir = tmp_path / 'broken'
    broken_dir.mkdir()
    out = _backup_dir(broken_dir)
    _tar_gz(str(out / 'base.tar.gz'), BASE_ENTRIES[:1] + [('pg_tblspc', None), ('pg_tblspc/16390', '->/srv/ts')] + BASE_ENTRIES[1:])
    broken = 'basebackup-20261121-0620.bundle.tar.gz'
    bundle.pack(str(out), str(store / broken), basebackup.KIND, {'server_major': 15, 'timeline': 1})
    datadir = tmp_path / 'data'
    _previous_cluster(datadir)
    with pytest.raises(PgopsError, match='tablespaces') as failed:
        bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store, bundle=broken))
    assert failed.value.details['wiped'] is True
    # Neither empty nor a data directory, but our marker says a bootstrap of ours left it so.
    left = sorted(os.listdir(datadir))
    assert INCOMPLETE_MARKER in left and 'PG_VERSION' not in left and 'old-file' not in left
    assert data_directory_state(str(datadir))[0] == 'incomplete'
    check = bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store, bundle=name), check_mode=True)
    assert [e['name'] for e in check['removed']] == left and sorted(os.listdir(datadir)) == left
    result = bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store, bundle=name))
    assert result['wiped'] and (datadir / 'recovery.signal').exists() and (datadir / 'global' / 'pg_control').exists()
    assert INCOMPLETE_MARKER not in os.listdir(datadir)


def test_a_directory_that_is_not_a_data_directory_is_refused_by_the_bootstrap(tmp_path):
    store, name = _store_with_bundle(tmp_path)
    datadir = tmp_path / 'notes'
    datadir.mkdir()
    (datadir / 'todo.txt').write_text('keep me')
    (datadir / 'PG_VERSION').write_text('15\n')  # half a data directory is not one
    for check_mode in (True, False):
        with pytest.raises(PgopsError) as refused:
            bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store), check_mode=check_mode)
        assert 'Refusing to empty data_directory %s' % datadir in refused.value.msg
        assert 'no global/pg_control' in refused.value.msg and 'empty it by hand' in refused.value.msg
        assert refused.value.details['wiped'] is False and refused.value.details['changed'] is False
    assert sorted(os.listdir(datadir)) == ['PG_VERSION', 'todo.txt'] and (datadir / 'todo.txt').read_text() == 'keep me'
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('pgops-bootstrap-')], 'refused before any scratch directory'


@pytest.mark.parametrize('leftovers', [[], ['recovery.signal'], [INCOMPLETE_MARKER], ['lost+found', 'standby.signal']])
def test_an_empty_directory_or_one_with_only_leftovers_is_bootstrapped(tmp_path, leftovers):
    store, dummy = _store_with_bundle(tmp_path)
    datadir = tmp_path / 'data'
    datadir.mkdir()
    for name in leftovers:
        (datadir / name).write_text('') if '.' in name else (datadir / name).mkdir()
    result = bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store))
    assert result['wiped'] and [e['name'] for e in result['removed']] == sorted(leftovers)
    assert (datadir / 'PG_VERSION').read_text() == '15\n' and INCOMPLETE_MARKER not in os.listdir(datadir)


def test_a_corrupted_bundle_is_refused_before_the_data_directory_is_touched(tmp_path):
    store, name = _store_with_bundle(tmp_path)
    data = bytearray((store / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (store / name).write_bytes(bytes(data))
    datadir = tmp_path / 'data'
    listing = _previous_cluster(datadir)
    with pytest.raises(PgopsError) as refused:
        bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store))
    assert 'is corrupt' in refused.value.msg and refused.value.details['wiped'] is False
    assert refused.value.details['changed'] is False
    assert sorted(os.listdir(datadir)) == listing


def test_a_bundle_of_another_kind_is_refused(tmp_path):
    store = tmp_path / 'store'
    store.mkdir()
    root = tmp_path / 'dump'
    root.mkdir()
    (root / 'globals.sql').write_text('-- roles\n')
    bundle.pack(str(root), str(store / 'basebackup-20261122-0620.bundle.tar.gz'), 'logical-dump')
    datadir = tmp_path / 'data'
    with pytest.raises(PgopsError, match='logical-dump, not a base backup'):
        bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store))
    assert not datadir.exists()


# -- wipe ------------------------------------------------------------------------------------------------------


def _volume(tmp_path):
    volume = tmp_path / 'volume'
    (volume / 'data' / 'base').mkdir(parents=True)
    (volume / 'data' / 'base' / 'f').write_bytes(b'12345')
    (volume / 'data' / 'PG_VERSION').write_text('15\n')
    (volume / 'data' / 'global').mkdir()
    (volume / 'data' / 'global' / 'pg_control').write_bytes(b'\0' * 8192)
    (volume / 'lost+found').mkdir()
    (volume / 'stray.sql').write_text('select 1;\n')
    return volume


def _wipe_params(datadir, **overrides):
    params = dict(data_directory=str(datadir), confirm=str(datadir), clear_parent=False, server_user=None)
    params.update(overrides)
    return params


def test_wipe_without_confirmation_changes_nothing(tmp_path):
    volume = _volume(tmp_path)
    for confirm in (None, 'yes', str(volume)):
        with pytest.raises(PgopsError, match='Nothing was changed'):
            wipe.wipe_data_directory(_wipe_params(volume / 'data', confirm=confirm, clear_parent=True))
    assert sorted(os.listdir(volume / 'data')) == ['PG_VERSION', 'base', 'global'] and (volume / 'stray.sql').exists()


def test_wipe_empties_the_data_directory_and_with_clear_parent_the_volume(tmp_path):
    volume = _volume(tmp_path)
    check = wipe.wipe_data_directory(_wipe_params(volume / 'data', clear_parent=True), check_mode=True)
    assert check['changed'] and check['bytes_removed'] == 5 + 3 + 8192 + 10
    assert [e['name'] for e in check['before']['parent']] == ['stray.sql']
    assert (volume / 'stray.sql').exists()
    result = wipe.wipe_data_directory(_wipe_params(volume / 'data', clear_parent=True))
    assert sorted(os.listdir(volume)) == ['data', 'lost+found'] and os.listdir(volume / 'data') == []
    assert stat.S_IMODE(os.stat(volume / 'data').st_mode) == 0o700
    assert result['after'] == {'data_directory': [], 'parent': []}
    again = wipe.wipe_data_directory(_wipe_params(volume / 'data', clear_parent=True))
    assert not again['changed']


def test_wipe_refuses_a_system_directory_as_parent_and_a_running_server(tmp_path):
    with pytest.raises(PgopsError, match='system directory'):
        wipe.wipe_data_directory(_wipe_params('/var/lib/pgdata-that-does-not-exist', clear_parent=True))
    volume = _volume(tmp_path)
    datadir = volume / 'data'
    # A "postmaster" working in the data directory, as a real one does.
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], cwd=str(datadir))
    try:
        (datadir / 'postmaster.pid').write_text('%d\n%s\n' % (sleeper.pid, datadir))
        with pytest.raises(PgopsError, match='PID %d.*is running' % sleeper.pid):
            wipe.wipe_data_directory(_wipe_params(datadir))
        store, dummy = _store_with_bundle(tmp_path)
        with pytest.raises(PgopsError, match='is running') as refused:
            bootstrap.bootstrap_data_directory(_bootstrap_params(datadir, store))
        assert refused.value.details['wiped'] is False
    finally:
        sleeper.kill()
        sleeper.wait()
    assert (datadir / 'base' / 'f').exists()
    # The postmaster.pid of a server that ran elsewhere (PID 1 of its pod) names a live process here that works
    # elsewhere (this one, in the test) or none at all.
    (datadir / 'postmaster.pid').write_text('%d\n%s\n' % (os.getpid(), datadir))
    assert wipe.wipe_data_directory(_wipe_params(datadir))['changed']
    (datadir / 'postmaster.pid').write_text('%d\n%s\n' % (sleeper.pid, datadir))
    assert wipe.wipe_data_directory(_wipe_params(datadir))['removed'] == [str(datadir / 'postmaster.pid')]


@pytest.mark.parametrize('path', ['/etc', '/etc/../etc', '/usr', '/usr/share', '/var/lib', '/srv', '/tmp', '/home/alice'])
def test_wipe_refuses_a_system_directory_in_check_mode_too(path):
    for check_mode in (True, False):
        with pytest.raises(PgopsError) as refused:
            wipe.wipe_data_directory(_wipe_params(path), check_mode=check_mode)
        # check_confirm makes the path normal first (/etc/../etc is /etc); the rule compares both anyway
        assert 'Refusing data_directory %s: it is a ' % os.path.normpath(path) in refused.value.msg
        assert 'system directory' in refused.value.msg or 'home directory' in refused.value.msg
        assert 'Nothing was changed' in refused.value.msg


def test_wipe_refuses_a_directory_that_is_not_a_data_directory(tmp_path):
    notes = tmp_path / 'notes'
    (notes / 'sub').mkdir(parents=True)
    (notes / 'sub' / 'a.txt').write_text('a')
    (notes / 'b.txt').write_text('b')
    for check_mode in (True, False):
        with pytest.raises(PgopsError) as refused:
            wipe.wipe_data_directory(_wipe_params(notes), check_mode=check_mode)
        assert 'Refusing to empty data_directory %s' % notes in refused.value.msg and 'b.txt, sub' in refused.value.msg
    assert sorted(os.listdir(notes)) == ['b.txt', 'sub'] and (notes / 'sub' / 'a.txt').read_text() == 'a'


def test_wipe_check_mode_writes_nothing_and_reports_no_change_for_an_empty_directory(tmp_path):
    datadir = tmp_path / 'data'
    datadir.mkdir()
    os.chmod(datadir, 0o700)
    owner = None
    if os.geteuid() == 0:  # as root the directory goes to the server user: already theirs here
        owner = '4321:4321'
        os.chown(datadir, 4321, 4321)
    check = wipe.wipe_data_directory(_wipe_params(datadir, server_user=owner), check_mode=True)
    assert not check['changed'] and check['removed'] == [] and os.listdir(datadir) == []
    os.chmod(datadir, 0o755)
    check = wipe.wipe_data_directory(_wipe_params(datadir, server_user=owner), check_mode=True)
    assert check['changed'] and stat.S_IMODE(os.stat(datadir).st_mode) == 0o755, 'the mode would change; it did not'
    check = wipe.wipe_data_directory(_wipe_params(tmp_path / 'missing'), check_mode=True)
    assert check['changed'] and not (tmp_path / 'missing').exists()


def _immutable(path, on):
    """chattr +i / -i: even root cannot remove the file (a real fault in the middle of a wipe)."""
    return subprocess.run(['chattr', '+i' if on else '-i', str(path)], capture_output=True, check=False).returncode == 0


def test_a_wipe_that_stopped_half_way_can_be_run_again(tmp_path):
    volume = _volume(tmp_path)
    datadir = volume / 'data'
    stuck = datadir / 'zz-stuck'
    stuck.write_text('x')
    if not _immutable(stuck, True):
        tool_missing('chattr +i is not possible on %s (needs root and a file system with the immutable flag)' % tmp_path)
    try:
        with pytest.raises(PgopsError, match='cannot remove %s' % stuck):
            wipe.wipe_data_directory(_wipe_params(datadir))
        # PG_VERSION and global went first: only our marker makes it acceptable again.
        assert sorted(os.listdir(datadir)) == [INCOMPLETE_MARKER, 'zz-stuck']
        assert data_directory_state(str(datadir))[0] == 'incomplete'
    finally:
        _immutable(stuck, False)
    result = wipe.wipe_data_directory(_wipe_params(datadir))
    assert result['removed'] == [str(datadir / INCOMPLETE_MARKER), str(stuck)] and os.listdir(datadir) == []
