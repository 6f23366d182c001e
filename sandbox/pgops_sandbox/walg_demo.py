"""The wal-g part of `make demo`: the current primary ships its WAL with ``wal-g wal-push`` (archive_command) to its
generation's prefix; a base backup is pushed there through the walg_backup playbook, which also lists the storage;
the WAL is verified (walg_verify) and the runbook's retention planned in check mode (walg_retention); then a restore
drill recovers the backup from the shipped WAL, and a PITR drill stops between two marker rows.
Every claim is read back from S3 or from the playbooks' results. Without wal-g the part is skipped, and the summary
says so.

The steps are the list :data:`STEPS`, run in order; each prints its own output and returns the line (or lines) of
the human summary.
"""

import re
import time

from . import walg

DATABASE = 'rem'
MARKERS = 'walg_demo_markers'
FIRST_STEP = 16
"""Number of the first wal-g step in the demo's output (the dump part ends with step 15)."""


class WalgDemo:
    """What the steps share: the sandbox, the node backed up (the current primary), its wal-g storage, how to run
    a playbook and check a claim, and what earlier steps found (``backup``: the name of the backup pushed)."""

    def __init__(self, sandbox, node_name, out, ansible_playbook, expect):
        self.sandbox = sandbox
        self.node_name = node_name
        self.node = sandbox.node(node_name)
        self.out = out
        self.expect = expect
        self._ansible_playbook = ansible_playbook
        self.settings = sandbox.walg_settings(node_name)
        self.prefix = self.settings['prefix']
        self.backup = None

    def storage_vars(self):
        """The playbooks' variables for this storage (the S3 endpoint and credentials come from the environment)."""
        return {'walg_prefix': self.prefix, 'walg_bin': self.settings['walg_bin'], 'walg_timeout': 300}

    def playbook(self, name, extra_vars, check=False):
        """Run playbook ``pgops.resilience.<name>`` against the node; return its output."""
        return self._ansible_playbook(self.sandbox, self.node_name, 'pgops.resilience.%s' % name, extra_vars, self.out,
                                      check=check)[1]

    def keys(self, below=''):
        """The object keys under the storage's prefix + ``below``, relative to the prefix (``wal_005/...``)."""
        root = self.prefix[len('s3://%s/' % self.sandbox.bucket):] + '/'
        return sorted(key[len(root):] for key in self.sandbox.s3.objects(root + below))

    def mark(self, label):
        """Insert a marker row; return the server's commit-side clock reading after it (text, UTC)."""
        self.node.execute('INSERT INTO %s (label) VALUES (%%s)' % MARKERS, [label], dbname=DATABASE)
        return self.node.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'",
                                 dbname=DATABASE)[0][0]

    def drill(self, extra_vars):
        """Run the restore drill playbook; return (its output, the RTO in seconds it reports)."""
        output = self.playbook('walg_restore_drill', dict(self.storage_vars(), walg_drill_database=DATABASE, **extra_vars))
        self.expect('Restore drill PASSED: backup %s' % self.backup in output, 'the drill should restore %s and pass' % self.backup)
        rto = re.search(r'RTO ([0-9.]+) s', output)
        return output, float(rto.group(1)) if rto else 0.0


def _marker_check(label, expected):
    return {'name': 'marker %r' % label, 'query': "SELECT count(*) FROM %s WHERE label = '%s'" % (MARKERS, label),
            'expected': expected}


def backup_and_list(demo):
    """Push a base backup through the walg_backup playbook; the same run lists the storage (walg_backup_info)."""
    demo.node.execute('DROP TABLE IF EXISTS %s; CREATE TABLE %s (label text PRIMARY KEY, at timestamptz NOT NULL DEFAULT '
                      'clock_timestamp())' % (MARKERS, MARKERS), dbname=DATABASE)
    segment = walg.wait_pushed(demo.sandbox, demo.node)
    demo.out('archive_command pushed WAL up to %s into %s' % (segment, demo.prefix))
    output = demo.playbook('walg_backup', dict(demo.storage_vars(), walg_data_directory=demo.node.datadir))
    took = re.search(r'Took a (full|delta) backup (base_[0-9A-F_D]+) \(.*?\)\s+in ([0-9.]+) s', output)
    listed = re.search(r'the storage holds (\d+) backup\(s\), newest (base_[0-9A-F_D]+)', output)
    demo.expect(took is not None and listed is not None, 'the playbook should report the backup it took and the list')
    demo.backup = took.group(2)
    demo.expect(listed.group(2) == demo.backup, 'the list should name %s the newest, not %s' % (demo.backup, listed.group(2)))
    sentinels = [k for k in demo.keys('basebackups_005/') if k.endswith('_backup_stop_sentinel.json')]
    demo.expect(len(sentinels) == int(listed.group(1)), 'S3 holds %d backups, the list says %s' % (len(sentinels), listed.group(1)))
    demo.expect(any(demo.backup in k for k in sentinels), 'backup %s should be in S3' % demo.backup)
    return ['wal-g base backup %s (%s, %s s) of the primary through the walg_backup playbook, into %s, where '
            'archive_command ships the WAL with wal-push.' % (demo.backup, took.group(1), took.group(3), demo.prefix),
            'wal-g list (walg_backup_info): %s backup(s) in that prefix, newest %s, as S3 holds them.'
            % (listed.group(1), demo.backup)]


