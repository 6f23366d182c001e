# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The barman-cloud restore drill: ``barman-cloud-restore`` of a base backup into a scratch directory, then the
shared drill runner (:mod:`~.._drill.runner`) starts it with ``barman-cloud-wal-restore`` as ``restore_command``, waits for
consistency and promotion, runs the checks, times it and cleans up.

The restored instance never writes into the catalog: the runner turns archiving off (``archive_mode = off``), and
the catalog is only ever read, by ``barman-cloud-restore`` and ``barman-cloud-wal-restore``.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._drill.options import (
    RECOVERY_TARGETS_EXCLUSIVE, drill_argument_spec, drill_with_options, fetch_backup, refuse_scratch_parent, scratch_directory)
from ansible_collections.pgops.resilience.plugins.module_utils._barman.catalog import BarmanCatalog, parse_time
from ansible_collections.pgops.resilience.plugins.module_utils._barman.cloud import BarmanCloud, barman_cloud_spec
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import client_from_params

LATEST = ('latest', 'last')


def argument_spec():
    """The module's options: the barman catalog and S3 options, the backup, the recovery target and the checks."""
    spec = barman_cloud_spec()
    spec.update(drill_argument_spec())
    spec.update(backup_id=dict(type='str', default='latest'), timeout=dict(type='int', default=1800))
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec and their constraints, in one place."""
    return dict(argument_spec=argument_spec(), mutually_exclusive=list(RECOVERY_TARGETS_EXCLUSIVE))


def choose_backup(backups, wanted, target_time=None):
    """The backup to restore: ``wanted`` (an ID or a backup name), or for ``latest`` the newest DONE backup
    (with a target time: the newest DONE backup that ended before it, as PITR needs).

    :param backups: list from :meth:`BarmanCatalog.backups`.
    :raises PgopsError: when there is no such backup, or it is not DONE.
    """
    done = [b for b in backups if b.get('readable') and b['status'] == 'DONE']
    if wanted.lower() in LATEST:
        if target_time is not None:
            done = [b for b in done if b['end_time'] is not None and b['end_time'] < target_time]
        if not done:
            raise PgopsError('No DONE backup to restore%s; take one first (barman-cloud-backup).'
                             % (' that ended before recovery_target_time %s' % isoformat_z(target_time) if target_time else ''))
        return done[-1]
    for backup in backups:
        if wanted in (backup['backup_id'], backup.get('backup_name')):
            if backup['status'] != 'DONE':
                raise PgopsError('Backup %s has status %s; only a DONE backup can be restored.' % (wanted, backup['status']))
            return backup
    raise PgopsError('backup_id %r is not in the catalog; known backups: %s.' % (wanted, ', '.join(b['backup_id'] for b in backups) or 'none'))


def _target_time(params):
    text = params.get('recovery_target_time')
    if not text:
        return None
    try:
        return parse_time(text)
    except (PgopsError, ValueError):
        return None  # PostgreSQL reads more forms than we do; then the newest backup is restored


def restore_drill(params, check_mode=False):
    """Run one barman-cloud restore drill (see the module's DOCUMENTATION). Returns the result dict.

    :raises PgopsError: with ``verdict='failed'`` and the phase when the fetch, the recovery or a check fails.
    """
    refuse_scratch_parent(params)
    barman = BarmanCloud(params)
    catalog = BarmanCatalog(client_from_params(params), params['destination_path'], params['server_name'], params.get('endpoint_url'))
    backup = choose_backup(catalog.backups(), params['backup_id'], _target_time(params))
    summary = dict(backup_id=backup['backup_id'], backup_name=backup.get('backup_name'), end_time=isoformat_z(backup['end_time']),
                   begin_wal=backup['begin_wal'], end_wal=backup['end_wal'], timeline=backup['timeline'])
    result = dict(changed=False, backup=summary, destination_path=params['destination_path'], server_name=params['server_name'])
    restore_command = barman.wal_restore_command()
    if check_mode:
        result.update(verdict='not run (check mode)', restore_command=restore_command)
        return result
    scratch, datadir = scratch_directory(params, 'barman')
    cmd = [barman.program('barman-cloud-restore')] + barman.connection_args()
    cmd += [barman.destination_path, barman.server_name, backup['backup_id'], datadir]
    fetch_seconds = fetch_backup(lambda: barman.run_command(cmd, timeout=params['timeout']), 'backup %s' % backup['backup_id'],
                                 scratch, params)
    result.update(drill_with_options(datadir, restore_command, params, scratch, barman.credentials(), fetch_seconds,
                                     barman.secrets))
    return result
