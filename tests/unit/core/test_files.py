# -*- coding: utf-8 -*-
"""The one atomic write of the collection (``_core/files.py``): write_durably and place_new flush the file and then
its directory, never leave a temporary file, and place_new never replaces a file."""

from __future__ import annotations

import hashlib
import os

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core import files
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


@pytest.fixture
def directory_flushes(monkeypatch):
    """The directories write_durably / place_new flush, each with the names in it at that moment."""
    flushed = []
    real = files.fsync_directory

    def spy(directory):
        real(directory)
        flushed.append((directory, sorted(os.listdir(directory))))
    monkeypatch.setattr(files, 'fsync_directory', spy)
    return flushed


def test_write_durably_replaces_the_file_then_flushes_its_directory(tmp_path, directory_flushes):
    target = tmp_path / 'postgresql.auto.conf'
    target.write_text('old\n')
    os.chmod(str(target), 0o644)
    assert files.write_durably(str(target), b'new\n') == str(target)
    assert target.read_bytes() == b'new\n' and target.stat().st_mode & 0o777 == 0o600
    # The directory was flushed once the new file had its name: the rename is on disk when write_durably returns.
    assert directory_flushes == [(str(tmp_path), ['postgresql.auto.conf'])]
    files.write_durably(str(target), b'kept mode\n', mode=0o640)
    assert target.read_bytes() == b'kept mode\n' and target.stat().st_mode & 0o777 == 0o640
    assert os.listdir(str(tmp_path)) == ['postgresql.auto.conf'], 'no temporary file is left'


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another user needs root')
def test_write_durably_gives_the_file_to_its_owner(tmp_path):
    target = tmp_path / 'owned'
    files.write_durably(str(target), b'x', owner=(65534, 65534))
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)


def test_write_durably_leaves_nothing_when_it_fails(tmp_path, directory_flushes):
    with pytest.raises(OSError):
        files.write_durably(str(tmp_path / 'missing' / 'file'), b'x')
    (tmp_path / 'a-directory').mkdir()
    with pytest.raises(OSError):
        files.write_durably(str(tmp_path / 'a-directory'), b'x')  # the rename over a directory fails
    assert os.listdir(str(tmp_path)) == ['a-directory'] and directory_flushes == []


def test_place_new_never_replaces_and_flushes_the_directory(tmp_path, directory_flushes):
    temp = tmp_path / '.partial-bundle'
    temp.write_bytes(b'bundle')
    files.place_new(str(temp), str(tmp_path / 'bundle'))
    assert (tmp_path / 'bundle').read_bytes() == b'bundle' and not temp.exists()
    assert directory_flushes == [(str(tmp_path), ['bundle'])]
    temp.write_bytes(b'another')
    with pytest.raises(PgopsError, match='already exists'):
        files.place_new(str(temp), str(tmp_path / 'bundle'))
    assert (tmp_path / 'bundle').read_bytes() == b'bundle'


def test_place_new_takes_back_a_name_it_could_not_make_durable(tmp_path, monkeypatch):
    def failing(directory):
        raise OSError(5, 'Input/output error')
    monkeypatch.setattr(files, 'fsync_directory', failing)
    temp = tmp_path / '.partial-bundle'
    temp.write_bytes(b'bundle')
    with pytest.raises(OSError):
        files.place_new(str(temp), str(tmp_path / 'bundle'))
    assert not (tmp_path / 'bundle').exists()


def test_sha256_file(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 5)
    (tmp_path / 'data').write_bytes(data)
    assert files.sha256_file(str(tmp_path / 'data'), chunk=65536) == (hashlib.sha256(data).hexdigest(), len(data))
