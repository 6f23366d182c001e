# -*- coding: utf-8 -*-
"""The object store (``_s3/store.py``): the same operations, and the same outcomes, on a local directory and on an
S3 prefix of the sandbox's S3 server (moto over HTTP)."""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.store import DirectoryStore, S3Store

PATTERN = re.compile(r'obj-\d+\.bin\Z')


@pytest.fixture(params=['directory', 's3'])
def store(request, tmp_path):
    """An empty store of each kind, and a way to put an object beside the store's own (nested, or not matching)."""
    if request.param == 'directory':
        root = tmp_path / 'store'
        root.mkdir()
        made = DirectoryStore(str(root))

        def put_other(name, data):
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return made, put_other
    sandbox = request.getfixturevalue('sandbox')
    prefix = 'store-test/%s' % uuid.uuid4().hex[:8]
    s3_params = dict(endpoint_url=sandbox.s3.endpoint_url, region=sandbox.s3.region, access_key=sandbox.s3.access_key,
                     secret_key=sandbox.s3.secret_key)
    made = S3Store(sandbox.s3.bucket, '/%s/' % prefix, s3_params)

    def put_other(name, data):
        sandbox.s3.client().put_object(Bucket=sandbox.s3.bucket, Key='%s/%s' % (prefix, name), Body=data)
    return made, put_other


def _local_file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_the_same_outcomes_on_a_directory_and_on_s3(store, tmp_path):
    objects, put_other = store
    assert objects.list(PATTERN) == [] and not objects.exists('obj-1.bin')
    data = os.urandom(3 * 1024 * 1024 + 17)  # larger than one read block
    before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    stored = objects.put_file(_local_file(tmp_path, 'source', data), 'obj-1.bin', hashlib.sha256(data).hexdigest())
    assert stored == dict(name='obj-1.bin', url=objects.url('obj-1.bin'), size=len(data))
    objects.put_file(_local_file(tmp_path, 'small', b'tiny\n'), 'obj-2.bin')
    put_other('other.txt', b'not matching')
    put_other('sub/obj-3.bin', b'one level down: not an object of this store')

    listed = objects.list(PATTERN)
    assert [(o['name'], o['size']) for o in listed] == [('obj-1.bin', len(data)), ('obj-2.bin', 5)]
    assert all(before <= o['last_modified'] <= before + datetime.timedelta(minutes=5) for o in listed)
    assert [o['name'] for o in objects.list()] == ['obj-1.bin', 'obj-2.bin', 'other.txt']
    assert objects.exists('obj-1.bin') and objects.exists('other.txt') and not objects.exists('obj-9.bin')

    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    local = objects.fetch('obj-1.bin', str(scratch))
    with open(local, 'rb') as handle:
        assert handle.read() == data
    if objects.local_directory is None:
        assert local == str(scratch / 'obj-1.bin') and os.stat(local).st_mode & 0o777 == 0o600
    else:
        assert local == objects.url('obj-1.bin')  # its own file: nothing is copied
    assert objects.fetch('obj-9.bin', str(scratch), missing_ok=True) is None
    with pytest.raises(PgopsError, match='obj-9.bin'):
        objects.fetch('obj-9.bin', str(scratch))
    assert sorted(os.listdir(str(scratch))) == (['obj-1.bin'] if objects.local_directory is None else [])

    assert objects.read('obj-2.bin', 4096) == b'tiny\n'
    assert objects.read('obj-1.bin', 10) == data[:11], 'at most limit + 1 bytes, to tell a larger object'
    assert objects.read('obj-9.bin', 10, missing_ok=True) is None
    with pytest.raises(PgopsError, match='obj-9.bin does not exist'):
        objects.read('obj-9.bin', 10)
    with objects.reading('obj-1.bin') as stream:
        assert stream.read() == data

    objects.delete('obj-1.bin')
    objects.delete('obj-1.bin')  # a missing object is no error
    assert [o['name'] for o in objects.list(PATTERN)] == ['obj-2.bin'] and not objects.exists('obj-1.bin')
    with pytest.raises(PgopsError, match='obj-1.bin'):
        with objects.reading('obj-1.bin') as stream:
            stream.read()


def test_staging_directory_is_the_store_itself_or_scratch(store, tmp_path):
    objects = store[0]
    if objects.local_directory is None:
        assert objects.staging_directory(str(tmp_path)) == str(tmp_path)
    else:
        assert objects.staging_directory(str(tmp_path)) == objects.local_directory


def test_a_directory_store_never_replaces_and_refuses_what_does_not_read_back(tmp_path):
    root = tmp_path / 'store'
    root.mkdir()
    objects = DirectoryStore(str(root))
    objects.put_file(_local_file(tmp_path, 'first', b'first'), 'obj-1.bin')
    with pytest.raises(PgopsError, match='already exists'):
        objects.put_file(_local_file(tmp_path, 'second', b'second'), 'obj-1.bin')
    assert (root / 'obj-1.bin').read_bytes() == b'first'
    assert sorted(os.listdir(str(root))) == ['obj-1.bin'], 'no temporary file is left'
    # A file built in place (as bundles are) is read back: a sha256 other than the one written is refused.
    (root / 'obj-2.bin').write_bytes(b'built in place')
    with pytest.raises(PgopsError, match='reads back with sha256'):
        objects.put_file(str(root / 'obj-2.bin'), 'obj-2.bin', hashlib.sha256(b'something else').hexdigest())
    assert objects.put_file(str(root / 'obj-2.bin'), 'obj-2.bin', hashlib.sha256(b'built in place').hexdigest())['size'] == 14
    assert os.stat(str(root / 'obj-1.bin')).st_mode & 0o777 == 0o600


def test_a_failed_managed_transfer_is_an_s3_error_not_a_traceback(sandbox, tmp_path):
    """boto3's upload_file wraps the store's answer in S3UploadFailedError, which is no botocore error: it is
    reported like every S3 failure, naming the object, so the callers' clean-up (a bundle stored half) runs."""
    s3_params = dict(endpoint_url=sandbox.s3.endpoint_url, region=sandbox.s3.region, access_key=sandbox.s3.access_key,
                     secret_key=sandbox.s3.secret_key)
    missing = S3Store('no-such-bucket-%s' % uuid.uuid4().hex[:8], 'x', s3_params)
    path = tmp_path / 'obj-1.bin'
    path.write_bytes(b'data')
    with pytest.raises(PgopsError) as info:
        missing.put_file(str(path), 'obj-1.bin')
    assert 'upload of s3://no-such-bucket-' in info.value.msg and 'NoSuchBucket' in info.value.msg
