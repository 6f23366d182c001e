# -*- coding: utf-8 -*-
"""Speed and memory of archive_restore against a raw ``psql \\copy`` of the same rows from a local CSV file.

The restore must be as fast as raw COPY from a local CSV (ratio (a)/(b) of 1.0 or better, 0.8 at the very
least), end to end: process start, imports, S3 download, sha256 check, gunzip, JSON to COPY text and the
COPY itself. Its peak memory must not grow with the archive (target under 256 MB).

This script starts its own sandbox primary and S3 endpoint (no standby) in a temporary directory, builds
a table of one million rows (id bigint primary key, user_id integer, action text, metadata jsonb,
created_at timestamptz), writes them to a CSV file (not timed), archives them to S3 with the real
``table_archive`` (batch_size 10,000: 100 batches), and then, each measurement ``--repeat`` times (median
reported), into the truncated table:

(a) ``psql -X -c "\\copy t FROM 'file.csv' csv"``;
(b) ``archive_restore`` with ``restore_all: true`` and ``conflict_strategy: skip`` (the other options at
    their module defaults), the module itself run in a fresh Python process with its arguments in a JSON
    file, as Ansible runs it. Its peak RSS is its VmHWM (Linux).

It prints the rows, times and the ratio (a)/(b); the same ratio for restores into a table that already
holds half of the rows (every second batch, and ids of the first half), where ``skip`` leaves the
existing rows alone; and the peak RSS of the restore for one and five million rows (the five-million
table gets its own archive, then one restore and one ``\\copy``). A diagnostic line shows the restore with
``update_after_each_archive: false``: the share of the S3 watermark written while the restore runs (the
module default, from a background thread at most once a second).

Both sides connect to 127.0.0.1 over TCP with the same password authentication. Before every timed run
the table is truncated, the restore watermark object is deleted (each restore is a first restore) and a
CHECKPOINT is taken. After every run the table's rows are compared with the original rows (count and an
order-independent hash of each row's text).

    PYTHONPATH=sandbox:.build/collections .venv/bin/python benchmarks/archive_restore.py [--rows 1000000]
        [--large-rows 5000000 | --skip-large] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')]

# pylint: disable=wrong-import-position
from pgops_sandbox import Sandbox  # noqa: E402
from pgops_sandbox.pgbin import find_bindir  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._archive import table_archive
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import postgres_argument_spec

DATABASE = 'bench'
PREFIX = 'archives'

# The restore as Ansible runs it: a fresh interpreter running the module file itself (AnsibleModule reads
# its arguments from the JSON file named on the command line, as when a module is run by hand), from its
# imports to the interpreter's exit. Its peak RSS is VmHWM of /proc/self/status, read at exit: the high-water
# mark of the process's own memory since exec (the ru_maxrss that wait4 reports would include the parent's
# memory, which the child shares until exec).
CHILD = r'''
import atexit, json, runpy, sys
def peak_rss():
    try:
        with open('/proc/self/status') as status:
            sys.stderr.write('PEAK_RSS %d\n' % [int(line.split()[1]) * 1024 for line in status if line.startswith('VmHWM:')][0])
    except (OSError, IndexError, ValueError):
        pass
atexit.register(peak_rss)
sys.argv = ['archive_restore', sys.argv[1]]
runpy.run_module('ansible_collections.pgops.resilience.plugins.modules.archive_restore', run_name='__main__')
'''


def module_params(spec, **given):
    """The parameters a module would get: every option at its default, then ``given``."""
    params = dict((name, option.get('default')) for name, option in spec.items())
    params.update(given)
    return params


class Bench:
    """The sandbox, the table names and the measurements of one run of this script."""

    def __init__(self, sandbox, workdir, batch_size):
        self.sandbox = sandbox
        self.workdir = workdir
        self.batch_size = batch_size
        self.psql = os.path.join(find_bindir(), 'psql')
        self.s3 = sandbox.s3.client()
        self.env = dict(os.environ, **sandbox.env())
        self.env['PGDATABASE'] = DATABASE
        self.env['PYTHONPATH'] = os.pathsep.join([os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')])
        node = sandbox.primary
        self.connection = dict(login_host=node.host, login_port=node.port, login_user='postgres',
                               login_password=sandbox.password, login_db=DATABASE)
        self.conn = node.connect(dbname='postgres')
        with self.conn.cursor() as cursor:
            cursor.execute('CREATE DATABASE %s' % DATABASE)
        self.conn.close()
        self.conn = node.connect(dbname=DATABASE)

    def sql(self, statement, args=None):
        with self.conn.cursor() as cursor:
            cursor.execute(statement, args)
            return cursor.fetchall() if cursor.description is not None else None

    # -- the data -------------------------------------------------------------------------------------

    def create(self, table, rows):
        """Create and fill ``table`` with ``rows`` rows; return its fingerprint."""
        self.sql('CREATE TABLE %s (id bigint PRIMARY KEY, user_id integer NOT NULL, action text NOT NULL,'
                 ' metadata jsonb, created_at timestamptz NOT NULL)' % table)
        self.sql("""
            INSERT INTO %s
            SELECT g, (g::bigint * 7919 %% 100000)::integer,
                   (ARRAY['login', 'logout', 'view', 'update', 'search', 'download', E'export\\tcsv', 'delete'])[g %% 8 + 1],
                   CASE WHEN g %% 10 = 0 THEN NULL ELSE jsonb_build_object(
                       'ip', '10.' || g %% 256 || '.' || g %% 251 || '.' || g %% 241, 'ok', g %% 3 > 0,
                       'agent', 'Mozilla/5.0', 'items', g %% 17, 'note', CASE WHEN g %% 5 = 0 THEN 'café' END) END,
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
            FROM pg_catalog.generate_series(1, %d) AS g""" % (table, rows))
        self.sql('VACUUM ANALYZE %s' % table)
        return self.fingerprint(table)

    def fingerprint(self, table):
        """Row count and an order-independent hash of every row's text."""
        return tuple(self.sql('SELECT count(*), coalesce(sum(pg_catalog.hashtextextended(t::text, 0)), 0)::text'
                              ' FROM %s AS t' % table)[0])

    def export_csv(self, table, path, where='true'):
        with open(path, 'wb') as handle, self.conn.cursor() as cursor:
            cursor.copy_expert('COPY (SELECT * FROM %s WHERE %s ORDER BY id) TO STDOUT csv' % (table, where), handle)
        return os.path.getsize(path)

    def archive(self, table):
        spec = table_archive.argument_spec()
        spec.update(postgres_argument_spec())
        params = module_params(spec, table=table, bucket=self.sandbox.s3.bucket, prefix=PREFIX, where='true',
                               batch_size=self.batch_size, endpoint_url=self.sandbox.s3.endpoint_url,
                               access_key=self.sandbox.s3.access_key, secret_key=self.sandbox.s3.secret_key,
                               region=self.sandbox.s3.region, **self.connection)
        return table_archive.archive_rows(params)

    # -- the measurements -----------------------------------------------------------------------------

    def reset(self, table, prefill=None):
        """Empty ``table`` (then load ``prefill``, a CSV file), drop the watermark, checkpoint."""
        self.sql('TRUNCATE %s' % table)
        if prefill:
            self.psql_copy(table, prefill)
            self.sql('VACUUM ANALYZE %s' % table)
        self.s3.delete_object(Bucket=self.sandbox.s3.bucket,
                              Key=fmt.table_prefix(PREFIX, DATABASE, 'public', table) + fmt.WATERMARK_NAME)
        self.sql('CHECKPOINT')

    def psql_copy(self, table, path):
        """(a): wall seconds of ``psql -X -c "\\copy table FROM 'path' csv"``."""
        started = time.perf_counter()
        subprocess.run([self.psql, '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', "\\copy %s FROM '%s' csv" % (table, path)],
                       env=self.env, check=True)
        return time.perf_counter() - started

    def restore(self, table, **options):
        """(b): wall seconds, peak RSS (bytes) and result summary of an archive_restore process (``options``:
        module options other than the defaults)."""
        # Only the options given: the module fills in its defaults, as under Ansible.
        params = dict(database=DATABASE, table=table, bucket=self.sandbox.s3.bucket, prefix=PREFIX,
                      restore_all=True, conflict_strategy='skip', endpoint_url=self.sandbox.s3.endpoint_url,
                      access_key=self.sandbox.s3.access_key, secret_key=self.sandbox.s3.secret_key,
                      region=self.sandbox.s3.region, **dict(self.connection, **options))
        args = os.path.join(self.workdir, 'restore-args.json')
        with open(args, 'w') as handle:
            json.dump(dict(ANSIBLE_MODULE_ARGS=params), handle)
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, '-c', CHILD, args], env=self.env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        out, err = child.communicate()
        elapsed = time.perf_counter() - started
        if child.returncode != 0:
            raise SystemExit('archive_restore failed (exit %s): %s %s' % (child.returncode, out.decode('utf-8', 'replace'),
                                                                          err.decode('utf-8', 'replace')))
        summary = json.loads(out)
        peaks = [int(line.split()[1]) for line in err.decode('utf-8', 'replace').splitlines() if line.startswith('PEAK_RSS ')]
        if not peaks:
            raise SystemExit('archive_restore did not report its peak RSS: %s' % err.decode('utf-8', 'replace'))
        return elapsed, peaks[0], summary

    def copy_then_restore(self, table, csv, rows, expected):
        """(a) then (b) into the emptied ``table``, each checked against ``expected``.

        :returns: tuple ``(copy seconds, restore seconds, restore peak RSS bytes, restore summary)``.
        """
        self.reset(table)
        copy_time = self.psql_copy(table, csv)
        self.check(table, expected, '\\copy')
        self.reset(table)
        elapsed, peak, summary = self.restore(table)
        self.check(table, expected, 'archive_restore')
        if summary['records_restored'] != rows or summary['files_failed']:
            raise SystemExit('archive_restore restored %s' % summary)
        return copy_time, elapsed, peak, summary

    def check(self, table, expected, what):
        got = self.fingerprint(table)
        if got != expected:
            raise SystemExit('%s: the table holds %s rows with hash %s, expected %s / %s' % (what, got[0], got[1], *expected))


