# -*- coding: utf-8 -*-
"""The fault tools themselves, on the real sandbox: the S3 cutter relays, observes, runs hooks, cuts and
blackholes; the small disk fills to the byte count asked; snapshots see a change; the secret grep finds a planted
secret in a text, a file and a gzip member; every hostile identifier round-trips through PostgreSQL."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time

import boto3
import botocore.config
import botocore.exceptions
import pytest

from psycopg2 import sql

from ..archive_helpers import create_database, drop_database, new_prefix, query
from .hostile import HOSTILE_IDENTIFIERS, MAX_IDENTIFIER_BYTES, hostile_identifiers
from .runner import ModuleRun
from .s3_cutter import RequestReader, get_of, put_of
from .secret_grep import SecretGrep
from .snapshots import cluster_snapshot, db_snapshot, dir_snapshot, s3_snapshot

pytestmark = pytest.mark.faults

# What botocore raises when a connection is reset or closed before an answer.
CONNECTION_FAILED = (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)


def _client(sandbox, endpoint_url, read_timeout=5, attempts=1):
    """A boto3 client that gives up fast (one attempt), to see the proxy's faults directly."""
    config = botocore.config.Config(s3={'addressing_style': 'path'}, retries={'total_max_attempts': attempts, 'mode': 'standard'},
                                    connect_timeout=2, read_timeout=read_timeout)
    return boto3.session.Session(aws_access_key_id=sandbox.s3.access_key, aws_secret_access_key=sandbox.s3.secret_key,
                                 region_name=sandbox.s3.region).client('s3', endpoint_url=endpoint_url, config=config)


def test_cutter_relays_and_sees_each_request(sandbox, cutter):
    client = _client(sandbox, cutter.endpoint_url)
    key = '%s/dir/a b%%.pending' % new_prefix()
    client.put_object(Bucket=sandbox.s3.bucket, Key=key, Body=b'x' * 100000)
    assert client.get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read() == b'x' * 100000
    client.delete_object(Bucket=sandbox.s3.bucket, Key=key)
    seen = [(r.method, r.key) for r in cutter.requests]
    assert seen == [('PUT', key), ('GET', key), ('DELETE', key)]


def test_request_reader_finds_heads_on_a_keep_alive_connection():
    # moto answers with "Connection: close", so the keep-alive framing is checked here on its own.
    reader = RequestReader()
    stream = (b'PUT /b/k1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello'
              b'POST /b/k2?uploads HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n'
              b'GET /b/k3 HTTP/1.1\r\nHost: h\r\n\r\n')
    heads, relayed = [], b''
    for start in range(0, len(stream), 7):  # in small pieces, heads and bodies split anywhere
        for piece, head in reader.feed(stream[start:start + 7]):
            relayed += piece
            if head:
                heads.append(head)
    assert heads == [('PUT', '/b/k1'), ('POST', '/b/k2?uploads'), ('GET', '/b/k3')]
    assert relayed == stream


def test_request_hook_drops_the_request_before_s3_sees_it(sandbox, cutter):
    prefix = new_prefix()
    client = _client(sandbox, cutter.endpoint_url)
    fired = cutter.on_request(put_of('.meta.json'), lambda request: None, drop=True, nth=2)
    client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/1.meta.json', Body=b'{}')
    with pytest.raises(CONNECTION_FAILED):
        client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/2.meta.json', Body=b'{}')
    client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/3.meta.json', Body=b'{}')  # fired once only
    assert [r.key for r in fired] == [prefix + '/2.meta.json']
    assert sorted(s3_snapshot(sandbox, prefix)) == [prefix + '/1.meta.json', prefix + '/3.meta.json']


def test_response_hook_runs_when_s3_has_stored_the_object(sandbox, cutter):
    prefix = new_prefix()
    client = _client(sandbox, cutter.endpoint_url)
    stored_at_hook = []
    cutter.on_request(put_of('.jsonl.gz'), lambda request: stored_at_hook.append(sorted(s3_snapshot(sandbox, prefix))),
                      when='response', drop=True)
    started = time.monotonic()
    with pytest.raises(CONNECTION_FAILED):
        client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/b.jsonl.gz', Body=b'z' * 5000)
    assert time.monotonic() - started < 2, 'the dropped response must reset the connection, not leave it hanging'
    assert stored_at_hook == [[prefix + '/b.jsonl.gz']]


