# -*- coding: utf-8 -*-
"""Helpers of the table_archive / archive_restore integration tests: module parameters from the argument
specs, a database per test module, archives written by hand with the format's own helpers, and S3 and
PostgreSQL read-backs."""

from __future__ import annotations

import datetime
import json
import uuid

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import restore as archive_restore, table_archive
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec

from .helpers import _defaults

UTC = datetime.timezone.utc


def _connection(sandbox, dbname):
    return dict(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password=sandbox.password,
                login_db=dbname, ssl_mode='disable', connect_timeout=5, bucket=sandbox.s3.bucket,
                endpoint_url=sandbox.s3.endpoint_url, region=sandbox.s3.region, access_key=sandbox.s3.access_key,
                secret_key=sandbox.s3.secret_key)


def archive_params(sandbox, dbname, prefix, table, **overrides):
    """Parameters of ``table_archive`` as AnsibleModule would fill them in (spec defaults), for the sandbox."""
    spec = postgres_argument_spec()
    spec.update(table_archive.argument_spec())
    params = _defaults(spec)
    params.update(_connection(sandbox, dbname))
    params.update(prefix=prefix, table=table)
    params.update(overrides)
    return params


def restore_params(sandbox, dbname, prefix, table, **overrides):
    """Parameters of ``archive_restore`` as AnsibleModule would fill them in, for the sandbox; ``database``
    (the key part and the database connected to) is ``dbname``."""
    spec = postgres_argument_spec()
    spec.update(archive_restore.argument_spec())
    params = _defaults(spec)
    params.update(_connection(sandbox, dbname))
    params.update(prefix=prefix, table=table, database=dbname)
    params.update(overrides)
    return params


def new_prefix():
    """An S3 prefix of its own for one test."""
    return 'it-%s' % uuid.uuid4().hex[:10]


def new_name(stem='t'):
    """A table name of its own for one test."""
    return '%s_%s' % (stem, uuid.uuid4().hex[:8])


def create_database(sandbox):
    """A fresh database ``arch_<random>`` on the primary; returns its name."""
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    name = 'arch_%s' % uuid.uuid4().hex[:8]
    sandbox.primary.execute('CREATE DATABASE %s' % name)
    return name


def drop_database(sandbox, name):
    sandbox.primary.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % name)


def query(sandbox, dbname, sql, params=None):
    return sandbox.primary.execute(sql, params, dbname=dbname)


def scalar(sandbox, dbname, sql, params=None):
    return query(sandbox, dbname, sql, params)[0][0]


def differences(sandbox, dbname, table, reference):
    """``(rows of table not in reference, rows of reference not in table)``, EXCEPT ALL both ways."""
    return tuple(scalar(sandbox, dbname, 'SELECT count(*) FROM (TABLE %s EXCEPT ALL TABLE %s) d' % pair)
                 for pair in ((table, reference), (reference, table)))


def assert_same_rows(sandbox, dbname, table, reference):
    """The table holds exactly the reference's rows: EXCEPT both ways gives nothing and the counts match."""
    assert scalar(sandbox, dbname, 'SELECT count(*) FROM (TABLE %s EXCEPT TABLE %s) d' % (table, reference)) == 0
    assert scalar(sandbox, dbname, 'SELECT count(*) FROM (TABLE %s EXCEPT TABLE %s) d' % (reference, table)) == 0
    # EXCEPT ALL and equal counts as well: no row lost, none duplicated.
    assert differences(sandbox, dbname, table, reference) == (0, 0)
    assert scalar(sandbox, dbname, 'SELECT count(*) FROM %s' % table) == \
        scalar(sandbox, dbname, 'SELECT count(*) FROM %s' % reference)


def list_keys(sandbox, prefix):
    """Every object key under ``prefix`` (sorted)."""
    client = sandbox.s3.client()
    keys = []
    for page in client.get_paginator('list_objects_v2').paginate(Bucket=sandbox.s3.bucket, Prefix=prefix):
        keys.extend(o['Key'] for o in page.get('Contents', ()))
    return sorted(keys)


def archive_keys(sandbox, prefix):
    """The ``.jsonl.gz`` keys under ``prefix`` in archive order."""
    keys = [k for k in list_keys(sandbox, prefix) if k.endswith(fmt.DATA_SUFFIX)]
    return sorted(keys, key=lambda k: fmt.parse_key(k)['order'])


