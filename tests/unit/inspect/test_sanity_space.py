# -*- coding: utf-8 -*-
"""Unit tests of the pure logic behind pg_sanity_info and pg_space_info: row estimates, fingerprint comparison,
threshold validation, the space verdict, statvfs arithmetic, pg_size_pretty, directory walks (no server)."""

from __future__ import annotations

import collections
import os
import sys

import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._inspect import space
from ansible_collections.pgops.resilience.plugins.module_utils._inspect import sanity
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import compare_fingerprints
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.modules import pg_sanity_info, pg_space_info

GIB = 1024 ** 3


# -- row estimates ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize('reltuples, relpages, current_pages, live, expected', [
    (1000.0, 10, 10, 5, (1000, 'reltuples')),        # analyzed, unchanged size: the recorded count
    (1000.0, 10, 20, 5, (2000, 'reltuples')),        # grew to twice the pages since: the density scaled, as the planner does
    (1000.0, 10, 0, 5, (0, 'reltuples')),            # truncated since
    (0.0, 0, 0, 7, (0, 'reltuples')),                # vacuumed while empty and still empty
    (0.0, 0, 3, 7, (7, 'n_live_tup')),               # vacuumed empty, filled since: no density to scale
    (-1.0, 0, 3, 42, (42, 'n_live_tup')),            # never vacuumed or analyzed (PostgreSQL 14+)
    (-1.0, 0, 3, None, (None, None)),                # and no statistics either
    (333.0, 3, 4, None, (444, 'reltuples')),
])
def test_estimate_rows(reltuples, relpages, current_pages, live, expected):
    assert sanity.estimate_rows(reltuples, relpages, current_pages, live) == expected


# -- fingerprints ----------------------------------------------------------------------------------------------

def _fp(rows, checksum='1', kind='table'):
    return dict(schema='s', name='t', kind=kind, rows=rows, checksum=checksum)


def test_compare_identical_fingerprints():
    source = {'app.a': _fp(3, '10'), 'app.b': _fp(0, '0')}
    assert compare_fingerprints(source, dict(source)) == {'identical': True, 'differences': []}
    assert compare_fingerprints({}, {}) == {'identical': True, 'differences': []}


def test_compare_reports_each_problem_sorted_by_table():
    source = {'app.same': _fp(5, '7'), 'app.gone': _fp(2, '3'), 'app.fewer': _fp(10, '100'), 'app.changed': _fp(4, '40')}
    restored = {'app.same': _fp(5, '7'), 'app.fewer': _fp(9, '90'), 'app.changed': _fp(4, '41'), 'app.new': _fp(1, '-5')}
    result = compare_fingerprints(source, restored)
    assert result['identical'] is False
    assert [(d['table'], d['problem']) for d in result['differences']] == [
        ('app.changed', 'checksum'), ('app.fewer', 'rows'), ('app.gone', 'missing'), ('app.new', 'extra')]
    by_table = dict((d['table'], d) for d in result['differences'])
    assert by_table['app.gone'] == dict(table='app.gone', problem='missing', source_rows=2, restored_rows=None,
                                        source_checksum='3', restored_checksum=None)
    assert by_table['app.new'] == dict(table='app.new', problem='extra', source_rows=None, restored_rows=1,
                                       source_checksum=None, restored_checksum='-5')
    assert by_table['app.fewer']['source_rows'] == 10 and by_table['app.fewer']['restored_rows'] == 9
    assert by_table['app.changed']['source_checksum'] == '40' and by_table['app.changed']['restored_checksum'] == '41'


def test_compare_without_checksums_compares_rows_only():
    with_sums = {'app.t': _fp(4, '40')}
    without = {'app.t': _fp(4, None)}
    assert compare_fingerprints(with_sums, without)['identical'] is True
    assert compare_fingerprints(without, {'app.t': _fp(5, None)})['differences'][0]['problem'] == 'rows'


# -- thresholds and verdict ------------------------------------------------------------------------------------

def test_validate_thresholds_defaults_and_equal_values():
    assert space.validate_thresholds() == dict(warning_free_percent=20.0, critical_free_percent=10.0,
                                               warning_free_bytes=None, critical_free_bytes=None)
    assert space.validate_thresholds(100, 100)['critical_free_percent'] == 100.0
    assert space.validate_thresholds(0, 0, 0, 0)['critical_free_bytes'] == 0


