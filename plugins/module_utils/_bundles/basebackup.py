# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The weekly physical base backup bundle of the reference runbook ``postgres-infra-setup.md``,
``basebackup-YYYYMMDD-HHMMSSmmm-<run>.bundle.tar.gz`` (see :mod:`bundle`): taking it, and reading the pg_basebackup
tar-format backup it holds.

- :func:`take_base_backup` (``pg_basebackup_bundle``): ``pg_basebackup -Ft -z -X stream`` into a staging directory, then
  one bundle (:mod:`bundle`) holding ``base.tar.gz``, ``pg_wal.tar.gz`` and ``backup_manifest``, its manifest info
  recording the server, the timeline and the start / stop LSN; stored, verified, and only then retention: a new bundle
  is stored and verified before retention deletes an old one.
- Reading a backup, for the bundle and for the bootstrap from it (:mod:`bootstrap`): :func:`backup_facts` (what
  ``backup_label`` and ``backup_manifest`` say), :func:`read_tar_member`, :func:`extract_base_tar` (files and
  directories only, never outside the target).

Plain Python over a connection and the file system; no Ansible. The rules followed are those of the PostgreSQL 15
documentation, "pg_basebackup" (tar format, ``-X stream``, ``backup_manifest``, a REPLICATION role and free WAL
senders) and 26.3.4 "Recovering Using a Continuous Archive Backup" (what a base backup holds).

Beside it: :mod:`.bootstrap` (``pg_bootstrap_basebackup``), :mod:`.wipe` (``pg_wipe_data_directory``), the data
directory checks those two share (:mod:`~.._pg.datadir`) and the recovery settings a bootstrap writes
(:mod:`~.._pg.recovery`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tarfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import refuse_system_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import run_program, warnings_of
from ansible_collections.pgops.resilience.plugins.module_utils._core.tarfiles import member_path
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_client_program, program_major
from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import seconds_since, timed
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.backup_label import parse_backup_label
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import server_identity
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    connect, connection_secrets, describe_server, libpq_environment)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._core.work import make_staging_directory
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import check_file_mode
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connecting

KIND = 'base-backup'
NAME_PREFIX = 'basebackup'
SUFFIX = '.bundle.tar.gz'
PATTERN = bundle.name_pattern(NAME_PREFIX, SUFFIX)
BASE_MEMBER = 'base.tar.gz'
WAL_MEMBER = 'pg_wal.tar.gz'
MANIFEST_MEMBER = 'backup_manifest'
OUTPUT_DIR = 'basebackup'  # pg_basebackup -D <staging>/basebackup; its files become the bundle's members
CHECKPOINTS = ('fast', 'spread')
CHUNK = 1024 * 1024  # bytes per read while extracting
LABEL_LIMIT = 64 * 1024  # a backup_label is a few hundred bytes


# -- options -----------------------------------------------------------------------------------------------------


def bundle_argument_spec():
    """The options of ``pg_basebackup_bundle`` besides the connection options."""
    spec = dict(
        keep=dict(type='int', default=4),
        bindir=dict(type='path'),
        scratch_dir=dict(type='path'),
        checkpoint=dict(type='str', default='fast', choices=list(CHECKPOINTS)),
        max_rate=dict(type='str'),
        label=dict(type='str'),
        timeout=dict(type='int', default=6 * 3600),
    )
    spec.update(bundle.file_mode_argument_spec())
    spec.update(bundle.store_argument_spec())
    return spec


def module_spec():
    """The module's ``AnsibleModule`` arguments: its argument spec (the connection options included) and their constraints, in one place."""
    return connecting(bundle.store_module_spec(bundle_argument_spec()))


# -- pure rules --------------------------------------------------------------------------------------------------