def test_cut_resets_then_resume_relays(sandbox, cutter):
    client = _client(sandbox, cutter.endpoint_url)
    client.head_bucket(Bucket=sandbox.s3.bucket)
    cutter.cut()
    started = time.monotonic()
    with pytest.raises(CONNECTION_FAILED):
        client.head_bucket(Bucket=sandbox.s3.bucket)
    assert time.monotonic() - started < 2, 'a cut must fail at once, not time out'
    cutter.resume()
    client.head_bucket(Bucket=sandbox.s3.bucket)


def test_blackhole_times_out_then_resume_relays(sandbox, cutter):
    client = _client(sandbox, cutter.endpoint_url, read_timeout=1)
    cutter.blackhole()
    started = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        client.head_bucket(Bucket=sandbox.s3.bucket)
    assert time.monotonic() - started >= 0.9
    cutter.resume()
    client.head_bucket(Bucket=sandbox.s3.bucket)


def test_hook_can_cut_s3_after_n_puts(sandbox, cutter):
    prefix = new_prefix()
    client = _client(sandbox, cutter.endpoint_url)
    cutter.on_request(put_of(), lambda request: cutter.cut(), nth=3)
    client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/1', Body=b'1')
    client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/2', Body=b'2')
    with pytest.raises(CONNECTION_FAILED):
        client.put_object(Bucket=sandbox.s3.bucket, Key=prefix + '/3', Body=b'3')
    with pytest.raises(CONNECTION_FAILED):
        client.get_object(Bucket=sandbox.s3.bucket, Key=prefix + '/1')
    assert cutter.count(get_of()) == 0  # refused before any request head arrived
    assert sorted(s3_snapshot(sandbox, prefix)) == [prefix + '/1', prefix + '/2']


def test_module_run_parses_results_and_is_killed_at_a_polled_condition(sandbox, cutter, workdir):
    args = dict(login_host='127.0.0.1', login_port=1, connect_timeout=2, table='t', bucket=sandbox.s3.bucket,
                where='true', endpoint_url=cutter.endpoint_url, ssl_mode='disable')
    done = ModuleRun('table_archive', args, workdir).start().wait()
    assert done.failed and 'Cannot connect to PostgreSQL' in done.result['msg'], done
    # A process stopped by SIGKILL at a polled condition: no result, returncode -9.
    run = ModuleRun('table_archive', dict(args, login_port=sandbox.primary.port), workdir).start()
    assert run.kill_when(lambda: True)
    ended = run.wait()
    assert ended.killed and ended.result is None


def test_small_disk_fills_to_the_free_space_asked(small_disk):
    assert 15 * 2 ** 20 <= small_disk.size <= 17 * 2 ** 20
    free = small_disk.fill(2 * 2 ** 20)
    assert abs(free - 2 * 2 ** 20) <= 4096
    with pytest.raises(OSError):
        with open(os.path.join(small_disk.path, 'big'), 'wb') as handle:
            handle.write(b'\0' * (3 * 2 ** 20))
            handle.flush()
    small_disk.empty_filler()
    assert small_disk.free_bytes() > 12 * 2 ** 20


