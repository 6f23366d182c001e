# -*- coding: utf-8 -*-
"""archive_restore killed with SIGKILL in the middle of restore_all, then run again: the table ends exactly
equal to the source, and the watermark read right after the kill never points past committed rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore

from .archive_helpers import (
    archive_keys, assert_same_rows, create_database, db_watermark, drop_database, get_object, json_rows, new_prefix,
    query, restore_params, scalar, table_types, write_archive, day)

FILES = 40
ROWS_PER_FILE = 2500
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')

RUNNER = """
import json, sys
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore
params = json.load(sys.stdin)
print(json.dumps(archive_restore.restore_archives(params), default=str))
"""


@pytest.fixture(scope='module')
def db(sandbox):
    name = create_database(sandbox)
    query(sandbox, name, """
        CREATE TABLE source (id bigint PRIMARY KEY, payload text NOT NULL, amount numeric NOT NULL, doc jsonb,
                             created_at timestamptz NOT NULL);
        INSERT INTO source
        SELECT g, repeat(md5(g::text), 4) || E'\\t\\\\ é', g * 1.0001, jsonb_build_object('g', g, 'n', NULL),
               '2025-01-01'::timestamptz + g * interval '1 minute'
        FROM generate_series(1, %d) g;
    """ % (FILES * ROWS_PER_FILE))
    yield name
    drop_database(sandbox, name)


@pytest.fixture(scope='module')
def archives(sandbox, db):
    """40 archives of 2,500 rows each of ``source`` (ids in order), written once under one prefix; returns
    ``(prefix, keys in archive order, last id of each key)``."""
    prefix = new_prefix()
    columns = table_types(sandbox, db, 'source')
    rows = json_rows(sandbox, db, 'SELECT * FROM source ORDER BY id')
    keys, last_ids = [], []
    for n in range(FILES):
        chunk = rows[n * ROWS_PER_FILE:(n + 1) * ROWS_PER_FILE]
        # A few runs on a few days, several batches per run, as table_archive writes them.
        when = day(2026, 1, 1 + n // 10, hour=n // 5 % 2)
        keys.append(write_archive(sandbox, prefix, db, 'source', chunk, when, batch=n % 5 + 1, columns=columns))
        last_ids.append((n + 1) * ROWS_PER_FILE)
    assert archive_keys(sandbox, prefix) == keys
    return prefix, keys, last_ids


def _target(sandbox, db, schema):
    """An empty copy of ``source`` in ``schema`` (the archive path names the table, so the copy keeps its name)."""
    query(sandbox, db, 'DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};'
                       ' CREATE TABLE {s}.source (LIKE public.source INCLUDING ALL);'
                       # A little time per loaded file, so that a kill lands in the middle of the run.
                       ' CREATE FUNCTION {s}.slow() RETURNS trigger LANGUAGE plpgsql AS'
                       ' $$BEGIN PERFORM pg_sleep(0.05); RETURN NULL; END$$;'
                       ' CREATE TRIGGER slow AFTER INSERT ON {s}.source FOR EACH STATEMENT EXECUTE FUNCTION {s}.slow()'
          .format(s=schema))


def _kill_in_the_middle(sandbox, db, params, table):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([COLLECTIONS, os.path.join(ROOT, 'sandbox')]))
    process = subprocess.Popen([sys.executable, '-c', RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    process.stdin.write(json.dumps(params).encode('utf-8'))
    process.stdin.close()
    conn = sandbox.primary.connect(dbname=db)
    seen = 0
    try:
        deadline = time.monotonic() + 120
        with conn.cursor() as cursor:
            while time.monotonic() < deadline and process.poll() is None:
                cursor.execute('SELECT count(*) FROM %s' % table)
                seen = cursor.fetchone()[0]
                if seen >= FILES // 4 * ROWS_PER_FILE:
                    break
                time.sleep(0.01)
        assert process.poll() is None, 'the restore ended before it could be killed: %s' % process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        # The server notices the closed socket; make sure its backend is gone before the next run.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with conn.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name ="
                               " 'pgops.resilience' AND pid <> pg_backend_pid()", [db])
                if cursor.fetchone()[0] == 0:
                    break
            time.sleep(0.1)
        else:
            with conn.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                               " AND application_name = 'pgops.resilience' AND pid <> pg_backend_pid()", [db])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()
        conn.close()
    return seen


@pytest.mark.parametrize('storage', ['s3', 'database'])
def test_kill_9_during_restore_all_then_rerun_gives_the_source_exactly(sandbox, db, archives, storage):
    prefix, keys, last_ids = archives
    assert len(keys) == FILES
    schema = 'kill_%s' % storage
    table = '%s.source' % schema
    _target(sandbox, db, schema)
    params = restore_params(sandbox, db, prefix, 'source', schema=schema, source_schema='public', restore_all=True,
                            storage_type=storage, conflict_strategy='skip')
    # Restored into another schema than the archives': the S3 watermark is that schema's own.
    watermark_key = fmt.table_prefix(prefix, db, 'public', 'source') + '.restore_watermark.%s.json' % schema
    sandbox.s3.client().delete_object(Bucket=sandbox.s3.bucket, Key=watermark_key)

    _kill_in_the_middle(sandbox, db, params, table)
    # Read at once, before anything else runs.
    if storage == 's3':
        objects = sandbox.s3.objects(watermark_key)
        marked = json.loads(get_object(sandbox, watermark_key))['last_restored_key'] if objects else None
    else:
        row = db_watermark(sandbox, db, prefix, 'source', schema=schema)
        marked = row[0] if row else None
    present = scalar(sandbox, db, 'SELECT count(*) FROM %s' % table)
    assert 0 < present < FILES * ROWS_PER_FILE, 'the kill should land in the middle of the run'
    assert present % ROWS_PER_FILE == 0  # whole files only: each is committed alone
    assert marked is not None, 'a quarter of the files were committed: the watermark must name one'
    covered = last_ids[keys.index(marked)]
    # Every row of the named file and of every earlier file is committed (the S3 copy may trail by one commit).
    assert scalar(sandbox, db, 'SELECT count(*) FROM %s WHERE id <= %%s' % table, [covered]) == covered
    assert covered <= present
    assert present == scalar(sandbox, db, 'SELECT max(id) FROM %s' % table)  # committed in order, no gap

    again = archive_restore.restore_archives(params)
    assert again['files_failed'] == 0
    assert again['files_processed'] + again['files_skipped'] == FILES
    assert again['files_skipped'] == keys.index(marked) + 1
    assert again['records_restored'] == FILES * ROWS_PER_FILE - present
    assert_same_rows(sandbox, db, table, 'source')
    assert scalar(sandbox, db, 'SELECT count(*) FROM (SELECT t::text FROM %s t EXCEPT SELECT s::text FROM source s) x'
                  % table) == 0
    if storage == 's3':
        assert json.loads(get_object(sandbox, watermark_key))['last_restored_key'] == keys[-1]
    else:
        assert db_watermark(sandbox, db, prefix, 'source', schema=schema)[0] == keys[-1]