def replication_problems(facts):
    """Why ``pg_basebackup -X stream`` would be refused, from the server's settings and the role's attributes
    (PostgreSQL 15 docs, "pg_basebackup": a REPLICATION role or a superuser, ``max_wal_senders`` with two free
    senders for ``-X stream``, ``wal_level`` replica or logical). pg_hba.conf's ``replication`` lines cannot be
    seen from SQL and are not checked.

    :param facts: dict with ``user``, ``superuser``, ``replication`` (bools), ``max_wal_senders``,
        ``wal_senders_in_use`` (ints), ``wal_level`` (str).
    :returns: list of str (empty when nothing is wrong).
    """
    problems = []
    if not (facts['superuser'] or facts['replication']):
        problems.append('role %s has neither REPLICATION nor SUPERUSER (ALTER ROLE %s REPLICATION)' % (facts['user'], facts['user']))
    free = facts['max_wal_senders'] - facts['wal_senders_in_use']
    if free < 2:
        problems.append('max_wal_senders is %d with %d in use; pg_basebackup -X stream needs 2 free WAL senders'
                        % (facts['max_wal_senders'], facts['wal_senders_in_use']))
    if facts['wal_level'] == 'minimal':
        problems.append('wal_level is minimal; a base backup needs replica or logical')
    return problems


def basebackup_command(program, target, label, checkpoint='fast', max_rate=None):
    """The ``pg_basebackup`` argument list: tar format, gzip, WAL streamed alongside (``base.tar.gz``,
    ``pg_wal.tar.gz``, ``backup_manifest`` in ``target``). No connection option: those come from the environment
    (:func:`postgres.libpq_environment`); ``--no-password`` so that a missing password fails instead of prompting."""
    if checkpoint not in CHECKPOINTS:
        raise PgopsError('checkpoint must be fast or spread, not %r.' % (checkpoint,))
    cmd = [program, '--pgdata', target, '--format', 'tar', '--gzip', '--wal-method', 'stream', '--checkpoint', checkpoint,
           '--label', label, '--no-password']
    if max_rate:
        cmd += ['--max-rate', str(max_rate)]
    return cmd


def bundle_time(name):
    """The time of a bundle name, ``YYYYMMDD-HHMMSSmmm`` (older names: ``YYYYMMDD-HHMMSS``, ``YYYYMMDD-HHMM``), for
    retention previews."""
    match = PATTERN.match(name)
    return match.group(1) if match else ''


# -- reading backups ---------------------------------------------------------------------------------------------


def read_tar_member(path, name, limit=LABEL_LIMIT):
    """The bytes of member ``name`` of the (gzip) tar ``path``, reading up to that member, or None.

    ``backup_label`` is the first member of a pg_basebackup base tar, so finding it reads a few kilobytes.
    """
    # 'r:*', not the stream mode 'r|*': pg_basebackup writes pg_wal.tar.gz by seeking back to finish each member,
    # which leaves a gzip stream only a seekable reader (GzipFile) reads correctly.
    with tarfile.open(path, mode='r:*') as tar:
        for member in tar:
            if _member_name(member) == name:
                if not member.isfile():
                    return None
                return tar.extractfile(member).read(limit)
    return None


def _member_name(member):
    name = member.name
    while name.startswith('./'):
        name = name[2:]
    return name