@pytest.mark.parametrize('args, option', [
    ((10, 20), 'critical_free_percent (20) must not be above warning_free_percent (10)'),
    ((101, 10), 'warning_free_percent must be a percentage from 0 to 100'),
    ((20, -1), 'critical_free_percent must be a percentage from 0 to 100'),
    ((20, None), 'critical_free_percent must be a percentage'),
    ((20, 10, -5, None), 'warning_free_bytes must be a number of bytes'),
    ((20, 10, None, -1), 'critical_free_bytes must be a number of bytes'),
    ((20, 10, 100, 200), 'critical_free_bytes (200) must not be above warning_free_bytes (100)'),
])
def test_validate_thresholds_rejects(args, option):
    with pytest.raises(PgopsError) as err:
        space.validate_thresholds(*args)
    assert option in err.value.msg


def _fs(option, percent, total=100 * GIB):
    available = int(total * percent / 100)
    return dict(option=option, path='/' + option, total_bytes=total, available_bytes=available, free_percent=percent)


def test_judge_levels():
    thresholds = space.validate_thresholds(20, 10)
    assert space.judge([_fs('data_directory', 50.0)], thresholds) == ('ok', [])
    verdict, reasons = space.judge([_fs('data_directory', 15.0)], thresholds)
    assert verdict == 'warning'
    assert reasons == ['data_directory /data_directory: 15.00% free (15 GB of 100 GB available), warning below 20%']
    verdict, reasons = space.judge([_fs('data_directory', 9.99)], thresholds)
    assert verdict == 'critical' and reasons[0].endswith('critical below 10%')
    # At the threshold exactly is not below it.
    assert space.judge([_fs('data_directory', 10.0)], thresholds)[0] == 'warning'
    assert space.judge([_fs('data_directory', 20.0)], thresholds)[0] == 'ok'


def test_judge_worst_wins_and_critical_reasons_come_first():
    thresholds = space.validate_thresholds(20, 10)
    verdict, reasons = space.judge([_fs('data_directory', 15.0), _fs('pg_wal', 60.0), _fs('wal_archive_directory', 5.0)], thresholds)
    assert verdict == 'critical'
    assert [r.split(' ')[0] for r in reasons] == ['wal_archive_directory', 'data_directory']


def test_judge_byte_thresholds_and_unknown_sizes():
    thresholds = space.validate_thresholds(20, 10, warning_free_bytes=80 * GIB, critical_free_bytes=40 * GIB)
    verdict, reasons = space.judge([_fs('data_directory', 50.0)], thresholds)  # 50 GiB available
    assert verdict == 'warning' and reasons[0].endswith('warning below 80 GB')
    verdict, reasons = space.judge([_fs('data_directory', 5.0)], thresholds)
    assert verdict == 'critical' and reasons[0].endswith('critical below 10% and critical below 40 GB')
    only_critical_bytes = space.validate_thresholds(0, 0, critical_free_bytes=GIB)
    assert space.judge([_fs('data_directory', 5.0)], only_critical_bytes)[0] == 'ok'  # 5 GiB available
    assert space.judge([_fs('data_directory', 0.5)], only_critical_bytes)[0] == 'critical'
    assert space.judge([dict(option='x', path='/x', total_bytes=0, available_bytes=0, free_percent=None)], thresholds) == ('ok', [])


# -- file systems ----------------------------------------------------------------------------------------------

StatVfs = collections.namedtuple('StatVfs', 'f_frsize f_blocks f_bfree f_bavail')


def test_usage_from_statvfs():
    usage = space.usage_from_statvfs(StatVfs(f_frsize=4096, f_blocks=1000, f_bfree=300, f_bavail=250))
    assert usage == dict(total_bytes=4096000, used_bytes=2867200, free_bytes=1228800, available_bytes=1024000, free_percent=25.0)
    assert space.usage_from_statvfs(StatVfs(4096, 3, 1, 1))['free_percent'] == 33.33
    assert space.usage_from_statvfs(StatVfs(4096, 0, 0, 0))['free_percent'] is None


