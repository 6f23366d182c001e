# -*- coding: utf-8 -*-
"""wal-verify's JSON, re-judged by what the backups and the recovery window need: a gap retention made between two
kept weekly backups is no failure, a lost segment a backup or the window needs is."""

from __future__ import annotations

import datetime
import json

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.verify import (
    judge_integrity, needed_from, parse_verify_output)
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import SEGMENT_SIZE, segment_name

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def _backup(segment, days_ago):
    start = segment * SEGMENT_SIZE + 0x28
    finish = NOW - datetime.timedelta(days=days_ago)
    return dict(name='base_%s' % segment_name(1, segment), timeline=1, start_lsn='%X/%X' % (start >> 32, start & 0xFFFFFFFF),
                finish_lsn='%X/%X' % (start >> 32, (start + 0x100) & 0xFFFFFFFF),
                start_time=finish.isoformat().replace('+00:00', 'Z'), finish_time=finish.isoformat().replace('+00:00', 'Z'))


def _run(first, last, status):
    return dict(timeline_id=1, start_segment=segment_name(1, first), end_segment=segment_name(1, last),
                segments_count=last - first + 1, status=status)


# A weekly backup at segment 10 (20 days ago), the window's base at 40 (8 days ago), the newest at 60.
BACKUPS = [_backup(10, 20), _backup(40, 8), _backup(60, 0)]


def test_a_gap_between_kept_backups_before_the_window_is_not_a_failure():
    needed = needed_from(BACKUPS, 7, NOW)
    result = dict(status='FAILURE', details=[_run(10, 10, 'FOUND'), _run(11, 39, 'MISSING_LOST'), _run(40, 70, 'FOUND')])
    judged = judge_integrity(result, needed)
    assert judged['status'] == 'OK' and judged['walg_status'] == 'FAILURE' and judged['lost'] == []
    assert [r['needed'] for r in judged['details']] == [False, False, False]


def test_a_lost_segment_inside_a_backups_range_or_the_window_fails():
    needed = needed_from(BACKUPS, 7, NOW)
    inside_backup = judge_integrity(dict(status='FAILURE', details=[_run(9, 10, 'MISSING_LOST'), _run(11, 70, 'FOUND')]), needed)
    assert inside_backup['status'] == 'FAILURE' and len(inside_backup['lost']) == 1
    in_window = judge_integrity(dict(status='FAILURE', details=[_run(45, 45, 'MISSING_LOST')]), needed)
    assert in_window['status'] == 'FAILURE' and in_window['lost'][0]['start_segment'] == segment_name(1, 45)


def test_segments_maybe_still_in_flight_warn_only_when_needed():
    needed = needed_from(BACKUPS, 7, NOW)
    assert judge_integrity(dict(status='WARNING', details=[_run(69, 70, 'MISSING_UPLOADING')]), needed)['status'] == 'WARNING'
    assert judge_integrity(dict(status='WARNING', details=[_run(20, 21, 'MISSING_DELAYED')]), needed)['status'] == 'OK'


def test_without_a_window_everything_from_the_earliest_backup_is_needed():
    needed = needed_from(BACKUPS, None, NOW)
    assert judge_integrity(dict(status='FAILURE', details=[_run(11, 39, 'MISSING_LOST')]), needed)['status'] == 'FAILURE'
    assert judge_integrity(dict(status='FAILURE', details=[_run(3, 5, 'MISSING_LOST')]), needed)['status'] == 'OK'
    nothing = needed_from([], 7, NOW)
    assert judge_integrity(dict(status='WARNING', details=[]), nothing)['status'] == 'WARNING'


def test_a_window_of_zero_days_needs_wal_from_the_newest_backup_as_retention_keeps_it():
    needed = needed_from(BACKUPS, 0, NOW + datetime.timedelta(minutes=1))
    assert judge_integrity(dict(status='FAILURE', details=[_run(41, 59, 'MISSING_LOST')]), needed)['status'] == 'OK'
    assert judge_integrity(dict(status='FAILURE', details=[_run(61, 62, 'MISSING_LOST')]), needed)['status'] == 'FAILURE'


def test_a_lost_segment_of_a_newer_timeline_below_the_base_fails():
    """A restore to an older point forked timeline 2 below the window base's start; its WAL is the present history."""
    newer = dict(_backup(50, 1), timeline=2, name='base_%s' % segment_name(2, 50))
    needed = needed_from(BACKUPS + [newer], 7, NOW)
    run = dict(_run(20, 21, 'MISSING_LOST'), timeline_id=2, start_segment=segment_name(2, 20), end_segment=segment_name(2, 21))
    assert judge_integrity(dict(status='FAILURE', details=[run]), needed)['status'] == 'FAILURE'


def test_wal_verify_output_is_read_or_refused():
    text = json.dumps(dict(integrity=dict(status='OK', details=[]),
                           timeline=dict(status='OK', details=dict(current_timeline_id=1, highest_storage_timeline_id=1))))
    assert parse_verify_output(text)['timeline']['details']['current_timeline_id'] == 1
    with pytest.raises(PgopsError, match='not JSON'):
        parse_verify_output('ERROR: connection refused')
    with pytest.raises(PgopsError, match='not a status per check'):
        parse_verify_output('[1, 2]')
    with pytest.raises(PgopsError, match='not WAL file names'):
        judge_integrity(dict(status='OK', details=[dict(start_segment='x', end_segment='y', status='FOUND')]), lambda t, n: True)
