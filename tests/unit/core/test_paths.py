# -*- coding: utf-8 -*-
"""The system-directory and data-directory rules of destructive code (module_utils/_core/paths.py), and their use where
the drill runner and the barman drill accept a scratch directory. Symbolic links stand in for bind mounts here (a
bind mount needs mount privileges: see tests/integration/test_basebackup_bootstrap.py)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._barman import drill as barman_drill
from ansible_collections.pgops.resilience.plugins.module_utils._drill import runner as drill
from ansible_collections.pgops.resilience.plugins.module_utils._core.paths import (
    refuse_system_directory, system_directory_reason)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.datadir import (
    INCOMPLETE_MARKER, clear_incomplete, data_directory_state, mark_incomplete, refuse_foreign_directory)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

REFUSED = [
    # the trees, with everything under them
    '/etc', '/etc/', '/etc/ssl', '/etc/../etc', '//etc', '/usr/../etc/./', '/usr', '/usr/share', '/usr/local',
    '/usr/local/pgsql/data', '/bin', '/boot/efi', '/dev', '/lib', '/lib64', '/proc/1', '/run', '/run/postgresql',
    '/sbin', '/sys', '/var/log', '/var/log/postgresql', '/var/cache/apt', '/var/spool/cron', '/var/run/x',
    '/var/lib/dpkg', '/var/lib/dpkg/info', '/var/lib/systemd/coredump',
    # refused themselves
    '/', '/home', '/media', '/mnt', '/opt', '/srv', '/tmp', '/var', '/var/lib', '/var/tmp', '/var/opt', '/var/local',
    # home directories
    '/root', '/root/', '/home/alice', '/home/postgres',
]
ALLOWED = [
    '/var/lib/postgresql/15/main', '/var/lib/postgresql/data', '/var/lib/postgresql', '/var/lib/pgsql/15/data',
    '/srv/pgdata/main', '/srv/pgdata', '/opt/PostgreSQL/15/data', '/mnt/pgdata', '/media/backup/pg', '/tmp/pgops-drill-x',
    '/var/tmp/pgops', '/home/alice/pgdata', '/root/scratch', '/data/pg', '/var/lib/docker/volumes/pg/_data',
]


@pytest.mark.parametrize('path', REFUSED)
def test_system_directories_are_refused(path):
    with pytest.raises(PgopsError) as refused:
        refuse_system_directory(path, 'data_directory')
    assert refused.value.msg.startswith('Refusing data_directory %s: it is a ' % path)
    assert 'Nothing was changed' in refused.value.msg


@pytest.mark.parametrize('path', ALLOWED)
def test_directories_below_them_are_allowed(path):
    assert system_directory_reason(path) is None
    assert refuse_system_directory(path, 'data_directory') == os.path.normpath(path)


@pytest.mark.parametrize('path, refused', [
    ('/tmp', False), ('/var/tmp', False), ('/', False), ('/srv', False), ('/home/alice', False), ('/root', False),
    ('/etc', True), ('/usr/share', True), ('/var/log', True), ('/run', True), ('/var/lib/dpkg', True),
])
def test_a_parent_for_a_directory_of_our_own_refuses_only_the_trees(path, refused):
    reason = system_directory_reason(path, within=True)
    assert (reason is not None) == refused
    if refused:
        with pytest.raises(PgopsError, match='Refusing scratch_parent %s: .*Nothing is ever created or deleted there' % path):
            refuse_system_directory(path, 'scratch_parent', within=True)


def test_the_reason_says_which_rule():
    assert 'everything under it' in system_directory_reason('/usr/share')
    assert '/usr and everything under it' in system_directory_reason('/usr/share')
    assert 'only directories below it are allowed' in system_directory_reason('/var/lib')
    assert 'home directory' in system_directory_reason('/home/alice')


def test_a_symbolic_link_to_etc_is_refused(tmp_path):
    link = tmp_path / 'pgdata'
    os.symlink('/etc', str(link))
    for given in (link, link / 'ssl', tmp_path / 'pgdata' / '..' / 'pgdata'):
        with pytest.raises(PgopsError) as refused:
            refuse_system_directory(str(given), 'data_directory')
        assert 'Refusing data_directory %s: it resolves to /etc' % given in refused.value.msg


def test_a_chain_of_links_and_relative_links_are_followed(tmp_path):
    (tmp_path / 'a').mkdir()
    os.symlink('../b', str(tmp_path / 'a' / 'up'))       # relative
    os.symlink('/usr/share', str(tmp_path / 'b'))         # absolute
    os.symlink(str(tmp_path / 'a' / 'up'), str(tmp_path / 'c'))  # a link to a link
    for given in (tmp_path / 'a' / 'up', tmp_path / 'c', tmp_path / 'c' / 'doc'):
        reason = system_directory_reason(str(given))
        assert reason and reason.startswith('it resolves to /usr/share') and '/usr and everything under it' in reason


def test_a_link_to_an_allowed_directory_is_allowed(tmp_path):
    (tmp_path / 'volume' / 'data').mkdir(parents=True)
    os.symlink(str(tmp_path / 'volume'), str(tmp_path / 'pg'))
    assert system_directory_reason(str(tmp_path / 'pg' / 'data')) is None


def test_a_relative_path_is_taken_from_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    depth = len(str(tmp_path).strip('/').split('/'))
    up = '/'.join(['..'] * depth)
    assert system_directory_reason(up + '/etc').startswith('it is a system directory (/etc')
    assert system_directory_reason('data') is None


def test_an_empty_option_is_refused():
    for value in (None, '', '  '):
        with pytest.raises(PgopsError, match='scratch_dir is empty'):
            refuse_system_directory(value, 'scratch_dir')


# -- data directories ------------------------------------------------------------------------------------------


def _data_directory(path):
    (path / 'global').mkdir(parents=True)
    (path / 'global' / 'pg_control').write_bytes(b'\0' * 8192)
    (path / 'PG_VERSION').write_text('15\n')
    (path / 'base').mkdir()


def test_the_states_of_a_data_directory(tmp_path):
    assert data_directory_state(str(tmp_path / 'missing')) == ('missing', [])
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert data_directory_state(str(empty)) == ('empty', [])
    (empty / 'lost+found').mkdir()
    (empty / 'recovery.signal').write_text('')
    (empty / 'postmaster.pid').write_text('123\n')
    assert data_directory_state(str(empty)) == ('empty', ['lost+found', 'postmaster.pid', 'recovery.signal'])
    data = tmp_path / 'data'
    _data_directory(data)
    assert data_directory_state(str(data)) == ('data directory', ['PG_VERSION', 'base', 'global'])
    half = tmp_path / 'half'
    half.mkdir()
    (half / 'backup_label').write_text('START WAL LOCATION: 0/2000028\n')
    (half / 'base').mkdir()
    assert data_directory_state(str(half))[0] == 'foreign'
    (half / INCOMPLETE_MARKER).write_text('')
    assert data_directory_state(str(half)) == ('incomplete', sorted(['backup_label', 'base', INCOMPLETE_MARKER]))


@pytest.mark.parametrize('entries, missing', [
    (['notes.txt'], 'no PG_VERSION and no global/pg_control'),
    (['PG_VERSION'], 'no global/pg_control,'),
    (['global/pg_control', 'base/1/1259'], 'no PG_VERSION,'),
    (['global/'], 'no PG_VERSION and no global/pg_control'),  # a directory named like the file does not count
])
def test_anything_else_is_refused_naming_the_option_the_path_and_what_to_do(tmp_path, entries, missing):
    path = tmp_path / 'd'
    for entry in entries:
        target = path / entry
        target.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir() if entry.endswith('/') else target.write_text('x')
    before = sorted(os.listdir(path))
    with pytest.raises(PgopsError) as refused:
        refuse_foreign_directory(str(path), 'data_directory')
    msg = refused.value.msg
    assert msg.startswith('Refusing to empty data_directory %s: it is neither empty nor a PostgreSQL data directory' % path)
    assert missing in msg and 'holds %s' % ', '.join(before) in msg and 'empty it by hand' in msg
    assert sorted(os.listdir(path)) == before


def test_a_long_listing_is_cut_short(tmp_path):
    for i in range(20):
        (tmp_path / ('f%02d' % i)).write_text('x')
    with pytest.raises(PgopsError, match=r'holds f00, .*, f07 and 12 more\)'):
        refuse_foreign_directory(str(tmp_path))


def test_the_marker_is_private_and_removed_again(tmp_path):
    mark_incomplete(str(tmp_path), 'pg_wipe_data_directory')
    marker = tmp_path / INCOMPLETE_MARKER
    assert stat.S_IMODE(os.stat(marker).st_mode) == 0o600 and 'pg_wipe_data_directory began' in marker.read_text()
    clear_incomplete(str(tmp_path))
    clear_incomplete(str(tmp_path))  # gone already: nothing to do
    assert os.listdir(tmp_path) == []


# -- the scratch directories of the drills ---------------------------------------------------------------------


def test_the_drill_runner_refuses_a_system_directory_as_scratch_dir(tmp_path):
    datadir = tmp_path / 'data'
    datadir.mkdir()
    link = tmp_path / 'scratch'
    os.symlink('/etc', str(link))
    before = sorted(os.listdir('/etc'))
    for scratch in ('/etc', str(link), '/tmp', '/var/tmp'):
        with pytest.raises(PgopsError, match='Refusing scratch_dir '):
            drill.Drill(str(datadir), 'cp /a/%f %p', scratch_dir=scratch)
    assert sorted(os.listdir('/etc')) == before


def test_the_barman_drill_refuses_a_system_directory_as_scratch_parent(tmp_path):
    link = tmp_path / 'scratch'
    os.symlink('/usr/share', str(link))
    for check_mode in (True, False):
        for parent in ('/etc', str(link)):
            # Refused before the catalog is read or anything is made (no barman-cloud, no S3 needed).
            with pytest.raises(PgopsError, match='Refusing scratch_parent %s: it ' % parent):
                barman_drill.restore_drill(dict(scratch_parent=parent), check_mode)