def mb(value):
    return '%.0f MB' % (value / 1048576.0)


def main(argv=None):
    """Run the benchmark and print the measurements and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--rows', type=int, default=1000000, help='rows of the timed table (default 1,000,000)')
    parser.add_argument('--large-rows', type=int, default=5000000, help='rows of the memory check table (default 5,000,000)')
    parser.add_argument('--skip-large', action='store_true', help='leave out the large table')
    parser.add_argument('--repeat', type=int, default=5, help='runs per measurement; the median is reported')
    parser.add_argument('--batch-size', type=int, default=10000, help='table_archive batch_size (default 10,000)')
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix='pgops-bench-archive-')
    os.chmod(workdir, 0o755)
    sandbox = Sandbox(os.path.join(workdir, 'sandbox'), with_standby=False)
    data = os.path.join(workdir, 'data')
    os.makedirs(data)
    os.chmod(data, 0o755)
    try:
        sandbox.up()
        bench = Bench(sandbox, data, args.batch_size)
        sizes = [('events_small', args.rows)] + ([] if args.skip_large else [('events_large', args.large_rows)])
        prepared = {}
        for table, rows in sizes:
            started = time.monotonic()
            expected = bench.create(table, rows)
            csv = os.path.join(data, table + '.csv')
            size = bench.export_csv(table, csv)
            halves = {}
            if table == 'events_small':
                # Every second batch (table_archive takes the rows in id order, batch_size at a time).
                halves['every second batch'] = os.path.join(data, table + '.alternate.csv')
                bench.export_csv(table, halves['every second batch'], '(id - 1) / %d %% 2 = 1' % args.batch_size)
                halves['first half of the ids'] = os.path.join(data, table + '.first.csv')
                bench.export_csv(table, halves['first half of the ids'], 'id <= %d' % (rows // 2))
            print('%s: %s rows built, CSV %s, in %.1f s' % (table, format(rows, ','), mb(size), time.monotonic() - started), flush=True)
            started = time.monotonic()
            result = bench.archive(table)
            stored = sum(b['size_bytes'] for b in result['batches'])
            print('%s: archived %s rows in %d batches (%s gzip JSON Lines) with table_archive in %.1f s'
                  % (table, format(result['records_archived'], ','), len(result['batches']), mb(stored),
                     time.monotonic() - started), flush=True)
            if result['records_archived'] != rows:
                raise SystemExit('table_archive archived %d of %d rows' % (result['records_archived'], rows))
            prepared[table] = (rows, expected, csv, halves)

        report = []
        table = 'events_small'
        rows, expected, csv, halves = prepared[table]
        copies, restores, rss = [], [], []
        for index in range(args.repeat):
            copy_time, elapsed, peak, summary = bench.copy_then_restore(table, csv, rows, expected)
            copies.append(copy_time)
            restores.append(elapsed)
            rss.append(peak)
            print('run %d: (a) \\copy %.2f s   (b) archive_restore %.2f s (module duration_ms %d)   peak RSS %s'
                  % (index + 1, copies[-1], elapsed, summary['duration_ms'], mb(peak)), flush=True)
        a, b = statistics.median(copies), statistics.median(restores)
        report.append(('rows', format(rows, ',')))
        report.append(('(a) psql \\copy from CSV into the empty table, median', '%.2f s (%s rows/s)' % (a, format(int(rows / a), ','))))
        report.append(('(b) archive_restore (skip) into the empty table, median', '%.2f s (%s rows/s)' % (b, format(int(rows / b), ','))))
        report.append(('ratio (a)/(b), empty table [target >= 1.0, minimum 0.8]', '%.2f' % (a / b)))
        # Diagnostic: the share of the S3 watermark written while the restore runs (the module default).
        times = []
        for index in range(args.repeat):
            bench.reset(table)
            elapsed, peak, summary = bench.restore(table, update_after_each_archive=False)
            bench.check(table, expected, 'archive_restore')
            times.append(elapsed)
            rss.append(peak)
        d = statistics.median(times)
        print('diagnostic: archive_restore with update_after_each_archive: false, median %.2f s' % d, flush=True)
        report.append(('diagnostic, not the target: (b) with update_after_each_archive: false (S3 watermark '
                       'written once), median', '%.2f s, ratio (a)/(b) %.2f' % (d, a / d)))
        for label, prefill in halves.items():
            times = []
            for index in range(args.repeat):
                bench.reset(table, prefill)
                elapsed, peak, summary = bench.restore(table)
                bench.check(table, expected, 'archive_restore into the half-full table')
                if summary['records_restored'] != rows - rows // 2 or summary['records_skipped'] != rows // 2 or summary['files_failed']:
                    raise SystemExit('archive_restore into the half-full table: %s' % summary)
                times.append(elapsed)
                rss.append(peak)
                print('half-full (%s) run %d: archive_restore %.2f s, restored %s, skipped %s, peak RSS %s'
                      % (label, index + 1, elapsed, format(summary['records_restored'], ','),
                         format(summary['records_skipped'], ','), mb(peak)), flush=True)
            h = statistics.median(times)
            report.append(('(b) archive_restore (skip) into the half-full table (%s), median' % label, '%.2f s' % h))
            report.append(('ratio (a)/(b), (a) into the empty table, (b) into the half-full table (%s)' % label, '%.2f' % (a / h)))
        report.append(('peak RSS of archive_restore, %s rows' % format(rows, ','), mb(max(rss))))

        if not args.skip_large:
            table = 'events_large'
            rows, expected, csv, halves = prepared[table]
            copy_large, elapsed, peak, summary = bench.copy_then_restore(table, csv, rows, expected)
            print('%s rows: (a) \\copy %.2f s   (b) archive_restore %.2f s   peak RSS %s'
                  % (format(rows, ','), copy_large, elapsed, mb(peak)), flush=True)
            report.append(('peak RSS of archive_restore, %s rows' % format(rows, ','), mb(peak)))
            report.append(('ratio (a)/(b), empty table, %s rows (one run each)' % format(rows, ','), '%.2f' % (copy_large / elapsed)))

        print()
        width = max(len(label) for label, value in report)
        for label, value in report:
            print('%-*s  %s' % (width, label, value))
    finally:
        sandbox.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