def test_snapshots_see_changes(sandbox, fault_db, tmp_path):
    query(sandbox, fault_db, 'CREATE TABLE snap (id int PRIMARY KEY, v text); INSERT INTO snap VALUES (1, $$a$$), (2, $$b$$)')
    before = db_snapshot(sandbox, fault_db)
    assert before['table snap'][0] == 2 and 'index snap_pkey' in before
    query(sandbox, fault_db, 'UPDATE snap SET v = v WHERE id = 1')  # same rows: same snapshot
    assert db_snapshot(sandbox, fault_db) == before
    query(sandbox, fault_db, 'UPDATE snap SET v = $$c$$ WHERE id = 2')
    after = db_snapshot(sandbox, fault_db)
    assert after != before and before.diff(after)[1].startswith('~ changed:     table snap')
    query(sandbox, fault_db, 'CREATE MATERIALIZED VIEW snap_count AS SELECT count(*) FROM snap WITH NO DATA')
    assert db_snapshot(sandbox, fault_db)['table snap_count'] == ('not populated',)
    query(sandbox, fault_db, 'REFRESH MATERIALIZED VIEW snap_count')
    assert db_snapshot(sandbox, fault_db)['table snap_count'][0] == 1
    cluster = cluster_snapshot(sandbox)
    other = create_database(sandbox)
    try:
        assert cluster.diff(cluster_snapshot(sandbox))[1].startswith('+ only after:  database %s' % other)
    finally:
        drop_database(sandbox, other)
    assert cluster_snapshot(sandbox) == cluster
    (tmp_path / 'd').mkdir()
    (tmp_path / 'd' / 'f').write_bytes(b'one')
    os.symlink('f', str(tmp_path / 'd' / 'l'))
    first = dir_snapshot(str(tmp_path / 'd'))
    assert first['l'] == ('link', first['l'][1], None, 'f') and first['f'][0] == 'file'
    (tmp_path / 'd' / 'f').write_bytes(b'two')
    assert dir_snapshot(str(tmp_path / 'd')) != first


def test_secret_grep_reports_place_and_offset(tmp_path):
    grep = SecretGrep({'password': 'hunter2-very-secret'})
    assert grep.leaks_in_texts(dict(stdout='nothing here')) == []
    (tmp_path / 'plain').write_bytes(b'0123456789hunter2-very-secret')
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as tar:
        data = gzip.compress(b'abc hunter2-very-secret')
        info = tarfile.TarInfo('member.sql.gz')
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / 'bundle.tar.gz').write_bytes(buffer.getvalue())
    leaks = grep.leaks_in_dirs(tmp_path)
    assert any(leak.startswith('%s: password at byte 10' % (tmp_path / 'plain')) for leak in leaks), leaks
    assert any('bundle.tar.gz (gunzipped)!member.sql.gz (gunzipped): password at byte 4' in leak for leak in leaks), leaks
    assert all('hunter2' not in leak for leak in leaks)  # the report does not leak it again
    with pytest.raises(AssertionError, match='secret leak'):
        grep.assert_clean(dict(stderr='x hunter2-very-secret'))
    # An expected place is allowed (and returned), for the labels named only; a skipped directory is not read.
    allowed = grep.assert_clean(dirs=[tmp_path], allowed=[('!member.sql.gz (gunzipped)', ('password',)), ('plain', ('password',))])
    assert len(allowed) == 2 and all(leak.label == 'password' for leak in allowed)
    with pytest.raises(AssertionError, match='1 secret leak'):
        grep.assert_clean(dirs=[tmp_path], allowed=[('plain', ('password',)), ('!member.sql.gz (gunzipped)', ('other',))])
    (tmp_path / 'skipped').mkdir()
    (tmp_path / 'skipped' / 'f').write_bytes(b'hunter2-very-secret')
    assert len(grep.leaks_in_dirs(tmp_path, skip=[tmp_path / 'skipped'])) == 2


def test_hostile_identifiers_round_trip_through_postgresql(sandbox, fault_db):
    names = [name for label, name in HOSTILE_IDENTIFIERS]
    assert len(set(names)) == len(names)
    assert all(0 < len(name.encode('utf-8')) <= MAX_IDENTIFIER_BYTES and '\0' not in name for name in names)
    assert ('63 ASCII bytes', 'x' * 63) in hostile_identifiers() and hostile_identifiers(max_bytes=10, exclude=('tab',))
    conn = sandbox.primary.connect(dbname=fault_db)
    try:
        with conn.cursor() as cursor:
            cursor.execute('CREATE SCHEMA hostile')
            for name in names:
                cursor.execute(sql.SQL('CREATE TABLE hostile.{} ({} int)').format(sql.Identifier(name), sql.Identifier(name)))
            cursor.execute("SELECT relname FROM pg_class WHERE relnamespace = 'hostile'::regnamespace AND relkind = 'r'")
            assert sorted(row[0] for row in cursor.fetchall()) == sorted(names)
            cursor.execute('DROP SCHEMA hostile CASCADE')
    finally:
        conn.close()
