# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The configuration of a drill instance: the archive recovery settings of :mod:`~.._pg.recovery` with the drill's
isolation on top (:func:`drill_settings`), rendered as a marked block (:func:`render_drill_settings`) appended to
the restored ``postgresql.auto.conf``, and the drill-only ``pg_hba.conf`` (:data:`HBA_TEXT`).

Isolation: ``listen_addresses = ''`` (no TCP at all), a private socket directory, a drill-only pg_hba.conf,
``archive_mode = off`` (also on the command line, which no file can override), ``archive_command``,
``archive_library``, ``archive_cleanup_command`` and ``recovery_end_command`` emptied (a restored standby's
``archive_cleanup_command`` would delete segments from the production archive), ``external_pid_file`` moved into
the work directory (the drill would otherwise overwrite and, at shutdown, delete the production server's), ``ssl =
off`` and ``unix_socket_group = ''`` (certificate files and groups of the production host need not exist here),
``recovery_min_apply_delay = 0`` (a backup of a delayed standby), every recovery target emptied but the drill's own,
``synchronous_standby_names = ''``, ``max_logical_replication_workers = 0`` (a restored subscriber would otherwise
connect to its publisher and consume its slot). The rules are those of the PostgreSQL 15 documentation: 20.1.2
"Parameter Interaction via the Configuration File", 20.3.1 "Connection Settings", 20.5.4 "Archive Recovery", 20.5.5
"Recovery Target", 21.1 "The pg_hba.conf File".
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import major_number
from ansible_collections.pgops.resilience.plugins.module_utils._pg.recovery import (
    RECOVERY_SETTINGS, checked_settings, conf_mark, recovery_target_settings, render_settings)

DRILL_CLUSTER_NAME = 'pgops-drill'
CONF_MARK = conf_mark('restore drill')
HBA_TEXT = ('# pgops.resilience restore drill: only the drill runner connects, through its private (0700) socket directory.\n'
            'local all all trust\n')
# The settings the drill owns: ``settings`` may not name them.
OWNED_SETTINGS = RECOVERY_SETTINGS | frozenset((
    'port', 'listen_addresses', 'unix_socket_directories', 'unix_socket_group', 'hba_file', 'cluster_name', 'ssl',
    'logging_collector', 'log_destination', 'log_min_messages', 'lc_messages', 'external_pid_file',
    'archive_mode', 'archive_command', 'archive_library', 'archive_cleanup_command', 'recovery_end_command',
    'recovery_min_apply_delay', 'primary_conninfo', 'primary_slot_name', 'promote_trigger_file',
    'synchronous_standby_names', 'max_logical_replication_workers', 'data_directory', 'config_file',
))
_COMMENT = (
    '# postgresql.auto.conf is read after postgresql.conf and every file it includes, and the last value of a setting',
    '# wins (PostgreSQL 15 docs, 20.1.2): these lines override the restored configuration, archive_mode and',
    '# archive_command in an included file among them. The drill must never archive into the production WAL location.',
)


def drill_settings(pg_version, port, socket_dir, hba_file, restore_command, recovery_target=None, extra=None, pid_file=''):
    """The settings a drill appends to ``postgresql.auto.conf``, in order: ``extra`` first, then the drill's own.

    Order matters: postgresql.auto.conf is read after postgresql.conf and every file that includes (include,
    include_if_exists, include_dir), and when a setting appears more than once the last one wins (PostgreSQL 15
    docs, 20.1.2), so an included file of the restored configuration cannot turn archiving back on. The recovery
    settings come from :func:`~.._pg.recovery.recovery_target_settings` (every one written, target or not).

    :param pg_version: str, the data directory's major version (``archive_library`` exists from 15, and
        ``promote_trigger_file`` until 15; a setting the server does not know stops it).
    :param port: int; ``socket_dir``, ``hba_file``: str paths; ``restore_command``: str (20.5.4 "Archive Recovery").
    :param recovery_target: the output of :func:`~.._pg.recovery.normalize_recovery_target` or None.
    :param extra: dict of further settings (``shared_buffers`` for a smaller drill host, ...), names the drill
        owns excluded (:data:`OWNED_SETTINGS`).
    :param pid_file: str, the drill's ``external_pid_file`` in its work directory (a restored one may name the
        production server's, which the drill would overwrite and delete at shutdown); ``''`` only makes the server
        complain that it cannot write ``""``.
    :returns: list of ``(name, value)`` (Python values; see :func:`~.._pg.recovery.conf_literal`).
    :raises PgopsError: for an ``extra`` name that is malformed or owned by the drill, or a value that is a list or
        a dict.
    """
    major = major_number(pg_version)
    settings = checked_settings(extra, OWNED_SETTINGS, 'is set by the drill itself (isolation, recovery); remove it from settings.')
    settings += [
        # Reachable only through a private socket; no TCP at all (20.3.1 "Connection Settings").
        ('port', int(port)),
        ('listen_addresses', ''),
        ('unix_socket_directories', socket_dir),
        ('unix_socket_group', ''),
        ('hba_file', hba_file),
        ('ssl', False),
        ('cluster_name', DRILL_CLUSTER_NAME),
        # The whole log in the pg_ctl -l file, in English, with the LOG lines the runner follows.
        ('logging_collector', False),
        ('log_destination', 'stderr'),
        ('log_min_messages', 'warning'),
        ('lc_messages', 'C'),
        ('external_pid_file', pid_file),
        # NEVER archive into the production WAL location (archive_mode is also given on the command line).
        ('archive_mode', 'off'),
        ('archive_command', ''),
    ]
    if major >= 15:
        settings.append(('archive_library', ''))
    settings += [('archive_cleanup_command', ''), ('recovery_end_command', '')]
    settings += recovery_target_settings(restore_command, recovery_target, every=True)
    settings += [('recovery_min_apply_delay', 0), ('primary_conninfo', ''), ('primary_slot_name', '')]
    if major <= 15:
        settings.append(('promote_trigger_file', ''))
    settings += [
        ('synchronous_standby_names', ''),
        # A restored subscriber would connect to its publisher and consume the production subscription's slot.
        ('max_logical_replication_workers', 0),
    ]
    return settings


def render_drill_settings(settings, note=None):
    """The text appended to ``postgresql.auto.conf``: :data:`CONF_MARK`, why these lines win, then ``name = literal``
    lines (:func:`~.._pg.recovery.render_settings`).

    :param settings: list of ``(name, value)`` from :func:`drill_settings`.
    :param note: optional str for the header comment (such as the time of the drill).
    :returns: str ending with a newline.
    :raises PgopsError: for a value a configuration line cannot hold.
    """
    return render_settings(settings, CONF_MARK, _COMMENT, note)
