# -*- coding: utf-8 -*-
"""Time of walg_backup against bare ``wal-g backup-push`` of the same database, and the phase times of a
walg_restore_drill of it.

The module wraps wal-g: it must cost at most 5 % more than the bare program (target: ratio (b)/(a) <= 1.05), end to
end: process start, imports, the options turned into wal-g's environment, the push, and reading back the backup it
made (``backup-list --detail --json`` and its stop sentinel, ``st cat``), which bare wal-g does not do.

This script starts its own sandbox primary (no standby) in a temporary directory and fills a database ``bench`` with
``pgbench -i -s <scale> -I dtGvp`` (default scale 70: 7,000,000 rows in pgbench_accounts, about 1 GB on disk;
server-side generation, then VACUUM and the primary keys; not timed). Then, for each storage kind (a prefix on the
sandbox's S3 server, moto on 127.0.0.1, and a directory), each measurement ``--repeat`` times (median reported):

(a) ``wal-g backup-push <data directory>`` into a new, empty prefix, with the environment the module gives wal-g
    (computed beforehand by the collection's own code: storage, endpoint, credentials, libpq's variables,
    ``WALG_DELTA_MAX_STEPS=0``), so both sides run wal-g with the same settings;
(b) ``walg_backup`` into a new, empty prefix, as Ansible runs it: a fresh Python process running the module file
    with its arguments in a JSON file, from its imports to its exit.

An untimed push of each kind comes first. Bare first in odd rounds, the module first in even ones, so that a busy
moment of the machine favours neither side. Before every timed run a CHECKPOINT is taken and the WAL archiver must have caught up. Each prefix is removed after
its run, except the module's last one of each kind: its WAL is then shipped into it (``wal-g wal-push`` of the
archived segments from the backup's start on, as an archive_command running wal-g would have), and (c)
``walg_restore_drill`` restores it as Ansible runs it, with a row count check of pgbench_accounts and ``amcheck``
(pg_amcheck, heap and B-tree) when the module has that option. Every backup is checked: bare wal-g must name the
backup it wrote and both sides' backups must hold the same number of bytes within 5 %, so a broken run cannot print
good numbers.

It prints the database, the median times, the ratios, the module's own ``seconds`` per phase for its median run (the
rest of its wall time is "other": process start, imports, the options), and the drill's ``seconds`` per phase
(fetch, start to consistent, recovery, checks, amcheck, stop, total) and its RTO. Not part of ``make test``.

    PYTHONPATH=sandbox:.build/collections .venv/bin/python benchmarks/walg.py [--scale 70] [--repeat 5]
        [--kinds s3,directory] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')]

# pylint: disable=wrong-import-position
from pgops_sandbox import Sandbox  # noqa: E402
from pgops_sandbox.pgbin import find_bindir  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import libpq_environment  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import server_environment  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill, push  # noqa: E402
from ansible_collections.pgops.resilience.plugins.module_utils._walg.cli import WalgCli  # noqa: E402

DATABASE = 'bench'
TARGET_RATIO = 1.05
SIZE_TOLERANCE = 0.05  # the two sides' backups of the same data directory: uncompressed bytes within 5 %
SETTLE_TIMEOUT = 300  # seconds the WAL archiver may take to catch up between runs
PUSH_TIMEOUT = 3600  # seconds one push may take (the module's timeout option, and the bare run's bound)
WAL_NAME_LENGTH = 24

# A module as Ansible runs it: a fresh interpreter running the module file itself (AnsibleModule reads its arguments
# from the JSON file named on the command line, as when a module is run by hand), from its imports to its exit.
CHILD = r'''
import runpy, sys
sys.argv = [sys.argv[1], sys.argv[2]]
runpy.run_module('ansible_collections.pgops.resilience.plugins.modules.' + sys.argv[0], run_name='__main__')
'''


def defaults(spec):
    """The values ``AnsibleModule`` gives the options of ``spec`` that are not set."""
    return dict((name, option.get('default')) for name, option in spec.items())


def median_run(runs):
    """The run (``(seconds, result)``) whose time is the median (the upper one of the middle two for an even count)."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def gb(value):
    """``value`` bytes in GB (GiB), or MB below 1 GiB."""
    if value >= 1 << 30:
        return '%.2f GB' % (value / float(1 << 30))
    return '%.0f MB' % (value / float(1 << 20))


def directory_bytes(path):
    """Total size of the files under ``path``."""
    return sum(os.path.getsize(os.path.join(top, name)) for top, dummy, files in os.walk(path) for name in files)