def backup_facts(directory):
    """What a pg_basebackup tar-format output says of itself: from ``backup_manifest`` (``WAL-Ranges``) and the
    ``backup_label`` inside ``base.tar.gz``.

    :param directory: str, holding ``base.tar.gz`` (and usually ``pg_wal.tar.gz``, ``backup_manifest``).
    :returns: dict: ``start_lsn``, ``stop_lsn`` (None without a manifest), ``timeline``, ``start_wal_file``,
        ``checkpoint_lsn``, ``start_time``, ``label``, ``backup_from``, ``tablespaces`` (names of further tar files),
        ``members`` ({name: bytes}).
    :raises PgopsError: when ``base.tar.gz`` or its ``backup_label`` is missing.
    """
    base = os.path.join(directory, BASE_MEMBER)
    if not os.path.isfile(base):
        raise PgopsError('%s holds no %s: not a pg_basebackup tar-format backup.' % (directory, BASE_MEMBER))
    try:
        label = read_tar_member(base, 'backup_label')
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PgopsError('%s cannot be read as a gzip tar archive: %s.' % (base, exc))
    if label is None:
        raise PgopsError('%s has no backup_label: not the base archive of a base backup.' % base)
    derived = parse_backup_label(label.decode('utf-8', 'replace'))['derived']
    facts = dict(start_lsn=derived['start_lsn'], stop_lsn=None, timeline=derived['start_timeline'],
                 start_wal_file=derived['start_wal_file'], checkpoint_lsn=derived['checkpoint_lsn'],
                 start_time=derived['start_time'], label=derived['label'], backup_from=derived['backup_from'])
    manifest = os.path.join(directory, MANIFEST_MEMBER)
    if os.path.isfile(manifest):
        try:
            with open(manifest, encoding='utf-8') as handle:
                ranges = json.load(handle).get('WAL-Ranges') or []
        except (OSError, ValueError) as exc:
            raise PgopsError('%s is not a readable backup manifest: %s.' % (manifest, exc))
        if ranges:
            facts['stop_lsn'] = ranges[-1].get('End-LSN')
            facts['timeline'] = ranges[-1].get('Timeline', facts['timeline'])
    names = sorted(os.listdir(directory))
    facts['tablespaces'] = [n for n in names if n.endswith('.tar.gz') and n not in (BASE_MEMBER, WAL_MEMBER)]
    facts['members'] = dict((n, os.path.getsize(os.path.join(directory, n))) for n in names)
    return facts


_LINK_HINT = ('the backup has tablespaces or links, which a bootstrap does not restore; restore it by hand (PostgreSQL 15 docs, '
              '26.3.4)')


def extract_base_tar(path, dest):
    """Extract a pg_basebackup tar (``base.tar.gz`` or ``pg_wal.tar.gz``) into the directory ``dest``, refusing
    links, special files and names outside ``dest`` (:func:`~.._core.tarfiles.member_path`). Directories become 0700 (0750 kept when the backup has group
    access), files 0600 / 0640, owned by this process (the caller chowns the tree).

    :returns: dict ``{'files': int, 'bytes': int}``.
    :raises PgopsError: naming the archive and the member.
    """
    files = total = 0
    real_dest = os.path.realpath(dest)
    try:
        with tarfile.open(path, mode='r:*') as tar:  # seekable: see read_tar_member
            for member in tar:
                target = member_path(member, real_dest, 'the data directory', 'a base backup', _LINK_HINT)
                if member.isdir():
                    os.makedirs(target, exist_ok=True)
                    os.chmod(target, 0o700 | (member.mode & 0o050))
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                source = tar.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
                with os.fdopen(fd, 'wb') as out:
                    shutil.copyfileobj(source, out, CHUNK)
                os.chmod(target, 0o600 | (member.mode & 0o040))
                files += 1
                total += member.size
    except PgopsError as exc:
        raise PgopsError('%s: %s' % (os.path.basename(path), exc.msg))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PgopsError('%s could not be extracted into %s: %s' % (os.path.basename(path), dest, exc))
    return dict(files=files, bytes=total)


def _server_facts(conn):
    """The role's replication rights and the server's settings a base backup depends on, with the server facts of
    :func:`~.._pg.catalog.server_identity` (version, system identifier, primary or standby)."""
    with pg_errors('reading the server and role settings'), conn.cursor() as cur:
        cur.execute("SELECT current_user, r.rolsuper, r.rolreplication, current_setting('max_wal_senders')::int,"
                    " (SELECT count(*) FROM pg_catalog.pg_stat_replication)::int, current_setting('wal_level'),"
                    " current_setting('logging_collector')::boolean,"
                    # Only superusers and pg_read_all_settings may read log_directory; pg_settings hides it from others.
                    " (SELECT s.setting FROM pg_catalog.pg_settings AS s WHERE s.name = 'log_directory')"
                    " FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user")
        user, superuser, replication, senders, in_use, wal_level, collector, log_directory = cur.fetchone()
        identity = server_identity(conn)
    return dict(user=user, superuser=superuser, replication=replication, max_wal_senders=senders, wal_senders_in_use=in_use,
                wal_level=wal_level, server_version=identity['server_version'], server_version_num=identity['server_version_num'],
                server_major=identity['server_major'], system_identifier=identity['system_identifier'],
                is_primary=identity['is_primary'],
                # A relative log_directory is inside the data directory (PostgreSQL docs, 20.8.1 "Where to Log").
                logs_in_data_directory=log_directory if collector and log_directory and not os.path.isabs(log_directory) else None)


