# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``walg_backup`` module: ``wal-g backup-push`` of a data directory, full or delta, permanent or not, with the
backup it made read back from the storage.

Whether wal-g takes a delta (wal-g 3.0.9, ``internal/databases/postgres/delta_backup_configurator.go``, which
:func:`planned_kind` follows for check mode): never with ``WALG_DELTA_MAX_STEPS=0``; otherwise against LATEST (the
backup whose stop sentinel was written last), unless there is none, LATEST's chain already holds that many deltas,
LATEST has no start LSN, or LATEST is permanent and the new backup is not.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import seconds_since, timed
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    connect, connecting, connection_secrets, describe_server, libpq_environment)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import advisory_lock_key, try_session_advisory_lock
from ansible_collections.pgops.resilience.plugins.module_utils._walg.backups import backup_record, latest_entry
from ansible_collections.pgops.resilience.plugins.module_utils._walg.catalog import list_entries, read_sentinel
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli, walg_secrets, walg_spec

# The server-wide advisory lock walg_backup holds while it pushes (PostgreSQL docs, "Advisory Lock Functions").
PUSH_LOCK_KEY = advisory_lock_key('pgops.resilience', 'walg_backup')
_WROTE = re.compile(r'Wrote backup with name (base_[0-9A-F]{24}(?:_D_[0-9A-F]{24})?)')
_STARTED = re.compile(r'Started backup with name (base_[0-9A-F]{24}(?:_D_[0-9A-F]{24})?)')


def module_spec():
    """The module's ``AnsibleModule`` arguments: the wal-g options, the PostgreSQL connection options (wal-g connects
    through libpq's environment), ``data_directory``, ``permanent``, ``delta_max_steps``, ``user_data``."""
    spec = walg_spec()
    spec.update(
        data_directory=dict(type='path', required=True),
        permanent=dict(type='bool', default=False),
        delta_max_steps=dict(type='int', default=0),
        user_data=dict(type='raw'),
    )
    return connecting(dict(argument_spec=spec))


def secrets(params):
    """The values ``module_main`` masks: the wal-g ones and the PostgreSQL password."""
    return walg_secrets(params) + connection_secrets(params)


def validate(params):
    """Refuse options that cannot make a backup.

    :raises PgopsError: for a negative ``delta_max_steps``, a ``data_directory`` that is not a PostgreSQL data
        directory, or ``user_data`` that is not JSON.
    """
    if params['delta_max_steps'] < 0:
        raise PgopsError('delta_max_steps must be 0 (always a full backup) or the number of deltas allowed after a '
                         'full one, not %d.' % params['delta_max_steps'])
    datadir = params['data_directory']
    if not os.path.isfile(os.path.join(datadir, 'PG_VERSION')):
        raise PgopsError('data_directory %s is not a PostgreSQL data directory (no PG_VERSION): give the directory of '
                         'the server that login_host / login_port reach.' % datadir)
    if params.get('user_data') is not None:
        try:
            json.dumps(params['user_data'])
        except (TypeError, ValueError) as exc:
            raise PgopsError('user_data must be JSON (a dict, a list, text or a number): %s.' % exc)


def planned_kind(cli, params):
    """What ``backup-push`` will take: ``('full', None, reason)`` or ``('delta', origin name, reason)``.

    :raises PgopsError: when the storage cannot be read.
    """
    steps = params['delta_max_steps']
    if steps == 0:
        return 'full', None, 'delta_max_steps is 0'
    latest = latest_entry(list_entries(cli))
    if latest is None:
        return 'full', None, 'there is no backup yet'
    name = latest['backup_name']
    sentinel = read_sentinel(cli, name)
    if (sentinel.get('DeltaCount') or 0) + 1 > steps:
        return 'full', None, 'the chain of %s already holds delta_max_steps=%d delta(s)' % (name, steps)
    if sentinel.get('LSN') is None:
        return 'full', None, '%s records no start LSN' % name
    if latest.get('is_permanent') and not params['permanent']:
        return 'full', None, '%s is permanent: wal-g takes no delta from it for a backup that is not' % name
    return 'delta', name, 'a delta against %s, the newest backup' % name


