# -*- coding: utf-8 -*-
"""The pieces that run a PostgreSQL server (module_utils/_pg/postmaster.py, server.py, recovery.py) and what they
run programs with (_core/process.py): process liveness, the server log, the PG*-free environment, a restored data
directory made ready for archive recovery, and programs followed while they run. Real processes and files, no
server."""

from __future__ import annotations

import decimal
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core import jsonable as jsonable_module
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program, program_output, run_program
from ansible_collections.pgops.resilience.plugins.module_utils._pg import postmaster, recovery, server
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server_user import ServerUser

ENV = {'PATH': os.environ['PATH'], 'LC_ALL': 'C'}


# -- processes -----------------------------------------------------------------------------------------------------


def test_a_process_this_one_may_not_signal_is_alive(monkeypatch):
    """Where /proc cannot be read, kill(pid, 0) decides, and EPERM means the process exists (another user's)."""
    def no_proc(*args, **kwargs):
        raise PermissionError('hidden')

    def not_ours(pid, sig):
        raise PermissionError('not permitted')

    monkeypatch.setattr(postmaster, 'open', no_proc, raising=False)  # the module's open(), not pytest's
    monkeypatch.setattr(postmaster.os, 'kill', not_ours)
    assert postmaster.pid_alive(12345) is True

    def gone(pid, sig):
        raise ProcessLookupError()

    monkeypatch.setattr(postmaster.os, 'kill', gone)
    assert postmaster.pid_alive(12345) is False


def test_a_zombie_is_not_alive_and_a_live_process_works_in_its_directory(tmp_path):
    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], cwd=str(tmp_path))
    try:
        assert postmaster.pid_alive(child.pid) and postmaster.works_in(child.pid, str(tmp_path)) is True
        (tmp_path / 'postmaster.pid').write_text('%d\n/data\n' % child.pid)
        assert postmaster.postmaster_of(str(tmp_path)) == child.pid
        other = tmp_path / 'other'
        other.mkdir()
        (other / 'postmaster.pid').write_text('%d\n' % child.pid)
        assert postmaster.postmaster_of(str(other)) is None, 'a copied postmaster.pid names a process working elsewhere'
        child.kill()
        deadline = time.monotonic() + 10
        while postmaster.pid_alive(child.pid) and time.monotonic() < deadline:  # a zombie until reaped
            time.sleep(0.05)
        assert not postmaster.pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not postmaster.pid_alive(child.pid) and not postmaster.pid_alive(None)


# -- the server log and environment ----------------------------------------------------------------------------------


def test_the_log_is_followed_from_its_end_with_marks_and_fatal_lines(tmp_path):
    log_file = tmp_path / 'server.log'
    log_file.write_text('FATAL:  from an earlier run\n')
    user = ServerUser.file_owner(None, str(tmp_path))
    follower = server.follow_log(str(log_file), user)
    with open(log_file, 'a', encoding='utf-8') as handle:
        handle.write('LOG:  consistent recovery state reached at 0/4000100\n'
                     'FATAL:  the database system is starting up\n'
                     'LOG:  redo done at 0/4000200 system usage: ...\n'
                     'FATAL:  could not open file "pg_wal/00000002.history"\nLOG:  selected new')
    follower.poll()
    assert follower.value_of('consistent') == '0/4000100' and follower.value_of('redo_done') == '0/4000200'
    assert follower.fatal == ['could not open file "pg_wal/00000002.history"'], 'refusals and old lines are left out'
    assert follower.value_of('timeline') is None, 'a line is read once complete'
    with open(log_file, 'a', encoding='utf-8') as handle:
        handle.write(' timeline ID: 2\n')
    follower.poll()
    assert follower.value_of('timeline') == '2' and follower.time_of('timeline') >= follower.time_of('consistent')
    assert server.read_tail(str(log_file), 2).splitlines()[-1] == 'LOG:  selected new timeline ID: 2'
    assert server.read_tail(str(tmp_path / 'missing')).startswith('(cannot read ')


def test_a_new_log_is_private(tmp_path):
    user = ServerUser.file_owner(None, str(tmp_path))
    server.follow_log(str(tmp_path / 'new.log'), user)
    assert stat.S_IMODE(os.stat(tmp_path / 'new.log').st_mode) == 0o600


def test_the_server_environment_has_no_libpq_variable(monkeypatch):
    monkeypatch.setenv('PGPASSWORD', 'hunter22')
    monkeypatch.setenv('PGPORT', '5433')
    env = server.server_environment({'AWS_REGION': 'eu-west-1'})
    assert not [k for k in env if k.startswith('PG')] and env['AWS_REGION'] == 'eu-west-1' and env['PATH'] == os.environ['PATH']


# -- archive recovery of a restored data directory -------------------------------------------------------------------


