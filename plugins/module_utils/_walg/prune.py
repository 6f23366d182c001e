# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``walg_retention`` module: the retention plan of :mod:`~.retention`, applied with wal-g's own commands, then
checked against the storage.

Applying, with nothing deleted that the plan keeps:

1. each backup to delete, newest first, with ``wal-g delete target <name> --confirm``;
2. the WAL before the oldest kept backup (permanent backups' WAL excepted) with ``wal-g delete garbage ARCHIVES
   --confirm``;
3. what the plan deletes between kept backups (wal-g has no command for it) with ``wal-g st rm <object>``, one object
   of the plan at a time.

Every ``delete`` runs first without ``--confirm`` (wal-g's dry run logs "Object marked for deletion: <key>"); it is
confirmed only when every object it marks is one the plan deletes. Afterwards the storage is listed again: a kept
backup or WAL object that is gone, or a planned deletion still there, fails the module.
"""

from __future__ import annotations

import contextlib
import datetime
import re
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import seconds_since, timed
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import BACKUPS_FOLDER, SENTINEL_SUFFIX, moment
from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import backup_records, list_objects
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec
from ansible_collections.pgops.resilience.plugins.module_utils._walg.retention import plan, validate_policy
from ansible_collections.pgops.resilience.plugins.module_utils._walg.wal import WAL_FOLDER, backup_segments, segment_of

_MARKED = re.compile(r'Object marked for deletion: (\S+)')


def module_spec():
    """The module's ``AnsibleModule`` arguments: the wal-g options and the policy."""
    spec = walg_spec()
    spec.update(keep_daily=dict(type='int', default=7), keep_weekly=dict(type='int', default=4),
                recovery_window_days=dict(type='int', default=7))
    return dict(argument_spec=spec)


def secrets(params):
    """The values ``module_main`` masks (:func:`~.cli.walg_secrets`)."""
    return walg_secrets(params)


def backup_objects(objects, name):
    """The keys of backup ``name`` among ``objects`` (its folder ``basebackups_005/<name>/`` and its stop sentinel)."""
    folder = '%s/%s/' % (BACKUPS_FOLDER, name)
    sentinel = '%s/%s%s' % (BACKUPS_FOLDER, name, SENTINEL_SUFFIX)
    return [o['name'] for o in objects if o['name'].startswith(folder) or o['name'] == sentinel]


def apply_retention(params, check_mode=False):
    """Run ``walg_retention``: see the module's documentation for options and return values.

    :returns: dict ``changed``, ``keep``, ``delete``, ``wal_delete``, ``bytes_freed`` and the rest of
        :func:`~.retention.plan` but its object list, ``seconds`` (``plan``, ``delete``, ``total``).
    :raises PgopsError: for a bad policy, a broken delta chain, a wal-g failure, a wal-g dry run marking an object
        the plan keeps (nothing of that step is deleted), or a storage that does not match the plan afterwards.
    """
    validate_policy(params['keep_daily'], params['keep_weekly'], params['recovery_window_days'])
    began = time.monotonic()
    seconds = {}
    cli = WalgCli(params)
    with timed(seconds, 'plan'):
        backups = backup_records(cli)
        backup_keys = list_objects(cli, BACKUPS_FOLDER)
        wal = list_objects(cli, WAL_FOLDER)
        planned = plan(backups, wal, datetime.datetime.now(datetime.timezone.utc), params['keep_daily'],
                       params['keep_weekly'], params['recovery_window_days'])
    doomed = dict((name, backup_objects(backup_keys, name)) for name in planned['delete'])
    sizes = dict((o['name'], o['size']) for o in backup_keys + wal)
    doomed_keys = set(k for keys in doomed.values() for k in keys) | set(planned['wal_delete_objects'])
    result = dict((k, v) for k, v in planned.items() if k != 'wal_delete_objects')
    result.update(changed=bool(doomed_keys), prefix=params['prefix'], seconds=seconds,
                  bytes_freed=sum(sizes[k] for k in doomed_keys))
    if check_mode or not doomed_keys:
        seconds['total'] = seconds_since(began)
        return result
    with timed(seconds, 'delete'):
        by_name = dict((b['name'], b) for b in backups)
        for name in sorted(planned['delete'], key=lambda n: moment(by_name[n]['finish_time']), reverse=True):
            with _gone_is_done():
                _confirmed_delete(cli, ['delete', 'target', name], doomed_keys, 'deleting backup %s' % name, BACKUPS_FOLDER)
        kept = [by_name[k['name']] for k in planned['keep']]
        removed = set()
        if _garbage_below(planned['wal_delete_objects'], kept):
            removed = _confirmed_delete(cli, ['delete', 'garbage', 'ARCHIVES'], doomed_keys,
                                        'deleting the WAL before the oldest kept backup', WAL_FOLDER)
        for key in planned['wal_delete_objects']:
            if key not in removed:
                with _gone_is_done():
                    cli.output(['st', 'rm', key], 'deleting %s' % key)
    _check_storage(cli, planned, backup_keys + wal, doomed_keys)
    seconds['total'] = seconds_since(began)
    return result


@contextlib.contextmanager
def _gone_is_done():
    """A deletion whose object another run (or an earlier, interrupted one) already removed is done, not failed:
    wal-g says "does not exist" (``delete target``, ``st rm``). Whether the storage matches the plan is checked once
    at the end (:func:`_check_storage`)."""
    try:
        yield
    except PgopsError as exc:
        if 'does not exist' not in exc.msg and 'was not found' not in exc.msg:
            raise


def _garbage_below(wal_keys, kept):
    """Whether the plan deletes WAL below the first segment of the oldest kept backup that is not permanent (what
    ``delete garbage ARCHIVES`` removes)."""
    firsts = [backup_segments(b)[1] for b in kept if not b.get('is_permanent')]
    if not firsts:
        return False
    return any(where[1] < min(firsts) for where in map(segment_of, wal_keys) if where)


def _confirmed_delete(cli, args, allowed, what, folder):
    """``wal-g <args>`` as a dry run; then, when everything it marks is in ``allowed`` (set of keys), confirmed.

    :param folder: the folder wal-g names the objects in when it gives them without one (``delete target`` logs
        ``base_.../metadata.json``, relative to ``basebackups_005``).
    :returns: set of the keys it deleted (those its dry run marked).
    :raises PgopsError: naming the objects the dry run marked that the plan keeps; nothing is deleted then.
    """
    marked = [name if name.startswith((BACKUPS_FOLDER + '/', WAL_FOLDER + '/')) else '%s/%s' % (folder, name)
              for name in _MARKED.findall(cli.log(args, what + ', dry run', whole=True))]
    outside = sorted(set(marked) - allowed)
    if outside:
        raise PgopsError('wal-g %s would delete %d object(s) the retention plan keeps (%s); nothing was deleted by it. '
                         'Report this with the plan (check mode).' % (' '.join(args), len(outside), ', '.join(outside[:5])))
    if marked:
        cli.log(args + ['--confirm'], what)
    return set(marked)


def _check_storage(cli, planned, before, doomed_keys):
    """Read the storage again: every kept object is there, every planned deletion is gone.

    :raises PgopsError: listing what is wrong.
    """
    after = set(o['name'] for o in list_objects(cli, BACKUPS_FOLDER) + list_objects(cli, WAL_FOLDER))
    lost = sorted(o['name'] for o in before if o['name'] not in doomed_keys and o['name'] not in after)
    left = sorted(k for k in doomed_keys if k in after)
    if lost or left:
        raise PgopsError('after retention, the storage %s does not match the plan: %s%s.' % (
            cli.prefix,
            ('%d object(s) the plan keeps are gone (%s)' % (len(lost), ', '.join(lost[:5]))) if lost else '',
            ('%s%d planned deletion(s) are still there (%s)' % ('; ' if lost else '', len(left), ', '.join(left[:5]))) if left else ''),
            keep=planned['keep'], delete=planned['delete'])
