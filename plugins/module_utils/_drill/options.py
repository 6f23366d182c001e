# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every physical restore drill module shares (barman-cloud's, wal-g's): the options (the recovery target, the
checks, pg_amcheck, the drill instance's database, user, scratch area, programs and server user, ``keep``), the runner's
``recovery_target`` made from them (PostgreSQL 15 docs, 20.5.5 "Recovery Target": one target at most), and the
drill itself: a scratch directory, the fetch of the backup into it, then :func:`~.runner.run_drill` with the
options. A capability gives only its fetch command and its ``restore_command``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._drill.runner import run_drill


def drill_argument_spec():
    """Argument spec of the shared drill options (documented in each drill module).

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(
        recovery_target_time=dict(type='str'),
        recovery_target_lsn=dict(type='str'),
        recovery_target_xid=dict(type='str'),
        recovery_target_name=dict(type='str'),
        recovery_target_inclusive=dict(type='bool', default=True),
        checks=dict(type='list', elements='dict'),
        row_counts=dict(type='bool'),
        amcheck=dict(type='bool', default=False),
        database=dict(type='str', default='postgres'),
        user=dict(type='str', default='postgres'),
        scratch_parent=dict(type='path'),
        pg_bindir=dict(type='path'),
        server_user=dict(type='str'),
        keep=dict(type='bool', default=False),
    )


# PostgreSQL takes one recovery target at most.
RECOVERY_TARGETS_EXCLUSIVE = [('recovery_target_time', 'recovery_target_lsn', 'recovery_target_xid', 'recovery_target_name')]


def recovery_target(params):
    """The runner's ``recovery_target`` dict (``{kind: value, 'inclusive': bool}``) from the flat options, or None."""
    for kind in ('time', 'lsn', 'xid', 'name'):
        value = params.get('recovery_target_' + kind)
        if value:
            return {kind: value, 'inclusive': params['recovery_target_inclusive']}
    return None


def refuse_scratch_parent(params):
    """A scratch directory is made in ``scratch_parent`` and later removed: never in a system directory (check mode
    too; see :func:`~.._core.paths.refuse_system_directory`).

    :raises PgopsError: for a system directory.
    """
    if params.get('scratch_parent'):
        refuse_system_directory(params['scratch_parent'], 'scratch_parent', within=True)


def scratch_directory(params, kind):
    """A new scratch directory for a drill (in ``scratch_parent``, else the system temporary directory), 0755 so that
    the server user reaches the data directory inside.

    :param kind: str, such as ``'walg'``, for its name.
    :returns: ``(scratch, datadir)``, paths; ``datadir`` does not exist yet.
    """
    scratch = tempfile.mkdtemp(prefix='pgops-%s-drill-' % kind, dir=params.get('scratch_parent'))
    os.chmod(scratch, 0o755)
    return scratch, os.path.join(scratch, 'data')


def fetch_backup(fetch, what, scratch, params, explain=None):
    """Run ``fetch()`` (the backup into the scratch data directory) and return its seconds (float).

    :param what: str, the backup, for the error (``'backup base_0000...'``).
    :param explain: callable ``PgopsError -> str`` adding what wal-g's or barman's message leaves out, or None.
    :raises PgopsError: with ``verdict='failed'`` and ``phase='fetch'``; the scratch directory is removed first,
        unless ``keep``.
    """
    started = time.monotonic()
    try:
        fetch()
    except PgopsError as exc:
        if not params['keep']:
            shutil.rmtree(scratch, ignore_errors=True)
        extra = explain(exc) if explain else ''
        raise PgopsError('The drill failed while fetching %s: %s%s' % (what, exc.msg, extra), verdict='failed', phase='fetch')
    return time.monotonic() - started


def drill_with_options(datadir, restore_command, params, scratch, env, fetch_seconds, secrets):
    """:func:`~.runner.run_drill` on the restored ``datadir`` with the drill options of ``params`` (see
    :func:`drill_argument_spec`, plus ``timeout``).

    :param env: dict, the settings ``restore_command`` needs in the server's environment (credentials).
    :param secrets: list of str to mask.
    :returns: dict, the runner's result.
    """
    return run_drill(datadir, restore_command, scratch_dir=scratch, bindir=params.get('pg_bindir'),
                     server_user=params.get('server_user'), env=env, recovery_target=recovery_target(params),
                     checks=params.get('checks'), row_counts=params.get('row_counts'), database=params['database'],
                     user=params['user'], timeout=params['timeout'], keep=params['keep'], fetch_seconds=fetch_seconds,
                     secrets=secrets, amcheck=params.get('amcheck', False))
