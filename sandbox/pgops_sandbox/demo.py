"""`make demo`: a real failover on the sandbox, repaired by the playbook the CronJob runs.

The steps: an application database shaped like the runbook's (entity tables with 50,000 rows each, an
UNLOGGED ``kv_store`` filled from them), a baseline run on the primary, a run on the standby (skipped),
the primary's loss and the standby's promotion (its ``kv_store`` is empty), the check-and-restore
playbook against the new primary, the watermark read back from S3, and a second run that changes nothing.
Then row archives: old audit rows moved to S3 by table_archive and brought back by archive_restore.
Then barman-cloud: two base backups, retention REDUNDANCY 1, the health and storage reports, a restore drill.
Then the nightly logical dump bundle and the logical restore drill that compares it table by table.
Then wal-g (when present): a base backup into the prefix the primary ships its WAL to, the list, a restore drill
and a PITR drill.
Every claim printed is read back from PostgreSQL or S3, and the demo fails if one does not hold.
"""

import json
import os
import subprocess
import time

from .errors import SandboxError
from .archive_demo import run_archive_demo
from .barman_demo import run_barman_demo
from .dump_demo import run_dump_demo
from .walg_demo import run_walg_demo
from .rem_schema import create_rem_schema

DATABASE = 'rem'
ROWS = 50000
PLAYBOOK = 'pgops.resilience.unlogged_check_and_restore'
WATERMARK_KEY = 'state/unlogged-watermark.json'


class DemoError(SandboxError):
    """The demo saw something other than what it was meant to show."""


def _expect(condition, message):
    if not condition:
        raise DemoError('demo check failed: %s' % message)


def _step(out, title):
    out('\n== %s' % title)


def ensure_topology(sandbox):
    """Primary running and the standby streaming from it (a previous demo left the standby promoted)."""
    sandbox.up()
    if not sandbox.primary.is_running():
        sandbox.start_node('primary')
    standby = sandbox.standby
    if not (standby.is_running() and standby.execute('SELECT pg_is_in_recovery()')[0][0]):
        sandbox.rebuild_standby(source='primary')


def create_application(sandbox):
    """(Re)create the ``rem`` database on the primary; return the rows in ``kv_store``."""
    sandbox.primary.execute('DROP DATABASE IF EXISTS %s WITH (FORCE)' % DATABASE)
    sandbox.primary.execute('CREATE DATABASE %s' % DATABASE)
    conn = sandbox.primary.connect(dbname=DATABASE)
    try:
        return create_rem_schema(conn, rows=ROWS)
    finally:
        conn.close()


def count(node, table):
    """Rows in ``table`` of the demo database on ``node``."""
    return node.execute('SELECT count(*) FROM %s' % table, dbname=DATABASE)[0][0]