class Bench:
    """The sandbox, the options of both sides and the measurements of one run of this script."""

    def __init__(self, sandbox, workdir, walg_bin):
        self.sandbox = sandbox
        self.workdir = workdir
        self.walg_bin = walg_bin
        self.node = sandbox.primary
        self.serial = 0
        # No PG*, WALG_* or AWS_* variable of the caller reaches either side: the module gets everything from its
        # options, and bare wal-g from the environment the module would make of the same options.
        self.module_env = server_environment(dict(PYTHONPATH=os.pathsep.join(
            [os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')])))
        self.connection = dict(login_host=self.node.host, login_port=self.node.port, login_user='postgres',
                               login_password=sandbox.password, login_db='postgres')
        s3 = sandbox.s3
        self.s3_options = dict(endpoint_url=s3.endpoint_url, region=s3.region, access_key=s3.access_key,
                               secret_key=s3.secret_key)

    def sql(self, statement, dbname='postgres'):
        """Run ``statement`` in autocommit mode on ``dbname``; return its rows."""
        return self.node.execute(statement, dbname=dbname)

    # -- the data -------------------------------------------------------------------------------------------------

    def build(self, scale):
        """Create ``bench`` and fill it with pgbench's tables at ``scale``; return pgbench_accounts' row count."""
        self.sql('CREATE DATABASE %s' % DATABASE)
        env = dict(server_environment(), PGHOST=self.node.host, PGPORT=str(self.node.port), PGUSER='postgres',
                   PGPASSWORD=self.sandbox.password)
        cmd = [os.path.join(find_bindir(), 'pgbench'), '--initialize', '--scale=%d' % scale, '--init-steps=dtGvp', DATABASE]
        done = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if done.returncode != 0:
            raise SystemExit('pgbench -i failed (exit %d): %s' % (done.returncode, done.stderr.decode('utf-8', 'replace')[-2000:]))
        return self.sql('SELECT count(*) FROM pgbench_accounts', DATABASE)[0][0]

    def settle(self):
        """Flush what the previous run left dirty and wait until the archiver has copied every finished WAL segment,
        so that no run pays for another one's writes."""
        self.sql('CHECKPOINT')
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while self.sql("SELECT count(*) FROM pg_catalog.pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")[0][0]:
            if time.monotonic() > deadline:
                raise SystemExit('the WAL archiver is still behind after %d s; see the server log' % SETTLE_TIMEOUT)
            time.sleep(0.1)

    # -- storages -------------------------------------------------------------------------------------------------

    def new_prefix(self, kind, label):
        """A new, empty prefix of ``kind`` (``s3`` or ``directory``)."""
        self.serial += 1
        name = '%s-%d-%s' % (label, self.serial, uuid.uuid4().hex[:6])
        if kind == 's3':
            return 's3://%s/bench-walg/%s' % (self.sandbox.bucket, name)
        path = os.path.join(self.workdir, 'storage', name)
        os.makedirs(path)
        os.chmod(path, 0o755)  # the drill's restore_command (wal-g wal-fetch) runs as the server user
        return path

    def remove(self, prefix):
        """Delete everything under ``prefix``."""
        if prefix.startswith('s3://'):
            key = prefix[len('s3://%s/' % self.sandbox.bucket):]
            self.sandbox.s3.bucket_objects().delete_prefix(key + '/')
        else:
            shutil.rmtree(prefix, ignore_errors=True)

    def options(self, prefix):
        """The wal-g options of both modules for ``prefix`` (S3 options only for an s3:// prefix)."""
        values = dict(prefix=prefix, walg_bin=self.walg_bin, timeout=PUSH_TIMEOUT)
        if prefix.startswith('s3://'):
            values.update(self.s3_options)
        return values

    def walg_env(self, prefix):
        """The environment walg_backup gives wal-g for ``prefix``, made by the collection's own code from the same
        options (as AnsibleModule fills them in) over the environment the module process starts with."""
        params = defaults(push.module_spec()['argument_spec'])
        params.update(self.connection, data_directory=self.node.datadir, **self.options(prefix))
        cli = WalgCli(params, base_env=libpq_environment(params, base=self.module_env))
        cli.env['WALG_DELTA_MAX_STEPS'] = str(params['delta_max_steps'])
        return cli.env

    def walg(self, prefix, *args):
        """Bare wal-g with the module's environment for ``prefix``, not timed; returns its stdout."""
        done = subprocess.run([self.walg_bin] + list(args), env=self.walg_env(prefix), stdin=subprocess.DEVNULL,
                              capture_output=True, check=False, timeout=PUSH_TIMEOUT)
        if done.returncode != 0:
            raise SystemExit('wal-g %s failed (exit %d): %s' % (args[0], done.returncode, done.stderr.decode('utf-8', 'replace')[-2000:]))
        return done.stdout.decode('utf-8', 'replace')

    def listed(self, prefix):
        """``wal-g backup-list --detail --json`` of ``prefix``."""
        return json.loads(self.walg(prefix, 'backup-list', '--detail', '--json') or '[]')

    # -- the runs -------------------------------------------------------------------------------------------------

    def bare_push(self, kind):
        """(a): seconds of ``wal-g backup-push`` into a new prefix; returns ``(seconds, {'prefix', 'name', 'bytes'})``."""
        prefix = self.new_prefix(kind, 'bare')
        env = self.walg_env(prefix)
        self.settle()
        started = time.perf_counter()
        done = subprocess.run([self.walg_bin, 'backup-push', self.node.datadir], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, check=False, timeout=PUSH_TIMEOUT)
        elapsed = time.perf_counter() - started
        log = done.stderr.decode('utf-8', 'replace')
        if done.returncode != 0 or 'Wrote backup with name ' not in log:
            raise SystemExit('wal-g backup-push failed (exit %d): %s' % (done.returncode, log[-2000:]))
        name = log.split('Wrote backup with name ')[-1].split()[0]
        entries = [e for e in self.listed(prefix) if e['backup_name'] == name]
        if not entries:
            raise SystemExit('wal-g backup-push wrote %s, but backup-list in %s does not show it' % (name, prefix))
        return elapsed, dict(prefix=prefix, name=name, bytes=entries[0]['uncompressed_size'],
                             compressed=entries[0]['compressed_size'])

    def run_module(self, name, **options):
        """Wall seconds and result of the module ``name`` run with ``options`` (only those given: the module fills in
        its defaults, as under Ansible), its arguments in a 0600 JSON file."""
        args = os.path.join(self.workdir, '%s-args.json' % name)
        with open(os.open(args, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 'w', encoding='utf-8') as handle:
            json.dump(dict(ANSIBLE_MODULE_ARGS=options), handle)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, '-c', CHILD, name, args], env=self.module_env, stdin=subprocess.DEVNULL,
                              capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            result = dict(failed=True, msg=proc.stdout.decode('utf-8', 'replace'))
        if proc.returncode != 0 or result.get('failed'):
            raise SystemExit('%s failed (exit %s): %s %s' % (name, proc.returncode, result.get('msg'), proc.stderr.decode('utf-8', 'replace')[-2000:]))
        return elapsed, result

    def module_push(self, kind):
        """(b): seconds and result of walg_backup into a new prefix (``prefix`` added to the result)."""
        prefix = self.new_prefix(kind, 'module')
        self.settle()
        elapsed, result = self.run_module('walg_backup', data_directory=self.node.datadir, **dict(self.connection, **self.options(prefix)))
        if not result.get('backup') or result['kind'] != 'full':
            raise SystemExit('walg_backup returned no full backup: %s' % result)
        result.update(prefix=prefix, bytes=result['backup']['uncompressed_size'], compressed=result['backup']['compressed_size'])
        return elapsed, result

    def wait_archived(self):
        """Complete the current WAL segment and wait until the archive directory holds it. (pg_stat_archiver's
        last_archived_wal is no guide here: with no WAL written since the backup ended, pg_switch_wal() switches
        nothing, and the last file archived can be the backup's ``.backup`` file, archived after its segment.)"""
        segment = self.sql('SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())')[0][0]
        path = os.path.join(self.sandbox.archive_dir, segment)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise SystemExit('WAL segment %s was not archived within %d s; see the server log' % (segment, SETTLE_TIMEOUT))
            time.sleep(0.1)

    def ship_wal(self, prefix, backup_name):
        """Complete the current WAL segment, then ``wal-g wal-push`` every archived segment of the backup's timeline
        from its start on into ``prefix``, as an archive_command running wal-g would have."""
        self.wait_archived()
        start = backup_name[len('base_'):len('base_') + WAL_NAME_LENGTH]
        names = sorted(n for n in os.listdir(self.sandbox.archive_dir)
                       if len(n) == WAL_NAME_LENGTH and n[:8] == start[:8] and n >= start)
        for name in names:
            self.walg(prefix, 'wal-push', os.path.join(self.sandbox.archive_dir, name))
        return len(names)

    def restore_drill(self, prefix, accounts):
        """(c): wall seconds and result of walg_restore_drill of LATEST in ``prefix``, with a row count check of
        pgbench_accounts and pg_amcheck when the module has that option."""
        check = dict(name='pgbench_accounts rows', database=DATABASE, query='SELECT count(*) FROM pgbench_accounts',
                     expected=accounts)
        options = dict(self.options(prefix), checks=[check])
        if 'amcheck' in drill.module_spec()['argument_spec']:
            options['amcheck'] = True
        return self.run_module('walg_restore_drill', **options)


def in_turn(index, measurements):
    """Run ``measurements`` (``(key, function)``, the bare program first) in order in even rounds and in reverse order in
    odd ones; returns dict key -> what the function returned."""
    order = measurements if index % 2 == 0 else measurements[::-1]
    return dict((key, work()) for key, work in order)


def run_rounds(bench, kind, repeat):
    """Both measurements of ``kind`` ``repeat`` times; returns ``(runs, kept)``: ``runs`` maps a and b to lists of
    ``(seconds, result)``, ``kept`` is the module's last backup (its result), left in its prefix for the drill."""
    runs = dict(a=[], b=[])
    kept = None
    # A push that is not timed first, so that the first timed run does not pay for a cold cache or a cold S3 server.
    bench.remove(bench.bare_push(kind)[1]['prefix'])
    for index in range(repeat):
        done = in_turn(index, [('a', lambda: bench.bare_push(kind)), ('b', lambda: bench.module_push(kind))])
        bare, module = done['a'][1], done['b'][1]
        if abs(module['bytes'] - bare['bytes']) > SIZE_TOLERANCE * bare['bytes']:
            raise SystemExit('the backups differ: bare wal-g %d bytes, walg_backup %d bytes' % (bare['bytes'], module['bytes']))
        bench.remove(bare['prefix'])
        if kept is not None:
            bench.remove(kept['prefix'])
        kept = module
        for key in ('a', 'b'):
            runs[key].append(done[key])
        print('%s run %d: (a) wal-g backup-push %.2f s   (b) walg_backup %.2f s   ratio %.3f' % (
            kind, index + 1, done['a'][0], done['b'][0], done['b'][0] / done['a'][0]), flush=True)
    return runs, kept


def phases(elapsed, seconds):
    """walg_backup's own ``seconds`` (``push``, ``total``), the rest of its total (reading back the backup it made),
    and what the rest of its wall time went to (process start, imports, the options)."""
    return 'push %.2f, read back %.2f, other %.2f (s)' % (
        seconds['push'], seconds['total'] - seconds['push'], elapsed - seconds['total'])


def push_report(kind, runs):
    """The lines of one storage kind: ``(label, value)``."""
    a = statistics.median(run[0] for run in runs['a'])
    b = statistics.median(run[0] for run in runs['b'])
    ratio = b / a
    pairs = list(zip(runs['a'], runs['b']))
    extra = statistics.median(module[0] - bare[0] for bare, module in pairs)
    paired = statistics.median(module[0] / bare[0] for bare, module in pairs)
    elapsed, result = median_run(runs['b'])
    backup = result['backup']
    where = 'S3 (moto on 127.0.0.1)' if kind == 's3' else 'directory'
    return [
        ('%s: backup, compressed / uncompressed' % where, '%s / %s' % (gb(backup['compressed_size']), gb(backup['uncompressed_size']))),
        ('  (a) wal-g backup-push, median of %d' % len(runs['a']), '%.2f s  (%s)' % (a, ', '.join('%.2f' % r[0] for r in runs['a']))),
        ('  (b) walg_backup module process, median of %d' % len(runs['b']), '%.2f s  (%s)' % (b, ', '.join('%.2f' % r[0] for r in runs['b']))),
        ('  ratio (b)/(a) [target <= %.2f]' % TARGET_RATIO, '%.3f, %s' % (ratio, 'met' if ratio <= TARGET_RATIO else 'NOT met')),
        ('  walg_backup, median run (%.2f s)' % elapsed, phases(elapsed, result['seconds'])),
        ('  per round (same moment): (b)-(a), (b)/(a), medians', '%+.2f s, %.3f: (b)-(a) is within %d %% of a push of %.1f s '
         'or more' % (extra, paired, round((TARGET_RATIO - 1) * 100), max(extra, 0) / (TARGET_RATIO - 1))),
    ]


def drill_report(kind, elapsed, result, shipped):
    """The lines of one drill: ``(label, value)``."""
    seconds = result['seconds']
    amcheck = result.get('amcheck') or {}
    order = ('fetch', 'prepare', 'start_to_consistent', 'recovery', 'checks', 'amcheck', 'stop', 'total')
    parts = ['%s %.2f' % (name, seconds[name]) for name in order if seconds.get(name) is not None]
    where = 'S3' if kind == 's3' else 'directory'
    lines = [
        ('restore drill (walg_restore_drill) from %s' % where, 'verdict %s: %s restored with %d WAL segments, promoted to '
         'timeline %s' % (result['verdict'], result['backup']['name'], shipped, result.get('timeline'))),
        ('  phases (s; total: prepare to stop)', ', '.join(parts)),
        ('  RTO (fetch + recovery + checks)', '%.2f s' % result['rto_seconds']),
        ('  module process wall time', '%.2f s' % elapsed),
    ]
    if amcheck:
        lines.append(('  pg_amcheck', '%s relations, %s pages, %d corruption(s)' % (
            format(amcheck.get('relations_checked', 0), ','), format(amcheck.get('pages_checked', 0), ','),
            amcheck.get('corruption_count', 0))))
    else:
        lines.append(('  pg_amcheck', 'not run (walg_restore_drill has no amcheck option)'))
    return lines


def machine():
    """One line about this machine: cores, CPU model, memory."""
    model = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as cpuinfo:
            model = [line.split(':', 1)[1].strip() for line in cpuinfo if line.startswith('model name')][0]
        with open('/proc/meminfo', encoding='utf-8') as meminfo:
            memory = int([line.split()[1] for line in meminfo if line.startswith('MemTotal:')][0]) * 1024
    except (OSError, IndexError, ValueError):
        memory = 0
    return '%d cores (%s), %s memory' % (os.cpu_count() or 0, model, gb(memory) if memory else 'unknown')


def versions(bench):
    """wal-g's and the server's version."""
    walg_version = subprocess.run([bench.walg_bin, '--version'], capture_output=True, check=False).stdout.decode().split()
    server = bench.sql('SHOW server_version')[0][0]
    return 'wal-g %s, PostgreSQL %s' % (walg_version[2] if len(walg_version) > 2 else '?', server)


def main(argv=None):
    """Run the benchmark and print the measurements and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--scale', type=int, default=70, help='pgbench scale of the database (default 70: about 1 GB)')
    parser.add_argument('--repeat', type=int, default=5, help='runs per measurement; the median is reported')
    parser.add_argument('--kinds', default='s3,directory', help='storage kinds, comma-separated: s3, directory')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (the servers are stopped all the same)')
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
    if not kinds or set(kinds) - {'s3', 'directory'}:
        parser.error('--kinds takes s3 and/or directory')
    walg_bin = os.environ.get('PGOPS_WALG_BIN') or os.path.join(ROOT, '.build', 'walg', 'wal-g')
    if not os.access(walg_bin, os.X_OK):
        raise SystemExit('wal-g not found at %s: run `make walg`' % walg_bin)

    workdir = tempfile.mkdtemp(prefix='pgops-bench-walg-')
    os.chmod(workdir, 0o755)
    sandbox = Sandbox(os.path.join(workdir, 'sandbox'), with_standby=False)
    data = os.path.join(workdir, 'data')
    os.makedirs(os.path.join(data, 'storage'))
    os.chmod(data, 0o755)
    os.chmod(os.path.join(data, 'storage'), 0o755)
    try:
        sandbox.up()
        bench = Bench(sandbox, data, walg_bin)
        started = time.monotonic()
        accounts = bench.build(args.scale)
        size = bench.sql('SELECT pg_catalog.pg_database_size(current_database())', DATABASE)[0][0]
        bench.settle()
        print('%s: pgbench -i -s %d (%s rows in pgbench_accounts), %s on disk, built in %.1f s'
              % (DATABASE, args.scale, format(accounts, ','), gb(size), time.monotonic() - started), flush=True)
        load = os.getloadavg()[0]
        lines = [('machine', machine()), ('programs', versions(bench)),
                 ('database', 'pgbench -i -s %d: %s rows in pgbench_accounts, %s (pg_database_size); data directory %s'
                  % (args.scale, format(accounts, ','), gb(size), gb(directory_bytes(sandbox.primary.datadir))))]
        drills = []
        for kind in kinds:
            runs, kept = run_rounds(bench, kind, args.repeat)
            lines += push_report(kind, runs)
            shipped = bench.ship_wal(kept['prefix'], kept['backup']['name'])
            drills.append((kind, bench.restore_drill(kept['prefix'], accounts), shipped))
            print('%s restore drill: %.2f s' % (kind, drills[-1][1][0]), flush=True)
            bench.remove(kept['prefix'])
        for kind, (elapsed, result), shipped in drills:
            lines += drill_report(kind, elapsed, result, shipped)
        lines.append(('load average (1 min) at the first run, at the end', '%.2f, %.2f (other work on the machine skews the '
                      'times; the alternating order spreads it over both sides)' % (load, os.getloadavg()[0])))
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
