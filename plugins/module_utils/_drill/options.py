# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options every physical restore drill module shares (barman-cloud's, wal-g's): the recovery target, the
checks, the drill instance's database, user, scratch area, programs and server user, and ``keep``; and the
runner's ``recovery_target`` made from them (PostgreSQL 15 docs, 20.5.5 "Recovery Target": one target at most)."""

from __future__ import annotations


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