@pytest.mark.parametrize('size, text', [
    (0, '0 bytes'), (10239, '10239 bytes'), (10240, '10 kB'), (10751, '10 kB'), (10752, '11 kB'),
    (10485247, '10239 kB'), (10485248, '10 MB'), (20 * 1024 * 1024 - 1, '20 MB'), (-10240, '-10 kB'), (-10239, '-10239 bytes'), (30 * 1024 ** 5, '30 PB'),
    (100 * GIB, '100 GB'), (1024 ** 6, '1024 PB'), (None, None),
])
def test_size_pretty_matches_pg_size_pretty(size, text):
    assert space.size_pretty(size) == text


def test_directory_size_counts_regular_files_without_following_links(tmp_path):
    (tmp_path / 'a').write_bytes(b'x' * 100)
    (tmp_path / 'sub' / 'deeper').mkdir(parents=True)
    (tmp_path / 'sub' / 'b').write_bytes(b'y' * 30)
    (tmp_path / 'sub' / 'deeper' / 'c').write_bytes(b'')
    outside = tmp_path.parent / ('%s-outside' % tmp_path.name)
    outside.mkdir()
    (outside / 'big').write_bytes(b'z' * 5000)
    os.symlink(str(outside), str(tmp_path / 'link-to-dir'))
    os.symlink(str(outside / 'big'), str(tmp_path / 'link-to-file'))
    assert space.directory_size(str(tmp_path), 'wal_archive_directory') == (130, 3)


def test_filesystem_errors_name_the_option(tmp_path):
    with pytest.raises(PgopsError) as err:
        space.filesystem(str(tmp_path / 'missing'), 'wal_archive_directory')
    assert err.value.msg.startswith('wal_archive_directory %s does not exist' % (tmp_path / 'missing'))
    (tmp_path / 'file').write_text('x')
    with pytest.raises(PgopsError) as err:
        space.filesystem(str(tmp_path / 'file'), 'data_directory')
    assert err.value.msg == 'data_directory %s is not a directory.' % (tmp_path / 'file')


def test_filesystem_of_a_directory(tmp_path):
    entry = space.filesystem(str(tmp_path), 'wal_archive_directory')
    stat = os.statvfs(str(tmp_path))
    assert entry['option'] == 'wal_archive_directory' and entry['path'] == str(tmp_path)
    assert entry['total_bytes'] == stat.f_blocks * stat.f_frsize
    assert entry['used_bytes'] + entry['free_bytes'] == entry['total_bytes']
    assert entry['device'] == os.stat(str(tmp_path)).st_dev
    assert os.path.ismount(entry['mount_point']) and str(tmp_path).startswith(entry['mount_point'])
    assert space.mount_point('/') == '/'


def test_verify_data_directory(tmp_path):
    (tmp_path / 'global').mkdir()
    (tmp_path / 'global' / 'pg_control').write_bytes((7439284711232452633).to_bytes(8, sys.byteorder) + b'\0' * 100)
    assert space.verify_data_directory(str(tmp_path), '7439284711232452633') is True
    assert space.verify_data_directory(str(tmp_path), None) is None
    assert space.verify_data_directory(str(tmp_path / 'nothing-here'), '1') is None
    with pytest.raises(PgopsError) as err:
        space.verify_data_directory(str(tmp_path), '42')
    assert 'belongs to another PostgreSQL cluster (system identifier 7439284711232452633' in err.value.msg


# -- the modules' documentation matches their argument specs ---------------------------------------------------

@pytest.mark.parametrize('module, spec', [(pg_sanity_info, sanity.argument_spec()), (pg_space_info, space.argument_spec())])
def test_documented_options_match_the_argument_spec(module, spec):
    options = yaml.safe_load(module.DOCUMENTATION)['options']
    assert sorted(options) == sorted(spec)
    for name, option in spec.items():
        assert options[name]['type'] == option['type'], name
        assert options[name].get('default') == option.get('default'), name
        assert options[name].get('elements') == option.get('elements'), name
    returned = yaml.safe_load(module.RETURN)
    assert 'changed' not in returned and all(value['returned'] == 'always' for value in returned.values())