def ansible_playbook(sandbox, node, playbook, extra_vars, out, check=False):
    """Run ``ansible-playbook <playbook>`` against ``node`` as a user would; return (seconds, output)."""
    env = dict(os.environ)
    env.update(sandbox.env(node))
    env.update(PGDATABASE=DATABASE, ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false')
    command = ['ansible-playbook', playbook, '-e', json.dumps(extra_vars)] + (['--check'] if check else [])
    out('$ PGPORT=%s ansible-playbook %s%s %s' % (env['PGPORT'], playbook, ' --check' if check else '',
                                                  ' '.join('-e %s=%s' % item for item in sorted(extra_vars.items()))))
    started = time.monotonic()
    # As a user's shell runs it (their umask, the whole output), not through the collection's program runner, which
    # a module uses for its own children (umask 077, a bounded stderr tail).
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    for line in done.stdout.splitlines():
        if line.strip():
            out('   ' + line)
    if done.returncode != 0:
        raise DemoError('%s failed (exit %d): %s' % (playbook, done.returncode, done.stderr.strip()))
    return elapsed, done.stdout


def run_playbook(sandbox, node, out):
    """Run the check-and-restore playbook against ``node``; return (seconds, output)."""
    return ansible_playbook(sandbox, node, PLAYBOOK, {'unlogged_watermark_bucket': sandbox.s3.bucket,
                                                      'unlogged_watermark_key': WATERMARK_KEY}, out)


def read_watermark(sandbox):
    """The watermark document from the sandbox's S3 endpoint."""
    body = sandbox.s3.client().get_object(Bucket=sandbox.s3.bucket, Key=WATERMARK_KEY)['Body'].read()
    return json.loads(body)


def run_demo(sandbox, out=print):
    """Run the whole demo; raise :class:`DemoError` when an outcome is not the expected one."""
    started = time.monotonic()
    _step(out, '1. Sandbox: PostgreSQL primary + streaming standby + S3 endpoint')
    ensure_topology(sandbox)
    out('primary  %s' % sandbox.primary.conninfo(DATABASE))
    out('standby  %s' % sandbox.standby.conninfo(DATABASE))
    out('S3       %s (bucket %s)' % (sandbox.s3.endpoint_url, sandbox.s3.bucket))

    _step(out, '2. Application database "%s": entity tables and the UNLOGGED kv_store cache' % DATABASE)
    filled = create_application(sandbox)
    sandbox.wait_for_replay()
    sandbox.s3.client().delete_object(Bucket=sandbox.s3.bucket, Key=WATERMARK_KEY)
    out('resources: %d rows, moments: %d rows, kv_store: %d rows on the primary'
        % (count(sandbox.primary, 'resources'), count(sandbox.primary, 'moments'), filled))
    out('on the standby: resources %d rows; kv_store cannot be read during recovery (UNLOGGED: not replicated)'
        % count(sandbox.standby, 'resources'))

    _step(out, '3. Baseline run on the primary: nothing to rebuild, first watermark written')
    output = run_playbook(sandbox, 'primary', out)[1]
    _expect('no rebuild: kv_store has rows' in output and 'changed=1' in output, 'the baseline run should only write the watermark')
    baseline = read_watermark(sandbox)
    _expect(baseline['kv_store_count'] == filled, 'baseline watermark counts %s rows' % baseline['kv_store_count'])

    _step(out, '4. A run on the standby changes nothing')
    output = run_playbook(sandbox, 'standby', out)[1]
    _expect('no rebuild: standby' in output and 'changed=0' in output, 'the run on the standby should change nothing')

    _step(out, '5. Failover: the primary is lost, the standby is promoted')
    sandbox.stop_node('primary', mode='immediate')
    sandbox.promote('standby')
    timeline = sandbox.standby.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')[0][0][:8]
    empty = count(sandbox.standby, 'kv_store')
    out('new primary on port %d, timeline %d: kv_store has %d rows' % (sandbox.standby.port, int(timeline, 16), empty))
    _expect(empty == 0, 'the promoted standby should have an empty kv_store')

    _step(out, '6. Check and restore on the new primary')
    rebuild_seconds = run_playbook(sandbox, 'standby', out)[0]
    rebuilt = count(sandbox.standby, 'kv_store')
    watermark = read_watermark(sandbox)
    _expect(rebuilt == filled, 'kv_store should have %d rows again, has %d' % (filled, rebuilt))
    _expect('failover' in watermark['last_run']['events'], 'watermark events: %s' % watermark['last_run']['events'])
    out('watermark s3://%s/%s:' % (sandbox.s3.bucket, WATERMARK_KEY))
    for field in ('snapshot_ts', 'primary_instance', 'timeline', 'kv_store_count', 'tables'):
        out('   %-16s %s' % (field, json.dumps(watermark[field], sort_keys=True)))
    out('   %-16s %s' % ('events', ', '.join(watermark['last_run']['events'])))

    _step(out, '7. A second run changes nothing')
    output = run_playbook(sandbox, 'standby', out)[1]
    _expect('changed=0' in output, 'the second run reported a change')
    _expect(read_watermark(sandbox)['snapshot_ts'] == watermark['snapshot_ts'], 'the second run rewrote the watermark')

    archived = run_archive_demo(sandbox, 'standby', out, ansible_playbook, _step, _expect)
    barman_server = run_barman_demo(sandbox, 'standby', out, ansible_playbook, _step, _expect)
    dumped, compared = run_dump_demo(sandbox, 'standby', out, ansible_playbook, _step, _expect)
    walg_lines = run_walg_demo(sandbox, 'standby', out, ansible_playbook, _step, _expect)

    _step(out, 'Summary')
    out('Failover from port %d to port %d (timeline %d -> %d) emptied kv_store; one playbook run rebuilt it'
        % (sandbox.primary.port, sandbox.standby.port, baseline['timeline'], watermark['timeline']))
    out('(%d rows from resources and moments in %.1f s, including Ansible start-up), recorded the failover in'
        ' the watermark, and a second run changed nothing. Demo took %.0f s.'
        % (rebuilt, rebuild_seconds, time.monotonic() - started))
    out('Then %d audit rows older than 90 days went to S3 as verified batches and came back identical.' % archived)
    out('barman-cloud catalog %s: two base backups, REDUNDANCY 1 kept the newest with its WAL, and a restore drill'
        ' started it and found every audit_logs row.' % barman_server)
    out('Logical dump %s restored into a scratch database: %d tables identical to the dumped snapshot.' % (dumped, compared))
    for line in walg_lines:
        out(line)
    out('The sandbox keeps running (the promoted standby is the primary now): `make demo` starts over, '
        '`make sandbox-down` stops it.')
