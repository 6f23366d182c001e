# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The retention plan of a wal-g storage, computed from its backup list and WAL objects; no storage access here.

The policy is the runbook's (``walg-single-node.md``, "Retention": keep 7 daily and 4 weekly backups, WAL for at
least a 7-day PITR), made exact. In UTC:

* the newest backup finished on each of the last ``keep_daily`` calendar days, and in each of the last
  ``keep_weekly`` ISO weeks (today and the current week count);
* every backup finished inside the recovery window (the last ``recovery_window_days`` days), and the newest one that
  finished before it: the base a recovery to the window's first moment starts from;
* always the newest backup and every permanent one (``wal-g backup-mark``);
* a kept delta backup keeps its whole chain: the backups it was taken against, back to its full backup.

WAL: every segment from the window base's start onward (any timeline), every segment of a timeline newer than the
base's (a restore that forked below the base went on there), and older segments only where a kept backup needs them
to become consistent (its start to finish LSN): :class:`~.wal.WalNeeds`; timeline history files always. wal-g's
``delete retain`` counts backups and cannot keep a calendar, nor delete WAL between kept weekly backups; hence this
plan, applied with wal-g's own commands (:mod:`~.prune`).

Backups are ordered by their times, never by name or LSN: after a promotion or a restore, a newer backup can have a
smaller name or LSN.
"""

from __future__ import annotations

import datetime

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import moment
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import (
    WalNeeds, backup_segments, segment_name, segment_of, segment_ranges)


def validate_policy(keep_daily, keep_weekly, recovery_window_days):
    """Refuse a policy that keeps nothing useful.

    :raises PgopsError: for a negative count, or a policy of all zeros (the newest backup alone, no window).
    """
    for name, value in (('keep_daily', keep_daily), ('keep_weekly', keep_weekly),
                        ('recovery_window_days', recovery_window_days)):
        if value is None or value < 0:
            raise PgopsError('%s must be 0 or more, not %r.' % (name, value))
    if not (keep_daily or keep_weekly or recovery_window_days):
        raise PgopsError('keep_daily, keep_weekly and recovery_window_days are all 0: that keeps only the newest '
                         'backup and no point-in-time recovery; give at least one of them.')


def _finished(backup):
    return moment(backup['finish_time'])


def _newest(backups):
    return max(backups, key=lambda b: (_finished(b), moment(b['start_time']))) if backups else None


def window_base(backups, window_start):
    """The backup a recovery to ``window_start`` starts from: the newest that finished before it; when none did,
    the oldest backup (the window then reaches back only to it). None for no backups.

    :param backups: list of backup dicts (``walg_backup_info``'s ``backups``).
    :param window_start: aware ``datetime``.
    """
    before = [b for b in backups if _finished(b) < window_start]
    if before:
        return _newest(before)
    return min(backups, key=lambda b: (moment(b['start_time']), _finished(b))) if backups else None


def keep_reasons(backups, now, keep_daily, keep_weekly, recovery_window_days):
    """Why each kept backup is kept: dict name -> list of reasons (str), in the order the rules are given above.

    :param backups: list of backup dicts with ``name``, ``start_time``, ``finish_time``, ``is_permanent``,
        ``delta_origin`` (``walg_backup_info``'s ``backups``).
    :param now: aware ``datetime``, the moment the plan is made for.
    :raises PgopsError: when a kept delta's origin is not in the storage (its chain is broken: nothing of it is
        deleted, and the message says so).
    """
    validate_policy(keep_daily, keep_weekly, recovery_window_days)
    now = now.astimezone(datetime.timezone.utc)
    reasons = {}

    def keep(backup, why):
        if backup is not None:
            reasons.setdefault(backup['name'], []).append(why)

    finished = [b for b in backups if _finished(b) <= now]
    for days_ago in range(keep_daily):
        day = (now - datetime.timedelta(days=days_ago)).date()
        keep(_newest([b for b in finished if _finished(b).date() == day]), 'daily %s' % day.isoformat())
    for weeks_ago in range(keep_weekly):
        year, week = (now - datetime.timedelta(weeks=weeks_ago)).isocalendar()[:2]
        keep(_newest([b for b in finished if _finished(b).isocalendar()[:2] == (year, week)]), 'weekly %d-W%02d' % (year, week))
    if recovery_window_days:
        window_start = now - datetime.timedelta(days=recovery_window_days)
        for backup in backups:
            if _finished(backup) >= window_start:
                keep(backup, 'recovery window')
        base = window_base(backups, window_start)
        if base is not None and _finished(base) < window_start:
            keep(base, 'base of the recovery window')
    keep(_newest(backups), 'newest')
    for backup in backups:
        if backup.get('is_permanent'):
            keep(backup, 'permanent')
    _keep_delta_chains(backups, reasons)
    return reasons


def _keep_delta_chains(backups, reasons):
    by_name = dict((b['name'], b) for b in backups)
    for name in list(reasons):
        child = by_name[name]
        while child.get('delta_origin'):
            origin = by_name.get(child['delta_origin'])
            if origin is None:
                raise PgopsError('backup %s is a delta of %s, which is not in the storage: its chain is broken, so it '
                                 'cannot be restored. Nothing was deleted; take a full backup (walg_backup with '
                                 'delta_max_steps=0), then delete %s.' % (child['name'], child['delta_origin'], child['name']))
            reasons.setdefault(origin['name'], [])
            why = 'delta chain of %s' % name
            if why not in reasons[origin['name']]:
                reasons[origin['name']].append(why)
            child = origin


def wal_needed(backups, kept_names, base):
    """A predicate on WAL object names: whether the plan keeps that object (:class:`~.wal.WalNeeds` of the kept
    backups and the window base).

    :param backups: all backups; ``kept_names``: set of the names kept; ``base``: the window base backup or None.
    :returns: function(name) -> bool. Timeline history files and names that are not WAL files are always kept.
    """
    needs = WalNeeds([b for b in backups if b['name'] in kept_names], base)

    def needed(name):
        where = segment_of(name)
        return where is None or needs.segment(*where)
    return needed


def plan(backups, wal_objects, now, keep_daily=7, keep_weekly=4, recovery_window_days=7):
    """The retention plan.

    :param backups: list of backup dicts (``walg_backup_info``'s ``backups``).
    :param wal_objects: list of dicts ``name`` (key under ``wal_005/``) and ``size`` (bytes).
    :param now: aware ``datetime``.
    :returns: dict ``keep`` (list of dicts ``name``, ``reasons``, oldest first), ``delete`` (backup names, oldest
        first), ``window_start`` (ISO 8601 or None), ``window_base`` (name or None), ``wal_keep_from`` (WAL file name
        or None: every segment from there on is kept), ``wal_delete`` (:func:`~.wal.segment_ranges` of the WAL
        objects deleted), ``wal_delete_objects`` (their names), ``wal_bytes`` (bytes of WAL deleted).
        With no backup at all, nothing is deleted.
    :raises PgopsError: for a bad policy, or a broken delta chain.
    """
    reasons = keep_reasons(backups, now, keep_daily, keep_weekly, recovery_window_days)
    window_start = now - datetime.timedelta(days=recovery_window_days) if recovery_window_days else now
    base = window_base([b for b in backups if b['name'] in reasons], window_start)
    ordered = sorted(backups, key=lambda b: (moment(b['start_time']), _finished(b), b['name']))
    if backups:
        needed = wal_needed(backups, set(reasons), base)
        doomed = [o for o in wal_objects if not needed(o['name'])]
    else:
        doomed = []
    from_segment = segment_name(*backup_segments(base)[:2]) if base is not None else None
    return dict(
        keep=[dict(name=b['name'], reasons=reasons[b['name']]) for b in ordered if b['name'] in reasons],
        delete=[b['name'] for b in ordered if b['name'] not in reasons],
        window_start=isoformat_z(window_start) if recovery_window_days else None,
        window_base=base['name'] if base is not None else None,
        wal_keep_from=from_segment,
        wal_delete=segment_ranges(doomed),
        wal_delete_objects=sorted(o['name'] for o in doomed),
        wal_bytes=sum(int(o.get('size') or 0) for o in doomed),
    )
