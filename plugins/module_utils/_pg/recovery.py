# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The archive recovery settings a bootstrap from a base backup (:mod:`bootstrap`) appends to the restored data
directory's ``postgresql.auto.conf``, and their removal once recovery has ended. Pure functions of their arguments.

- ``restore_command``: built from a WAL archive directory (:func:`archive_restore_command`) or given verbatim and
  checked (:func:`validate_restore_command`);
- the recovery target (only ``recovery_target_time``; every other kind emptied) and the timeline
  (:func:`recovery_settings`), rendered after a marked comment (:func:`render_recovery_settings`), shown with
  credential-bearing values masked (:func:`shown_settings`), and the targets removed again after recovery
  (:func:`without_recovery_targets`).

The rules followed are those of the PostgreSQL 15 documentation: 26.3.4 "Recovering Using a Continuous Archive
Backup", 20.5.4 "Archive Recovery" (``%f``, ``%p``, ``%r``, ``%%`` in ``restore_command``), 20.5.5 "Recovery
Target" and 20.1.2 "Parameter Interaction via the Configuration File" (postgresql.auto.conf is read last; the last
value wins).
"""

from __future__ import annotations

import os
import re
import shlex

from ansible_collections.pgops.resilience.plugins.module_utils._drill import runner as drill
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import mask_setting

CONF_MARK = '# --- pgops.resilience bootstrap from base backup ---'
_RECOVERY_TARGETS = ('recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time',
                     'recovery_target_xid')
# The settings the bootstrap writes itself: ``settings`` may not name them (use the options).
OWNED_SETTINGS = frozenset(_RECOVERY_TARGETS + ('restore_command', 'recovery_target_inclusive', 'recovery_target_timeline',
                                                'recovery_target_action'))
# %-escapes of restore_command (PostgreSQL 15 docs, 20.5.4): the file name, the path, the restart point's file, a %.
_PERCENT_ESCAPE = re.compile(r'%(.?)', re.DOTALL)
_SETTING_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z')
_TARGET_LINE = re.compile(r'\s*recovery_target\w*\s*=')


def archive_restore_command(directory):
    """The ``restore_command`` that copies WAL files from the directory ``directory`` (PostgreSQL 15 docs, 26.3.4:
    ``cp /mnt/server/archivedir/%f "%p"``).

    The directory is shell-quoted (the server runs the command with ``sh -c``), and every ``%`` in it is doubled,
    since the server replaces ``%f``, ``%p``, ``%r`` and ``%%`` anywhere in the command (20.5.4).

    :param directory: str, an absolute path.
    :returns: str.
    :raises PgopsError: for a relative path, or one with a line break (a configuration line cannot hold it).
    """
    if not directory or not os.path.isabs(directory):
        raise PgopsError('wal_archive_directory %r must be an absolute path: the directory the server copies WAL files '
                         'from.' % (directory,))
    if any(c in directory for c in '\n\r\0'):
        raise PgopsError('wal_archive_directory has a line break (or NUL), which restore_command cannot hold.')
    quoted = shlex.quote(os.path.normpath(directory)).replace('%', '%%')
    return 'cp %s/%%f "%%p"' % quoted


def validate_restore_command(command):
    """Check a ``restore_command`` given verbatim: it must name ``%f`` and ``%p``, and every other ``%`` must be one
    of the server's escapes (``%r``, ``%%``), since the server passes an unknown one through unchanged, which is
    never what was meant.

    :returns: str, the command.
    :raises PgopsError: naming the problem, never the command (it may hold a secret key or a password).
    """
    if not isinstance(command, str) or not command.strip():
        raise PgopsError('restore_command is empty: give the shell command that copies WAL file %f to %p.')
    escapes = [m.group(1) for m in _PERCENT_ESCAPE.finditer(command)]
    unknown = sorted(set(e for e in escapes if e not in ('f', 'p', 'r', '%')))
    if unknown:
        raise PgopsError('restore_command has %s: the server only replaces %%f, %%p, %%r and %%%%. Write %%%% for a '
                         'literal %%.' % ', '.join(repr('%' + e) for e in unknown))
    if 'f' not in escapes or 'p' not in escapes:
        raise PgopsError('restore_command must contain %f (the WAL file name) and %p (where to copy it).')
    drill.conf_literal('restore_command', command)
    return command


def recovery_settings(restore_command, recovery_target=None, extra=None):
    """The settings a bootstrap appends to ``postgresql.auto.conf``, in order: ``extra`` first, then the recovery
    settings, so that they win over anything earlier (the last value of a setting wins, 20.1.2).

    Every kind of recovery target is emptied before the chosen one is set: naming two kinds is an error ("multiple
    recovery targets specified"), and one left over in the restored configuration would stop the replay early.

    :param restore_command: str (see :func:`archive_restore_command`, :func:`validate_restore_command`).
    :param recovery_target: None or the output of :func:`drill.normalize_recovery_target` with ``time``.
    :param extra: dict of further settings (``port``, ``archive_mode``...), names the bootstrap owns excluded.
    :returns: list of ``(name, value)``.
    :raises PgopsError: for a malformed or owned setting name, or a value a configuration line cannot hold.
    """
    settings = []
    for name, value in sorted((extra or {}).items()):
        if not _SETTING_NAME.match(str(name)):
            raise PgopsError('settings: %r is not a configuration parameter name.' % (name,))
        if str(name).lower() in OWNED_SETTINGS:
            raise PgopsError('settings: %s is written by the bootstrap itself; use wal_archive_directory / restore_command '
                             'and recovery_target_time instead.' % name)
        if isinstance(value, (dict, list)):
            raise PgopsError('settings: %s must be a single value, not %s.' % (name, type(value).__name__))
        settings.append((str(name), value))
    settings.append(('restore_command', restore_command))
    target = recovery_target or {}
    chosen = [('recovery_target_time', target['time'])] if target.get('time') else []
    settings += [(name, '') for name in _RECOVERY_TARGETS if name not in dict(chosen)]
    settings += chosen
    if chosen:
        settings += [('recovery_target_inclusive', target.get('inclusive', True)), ('recovery_target_action', 'promote')]
    settings.append(('recovery_target_timeline', target.get('timeline', 'latest')))
    for name, value in settings:
        drill.conf_literal(name, value)
    return settings


def shown_settings(settings):
    """The lines of :func:`render_recovery_settings` as a result or a message may show them: the value of every
    setting that can carry a credential masked (``common.mask_setting``: ``restore_command`` and any ``*_command``,
    ``*conninfo``, passwords), DSN and URI passwords in the others too.

    :param settings: list of ``(name, value)`` from :func:`recovery_settings`.
    :returns: list of str, ``name = literal``.
    """
    return ['%s = %s' % (name, drill.conf_literal(name, mask_setting(name, value) if isinstance(value, str) else value))
            for name, value in settings]


def render_recovery_settings(settings, note=None):
    """The block appended to ``postgresql.auto.conf``: a marked comment, then ``name = literal`` lines.

    :param settings: list of ``(name, value)`` from :func:`recovery_settings`.
    :param note: optional str for the header (such as the bundle's name).
    """
    lines = [
        '',
        CONF_MARK + (' ' + note if note else ''),
        '# Archive recovery from a base backup (PostgreSQL 15 docs, 26.3.4). postgresql.auto.conf is read last and the',
        '# last value of a setting wins (20.1.2). The recovery_target lines are removed once recovery has ended.',
    ]
    lines += ['%s = %s' % (name, drill.conf_literal(name, value)) for name, value in settings]
    return '\n'.join(lines) + '\n'


def without_recovery_targets(text):
    """``text`` (a postgresql.auto.conf) without the ``recovery_target*`` lines of the bootstrap's block, so that a
    base backup taken of the new server later does not carry a target from the past (which would make its own
    recovery stop before its consistent point). Lines before the block are left alone."""
    head, mark, block = text.partition(CONF_MARK)
    if not mark:
        return text
    kept = [line for line in block.split('\n') if not _TARGET_LINE.match(line)]
    return head + mark + '\n'.join(kept)
