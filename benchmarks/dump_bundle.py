# -*- coding: utf-8 -*-
"""Time of pg_dump_bundle and pg_dump_restore against bare ``pg_dump -Fd -j 2`` and ``pg_restore -j 2`` of the same database.

The bundle's dump and its restore must cost less than 10 % more than the bare programs they wrap (target: overhead
(b)/(a) and (d)/(c) under +10 %), end to end: process start, imports, the module's extra files (globals, plain SQL
copy, settings, extensions), packing with sha256 of every member, and on restore the verification and extraction,
globals, extensions, ANALYZE, the refresh of the materialized views and the row counts.

This script starts its own sandbox primary (no standby) in a temporary directory and builds a database of
``--rows`` rows (default 2,000,000) over four tables with text, numeric, jsonb and timestamptz columns, primary
keys, foreign keys, two more indexes and one materialized view, and dumps it once (neither timed). Then, each
measurement ``--repeat`` times (median reported):

(a) ``pg_dump -Fd -j 2 -f <dir> bench`` into a new, empty directory;
(b) ``pg_dump_bundle`` with ``jobs: 2`` into a new, empty directory (the other options at their module defaults,
    so ``plain_sql: true``); as a diagnostic also with ``plain_sql: false``;
(c) ``pg_restore -j 2 -d <db> <dir>`` of (a) into a freshly created, empty database;
(d) ``pg_dump_restore`` with ``jobs: 2`` of (b) into a database that does not exist yet (the module creates it).

Both modules run as Ansible runs them: a fresh Python process running the module file with its arguments in a JSON
file. Both sides use the same client programs and connect to 127.0.0.1 over TCP with the password in PGPASSWORD
(the modules pass theirs to the programs the same way). Before every timed run a CHECKPOINT is taken and the WAL
archiver must have caught up; restored databases are dropped after each run. After every restore the row count of every
table and materialized view is compared with the source, and the member count of every bundle with the bare dump's
files, so a broken run cannot print good numbers.

It prints the rows, the sizes of the bare dump and of the bundles, the median times, the overheads, whether the
10 % target is met, and the module's own ``seconds`` per phase for its median run (the rest of its wall time is
"other": process start, imports, connections, CREATE DATABASE, removing the staging files).

    PYTHONPATH=sandbox:.build/collections .venv/bin/python benchmarks/dump_bundle.py [--rows 2000000] [--repeat 3]
        [--jobs 2] [--keep]
"""

from __future__ import annotations

import argparse
import functools
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
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_client_program
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import server_environment

DATABASE = 'bench'
BARE_TARGET = 'bench_restored_bare'
MODULE_TARGET = 'bench_restored_module'
TARGET_OVERHEAD = 0.10
SETTLE_TIMEOUT = 300  # seconds the WAL archiver may take to catch up between runs
# Files a bundle holds besides the directory dump: globals.sql, pg_settings.tsv, extensions.tsv (+ records.sql.gz).
EXTRA_MEMBERS = 3

# A module as Ansible runs it: a fresh interpreter running the module file itself (AnsibleModule reads its arguments
# from the JSON file named on the command line, as when a module is run by hand), from its imports to its exit.
CHILD = r'''
import runpy, sys
sys.argv = [sys.argv[1], sys.argv[2]]
runpy.run_module('ansible_collections.pgops.resilience.plugins.modules.' + sys.argv[0], run_name='__main__')
'''

