# -*- coding: utf-8 -*-
"""Unit tests of the pg_amcheck step of the restore drill (module_utils/_drill/amcheck.py): the command line, its
environment, reading its report and progress, the failure message, and the option through the shared drill options
(no server; the reports are what pg_amcheck 15 printed for a table with a damaged heap page)."""

from __future__ import annotations

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._drill import amcheck, options, runner

# pg_amcheck 15 --all --install-missing --parent-check --heapallindexed on a table whose tuple header at block 0,
# offset 61 was overwritten with 0xff bytes.
REPORT = '''btree index "postgres.public.t_pkey":
    ERROR:  failed to find parent tuple for heap-only tuple at (0,61) in table "t"
heap table "postgres.public.t", block 0, offset 61:
    data begins at offset 255 beyond the tuple length 61
heap table "postgres.public.t", block 0, offset 61:
    multixact should not be marked committed
heap table "postgres.public.t", block 0, offset 61:
    tuple data should begin at byte 280, but actually begins at byte 255 (2047 attributes, has nulls)
'''
PROGRESS = ('  0/814 relations (0%),    0/2408 pages (0%)\n'
            'NOTICE:  extension "amcheck" already exists, skipping\n'
            '814/814 relations (100%), 2408/2408 pages (100%)')


def test_the_command_checks_every_database_heap_and_btree_over_the_private_socket():
    cmd = amcheck.amcheck_command('/usr/lib/postgresql/15/bin/pg_amcheck', '/scratch/w/socket', 54321, 'postgres', 'app')
    assert cmd[0] == '/usr/lib/postgresql/15/bin/pg_amcheck'
    assert cmd[cmd.index('--host') + 1] == '/scratch/w/socket' and cmd[cmd.index('--port') + 1] == '54321'
    assert cmd[cmd.index('--username') + 1] == 'postgres' and cmd[cmd.index('--maintenance-db') + 1] == 'app'
    for option in ('--all', '--install-missing', '--parent-check', '--heapallindexed', '--no-password', '--progress'):
        assert option in cmd
    # every corrupt page is reported; the expensive and rarely useful root descent is not asked for
    assert '--on-error-stop' not in cmd and '--rootdescend' not in cmd
    assert not [a for a in cmd if a.startswith('--skip') or a.startswith('--exclude') or a.startswith('--no-dependent')]


def test_the_environment_has_no_libpq_variable_of_the_caller_and_english_messages(monkeypatch):
    monkeypatch.setenv('PGPASSWORD', 'hunter22')
    monkeypatch.setenv('PGHOST', 'production.example')
    monkeypatch.setenv('LANG', 'de_DE.UTF-8')
    env = amcheck.amcheck_environment('15')
    assert 'PGPASSWORD' not in env and 'PGHOST' not in env
    assert env['LC_ALL'] == 'C' and env['PGAPPNAME'] and int(env['PGCONNECT_TIMEOUT']) > 0


def test_the_restored_configuration_cannot_cancel_checks_or_forbid_the_extension():
    options_15 = amcheck.amcheck_environment('15')['PGOPTIONS'].split()
    for setting in ('statement_timeout=0', 'lock_timeout=0', 'idle_in_transaction_session_timeout=0',
                    'default_transaction_read_only=off'):
        assert options_15[options_15.index(setting) - 1] == '-c'
    assert 'transaction_timeout=0' not in options_15  # unknown before 17: the server would refuse the connection
    assert 'transaction_timeout=0' in amcheck.amcheck_environment('17')['PGOPTIONS'].split()


def test_a_failure_is_explained_by_the_error_lines_not_the_query_text():
    stderr = ('pg_amcheck: error: query failed: ERROR:  canceling statement due to statement timeout\n'
              'pg_amcheck: detail: Query was: WITH include_raw (pattern_id, rgx) AS (\n'
              'SELECT NULL, NULL, NULL WHERE false\n'
              '  0/814 relations (0%),    0/2408 pages (0%)\n')
    assert amcheck.explaining_lines(stderr) == ['pg_amcheck: error: query failed: ERROR: canceling statement due to statement timeout']
    assert amcheck.explaining_lines('NOTICE:  x\nsomething else\n') == ['something else']


def test_a_report_names_each_finding_relation_and_block():
    report = amcheck.parse_report(REPORT.splitlines(True), ['postgres', 'template1'])
    assert report['count'] == 4
    assert report['findings'][0] == ('btree index "postgres.public.t_pkey": ERROR: failed to find parent tuple for heap-only '
                                     'tuple at (0,61) in table "t"')
    assert report['findings'][1] == ('heap table "postgres.public.t", block 0, offset 61: data begins at offset 255 beyond '
                                     'the tuple length 61')
    assert report['relations'] == [
        dict(kind='btree index', database='postgres', relation='public.t_pkey', blocks=[]),
        dict(kind='heap table', database='postgres', relation='public.t', blocks=[0]),
    ]


def test_a_healthy_report_is_empty():
    assert amcheck.parse_report([], ['postgres']) == dict(findings=[], count=0, relations=[])


