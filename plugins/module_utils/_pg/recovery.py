# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Archive recovery of a restored data directory: the settings appended to its ``postgresql.auto.conf`` and the
files that start it. One builder for every caller (a bootstrap from a base backup, a restore drill, which adds its
isolation settings on top):

- ``restore_command``: built from a WAL archive directory (:func:`archive_restore_command`) or given verbatim and
  checked (:func:`validate_restore_command`);
- the recovery target (:func:`normalize_recovery_target`) and its settings, every other kind emptied
  (:func:`recovery_target_settings`), after the caller's own settings (:func:`checked_settings`), each a
  postgresql.conf literal (:func:`conf_literal`), rendered as a marked block (:func:`render_settings`), shown with
  credential-bearing values masked (:func:`shown_settings`), and the targets removed again after recovery
  (:func:`without_recovery_targets`);
- the data directory made ready: no lock or standby files of the source, ``recovery.signal``, the block appended,
  the tree given to the server user (:func:`prepare_archive_recovery`).

The rules followed are those of the PostgreSQL 15 documentation: 26.3.4 "Recovering Using a Continuous Archive
Backup", 20.5.4 "Archive Recovery" (``%f``, ``%p``, ``%r``, ``%%`` in ``restore_command``), 20.5.5 "Recovery
Target", 20.1.2 "Parameter Interaction via the Configuration File" (postgresql.auto.conf is read last; the last
value of a setting wins; backslash escapes in string values).
"""

from __future__ import annotations

import datetime
import os
import re
import shlex

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import mask_setting

TARGET_KINDS = ('time', 'lsn', 'xid', 'name', 'immediate')
TARGET_KEYS = TARGET_KINDS + ('inclusive', 'timeline')
TARGET_SETTINGS = dict(time='recovery_target_time', lsn='recovery_target_lsn', xid='recovery_target_xid', name='recovery_target_name',
                       immediate='recovery_target')
RECOVERY_TARGETS = tuple(sorted(TARGET_SETTINGS.values()))
# The settings archive recovery is run with: a caller's extra settings may not name them.
RECOVERY_SETTINGS = frozenset(RECOVERY_TARGETS + ('restore_command', 'recovery_target_inclusive', 'recovery_target_timeline',
                                                  'recovery_target_action'))
# %-escapes of restore_command (PostgreSQL 15 docs, 20.5.4): the file name, the path, the restart point's file, a %.
_PERCENT_ESCAPE = re.compile(r'%(.?)', re.DOTALL)
_SETTING_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z')
_TARGET_LINE = re.compile(r'\s*recovery_target\w*\s*=')
_LSN = re.compile(r'[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}\Z')
# Left in the data directory by the server that was backed up: a lock file, its command line, standby mode.
_SOURCE_FILES = ('postmaster.pid', 'postmaster.opts', 'standby.signal')


def conf_mark(purpose):
    """The comment line that opens a block of settings appended by the collection (``purpose``: str, such as
    ``'restore drill'``); it finds the block again (:func:`without_recovery_targets`)."""
    return '# --- pgops.resilience %s ---' % purpose


def conf_literal(name, value):
    """Render ``value`` as a postgresql.conf value for setting ``name``.

    Booleans become ``on`` / ``off``, integers stay bare, everything else is a string literal in single quotes
    with single quotes doubled and backslashes doubled (the configuration file parser reads backslash escapes;
    PostgreSQL 15 docs, 20.1.2).

    :raises PgopsError: for a value with a line break or NUL, which a configuration line cannot hold.
    """
    if isinstance(value, bool):
        return 'on' if value else 'off'
    if isinstance(value, int):
        return str(value)
    text = '' if value is None else str(value)
    if any(c in text for c in '\n\r\0'):
        raise PgopsError('%s: the value has a line break (or NUL), which postgresql.conf cannot hold; give it on one line.' % name)
    return "'" + text.replace('\\', '\\\\').replace("'", "''") + "'"


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
    conf_literal('restore_command', command)
    return command


def normalize_recovery_target(target):
    """Validate a recovery target and return it in a canonical form (PostgreSQL 15 docs, 20.5.5 "Recovery Target").

    :param target: None, or a dict with exactly one of ``time`` (str or aware ``datetime``; a timestamp with time
        zone as PostgreSQL reads it), ``lsn`` (``'0/3000060'``), ``xid`` (int or digits), ``name`` (a restore point
        made with ``pg_create_restore_point``), ``immediate`` (true: stop at the end of the backup, the earliest
        consistent point); plus optional ``inclusive`` (bool, default true: stop just after the target) and
        ``timeline`` (``'latest'`` (default), ``'current'`` or a timeline number).
    :returns: None, or dict ``{kind: value, 'inclusive': bool, 'timeline': str}``.
    :raises PgopsError: for unknown keys, no or several kinds, or a malformed value.
    """
    if target is None:
        return None
    if not isinstance(target, dict):
        raise PgopsError('recovery_target must be a dict such as {time: "2025-01-29 10:30:00+00"}, not %r.' % (target,))
    unknown = sorted(set(target) - set(TARGET_KEYS))
    if unknown:
        raise PgopsError('recovery_target: unknown key(s) %s; use one of %s, plus inclusive and timeline.'
                         % (', '.join(unknown), ', '.join(TARGET_KINDS)))
    kinds = [k for k in TARGET_KINDS if target.get(k) not in (None, '', False)]
    timeline = target.get('timeline')
    if len(kinds) > 1:
        raise PgopsError('recovery_target names %s: give exactly one of %s.' % (' and '.join(kinds), ', '.join(TARGET_KINDS)))
    if not kinds and timeline in (None, ''):
        raise PgopsError('recovery_target is empty: give one of %s (or omit recovery_target to replay the whole archive).'
                         % ', '.join(TARGET_KINDS))
    out = {}
    if kinds:
        kind = kinds[0]
        out[kind] = _target_value(kind, target[kind])
        inclusive = target.get('inclusive')
        if inclusive is not None and not isinstance(inclusive, bool):
            raise PgopsError('recovery_target.inclusive must be true or false, not %r.' % (inclusive,))
        out['inclusive'] = True if inclusive is None else inclusive
    timeline = 'latest' if timeline in (None, '') else str(timeline).strip()
    if timeline not in ('latest', 'current') and not timeline.isdigit():
        raise PgopsError("recovery_target.timeline %r must be 'latest', 'current' or a timeline number." % (target.get('timeline'),))
    out['timeline'] = timeline
    return out


def _target_value(kind, given):
    """The canonical value of one kind of recovery target (see :func:`normalize_recovery_target`)."""
    value = given
    if kind == 'time':
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                raise PgopsError('recovery_target.time %s has no time zone; give an aware datetime or a string with an offset.' % value)
            value = value.isoformat()
        return str(value).strip()
    if kind == 'lsn':
        value = str(value).strip().upper()
        if not _LSN.match(value):
            raise PgopsError('recovery_target.lsn %r is not an LSN such as 0/3000060.' % (given,))
        return value
    if kind == 'xid':
        value = str(value).strip()
        if not value.isdigit():
            raise PgopsError('recovery_target.xid %r is not a transaction ID (digits).' % (given,))
        return value
    if kind == 'immediate':
        if value is not True:
            raise PgopsError('recovery_target.immediate must be true (or absent).')
        return value
    return str(value)


def checked_settings(extra, owned, refusal):
    """A caller's further settings (``shared_buffers``, ``port``...), sorted by name, to come first in the block so
    that what follows wins.

    :param extra: dict or None.
    :param owned: set of lower-case names the caller writes itself (such as :data:`RECOVERY_SETTINGS`).
    :param refusal: str, what the error for an owned name says after it (what to use instead).
    :returns: list of ``(name, value)``.
    :raises PgopsError: for a malformed or owned name, or a value that is a dict or a list.
    """
    settings = []
    for name, value in sorted((extra or {}).items()):
        if not _SETTING_NAME.match(str(name)):
            raise PgopsError('settings: %r is not a configuration parameter name.' % (name,))
        if str(name).lower() in owned:
            raise PgopsError('settings: %s %s' % (name, refusal))
        if isinstance(value, (dict, list)):
            raise PgopsError('settings: %s must be a single value, not %s.' % (name, type(value).__name__))
        settings.append((str(name), value))
    return settings


def recovery_target_settings(restore_command, recovery_target=None, every=False):
    """The archive recovery settings: ``restore_command``, every kind of recovery target emptied but the chosen one,
    then the chosen one, ``recovery_target_inclusive`` and ``recovery_target_action = promote`` (with a target, or
    with ``every``) and ``recovery_target_timeline``.

    Order matters: the server applies each setting at the place of its last occurrence, and naming a second kind of
    target while one is set is an error ("multiple recovery targets specified"), even with an empty value; so every
    kind is emptied first (a target left over from an earlier PITR in the restored configuration is gone).

    :param restore_command: str (20.5.4 "Archive Recovery").
    :param recovery_target: the output of :func:`normalize_recovery_target`, or None (replay the whole archive).
    :param every: bool: also write inclusive and action without a target, so that nothing of the restored
        configuration's recovery settings is left (a drill).
    :returns: list of ``(name, value)`` (Python values; see :func:`conf_literal`).
    """
    target = recovery_target or {}
    chosen = [(TARGET_SETTINGS[kind], 'immediate' if kind == 'immediate' else target[kind]) for kind in TARGET_KINDS if kind in target]
    settings = [('restore_command', restore_command)]
    settings += [(name, '') for name in RECOVERY_TARGETS if name not in dict(chosen)]
    settings += chosen
    if chosen or every:
        settings += [('recovery_target_inclusive', target.get('inclusive', True)), ('recovery_target_action', 'promote')]
    settings.append(('recovery_target_timeline', target.get('timeline', 'latest')))
    return settings


def render_settings(settings, mark, comment=(), note=None):
    """The block appended to ``postgresql.auto.conf``: an empty line, ``mark`` (see :func:`conf_mark`) with
    ``note``, the ``comment`` lines, then one ``name = literal`` line per setting.

    :param settings: list of ``(name, value)``.
    :param comment: list of str, lines starting with ``#``.
    :param note: optional str for the header (the time, the bundle's name).
    :returns: str ending with a newline.
    :raises PgopsError: for a value a configuration line cannot hold (:func:`conf_literal`).
    """
    lines = ['', mark + (' ' + note if note else '')] + list(comment)
    lines += ['%s = %s' % (name, conf_literal(name, value)) for name, value in settings]
    return '\n'.join(lines) + '\n'


def shown_settings(settings):
    """The lines of :func:`render_settings` as a result or a message may show them: the value of every setting that
    can carry a credential masked (:func:`~.._core.redaction.mask_setting`: ``restore_command`` and any
    ``*_command``, ``*conninfo``, passwords), DSN and URI passwords in the others too.

    :param settings: list of ``(name, value)``.
    :returns: list of str, ``name = literal``.
    """
    return ['%s = %s' % (name, conf_literal(name, mask_setting(name, value) if isinstance(value, str) else value))
            for name, value in settings]


def without_recovery_targets(text, mark):
    """``text`` (a postgresql.auto.conf) without the ``recovery_target*`` lines of the block that ``mark`` opens, so
    that a base backup taken of the new server later does not carry a target from the past (which would make its own
    recovery stop before its consistent point). Lines before the block are left alone."""
    head, found, block = text.partition(mark)
    if not found:
        return text
    kept = [line for line in block.split('\n') if not _TARGET_LINE.match(line)]
    return head + found + '\n'.join(kept)


def prepare_archive_recovery(datadir, block, server, written_by, links=None):
    """Make a restored data directory start archive recovery (26.3.4): remove the lock and standby files of the
    server it was copied from (``postmaster.pid``, ``postmaster.opts``, ``standby.signal``: archive recovery, not
    standby mode), make ``pg_wal`` when the restore left it out, write ``recovery.signal``, write a
    ``postgresql.conf`` when there is none (Debian-style clusters keep it outside the data directory, so their base
    backups lack it), append ``block`` to ``postgresql.auto.conf`` (created 0600 when missing: it holds
    ``restore_command``), then give the tree (and the directories ``links`` lead to) to the server user, 0700.

    :param block: str, from :func:`render_settings`.
    :param server: :class:`~.server_user.ServerUser`.
    :param written_by: str, who writes a missing postgresql.conf, for its one comment line.
    :param links: dict of :func:`~.backup_label.data_directory_links`, or None.
    :raises OSError: as the file operations do.
    """
    for name in _SOURCE_FILES:
        path = os.path.join(datadir, name)
        if os.path.lexists(path):
            os.unlink(path)
    wal_dir = os.path.join(datadir, 'pg_wal')
    if not os.path.lexists(wal_dir):
        os.mkdir(wal_dir, 0o700)  # some restores (wal-g without WAL) leave it out; the server needs it
    with open(os.path.join(datadir, 'recovery.signal'), 'w', encoding='utf-8'):
        pass
    conf = os.path.join(datadir, 'postgresql.conf')
    if not os.path.exists(conf):
        with open(conf, 'w', encoding='utf-8') as handle:
            handle.write('# written by %s: the restored data directory had none.\n' % written_by)
    fd = os.open(os.path.join(datadir, 'postgresql.auto.conf'), os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    with os.fdopen(fd, 'w', encoding='utf-8') as handle:
        handle.write(block)
    server.chown_tree(datadir)
    for target in (links or {}).values():
        if target and os.path.isdir(target):
            server.chown_tree(target)
    os.chmod(datadir, 0o700)