# The source database: accounts, their orders and order lines, an event log, and a materialized view over orders.
SCHEMA = '''
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, email text NOT NULL, balance numeric(14, 2) NOT NULL,
                       profile jsonb, created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, account_id bigint NOT NULL REFERENCES accounts, status text NOT NULL,
                     total numeric(14, 2) NOT NULL, placed_at timestamptz NOT NULL, note text);
CREATE TABLE order_lines (order_id bigint NOT NULL REFERENCES orders, line_no integer NOT NULL, sku text NOT NULL,
                          quantity integer NOT NULL, unit_price numeric(12, 2) NOT NULL, PRIMARY KEY (order_id, line_no));
CREATE TABLE events (id bigint PRIMARY KEY, account_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
                     happened_at timestamptz NOT NULL);
'''
FILL = '''
INSERT INTO accounts
SELECT g, 'account ' || g, substr(md5(g::text), 1, 12) || '@example.org', (g * 7919 %% 1000000) / 100.0,
       CASE WHEN g %% 7 = 0 THEN NULL ELSE jsonb_build_object('plan', (ARRAY['free', 'team', 'enterprise'])[g %% 3 + 1],
           'seats', g %% 50, 'tags', jsonb_build_array('t' || g %% 11, 't' || g %% 13), 'note', CASE WHEN g %% 5 = 0 THEN 'café' END) END,
       timestamptz '2020-01-01 00:00:00+00' + g * interval '17 seconds'
FROM pg_catalog.generate_series(1::bigint, %(accounts)d) AS g;
INSERT INTO orders
SELECT g, (g - 1) %% %(accounts)d + 1, (ARRAY['new', 'paid', 'shipped', 'cancelled', E'on\\thold'])[g %% 5 + 1],
       (g * 104729 %% 10000000) / 100.0, timestamptz '2022-01-01 00:00:00+00' + g * interval '3 seconds',
       CASE WHEN g %% 4 = 0 THEN 'deliver to the back door, ring twice; order ' || g END
FROM pg_catalog.generate_series(1::bigint, %(orders)d) AS g;
INSERT INTO order_lines
SELECT (g - 1) %% %(orders)d + 1, (g - 1) / %(orders)d + 1, 'SKU-' || lpad((g * 31 %% 100000)::text, 6, '0'), g %% 9 + 1,
       (g * 7 %% 100000) / 100.0
FROM pg_catalog.generate_series(1::bigint, %(order_lines)d) AS g;
INSERT INTO events
SELECT g, (g * 13 - 1) %% %(accounts)d + 1, (ARRAY['login', 'logout', 'view', 'search', 'export'])[g %% 5 + 1],
       jsonb_build_object('ip', '10.' || g %% 256 || '.' || g %% 251 || '.' || g %% 241, 'ok', g %% 3 > 0,
                          'agent', 'Mozilla/5.0 (X11; Linux x86_64)', 'ms', g %% 997, 'session', md5((g / 20)::text)),
       timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second'
FROM pg_catalog.generate_series(1::bigint, %(events)d) AS g;
CREATE INDEX orders_account ON orders (account_id);
CREATE INDEX events_account_time ON events (account_id, happened_at);
CREATE MATERIALIZED VIEW account_totals AS
    SELECT account_id, count(*) AS orders, sum(total) AS total FROM orders GROUP BY account_id;
'''
# Tables and materialized views of the public schema, for the row counts.
RELATIONS = ("SELECT c.relname FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace "
             "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm') ORDER BY 1")


