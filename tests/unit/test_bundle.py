# -*- coding: utf-8 -*-
"""Bundle format and store (local directory), retention, and the client-program environment: no servers."""

from __future__ import annotations

import datetime
import io
import os
import tarfile

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils import bundle, pg_tools
from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils.postgres import libpq_environment, postgres_argument_spec


def _tree(root):
    (root / 'records.dir').mkdir(parents=True)
    (root / 'records.dir' / 'toc.dat').write_bytes(b'\x00toc' * 1000)
    (root / 'records.dir' / '3001.dat.gz').write_bytes(os.urandom(5000))
    (root / 'globals.sql').write_text('CREATE ROLE app;\n')
    return root


@pytest.fixture
def packed(tmp_path):
    root = _tree(tmp_path / 'root')
    store = tmp_path / 'store'
    store.mkdir()
    return bundle.pack(str(root), str(store / 'nightly-20261121-0600.tar.gz'), 'logical-dump', {'database': 'records'})


def test_pack_writes_archive_checksum_and_manifest(packed, tmp_path):
    store = tmp_path / 'store'
    assert sorted(os.listdir(store)) == ['nightly-20261121-0600.tar.gz', 'nightly-20261121-0600.tar.gz.sha256']
    assert bundle.read_checksum_file(packed['path'] + '.sha256') == packed['sha256'] == bundle.sha256_file(packed['path'])[0]
    assert packed['bytes'] == os.path.getsize(packed['path'])
    members = packed['manifest']['members']
    assert sorted(members) == ['globals.sql', 'records.dir/3001.dat.gz', 'records.dir/toc.dat']
    assert members['globals.sql']['bytes'] == 17
    assert packed['manifest']['kind'] == 'logical-dump' and packed['manifest']['info'] == {'database': 'records'}


def test_extract_verified_round_trip(packed, tmp_path):
    manifest = bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert (tmp_path / 'out' / 'globals.sql').read_text() == 'CREATE ROLE app;\n'
    assert (tmp_path / 'out' / 'records.dir' / 'toc.dat').read_bytes() == (tmp_path / 'root' / 'records.dir' / 'toc.dat').read_bytes()
    assert manifest == packed['manifest']


def _rebuild(path, change):
    """Rewrite the archive through ``change(name, data) -> list of (name, data)`` and write a matching .sha256."""
    out = io.BytesIO()
    with tarfile.open(path) as source, tarfile.open(fileobj=out, mode='w:gz') as target:
        for info in source:
            data = source.extractfile(info).read() if info.isfile() else b''
            for name, new in change(info.name, data):
                item = tarfile.TarInfo(name)
                item.size = len(new)
                target.addfile(item, io.BytesIO(new))
    with open(path, 'wb') as handle:
        handle.write(out.getvalue())
    digest, dummy = bundle.sha256_file(path)
    with open(path + '.sha256', 'w', encoding='ascii') as handle:
        handle.write(digest + '\n')


@pytest.mark.parametrize('change, message', [
    (lambda n, d: [(n, b'tampered' if n == 'globals.sql' else d)], 'member globals.sql differs from the manifest'),
    (lambda n, d: [] if n == 'records.dir/toc.dat' else [(n, d)], 'member records.dir/toc.dat is listed in the manifest but missing'),
    (lambda n, d: [(n, d)] + ([('extra.sql', b'x')] if n == 'globals.sql' else []), 'member extra.sql is in the archive but not in the manifest'),
    (lambda n, d: [('../escape', d) if n == 'globals.sql' else (n, d)], "member '../escape' would be written outside"),
    (lambda n, d: [] if n == 'manifest.json' else [(n, d)], 'it holds no manifest.json'),
])
def test_tampered_bundles_are_refused_and_nothing_is_left(packed, tmp_path, change, message):
    _rebuild(packed['path'], change)
    with pytest.raises(PgopsError) as refused:
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert message in refused.value.msg and 'is refused' in refused.value.msg
    assert os.listdir(tmp_path / 'out') == []
    assert not (tmp_path / 'escape').exists()


def test_archive_checksum_mismatch_and_missing_checksum_file(packed, tmp_path):
    with open(packed['path'], 'r+b') as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PgopsError, match='is corrupt: its sha256 differs from the one'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    os.unlink(packed['path'] + '.sha256')
    with pytest.raises(PgopsError, match=r'has no nightly-20261121-0600.tar.gz.sha256 beside it'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))


