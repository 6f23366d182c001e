"""The barman-cloud part of `make demo`: WAL shipped by barman-cloud-wal-archive, two base backups taken with
barman-cloud-backup, retention REDUNDANCY 1 (check mode first), the health and storage reports, and a restore
drill that starts the kept backup and checks it. Every claim is read back from S3 or from the drill's result."""

import os
import time

from .barman import require_tool

DATABASE = 'rem'


def _keys(sandbox, prefix):
    return sorted(sandbox.s3.objects(prefix))


def run_barman_demo(sandbox, node_name, out, ansible_playbook, step, expect):
    """Run demo steps 10-13 against node ``node_name`` (the current primary). Returns the drill's RTO (seconds)."""
    node = getattr(sandbox, node_name)
    server = 'demo-%s' % time.strftime('%Y%m%d%H%M%S', time.gmtime())
    settings = sandbox.barman_server(server)
    sandbox.barman_wait_archived(node=node_name)
    base = {'barman_destination_path': settings['destination_path'], 'barman_server_name': server}

    step(out, '10. barman-cloud: WAL shipped by barman-cloud-wal-archive, two base backups with barman-cloud-backup')
    out('archive_command ships every segment to %s/%s (gzip)' % (settings['destination_path'], server))
    first = sandbox.barman_backup(server, node=node_name)
    node.execute("UPDATE audit_logs SET action = action WHERE id % 10 = 0", dbname=DATABASE)
    sandbox.barman_wait_archived(node=node_name)
    second = sandbox.barman_backup(server, node=node_name)
    out('backups: %s, %s' % (first, second))
    wals = _keys(sandbox, 'barman/%s/wals/' % server)
    out('WAL objects in the catalog: %d' % len(wals))

    step(out, '11. Retention REDUNDANCY 1: preview, then barman-cloud-backup-delete removes the old backup and its WAL')
    retention = dict(base, barman_retention_policy='REDUNDANCY 1')
    ansible_playbook(sandbox, node_name, 'pgops.resilience.barman_retention', retention, out, check=True)
    expect(len(_keys(sandbox, 'barman/%s/base/%s/' % (server, first))) > 0, 'check mode must not delete the old backup')
    ansible_playbook(sandbox, node_name, 'pgops.resilience.barman_retention', retention, out)
    expect(not _keys(sandbox, 'barman/%s/base/%s/' % (server, first)), 'backup %s should be gone' % first)
    expect(_keys(sandbox, 'barman/%s/base/%s/backup.info' % (server, second)), 'backup %s must stay' % second)
    left = _keys(sandbox, 'barman/%s/wals/' % server)
    out('backup %s and %d WAL objects removed; %s and %d WAL objects kept' % (first, len(wals) - len(left), second, len(left)))

    step(out, '12. Weekly health check and monthly storage report')
    ansible_playbook(sandbox, node_name, 'pgops.resilience.backup_health_check', base, out)
    ansible_playbook(sandbox, node_name, 'pgops.resilience.storage_report', base, out)

    step(out, '13. Restore drill: the kept backup is fetched, recovered from the catalog\'s WAL, started and checked')
    rows = node.execute('SELECT count(*) FROM audit_logs', dbname=DATABASE)[0][0]
    sandbox.barman_wait_archived(node=node_name)
    # The drill server's restore_command runs as the postgres user: the barman programs it can reach.
    drill = dict(base, barman_drill_database=DATABASE, barman_bin_dir=os.path.dirname(require_tool('barman-cloud-wal-restore')),
                 barman_drill_checks=[{'name': 'audit_logs rows', 'query': 'SELECT count(*) FROM audit_logs', 'expected': rows}])
    output = ansible_playbook(sandbox, node_name, 'pgops.resilience.barman_restore_drill', drill, out)[1]
    expect('Restore drill PASSED' in output, 'the restore drill should pass')
    sandbox.barman_server(None)
    return server