# -- pg_basebackup_bundle ----------------------------------------------------------------------------------------


def take_base_backup(params, check_mode=False):
    """Take a base backup with ``pg_basebackup`` into a new bundle, store it, verify it, then delete all but the
    newest ``keep`` bundles (never this run's, nor a newer one: :meth:`bundle.BundleStore.apply_retention`).

    Before it, the work in progress that killed runs left (``.partial-*`` in the staging directory and, for a
    directory store, in the store) is removed: see :func:`bundle.remove_stale_partials`, with ``timeout`` as the
    age limit for entries whose owner cannot be checked. The module's own connection only reads (the server's
    settings and the role's attributes; pg_basebackup has a replication connection of its own), so it is READ ONLY.

    :param params: dict, the module's parameters (connection options plus :func:`bundle_argument_spec`).
    :param check_mode: bool: connect, check that the server allows the backup (:func:`replication_problems`), find
        pg_basebackup, and report the name, what retention would delete and the left-overs that would be removed;
        nothing is run or written.
    :returns: dict: ``changed``, ``bundle`` (``name``, ``url``, ``bytes``, ``sha256``), ``server`` (password-free
        description), ``server_version``, ``system_identifier``, ``timeline``, ``start_lsn``, ``stop_lsn``,
        ``start_wal_file``, ``label``, ``members`` ({name: bytes}), ``pg_basebackup`` (path, major), ``seconds`` (dict
        of phase -> seconds: ``basebackup``, ``pack``, ``store``, ``total``), ``deleted`` (names, oldest first),
        ``removed_partials`` (paths), ``warnings`` (stderr lines of a successful pg_basebackup, left-overs that could
        not be removed).
    :raises PgopsError: for bad options (``keep``, ``mode``, a system directory as ``scratch_dir``), a failed
        connection, a failing pg_basebackup (its stderr), a failed write or upload; then no partial file remains and
        no bundle is deleted.
    """
    began = time.monotonic()
    keep = params['keep']
    if keep < 0:
        raise PgopsError('keep must be 0 (keep every bundle) or the number of newest bundles to keep, not %d.' % keep)
    mode = check_file_mode(params.get('mode'))
    if params.get('scratch_dir'):
        refuse_system_directory(params['scratch_dir'], 'scratch_dir', within=True)
    store = bundle.BundleStore.from_params(params)
    conn = connect(params, read_only=True)
    try:
        facts = _server_facts(conn)
    finally:
        conn.close()
    program = find_client_program('pg_basebackup', params.get('bindir'), facts['server_major'])
    name = bundle.bundle_name(NAME_PREFIX, suffix=SUFFIX)
    if store.exists(name):
        raise PgopsError('bundle %s already exists in %s; a bundle is never overwritten. Run again for a new name.'
                         % (name, store.location))
    label = params.get('label') or 'pgops.resilience %s' % name[:-len(SUFFIX)]
    result = dict(changed=True, bundle=dict(name=name, url=store.url(name)), server=describe_server(params),
                  server_version=facts['server_version'], system_identifier=facts['system_identifier'], label=label,
                  pg_basebackup=dict(path=program, major=program_major(program)), warnings=[], seconds={})
    if facts['logs_in_data_directory']:
        result['warnings'].append(
            'The server writes its log files into the data directory (log_directory %r is relative), so they go into '
            'the base backup. PostgreSQL logs changed settings in clear, a primary_conninfo password or a '
            "restore_command's keys among them; set log_directory to a path outside the data directory to keep them "
            'out of backups.' % facts['logs_in_data_directory'])
    if check_mode:
        problems = replication_problems(facts)
        if problems:
            raise PgopsError('pg_basebackup would be refused by %s: %s.' % (result['server'], '; '.join(problems)), **result)
    staging_parent = params.get('scratch_dir') or store.staging_directory()
    result['removed_partials'] = _remove_stale_partials(store, staging_parent, params.get('timeout') or None, check_mode,
                                                        result['warnings'])
    if check_mode:
        existing = store.list(PATTERN) + [dict(name=name, time=bundle_time(name))]
        result['deleted'] = [b['name'] for b in bundle.expired_bundles(existing, keep)]
        return result
    stored, backup = _backup_and_store(params, store, staging_parent, name, dict(facts, program=program, label=label),
                                       mode, result)
    result['bundle'] = stored
    result.update((k, backup[k]) for k in ('timeline', 'start_lsn', 'stop_lsn', 'start_wal_file', 'members'))
    # Only now, with the new bundle stored and verified, may an old one go (never this run's, nor a newer one).
    result['deleted'] = store.apply_retention(PATTERN, keep, own=name)
    result['seconds']['total'] = seconds_since(began)
    return result


