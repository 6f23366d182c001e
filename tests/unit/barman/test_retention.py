# -*- coding: utf-8 -*-
"""Pure logic of barman_retention: policy parsing, barman's retention statuses, the WAL clean-up steps."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._barman import retention as br
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

NOW = datetime.datetime(2026, 11, 20, 12, 0, tzinfo=datetime.timezone.utc)


def _backup(day, status='DONE', keep=None, tli=1, seg=None):
    seg = seg if seg is not None else day * 2
    begin = '%08X%08X%08X' % (tli, 0, seg)
    return dict(backup_id='202611%02dT020000' % day, status=status, keep=keep, timeline=tli,
                end_time=datetime.datetime(2026, 11, day, 2, 5, tzinfo=datetime.timezone.utc),
                begin_wal=begin, end_wal='%08X%08X%08X' % (tli, 0, seg + 1))


@pytest.mark.parametrize('text, expected', [
    ('REDUNDANCY 3', 'REDUNDANCY 3'),
    ('  redundancy 1 ', 'REDUNDANCY 1'),
    ('RECOVERY WINDOW OF 3 DAYS', 'RECOVERY WINDOW OF 3 DAYS'),
    ('recovery window of 1 week', 'RECOVERY WINDOW OF 1 WEEKS'),
    ('RECOVERY WINDOW OF 2 MONTHS', 'RECOVERY WINDOW OF 2 MONTHS'),
])
def test_policies_barman_accepts(text, expected):
    assert br.parse_policy(text)['text'] == expected


def test_a_month_is_31_days_as_in_barman():
    assert br.parse_policy('RECOVERY WINDOW OF 2 MONTHS')['window'] == datetime.timedelta(days=62)


@pytest.mark.parametrize('text', ['3d', 'KEEP 3', 'RECOVERY WINDOW 3 DAYS', 'REDUNDANCY -1', '', 'RECOVERY WINDOW OF 3 YEARS'])
def test_a_policy_barman_refuses_is_refused_with_the_accepted_forms(text):
    with pytest.raises(PgopsError) as info:
        br.parse_policy(text)
    assert 'REDUNDANCY <n>' in info.value.msg and 'RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS' in info.value.msg


def test_redundancy_keeps_the_newest_and_skips_failed_and_kept_backups():
    backups = [_backup(10), _backup(11, keep='full'), _backup(12, status='FAILED'), _backup(13), _backup(14)]
    report = br.retention_report(backups, br.parse_policy('REDUNDANCY 2'), 1, NOW)
    assert report == {'20261110T020000': 'OBSOLETE', '20261111T020000': 'KEEP:FULL', '20261112T020000': '-',
                      '20261113T020000': 'VALID', '20261114T020000': 'VALID'}


def test_minimum_redundancy_raises_the_redundancy():
    backups = [_backup(d) for d in (10, 11, 12)]
    report = br.retention_report(backups, br.parse_policy('REDUNDANCY 1'), 3, NOW)
    assert set(report.values()) == {'VALID'}


def test_recovery_window_keeps_the_first_backup_before_the_point_of_recoverability():
    # window of 3 days -> point of recoverability 2026-11-17 12:00
    backups = [_backup(d) for d in (12, 14, 16, 18, 19)]
    report = br.retention_report(backups, br.parse_policy('RECOVERY WINDOW OF 3 DAYS'), 1, NOW)
    assert report == {'20261119T020000': 'VALID', '20261118T020000': 'VALID', '20261116T020000': 'VALID',
                      '20261114T020000': 'OBSOLETE', '20261112T020000': 'OBSOLETE'}


def test_recovery_window_keeps_minimum_redundancy_as_potentially_obsolete():
    backups = [_backup(d) for d in (1, 2, 3)]
    report = br.retention_report(backups, br.parse_policy('RECOVERY WINDOW OF 1 DAYS'), 2, NOW)
    assert report == {'20261103T020000': 'VALID', '20261102T020000': 'OBSOLETE*', '20261101T020000': 'OBSOLETE'}


def test_wal_steps_remove_up_to_the_oldest_kept_backup():
    backups = [_backup(10), _backup(12), _backup(14)]
    steps = br.wal_steps(backups, ['20261110T020000', '20261112T020000'])
    assert [s.until for s in steps] == [backups[1]['begin_wal'], backups[2]['begin_wal']]
    last = steps[-1]
    assert last.deletes_wal('000000010000000000000010', 'segment') is True
    assert last.deletes_wal(backups[2]['begin_wal'], 'segment') is False
    assert last.deletes_wal('00000001.history', 'history') is False
    # a .backup file of the kept backup's first segment sorts after it, so it stays
    assert last.deletes_wal(backups[2]['begin_wal'] + '.00000028.backup', 'backup') is False


def test_wal_on_a_timeline_of_another_backup_is_protected():
    backups = [_backup(10), _backup(12), _backup(14, tli=2, seg=30)]
    steps = br.wal_steps(backups, ['20261110T020000'])
    assert steps[0].protected == {2}
    assert steps[0].deletes_wal('000000020000000000000005', 'segment') is False
    assert steps[0].deletes_directory(2, 0) is False


def test_the_deleted_backups_own_timeline_stays_protected_when_the_next_backup_is_on_another_one():
    # barman 3.19 compares a freshly read BackupInfo with the cached one, so the deleted backup's timeline counts
    backups = [_backup(10), _backup(12, tli=2, seg=40)]
    steps = br.wal_steps(backups, ['20261110T020000'])
    assert steps[0].protected == {1}
    assert steps[0].deletes_wal('000000010000000000000030', 'segment') is False
    assert steps[0].deletes_wal('000000020000000000000020', 'segment') is True


def test_no_wal_clean_up_while_an_older_backup_remains():
    backups = [_backup(10, keep='full'), _backup(12), _backup(14)]
    assert br.wal_steps(backups, ['20261112T020000']) == []


def test_standalone_keep_protects_its_own_wal_range():
    backups = [_backup(10, keep='standalone'), _backup(12), _backup(14)]
    steps = br.wal_steps(backups, ['20261112T020000'])
    assert steps[0].ranges == [(backups[0]['begin_wal'], backups[0]['end_wal'])]
    assert steps[0].deletes_wal(backups[0]['begin_wal'], 'segment') is False
    assert steps[0].deletes_wal('000000010000000000000019', 'segment') is True


def test_parse_dry_run_reads_barmans_lists_and_prefixes():
    output = ("Skipping deletion of objects ['b/p/s/base/X/data.tar.gz', 'b/p/s/base/X/backup.info'] due to --dry-run option\n"
              "Skipping deletion of all objects under prefix p/s/wals/0000000100000000/ due to --dry-run option\n"
              "Skipping deletion of objects ['p/s/wals/0000000100000001/000000010000000100000002.gz'] due to --dry-run option\n")
    keys, prefixes = br.parse_dry_run(output, 'b')
    assert keys == {'p/s/base/X/data.tar.gz', 'p/s/base/X/backup.info', 'p/s/wals/0000000100000001/000000010000000100000002.gz'}
    assert prefixes == ['p/s/wals/0000000100000000/']


def test_minimum_redundancy_below_one_is_refused():
    with pytest.raises(PgopsError, match='minimum_redundancy must be at least 1'):
        br.plan(object(), 'REDUNDANCY 1', 0, NOW)
