# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a wal-g storage through wal-g itself: the backup list (``backup-list --detail --json``) and a backup's
stop sentinel (``st cat``), so that S3 and a directory are read the same way, by the tool that wrote them."""

from __future__ import annotations

import json
import re

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import (
    BACKUPS_FOLDER, SENTINEL_SUFFIX, backup_record, oldest_first, parse_backup_list)

# A line of `wal-g st ls -r` (storagetools.WriteObjectsList): type, size, Go's time.Time text, name, then the
# version and extra information (empty unless S3 versioning is on).
_LISTED = re.compile(r'(obj|dir)\s+(\d+)\s+(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)? [+-]\d{4} \S+)\s+(\S+)')
# Keys of a stop sentinel that list every file of the backup: not needed here, and large.
_BULKY_SENTINEL_KEYS = ('Files', 'TarFileSets')


def list_entries(cli):
    """The entries of ``wal-g backup-list --detail --json`` (list of dicts, as wal-g wrote them).

    :param cli: :class:`~.cli.WalgCli`.
    :raises PgopsError: when the storage cannot be listed or the answer is not understood.
    """
    return parse_backup_list(cli.output(['backup-list', '--detail', '--json'], 'listing the backups'))


def read_sentinel(cli, name):
    """The stop sentinel of the backup ``name`` (dict, without its file lists).

    :raises PgopsError: when wal-g cannot read it, or it is not a JSON object.
    """
    key = '%s/%s%s' % (BACKUPS_FOLDER, name, SENTINEL_SUFFIX)
    text = cli.output(['st', 'cat', key], 'reading the stop sentinel of backup %s (%s)' % (name, key))
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise PgopsError('the stop sentinel of backup %s (%s in %s) is not JSON: %s.' % (name, key, cli.prefix, exc))
    if not isinstance(document, dict):
        raise PgopsError('the stop sentinel of backup %s (%s in %s) is not a JSON object.' % (name, key, cli.prefix))
    for bulky in _BULKY_SENTINEL_KEYS:
        document.pop(bulky, None)
    return document


def backup_records(cli, entries=None):
    """Every backup of the storage as :func:`~.backups.backup_record` gives it, oldest first.

    :param entries: the entries of :func:`list_entries` when already read, else None.
    """
    records = []
    for entry in list_entries(cli) if entries is None else entries:
        name = backup_record(entry)['name']  # an entry wal-g wrote without a name is refused before any read
        records.append(backup_record(entry, read_sentinel(cli, name)))
    return oldest_first(records)


def list_objects(cli, folder):
    """Every object under ``folder`` of the storage (``wal-g st ls -r <folder>/``), recursively.

    :param folder: str, such as ``'wal_005'`` or ``'basebackups_005'``.
    :returns: list of dicts ``name`` (the key from the storage's root, ``wal_005/000000010000000000000003.br``),
        ``size`` (bytes), ``modified`` (Go's time text, as wal-g prints it); an empty or absent folder gives [].
    :raises PgopsError: when the storage cannot be listed, or a line is not understood.
    """
    text = cli.output(['st', 'ls', '-r', folder + '/'], 'listing %s/' % folder)
    objects = []
    for line in text.splitlines()[1:]:  # the first line is the header
        if not line.strip():
            continue
        match = _LISTED.match(line)
        if not match:
            raise PgopsError('wal-g st ls printed a line that is not understood: %r' % line[:200])
        if match.group(1) == 'obj':
            objects.append(dict(name='%s/%s' % (folder, match.group(4).lstrip('/')), size=int(match.group(2)),
                                modified=match.group(3)))
    return objects