def _remove_stale_partials(store, staging_parent, max_age, check_mode, warnings):
    """:func:`bundle.remove_stale_partials` of base backup bundles where a run works: the staging directory's parent
    and, for a directory store, the store (where the archive is packed). Returns the paths; problems go to
    ``warnings``."""
    places = [staging_parent]
    if store.is_local and os.path.realpath(store.directory) != os.path.realpath(staging_parent):
        places.append(store.directory)
    removed = []
    for place in places:
        gone, problems = bundle.remove_stale_partials(place, NAME_PREFIX, SUFFIX, max_age, check_mode)
        removed += gone
        warnings += problems
    return removed


def _backup_and_store(params, store, staging_parent, name, facts, mode, result):
    """pg_basebackup into this run's staging directory in ``staging_parent``, packed as ``name`` (``mode``), stored
    and verified; the staging directory is removed whatever happens.

    :param facts: :func:`_server_facts` plus ``program`` (pg_basebackup's path) and ``label``.
    :returns: ``(stored, backup)``: :meth:`bundle.BundleStore.store`'s result and :func:`backup_facts`.
    :raises PgopsError: saying that nothing was stored and no bundle was deleted.
    """
    staging = make_staging_directory(staging_parent, name)
    packed = None
    done = False
    try:
        target = os.path.join(staging, OUTPUT_DIR)
        with timed(result['seconds'], 'basebackup'):
            cmd = basebackup_command(facts['program'], target, facts['label'], params['checkpoint'], params.get('max_rate'))
            stderr = run_program(cmd, libpq_environment(params), 'pg_basebackup', connection_secrets(params),
                                 params.get('timeout') or None, target=target)
            result['warnings'] += warnings_of(stderr)
        backup = backup_facts(target)
        info = dict(server_version=facts['server_version'], server_version_num=facts['server_version_num'],
                    server_major=facts['server_major'], system_identifier=facts['system_identifier'],
                    backup_from='primary' if facts['is_primary'] else 'standby',
                    pg_basebackup=os.path.basename(facts['program']), pg_basebackup_major=result['pg_basebackup']['major'],
                    bytes=sum(backup['members'].values()))
        info.update((k, backup[k]) for k in ('timeline', 'start_lsn', 'stop_lsn', 'start_wal_file', 'checkpoint_lsn',
                                             'start_time', 'label', 'tablespaces'))
        # A directory store: packed in place (renamed when complete). S3: packed in staging, uploaded, removed with it.
        with timed(result['seconds'], 'pack'):
            packed = bundle.pack(target, os.path.join(store.staging_directory(staging), name), KIND, info, mode)
        with timed(result['seconds'], 'store'):
            stored = store.store(packed)  # read back (a directory) or size-checked (S3) before retention may follow it
        done = True
    except OSError as exc:
        raise PgopsError('base backup into %s failed: %s. Nothing was stored and no bundle was deleted.' % (store.location, exc))
    except PgopsError as exc:
        exc.msg = exc.msg.rstrip('.') + '. Nothing was stored and no bundle was deleted.'
        raise
    finally:
        if not done and packed is not None and store.is_local:
            with contextlib.suppress(PgopsError, OSError):
                store.delete(name)  # ours (the name was free): a bundle that failed its check must not count
        shutil.rmtree(staging, ignore_errors=True)
    return stored, backup