def verify_wal(demo):
    """wal-verify through the walg_verify playbook: every segment the backup and the window need is in S3, and the
    server's timeline is the storage's highest."""
    walg.wait_pushed(demo.sandbox, demo.node)
    output = demo.playbook('walg_verify', demo.storage_vars())
    verdict = re.search(r'WAL verification (OK|WARNING|FAILURE): integrity (\w+) \((\d+) lost', output)
    demo.expect(verdict is not None and verdict.group(1) != 'FAILURE' and verdict.group(3) == '0',
                'WAL verification should find no lost segment a backup needs')
    return ['wal-g WAL verification (walg_verify, wal-verify integrity + timeline): %s, no segment the backup or the '
            '7-day window needs is missing.' % verdict.group(1)]


def retention_check(demo):
    """The runbook's retention (7 daily, 4 weekly, a 7-day window) in check mode: what it would delete, nothing
    deleted."""
    before = demo.keys()
    output = demo.playbook('walg_retention', demo.storage_vars(), check=True)
    planned = re.search(r'Would delete (\d+) backup\(s\).*?and (\d+)\s+WAL segment\(s\), (\d+) bytes; kept (\d+) backup', output, re.S)
    demo.expect(planned is not None, 'the retention playbook should report its plan')
    demo.expect(planned.group(1) == '0', 'a fresh storage keeps every backup, the plan deletes %s' % planned.group(1))
    after = demo.keys()
    demo.expect(set(before) <= set(after), 'check mode must delete nothing from S3')
    return ['wal-g retention in check mode (walg_retention, 7 daily + 4 weekly + 7-day window): keeps %s backup(s), '
            'would delete %s backup(s) and %s WAL segment(s) (the WAL older than the first backup); nothing was deleted.'
            % (planned.group(4), planned.group(1), planned.group(2))]


def restore_drill(demo):
    """A row written after the backup, its WAL pushed by archive_command; the drill must replay it."""
    demo.mark('after the backup')
    segment = walg.wait_pushed(demo.sandbox, demo.node)
    demo.expect(any(k.startswith('wal_005/%s' % segment) for k in demo.keys('wal_005/')), 'segment %s should be in S3' % segment)
    rto = demo.drill({'walg_drill_checks': [_marker_check('after the backup', 1)]})[1]
    return ['wal-g restore drill: %s fetched, recovered from the WAL archive_command shipped (up to %s) and checked: the '
            'row written after the backup is there; RTO %.1f s.' % (demo.backup, segment, rto)]


def pitr_drill(demo):
    """Two marker rows with a recovery target time between them: the drill must keep the first, not the second."""
    target = demo.mark('before the target')
    time.sleep(0.05)  # the second commit is clearly after the target, whatever the clocks' resolution
    demo.mark('after the target')
    walg.wait_pushed(demo.sandbox, demo.node)
    demo.drill({'walg_drill_recovery_target_time': target,
                'walg_drill_checks': [_marker_check('before the target', 1), _marker_check('after the target', 0)]})
    return ['wal-g PITR drill to %s: the row committed before the target is there, the one after it is not.' % target]


STEPS = [
    ('wal-g: a base backup through the walg_backup playbook, and the list of the storage', backup_and_list),
    ('wal-g WAL verification through the walg_verify playbook', verify_wal),
    ('wal-g retention in check mode through the walg_retention playbook', retention_check),
    ('wal-g restore drill: the newest backup recovered from the shipped WAL', restore_drill),
    ('wal-g PITR drill: recovery stopped between two marker rows', pitr_drill),
]
"""The wal-g steps in order: (title, function(WalgDemo) -> list of summary lines)."""


def run_walg_demo(sandbox, node_name, out, ansible_playbook, step, expect):
    """Run the wal-g steps against node ``node_name`` (the current primary); return the summary lines (list of str).

    Without wal-g (not found) the steps are skipped and the one summary line says so.
    """
    state = walg.status(sandbox)
    if not state['enabled']:
        step(out, '%d. wal-g: skipped' % FIRST_STEP)
        out(state['skipped'])
        return ['wal-g: %s.' % state['skipped']]
    started = time.monotonic()
    demo = WalgDemo(sandbox, node_name, out, ansible_playbook, expect)
    lines = []
    for number, (title, action) in enumerate(STEPS, FIRST_STEP):
        step(out, '%d. %s' % (number, title))
        lines += action(demo)
    lines.append('The wal-g part took %.0f s.' % (time.monotonic() - started))
    return lines
