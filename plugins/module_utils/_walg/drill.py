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
import re
import shlex
import tempfile

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z, parse_time
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import nearly_full
from ansible_collections.pgops.resilience.plugins.module_utils._drill.options import (
    RECOVERY_TARGETS_EXCLUSIVE, drill_argument_spec, drill_with_options, fetch_backup, refuse_scratch_parent, scratch_directory)
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import backup_record, latest_entry, moment
from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import list_entries, read_sentinel
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec

LATEST = 'LATEST'
# The end of a time with its offset: Z, +00, +0100, -05:30.
_OFFSET = re.compile(r'(Z|[+-]\d{2}(:?\d{2})?)\Z', re.IGNORECASE)
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


def choose_backup(cli, entries, wanted, target_time=None):
    """The backup to restore, as :func:`~.backups.backup_record` describes it: ``wanted`` by name, or for ``LATEST``
    the backup wal-g itself calls LATEST (its stop sentinel written last) or, with ``target_time`` (an aware
    ``datetime``, the recovery target), the newest backup that finished before it, as a recovery to that moment needs.

    :param entries: the storage's ``backup-list --detail`` entries (:func:`~.catalog.list_entries`).
    :raises PgopsError: when the storage holds no backup, none of that name (listing those it holds), or none that
        finished before ``target_time``.
    """
    if not entries:
        raise PgopsError('there is no base backup in %s to restore; take one first (walg_backup).' % cli.prefix)
    if wanted.upper() != LATEST:
        name = wanted
    elif target_time is None:
        name = latest_entry(entries)['backup_name']
    else:
        before = [e for e in entries if _finished(e) < target_time]
        if not before:
            raise PgopsError('no backup in %s finished before recovery_target_time %s; the oldest finished at %s. Give a '
                             'later target.' % (cli.prefix, isoformat_z(target_time),
                                                isoformat_z(min(_finished(e) for e in entries))))
        name = max(before, key=_finished)['backup_name']
    chosen = [e for e in entries if e.get('backup_name') == name]
    if not chosen:
        raise PgopsError('backup_name %r is not in %s; it holds: %s.'
                         % (wanted, cli.prefix, ', '.join(e['backup_name'] for e in entries)))
    return backup_record(chosen[0], read_sentinel(cli, name))


def _finished(entry):
    """When a ``backup-list --detail`` entry finished (aware ``datetime``; its sentinel's time when it says nothing)."""
    return moment(entry.get('finish_time') or entry.get('time'))


def target_time(params):
    """The ``recovery_target_time`` option as an aware ``datetime``, to choose the backup before it; None without one.

    :raises PgopsError: for a time without a UTC offset (PostgreSQL would read it in the restored server's
        ``timezone``, which the choice here cannot know) or one that is not read here; the message says the form.
    """
    text = params.get('recovery_target_time')
    if not text:
        return None
    try:
        when = parse_time(text)
    except ValueError:
        when = None
    if when is None or not _OFFSET.search(text.strip()):
        raise PgopsError('recovery_target_time %r: give it with its UTC offset, such as "2026-11-20 10:30:00+00", so that '
                         'the newest backup finished before it can be chosen (or name the backup in backup_name).' % text)
    return when


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
    target = target_time(params) if params['backup_name'].upper() == LATEST else None
    entries = list_entries(cli)
    backup = choose_backup(cli, entries, params['backup_name'], target)
    result = dict(changed=False, backup=backup, prefix=params['prefix'])
    restore_command = wal_fetch_command(cli)
    if check_mode:
        result.update(verdict='not run (check mode)', restore_command=restore_command)
        return result
    refuse_small_scratch(entries, backup, params)
    scratch, datadir = scratch_directory(params, 'walg')
    name = backup['name']
    full = {}

    def fetch():
        try:
            return cli.log(['backup-fetch', datadir, name], 'fetching backup %s' % name)
        except PgopsError:
            # Measured now: fetch_backup removes the scratch directory (and what wal-g wrote) before explaining.
            full['space'] = nearly_full(os.path.dirname(scratch))
            raise

    fetch_seconds = fetch_backup(fetch, 'backup %s' % name, scratch, params,
                                 lambda exc: _missing_part(exc, name, cli.prefix) + _full_disk(full.get('space')))
    result.update(drill_with_options(datadir, restore_command, params, scratch, dict(cli.settings), fetch_seconds, cli.secrets))
    return result


def _missing_part(exc, name, prefix):
    """What wal-g's message for a missing object of a backup leaves out (it says only "did not provide files to
    extract" or "Expect pg_control archive, but not found"): which backup, where, and that it cannot be restored."""
    if any(said in exc.msg.lower() for said in _MISSING_PART):
        return ' A part of backup %s is missing from %s (or cannot be read): the backup cannot be restored.' % (name, prefix)
    return ''


def refuse_small_scratch(entries, backup, params):
    """Fail before fetching when the file system of the scratch directory has less free space than the restored
    backup takes at least: wal-g's ``uncompressed_size`` of the backup, and for a delta that of its full backup too.
    wal-g backup-fetch does not stop at a full disk: it logs "no space left on device" and retries the part after a
    minute, for up to ``WALG_DOWNLOAD_FILE_RETRIES`` (15) rounds (wal-g 3.0.9, ``internal/extract.go``).

    :param entries: the storage's ``backup-list --detail`` entries, where a delta's full backup is looked up.
    :raises PgopsError: with ``verdict='failed'`` and ``phase='fetch'``, naming the backup, the bytes it needs and
        the bytes free.
    """
    needed, counted = backup.get('uncompressed_size') or 0, ''
    full = backup.get('delta_full_name')
    if full and full != backup['name']:
        needed = max([needed] + [e.get('uncompressed_size') or 0 for e in entries if e.get('backup_name') == full])
        counted = ' of the delta and of its full backup %s' % full
    where = params.get('scratch_parent') or tempfile.gettempdir()
    try:
        info = os.statvfs(where)
    except OSError:
        return  # not there or not readable: making the scratch directory in it says why
    free = info.f_bavail * info.f_frsize
    if needed > free:
        raise PgopsError('The drill cannot fetch backup %s: restored it takes at least %s bytes (wal-g\'s uncompressed size%s), '
                         'and the file system of %s has %s bytes free. Give a scratch_parent with room for it, or free space '
                         'there.' % (backup['name'], format(needed, ','), counted,
                                     where, format(free, ',')), verdict='failed', phase='fetch')


def _full_disk(space):
    """What wal-g's message for a fetch that filled the scratch file system leaves out (it retries the write and
    runs out of time, or says "no space left on device" deep in its log): that the disk is full. ``space`` is
    :func:`~.._core.process.nearly_full` measured when the fetch failed, or None."""
    if not space:
        return ''
    return (' The file system of %s was full when wal-g stopped (%s bytes free of %s): wal-g retries a part it could not '
            'write ("no space left on device") until timeout. Give a scratch_parent with room for the restored backup.'
            % (space['path'], format(space['available_bytes'], ','), format(space['total_bytes'], ',')))
