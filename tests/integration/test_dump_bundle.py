# -*- coding: utf-8 -*-
"""Logical dump bundles on the real sandbox: dump -> restore -> drill with identical row counts and checksums, a
failing pg_dump that fails the task with its own message, corrupted bundles refused before anything is restored,
retention, S3 (moto's server), and the playbooks run by FQCN.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import dump as dump_bundle, dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._pg.fingerprints import (
    compare_fingerprints, table_fingerprints)
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connect

from pgops_sandbox.dump_demo import reported_bundle

from .dump_helpers import database_from, dump_params, module_params, restore_params
from .helpers import run_playbook

SCHEMA_SQL = """
DO $$BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'shop_app') THEN CREATE ROLE shop_app LOGIN PASSWORD 'app-secret'; END IF;
END$$;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA sales;
CREATE SCHEMA "Stock";
CREATE TABLE sales.orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2), placed timestamptz, tags jsonb);
INSERT INTO sales.orders
  SELECT g, 'customer ' || (g % 97), g * 1.25, timestamptz '2026-01-01' + g * interval '1 minute', jsonb_build_object('n', g)
  FROM generate_series(1, 4000) AS g;
CREATE TABLE "Stock"."Items" (id int PRIMARY KEY, name text, weight float8);
INSERT INTO "Stock"."Items" SELECT g, 'item ' || g, g / 3.0 FROM generate_series(1, 700) AS g;
CREATE INDEX items_name_trgm ON "Stock"."Items" USING gin (name gin_trgm_ops);
CREATE TABLE public.audit (id bigserial PRIMARY KEY, note text);
INSERT INTO public.audit (note) SELECT 'note ' || g FROM generate_series(1, 50) AS g;
CREATE MATERIALIZED VIEW sales.customer_totals AS SELECT customer, count(*) AS orders, sum(total) AS total
  FROM sales.orders GROUP BY customer;
