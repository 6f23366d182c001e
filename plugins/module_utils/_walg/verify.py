# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL verification of a wal-g storage: ``wal-g wal-verify <checks> --json``, judged by what the backups need.

What wal-g 3.0.9 does (``internal/databases/postgres/integrity_check_runner.go``, ``timeline_check_runner.go``): it
asks the server for its current WAL segment (through libpq's environment), then scans back to the start of the
earliest backup that is not permanent; a missing segment within ``WALG_UPLOAD_CONCURRENCY`` (16) segments of the
newest is ``MISSING_UPLOADING`` (a WARNING), an older one ``MISSING_LOST`` (a FAILURE). It exits 0 whatever it finds:
the status fields are the verdict.

After retention (:mod:`~.retention`) has deleted the WAL between two kept weekly backups, wal-g calls those gaps lost.
Here a lost segment fails the check only when a backup needs it, by the rule retention keeps WAL by
(:class:`~.wal.WalNeeds`): inside a backup's start-to-finish range (to become consistent), at or after the start of
the recovery window's base backup (``recovery_window_days``; without it, the earliest backup, wal-g's own rule), or on
a timeline newer than that base's.
"""

from __future__ import annotations

import datetime
import json

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import oldest_first
from ansible_collections.pgops.resilience.plugins.module_utils._walg.retention import window_base
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import WalNeeds, segment_of

CHECKS = ('integrity', 'timeline')
_LOST = 'MISSING_LOST'
_PENDING = ('MISSING_UPLOADING', 'MISSING_DELAYED')
_RANK = dict(OK=0, WARNING=1, FAILURE=2)
VERDICTS = ('ok', 'warning', 'failure')


def parse_verify_output(text):
    """The JSON of ``wal-g wal-verify --json``: dict check name -> dict ``status``, ``details``.

    :raises PgopsError: when it is not such a document.
    """
    try:
        document = json.loads((text or '').strip() or 'null')
    except ValueError as exc:
        raise PgopsError('wal-g wal-verify --json printed something that is not JSON (%s): %s' % (exc, (text or '')[:200]))
    if not isinstance(document, dict) or not all(isinstance(v, dict) and 'status' in v for v in document.values()):
        raise PgopsError('wal-g wal-verify --json printed %s, not a status per check.' % json.dumps(document)[:200])
    return document


def needed_from(backups, recovery_window_days, now):
    """What the backups need, as retention keeps it (:class:`~.wal.WalNeeds`): the base is the recovery window's
    (``recovery_window_days``; 0: the newest backup, as ``walg_retention`` counts it), or without a window the
    earliest backup. Without backups nothing is needed.

    :returns: :class:`~.wal.WalNeeds`, or None without backups.
    """
    if not backups:
        return None
    if recovery_window_days is not None:
        base = window_base(backups, now - datetime.timedelta(days=recovery_window_days))
    else:
        base = oldest_first(backups)[0]
    return WalNeeds(backups, base)


def judge_integrity(result, needed):
    """wal-g's integrity result, re-judged: a ``MISSING_LOST`` run fails, and a ``MISSING_UPLOADING`` or
    ``MISSING_DELAYED`` run warns, only when a segment of it is needed.

    :param result: dict ``status``, ``details`` (list of runs ``timeline_id``, ``start_segment``, ``end_segment``,
        ``segments_count``, ``status``).
    :param needed: :class:`~.wal.WalNeeds` of :func:`needed_from`, or None (no backup: nothing is needed).
    :returns: dict ``status`` (OK / WARNING / FAILURE), ``walg_status`` (wal-g's own), ``details`` (the runs, each
        with ``needed``: for a missing run, whether a backup or the window needs a segment of it; false for a found
        one), ``lost`` (the needed lost runs).
    """
    runs = []
    status = 'OK'
    for run in result.get('details') or []:
        first, last = segment_of(run.get('start_segment') or ''), segment_of(run.get('end_segment') or '')
        if first is None or last is None:
            raise PgopsError('wal-g wal-verify reported a segment run that is not WAL file names: %s' % json.dumps(run)[:200])
        wanted = run.get('status') != 'FOUND' and needed is not None and needed.run(first[0], first[1], last[1])
        runs.append(dict(run, needed=wanted))
        if run.get('status') == _LOST and wanted:
            status = 'FAILURE'
        elif run.get('status') in _PENDING and wanted and status == 'OK':
            status = 'WARNING'  # maybe still being archived; a gap retention made is not
    if result.get('status') == 'WARNING' and status == 'OK' and not runs:
        status = 'WARNING'  # wal-g could not tell where to start (no backup)
    return dict(status=status, walg_status=result.get('status'), details=runs,
                lost=[r for r in runs if r['status'] == _LOST and r['needed']])


def verify_wal(cli, checks, backups, recovery_window_days=None, now=None):
    """Run ``wal-g wal-verify <checks> --json`` and judge it.

    :param cli: :class:`~.cli.WalgCli` whose environment reaches the server (libpq variables).
    :param checks: list of ``integrity`` / ``timeline``.
    :param backups: the storage's backups (``walg_backup_info``'s ``backups``).
    :returns: ``(verify, verdict)``: dict check -> dict ``status`` and its details (see :func:`judge_integrity`;
        ``timeline`` as wal-g gives it: ``current_timeline_id``, ``highest_storage_timeline_id``), and ``ok``,
        ``warning`` or ``failure``, the worst of them.
    :raises PgopsError: for an unknown check, when wal-g fails (no connection to the server, storage unreadable),
        or prints what is not understood.
    """
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise PgopsError('verify: %s is not a check of wal-verify; give integrity and/or timeline.' % ', '.join(unknown))
    ordered = [c for c in CHECKS if c in checks]
    document = parse_verify_output(cli.output(['wal-verify'] + ordered + ['--json'], 'verifying the WAL'))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    verify = {}
    for check in ordered:
        result = document.get(check)
        if result is None:
            raise PgopsError('wal-g wal-verify --json gave no result for the %s check.' % check)
        if check == 'integrity':
            verify[check] = judge_integrity(result, needed_from(backups, recovery_window_days, now))
        else:
            verify[check] = dict(status=result['status'], details=result.get('details'))
    worst = max([_RANK.get(v['status'], 2) for v in verify.values()] or [0])
    return verify, VERDICTS[worst]
