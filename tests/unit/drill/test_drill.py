# -*- coding: utf-8 -*-
"""Unit tests of the pure logic of the restore drill runner: the configuration text it appends, recovery targets,
check comparison, backup_label parsing and JSON conversion (no server)."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.jsonable import jsonable
from ansible_collections.pgops.resilience.plugins.module_utils._drill import checks as drill_checks, config as drill_config, runner as drill
from ansible_collections.pgops.resilience.plugins.module_utils._pg import backup_label, recovery
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_bindir
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

LABEL = """START WAL LOCATION: 0/4000028 (file 000000010000000000000004)
CHECKPOINT LOCATION: 0/4000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2025-01-29 10:00:00 UTC
LABEL: pg_basebackup base backup
START TIMELINE: 1
"""


def _conf(recovery_target=None, extra=None, pg_version='15', restore_command='cp /archive/%f "%p"'):
    settings = drill_config.drill_settings(pg_version, 54321, '/scratch/w/socket', '/scratch/w/pg_hba.drill.conf', restore_command,
                                           recovery.normalize_recovery_target(recovery_target), extra, '/scratch/w/postmaster.external.pid')
    return settings, drill_config.render_drill_settings(settings, 'appended now')


def _effective(text, before=''):
    """What the server ends up with: postgresql.conf (``before``, includes already inlined) then postgresql.auto.conf,
    the last value of each setting winning (PostgreSQL 15 docs, 20.1.2). Returns {name: raw literal}."""
    values = {}
    for line in (before + '\n' + text).splitlines():
        line = line.split('#', 1)[0].strip() if not line.strip().startswith("restore_command") else line.strip()
        if '=' in line:
            name, value = line.split('=', 1)
            values[name.strip()] = value.strip()
    return values


# -- configuration text ----------------------------------------------------------------------------------------


def test_every_isolation_key_is_present_with_its_value():
    dummy, text = _conf()
    values = _effective(text)
    assert values['port'] == '54321'
    assert values['listen_addresses'] == "''"
    assert values['unix_socket_directories'] == "'/scratch/w/socket'"
    assert values['hba_file'] == "'/scratch/w/pg_hba.drill.conf'"
    assert values['archive_mode'] == "'off'"
    assert values['archive_command'] == "''"
    assert values['archive_library'] == "''"
    assert values['archive_cleanup_command'] == "''"
    assert values['recovery_end_command'] == "''"
    assert values['restore_command'] == """'cp /archive/%f "%p"'"""
    assert values['recovery_target_timeline'] == "'latest'"
    assert values['recovery_target_action'] == "'promote'"
    assert values['primary_conninfo'] == "''" and values['primary_slot_name'] == "''"
    assert values['cluster_name'] == "'pgops-drill'"
    assert values['logging_collector'] == 'off'
    assert values['external_pid_file'] == "'/scratch/w/postmaster.external.pid'"
    assert values['max_logical_replication_workers'] == '0'
    assert values['recovery_min_apply_delay'] == '0'
    for untouched in ('shared_preload_libraries', 'max_connections', 'ident_file', 'hot_standby', 'data_directory'):
        assert untouched not in values
    for kind in ('recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', 'recovery_target_xid'):
        assert values[kind] == "''"  # a target left over from an earlier PITR is emptied


def test_the_text_is_a_marked_block_of_single_lines_that_says_why_it_wins():
    dummy, text = _conf()
    assert text.startswith('\n' + drill_config.CONF_MARK + ' appended now\n')
    assert 'read after postgresql.conf and every file it includes' in text
    assert text.endswith('\n')
    body = [line for line in text.splitlines() if line and not line.startswith('#')]
    assert all(' = ' in line for line in body)


def test_an_included_file_cannot_turn_archiving_back_on():
    restored = ("archive_mode = on\n"
                "archive_command = 'cp %p /prod/archive/%f'\n"   # what an include of the production config brings
                "archive_library = 'basic_archive'\n"
                "archive_cleanup_command = 'pg_archivecleanup /prod/archive %r'\n"
                "recovery_target_name = 'left over'\n"
                "listen_addresses = '*'\nport = 5432\n")
    dummy, text = _conf()
    values = _effective(text, before=restored)
    assert values['archive_mode'] == "'off'"
    assert values['archive_command'] == "''" and values['archive_library'] == "''"
    assert values['archive_cleanup_command'] == "''"
    assert values['recovery_target_name'] == "''"
    assert values['listen_addresses'] == "''" and values['port'] == '54321'


def test_values_are_quoted_as_postgresql_conf_literals():
    assert recovery.conf_literal('x', "it's") == "'it''s'"
    assert recovery.conf_literal('x', 'a\\b') == "'a\\\\b'"
    assert recovery.conf_literal('x', True) == 'on' and recovery.conf_literal('x', False) == 'off'
    assert recovery.conf_literal('x', 5) == '5'
    assert recovery.conf_literal('x', '') == "''"
    dummy, text = _conf(restore_command="barman-cloud-wal-restore 's3://b/p' srv %f %p")
    assert "restore_command = 'barman-cloud-wal-restore ''s3://b/p'' srv %f %p'" in text
    with pytest.raises(PgopsError, match='line break'):
        recovery.conf_literal('restore_command', 'cp a\nrm -rf /')


def test_version_dependent_settings():
    dummy, text15 = _conf(pg_version='15')
    dummy, text14 = _conf(pg_version='14')
    dummy, text16 = _conf(pg_version='16')
    assert 'archive_library' in text15 and 'archive_library' not in text14
    assert 'promote_trigger_file' in text15 and 'promote_trigger_file' not in text16


def test_the_chosen_target_comes_after_every_emptied_one():
    settings, text = _conf(recovery_target={'time': '2025-01-29 10:30:00+00', 'inclusive': False})
    names = [name for name, value in settings]
    targets = [(i, n) for i, n in enumerate(names) if n.startswith('recovery_target') and n not in (
        'recovery_target_inclusive', 'recovery_target_timeline', 'recovery_target_action')]
    assert targets[-1][1] == 'recovery_target_time' and names.count('recovery_target_time') == 1
    assert dict(settings)['recovery_target_time'] == '2025-01-29 10:30:00+00'
    assert "recovery_target_inclusive = off" in text
    settings, text = _conf(recovery_target={'immediate': True})
    names = [name for name, value in settings]
    assert names.count('recovery_target') == 1 and dict(settings)['recovery_target'] == 'immediate'
    assert names.index('recovery_target') > max(names.index(n) for n in ('recovery_target_lsn', 'recovery_target_time'))


def test_extra_settings_come_first_and_cannot_touch_the_drill_settings():
    settings, text = _conf(extra={'shared_buffers': '128MB', 'hot_standby': False})
    assert settings[0] == ('hot_standby', False) and settings[1] == ('shared_buffers', '128MB')
    for owned in ('archive_mode', 'ARCHIVE_COMMAND', 'port', 'restore_command', 'data_directory'):
        with pytest.raises(PgopsError, match='set by the drill itself'):
            _conf(extra={owned: 'x'})
    with pytest.raises(PgopsError, match='not a configuration parameter name'):
        _conf(extra={'a = 1\narchive_mode': 'on'})


# -- recovery targets ----------------------------------------------------------------------------------------------


def test_recovery_targets_are_normalised():
    assert recovery.normalize_recovery_target(None) is None
    assert recovery.normalize_recovery_target({'lsn': '0/3000060'}) == {'lsn': '0/3000060', 'inclusive': True, 'timeline': 'latest'}
    assert recovery.normalize_recovery_target({'lsn': '0/3a'})['lsn'] == '0/3A'
    assert recovery.normalize_recovery_target({'xid': 740, 'timeline': 2}) == {'xid': '740', 'inclusive': True, 'timeline': '2'}
    assert recovery.normalize_recovery_target({'name': 'before-upgrade'})['name'] == 'before-upgrade'
    when = datetime.datetime(2025, 1, 29, 10, 30, tzinfo=datetime.timezone.utc)
    assert recovery.normalize_recovery_target({'time': when})['time'] == '2025-01-29T10:30:00+00:00'
    assert recovery.normalize_recovery_target({'immediate': True}) == {'immediate': True, 'inclusive': True, 'timeline': 'latest'}


@pytest.mark.parametrize('target, message', [
    ({'time': '2025-01-29', 'lsn': '0/1'}, 'exactly one'),
    ({}, 'empty'),
    ({'when': 'now'}, 'unknown key'),
    ({'lsn': 'zero'}, 'not an LSN'),
    ({'xid': 'abc'}, 'not a transaction ID'),
    ({'time': datetime.datetime(2025, 1, 29)}, 'no time zone'),
    ({'name': 'x', 'inclusive': 'yes'}, 'true or false'),
    ({'name': 'x', 'timeline': 'newest'}, 'timeline'),
    ('2025-01-29', 'must be a dict'),
])
def test_bad_recovery_targets_are_refused(target, message):
    with pytest.raises(PgopsError, match=message):
        recovery.normalize_recovery_target(target)


# -- checks --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('value, expected', [
    (42, 42), (42, '42'), (True, True), (True, 'true'), (False, 'FALSE'), ('on', 'on'), ('', ''),
    (decimal.Decimal('1.50'), '1.50'), (decimal.Decimal('1.50'), 1.5), (decimal.Decimal('0.1'), 0.1), (0.1, '0.1'),
    (decimal.Decimal('42'), 42), ([[1, 'a'], [2, 'b']], [[1, 'a'], [2, 'b']]), ([[1, 'a']], [['1', 'a']]),
    (datetime.date(2025, 1, 29), '2025-01-29'),
    (datetime.datetime(2025, 1, 29, 10, 30, tzinfo=datetime.timezone.utc), '2025-01-29T10:30:00Z'),
])
def test_values_that_match(value, expected):
    assert drill_checks.values_match(value, expected)


@pytest.mark.parametrize('value, expected', [
    (42, 43), (42, '042'), (True, 1), (1, True), (True, 'false'), (False, 0), ('on', True), (None, 'x'),
    ([[1, 'a']], [[1, 'a'], [2, 'b']]), ([1, 2], 1), (42, [42]), (decimal.Decimal('1.50'), '1.5 '),
])
def test_values_that_do_not_match(value, expected):
    assert not drill_checks.values_match(value, expected)


def test_the_compared_value_is_a_scalar_only_for_one_row_of_one_column():
    assert drill_checks.row_value([(42,)], [('count',)]) == 42
    assert drill_checks.row_value([(1, 'a')], [('id',), ('note',)]) == [[1, 'a']]
    assert drill_checks.row_value([(1,), (2,)], [('id',)]) == [[1], [2]]
    assert drill_checks.row_value([], [('id',)]) == []
    assert drill_checks.row_value([], None) is None


def test_checks_are_validated_and_named():
    checks = drill_checks.normalize_checks([{'query': 'SELECT 1'}, {'name': 'rows', 'query': 'SELECT 2', 'expected': 2, 'database': 'app'}])
    assert checks == [dict(name='check 1', query='SELECT 1', expected=None, database=None),
                      dict(name='rows', query='SELECT 2', expected=2, database='app')]
    assert drill_checks.normalize_checks(None) is None
    with pytest.raises(PgopsError, match=r'checks\[0\] \(x\) has no query'):
        drill_checks.normalize_checks([{'name': 'x'}])
    with pytest.raises(PgopsError, match='unknown key'):
        drill_checks.normalize_checks([{'query': 'SELECT 1', 'expect': 1}])
    with pytest.raises(PgopsError, match='must be a list'):
        drill_checks.normalize_checks('SELECT 1')


# -- backup_label and the data directory ---------------------------------------------------------------------------


def test_backup_label_is_parsed():
    parsed = backup_label.parse_backup_label(LABEL)
    assert parsed['raw']['START WAL LOCATION'] == '0/4000028 (file 000000010000000000000004)'
    assert parsed['raw']['LABEL'] == 'pg_basebackup base backup'
    assert parsed['derived'] == dict(start_lsn='0/4000028', start_wal_file='000000010000000000000004', checkpoint_lsn='0/4000060',
                                     start_timeline=1, start_time='2025-01-29 10:00:00 UTC', label='pg_basebackup base backup',
                                     backup_method='streamed', backup_from='primary')


def test_backup_label_without_timeline_takes_it_from_the_file_name():
    parsed = backup_label.parse_backup_label('START WAL LOCATION: 0/9000028 (file 000000030000000000000009)\nCHECKPOINT LOCATION: 0/9000060\n')
    assert parsed['derived']['start_timeline'] == 3 and parsed['derived']['label'] is None


def test_a_file_that_is_not_a_backup_label_is_refused():
    with pytest.raises(PgopsError, match='START WAL LOCATION'):
        backup_label.parse_backup_label('LABEL: something\n')


def _datadir(tmp_path, label=True, version='15\n', control=True):
    datadir = tmp_path / 'data'
    (datadir / 'global').mkdir(parents=True)
    (datadir / 'pg_wal').mkdir()
    if version is not None:
        (datadir / 'PG_VERSION').write_text(version)
    if control:
        (datadir / 'global' / 'pg_control').write_bytes(b'\0' * 8192)
    if label:
        (datadir / 'backup_label').write_text(LABEL)
    return datadir


def test_check_data_directory_describes_a_restored_backup(tmp_path):
    datadir = _datadir(tmp_path)
    os.symlink(str(tmp_path / 'elsewhere'), str(datadir / 'pg_wal2'))  # not a link the server uses: ignored
    (datadir / 'pg_tblspc').mkdir()
    os.symlink('/srv/tablespaces/fast', str(datadir / 'pg_tblspc' / '16390'))
    info = backup_label.check_data_directory(str(datadir))
    assert info['pg_version'] == '15' and info['start_wal_file'] == '000000010000000000000004' and info['start_timeline'] == 1
    assert info['backup_label']['CHECKPOINT LOCATION'] == '0/4000060'
    assert info['links'] == {'pg_wal': None, 'pg_tblspc/16390': '/srv/tablespaces/fast'}


def test_tablespace_map_locations_are_links_too(tmp_path):
    datadir = _datadir(tmp_path)
    (datadir / 'tablespace_map').write_text('16390 /srv/tablespaces/fast\n16391 /srv/with\\ space\n')
    links = backup_label.check_data_directory(str(datadir))['links']
    assert links['pg_tblspc/16390'] == '/srv/tablespaces/fast' and links['pg_tblspc/16391'] == '/srv/with space'


@pytest.mark.parametrize('kwargs, missing', [
    (dict(label=False), 'backup_label is missing'),
    (dict(version=None), 'PG_VERSION cannot be read'),
    (dict(version='fifteen'), 'not a PostgreSQL major version'),
    (dict(control=False), 'pg_control is missing'),
])
def test_check_data_directory_names_the_missing_file(tmp_path, kwargs, missing):
    datadir = _datadir(tmp_path, **kwargs)
    with pytest.raises(PgopsError, match=missing):
        backup_label.check_data_directory(str(datadir))


def test_backup_label_is_optional_when_asked(tmp_path):
    info = backup_label.check_data_directory(str(_datadir(tmp_path, label=False)), require_backup_label=False)
    assert info['backup_label'] is None and info['pg_version'] == '15'


def test_a_missing_data_directory(tmp_path):
    with pytest.raises(PgopsError, match='is not a directory'):
        backup_label.check_data_directory(str(tmp_path / 'nope'))


# -- options and results -------------------------------------------------------------------------------------------


def test_drill_options_are_validated_before_anything_is_touched(tmp_path):
    datadir = str(_datadir(tmp_path))
    with pytest.raises(PgopsError, match='%f'):
        drill.Drill(datadir, 'cp /archive/x "%p"')
    with pytest.raises(PgopsError, match='scratch_dir'):
        drill.Drill(datadir, 'cp /a/%f %p', scratch_dir='/')
    with pytest.raises(PgopsError, match='must not be the data directory'):
        drill.Drill(datadir, 'cp /a/%f %p', scratch_dir=datadir)
    with pytest.raises(PgopsError, match='port'):
        drill.Drill(datadir, 'cp /a/%f %p', port=70000)
    with pytest.raises(PgopsError, match='timeout'):
        drill.Drill(datadir, 'cp /a/%f %p', timeout=0)
    with pytest.raises(PgopsError, match='exactly one'):
        drill.Drill(datadir, 'cp /a/%f %p', recovery_target={'lsn': '0/1', 'xid': 5})
    assert sorted(os.listdir(datadir)) == ['PG_VERSION', 'backup_label', 'global', 'pg_wal']


def test_secret_looking_env_values_are_masked():
    made = drill.Drill('/nonexistent', 'cp /a/%f %p', env={'AWS_SECRET_ACCESS_KEY': 'wJalrXUtnFEMI', 'AWS_REGION': 'eu-west-1'},
                       secrets=['hunter22'])
    assert made._redact('key wJalrXUtnFEMI pw hunter22 in eu-west-1') == 'key ******** pw ******** in eu-west-1'  # pylint: disable=protected-access


def test_results_become_json():
    row = [decimal.Decimal('42'), decimal.Decimal('1.5'), decimal.Decimal('0.30000000000000000001'), decimal.Decimal('NaN'),
           datetime.datetime(2025, 1, 29, 10, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
           datetime.datetime(2025, 1, 29, 10, 30), datetime.date(2025, 1, 29), datetime.timedelta(minutes=1, seconds=30),
           b'\x01\xff', memoryview(b'\x02'), uuid.UUID('12345678-1234-5678-1234-567812345678'), None, True, 'text',
           {'a': decimal.Decimal('2')}, float('inf')]
    converted = jsonable(row)
    assert converted == [42, 1.5, '0.30000000000000000001', 'NaN', '2025-01-29T09:30:00Z', '2025-01-29T10:30:00',
                         '2025-01-29', 90.0, '01ff', '02', '12345678-1234-5678-1234-567812345678', None, True, 'text', {'a': 2}, 'inf']
    json.dumps(converted)


def test_free_port_is_a_port_number():
    port = free_port()
    assert 1024 <= port <= 65535
    assert free_port(exclude=[port]) != port


def test_an_explicit_bindir_must_hold_the_programs(tmp_path):
    with pytest.raises(PgopsError, match='lacks the PostgreSQL server programs pg_ctl, postgres'):
        find_bindir(str(tmp_path))
