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

import os
import shlex
import shutil
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._drill.options import (
    RECOVERY_TARGETS_EXCLUSIVE, drill_argument_spec, recovery_target)
from ansible_collections.pgops.resilience.plugins.module_utils._drill.runner import run_drill
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
    if params.get('scratch_parent'):
        # A scratch directory is made in it and later removed: never in a system directory (check mode too).
        refuse_system_directory(params['scratch_parent'], 'scratch_parent', within=True)
    cli = WalgCli(params)
    backup = choose_backup(cli, params['backup_name'])
    result = dict(changed=False, backup=backup, prefix=params['prefix'])
    restore_command = wal_fetch_command(cli)
    if check_mode:
        result.update(verdict='not run (check mode)', restore_command=restore_command)
        return result
    scratch = tempfile.mkdtemp(prefix='pgops-walg-drill-', dir=params.get('scratch_parent'))
    os.chmod(scratch, 0o755)  # the server user must reach the data directory inside
    datadir = os.path.join(scratch, 'data')
    fetch_seconds = _fetch(cli, backup['name'], datadir, scratch, params['keep'])
    outcome = run_drill(datadir, restore_command, scratch_dir=scratch, bindir=params.get('pg_bindir'),
                        server_user=params.get('server_user'), env=dict(cli.settings),
                        recovery_target=recovery_target(params), checks=params.get('checks'), row_counts=params.get('row_counts'),
                        database=params['database'], user=params['user'], timeout=params['timeout'], keep=params['keep'],
                        fetch_seconds=fetch_seconds, secrets=cli.secrets)
    result.update(outcome)
    return result


def _fetch(cli, name, datadir, scratch, keep):
    """``wal-g backup-fetch`` of ``name`` into ``datadir``; returns its seconds. On failure the scratch directory goes
    (unless ``keep``) and the error names the backup and the storage: wal-g's own message for a missing part of a
    backup says only "did not provide files to extract"."""
    started = time.monotonic()
    try:
        cli.log(['backup-fetch', datadir, name], 'fetching backup %s' % name)
    except PgopsError as exc:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
        hint = ''
        if any(said in exc.msg.lower() for said in _MISSING_PART):
            hint = ' A part of backup %s is missing from %s (or cannot be read): the backup cannot be restored.' % (name, cli.prefix)
        raise PgopsError('The drill failed while fetching backup %s: %s%s' % (name, exc.msg, hint), verdict='failed', phase='fetch')
    return time.monotonic() - started