def get_object(sandbox, key):
    return sandbox.s3.client().get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read()


def put_object(sandbox, key, body):
    sandbox.s3.client().put_object(Bucket=sandbox.s3.bucket, Key=key, Body=body)


def read_json(sandbox, key):
    return json.loads(get_object(sandbox, key))


def json_rows(sandbox, dbname, sql):
    """``row_to_json`` text of each row of ``sql`` (a SELECT), rendered as table_archive renders them."""
    conn = sandbox.primary.connect(dbname=dbname, autocommit=False)
    try:
        with conn.cursor() as cursor:
            for statement in ("SET LOCAL TimeZone = 'UTC'", "SET LOCAL bytea_output = 'hex'",
                              'SET LOCAL extra_float_digits = 1'):
                cursor.execute(statement)
            cursor.execute('SELECT pg_catalog.row_to_json(x)::text FROM (%s) x' % sql)
            return [row[0] for row in cursor.fetchall()]
    finally:
        conn.rollback()
        conn.close()


def table_types(sandbox, dbname, table):
    """``[(column, format_type)]`` of ``table``."""
    return query(sandbox, dbname, 'SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute'
                                  ' WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum',
                 [table])


def legacy_batch_key(prefix, database, table, archived_at, batch=1):
    """A format 1 key (no schema), as earlier versions wrote them."""
    key = fmt.batch_key(prefix, database, 'public', table, archived_at, batch)
    return fmt.legacy_table_prefix(prefix, database, table) + key[len(fmt.table_prefix(prefix, database, 'public', table)):]


def write_archive(sandbox, prefix, database, table, rows, archived_at, batch=1, columns=None, sidecar=True,
                  body=None, key=None, schema='public', legacy=False, sidecar_format=None):
    """Write one archive by hand, as table_archive would: ``rows`` are JSON object texts (str) or dicts.

    :param columns: ``[(name, type)]`` for the sidecar (required when ``sidecar``).
    :param body: bytes to store instead of the encoded rows (the sidecar still describes the real rows).
    :param legacy: write it where format 1 put it (no schema in the key), with a format 1 sidecar.
    :returns: the key.
    """
    if key is None:
        key = legacy_batch_key(prefix, database, table, archived_at, batch) if legacy else \
            fmt.batch_key(prefix, database, schema, table, archived_at, batch)
    stamp = archived_at.strftime('%Y-%m-%dT%H:%M:%SZ')
    batch_id = fmt.batch_id(database, schema, table, archived_at, batch)
    texts = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False, separators=(',', ':')) for r in rows]
    encoded, count, size = fmt.encode_batch(texts, fmt.metadata_suffix(stamp, batch_id, database, table))
    put_object(sandbox, key, encoded if body is None else body)
    if sidecar:
        document = fmt.sidecar_document(key, encoded, count, columns, dict(database=database, schema=schema, table=table),
                                        batch_id, stamp, uncompressed_bytes=None if legacy else size)
        if legacy or sidecar_format:
            document['format'] = sidecar_format or 'pgops.resilience.archive/1'
            document.pop('uncompressed_bytes', None)
        put_object(sandbox, key + fmt.SIDECAR_SUFFIX, json.dumps(document).encode('utf-8'))
    return key


def day(year, month, date, hour=12, minute=0, second=0):
    return datetime.datetime(year, month, date, hour, minute, second, tzinfo=UTC)


def db_watermark(sandbox, dbname, prefix, table, schema='public'):
    """``(last_restored_key, total_archives_restored)`` of ``table`` under ``prefix`` in ``restore_watermarks``,
    or None."""
    exists = scalar(sandbox, dbname, "SELECT to_regclass(%s) IS NOT NULL", ['%s.restore_watermarks' % schema])
    if not exists:
        return None
    rows = query(sandbox, dbname, 'SELECT last_restored_key, total_archives_restored FROM %s.restore_watermarks'
                                  ' WHERE prefix = %%s AND schema_name = %%s AND table_name = %%s' % schema,
                 [prefix, schema, table])
    return rows[0] if rows else None


def s3_watermark(sandbox, prefix, dbname, table, schema='public'):
    """The S3 restore watermark document, or None."""
    key = fmt.table_prefix(prefix, dbname, schema, table) + fmt.WATERMARK_NAME
    return read_json(sandbox, key) if key in list_keys(sandbox, key) else None