def table_rows(rows):
    """How ``rows`` split over the tables: a tenth accounts, a quarter orders, 40 % order lines, the rest events."""
    split = dict(accounts=rows // 10, orders=rows // 4, order_lines=rows * 2 // 5)
    split['events'] = rows - sum(split.values())
    return split


def directory_bytes(path):
    """Total size of the files under ``path``, and their number."""
    sizes = [os.path.getsize(os.path.join(top, name)) for top, dummy, files in os.walk(path) for name in files]
    return sum(sizes), len(sizes)


def median_run(runs):
    """The run (``(seconds, result)``) whose time is the median (the upper one of the middle two for an even count)."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


class Bench:
    """The sandbox, the connection settings and the measurements of one run of this script."""

    def __init__(self, sandbox, workdir, jobs):
        self.sandbox = sandbox
        self.workdir = workdir
        self.jobs = jobs
        self.node = sandbox.primary
        # No PG* variable of the caller (such as the sandbox's PGPASSFILE) may reach either side: both get the
        # server and the password from what is set here (bare) or from the module's options (which the module
        # turns into the same variables for its programs).
        base = server_environment()
        self.bare_env = dict(base, PGHOST=self.node.host, PGPORT=str(self.node.port), PGUSER='postgres',
                             PGPASSWORD=sandbox.password)
        self.module_env = dict(base, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')]))
        self.connection = dict(login_host=self.node.host, login_port=self.node.port, login_user='postgres',
                               login_password=sandbox.password)
        # The programs the modules pick (the newest client not older than the server), so both sides run the same ones.
        major = int(self.sql('postgres', "SELECT current_setting('server_version_num')")[0][0]) // 10000
        self.programs = dict((name, find_client_program(name, None, major)) for name in ('pg_dump', 'pg_restore'))
        self.serial = 0

    def sql(self, dbname, statement):
        """Run ``statement`` in autocommit mode on ``dbname``; return its rows ([] when it returns none)."""
        return self.node.execute(statement, dbname=dbname)

    def new_directory(self, label):
        """A new, empty directory under the work directory (every dump goes into its own)."""
        self.serial += 1
        path = os.path.join(self.workdir, '%s-%d' % (label, self.serial))
        os.makedirs(path)
        return path

    # -- the data -------------------------------------------------------------------------------------------------

    def build(self, rows):
        """Create and fill the source database; return its row count per table and materialized view."""
        self.sql('postgres', 'CREATE DATABASE %s' % DATABASE)
        conn = self.node.connect(dbname=DATABASE)
        try:
            with conn.cursor() as cursor:
                cursor.execute(SCHEMA)
                cursor.execute(FILL % table_rows(rows))
                cursor.execute('VACUUM ANALYZE')
        finally:
            conn.close()
        return self.counts(DATABASE)

    def counts(self, dbname):
        """``{relation: rows}`` of every table and materialized view of the public schema of ``dbname``."""
        names = [row[0] for row in self.sql(dbname, RELATIONS)]
        if not names:
            return {}
        query = ' UNION ALL '.join("SELECT '%s', count(*) FROM public.%s" % (name, name) for name in names)
        return dict(self.sql(dbname, query))

    def check(self, dbname, expected, what):
        """Raise SystemExit unless ``dbname`` holds ``expected`` rows in every relation."""
        got = self.counts(dbname)
        if got != expected:
            raise SystemExit('%s: database %s holds %s, expected %s' % (what, dbname, got, expected))

    def drop(self, dbname):
        """Drop ``dbname`` if it exists, closing its connections."""
        self.sql('postgres', 'DROP DATABASE IF EXISTS %s WITH (FORCE)' % dbname)

    def settle(self):
        """Flush what the previous run left dirty and wait until the archiver has copied every finished WAL segment
        (the sandbox archives WAL), so that no run pays for another one's writes."""
        self.sql('postgres', 'CHECKPOINT')
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.sql('postgres', "SELECT count(*) FROM pg_catalog.pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")[0][0]:
            if time.monotonic() > deadline:
                raise SystemExit('the WAL archiver is still behind after %d s; see the server log' % SETTLE_TIMEOUT)
            time.sleep(0.1)

    # -- the runs -------------------------------------------------------------------------------------------------

    def bare(self, cmd, what):
        """Wall seconds of the client program ``cmd`` (its stderr must be empty: a warning would mean a broken run)."""
        self.settle()
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=self.bare_env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0 or proc.stderr.strip():
            raise SystemExit('%s failed (exit %s): %s' % (what, proc.returncode, proc.stderr.decode('utf-8', 'replace')))
        return elapsed

    def module(self, name, **options):
        """Wall seconds and result of the module ``name`` run with ``options`` (only those given: the module fills in
        its defaults, as under Ansible) and the connection options."""
        self.settle()
        args = os.path.join(self.workdir, '%s-args.json' % name)
        with open(args, 'w', encoding='utf-8') as handle:
            json.dump(dict(ANSIBLE_MODULE_ARGS=dict(self.connection, **options)), handle)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, '-c', CHILD, name, args], env=self.module_env, stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = dict(failed=True, msg=proc.stdout.decode('utf-8', 'replace'))
        if proc.returncode != 0 or result.get('failed'):
            raise SystemExit('%s failed (exit %s): %s %s' % (name, proc.returncode, result.get('msg'), proc.stderr.decode('utf-8', 'replace')))
        return elapsed, result

    def bare_dump(self):
        """(a): seconds of ``pg_dump -Fd -j N`` into a new directory; returns ``(seconds, {'directory': path})``."""
        target = os.path.join(self.new_directory('bare'), 'dump')
        cmd = [self.programs['pg_dump'], '--format=directory', '--jobs=%d' % self.jobs, '--file=%s' % target, DATABASE]
        return self.bare(cmd, 'pg_dump'), dict(directory=target)

    def bundle_dump(self, dump_files, plain_sql=True):
        """(b): seconds and result of ``pg_dump_bundle`` into a new directory; the bundle must hold a member for every
        file of the bare dump (``dump_files``) and the extra files."""
        directory = self.new_directory('bundle' if plain_sql else 'bundle-no-plain')
        options = dict(database=DATABASE, directory=directory, jobs=self.jobs)
        if not plain_sql:
            options['plain_sql'] = False
        elapsed, result = self.module('pg_dump_bundle', **options)
        expected = dump_files + EXTRA_MEMBERS + (1 if plain_sql else 0)
        if result.get('members') != expected or not os.path.isfile(result['bundle']['url']):
            raise SystemExit('pg_dump_bundle wrote %s members to %s, expected %d' % (result.get('members'), result['bundle']['url'], expected))
        return elapsed, result

    def bare_restore(self, dump, expected):
        """(c): ``(seconds, {})`` of ``pg_restore -j N`` of ``dump`` into a freshly created database, checked, then dropped."""
        self.drop(BARE_TARGET)
        self.sql('postgres', 'CREATE DATABASE %s' % BARE_TARGET)
        cmd = [self.programs['pg_restore'], '--jobs=%d' % self.jobs, '--dbname=%s' % BARE_TARGET, dump]
        elapsed = self.bare(cmd, 'pg_restore')
        self.check(BARE_TARGET, expected, 'pg_restore')
        self.drop(BARE_TARGET)
        return elapsed, {}

    def bundle_restore(self, directory, expected):
        """(d): seconds and result of ``pg_dump_restore`` of the newest bundle in ``directory`` into a database that
        does not exist yet, checked (the module's own counts and ours), then dropped."""
        self.drop(MODULE_TARGET)
        elapsed, result = self.module('pg_dump_restore', database=MODULE_TARGET, directory=directory, jobs=self.jobs)
        reported = dict((key.split('.', 1)[1], rows) for key, rows in result.get('tables', {}).items())
        if reported != expected or result.get('source') != 'directory' or not result.get('created_database'):
            raise SystemExit('pg_dump_restore reports %s (source %s), expected %s' % (reported, result.get('source'), expected))
        self.check(MODULE_TARGET, expected, 'pg_dump_restore')
        self.drop(MODULE_TARGET)
        return elapsed, result


