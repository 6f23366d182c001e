# -*- coding: utf-8 -*-
"""Latency of pg_unlogged_rebuild's check (SQL side) at 10 thousand and at 10 million rows.

The check runs every five minutes, so it must cost the same whatever the size of the tables. This script
starts its own sandbox primary (no standby), loads a source table and a target table of each size, and
times the exact statement the module runs (``module_utils._unlogged.rebuild.emptiness``) for:
- a filled target (the steady state), and
- an empty target with filled sources (right after a failover).
The SQL-side latency is the server's own planning + execution time of the statement, from
``EXPLAIN (ANALYZE, FORMAT JSON)``; the client round trip is printed beside it. It prints the median
latencies and their ratio large/small, which must stay near 1. As a baseline in the same run it also
times ``count(*)`` on the same tables, the naive check, whose ratio grows with the rows.

    PYTHONPATH=sandbox .venv/bin/python benchmarks/unlogged_check.py [--large-rows 10000000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')]

# pylint: disable=wrong-import-position
from pgops_sandbox import Sandbox  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import resolve_table
from psycopg2 import sql  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged.rebuild import emptiness_query


def server_ms(cursor, query):
    """Planning + execution time (ms) of ``query`` as the server measures it."""
    cursor.execute(sql.SQL('EXPLAIN (ANALYZE, FORMAT JSON) ') + query)
    plan = cursor.fetchone()[0][0]
    return plan['Planning Time'] + plan['Execution Time']


def round_trip_ms(cursor, query):
    """Wall time (ms) of running ``query`` from this client."""
    started = time.perf_counter()
    cursor.execute(query)
    cursor.fetchall()
    return (time.perf_counter() - started) * 1000.0


def load(node, dbname, rows):
    """Create ``entities`` (logged) and UNLOGGED ``cache`` with ``rows`` rows each."""
    node.execute('CREATE DATABASE %s' % dbname)
    node.execute("""
        SET synchronous_commit = off;
        CREATE TABLE entities (id bigint PRIMARY KEY, updated_at timestamptz NOT NULL DEFAULT now());
        CREATE UNLOGGED TABLE cache (k text PRIMARY KEY, v bigint);
        CREATE TABLE entities_empty (LIKE entities);
        INSERT INTO entities (id) SELECT generate_series(1, %(rows)s);
        INSERT INTO cache SELECT 'k' || g, g FROM generate_series(1, %(rows)s) AS g;
        CREATE UNLOGGED TABLE cache_empty (LIKE cache);""" % {'rows': int(rows)}, dbname=dbname)
    node.execute('VACUUM ANALYZE', dbname=dbname)


def checks(conn):
    """The statements to time on one database: the module's check on a filled and on an empty target,
    and the naive ``count(*)`` check."""
    with conn.cursor() as cursor:
        source = resolve_table(cursor, 'entities')
        target = resolve_table(cursor, 'cache')
        empty_target = resolve_table(cursor, 'cache_empty')
    naive = sql.SQL('SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})').format(target.ident, source.ident)
    return dict(filled=emptiness_query(target, [source]), after_failover=emptiness_query(empty_target, [source]), count=naive)


def measure(conns, iterations, warmups=20):
    """Median latency (ms) of each statement on each database.

    The databases take turns statement by statement, so a warm cache or a busy moment favours neither.

    :param conns: dict ``{label: connection}``.
    :returns: dict ``{label: {statement: milliseconds}}``.
    """
    queries = dict((label, checks(conn)) for label, conn in conns.items())
    timings = dict((label, {}) for label in conns)
    for name in ('filled', 'after_failover', 'count'):
        rounds = iterations if name != 'count' else max(3, iterations // 20)
        for how, timer in (('server', server_ms), ('round trip', round_trip_ms)):
            for index in range(rounds + warmups):
                for label, conn in conns.items():
                    with conn.cursor() as cursor:
                        elapsed = timer(cursor, queries[label][name])
                    if index >= warmups:
                        timings[label].setdefault((name, how), []).append(elapsed)
    return dict((label, dict((key, statistics.median(values)) for key, values in per.items())) for label, per in timings.items())


def main(argv=None):
    """Run the benchmark; print one line per measurement and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--small-rows', type=int, default=10000)
    parser.add_argument('--large-rows', type=int, default=10000000)
    parser.add_argument('--iterations', type=int, default=200)
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix='pgops-bench-')
    os.chmod(workdir, 0o755)
    sandbox = Sandbox(workdir, with_standby=False)
    try:
        sandbox.up()
        conns = {}
        for label, rows in (('small', args.small_rows), ('large', args.large_rows)):
            started = time.monotonic()
            load(sandbox.primary, 'bench_%s' % label, rows)
            print('loaded %s rows into each table in %.1f s' % (format(rows, ','), time.monotonic() - started), flush=True)
            conns[label] = sandbox.primary.connect(dbname='bench_%s' % label)
        results = measure(conns, args.iterations)
        for conn in conns.values():
            conn.close()
        small, large = results['small'], results['large']
        print('%-52s %12s %12s %8s' % ('median latency (ms)', format(args.small_rows, ','), format(args.large_rows, ','), 'ratio'))
        for name, title in (('filled', 'check, target filled (EXISTS)'), ('after_failover', 'check, target empty (EXISTS)'),
                            ('count', 'baseline: count(*) of both tables')):
            for how in ('server', 'round trip'):
                key = (name, how)
                print('%-52s %12.3f %12.3f %8.2f' % ('%s, %s' % (title, how), small[key], large[key], large[key] / small[key]))
    finally:
        sandbox.down()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
