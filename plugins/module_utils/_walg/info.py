# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``walg_backup_info`` module: the base backups of a wal-g storage (``wal-g backup-list --detail --json`` and
each backup's stop sentinel, read with ``wal-g st cat``), oldest first, and with ``verify`` the WAL verification of
:mod:`~.verify`. Only reads."""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    connecting, connection_secrets, libpq_environment)
from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import backup_records
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec
from ansible_collections.pgops.resilience.plugins.module_utils._walg.verify import CHECKS, verify_wal


def module_spec():
    """The module's ``AnsibleModule`` arguments: the wal-g options (:func:`~.cli.walg_spec`), ``verify`` and
    ``recovery_window_days``, and the PostgreSQL connection options (``wal-verify`` asks the server for its current
    WAL segment through libpq's environment)."""
    spec = walg_spec()
    spec.update(verify=dict(type='list', elements='str', choices=list(CHECKS), default=[]),
                recovery_window_days=dict(type='int'))
    return connecting(dict(argument_spec=spec))


def secrets(params):
    """The values ``module_main`` masks: the wal-g ones and the PostgreSQL password."""
    return walg_secrets(params) + connection_secrets(params)


def list_backups(params, check_mode=False):
    """Run ``walg_backup_info``: see the module's documentation for options and return values.

    :param check_mode: bool; the module only reads, so it changes nothing.
    :returns: dict ``changed`` (False), ``prefix``, ``backups`` (oldest first, see
        :func:`~.backups.backup_record`), ``count``, ``newest`` (the last of ``backups``, or None); with ``verify``
        also ``verify`` and ``verdict`` (:func:`~.verify.verify_wal`), which never fail the module.
    :raises PgopsError: when wal-g is missing, the storage cannot be read, wal-g's answer is not understood, or
        (with ``verify``) wal-verify cannot reach the server.
    """
    del check_mode
    if params.get('recovery_window_days') is not None and params['recovery_window_days'] < 0:
        raise PgopsError('recovery_window_days must be 0 or more, not %d.' % params['recovery_window_days'])
    cli = WalgCli(params, base_env=libpq_environment(params))
    records = backup_records(cli)
    result = dict(changed=False, prefix=params['prefix'], backups=records, count=len(records),
                  newest=records[-1] if records else None)
    if params.get('verify'):
        result['verify'], result['verdict'] = verify_wal(cli, params['verify'], records, params.get('recovery_window_days'))
    return result
