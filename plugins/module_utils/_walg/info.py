# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``walg_backup_info`` module: the base backups of a wal-g storage (``wal-g backup-list --detail --json`` and
each backup's stop sentinel, read with ``wal-g st cat``), oldest first. Only reads."""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import backup_records
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: the wal-g options (:func:`~.cli.walg_spec`)."""
    return dict(argument_spec=walg_spec())


def secrets(params):
    """The values ``module_main`` masks (:func:`~.cli.walg_secrets`)."""
    return walg_secrets(params)


def list_backups(params, check_mode=False):
    """Run ``walg_backup_info``: see the module's documentation for options and return values.

    :param check_mode: bool; the module only reads, so it changes nothing.
    :returns: dict ``changed`` (False), ``prefix``, ``backups`` (oldest first, see
        :func:`~.backups.backup_record`), ``count``, ``newest`` (the last of ``backups``, or None).
    :raises PgopsError: when wal-g is missing, the storage cannot be read, or wal-g's answer is not understood.
    """
    del check_mode
    records = backup_records(WalgCli(params))
    return dict(changed=False, prefix=params['prefix'], backups=records, count=len(records),
                newest=records[-1] if records else None)
