# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``barman_catalog_info`` module: the health verdict of a barman-cloud catalog (the runbook's weekly backup
health check), its storage report (the monthly one), and both as Prometheus text for node_exporter's textfile
collector. It only reads: the playbook ``backup_health_check`` writes the text to a file.

:func:`report_catalog` is the entry point; the catalog is read by :class:`~.catalog.BarmanCatalog`, the WAL archive
scanned by :class:`~.wal.WalScan`.
"""

from __future__ import annotations

import datetime
import math

from ansible_collections.pgops.resilience.plugins.module_utils._barman.catalog import BarmanCatalog, add_usage, new_usage, parse_time
from ansible_collections.pgops.resilience.plugins.module_utils._barman.wal import WalScan, segment_size_of
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec

# Verdict thresholds that are not options.
WAL_LAG_TOLERANCE = 3600  # seconds the newest WAL may lag behind the end of the newest backup
VERDICTS = ('ok', 'warning', 'critical')


# -- the analysis ------------------------------------------------------------------------------------------------

def backup_moment(backup):
    """When a backup ended: ``end_time``, else ``begin_time``, else the time its backup.info was written (or None)."""
    return backup.get('end_time') or backup.get('begin_time') or backup.get('info_modified')


def latest_done(backups):
    """The newest ``DONE`` backup by :func:`backup_moment` (ties by backup_id), or None."""
    done = [b for b in backups if b.get('readable') and b.get('status') == 'DONE' and backup_moment(b) is not None]
    if not done:
        return None
    return max(done, key=lambda b: (backup_moment(b), b['backup_id']))


def stale_backups(backups, now, stale_started_hours):
    """Backups barman's retention never removes and nobody finishes: ``FAILED``, or ``STARTED`` for longer than
    ``stale_started_hours`` (from ``begin_time``, else the backup.info's time).

    :returns: list of dicts ``backup_id``, ``status``, ``begin_time`` (datetime or None), ``age_seconds`` (int or
        None), ``reason``, ``prefix``, ``stored_bytes``.
    """
    stale = []
    for backup in backups:
        status = backup.get('status')
        since = backup.get('begin_time') or backup.get('info_modified')
        age = int((now - since).total_seconds()) if since is not None else None
        if status == 'FAILED':
            reason = 'FAILED%s' % (': %s' % backup['error'] if backup.get('error') else '')
        elif status == 'STARTED' and age is not None and age > stale_started_hours * 3600:
            reason = 'STARTED %.1f hours ago and not finished (limit %s hours)' % (age / 3600.0, stale_started_hours)
        else:
            continue
        stale.append(dict(backup_id=backup['backup_id'], status=status, begin_time=backup.get('begin_time'),
                          age_seconds=age, reason=reason, prefix=backup['prefix'], stored_bytes=backup['stored_bytes']))
    return stale


def assess(backups, scan, stale, now, warning_hours, critical_hours, unreadable=0):
    """The health verdict and its reasons.

    critical: no DONE backup; the newest DONE backup is older than ``critical_hours``; or the archive lacks WAL
    segments the newest DONE backup needs to be consistent (begin_wal .. end_wal).
    warning: the newest DONE backup is older than ``warning_hours``; no WAL file at all; the newest WAL file is older
    than ``warning_hours`` (archiving stopped?) or more than an hour older than the end of the newest backup;
    an older DONE backup lacks some of its WAL; gaps after the oldest backup that can serve point-in-time recovery;
    stale backups (FAILED, or STARTED for too long); backup directories whose backup.info cannot be read.

    :param backups: the catalog's backups.
    :param scan: a finished :class:`WalScan`.
    :param stale: the result of :func:`stale_backups`.
    :param now: aware datetime.
    :returns: tuple ``(verdict, reasons, latest)``: verdict ``'ok'``, ``'warning'`` or ``'critical'``; reasons a
        list of str, most severe first; latest the newest DONE backup dict or None.
    """
    critical, warning = [], []
    latest = latest_done(backups)
    missing = scan.backup_wal_missing()
    if latest is None:
        critical.append('no completed (DONE) backup in the catalog: %d backup(s) found, none DONE and readable'
                        % len(backups))
    else:
        age = (now - backup_moment(latest)).total_seconds()
        text = 'the newest DONE backup %s is %.1f hours old' % (latest['backup_id'], age / 3600.0)
        if age > critical_hours * 3600:
            critical.append('%s (critical above %s hours)' % (text, critical_hours))
        elif age > warning_hours * 3600:
            warning.append('%s (warning above %s hours)' % (text, warning_hours))
        if missing.get(latest['backup_id']):
            critical.append('the newest DONE backup %s cannot be restored: %d WAL segment(s) between its begin_wal %s and '
                            'end_wal %s are not in the archive' % (latest['backup_id'], missing[latest['backup_id']],
                                                                   latest['begin_wal'], latest['end_wal']))
    older = sorted(backup_id for backup_id, count in missing.items() if count and (latest is None or backup_id != latest['backup_id']))
    if older:
        warning.append('%d older DONE backup(s) lack WAL segments between their begin_wal and end_wal and cannot be '
                       'restored: %s' % (len(older), ', '.join(older[:10]) + (' ...' if len(older) > 10 else '')))
    if scan.count == 0:
        warning.append('no WAL file in the archive: WAL archiving is not writing to this server directory')
    elif scan.newest_modified is not None:
        wal_age = (now - scan.newest_modified).total_seconds()
        if wal_age > warning_hours * 3600:
            warning.append('the newest WAL file was archived %.1f hours ago (warning above %s hours): is WAL archiving '
                           'still running?' % (wal_age / 3600.0, warning_hours))
        elif latest is not None and backup_moment(latest) - scan.newest_modified > datetime.timedelta(seconds=WAL_LAG_TOLERANCE):
            warning.append('the newest WAL file (%s) is older than the end of the newest backup %s by more than %d minutes: '
                           'WAL archiving lags behind' % (isoformat_z(scan.newest_modified), latest['backup_id'],
                                                          WAL_LAG_TOLERANCE // 60))
    if scan.gap_impacts['pitr']:
        warning.append('%d gap(s) in the WAL archive after the oldest backup usable for point-in-time recovery: recovery '
                       'cannot replay across them' % scan.gap_impacts['pitr'])
    if stale:
        warning.append('%d stale backup(s) (FAILED, or STARTED and never finished), which retention does not remove: %s'
                       % (len(stale), ', '.join(s['backup_id'] for s in stale[:10]) + (' ...' if len(stale) > 10 else '')))
    if unreadable:
        warning.append('%d backup director%s without a readable backup.info' % (unreadable, 'y' if unreadable == 1 else 'ies'))
    verdict = 'critical' if critical else 'warning' if warning else 'ok'
    return verdict, critical + warning, latest


# -- Prometheus textfile -----------------------------------------------------------------------------------------

def _label_value(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def _number(value):
    if value is None:
        return 'NaN'
    if isinstance(value, float):
        if math.isinf(value):
            return '+Inf' if value > 0 else '-Inf'
        if math.isnan(value):
            return 'NaN'
        return repr(value)
    return str(int(value))


METRICS = (
    ('pgops_barman_check_timestamp_seconds', 'gauge', 'When the catalog was checked (Unix time).'),
    ('pgops_barman_verdict', 'gauge', 'Health verdict of the catalog: 0 ok, 1 warning, 2 critical.'),
    ('pgops_barman_last_backup_timestamp_seconds', 'gauge', 'End time of the newest DONE backup (Unix time; 0 when there is none).'),
    ('pgops_barman_backup_age_seconds', 'gauge', 'Age of the newest DONE backup in seconds (+Inf when there is none).'),
    ('pgops_barman_backups', 'gauge', 'Backups in the catalog by status (UNREADABLE: no readable backup.info).'),
    ('pgops_barman_stale_backups', 'gauge', 'FAILED backups, and STARTED ones never finished.'),
    ('pgops_barman_wal_objects', 'gauge', 'WAL files in the archive (segments, history, backup labels, partial).'),
    ('pgops_barman_wal_bytes', 'gauge', 'Bytes of the WAL files in the archive.'),
    ('pgops_barman_last_wal_timestamp_seconds', 'gauge', 'When the newest WAL file was written (Unix time; 0 when none).'),
    ('pgops_barman_wal_gaps', 'gauge', 'Gaps between consecutive WAL segments of the same timeline.'),
    ('pgops_barman_wal_missing_segments', 'gauge', 'WAL segments missing inside the gaps.'),
    ('pgops_barman_storage_bytes', 'gauge', 'Bytes under the destination path by directory kind (base, wals, other).'),
    ('pgops_barman_storage_objects', 'gauge', 'Objects under the destination path by directory kind (base, wals, other).'),
    ('pgops_barman_other_servers', 'gauge', 'Other server directories under the destination path (orphan candidates).'),
)


def prometheus_text(result, server_name, now):
    """The module result as Prometheus text exposition format (node_exporter's textfile collector).

    Every sample carries ``server="<server_name>"``; ``pgops_barman_backups`` adds ``status``, the storage metrics
    ``directory`` (``base``, ``wals`` or ``other``, the last summing every other directory, this server's others and
    other servers').

    :param result: dict with the module's ``verdict``, ``latest_backup``, ``backups``, ``stale_backups``, ``wal``,
        ``storage`` and ``other_servers`` (see :func:`report_catalog`).
    :param now: aware datetime of the check.
    :returns: str ending with a newline.
    """
    server = 'server="%s"' % _label_value(server_name)
    samples = dict((name, []) for name, kind, text in METRICS)
    samples['pgops_barman_check_timestamp_seconds'].append((server, now.timestamp()))
    samples['pgops_barman_verdict'].append((server, VERDICTS.index(result['verdict'])))
    latest = result.get('latest_backup')
    if latest:
        samples['pgops_barman_last_backup_timestamp_seconds'].append((server, float(latest['timestamp'])))
        samples['pgops_barman_backup_age_seconds'].append((server, float(latest['age_seconds'])))
    else:
        samples['pgops_barman_last_backup_timestamp_seconds'].append((server, 0))
        samples['pgops_barman_backup_age_seconds'].append((server, float('inf')))
    statuses = dict(DONE=0, FAILED=0)
    for backup in result['backups']:
        status = backup['status'] if backup['readable'] else 'UNREADABLE'
        statuses[status] = statuses.get(status, 0) + 1
    for status in sorted(statuses):
        samples['pgops_barman_backups'].append(('%s,status="%s"' % (server, _label_value(status)), statuses[status]))
    samples['pgops_barman_stale_backups'].append((server, len(result['stale_backups'])))
    wal = result['wal']
    samples['pgops_barman_wal_objects'].append((server, wal['count']))
    samples['pgops_barman_wal_bytes'].append((server, wal['bytes']))
    newest = parse_time(wal['newest_modified']).timestamp() if wal['newest_modified'] else 0
    samples['pgops_barman_last_wal_timestamp_seconds'].append((server, newest))
    samples['pgops_barman_wal_gaps'].append((server, wal['gap_count']))
    samples['pgops_barman_wal_missing_segments'].append((server, wal['missing_segments']))
    kinds = dict((kind, [0, 0]) for kind in ('base', 'wals', 'other'))
    for directory in result['storage']['directories']:
        kinds[directory['kind']][0] += directory['bytes']
        kinds[directory['kind']][1] += directory['objects']
    for kind in ('base', 'wals', 'other'):
        labels = '%s,directory="%s"' % (server, kind)
        samples['pgops_barman_storage_bytes'].append((labels, kinds[kind][0]))
        samples['pgops_barman_storage_objects'].append((labels, kinds[kind][1]))
    samples['pgops_barman_other_servers'].append((server, len(result['other_servers'])))
    lines = []
    for name, kind, text in METRICS:
        lines.append('# HELP %s %s' % (name, text))
        lines.append('# TYPE %s %s' % (name, kind))
        lines.extend('%s{%s} %s' % (name, labels, _number(value)) for labels, value in samples[name])
    return '\n'.join(lines) + '\n'


# -- the module --------------------------------------------------------------------------------------------------

def argument_spec():
    """The options of ``barman_catalog_info`` (with the S3 connection options of ``s3_connection_spec``)."""
    spec = dict(
        destination_path=dict(type='str', required=True),
        server_name=dict(type='str', required=True),
        backup_age_warning=dict(type='float', default=48),
        backup_age_critical=dict(type='float', default=168),
        stale_started_hours=dict(type='float', default=24),
        wal_gap_limit=dict(type='int', default=100),
        now=dict(type='str'),
    )
    spec.update(s3_connection_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=argument_spec())


def _check_params(params):
    for option in ('backup_age_warning', 'backup_age_critical', 'stale_started_hours'):
        if params[option] is None or params[option] <= 0:
            raise PgopsError('%s must be a number of hours above 0, got %r.' % (option, params[option]))
    if params['backup_age_warning'] > params['backup_age_critical']:
        raise PgopsError('backup_age_warning (%s hours) must not exceed backup_age_critical (%s hours).'
                         % (params['backup_age_warning'], params['backup_age_critical']))
    if params['wal_gap_limit'] is None or params['wal_gap_limit'] < 0:
        raise PgopsError('wal_gap_limit must be 0 or more, got %r.' % (params['wal_gap_limit'],))
    if not params.get('now'):
        return utc_now()
    try:
        return parse_time(params['now'])
    except (ValueError, AttributeError):
        raise PgopsError('now must be an ISO 8601 time such as 2026-01-31T06:00:00Z, got %r.' % (params['now'],))


def _backup_result(backup, wal_missing):
    out = dict(backup)
    for name in ('begin_time', 'end_time', 'info_modified'):
        out[name] = isoformat_z(out[name])
    out['wal_missing'] = wal_missing.get(backup['backup_id'])
    return out


def storage_report(catalog, base, wal_usage, level):
    """The ``storage`` and ``other_servers`` results: this server's ``base/`` and ``wals/``, anything else under it,
    each other directory under the destination path, and objects lying directly under the destination path.

    :param catalog: :class:`BarmanCatalog`.
    :param base: usage dict of ``base/``; ``wal_usage`` the same for ``wals/``.
    :param level: :meth:`BarmanCatalog.list_level` of the destination path.
    :returns: tuple ``(storage, other_servers)``.
    """
    directories = [dict(path=catalog.base_prefix, kind='base', server=catalog.server_name, **base),
                   dict(path=catalog.wal_prefix, kind='wals', server=catalog.server_name, **wal_usage)]
    own = catalog.list_level(catalog.server_prefix)
    for name in own['directories']:
        if name not in ('base', 'wals'):
            usage = catalog.usage(catalog.server_prefix + name + '/')
            directories.append(dict(path=catalog.server_prefix + name + '/', kind='other', server=catalog.server_name, **usage))
    if own['files']['objects']:
        directories.append(dict(path=catalog.server_prefix, kind='other', server=catalog.server_name, **own['files']))
    others = []
    for name in level['directories']:
        if name == catalog.server_name:
            continue
        path = catalog.root_prefix + name + '/'
        usage, backups, layout = new_usage(), 0, False
        for item in catalog.iter_objects(path):
            add_usage(usage, item['size'], item['last_modified'])
            rest = item['key'][len(path):]
            if rest.startswith(('base/', 'wals/')):
                layout = True
                if rest.startswith('base/') and rest.endswith('/backup.info') and rest.count('/') == 2:
                    backups += 1
        directories.append(dict(path=path, kind='other', server=name, **usage))
        others.append(dict(name=name, path=path, barman_layout=layout, backup_count=backups, **usage))
    if level['files']['objects']:
        directories.append(dict(path=catalog.root_prefix, kind='other', server=None, **level['files']))
    total_bytes = sum(d['bytes'] for d in directories)
    total_objects = sum(d['objects'] for d in directories)
    for item in directories + others:
        item['last_modified'] = isoformat_z(item['last_modified'])
    for item in directories:
        item['percent'] = round(100.0 * item['bytes'] / total_bytes, 1) if total_bytes else 0.0
    storage = dict(total_bytes=total_bytes, total_objects=total_objects, directories=directories,
                   location='s3://%s/%s' % (catalog.bucket, catalog.root_prefix))
    return storage, others


def report_catalog(params, check_mode=False, client=None):
    """The ``barman_catalog_info`` module: read the catalog, check its health, report its storage, and render all of it
    as Prometheus text (``prometheus_text`` in the result, :func:`prometheus_text`). It writes nothing: an ``_info``
    module; the ``backup_health_check`` playbook writes the text to node_exporter's textfile directory.

    :param params: dict of the options of :func:`argument_spec` (all present, as AnsibleModule fills them in).
    :param check_mode: bool; the same run either way (it only reads).
    :param client: a boto3 S3 client to use instead of one built from ``params``.
    :returns: the module result (see the module's RETURN); ``changed`` is always False.
    :raises PgopsError: for invalid options, and when S3 cannot be listed (the message names the prefix and endpoint).
    """
    now = _check_params(params)
    if client is None:
        client = client_from_params(params)
    catalog = BarmanCatalog(client, params['destination_path'], params['server_name'], params.get('endpoint_url'))
    level = catalog.list_level(catalog.root_prefix)
    backups = catalog.backups()
    scan = WalScan(segment_size_of(backups), backups, params['wal_gap_limit'])
    wal_usage = new_usage()
    for wal in catalog.iter_wal_objects(include_other=True):
        add_usage(wal_usage, wal['size'], wal['last_modified'])
        scan.add(wal)
    stale = stale_backups(backups, now, params['stale_started_hours'])
    unreadable = sum(1 for b in backups if not b['readable'])
    verdict, reasons, latest = assess(backups, scan, stale, now, params['backup_age_warning'],
                                      params['backup_age_critical'], unreadable)
    server_found = params['server_name'] in level['directories']
    if not server_found:
        verdict = 'critical'
        reasons.insert(0, 'there is no directory %s/ under %s (directories there: %s): check server_name (CloudNativePG: '
                          'serverName, by default the Cluster name) and destination_path'
                       % (params['server_name'], params['destination_path'], ', '.join(level['directories'][:20]) or 'none'))
    storage, others = storage_report(catalog, catalog.base_usage(), wal_usage, level)
    wal_missing = scan.backup_wal_missing()
    latest_result = None
    if latest is not None:
        moment = backup_moment(latest)
        latest_result = dict(backup_id=latest['backup_id'], backup_name=latest['backup_name'],
                             end_time=isoformat_z(moment), timestamp=moment.timestamp(),
                             age_seconds=int((now - moment).total_seconds()), begin_wal=latest['begin_wal'],
                             end_wal=latest['end_wal'], timeline=latest['timeline'])
    for item in stale:
        item['begin_time'] = isoformat_z(item['begin_time'])
    result = dict(
        changed=False, destination_path=params['destination_path'], server_name=params['server_name'],
        bucket=catalog.bucket, server_prefix=catalog.server_prefix, now=isoformat_z(now),
        backups=[_backup_result(b, wal_missing) for b in backups], backup_count=len(backups),
        backup_counts=_status_counts(backups), latest_backup=latest_result, verdict=verdict,
        verdict_reasons=reasons, wal=scan.summary(), storage=storage, other_servers=others,
        stale_backups=stale, server_found=server_found)
    result['prometheus_text'] = prometheus_text(result, params['server_name'], now)
    return result


def _status_counts(backups):
    counts = {}
    for backup in backups:
        status = backup['status'] if backup['readable'] else 'UNREADABLE'
        counts[status] = counts.get(status, 0) + 1
    return counts
