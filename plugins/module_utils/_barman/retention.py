# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention of a barman-cloud catalog: the plan (which base backups and which WAL objects barman's
``barman-cloud-backup-delete --retention-policy`` removes), its safety checks, the run of barman's own command,
and the removal of orphaned server directories of old clusters.

The plan follows barman 3.x (``barman/retention_policies.py`` and ``barman/clients/cloud_backup_delete.py``):

- **REDUNDANCY n**: the ``n`` newest DONE backups are VALID, older ones OBSOLETE. ``minimum_redundancy`` raises
  ``n`` when it is larger.
- **RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS** (a month is 31 days): the point of recoverability is now minus the
  window. Walking from the newest backup, DONE backups are VALID up to and including the first one that ended
  before that point (it is needed to recover to it); older ones are OBSOLETE, except that the newest
  ``minimum_redundancy`` are always kept (barman's ``OBSOLETE*``).
- A backup with a keep annotation (``barman-cloud-backup-keep``) is never deleted; FAILED or STARTED backups are
  not touched by retention.
- For each deleted backup, oldest first: when no older backup remains (or only standalone keeps), the WAL before
  the ``begin_wal`` of the next backup is removed - whole ``wals/<timeline+log>/`` directories below it and single
  segments and ``.backup`` files by name - except on the timelines of the remaining backups (the deleted one's
  included, as barman computes it) other than the next backup's, and except the WAL ranges of standalone keeps.
  ``.history`` files are never removed. So after a failover, the WAL of the old timeline stays until its last
  backup is gone and then only up to that backup's start.

The plan is computed in one streamed pass over the WAL listing; it is checked against barman's own
``--dry-run`` before anything is deleted, and against the catalog afterwards.
"""

from __future__ import annotations

import ast
import datetime
import re

from ansible_collections.pgops.resilience.plugins.module_utils._barman.catalog import BarmanCatalog
from ansible_collections.pgops.resilience.plugins.module_utils._barman.cloud import (
    BarmanCloud, barman_cloud_spec, validate_server_name)
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, utc_now
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params

VALID = 'VALID'
OBSOLETE = 'OBSOLETE'
POTENTIALLY_OBSOLETE = 'OBSOLETE*'
KEEP_FULL = 'KEEP:FULL'
KEEP_STANDALONE = 'KEEP:STANDALONE'
NONE = '-'
DONE = 'DONE'
COPY_DONE = ('WAITING_FOR_WALS', 'DONE')  # barman's BackupManager.DEFAULT_STATUS_FILTER

_REDUNDANCY = re.compile(r'^\s*redundancy\s+(\d+)\s*$', re.IGNORECASE)
_WINDOW = re.compile(r'^\s*recovery\s+window\s+of\s+(\d+)\s+(day|month|week)s?\s*$', re.IGNORECASE)
_UNIT_DAYS = {'day': 1, 'week': 7, 'month': 31}
ACCEPTED_FORMS = "'REDUNDANCY <n>' or 'RECOVERY WINDOW OF <n> DAYS|WEEKS|MONTHS' (for example 'RECOVERY WINDOW OF 7 DAYS')"
_DRY_RUN_OBJECTS = re.compile(r'^Skipping deletion of objects (\[.*\]) due to --dry-run option$')
_DRY_RUN_PREFIX = re.compile(r'^Skipping deletion of all objects under prefix (\S+) due to --dry-run option$')


def argument_spec():
    """The module's options: :func:`barman_cloud.barman_cloud_spec` plus retention_policy, minimum_redundancy,
    remove_servers and verify_with_dry_run."""
    spec = barman_cloud_spec()
    spec.update(
        retention_policy=dict(type='str'),
        minimum_redundancy=dict(type='int', default=1),
        remove_servers=dict(type='list', elements='str', default=[]),
        verify_with_dry_run=dict(type='bool', default=True),
    )
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=argument_spec(), required_one_of=[('retention_policy', 'remove_servers')])


def apply_retention(params, check_mode):
    """Run the module: see :class:`Retention`. Returns the result dict; raises :class:`PgopsError`."""
    if params.get('retention_policy'):
        parse_policy(params['retention_policy'])  # a bad policy fails before any request is made
    return Retention(params, client_from_params(params), BarmanCloud(params), check_mode).apply()


def parse_policy(text):
    """Parse a barman retention policy string.

    :returns: dict ``kind`` ('redundancy' | 'window'), ``value`` (int), ``window`` (timedelta or None) and
        ``text`` (barman's own spelling, e.g. ``RECOVERY WINDOW OF 3 DAYS``).
    :raises PgopsError: naming ``retention_policy`` and the accepted forms.
    """
    text = text or ''
    match = _REDUNDANCY.match(text)
    if match:
        value = int(match.group(1))
        return dict(kind='redundancy', value=value, window=None, text='REDUNDANCY %d' % value)
    match = _WINDOW.match(text)
    if match:
        value, unit = int(match.group(1)), match.group(2).lower()
        return dict(kind='window', value=value, window=datetime.timedelta(days=value * _UNIT_DAYS[unit]),
                    text='RECOVERY WINDOW OF %d %sS' % (value, unit.upper()))
    raise PgopsError('retention_policy %r is not a barman retention policy. Use %s.' % (text, ACCEPTED_FORMS))


def retention_report(backups, policy, minimum_redundancy, now):
    """barman's retention status of each backup (see the module docstring for the rules).

    :param backups: list of backup dicts (``backup_id``, ``status``, ``end_time`` aware datetime, ``keep``).
    :param policy: dict from :func:`parse_policy`.
    :param minimum_redundancy: int.
    :param now: aware datetime.
    :returns: dict backup_id -> one of VALID, OBSOLETE, OBSOLETE*, KEEP:FULL, KEEP:STANDALONE, '-'.
    """
    report = {}
    done = [b for b in sorted(backups, key=lambda b: b['backup_id'], reverse=True) if b['status'] == DONE]
    for backup in backups:
        report[backup['backup_id']] = NONE
    if policy['kind'] == 'redundancy':
        redundancy = max(policy['value'], minimum_redundancy)
        for index, backup in enumerate(done):
            report[backup['backup_id']] = _keep_status(backup) or (VALID if index < redundancy else OBSOLETE)
        return report
    point = now - policy['window']
    found, valid = False, 0
    for backup in done:
        keep = _keep_status(backup)
        if not found:
            report[backup['backup_id']] = keep or VALID
            valid += 1
            found = backup['end_time'] is not None and backup['end_time'] < point
        elif valid < minimum_redundancy:
            report[backup['backup_id']] = keep or POTENTIALLY_OBSOLETE
            valid += 1
        else:
            report[backup['backup_id']] = keep or OBSOLETE
    return report


def _keep_status(backup):
    keep = backup.get('keep')
    if keep == 'standalone':
        return KEEP_STANDALONE
    return KEEP_FULL if keep else None


def _segment_parts(name):
    """(timeline, log, seg) of the first 24 hex digits of a WAL name."""
    return int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)


class _Step:
    """The WAL clean-up that follows the deletion of one backup (barman's ``_remove_wals_for_backup``)."""

    def __init__(self, until_begin_wal, protected_timelines, protected_ranges):
        self.until = until_begin_wal
        self.until_tli, self.until_log, dummy = _segment_parts(until_begin_wal)
        self.protected = protected_timelines
        self.ranges = protected_ranges

    def deletes_directory(self, tli, log):
        """True when the whole ``wals/<tli+log>/`` directory goes."""
        if tli in self.protected:
            return False
        for begin, end in self.ranges:
            b_tli, b_log, dummy = _segment_parts(begin)
            e_tli, e_log, dummy = _segment_parts(end)
            if b_tli <= tli <= e_tli and b_log <= log <= e_log:
                return False
        return tli == self.until_tli and log < self.until_log

    def deletes_wal(self, name, kind):
        """True when the WAL object named ``name`` (no compression suffix) goes."""
        if kind == 'history' or int(name[0:8], 16) in self.protected:
            return False
        check = name[:24] if kind == 'backup' else name
        if any(begin <= check <= end for begin, end in self.ranges):
            return False
        return name < self.until


def wal_steps(backups, doomed):
    """The WAL clean-up steps barman performs while deleting ``doomed`` backup IDs, oldest first.

    :param backups: every readable backup of the catalog (dicts with backup_id, status, begin_wal, end_wal,
        timeline, keep).
    :returns: list of :class:`_Step`.
    """
    available = dict((b['backup_id'], b) for b in backups)
    steps = []
    for backup_id in sorted(doomed):
        deleted = available[backup_id]
        remove, ranges = _should_remove_wals(deleted, available)
        if remove:
            later = [available[b] for b in sorted(available) if b > backup_id and available[b]['status'] in COPY_DONE]
            until = later[0] if later else deleted
            # barman means to leave out the backup being deleted here, but compares a freshly read BackupInfo with
            # the cached one (never equal), so the deleted backup's own timeline counts too (barman 3.19:
            # BackupManager.get_timelines_to_protect called from cloud_backup_delete._remove_wals_for_backup).
            protected = set(b['timeline'] for b in available.values()) - set([until['timeline']])
            if until.get('begin_wal'):
                steps.append(_Step(until['begin_wal'], protected, ranges))
        del available[backup_id]
    return steps


def _should_remove_wals(deleted, available):
    """barman's BackupManager.should_remove_wals with skip_wal_cleanup_if_standalone=False (the retention case)."""
    ranges = []
    earlier = [available[b] for b in sorted(available, reverse=True) if b < deleted['backup_id'] and available[b]['status'] in COPY_DONE]
    for previous in earlier:
        if previous.get('keep') != 'standalone':
            return False, []
        ranges.append((previous['begin_wal'], previous['end_wal']))
    return True, ranges


def plan(catalog, policy, minimum_redundancy, now=None):
    """What ``barman-cloud-backup-delete --retention-policy`` would remove now, computed before anything is touched.

    :param catalog: :class:`BarmanCatalog`.
    :param policy: str (barman syntax) or dict from :func:`parse_policy`.
    :param minimum_redundancy: int >= 1.
    :param now: aware datetime (default: the current time).
    :returns: dict ``policy`` (str), ``backups`` (list of dicts: backup_id, status, end_time, retention status,
        ``delete`` bool), ``delete_backups`` (IDs), ``backup_objects`` (keys), ``wal_ranges`` (list of dicts per
        timeline run: timeline, first, last, objects, bytes), ``wal_objects`` (keys), ``objects`` (count),
        ``bytes_freed`` (bytes), ``kept_backups`` (IDs).
    :raises PgopsError: for an unreadable backup (barman refuses too), a policy that would leave no backup, or a
        plan that would remove WAL a kept backup needs.
    """
    if isinstance(policy, str):
        policy = parse_policy(policy)
    if minimum_redundancy < 1:
        raise PgopsError('minimum_redundancy must be at least 1: a retention run must never leave the catalog without a backup.')
    now = now or utc_now()
    # A directory without backup.info (a backup still uploading) is no backup to barman either; one whose
    # backup.info cannot be read or parsed makes barman-cloud-backup-delete refuse the whole catalog.
    backups = [b for b in catalog.backups() if b.get('info_modified') is not None or b.get('readable', True)]
    unreadable = [b['backup_id'] for b in backups if not b.get('readable', True)]
    if unreadable:
        raise PgopsError('Cannot read backup.info of %s in %s; barman-cloud-backup-delete refuses such a catalog too. '
                         'Repair or remove those backups first.' % (', '.join(unreadable), catalog.server_prefix))
    report = retention_report(backups, policy, minimum_redundancy, now)
    doomed = sorted(b for b, status in report.items() if status == OBSOLETE)
    kept = [b for b in backups if b['status'] == DONE and b['backup_id'] not in doomed]
    if doomed and not kept:
        raise PgopsError('retention_policy %s would delete every backup of %s; refusing.' % (policy['text'], catalog.server_prefix))
    result = dict(policy=policy['text'], minimum_redundancy=minimum_redundancy, now=isoformat_z(now), delete_backups=doomed,
                  kept_backups=[b['backup_id'] for b in kept], backup_objects=[], wal_objects=[], wal_ranges=[], bytes_freed=0)
    result['backups'] = [dict(backup_id=b['backup_id'], status=b['status'], end_time=isoformat_z(b['end_time']),
                              begin_wal=b.get('begin_wal'), retention=report[b['backup_id']], delete=b['backup_id'] in doomed)
                         for b in backups]
    for backup_id in doomed:
        for obj in catalog.iter_objects(catalog.base_prefix + backup_id + '/'):
            if '/annotations/' not in obj['key']:
                result['backup_objects'].append(obj['key'])
                result['bytes_freed'] += obj['size']
    _plan_wal(catalog, wal_steps(backups, doomed), result)
    _check_wal_safety(kept, result)
    result['objects'] = len(result['backup_objects']) + len(result['wal_objects'])
    return result


def _plan_wal(catalog, steps, result):
    """Stream the WAL listing once and collect what ``steps`` remove, as keys and contiguous ranges."""
    if not steps:
        return
    ranges = result['wal_ranges']
    for wal in catalog.iter_wal_objects(include_other=True):  # barman deletes whole directories, whatever they hold
        if not _deleted_by(steps, wal):
            continue
        result['wal_objects'].append(wal['key'])
        result['bytes_freed'] += wal['size']
        current = ranges[-1] if ranges else None
        if current is None or current['timeline'] != wal['timeline']:
            current = dict(timeline=wal['timeline'], first=wal['name'], last=wal['name'], objects=0, bytes=0)
            ranges.append(current)
        current['last'] = max(current['last'], wal['name'])
        current['objects'] += 1
        current['bytes'] += wal['size']


def _deleted_by(steps, wal):
    directory = wal['key'].rstrip('/').split('/')[-2]
    hashed = re.match(r'^[0-9A-F]{16}$', directory)
    for step in steps:
        if hashed and step.deletes_directory(int(directory[:8], 16), int(directory[8:], 16)):
            return True
        if wal['kind'] is not None and step.deletes_wal(wal['name'], wal['kind']):
            return True
    return False


def _check_wal_safety(kept, result):
    """Refuse a plan that removes a segment on a kept backup's timeline at or after its begin_wal."""
    starts = {}
    for backup in kept:
        if backup.get('begin_wal'):
            tli = int(backup['begin_wal'][:8], 16)
            starts[tli] = min(starts.get(tli, backup['begin_wal']), backup['begin_wal'])
    for rng in result['wal_ranges']:
        start = starts.get(rng['timeline'])
        if start is not None and rng['last'][:24] >= start:
            raise PgopsError('The retention plan would remove WAL %s..%s, which kept backups starting at %s need; refusing. '
                             'Report this catalog state as a bug.' % (rng['first'], rng['last'], start))


def parse_dry_run(output, bucket):
    """The object keys ``barman-cloud-backup-delete --dry-run`` says it would delete.

    :param output: its standard output (barman prints ``Skipping deletion of objects [...] due to --dry-run
        option`` and ``Skipping deletion of all objects under prefix P due to --dry-run option``).
    :returns: (set of keys, list of prefixes).
    """
    keys, prefixes = set(), []
    for line in output.splitlines():
        line = line.strip()
        match = _DRY_RUN_OBJECTS.match(line)
        if match:
            keys.update(_strip_bucket(k, bucket) for k in ast.literal_eval(match.group(1)))
            continue
        match = _DRY_RUN_PREFIX.match(line)
        if match:
            prefixes.append(_strip_bucket(match.group(1), bucket))
    return keys, prefixes


def _strip_bucket(key, bucket):
    return key[len(bucket) + 1:] if key.startswith(bucket + '/') else key


def compare_with_dry_run(result, keys, prefixes, catalog):
    """Differences between our plan and barman's dry run (list of str, at most 40; empty when they agree).

    A prefix barman would delete as a whole is expanded by listing it.
    """
    theirs = set(keys)
    for prefix in prefixes:
        theirs.update(o['key'] for o in catalog.iter_objects(prefix.rstrip('/') + '/'))
    ours = set(result['backup_objects']) | set(result['wal_objects'])
    differences = ['only in barman: %s' % k for k in sorted(theirs - ours)[:20]]
    differences += ['only in the plan: %s' % k for k in sorted(ours - theirs)[:20]]
    return differences


def orphan_report(catalog, names, active):
    """Size report of the server directories named in ``remove_servers``.

    :returns: list of dicts name, prefix, objects, bytes, exists (bool).
    :raises PgopsError: for the active server, a name that is not one directory, or a directory that does not
        look like a barman server (no ``base/`` or ``wals/`` under it).
    """
    report = []
    for name in names:
        validate_server_name(name, 'remove_servers')
        if name == active:
            raise PgopsError('remove_servers names %r, the active server_name; refusing to delete the catalog in use.' % name)
        info = dict(name=name, prefix=catalog.root_prefix + name + '/', objects=0, bytes=0, exists=False)
        barman_like = False
        for obj in catalog.iter_objects(info['prefix']):
            info['objects'] += 1
            info['bytes'] += obj['size']
            barman_like = barman_like or obj['key'][len(info['prefix']):].split('/', 1)[0] in ('base', 'wals')
        info['exists'] = info['objects'] > 0
        if info['exists'] and not barman_like:
            raise PgopsError('remove_servers: %s holds no base/ or wals/ directory, so it is not a barman server directory; '
                             'refusing to delete it.' % info['prefix'])
        report.append(info)
    return report


class Retention:
    """One run of the ``barman_retention`` module.

    :param params: the module's params (barman_cloud_spec options, retention_policy, minimum_redundancy,
        remove_servers, verify_with_dry_run).
    :param client: boto3 S3 client.
    :param barman: :class:`BarmanCloud` for the catalog.
    :param check_mode: bool.
    """

    def __init__(self, params, client, barman, check_mode):
        self.params = params
        self.barman = barman
        self.check_mode = check_mode
        self.catalog = BarmanCatalog(client, params['destination_path'], params['server_name'], params.get('endpoint_url'))

    def apply(self):
        """Plan, verify, apply, check. Returns the module result dict (see the module's RETURN)."""
        result = dict(changed=False, server_name=self.params['server_name'], destination_path=self.params['destination_path'])
        orphans = orphan_report(self.catalog, self.params.get('remove_servers') or [], self.params['server_name'])
        if self.params.get('retention_policy'):
            result['plan'] = plan(self.catalog, self.params['retention_policy'], self.params['minimum_redundancy'])
            if result['plan']['delete_backups']:
                self._verify_with_dry_run(result)
                if not self.check_mode:
                    self._apply_policy(result)
                result['changed'] = True
        result['removed_servers'] = [o for o in orphans if o['exists']]
        for orphan in result['removed_servers']:
            if not self.check_mode:
                self.catalog.objects.delete_prefix(orphan['prefix'])
            result['changed'] = True
        result['bytes_freed'] = result.get('plan', {}).get('bytes_freed', 0) + sum(o['bytes'] for o in result['removed_servers'])
        return result

    def _verify_with_dry_run(self, result):
        policy = result['plan']['policy']
        if not self.params.get('verify_with_dry_run', True):
            result['dry_run_agrees'] = None
            return
        cmd = self.barman.command('barman-cloud-backup-delete', '--dry-run', '--retention-policy', policy,
                                  '--minimum-redundancy', str(self.params['minimum_redundancy']))
        output = self.barman.run_command(cmd)
        keys, prefixes = parse_dry_run(output, self.catalog.bucket)
        differences = compare_with_dry_run(result['plan'], keys, prefixes, self.catalog)
        if differences:
            raise PgopsError('The retention plan and barman-cloud-backup-delete --dry-run disagree, so nothing was deleted: %s'
                             % '; '.join(differences), plan=result['plan'])
        result['dry_run_agrees'] = True

    def _apply_policy(self, result):
        planned = result['plan']
        cmd = self.barman.command('barman-cloud-backup-delete', '--retention-policy', planned['policy'],
                                  '--minimum-redundancy', str(self.params['minimum_redundancy']))
        self.barman.run_command(cmd)
        doomed = set(planned['backup_objects']) | set(planned['wal_objects'])
        kept = set(self.catalog.base_prefix + b + '/backup.info' for b in planned['kept_backups'])
        left = []
        for obj in self.catalog.iter_objects(self.catalog.server_prefix):
            if obj['key'] in doomed:
                left.append(obj['key'])
            kept.discard(obj['key'])
        missing = sorted(kept)
        if left or missing:
            raise PgopsError('After barman-cloud-backup-delete the catalog differs from the plan: still there %s; kept backups '
                             'missing %s.' % (left[:20], missing), plan=planned)
