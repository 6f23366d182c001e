# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a restored base backup says of itself: its ``backup_label`` (:func:`parse_backup_label`), the links that
lead out of its data directory (:func:`data_directory_links`), and the check that a data directory holds one
(:func:`check_data_directory`). Read by a restore drill, a bootstrap from a base backup and a base backup bundle.

The rules followed are those of the PostgreSQL 15 documentation: 26.3.3 "Making a Base Backup Using the Low Level
API" (the ``backup_label`` and ``tablespace_map`` files), 73.1 "Database File Layout" (``PG_VERSION``,
``global/pg_control``, ``pg_wal``, ``pg_tblspc``).
"""

from __future__ import annotations

import os
import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

_LABEL_LINE = re.compile(r'([A-Z][A-Z ]*[A-Z]):\s?(.*)\Z')
_START_WAL = re.compile(r'([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-Fa-f]{24})\)')


def parse_backup_label(text):
    """Parse the text of a ``backup_label`` file.

    The file is written by ``pg_backup_stop`` / the replication protocol's BASE_BACKUP (pg_basebackup,
    barman-cloud-backup, wal-g) and read at the start of archive recovery (PostgreSQL 15 docs, 26.3.3 "Making a
    Base Backup Using the Low Level API"). Lines look like ``START WAL LOCATION: 0/2000028 (file
    000000010000000000000002)``.

    :param text: str, the file's content.
    :returns: dict ``(raw, derived)``: ``raw`` maps each key as written (``'START WAL LOCATION'``,
        ``'CHECKPOINT LOCATION'``, ``'BACKUP METHOD'``, ``'BACKUP FROM'``, ``'START TIME'``, ``'LABEL'``,
        ``'START TIMELINE'``) to its text; ``derived`` holds ``start_lsn``, ``start_wal_file``,
        ``checkpoint_lsn``, ``start_timeline`` (int or None), ``start_time``, ``label``, ``backup_method``,
        ``backup_from`` (None when absent).
    :raises PgopsError: when no ``START WAL LOCATION`` line with a WAL file name is found.
    """
    raw = {}
    for line in (text or '').splitlines():
        match = _LABEL_LINE.match(line.strip())
        if match and match.group(1) not in raw:
            raw[match.group(1)] = match.group(2).strip()
    start = _START_WAL.match(raw.get('START WAL LOCATION', ''))
    if not start:
        raise PgopsError('backup_label has no "START WAL LOCATION: <lsn> (file <segment>)" line; it is not the label of a '
                         'physical base backup. Restore the backup again (the file comes with the base backup).')
    timeline = raw.get('START TIMELINE')
    derived = dict(
        start_lsn=start.group(1).upper(),
        start_wal_file=start.group(2).upper(),
        checkpoint_lsn=(raw.get('CHECKPOINT LOCATION') or '').upper() or None,
        start_timeline=int(timeline) if timeline and timeline.isdigit() else int(start.group(2)[:8], 16),
        start_time=raw.get('START TIME'),
        label=raw.get('LABEL'),
        backup_method=raw.get('BACKUP METHOD'),
        backup_from=raw.get('BACKUP FROM'),
    )
    return dict(raw=raw, derived=derived)


def inside(path, directory):
    """True when ``path`` (already resolved: ``os.path.realpath``) is ``directory`` or below it."""
    directory = os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def data_directory_links(datadir):
    """The links of a data directory that lead elsewhere: ``pg_wal`` when it is a symbolic link, every entry of
    ``pg_tblspc``, and the tablespace locations listed in ``tablespace_map`` (which the server turns into links at
    start; tar-format backups carry it).

    :returns: dict ``{'pg_wal': target or None, 'pg_tblspc/<oid>': target, ...}``, targets resolved to real paths.
    """
    links = {'pg_wal': None}
    wal = os.path.join(datadir, 'pg_wal')
    if os.path.islink(wal):
        links['pg_wal'] = os.path.realpath(wal)
    tblspc = os.path.join(datadir, 'pg_tblspc')
    if os.path.isdir(tblspc):
        for name in sorted(os.listdir(tblspc)):
            links['pg_tblspc/' + name] = os.path.realpath(os.path.join(tblspc, name))
    mapping = os.path.join(datadir, 'tablespace_map')
    if os.path.isfile(mapping):
        with open(mapping, encoding='utf-8', errors='replace') as handle:
            for line in handle:
                oid, sep, location = line.rstrip('\n').partition(' ')
                if sep and oid.isdigit():
                    # tablespace_map escapes backslashes and newlines in the location with a backslash.
                    links['pg_tblspc/' + oid] = os.path.realpath(re.sub(r'\\(.)', r'\1', location))
    return links


def check_data_directory(datadir, require_backup_label=True):
    """Check that ``datadir`` holds a restored base backup a drill can start, and describe it.

    Needed: ``PG_VERSION`` (the major version), ``global/pg_control``, and (``require_backup_label``) a
    ``backup_label``, which every base backup restore has (pg_basebackup -Fp/-Ft, barman-cloud-restore, wal-g
    backup-fetch) and a live or crashed data directory never has (PostgreSQL 15 has no exclusive backups), so the
    check also keeps a drill off a production data directory.

    :param datadir: str, path of the data directory.
    :param require_backup_label: bool.
    :returns: dict ``pg_version`` (str, ``'15'``), ``backup_label`` (the raw dict of :func:`parse_backup_label`, or
        None), its derived fields (``start_lsn``, ``start_wal_file``, ``checkpoint_lsn``, ``start_timeline``,
        ``start_time``, ``label``, ``backup_method``, ``backup_from``; None without a label), ``links`` (see
        :func:`data_directory_links`). For example::

            dict(pg_version='15', backup_label={'START WAL LOCATION': '0/2000028 (file 000000010000000000000002)', ...},
                 start_lsn='0/2000028', start_wal_file='000000010000000000000002', checkpoint_lsn='0/2000060',
                 start_timeline=1, start_time='2025-01-29 10:00:00 UTC', label='...', backup_method='streamed',
                 backup_from='primary', links={'pg_wal': None, 'pg_tblspc/16390': '/scratch/ts', ...})
    :raises PgopsError: naming the missing file and what to do.
    """
    if not datadir or not os.path.isdir(datadir):
        raise PgopsError('datadir %r is not a directory: restore the base backup into it first.' % (datadir,))
    version_file = os.path.join(datadir, 'PG_VERSION')
    try:
        with open(version_file, encoding='utf-8') as handle:
            pg_version = handle.read().strip()
    except OSError as exc:
        raise PgopsError('%s cannot be read (%s): %s is not a PostgreSQL data directory, or the restore did not complete. '
                         'Restore the base backup again.' % (version_file, exc.strerror, datadir))
    if not re.match(r'\d+(\.\d+)?\Z', pg_version):
        raise PgopsError('%s holds %r, not a PostgreSQL major version: the restore is damaged. Restore the base backup again.'
                         % (version_file, pg_version[:40]))
    control = os.path.join(datadir, 'global', 'pg_control')
    if not os.path.isfile(control):
        raise PgopsError('%s is missing: the restore of %s is incomplete (the control file comes with every base backup). '
                         'Restore the base backup again.' % (control, datadir))
    result = dict(pg_version=pg_version, backup_label=None, start_lsn=None, start_wal_file=None, checkpoint_lsn=None,
                  start_timeline=None, start_time=None, label=None, backup_method=None, backup_from=None)
    label_file = os.path.join(datadir, 'backup_label')
    if os.path.isfile(label_file):
        with open(label_file, encoding='utf-8', errors='replace') as handle:
            parsed = parse_backup_label(handle.read())
        result['backup_label'] = parsed['raw']
        result.update(parsed['derived'])
    elif require_backup_label:
        raise PgopsError('%s is missing: %s is not a restored base backup (pg_basebackup, barman-cloud-restore and wal-g '
                         'backup-fetch all write one). A drill needs the restored copy, never a running or crashed data '
                         'directory; restore the base backup again.' % (label_file, datadir))
    result['links'] = data_directory_links(datadir)
    return result