@contextlib.contextmanager
def one_push_at_a_time(params):
    """Hold a session-level advisory lock on the server while the block runs, or refuse at once.

    wal-g names a backup after the WAL segment it starts in: two pushes of one server that start in the same segment
    write one name twice, each over the other's objects, and the storage then holds a backup that restores neither
    (measured with wal-g 3.0.9: both said "Wrote backup with name base_...03"). The lock is released when the
    session ends, also when the module is killed.

    :raises PgopsError: when another ``walg_backup`` of the server holds the lock, or the server cannot be reached.
    """
    conn = connect(params)
    try:
        with pg_errors('taking the walg_backup advisory lock'):
            acquired = try_session_advisory_lock(conn, PUSH_LOCK_KEY)
        if not acquired:
            raise PgopsError('another walg_backup of %s is pushing a base backup (it holds advisory lock %d); two pushes '
                             'at once can write one backup name twice. Run again when it has finished.'
                             % (describe_server(params), PUSH_LOCK_KEY))
        yield
    finally:
        conn.close()


def take_backup(params, check_mode=False):
    """Run ``walg_backup``: see the module's documentation for options and return values.

    :returns: dict ``changed``, ``kind`` (``full`` / ``delta``), ``delta_origin``, ``reason``, ``backup`` (the record
        of :func:`~.backups.backup_record`; None in check mode), ``seconds`` (``push``, ``total``).
    :raises PgopsError: for bad options, or when wal-g fails (its message, secrets masked).
    """
    validate(params)
    began = time.monotonic()
    cli = WalgCli(params, base_env=libpq_environment(params))
    cli.env['WALG_DELTA_MAX_STEPS'] = str(params['delta_max_steps'])
    kind, origin, reason = planned_kind(cli, params)
    result = dict(changed=True, kind=kind, delta_origin=origin, reason=reason, backup=None, seconds={})
    if check_mode:
        return result
    args = ['backup-push', params['data_directory']]
    if params['permanent']:
        args.append('--permanent')
    if params.get('user_data') is not None:
        args += ['--add-user-data', json.dumps(params['user_data'], sort_keys=True)]
    with one_push_at_a_time(params), timed(result['seconds'], 'push'):
        try:
            log = cli.log(args, 'pushing a base backup of %s' % params['data_directory'])
        except PgopsError as exc:
            if 'sockets not supported' in exc.msg:
                raise PgopsError('%s. The data directory holds a Unix socket, which wal-g cannot back up: set '
                                 'unix_socket_directories to a directory outside it.' % exc.msg.rstrip('.'), **exc.details)
            raise _ended_by_signal(exc, params['data_directory'], cli.prefix)
    found = _WROTE.findall(log)
    if not found:
        raise PgopsError('wal-g backup-push ended without naming the backup it wrote; its log ends with: %s' % log[-1000:])
    name = found[-1]
    # Only the new backup's sentinel is read: the storage may hold hundreds of backups.
    entries = [e for e in list_entries(cli) if e.get('backup_name') == name]
    if not entries:
        raise PgopsError('wal-g backup-push wrote %s, but backup-list in %s does not show it.' % (name, cli.prefix))
    record = backup_record(entries[0], read_sentinel(cli, name))
    result.update(backup=record, kind='full' if record['is_full'] else 'delta', delta_origin=record['delta_origin'])
    result['seconds']['total'] = seconds_since(began)
    return result


def _ended_by_signal(exc, datadir, prefix):
    """``exc``, wal-g backup-push's failure; when a signal ended wal-g (SIGKILL from the OOM killer or an operator), a
    message that says so first, and what it leaves: the server aborted the backup when wal-g's session closed
    (PostgreSQL docs, 26.3.3.1: a non-exclusive backup is aborted when its connection ends before pg_backup_stop), and
    without its stop sentinel the uploaded objects are no backup (wal-g's backup-list and restores ignore them).
    Otherwise ``exc`` itself. Its message keeps wal-g's log after the explanation.
    """
    returncode = exc.details.get('rc')
    if returncode is None or returncode >= 0:
        return exc
    try:
        how = 'signal %d (%s)' % (-returncode, signal.Signals(-returncode).name)
    except ValueError:
        how = 'signal %d' % -returncode
    started = _STARTED.findall(exc.details.get('stderr') or '')
    what = ('backup %s' % started[-1]) if started else 'the backup'
    aborted = ', and the server aborted the backup when wal-g\'s connection closed' if started else ''
    return PgopsError('wal-g backup-push of %s was ended by %s before it finished %s: %s holds no complete backup from '
                      'this run (no stop sentinel, so backup-list and restores ignore what it uploaded)%s. Run walg_backup '
                      'again. %s' % (datadir, how, what, prefix, aborted, exc.msg), **exc.details)