def test_the_recovery_settings_empty_every_other_target_and_promote_only_when_asked():
    target = recovery.normalize_recovery_target({'lsn': '0/3000060', 'inclusive': False})
    settings = recovery.recovery_target_settings('cp /w/%f "%p"', target)
    names = [name for name, value in settings]
    assert names[0] == 'restore_command' and names.count('recovery_target_lsn') == 1
    emptied = ('recovery_target', 'recovery_target_name', 'recovery_target_time', 'recovery_target_xid')
    assert names.index('recovery_target_lsn') > max(names.index(n) for n in emptied)
    assert dict(settings)['recovery_target_inclusive'] is False and dict(settings)['recovery_target_action'] == 'promote'
    plain = dict(recovery.recovery_target_settings('cp /w/%f "%p"'))
    assert 'recovery_target_action' not in plain and plain['recovery_target_timeline'] == 'latest'
    every = dict(recovery.recovery_target_settings('cp /w/%f "%p"', None, every=True))
    assert every['recovery_target_action'] == 'promote' and every['recovery_target_inclusive'] is True


def test_a_restored_data_directory_is_made_ready_for_archive_recovery(tmp_path):
    datadir = tmp_path / 'data'
    datadir.mkdir(mode=0o755)
    for name in ('postmaster.pid', 'postmaster.opts', 'standby.signal'):
        (datadir / name).write_text('from the source\n')
    settings = [('restore_command', 'cp /w/%f "%p" # key=s3cr3t')] + recovery.recovery_target_settings('x %f %p')[1:]
    block = recovery.render_settings(settings, recovery.conf_mark('test'), ['# why'], 'now')
    user = ServerUser.file_owner(None, str(datadir))
    recovery.prepare_archive_recovery(str(datadir), block, user, 'a unit test')
    names = sorted(os.listdir(datadir))
    assert names == ['pg_wal', 'postgresql.auto.conf', 'postgresql.conf', 'recovery.signal']
    assert (datadir / 'postgresql.conf').read_text() == '# written by a unit test: the restored data directory had none.\n'
    auto = datadir / 'postgresql.auto.conf'
    assert stat.S_IMODE(os.stat(auto).st_mode) == 0o600, 'it holds restore_command'
    assert auto.read_text().startswith('\n# --- pgops.resilience test --- now\n# why\nrestore_command = ')
    assert stat.S_IMODE(os.stat(datadir).st_mode) == 0o700
    cleaned = recovery.without_recovery_targets('work_mem = 1\n' + auto.read_text(), recovery.conf_mark('test'))
    assert 'recovery_target' not in cleaned and cleaned.startswith('work_mem = 1\n') and 'restore_command' in cleaned


# -- programs followed while they run -----------------------------------------------------------------------------


def test_program_output_is_stdout_and_a_failure_is_the_stderr_tail(tmp_path):
    assert program_output(['sh', '-c', 'pwd; echo warning >&2'], ENV, 'sh', cwd=str(tmp_path)) == str(tmp_path) + '\n'
    with pytest.raises(PgopsError, match=r'^pg_controldata failed \(exit status 2\): no pg_control of password=\*\*\*\*\*\*\*\*$'):
        program_output(['sh', '-c', 'echo out; echo "no pg_control of password=hunter22" >&2; exit 2'], ENV, 'pg_controldata',
                       secrets=['hunter22'])
    assert run_program(['sh', '-c', 'pwd >&2'], ENV, 'sh', cwd=str(tmp_path)) == str(tmp_path) + '\n'


def test_a_program_in_a_session_of_its_own_is_ended_with_its_children(tmp_path):
    marker = tmp_path / 'child.pid'
    program = Program(['sh', '-c', 'sleep 60 & echo $! > %s; wait' % marker], ENV, 'pg_ctl start', new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not marker.exists() or not marker.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        child = int(marker.read_text())
        assert program.poll() is None and os.getpgid(child) == program.pid
        assert program.signal_group(signal.SIGTERM, 10) and program.returncode == -signal.SIGTERM
        deadline = time.monotonic() + 10
        while postmaster.pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not postmaster.pid_alive(child), 'the whole process group got the signal'
    finally:
        program.stop()
    assert server.end_start(program) is None, 'an exited pg_ctl start needs nothing more'


# -- JSON --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('value, expected', [
    (decimal.Decimal('12345678901234567890123'), 12345678901234567890123),
    (decimal.Decimal('1E+3'), 1000),
    (decimal.Decimal('1.50'), 1.5),
    (decimal.Decimal('0.1'), 0.1),
    (decimal.Decimal('3.14159265358979323846'), '3.14159265358979323846'),
    (decimal.Decimal('-Infinity'), '-Infinity'),
])
def test_a_decimal_keeps_its_value_exactly(value, expected):
    converted = jsonable_module.jsonable(value)
    assert converted == expected and type(converted) is type(expected)
    assert decimal.Decimal(str(converted)) == value or not value.is_finite()
