# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``walg_restore_drill`` module: ``wal-g backup-fetch`` of a base backup into a scratch directory, then the
shared drill runner (:mod:`~.._drill.runner`) starts it with ``wal-g wal-fetch %f %p`` as ``restore_command``, waits
for consistency and promotion, runs the checks, times it and cleans up.

The restored instance never writes into the storage: the runner turns archiving off (``archive_mode = off``), and the
storage is only ever read, by ``backup-fetch`` and ``wal-fetch`` (which exits 74 for a segment that is not there,
what PostgreSQL takes as the end of the archive: 20.5.4 "Archive Recovery").
"""

from __future__ import annotations

import shlex

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._drill.options import (
    RECOVERY_TARGETS_EXCLUSIVE, drill_argument_spec, drill_with_options, fetch_backup, refuse_scratch_parent, scratch_directory)
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import latest_entry
from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import backup_records, list_entries
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec

LATEST = 'LATEST'
# What wal-g 3.0.9 says when an object of a backup is gone: a tar part, the pg_control part, a file of a directory.
_MISSING_PART = ('did not provide files to extract', 'expect pg_control archive, but not found', 'no such file',
                 'nosuchkey', 'object not found')


def module_spec():
    """The module's ``AnsibleModule`` arguments: the wal-g options, the backup, and the shared drill options."""
    spec = walg_spec()
    spec.update(drill_argument_spec())
    spec.update(backup_name=dict(type='str', default=LATEST))
    return dict(argument_spec=spec, mutually_exclusive=list(RECOVERY_TARGETS_EXCLUSIVE))


def secrets(params):
    """The values ``module_main`` masks (:func:`~.cli.walg_secrets`)."""
    return walg_secrets(params)


def choose_backup(cli, wanted):
    """The backup to restore, as :func:`~.backups.backup_record` describes it: ``wanted`` by name, or for ``LATEST``
    the backup wal-g itself calls LATEST (its stop sentinel written last).

    :raises PgopsError: when the storage holds no backup, or none of that name (listing those it holds).
    """
    entries = list_entries(cli)
    if not entries:
        raise PgopsError('there is no base backup in %s to restore; take one first (walg_backup).' % cli.prefix)
    name = latest_entry(entries)['backup_name'] if wanted.upper() == LATEST else wanted
    records = [r for r in backup_records(cli, entries) if r['name'] == name]
    if not records:
        raise PgopsError('backup_name %r is not in %s; it holds: %s.'
                         % (wanted, cli.prefix, ', '.join(e['backup_name'] for e in entries)))
    return records[0]


def wal_fetch_command(cli):
    """The ``restore_command`` (str): ``<wal-g> wal-fetch %f %p``, the program shell-quoted (the server runs it with
    ``sh -c``). The storage and its credentials are not in it: the server gets them in its environment."""
    return '%s wal-fetch %%f %%p' % shlex.quote(cli.program)


def restore_drill(params, check_mode=False):
    """Run ``walg_restore_drill``: see the module's documentation for options and return values.

    :returns: dict, the drill runner's result with ``backup`` (the backup restored) and ``prefix``.
    :raises PgopsError: with ``verdict='failed'`` and the phase when the fetch, the recovery or a check fails.
    """
    refuse_scratch_parent(params)
    cli = WalgCli(params)
    backup = choose_backup(cli, params['backup_name'])
    result = dict(changed=False, backup=backup, prefix=params['prefix'])
    restore_command = wal_fetch_command(cli)
    if check_mode:
        result.update(verdict='not run (check mode)', restore_command=restore_command)
        return result
    scratch, datadir = scratch_directory(params, 'walg')
    name = backup['name']
    fetch_seconds = fetch_backup(lambda: cli.log(['backup-fetch', datadir, name], 'fetching backup %s' % name), 'backup %s' % name,
                                 scratch, params, lambda exc: _missing_part(exc, name, cli.prefix))
    result.update(drill_with_options(datadir, restore_command, params, scratch, dict(cli.settings), fetch_seconds, cli.secrets))
    return result


def _missing_part(exc, name, prefix):
    """What wal-g's message for a missing object of a backup leaves out (it says only "did not provide files to
    extract" or "Expect pg_control archive, but not found"): which backup, where, and that it cannot be restored."""
    if any(said in exc.msg.lower() for said in _MISSING_PART):
        return ' A part of backup %s is missing from %s (or cannot be read): the backup cannot be restored.' % (name, prefix)
    return ''
