# -*- coding: utf-8 -*-
"""The one program lookup (module_utils/_pg/programs.py): where server and client programs are found and which
version fits. Real programs (small shell scripts printing a PostgreSQL version), no server."""

from __future__ import annotations

import os

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg import programs


def _bindir(path, version, names=('pg_ctl', 'postgres', 'pg_dump')):
    """A directory of scripts that print ``<name> (PostgreSQL) <version>`` for --version."""
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        script = path / name
        script.write_text('#!/bin/sh\necho "%s (PostgreSQL) %s"\n' % (name, version))
        script.chmod(0o755)
    return str(path)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Two package directories (14 and 16), nothing on PATH and no pg_config: only they are searched."""
    dirs = {14: _bindir(tmp_path / 'pg14', '14.9'), 16: _bindir(tmp_path / 'pg16', '16.2')}
    monkeypatch.delenv(programs.BINDIR_ENV, raising=False)
    monkeypatch.setattr(programs, '_PACKAGE_DIRS', (str(tmp_path / 'pg*'),))
    monkeypatch.setattr(programs, '_dir_major', lambda path: int(path.rstrip('/').rsplit('pg', 1)[1]))
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    return dirs


def test_server_programs_must_be_the_data_directory_s_major(installed):
    assert programs.find_bindir(None, '14') == installed[14]
    assert programs.find_bindir(None, '16') == installed[16]
    assert programs.find_bindir(None, None) == installed[16], 'any version: the newest'
    with pytest.raises(PgopsError, match=r'PostgreSQL 15 server programs pg_ctl, postgres not found .*found only .*pg16 '
                                         r'\(PostgreSQL 16\), .*pg14 \(PostgreSQL 14\)'):
        programs.find_bindir(None, '15')


def test_client_programs_must_be_at_least_the_server_s_major_newest_first(installed):
    assert programs.find_client_program('pg_dump', None, 14) == os.path.join(installed[16], 'pg_dump')
    assert programs.find_client_program('pg_dump', None, 16) == os.path.join(installed[16], 'pg_dump')
    with pytest.raises(PgopsError, match=r'PostgreSQL 17 \(or newer\) client program pg_dump not found'):
        programs.find_client_program('pg_dump', None, 17)


def test_a_chosen_directory_is_the_only_one_looked_at(installed, tmp_path, monkeypatch):
    assert programs.find_client_program('pg_dump', installed[14], 14) == os.path.join(installed[14], 'pg_dump')
    with pytest.raises(PgopsError, match=r'bindir .*pg14/pg_dump is older than the PostgreSQL 16 server'):
        programs.find_client_program('pg_dump', installed[14], 16)
    with pytest.raises(PgopsError, match=r'bindir .*pg16 holds PostgreSQL 16 programs, but the data directory is PostgreSQL 14'):
        programs.find_bindir(installed[16], '14')
    monkeypatch.setenv(programs.BINDIR_ENV, installed[14])
    assert programs.find_bindir(None, '14') == installed[14]
    with pytest.raises(PgopsError, match=r'\$PGOPS_PG_BINDIR .*pg14 holds PostgreSQL 14 programs'):
        programs.find_bindir(None, '16')
    with pytest.raises(PgopsError, match=r'\$PGOPS_PG_BINDIR .* lacks the PostgreSQL server programs initdb'):
        programs.find_bindir(None, None, ('initdb', 'pg_ctl', 'postgres'))


def test_path_is_searched_as_found_and_with_links_resolved(tmp_path, monkeypatch):
    real = _bindir(tmp_path / 'real', '15.4')
    wrappers = tmp_path / 'wrappers'
    wrappers.mkdir()
    os.symlink(os.path.join(real, 'pg_ctl'), str(wrappers / 'pg_ctl'))  # only pg_ctl on PATH, as /usr/local/bin
    monkeypatch.delenv(programs.BINDIR_ENV, raising=False)
    monkeypatch.setattr(programs, '_PACKAGE_DIRS', ())
    monkeypatch.setenv('PATH', str(wrappers))
    assert programs.find_bindir(None, '15') == real, 'postgres is next to the resolved pg_ctl'
    assert programs.server_major(real) == '15'
    assert programs.program_version(os.path.join(real, 'pg_dump')) == (15, '4')


def test_a_program_that_prints_no_version_is_named(tmp_path):
    script = tmp_path / 'postgres'
    script.write_text('#!/bin/sh\necho hello\n')
    script.chmod(0o755)
    with pytest.raises(PgopsError, match=r"postgres --version printed 'hello', not a PostgreSQL version"):
        programs.program_version(str(script))
    with pytest.raises(PgopsError, match=r'cannot run .*missing --version'):
        programs.program_version(str(tmp_path / 'missing'))
