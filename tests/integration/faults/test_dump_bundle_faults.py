# -*- coding: utf-8 -*-
"""pg_dump_bundle writing to a volume that cannot hold the bundle (a small tmpfs): the run fails with a clear
error, leaves no partial bundle, no ``.sha256`` and no staging directory behind, and the good bundles already on
the volume are untouched (byte for byte, modes included)."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import pytest

from ..archive_helpers import create_database, drop_database, query
from .runner import run_module, wait_backends_gone
from .small_disk import FILLER
from .snapshots import dir_snapshot

pytestmark = pytest.mark.faults

# Incompressible rows (bytes from md5), about 2 MB: the dump, its plain SQL copy and the packed bundle together
# need several MB, more than the volume leaves free.
_BIG = """
CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL);
INSERT INTO blobs SELECT g, decode(string_agg(md5(g::text || '/' || i::text), '' ORDER BY i), 'hex')
FROM generate_series(1, 2000) AS g, generate_series(1, 64) AS i GROUP BY g;
"""
_TINY = 'CREATE TABLE notes (id int PRIMARY KEY, note text); INSERT INTO notes VALUES (1, $$kept$$), (2, $$safe$$);'
OLD_NAMES = ['nightly-20200101-0000.tar.gz', 'nightly-20200102-0000.tar.gz']


def _args(sandbox, database, directory):
    return dict(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                ssl_mode='disable', connect_timeout=5, database=database, directory=str(directory))


def _member_sizes(bundle_path):
    """``{member: bytes}`` from the bundle's manifest."""
    with tarfile.open(bundle_path, 'r:gz') as tar:
        manifest = json.load(tar.extractfile('manifest.json'))
    return dict((name, member['bytes']) for name, member in manifest['members'].items())


@pytest.fixture(scope='module')
def databases(sandbox, tmp_path_factory):
    """``(big database, tiny database, sizes)``; ``sizes``: ``dump`` (the directory dump's bytes), ``plain``
    (records.sql.gz), ``bundle`` (the packed bundle), ``others`` (the other members), measured on a normal disk;
    plus ``good``: a directory holding two verified bundles of the tiny database under old names."""
    big, tiny = create_database(sandbox), create_database(sandbox)
    query(sandbox, big, _BIG)
    query(sandbox, tiny, _TINY)
    scratch = tmp_path_factory.mktemp('dump-sizes')
    done = run_module('pg_dump_bundle', _args(sandbox, big, scratch), scratch)
    assert done.returncode == 0, done
    members = _member_sizes(done.result['bundle']['url'])
    dump = sum(size for name, size in members.items() if name.startswith('records.dir/'))
    plain = members.get('records.sql.gz', 0)
    sizes = dict(dump=dump, plain=plain, others=sum(members.values()) - dump - plain, bundle=done.result['bundle']['bytes'])
    good = tmp_path_factory.mktemp('good-bundles')
    made = run_module('pg_dump_bundle', _args(sandbox, tiny, good), good)
    assert made.returncode == 0, made
    source = made.result['bundle']['url']
    for name in OLD_NAMES:
        shutil.copyfile(source, str(good / name))
        with open(source + '.sha256') as handle:
            digest = handle.read().split()[0]
        (good / (name + '.sha256')).write_text('%s  %s\n' % (digest, name))
    os.unlink(source)
    os.unlink(source + '.sha256')
    yield big, tiny, sizes, good
    for name in (big, tiny):
        drop_database(sandbox, name)


# Free space left on the volume, as a function of the measured sizes, and the step that runs out of it.
FREE_SPACE = [
    ('pg_dump_runs_out', lambda s: s['dump'] // 3),
    ('packing_runs_out', lambda s: s['dump'] + s['plain'] + s['others'] + s['bundle'] // 2),
]


@pytest.mark.parametrize('case, free', FREE_SPACE, ids=[c[0] for c in FREE_SPACE])
def test_disk_full_fails_clearly_and_leaves_no_partial_bundle(sandbox, databases, small_disk, workdir, case, free):
    big, tiny, sizes, good = databases
    for path in good.iterdir():
        shutil.copy2(str(path), small_disk.path)
    leave = free(sizes)
    assert leave < small_disk.free_bytes() - 64 * 1024, ('the volume is too small for this case', sizes)
    small_disk.fill(leave)
    before = dir_snapshot(small_disk.path, ignore=(FILLER,))

    failed = run_module('pg_dump_bundle', _args(sandbox, big, small_disk.path), workdir)
    wait_backends_gone(sandbox, big)
    assert failed.returncode == 1 and failed.failed, failed
    assert 'Traceback' not in failed.stdout + failed.stderr
    after = dir_snapshot(small_disk.path, ignore=(FILLER,))
    assert before == after  # no partial bundle, no .sha256, no staging directory; the old bundles as they were
    # The error says why: the program's own words (its stderr), or the collection's, name the full volume.
    message = failed.result['msg']
    assert 'No space left on device' in message or 'free space' in message, message

    # With room again, the same run succeeds beside the old bundles.
    small_disk.empty_filler()
    assert sizes['dump'] + sizes['plain'] + sizes['bundle'] * 2 < small_disk.free_bytes(), sizes
    done = run_module('pg_dump_bundle', _args(sandbox, big, small_disk.path), workdir)
    assert done.returncode == 0, done
    kept = dir_snapshot(small_disk.path)
    assert all(kept[name] == before[name] for name in before if name != '.')