def test_a_multi_line_btree_error_is_one_finding():
    text = ('btree index "app.public.orders_pkey":\n'
            '    ERROR:  index "orders_pkey" lacks a main relation fork\n'
            '    DETAIL:  Relation is missing its main fork.\n'
            'heap table "app.public.orders":\n'
            '    ERROR:  invalid page in block 7 of relation base/16384/16385\n')
    report = amcheck.parse_report(text.splitlines(), ['app'])
    assert report['findings'] == [
        'btree index "app.public.orders_pkey": ERROR: index "orders_pkey" lacks a main relation fork DETAIL: Relation is '
        'missing its main fork.',
        'heap table "app.public.orders": ERROR: invalid page in block 7 of relation base/16384/16385',
    ]
    assert [r['relation'] for r in report['relations']] == ['public.orders_pkey', 'public.orders']


def test_database_names_with_dots_are_split_on_the_longest_known_name():
    text = 'heap table "my.db.sales.orders", block 3, offset 2, attribute 4:\n    toast value 1 not found in toast table\n'
    report = amcheck.parse_report(text.splitlines(), ['my', 'my.db'])
    assert report['relations'] == [dict(kind='heap table', database='my.db', relation='sales.orders', blocks=[3])]
    unknown = amcheck.parse_report(text.splitlines(), [])
    assert unknown['relations'][0]['database'] is None and unknown['relations'][0]['relation'] == 'my.db.sales.orders'


def test_findings_and_relations_are_capped_but_all_counted():
    lines = []
    for number in range(amcheck.MAX_FINDINGS + 50):
        lines += ['heap table "app.public.big", block %d, offset 1:' % number, '    line pointer to page offset 9999 is out of range']
    report = amcheck.parse_report(lines, ['app'])
    assert report['count'] == amcheck.MAX_FINDINGS + 50
    assert len(report['findings']) == amcheck.MAX_FINDINGS
    assert len(report['relations']) == 1 and report['relations'][0]['blocks'] == list(range(amcheck.MAX_BLOCKS))


def test_text_outside_the_format_is_kept_as_a_finding():
    report = amcheck.parse_report(['something   unexpected', ''], ['app'])
    assert report == dict(findings=['something unexpected'], count=1, relations=[])


def test_progress_gives_the_relations_and_pages_checked():
    assert amcheck.parse_progress(PROGRESS) == (814, 2408)
    assert amcheck.parse_progress('pg_amcheck: error: connection to server failed') == (None, None)
    assert amcheck.parse_progress('') == (None, None)


def test_the_failure_message_names_database_relation_and_block():
    report = amcheck.parse_report(REPORT.splitlines(), ['postgres'])
    msg = amcheck.corruption_message(report)
    assert msg.startswith('pg_amcheck found corruption in database postgres: 2 relations: ')
    assert 'btree index postgres.public.t_pkey' in msg and 'heap table postgres.public.t (block 0)' in msg
    assert '4 findings' in msg and 'data begins at offset 255' in msg
    assert msg.count(' | ') == 3  # the four findings, all quoted (at most MESSAGE_FINDINGS)


def test_the_option_is_off_by_default_and_reaches_the_runner(monkeypatch):
    spec = options.drill_argument_spec()
    assert spec['amcheck'] == dict(type='bool', default=False)
    seen = {}
    monkeypatch.setattr(options, 'run_drill', lambda datadir, restore_command, **kwargs: seen.update(kwargs) or {})
    params = dict((name, value.get('default')) for name, value in spec.items())
    params.update(timeout=60, amcheck=True)
    options.drill_with_options('/scratch/data', 'cp /a/%f %p', params, '/scratch', {}, 1.0, [])
    assert seen['amcheck'] is True and seen['timeout'] == 60


def test_amcheck_before_postgresql_14_fails_before_anything_starts(tmp_path):
    datadir = tmp_path / 'data'
    (datadir / 'global').mkdir(parents=True)
    (datadir / 'pg_wal').mkdir()
    (datadir / 'PG_VERSION').write_text('13\n')
    (datadir / 'global' / 'pg_control').write_bytes(b'\0' * 8192)
    (datadir / 'backup_label').write_text('START WAL LOCATION: 0/4000028 (file 000000010000000000000004)\n'
                                          'CHECKPOINT LOCATION: 0/4000060\nSTART TIMELINE: 1\n')
    with pytest.raises(PgopsError) as caught:
        runner.run_drill(str(datadir), 'cp /a/%f %p', amcheck=True, timeout=5)
    error = caught.value
    assert error.details['phase'] == 'prepare' and error.details['verdict'] == 'failed'
    assert 'pg_amcheck' in error.msg and 'PostgreSQL 13' in error.msg and 'amcheck=false' in error.msg
    assert error.details['amcheck'] is None and error.details['seconds']['amcheck'] is None
    assert sorted(p.name for p in datadir.iterdir()) == ['PG_VERSION', 'backup_label', 'global', 'pg_wal']
