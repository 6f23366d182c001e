# -*- coding: utf-8 -*-
"""The wal-g retention plan on synthetic backup lists: day and week boundaries in UTC, the recovery window and its
base, permanent and newest backups, delta chains, a timeline switch after a promotion, fewer backups than asked, and
the WAL kept or deleted around them."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.retention import plan, window_base
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import (
    SEGMENT_SIZE, backup_segments, segment_name, segment_of, segment_ranges)

UTC = datetime.timezone.utc
# A Tuesday, 10:00 UTC; its ISO week is 2026-W50.
NOW = datetime.datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


def _lsn(number):
    return '%X/%X' % (number >> 32, number & 0xFFFFFFFF)


def backup(finished, segment, timeline=1, permanent=False, origin=None, minutes=5):
    """A backup that finished at ``finished`` (datetime) and spans the one WAL segment ``segment``."""
    start = segment * SEGMENT_SIZE + 0x28
    name = 'base_%s' % segment_name(timeline, segment) + ('_D_%s' % segment_name(timeline, segment - 1) if origin else '')
    return dict(name=name, start_time=(finished - datetime.timedelta(minutes=minutes)).isoformat().replace('+00:00', 'Z'),
                finish_time=finished.isoformat().replace('+00:00', 'Z'), start_lsn=_lsn(start), finish_lsn=_lsn(start + 0x100),
                timeline=timeline, is_permanent=permanent, delta_origin=origin)


def at(day, hour=1):
    return datetime.datetime(2026, 12, day, hour, 0, tzinfo=UTC)


def wal(timeline, first, last, size=100):
    return [dict(name='wal_005/%s.br' % segment_name(timeline, n), size=size) for n in range(first, last + 1)]


def kept(result):
    return dict((k['name'], k['reasons']) for k in result['keep'])


def test_daily_keeps_the_newest_of_each_utc_day_and_the_window_keeps_everything_in_it():
    # Two backups a day from Nov 20 to Dec 8: 01:00 and 23:30 UTC.
    backups, segment = [], 10
    for day in range(20, 31):
        for hour in (1, 23):
            backups.append(backup(datetime.datetime(2026, 11, day, hour, 30, tzinfo=UTC), segment))
            segment += 2
    for day in range(1, 9):
        for hour in (1, 23):
            if (day, hour) != (8, 23):
                backups.append(backup(datetime.datetime(2026, 12, day, hour, 30, tzinfo=UTC), segment))
                segment += 2
    result = plan(backups, [], NOW, keep_daily=3, keep_weekly=0, recovery_window_days=1)
    names = kept(result)
    by_time = dict((b['finish_time'], b['name']) for b in backups)
    assert 'daily 2026-12-08' in names[by_time['2026-12-08T01:30:00Z']]
    assert 'daily 2026-12-07' in names[by_time['2026-12-07T23:30:00Z']]
    assert 'daily 2026-12-06' in names[by_time['2026-12-06T23:30:00Z']]
    # The window (Dec 7 10:00 on) holds the two last ones; its base finished at 01:30 on Dec 7.
    assert names[by_time['2026-12-07T01:30:00Z']] == ['base of the recovery window']
    assert result['window_base'] == by_time['2026-12-07T01:30:00Z']
    assert len(result['keep']) == 4
    assert len(result['delete']) == len(backups) - 4
    assert set(result['delete']).isdisjoint(names)


def test_weekly_follows_iso_weeks_and_counts_the_current_week():
    # One backup each day at 02:00 from Nov 1 (a Sunday, ISO week 44) to Dec 8.
    backups = [backup(datetime.datetime(2026, 11, 1, 2, tzinfo=UTC) + datetime.timedelta(days=d), 10 + d) for d in range(38)]
    result = plan(backups, [], NOW, keep_daily=0, keep_weekly=4, recovery_window_days=0)
    weekly = dict((r, n) for n, reasons in kept(result).items() for r in reasons if r.startswith('weekly'))
    # The newest of each ISO week: Sundays close weeks 47, 48, 49; this week (50) has Dec 8.
    assert weekly == {'weekly 2026-W50': backups[-1]['name'], 'weekly 2026-W49': backups[35]['name'],
                      'weekly 2026-W48': backups[28]['name'], 'weekly 2026-W47': backups[21]['name']}
    assert backups[35]['finish_time'] == '2026-12-06T02:00:00Z'
    assert len(result['keep']) == 4 and len(result['delete']) == 34


def test_permanent_and_newest_are_always_kept_and_a_policy_of_zeros_is_refused():
    backups = [backup(at(1), 10, permanent=True), backup(at(2), 12), backup(at(3), 14)]
    result = plan(backups, [], NOW, keep_daily=1, keep_weekly=0, recovery_window_days=0)
    assert kept(result) == {backups[0]['name']: ['permanent'], backups[2]['name']: ['newest']}
    assert result['delete'] == [backups[1]['name']]
    with pytest.raises(PgopsError, match='all 0'):
        plan(backups, [], NOW, keep_daily=0, keep_weekly=0, recovery_window_days=0)
    with pytest.raises(PgopsError, match='keep_daily must be 0 or more'):
        plan(backups, [], NOW, keep_daily=-1)


def test_a_kept_delta_keeps_its_whole_chain_and_a_broken_chain_deletes_nothing():
    full = backup(at(1), 10)
    delta1 = backup(at(2), 12, origin=full['name'])
    delta2 = backup(at(3), 14, origin=delta1['name'])
    old = backup(datetime.datetime(2026, 11, 1, tzinfo=UTC), 4)
    result = plan([old, full, delta1, delta2], [], NOW, keep_daily=1, keep_weekly=0, recovery_window_days=0)
    names = kept(result)
    assert names[delta2['name']] == ['newest']
    assert names[delta1['name']] == ['delta chain of %s' % delta2['name']]
    assert names[full['name']] == ['delta chain of %s' % delta2['name']]
    assert result['delete'] == [old['name']]
    with pytest.raises(PgopsError, match='chain is broken.*Nothing was deleted'):
        plan([delta1, delta2], [], NOW)


def test_fewer_backups_than_asked_keeps_them_all_and_an_empty_storage_deletes_nothing():
    backups = [backup(at(6), 10), backup(at(7), 12)]
    result = plan(backups, wal(1, 5, 14), NOW)
    assert result['delete'] == []
    # Only the WAL older than the oldest backup goes: no backup can use it.
    assert result['wal_delete_objects'] == ['wal_005/%s.br' % segment_name(1, n) for n in range(5, 10)]
    empty = plan([], wal(1, 1, 9), NOW)
    assert empty['keep'] == [] and empty['delete'] == [] and empty['wal_delete_objects'] == []
    assert empty['window_base'] is None


def test_wal_is_kept_from_the_window_base_on_and_only_each_kept_backups_range_before_it():
    weekly_old = backup(at(1, 2), 20)     # Tue Dec 1, ISO week 49
    daily = backup(at(2, 2), 30)          # Wed Dec 2, week 49
    weekly_newer = backup(at(6, 2), 40)   # Sun Dec 6: the newest of week 49
    base = backup(at(7, 2), 50)           # Mon Dec 7 02:00: the newest finished before the window (Dec 7 10:00)
    inside = backup(at(8, 2), 60)         # Tue Dec 8, week 50
    backups = [weekly_old, daily, weekly_newer, base, inside]
    objects = wal(1, 15, 70)
    result = plan(backups, objects, NOW, keep_daily=0, keep_weekly=1, recovery_window_days=1)
    assert kept(result) == {base['name']: ['base of the recovery window'],
                            inside['name']: ['weekly 2026-W50', 'recovery window', 'newest']}
    assert result['delete'] == [weekly_old['name'], daily['name'], weekly_newer['name']]
    assert set(segment_of(n)[1] for n in result['wal_delete_objects']) == set(range(15, 50))
    assert result['wal_keep_from'] == segment_name(1, 50)
    assert result['wal_delete'] == [dict(timeline=1, first=segment_name(1, 15), last=segment_name(1, 49), segments=35, bytes=3500)]
    assert result['wal_bytes'] == 3500
    # Two weeks: week 49's newest stays with only the WAL it needs to become consistent; the WAL around it goes.
    result = plan(backups, objects, NOW, keep_daily=0, keep_weekly=2, recovery_window_days=1)
    assert kept(result)[weekly_newer['name']] == ['weekly 2026-W49']
    assert len(result['keep']) == 3
    first, last = backup_segments(weekly_newer)[1:]
    assert (first, last) == (40, 40)
    deleted = set(segment_of(n)[1] for n in result['wal_delete_objects'])
    assert deleted == set(range(15, 50)) - {40}
    assert [(r['first'], r['last']) for r in result['wal_delete']] == [
        (segment_name(1, 15), segment_name(1, 39)), (segment_name(1, 41), segment_name(1, 49))]


def test_timeline_switch_after_promotion_orders_by_time_not_name_and_keeps_history_files():
    # Timeline 1 ran to segment 90; a restore from an old backup was promoted to timeline 2 at segment 30.
    old_tl1 = backup(at(1), 80, timeline=1)
    newer_tl2 = backup(at(7, 2), 35, timeline=2)  # smaller segment, later time
    newest_tl2 = backup(at(8, 2), 38, timeline=2)
    objects = wal(1, 75, 90) + wal(2, 30, 40) + [dict(name='wal_005/00000002.history.br', size=10)]
    result = plan([old_tl1, newer_tl2, newest_tl2], objects, NOW, keep_daily=0, keep_weekly=0, recovery_window_days=1)
    assert result['window_base'] == newer_tl2['name']
    assert result['delete'] == [old_tl1['name']]
    deleted = result['wal_delete_objects']
    assert 'wal_005/00000002.history.br' not in deleted
    # Everything at or past the base's first segment stays, on both timelines (timeline 1's 75..90 included).
    assert all(segment_of(n)[1] < backup_segments(newer_tl2)[1] for n in deleted)
    assert [r['timeline'] for r in result['wal_delete']] == [2]


def test_window_base_is_the_oldest_backup_when_none_finished_before_the_window():
    backups = [backup(at(8, 3), 10), backup(at(8, 5), 12)]
    assert window_base(backups, NOW - datetime.timedelta(days=7))['name'] == backups[0]['name']
    assert window_base([], NOW) is None


def test_segment_ranges_merge_a_segment_and_its_backup_history_file():
    objects = wal(1, 1, 3) + [dict(name='wal_005/000000010000000000000002.00000028.backup.br', size=5)] + wal(1, 7, 7)
    assert segment_ranges(objects) == [
        dict(timeline=1, first=segment_name(1, 1), last=segment_name(1, 3), segments=3, bytes=305),
        dict(timeline=1, first=segment_name(1, 7), last=segment_name(1, 7), segments=1, bytes=100)]
    assert segment_name(1, 256) == '000000010000000100000000'
    assert segment_of('wal_005/000000010000000100000000.lz4') == (1, 256)


def test_a_restore_that_forked_below_the_window_base_keeps_its_new_timelines_wal():
    """Timeline 1: A (Nov 20, segment 0x40) and B (Nov 30, 0x100, the window's base). On Dec 3 A is restored and
    promoted: timeline 2 forks at 0x41 and archives into the same storage; C (Dec 5, 0x60) and D (Dec 8, 0x80)
    follow. Timeline 2's WAL is numbered below B's start, yet LATEST rolls forward through it: all of it stays."""
    a = backup(datetime.datetime(2026, 11, 20, 2, tzinfo=UTC), 0x40)
    b = backup(datetime.datetime(2026, 11, 30, 2, tzinfo=UTC), 0x100)
    c = backup(datetime.datetime(2026, 12, 5, 2, tzinfo=UTC), 0x60, timeline=2)
    d = backup(datetime.datetime(2026, 12, 8, 2, tzinfo=UTC), 0x80, timeline=2)
    objects = wal(1, 0x40, 0x110) + wal(2, 0x41, 0x90) + [dict(name='wal_005/00000002.history.br', size=10)]
    result = plan([a, b, c, d], objects, NOW, keep_daily=1, keep_weekly=0, recovery_window_days=7)
    assert result['window_base'] == b['name']
    deleted = set(segment_of(n) for n in result['wal_delete_objects'])
    assert not [where for where in deleted if where[0] == 2]
    assert 'wal_005/00000002.history.br' not in result['wal_delete_objects']
    # Timeline 1 below B's start goes, but for the backups' own ranges (A was not kept: it is deleted).
    assert result['delete'] == [a['name']]
    assert deleted == set((1, n) for n in range(0x40, 0x100))