CREATE MATERIALIZED VIEW sales.empty_until_refreshed AS SELECT 1 AS one WITH NO DATA;
ALTER TABLE "Stock"."Items" OWNER TO shop_app;
"""
EXPECTED_ROWS = {'sales.orders': 4000, 'Stock.Items': 700, 'public.audit': 50, 'sales.customer_totals': 97}
# The restore refreshes every materialized view, the one the source never populated too (one row).
RESTORED_ROWS = dict(EXPECTED_ROWS, **{'sales.empty_until_refreshed': 1})


@pytest.fixture(scope='module')
def shop(sandbox):
    """A database with several schemas, a role, pg_trgm and materialized views (one never populated)."""
    return database_from(sandbox, 'shop', SCHEMA_SQL)


def _fingerprints(sandbox, database):
    conn = connect(module_params(sandbox, {}, login_db=database))
    try:
        return table_fingerprints(conn, checksums=True)
    finally:
        conn.close()


def _databases(sandbox):
    return set(r[0] for r in sandbox.primary.execute('SELECT datname FROM pg_database'))


def test_dump_restore_and_drill_give_identical_counts_and_checksums(sandbox, shop, store_dir):
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir, fingerprints=True))
    name = made['bundle']['name']
    assert dump_bundle.PATTERN.match(name) and re.match(r'nightly-\d{8}-\d{9}-[0-9a-f]{8}\.tar\.gz\Z', name)
    assert sorted(os.listdir(store_dir)) == [name, name + '.sha256']
    assert made['tables'] == 4 and made['members'] > 5

    with tarfile.open(store_dir / name) as tar:
        members = set(tar.getnames())
        manifest = json.load(tar.extractfile('manifest.json'))
    for member in ('globals.sql', 'records.sql.gz', 'pg_settings.tsv', 'extensions.tsv', 'fingerprints.json',
                   'records.dir/toc.dat'):
        assert member in members
    assert set(manifest['members']) == members - {'manifest.json'}
    assert manifest['info']['database'] == shop

    target = 'restored_%s' % uuid.uuid4().hex[:8]
    restored = dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target))
    assert restored['created_database'] and restored['source'] == 'directory'
    assert restored['tables'] == RESTORED_ROWS
    assert {'name': 'pg_trgm', 'schema': 'public', 'version': restored['extensions'][0]['version'], 'created': True} \
        in restored['extensions']
    assert any('shop_app' in e for e in restored['globals']['already_existed'])
    views = dict((v['name'], v) for v in restored['materialized_views'])
    assert views['sales.customer_totals']['refreshed'] and views['sales.empty_until_refreshed']['refreshed']
    source, copy = _fingerprints(sandbox, shop), _fingerprints(sandbox, target)
    copy.pop('sales.empty_until_refreshed')  # refreshed by the restore, never populated in the source
    assert compare_fingerprints(source, copy)['identical']
    owner = sandbox.primary.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'Stock'", dbname=target)
    assert owner == [('shop_app',)]

    drill = dump_restore.restore_dump(restore_params(sandbox, store_dir, drill=True))
    assert drill['drill']['identical'] and drill['drill']['tables'] == 4
    assert drill['drill']['compared_with'] == 'the fingerprints recorded in the bundle'
    assert drill['drill']['dropped'] and drill['database'] not in _databases(sandbox)


def test_plain_sql_restore_and_drill_against_the_live_source(sandbox, shop, store_dir):
    dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir, fingerprints=False))
    target = 'plain_%s' % uuid.uuid4().hex[:8]
    restored = dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target, source='plain'))
    assert restored['source'] == 'plain' and restored['tables'] == RESTORED_ROWS
    drill = dump_restore.restore_dump(restore_params(sandbox, store_dir, drill=True))
    assert drill['drill']['identical'] and drill['drill']['compared_with'] == 'database %s now' % shop


def test_drill_fails_when_the_source_changed_since_the_dump(sandbox, shop, store_dir):
    dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir))
    sandbox.primary.execute("UPDATE public.audit SET note = 'changed' WHERE id = 7", dbname=shop)
    try:
        with pytest.raises(PgopsError) as failed:
            dump_restore.restore_dump(restore_params(sandbox, store_dir, drill=True, compare_with='database'))
    finally:
        sandbox.primary.execute("UPDATE public.audit SET note = 'note 7' WHERE id = 7", dbname=shop)
    assert '1 tables differ' in failed.value.msg and 'public.audit' in failed.value.msg
    drill = failed.value.details['restore']['drill']
    assert drill['differences'][0]['problem'] == 'checksum' and drill['dropped']
    assert not [d for d in _databases(sandbox) if d.startswith(dump_restore.DRILL_PREFIX)]


def test_a_failing_pg_dump_fails_with_its_message_and_stores_nothing(sandbox, shop, store_dir):
    sandbox.primary.execute("CREATE TABLE IF NOT EXISTS public.secrets (v text)", dbname=shop)
    sandbox.primary.execute("DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dumper') THEN "
                            "CREATE ROLE dumper LOGIN PASSWORD 'dumper-pw'; END IF; END$$")
    sandbox.primary.execute("GRANT USAGE ON SCHEMA sales, \"Stock\" TO dumper", dbname=shop)
    old = store_dir / 'nightly-20200101-0600.tar.gz'
    old.write_bytes(b'old bundle')
    (store_dir / 'nightly-20200101-0600.tar.gz.sha256').write_text('0' * 64 + '  nightly-20200101-0600.tar.gz\n')
    try:
        with pytest.raises(PgopsError) as failed:
            dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir, login_user='dumper', login_password='dumper-pw',
                                                     keep=1))
    finally:
        sandbox.primary.execute('DROP TABLE public.secrets', dbname=shop)
    assert 'pg_dump of database %s failed (exit status 1)' % shop in failed.value.msg
    assert 'permission denied for' in failed.value.msg
    assert 'dumper-pw' not in failed.value.msg
    # Nothing half-written, and retention did not run: the old bundle is still there.
    assert sorted(os.listdir(store_dir)) == ['nightly-20200101-0600.tar.gz', 'nightly-20200101-0600.tar.gz.sha256']


def _rewrite_member(archive, member, new_bytes):
    """Rebuild ``archive`` with ``member`` replaced by ``new_bytes``, the old manifest kept and a matching .sha256,
    as a copy that was tampered with (or a disk that lost a block) would look to a careless check."""
    rebuilt = io.BytesIO()
    with tarfile.open(archive) as source, tarfile.open(fileobj=rebuilt, mode='w:gz') as out:
        for info in source:
            data = source.extractfile(info).read() if info.isfile() else None
            if info.name == member:
                data = new_bytes
                info.size = len(data)
            out.addfile(info, io.BytesIO(data) if data is not None else None)
    archive.write_bytes(rebuilt.getvalue())
    digest = hashlib.sha256(rebuilt.getvalue()).hexdigest()
    archive.with_name(archive.name + '.sha256').write_text('%s  %s\n' % (digest, archive.name))


def test_a_bundle_with_a_corrupted_member_is_refused_before_anything_is_restored(sandbox, shop, store_dir):
    name = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir))['bundle']['name']
    _rewrite_member(store_dir / name, 'globals.sql', b'DROP ROLE shop_app;\n')
    target = 'never_%s' % uuid.uuid4().hex[:8]
    with pytest.raises(PgopsError) as refused:
        dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target))
    assert 'bundle %s is refused: member globals.sql differs from the manifest' % name in refused.value.msg
    assert target not in _databases(sandbox)
    assert sandbox.primary.execute("SELECT 1 FROM pg_roles WHERE rolname = 'shop_app'") == [(1,)]


def test_a_bundle_with_a_damaged_archive_is_refused(sandbox, shop, store_dir):
    name = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir))['bundle']['name']
    data = bytearray((store_dir / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (store_dir / name).write_bytes(bytes(data))
    with pytest.raises(PgopsError) as refused:
        dump_restore.restore_dump(restore_params(sandbox, store_dir, database='never_restored'), check_mode=True)
    assert 'bundle %s is corrupt: its sha256 differs' % name in refused.value.msg


def test_retention_keeps_the_newest_and_ignores_other_files(sandbox, shop, store_dir):
    for stamp in ('20200101-0600', '20200102-0600', '20200103-0600'):
        (store_dir / ('nightly-%s.tar.gz' % stamp)).write_bytes(b'x')
        (store_dir / ('nightly-%s.tar.gz.sha256' % stamp)).write_text('0' * 64 + '\n')
    (store_dir / 'records_dump_20251102.tar.gz').write_bytes(b'uploaded by hand')
    check = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir, keep=2), check_mode=True)
    assert check['deleted'] == ['nightly-20200101-0600.tar.gz', 'nightly-20200102-0600.tar.gz']
    assert len(os.listdir(store_dir)) == 7
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir, keep=2))
    assert made['deleted'] == check['deleted']
    assert sorted(os.listdir(store_dir)) == sorted([
        'nightly-20200103-0600.tar.gz', 'nightly-20200103-0600.tar.gz.sha256', made['bundle']['name'],
        made['bundle']['name'] + '.sha256', 'records_dump_20251102.tar.gz'])


def test_s3_bundle_round_trip(sandbox, shop, tmp_path):
    s3 = dict(bucket=sandbox.s3.bucket, prefix='dumps/%s' % uuid.uuid4().hex[:8], directory=None,
              endpoint_url=sandbox.s3.endpoint_url, access_key=sandbox.s3.access_key, secret_key=sandbox.s3.secret_key,
              region=sandbox.s3.region)
    made = dump_bundle.make_dump_bundle(dump_params(sandbox, shop, scratch_dir=str(tmp_path), **s3))
    name = made['bundle']['name']
    assert made['bundle']['url'] == 's3://%s/%s/%s' % (s3['bucket'], s3['prefix'], name)
    assert sorted(sandbox.s3.objects(s3['prefix'] + '/')) == ['%s/%s' % (s3['prefix'], n) for n in (name, name + '.sha256')]
    assert os.listdir(tmp_path) == []  # the local copy is gone once uploaded
    drill = dump_restore.restore_dump(restore_params(sandbox, drill=True, **s3))
    assert drill['drill']['identical'] and drill['bundle']['name'] == name


def test_existing_database_with_tables_is_refused_unless_clean(sandbox, shop, store_dir):
    dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir))
    target = 'again_%s' % uuid.uuid4().hex[:8]
    dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target))
    sandbox.primary.execute('DELETE FROM sales.orders WHERE id > 10', dbname=target)
    with pytest.raises(PgopsError) as refused:
        dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target))
    assert 'already holds 5 tables' in refused.value.msg and 'clean=true' in refused.value.msg
    again = dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target, clean=True))
    assert not again['created_database'] and again['tables'] == RESTORED_ROWS


def test_playbooks_dump_restore_and_drill(sandbox, shop, store_dir):
    dumped = run_playbook(sandbox, 'pgops.resilience.dump_bundle',
                          dict(dump_database=shop, dump_directory=str(store_dir), dump_keep=3))
    assert dumped.returncode == 0, dumped.stdout + dumped.stderr
    assert 'written to %s' % store_dir in dumped.stdout
    # What `make demo` reads: the name the playbook reports is the bundle in the directory.
    written = [n for n in os.listdir(store_dir) if dump_bundle.PATTERN.match(n)]
    assert len(written) == 1 and reported_bundle(dumped.stdout) == written[0]
    assert sandbox.password not in dumped.stdout + dumped.stderr
    # Programs' stderr goes through module.warn: no "warnings passed to exit_json" deprecation (ansible-core 2.19).
    assert 'DEPRECATION' not in dumped.stdout + dumped.stderr
    target = 'pb_%s' % uuid.uuid4().hex[:8]
    restored = run_playbook(sandbox, 'pgops.resilience.restore_dump',
                            dict(restore_database=target, restore_directory=str(store_dir)))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert '"sales.orders": 4000' in restored.stdout and '5 tables, 4848 rows' in restored.stdout
    drilled = run_playbook(sandbox, 'pgops.resilience.restore_dump', dict(restore_drill=True, restore_directory=str(store_dir)))
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert 'DEPRECATION' not in restored.stdout + restored.stderr + drilled.stdout + drilled.stderr
    assert 'drill: identical to the fingerprints recorded in the bundle (4 tables)' in drilled.stdout
    missing = run_playbook(sandbox, 'pgops.resilience.restore_dump', dict(restore_directory=str(store_dir)))
    assert missing.returncode != 0 and 'Set restore_database' in missing.stdout


def test_a_drill_changes_no_role_and_a_refused_restore_applies_no_globals(sandbox, shop, store_dir):
    sandbox.primary.execute('CREATE ROLE "Drill Only" NOLOGIN')
    dump_bundle.make_dump_bundle(dump_params(sandbox, shop, store_dir))
    # After the dump, shop_app's password changes and a role the dump holds disappears.
    sandbox.primary.execute("ALTER ROLE shop_app PASSWORD 'changed-after-the-dump'")
    sandbox.primary.execute('DROP ROLE "Drill Only"')
    before = sandbox.primary.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop_app'")
    try:
        drill = dump_restore.restore_dump(restore_params(sandbox, store_dir, drill=True))
    finally:
        sandbox.primary.execute('DROP ROLE IF EXISTS "Drill Only"')
    assert drill['drill']['identical'] and 'shop_app' in drill['globals']['already_existed']
    assert drill['globals']['created_roles'] == ['Drill Only']
    assert sandbox.primary.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop_app'") == before
    target = 'busy_%s' % uuid.uuid4().hex[:8]
    sandbox.primary.execute('CREATE DATABASE %s' % target)
    sandbox.primary.execute('CREATE TABLE t (i int)', dbname=target)
    with pytest.raises(PgopsError, match='already holds 1 tables'):
        dump_restore.restore_dump(restore_params(sandbox, store_dir, database=target))
    assert sandbox.primary.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'shop_app'") == before