def overhead(module_seconds, bare_seconds):
    """``+X %``: how much longer the module took than the bare program."""
    return '%+.1f %%' % ((module_seconds / bare_seconds - 1.0) * 100.0)


def verdict(module_seconds, bare_seconds):
    """Whether the module stays within the overhead target."""
    return 'met' if module_seconds / bare_seconds - 1.0 < TARGET_OVERHEAD else 'NOT met'


def phases(elapsed, result):
    """The module's own ``seconds`` per phase, plus what the rest of its wall time went to."""
    seconds = result.get('seconds') or {}
    parts = ['%s %.2f' % (name, value) for name, value in seconds.items()]
    parts.append('other %.2f' % (elapsed - sum(seconds.values())))
    return ', '.join(parts) + ' (s)'


def mb(value):
    """``value`` bytes in MB (MiB)."""
    return '%.1f MB' % (value / 1048576.0)


def run_rounds(bench, repeat, expected):
    """Every measurement ``repeat`` times.

    :returns: tuple ``(runs, dump_bytes, dump_files)``: ``runs`` maps a, b, b_plainless, c and d to a list of
        ``(seconds, result)``; the bare dump directory's size and number of files.
    """
    runs = dict((key, []) for key in ('a', 'b', 'b_plainless', 'c', 'd'))
    # A dump that is not timed first, so that the first timed run does not pay for reading the new tables from disk.
    dump = bench.bare_dump()[1]['directory']
    dump_bytes, dump_files = directory_bytes(dump)
    for index in range(repeat):
        # Only the newest dump and bundle are restored; the older ones would just fill the disk.
        shutil.rmtree(os.path.dirname(dump))
        done = in_turn(index, [('a', bench.bare_dump), ('b', functools.partial(bench.bundle_dump, dump_files)),
                               ('b_plainless', functools.partial(bench.bundle_dump, dump_files, plain_sql=False))])
        dump = done['a'][1]['directory']
        if directory_bytes(dump)[1] != dump_files:
            raise SystemExit('pg_dump wrote %d files into %s, the first dump %d' % (directory_bytes(dump)[1], dump, dump_files))
        bundle_dir = os.path.dirname(done['b'][1]['bundle']['url'])
        shutil.rmtree(os.path.dirname(done['b_plainless'][1]['bundle']['url']))
        done.update(in_turn(index, [('c', functools.partial(bench.bare_restore, dump, expected)),
                                    ('d', functools.partial(bench.bundle_restore, bundle_dir, expected))]))
        shutil.rmtree(bundle_dir)
        for key, run in done.items():
            runs[key].append(run)
        print('run %d: (a) pg_dump %.2f s   (b) pg_dump_bundle %.2f s (plain_sql false %.2f s)   (c) pg_restore %.2f s   '
              '(d) pg_dump_restore %.2f s' % tuple([index + 1] + [done[key][0] for key in ('a', 'b', 'b_plainless', 'c', 'd')]),
              flush=True)
    return runs, dump_bytes, dump_files


