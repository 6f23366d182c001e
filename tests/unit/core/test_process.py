# -*- coding: utf-8 -*-
"""Running client programs (module_utils/_core/process.py): stderr read through a pipe into a bounded tail (never a file
that a full volume could swallow), and what a failure says when the program said nothing. Real programs (sh), no
server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core import process as process_module
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import (
    Program, STDERR_TAIL, failure, nearly_full, run_program, warnings_of)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

ENV = {'PATH': os.environ['PATH'], 'LC_ALL': 'C'}
# 5000 numbered lines on stderr (about 44 kB).
LINES = 'i=0; while [ $i -lt 5000 ]; do echo "line $i" >&2; i=$((i+1)); done'


def test_a_failed_program_s_stderr_is_read_as_it_comes_and_its_tail_reported():
    # 3 MiB on stderr: far more than a pipe holds (a pipe nobody reads would stall the program until the timeout)
    # and more than is kept; then its last words and a failure.
    script = ('head -c 3145728 /dev/zero | tr "\\0" x | fold -w 100 >&2; echo >&2; '
              'echo "could not write: No space left on device password=hunter22" >&2; exit 3')
    with pytest.raises(PgopsError) as failed:
        run_program(['sh', '-c', script], ENV, 'pg_dump of database app', secrets=['hunter22'], timeout=60)
    msg = failed.value.msg
    assert msg.startswith('pg_dump of database app failed (exit status 3): ...')
    assert msg.endswith('could not write: No space left on device password=********') and 'hunter22' not in msg
    assert failed.value.details['rc'] == 3 and len(failed.value.details['stderr']) <= STDERR_TAIL + 3


def test_the_stderr_kept_is_bounded_and_begins_at_a_line():
    program = Program(['sh', '-c', LINES], ENV, 'sh', keep=1000)
    try:
        program.wait(60)
    finally:
        program.stop()
    text = program.result()
    assert program.stderr.dropped > 40000 and len(text) <= 1000
    assert text.startswith('line ') and text.endswith('line 4999\n')
    assert warnings_of(text)[-1] == 'line 4999'


def test_a_caller_that_reads_every_line_is_refused_an_incomplete_stderr():
    assert run_program(['sh', '-c', LINES], ENV, 'sh', keep=1024 * 1024, complete=True).count('\n') == 5000
    with pytest.raises(PgopsError, match=r'psql -f globals.sql printed more than 1000 bytes on stderr'):
        run_program(['sh', '-c', LINES], ENV, 'psql -f globals.sql', keep=1000, complete=True)


def test_a_program_ended_by_a_signal_says_which():
    with pytest.raises(PgopsError) as failed:
        run_program(['sh', '-c', 'kill -KILL $$'], ENV, 'pg_dump of database app', timeout=60)
    assert failed.value.msg == ('pg_dump of database app failed (exit status -9): it printed nothing on stderr; it was '
                                'ended by signal 9 (SIGKILL)')


def test_a_program_that_runs_too_long_is_stopped():
    with pytest.raises(PgopsError, match=r'^sleep did not finish within 1 seconds and was stopped\.$'):
        run_program(['sleep', '30'], ENV, 'sleep', timeout=1)


def test_a_program_that_cannot_start_is_named(tmp_path):
    with pytest.raises(PgopsError, match=r'^cannot run pg_dump \(%s\): ' % (tmp_path / 'pg_dump')):
        run_program([str(tmp_path / 'pg_dump')], ENV, 'pg_dump')


def _statvfs(blocks, available):
    """A ``statvfs`` result of a file system of ``blocks`` blocks of 4 KiB, ``available`` of them free."""
    return os.statvfs_result((4096, 4096, blocks, available, available, 100, 50, 50, 0, 255))


def test_a_silent_failure_names_the_free_space_of_a_nearly_full_target(tmp_path, monkeypatch):
    target = str(tmp_path / 'staging' / 'records.dir')  # not made yet: its nearest existing parent is examined
    monkeypatch.setattr(process_module.os, 'statvfs', lambda path: _statvfs(4096, 3))  # 16 MiB, 12 KiB free
    error = failure('pg_dump of database app', 1, '', target=target)
    assert error.msg == ('pg_dump of database app failed (exit status 1): it printed nothing on stderr; the file system '
                         'of %s is nearly full: 12,288 bytes of free space left of 16,777,216, so a write may have '
                         'failed. Free space there (or give another scratch_dir) and run again' % tmp_path)
    assert error.details['free_bytes'] == 12288 and error.details['total_bytes'] == 16777216
    # The program's own words come first, and room enough (more than 5 % of a small volume) says nothing of space.
    assert failure('pg_dump', 1, 'pg_dump: error: out of memory', target=target).msg.endswith(': pg_dump: error: out of memory')
    monkeypatch.setattr(process_module.os, 'statvfs', lambda path: _statvfs(4096, 300))
    assert failure('pg_dump', 1, '', target=target).msg == 'pg_dump failed (exit status 1): it printed nothing on stderr'
    # On a large volume, less than 64 MiB free counts as nearly full; 1 GiB does not.
    blocks = 256 * 1024 * 1024  # 1 TiB
    monkeypatch.setattr(process_module.os, 'statvfs', lambda path: _statvfs(blocks, 8192))
    assert nearly_full(target) == dict(path=str(tmp_path), available_bytes=8192 * 4096, total_bytes=blocks * 4096)
    monkeypatch.setattr(process_module.os, 'statvfs', lambda path: _statvfs(blocks, 262144))
    assert nearly_full(target) is None


_STARTS_SLEEP = '''
import sys, time
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program
program = Program(['sleep', '300'], {'PATH': '/usr/bin:/bin'}, 'sleep', die_with_parent=%s)
print(program.pid, flush=True)
time.sleep(300)
'''


def _alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as stat:
            return stat.read().split(')')[-1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


@pytest.mark.parametrize('die_with_parent', [True, False])
def test_a_program_started_to_die_with_its_parent_ends_when_the_module_is_killed(die_with_parent):
    parent = subprocess.Popen([sys.executable, '-c', _STARTS_SLEEP % die_with_parent], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _alive(child) and die_with_parent and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert _alive(child) is not die_with_parent
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