def test_extract_refuses_a_non_empty_destination(packed, tmp_path):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    with pytest.raises(PgopsError, match='not empty'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert (tmp_path / 'out' / 'keep.txt').read_text() == 'mine'


def test_pack_refuses_links(tmp_path):
    root = _tree(tmp_path / 'root')
    os.symlink('/etc/passwd', root / 'link')
    with pytest.raises(PgopsError, match='not a regular file'):
        bundle.pack(str(root), str(tmp_path / 'b.tar.gz'), 'logical-dump')
    assert not (tmp_path / 'b.tar.gz').exists()


def test_names_selection_and_retention(tmp_path):
    when = datetime.datetime(2026, 11, 21, 6, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert bundle.bundle_name('nightly', when) == 'nightly-20261121-1100.tar.gz'  # UTC
    assert bundle.bundle_name('basebackup', when, '.bundle.tar.gz') == 'basebackup-20261121-1100.bundle.tar.gz'
    pattern = bundle.name_pattern('nightly')
    for name in ('nightly-20261120-0600.tar.gz', 'nightly-20261121-0600.tar.gz', 'nightly-20261119-0600.tar.gz',
                 'nightly-2026.tar.gz', 'records_dump_20251102.tar.gz', 'nightly-20261121-0600.tar.gz.sha256'):
        (tmp_path / name).write_bytes(b'x')
    store = bundle.BundleStore.from_params({'directory': str(tmp_path)})
    found = [b['name'] for b in store.list(pattern)]
    assert found == ['nightly-20261119-0600.tar.gz', 'nightly-20261120-0600.tar.gz', 'nightly-20261121-0600.tar.gz']
    bundles = store.list(pattern)
    assert bundle.select_bundle(bundles)['name'] == 'nightly-20261121-0600.tar.gz'
    assert bundle.select_bundle(bundles, 'nightly-20261120-0600.tar.gz')['name'] == 'nightly-20261120-0600.tar.gz'
    with pytest.raises(PgopsError, match='is not in'):
        bundle.select_bundle(bundles, 'nightly-20200101-0000.tar.gz', str(tmp_path))
    with pytest.raises(PgopsError, match='no bundle found'):
        bundle.select_bundle([], None, str(tmp_path))
    assert [b['name'] for b in bundle.expired_bundles(bundles, 2)] == ['nightly-20261119-0600.tar.gz']
    assert bundle.expired_bundles(bundles, 0) == [] and bundle.expired_bundles(bundles, 5) == []
    with pytest.raises(PgopsError, match='keep must be 0'):
        bundle.expired_bundles(bundles, -1)
    assert store.apply_retention(pattern, 1, check_mode=True) == found[:2] and len(os.listdir(tmp_path)) == 6
    assert store.apply_retention(pattern, 1) == found[:2]
    assert sorted(os.listdir(tmp_path)) == ['nightly-2026.tar.gz', 'nightly-20261121-0600.tar.gz',
                                            'nightly-20261121-0600.tar.gz.sha256', 'records_dump_20251102.tar.gz']


def test_store_needs_exactly_one_place(tmp_path):
    with pytest.raises(PgopsError, match='exactly one of directory'):
        bundle.BundleStore.from_params({})
    with pytest.raises(PgopsError, match='exactly one of directory'):
        bundle.BundleStore.from_params({'directory': str(tmp_path), 'bucket': 'b'})
    with pytest.raises(PgopsError, match='does not exist'):
        bundle.BundleStore.from_params({'directory': str(tmp_path / 'missing')})


def _conn_params(**overrides):
    params = dict((k, v.get('default')) for k, v in postgres_argument_spec().items())
    params.update(overrides)
    return params


def test_libpq_environment_carries_the_password_and_overrides_the_base():
    env = libpq_environment(_conn_params(login_host='db', login_password='s3cret', login_db='app'), dbname='other',
                            base={'PATH': '/bin', 'PGPASSFILE': '/p', 'PGHOST': 'elsewhere'})
    assert env['PGHOST'] == 'db' and env['PGPASSWORD'] == 's3cret' and env['PGDATABASE'] == 'other'
    assert env['PGPASSFILE'] == '/p' and env['PATH'] == '/bin' and env['PGAPPNAME'] == 'pgops.resilience'
    from_uri = libpq_environment(_conn_params(conninfo='postgresql://u:pw@h:6543/d?sslmode=require'), base={})
    assert (from_uri['PGUSER'], from_uri['PGPASSWORD'], from_uri['PGPORT'], from_uri['PGSSLMODE']) == ('u', 'pw', '6543', 'require')
    with pytest.raises(PgopsError, match="'keepalives' has no libpq environment variable"):
        libpq_environment(_conn_params(connect_params={'keepalives': 1}), base={})


def test_program_failure_message_masks_secrets_and_keeps_the_tail():
    error = pg_tools.failure('pg_dump of database app', 1, 'x' * 5000 + ' password=hunter22 end', ['hunter22'])
    assert error.msg.startswith('pg_dump of database app failed (exit status 1): ...')
    assert 'hunter22' not in error.msg and error.msg.endswith('end') and error.details['rc'] == 1
    assert 'printed nothing' in pg_tools.failure('psql', 2, '').msg


def test_find_client_program_refuses_an_explicit_directory_without_it(tmp_path):
    with pytest.raises(PgopsError, match='has no pg_dump program'):
        pg_tools.find_client_program('pg_dump', str(tmp_path))