def in_turn(index, measurements):
    """Run ``measurements`` (``(key, function)``, the bare program first) in order in even rounds and in reverse order in
    odd ones, so that a busy moment of the machine, or a cache warmed by the one before, favours neither side.

    :returns: dict key -> what the function returned.
    """
    order = measurements if index % 2 == 0 else measurements[::-1]
    return dict((key, work()) for key, work in order)


def report(runs, expected, jobs, dump_bytes, dump_files):
    """The lines to print: ``(label, value)``."""
    a, b, b_plainless, c, d = (statistics.median(run[0] for run in runs[key]) for key in ('a', 'b', 'b_plainless', 'c', 'd'))
    dump_median, restore_median = median_run(runs['b']), median_run(runs['d'])
    warnings = sorted(set(w for key in ('b', 'b_plainless', 'd') for run in runs[key] for w in run[1].get('warnings', [])))
    table_total = sum(rows for name, rows in expected.items() if name != 'account_totals')
    return [
        ('rows (tables + materialized view)', '%s + %s' % (format(table_total, ','), format(expected['account_totals'], ','))),
        ('bare dump directory (pg_dump -Fd)', '%s in %d files' % (mb(dump_bytes), dump_files)),
        ('bundle, plain_sql true / false', '%s / %s' % (mb(runs['b'][-1][1]['bundle']['bytes']), mb(runs['b_plainless'][-1][1]['bundle']['bytes']))),
        ('(a) pg_dump -Fd -j %d, median' % jobs, '%.2f s' % a),
        ('(b) pg_dump_bundle jobs %d (plain_sql true), median' % jobs, '%.2f s' % b),
        ('dump overhead (b)/(a) [target under +10 %]', '%s, %s' % (overhead(b, a), verdict(b, a))),
        ('diagnostic: (b) with plain_sql false, median', '%.2f s, overhead %s' % (b_plainless, overhead(b_plainless, a))),
        ('pg_dump_bundle phases, median run (%.2f s)' % dump_median[0], phases(*dump_median)),
        ('(c) pg_restore -j %d into a fresh database, median' % jobs, '%.2f s' % c),
        ('(d) pg_dump_restore jobs %d into a new database, median' % jobs, '%.2f s' % d),
        ('restore overhead (d)/(c) [target under +10 %]', '%s, %s' % (overhead(d, c), verdict(d, c))),
        ('pg_dump_restore phases, median run (%.2f s)' % restore_median[0], phases(*restore_median)),
        ('warnings of the modules', '; '.join(warnings) or 'none'),
    ]


def main(argv=None):
    """Run the benchmark and print the measurements and overheads."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--rows', type=int, default=2000000, help='rows over the four tables (default 2,000,000)')
    parser.add_argument('--repeat', type=int, default=3, help='runs per measurement; the median is reported')
    parser.add_argument('--jobs', type=int, default=2, help='pg_dump / pg_restore -j and the modules\' jobs (default 2)')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (the servers are stopped all the same)')
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix='pgops-bench-dump-')
    os.chmod(workdir, 0o755)
    sandbox = Sandbox(os.path.join(workdir, 'sandbox'), with_standby=False)
    data = os.path.join(workdir, 'data')
    os.makedirs(data)
    try:
        sandbox.up()
        bench = Bench(sandbox, data, args.jobs)
        started = time.monotonic()
        expected = bench.build(args.rows)
        size = bench.sql(DATABASE, 'SELECT pg_catalog.pg_database_size(current_database())')[0][0]
        built = ', '.join('%s %s' % (k, format(v, ',')) for k, v in sorted(expected.items()))
        print('%s: %s built (%s on disk) in %.1f s' % (DATABASE, built, mb(size), time.monotonic() - started), flush=True)
        runs, dump_bytes, dump_files = run_rounds(bench, args.repeat, expected)
        lines = report(runs, expected, args.jobs, dump_bytes, dump_files)
        print()
        width = max(len(label) for label, value in lines)
        for label, value in lines:
            print('%-*s  %s' % (width, label, value))
    finally:
        sandbox.down()
        if args.keep:
            print('work directory kept: %s' % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
