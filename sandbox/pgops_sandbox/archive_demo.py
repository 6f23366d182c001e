"""The row-archive part of `make demo`: old audit rows go to S3 with table_archive and come back with
archive_restore, both run through their playbooks; every claim is read back from PostgreSQL or S3."""

import json

DATABASE = 'rem'
ROWS = 20000
PREFIX = 'archives'


def _count(node, query):
    return node.execute(query, dbname=DATABASE)[0][0]


def create_audit_logs(node):
    """``audit_logs`` (the guide's example table) with one row per ~15 minutes over 200 days, and a copy
    ``audit_logs_reference`` to compare the restored rows with."""
    node.execute("""
        DROP TABLE IF EXISTS audit_logs, audit_logs_reference;
        CREATE TABLE audit_logs (id bigint PRIMARY KEY, user_id integer NOT NULL, action text NOT NULL,
                                 metadata jsonb, created_at timestamptz NOT NULL);
        CREATE INDEX audit_logs_created_at ON audit_logs (created_at);
        INSERT INTO audit_logs
        SELECT g, g % 500, (ARRAY['login', 'logout', 'view', E'export\\tcsv'])[g % 4 + 1],
               jsonb_build_object('ip', '10.0.' || g % 250 || '.' || g % 7, 'ok', g % 3 > 0, 'note', NULL),
               now() - make_interval(mins => g * 14)
        FROM generate_series(1, ROWS) AS g;
        CREATE TABLE audit_logs_reference AS TABLE audit_logs;
    """.replace('ROWS', str(ROWS)), dbname=DATABASE)


def run_archive_demo(sandbox, node_name, out, ansible_playbook, step, expect):
    """Archive rows older than 90 days, check they left the table and reached S3, restore them all, and
    compare with the reference (EXCEPT both ways). Returns the number of rows archived."""
    node = getattr(sandbox, node_name)
    client = sandbox.s3.client()
    step(out, '8. Row archives: audit_logs rows older than 90 days go to S3')
    create_audit_logs(node)
    old = _count(node, "SELECT count(*) FROM audit_logs WHERE created_at < now() - interval '90 days'")
    sandbox.s3.bucket_objects().delete_prefix('%s/%s/' % (PREFIX, DATABASE))  # what an earlier demo archived
    out('audit_logs: %d rows, %d of them older than 90 days' % (ROWS, old))
    archive_vars = {'table_archive_bucket': sandbox.s3.bucket, 'table_archive_table': 'audit_logs',
                    'table_archive_date_column': 'created_at', 'table_archive_older_than': '90 days',
                    'table_archive_batch_size': 5000}
    ansible_playbook(sandbox, node_name, 'pgops.resilience.table_archive', archive_vars, out, check=True)
    ansible_playbook(sandbox, node_name, 'pgops.resilience.table_archive', archive_vars, out)
    left = _count(node, 'SELECT count(*) FROM audit_logs')
    expect(left == ROWS - old, 'audit_logs should keep %d rows, has %d' % (ROWS - old, left))
    keys = [o['key'] for o in sandbox.s3.bucket_objects().iter_objects('%s/%s/public/audit_logs/' % (PREFIX, DATABASE))]
    batches = [k for k in keys if k.endswith('.jsonl.gz')]
    sidecar = json.loads(client.get_object(Bucket=sandbox.s3.bucket, Key=batches[0] + '.meta.json')['Body'].read())
    out('S3 now holds %d batches with sidecars; first: %s' % (len(batches), batches[0]))
    out('   sidecar: %d records, sha256 %s..., created_at %s .. %s'
        % (sidecar['record_count'], sidecar['sha256'][:16], sidecar['date_min'], sidecar['date_max']))
    expect(sum(json.loads(client.get_object(Bucket=sandbox.s3.bucket, Key=k + '.meta.json')['Body'].read())['record_count']
               for k in batches) == old, 'the sidecars should count %d rows' % old)

    step(out, '9. The auditors want them back: archive_restore, dry run first')
    restore_vars = {'archive_restore_bucket': sandbox.s3.bucket, 'archive_restore_database': DATABASE,
                    'archive_restore_table': 'audit_logs', 'archive_restore_all': True}
    ansible_playbook(sandbox, node_name, 'pgops.resilience.archive_restore', restore_vars, out, check=True)
    ansible_playbook(sandbox, node_name, 'pgops.resilience.archive_restore', restore_vars, out)
    differ = _count(node, 'SELECT (SELECT count(*) FROM (TABLE audit_logs EXCEPT TABLE audit_logs_reference) a)'
                          ' + (SELECT count(*) FROM (TABLE audit_logs_reference EXCEPT TABLE audit_logs) b)')
    expect(differ == 0, '%d rows differ between audit_logs and its reference' % differ)
    out('audit_logs has all %d rows again, identical to the reference (EXCEPT both ways: 0 rows)' % ROWS)
    output = ansible_playbook(sandbox, node_name, 'pgops.resilience.archive_restore', restore_vars, out)[1]
    expect('Files skipped: %d' % len(batches) in output, 'a second restore should skip every file by the watermark')
    out('a second restore skips every file: the restore watermark says they are restored')
    return old
