# -*- coding: utf-8 -*-
"""Speed and memory of barman_catalog_info on a catalog of 100,000 WAL objects, and of the retention plan of
barman_retention against barman's own ``barman-cloud-backup-delete --dry-run`` on the same catalog.

The script starts its own S3 endpoint (moto's server, as the sandbox does) in a temporary directory and writes a
synthetic barman-cloud catalog into it with a thread pool of ``put_object`` calls (not timed):

- server ``bench`` under ``s3://<bucket>/barman``: ``--wals`` WAL objects (default 100,000; small bodies) named as
  barman-cloud-wal-archive names them (``wals/<TTTTTTTTLLLLLLLL>/<segment>.gz``) over several hundred log ids and two
  timelines, with the ``00000002.history`` file and one ``.backup`` label per backup; four base backups (three on
  timeline 1, one on timeline 2, one day apart), each a ``backup.info`` written by barman's own ``BackupInfo.save``
  and a ``data.tar.gz``;
- server ``old-bench`` beside it: 1,000 WAL objects and one backup (an orphan candidate for the storage report).

Then each measurement ``--repeat`` times (median reported):

(a) baseline: one paginated ``ListObjectsV2`` of everything under ``barman/`` with boto3, in this process: the
    listing any reader of the catalog has to do;
(b) ``barman_catalog_info`` as Ansible runs it: the module file in a fresh Python process with its arguments in a
    JSON file; wall time from process start to exit, and its peak RSS (VmHWM of /proc/self/status at exit);
(c) ``barman-cloud-backup-delete --dry-run --retention-policy 'REDUNDANCY 1'``: barman's own program in a fresh
    process (wall time and peak RSS, the same way);
(d) the retention plan, ``barman_retention.plan(catalog, 'REDUNDANCY 1', minimum_redundancy=1)``, in a fresh process
    (imports, client, plan; wall time and peak RSS) and the time of the ``plan()`` call alone.

It prints the table of times, peak memory and the ratios (b)/(a), (b)/(c) and (d)/(c) (below 1.0: faster than
barman). Not part of ``make test``.

    PYTHONPATH=sandbox:.build/collections .venv/bin/python benchmarks/barman_catalog.py [--wals 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import gzip
import io
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
import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port  # noqa: E402
from pgops_sandbox.s3 import ACCESS_KEY, REGION, SECRET_KEY, start_moto, stop_moto  # noqa: E402

BUCKET = 'pgops-bench'
PREFIX = 'barman'
SERVER = 'bench'
OLD_SERVER = 'old-bench'
SEGMENT_SIZE = 16 * 1024 * 1024
PER_LOG = 0x100000000 // SEGMENT_SIZE
POLICY = 'REDUNDANCY 1'

# A fresh interpreter that reports, on exit, its peak RSS (VmHWM: the high-water mark of its own memory since exec)
# and its CPU time (user + system seconds: the client's own work, apart from waiting for the S3 server).
PEAK = r'''
import atexit, resource, sys
def peak_rss():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    sys.stderr.write('CPU_SECONDS %f\n' % (usage.ru_utime + usage.ru_stime))
    try:
        with open('/proc/self/status') as status:
            sys.stderr.write('PEAK_RSS %d\n' % [int(line.split()[1]) * 1024 for line in status if line.startswith('VmHWM:')][0])
    except (OSError, IndexError, ValueError):
        pass
atexit.register(peak_rss)
'''
MODULE_CHILD = PEAK + r'''
import runpy
sys.argv = ['barman_catalog_info', sys.argv[1]]
runpy.run_module('ansible_collections.pgops.resilience.plugins.modules.barman_catalog_info', run_name='__main__')
'''
BARMAN_CHILD = PEAK + r'''
from barman.clients.cloud_backup_delete import main
sys.argv = ['barman-cloud-backup-delete'] + sys.argv[1:]
main()
'''
PLAN_CHILD = PEAK + r'''
import json, time
from ansible_collections.pgops.resilience.plugins.module_utils._barman import (
    catalog as barman_catalog, retention as barman_retention)
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import s3_client
settings = json.loads(sys.argv[1])
client = s3_client(settings['endpoint_url'], settings['region'], settings['access_key'], settings['secret_key'])
catalog = barman_catalog.BarmanCatalog(client, settings['destination_path'], settings['server_name'], settings['endpoint_url'])
started = time.perf_counter()
result = barman_retention.plan(catalog, settings['policy'], 1)
sys.stderr.write('PLAN_SECONDS %f\n' % (time.perf_counter() - started))
json.dump(dict(delete_backups=result['delete_backups'], objects=result['objects'], bytes_freed=result['bytes_freed'],
               keys=result['backup_objects'] + result['wal_objects']), sys.stdout)
'''


def seg_name(timeline, position):
    return '%08X%08X%08X' % (timeline, position // PER_LOG, position % PER_LOG)


def backup_info_text(backup_id, timeline, begin, end, begin_time, end_time):
    """A backup.info as barman writes it (barman's own BackupInfo.save)."""
    # barman.output first: barman.infofile and barman.output import each other.
    import barman.output  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
    from barman.infofile import BackupInfo  # pylint: disable=import-outside-toplevel
    info = BackupInfo(backup_id=backup_id, status='DONE', timeline=timeline, begin_wal=seg_name(timeline, begin),
                      end_wal=seg_name(timeline, end), begin_xlog='%X/%X' % (begin // PER_LOG, (begin % PER_LOG) * SEGMENT_SIZE + 40),
                      end_xlog='%X/%X' % (end // PER_LOG, (end % PER_LOG) * SEGMENT_SIZE + 256), begin_offset=40,
                      end_offset=256, begin_time=begin_time, end_time=end_time, version=170002,
                      xlog_segment_size=SEGMENT_SIZE, systemid='7439284711232452633', server_name='cloud',
                      cluster_size=52428800, backup_label="'START WAL LOCATION: ...'")
    stream = io.BytesIO()
    info.save(file_object=stream)
    return stream.getvalue()


def catalog_objects(server, wals, backups_count, now):
    """(key, body) of a synthetic catalog of ``wals`` WAL objects and ``backups_count`` backups (generator)."""
    base = '%s/%s/' % (PREFIX, server)
    first = 0x10 * PER_LOG + 0x20  # segment 000000010000001000000020
    backups = []  # (timeline, begin position)
    labels = backups_count
    segments = wals - labels - 1  # one history file
    switch = first + int(segments * 0.6)  # timeline 2 begins here
    per_backup = max(1, (switch - first) // max(1, backups_count))
    for index in range(backups_count):
        if index < backups_count - 1:
            backups.append((1, first + per_backup * index + 5))
        else:
            backups.append((2, switch + (segments - (switch - first)) // 2))
    body = b'\x1f\x8b' + b'w' * 62
    for position in range(first, first + segments):
        timeline = 1 if position < switch else 2
        name = seg_name(timeline, position)
        yield base + 'wals/%s/%s.gz' % (name[:16], name), body
    yield base + 'wals/00000002.history.gz', gzip.compress(b'1\t%X/%X\tno recovery target specified\n' % (switch // PER_LOG, 0))
    for index, (timeline, begin) in enumerate(backups):
        end = begin + 1
        end_time = now - datetime.timedelta(days=backups_count - index)
        begin_time = end_time - datetime.timedelta(minutes=3)
        backup_id = begin_time.strftime('%Y%m%dT%H%M%S')
        name = seg_name(timeline, begin)
        yield base + 'wals/%s/%s.00000028.backup.gz' % (name[:16], name), gzip.compress(b'START WAL LOCATION: ...\n')
        yield base + 'base/%s/backup.info' % backup_id, backup_info_text(backup_id, timeline, begin, end, begin_time, end_time)
        yield base + 'base/%s/data.tar.gz' % backup_id, b'\x1f\x8b' + b'd' * 4094


def write_catalog(client, objects, workers):
    """put_object every (key, body) with a thread pool; returns the count."""
    count = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = set()
        for key, body in objects:
            pending.add(pool.submit(client.put_object, Bucket=BUCKET, Key=key, Body=body))
            count += 1
            if len(pending) >= workers * 8:
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    future.result()
        for future in concurrent.futures.as_completed(pending):
            future.result()
    return count


def run_child(code, argv, env):
    """Run ``code`` in a fresh interpreter; returns (wall seconds, CPU seconds, peak RSS bytes, stdout, stderr)."""
    started = time.perf_counter()
    child = subprocess.run([sys.executable, '-c', code] + argv, env=env, capture_output=True, check=False, timeout=3600)
    elapsed = time.perf_counter() - started
    out, err = child.stdout.decode('utf-8', 'replace'), child.stderr.decode('utf-8', 'replace')
    if child.returncode != 0:
        raise SystemExit('child failed (exit %d): %s\n%s' % (child.returncode, out[-2000:], err[-4000:]))
    return elapsed, reported(err, 'CPU_SECONDS'), reported(err, 'PEAK_RSS'), out, err


def reported(err, name):
    """The number a child wrote to stderr as ``NAME value`` (0 when it did not)."""
    values = [float(line.split()[1]) for line in err.splitlines() if line.startswith(name + ' ')]
    return values[0] if values else 0


class Measurements:
    """Wall seconds, CPU seconds and peak RSS bytes per measurement label, one entry per run."""

    def __init__(self):
        self.runs = {}

    def add(self, label, wall, cpu, rss=0):
        self.runs.setdefault(label, []).append((wall, cpu, rss))

    def median(self, label, index=0):
        return statistics.median(run[index] for run in self.runs[label])

    def peak(self, label):
        return max(run[2] for run in self.runs[label])

    def text(self, label):
        text = '%.2f s wall, %.2f s CPU' % (self.median(label), self.median(label, 1))
        return text + (', peak RSS %s' % mb(self.peak(label)) if self.peak(label) else '')


def plan_agrees(plan_keys, barman_output):
    """Compare the plan's keys with what barman's dry run says it would delete (barman_retention.parse_dry_run)."""
    from ansible_collections.pgops.resilience.plugins.module_utils._barman import retention as barman_retention
    parse = getattr(barman_retention, 'parse_dry_run', None)
    if parse is None:
        return 'not compared (no barman_retention.parse_dry_run)'
    keys, prefixes = parse(barman_output, BUCKET)
    theirs = set(keys)
    ours = set(plan_keys)
    only_plan = sorted(k for k in ours if k not in theirs and not any(k.startswith(p.rstrip('/') + '/') for p in prefixes))
    only_barman = sorted(theirs - ours)
    if not only_plan and not only_barman:
        return 'yes: the same %s objects (%d listed keys, %d whole prefixes)' % (format(len(ours), ','), len(theirs), len(prefixes))
    return 'NO: %d object(s) only in the plan (%s .. %s), %d only in the dry run%s' % (
        len(only_plan), only_plan[0] if only_plan else '-', only_plan[-1] if only_plan else '-', len(only_barman),
        ' (%s ..)' % only_barman[0] if only_barman else '')


def mb(value):
    return '%.0f MB' % (value / 1048576.0)


def retention_plan_available():
    """Whether barman_retention.plan exists yet (it is written beside this benchmark)."""
    try:
        from ansible_collections.pgops.resilience.plugins.module_utils._barman import retention as barman_retention
    except ImportError:
        return False
    return callable(getattr(barman_retention, 'plan', None))


def main(argv=None):
    """Build the catalog, run the measurements, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--wals', type=int, default=100000, help='WAL objects of the catalog (default 100,000)')
    parser.add_argument('--backups', type=int, default=4, help='base backups (default 4)')
    parser.add_argument('--repeat', type=int, default=3, help='runs per measurement; the median is reported')
    parser.add_argument('--workers', type=int, default=32, help='threads writing the catalog (default 32)')
    args = parser.parse_args(argv)

    workdir = tempfile.mkdtemp(prefix='pgops-bench-barman-')
    port = free_port()
    pid = start_moto(port, os.path.join(workdir, 'moto.log'), workdir, 60)
    endpoint = 'http://127.0.0.1:%d' % port
    try:
        client = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION).client(
            's3', endpoint_url=endpoint, config=Config(s3={'addressing_style': 'path'}, max_pool_connections=args.workers,
                                                       retries={'max_attempts': 5, 'mode': 'adaptive'}))
        client.create_bucket(Bucket=BUCKET)
        now = datetime.datetime.now(datetime.timezone.utc)
        started = time.monotonic()
        written = write_catalog(client, catalog_objects(SERVER, args.wals, args.backups, now), args.workers)
        written += write_catalog(client, catalog_objects(OLD_SERVER, 1000, 1, now - datetime.timedelta(days=200)), args.workers)
        text = 'catalog: %s objects written in %.1f s (%s WAL objects, %d backups in s3://%s/%s/%s; 1,000 WAL objects and one backup in %s)'
        print(text % (format(written, ','), time.monotonic() - started, format(args.wals, ','), args.backups, BUCKET, PREFIX, SERVER,
                      OLD_SERVER), flush=True)

        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
        env['PYTHONPATH'] = os.pathsep.join([os.path.join(ROOT, 'sandbox'), os.path.join(ROOT, '.build', 'collections')])
        destination = 's3://%s/%s' % (BUCKET, PREFIX)
        settings = dict(destination_path=destination, server_name=SERVER, endpoint_url=endpoint, region=REGION,
                        access_key=ACCESS_KEY, secret_key=SECRET_KEY)
        args_file = os.path.join(workdir, 'args.json')
        with open(args_file, 'w', encoding='utf-8') as handle:
            json.dump(dict(ANSIBLE_MODULE_ARGS=settings), handle)
        measured = Measurements()
        plan_ok = retention_plan_available()
        summary = barman_output = plan_out = None
        for index in range(args.repeat):
            started, cpu = time.perf_counter(), time.process_time()
            listed = 0
            for page in client.get_paginator('list_objects_v2').paginate(Bucket=BUCKET, Prefix=PREFIX + '/'):
                listed += len(page.get('Contents', ()))
            measured.add('listing', time.perf_counter() - started, time.process_time() - cpu)

            wall, cpu, rss, out, err = run_child(MODULE_CHILD, [args_file], env)
            summary = json.loads(out)
            measured.add('module', wall, cpu, rss)

            wall, cpu, rss, out, err = run_child(BARMAN_CHILD, ['--endpoint-url', endpoint, '--dry-run', '--retention-policy', POLICY,
                                                                destination, SERVER], env)
            barman_output = out + err
            measured.add('barman', wall, cpu, rss)
            line = 'run %d: (a) listing of %s objects %.2f s   (b) barman_catalog_info %.2f s   (c) barman dry run %.2f s' % (
                index + 1, format(listed, ','), measured.runs['listing'][-1][0], measured.runs['module'][-1][0],
                measured.runs['barman'][-1][0])
            if plan_ok:
                wall, cpu, rss, out, err = run_child(PLAN_CHILD, [json.dumps(dict(settings, policy=POLICY))], env)
                plan_out = json.loads(out)
                measured.add('plan', wall, cpu, rss)
                measured.add('plan call', reported(err, 'PLAN_SECONDS'), 0)
                line += '   (d) retention plan %.2f s' % wall
            print(line, flush=True)

        wal = summary['wal']
        if wal['count'] != args.wals or summary['backup_count'] != args.backups or wal['gap_count'] != 0:
            raise SystemExit('barman_catalog_info read %d WAL objects, %d backups, %d gaps; expected %d, %d, 0'
                             % (wal['count'], summary['backup_count'], wal['gap_count'], args.wals, args.backups))
        report = [
            ('catalog', '%s WAL objects (%s..%s, timelines %s), %d backups; %s objects under %s/'
             % (format(wal['count'], ','), wal['first_segment'], wal['last_segment'], wal['timelines'], summary['backup_count'],
                format(summary['storage']['total_objects'], ','), destination)),
            ('module result', 'verdict %s, %d gaps, %d storage directories, other servers %s'
             % (summary['verdict'], wal['gap_count'], len(summary['storage']['directories']),
                [o['name'] for o in summary['other_servers']])),
            ('(a) boto3 ListObjectsV2 of everything under the destination, in process, median', measured.text('listing')),
            ('(b) barman_catalog_info module process, median', measured.text('module')),
            ("(c) barman-cloud-backup-delete --dry-run --retention-policy '%s', median" % POLICY, measured.text('barman')),
        ]
        if plan_ok:
            report.append(('(d) barman_retention.plan() process, median', measured.text('plan')))
            report.append(('    the plan() call alone, median', '%.2f s' % measured.median('plan call')))
            report.append(('    plan: backups to delete, objects', '%s, %s objects'
                           % (', '.join(plan_out['delete_backups']), format(plan_out['objects'], ','))))
            report.append(("    plan agrees with barman's dry run", plan_agrees(plan_out['keys'], barman_output)))
        else:
            report.append(('(d) retention plan', 'NOT MEASURED: plugins/module_utils/_barman/retention.py has no plan() yet'))
        for label, (x, y) in (('(b)/(a): the module against the bare listing', ('module', 'listing')),
                              ("(b)/(c): the module against barman's dry run", ('module', 'barman')),
                              ("(d)/(c): the retention plan against barman's dry run [below 1.0: faster]", ('plan', 'barman'))):
            if x in measured.runs:
                report.append(('ratio ' + label, 'wall %.2f, CPU %.2f' % (measured.median(x) / measured.median(y),
                                                                          measured.median(x, 1) / measured.median(y, 1))))
        print()
        width = max(len(label) for label, value in report)
        for label, value in report:
            print('%-*s  %s' % (width, label, value))
    finally:
        stop_moto(pid, port)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
