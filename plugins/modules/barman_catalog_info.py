#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: barman_catalog_info
short_description: Check the health of a barman-cloud backup catalog in S3 and report its storage use
version_added: 0.1.0
description:
  - Reads the catalog that C(barman-cloud-backup) and C(barman-cloud-wal-archive) (and so CloudNativePG's barman-cloud
    plugin) write under O(destination_path) for server O(server_name), with the S3 API only (boto3; barman need not be
    installed).
  - Lists the base backups (C(base/<backup_id>/backup.info), keep annotations, stored size) and streams the WAL archive
    (C(wals/)) page by page with running counters, so catalogs with hundreds of thousands of WAL files are checked in
    bounded memory.
  - Finds gaps between consecutive WAL segments of the same timeline, WAL segments that DONE backups need but the
    archive lacks, and stale backups (C(FAILED), or C(STARTED) for longer than O(stale_started_hours)), which barman's
    retention never removes.
  - Gives a RV(verdict) (C(ok), C(warning) or C(critical)) with its RV(verdict_reasons), the runbook's weekly backup
    health check, and a RV(storage) breakdown by directory including other server directories under the same
    destination path (orphan candidates from renamed or removed clusters), the runbook's monthly storage report.
  - Returns the results as Prometheus metrics too (RV(prometheus_text)), for node_exporter's textfile collector; the
    C(pgops.resilience.backup_health_check) playbook writes them to a file when C(barman_metrics_file) is set.
  - Only reads S3 and writes nothing; never reports C(changed).
author:
  - pgops.resilience maintainers (@pgops)
extends_documentation_fragment:
  - pgops.resilience.attributes
  - pgops.resilience.s3
options:
  destination_path:
    description:
      - Where the catalog lives, C(s3://<bucket>/<prefix>), as the C(destinationPath) of the CloudNativePG
        ObjectStore or the destination given to barman-cloud. C(s3://<bucket>) is the bucket's root.
    type: str
    required: true
  server_name:
    description:
      - The barman server name, the directory under O(destination_path) (CloudNativePG's C(serverName), by default
        the Cluster's name).
    type: str
    required: true
  backup_age_warning:
    description:
      - Hours after the end of the newest C(DONE) backup from which the verdict is at least C(warning). Also the
        hours without a newly archived WAL file after which the verdict is C(warning).
    type: float
    default: 48
  backup_age_critical:
    description:
      - Hours after the end of the newest C(DONE) backup from which the verdict is C(critical).
      - Must not be below O(backup_age_warning).
    type: float
    default: 168
  stale_started_hours:
    description:
      - A backup whose C(backup.info) still says C(STARTED) this many hours after its begin time is stale (the
        backup process died). C(FAILED) backups are always stale.
    type: float
    default: 24
  wal_gap_limit:
    description:
      - At most this many gaps are listed in RV(wal.gaps); all are counted in RV(wal.gap_count).
    type: int
    default: 100
  now:
    description:
      - The time to judge ages against, ISO 8601 (such as C(2026-01-31T06:00:00Z); without an offset, UTC).
        Defaults to the current time. Meant for tests and for reproducing a past report.
    type: str
attributes:
  check_mode:
    support: full
    details:
      - The module only reads, so check mode runs it unchanged.
  diff_mode:
    support: none
notes:
  - The verdict is C(critical) when there is no readable C(DONE) backup (or no O(server_name) directory at all),
    when the newest C(DONE) backup is older than O(backup_age_critical), or when WAL segments the newest C(DONE)
    backup needs (its C(begin_wal) to C(end_wal)) are missing from the archive.
  - It is C(warning) when the newest C(DONE) backup is older than O(backup_age_warning), when there is no WAL file,
    when the newest WAL file is older than O(backup_age_warning) or more than an hour older than the end of the newest
    backup, when an older C(DONE) backup lacks some of its WAL, when there are gaps after the oldest backup usable for
    point-in-time recovery, when there are stale backups, and when a backup directory has no readable C(backup.info).
  - Gaps are found from the order of the keys that C(ListObjectsV2) returns (UTF-8 binary order, as AWS S3, MinIO
    and Ceph RGW list general purpose buckets). Segment numbering follows C(xlog_segment_size) of the newest readable
    backup (16 MiB when there is none), so C(...000000FF) is followed by the next log id's C(...00000000).
  - The identity used needs C(s3:ListBucket) on the bucket and C(s3:GetObject) on the catalog's objects.
requirements:
  - boto3
seealso:
  - name: barman-cloud catalog layout
    description: barman's cloud backup catalog, as barman-cloud-backup-list reads it.
    link: https://docs.pgbarman.org/release/latest/user_guide/barman_cloud.html
  - name: node_exporter textfile collector
    description: Where the file with RV(prometheus_text) goes.
    link: https://github.com/prometheus/node_exporter#textfile-collector
'''

EXAMPLES = r'''
- name: Weekly backup health check of a CloudNativePG cluster's catalog (credentials from AWS_* variables)
  pgops.resilience.barman_catalog_info:
    destination_path: s3://kilobase/barman/backup
    server_name: kilobase-postgres-backup
  register: catalog

- name: Fail when the catalog is critical
  ansible.builtin.fail:
    msg: "{{ catalog.verdict_reasons }}"
  when: catalog.verdict == 'critical'

- name: MinIO endpoint, tighter thresholds
  pgops.resilience.barman_catalog_info:
    destination_path: s3://backups/cnpg
    server_name: pg-main
    endpoint_url: https://minio.example:9000
    backup_age_warning: 26
    backup_age_critical: 50
  register: catalog

- name: Metrics for node_exporter's textfile collector (written atomically; 0640 for a node_exporter in the group)
  ansible.builtin.copy:
    content: "{{ catalog.prometheus_text }}"
    dest: /var/lib/node_exporter/textfile/barman_pg_main.prom
    mode: '0640'

- name: Orphan candidates (other server directories under the same destination path)
  ansible.builtin.debug:
    msg: "{{ item.path }}: {{ item.bytes | human_readable }} in {{ item.objects }} objects, last written {{ item.last_modified }}"
  loop: "{{ catalog.other_servers }}"
'''

RETURN = r'''
destination_path:
  description: O(destination_path) as given.
  returned: always
  type: str
  sample: s3://kilobase/barman/backup
server_name:
  description: O(server_name) as given.
  returned: always
  type: str
  sample: kilobase-postgres-backup
bucket:
  description: The bucket of O(destination_path).
  returned: always
  type: str
  sample: kilobase
server_prefix:
  description: The key prefix of the server's directory.
  returned: always
  type: str
  sample: barman/backup/kilobase-postgres-backup/
server_found:
  description: Whether a directory O(server_name) exists under O(destination_path).
  returned: always
  type: bool
now:
  description: The time ages were computed against (ISO 8601, UTC).
  returned: always
  type: str
  sample: "2026-01-31T06:00:00Z"
backups:
  description: Every backup directory under C(base/), sorted by backup ID. Times are ISO 8601 in UTC.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id:
      description: The backup ID (C(YYYYMMDDTHHMMSS), the directory name).
      type: str
    backup_name:
      description: The backup's name (C(barman-cloud-backup --name)), or C(null).
      type: str
    status:
      description: C(DONE), C(FAILED), C(STARTED), ...; C(null) when unreadable.
      type: str
    error:
      description: barman's error message of a failed backup, or C(null).
      type: str
    begin_time:
      description: When the backup began.
      type: str
    end_time:
      description: When the backup ended, or C(null).
      type: str
    begin_wal:
      description: The first WAL segment the backup needs.
      type: str
    end_wal:
      description: The last WAL segment the backup needs to be consistent.
      type: str
    begin_lsn:
      description: The backup's start LSN (C(begin_xlog)).
      type: str
    end_lsn:
      description: The backup's end LSN (C(end_xlog)).
      type: str
    timeline:
      description: The timeline the backup was taken on.
      type: int
    size:
      description: The size barman recorded, in bytes (C(null) for barman-cloud backups).
      type: int
    cluster_size:
      description: The size of the data directory when it was backed up, in bytes.
      type: int
    xlog_segment_size:
      description: The WAL segment size, in bytes.
      type: int
    version:
      description: The PostgreSQL server version number, such as C(150018).
      type: int
    systemid:
      description: The PostgreSQL system identifier.
      type: str
    keep:
      description: C(full) or C(standalone) when the backup has a keep annotation (never deleted by retention), else C(null).
      type: str
    prefix:
      description: The key prefix of the backup's directory; everything it holds is under it.
      type: str
    stored_bytes:
      description: Bytes stored under RV(backups[].prefix).
      type: int
    objects:
      description: Objects under RV(backups[].prefix).
      type: int
    info_modified:
      description: When C(backup.info) was last written, or C(null) when there is none.
      type: str
    readable:
      description: Whether C(backup.info) exists and could be read and parsed. Unreadable backups have C(null) fields.
      type: bool
    unreadable_reason:
      description: Why the backup is not readable, or C(null).
      type: str
    wal_missing:
      description:
        - For readable C(DONE) backups, how many segments from C(begin_wal) to C(end_wal) the archive lacks
          (0 means the backup can be restored to consistency); C(null) for the others.
      type: int
  sample:
    - backup_id: 20251126T091549
      backup_name: null
      status: DONE
      error: null
      begin_time: "2025-11-26T09:15:49.123456Z"
      end_time: "2025-11-26T09:16:10.654321Z"
      begin_wal: "000000010000000A0000002B"
      end_wal: "000000010000000A0000002C"
      begin_lsn: A/2B000028
      end_lsn: A/2C000100
      timeline: 1
      size: null
      cluster_size: 52428800
      xlog_segment_size: 16777216
      version: 170002
      systemid: "7439284711232452633"
      keep: null
      prefix: barman/backup/kilobase-postgres-backup/base/20251126T091549/
      stored_bytes: 9437184
      objects: 2
      info_modified: "2025-11-26T09:16:11Z"
      readable: true
      unreadable_reason: null
      wal_missing: 0
backup_count:
  description: Number of backup directories (RV(backups) length).
  returned: always
  type: int
  sample: 3
backup_counts:
  description: Backups by status; C(UNREADABLE) counts those without a readable C(backup.info).
  returned: always
  type: dict
  sample: {"DONE": 3, "FAILED": 1}
latest_backup:
  description: The newest C(DONE) backup (by end time), or C(null) when there is none.
  returned: always
  type: dict
  contains:
    backup_id:
      description: Its backup ID.
      type: str
    backup_name:
      description: Its name, or C(null).
      type: str
    end_time:
      description: When it ended (its begin time, or the time of its C(backup.info), when it has no end time).
      type: str
    timestamp:
      description: RV(latest_backup.end_time) as Unix time (seconds).
      type: float
    age_seconds:
      description: Seconds from RV(latest_backup.end_time) to RV(now).
      type: int
    begin_wal:
      description: Its first WAL segment.
      type: str
    end_wal:
      description: Its last WAL segment.
      type: str
    timeline:
      description: Its timeline.
      type: int
  sample: {"backup_id": "20251126T091549", "backup_name": null, "end_time": "2025-11-26T09:16:10.654321Z",
           "timestamp": 1764148570.654321, "age_seconds": 7320, "begin_wal": "000000010000000A0000002B",
           "end_wal": "000000010000000A0000002C", "timeline": 1}
verdict:
  description: C(ok), C(warning) or C(critical); see the notes for the rules.
  returned: always
  type: str
  sample: ok
verdict_reasons:
  description: Why the verdict is not C(ok), most severe first (empty when it is C(ok)).
  returned: always
  type: list
  elements: str
  sample: ["the newest DONE backup 20251119T020000 is 171.2 hours old (critical above 168.0 hours)"]
wal:
  description: The WAL archive (C(wals/)), counted in one streamed listing.
  returned: always
  type: dict
  contains:
    count:
      description: WAL files of every kind (segments, history files, C(.backup) labels, C(.partial) segments).
      type: int
    bytes:
      description: Bytes of those files as stored (compressed).
      type: int
    segments:
      description: WAL segments.
      type: int
    backup_labels:
      description: C(.backup) files.
      type: int
    partial_files:
      description: C(.partial) files.
      type: int
    other_objects:
      description: Objects under C(wals/) that are not WAL files.
      type: int
    other_bytes:
      description: Their bytes.
      type: int
    first_segment:
      description: The oldest segment (lowest timeline, then position), or C(null).
      type: str
    last_segment:
      description: The newest segment (highest timeline, then position), or C(null).
      type: str
    newest_modified:
      description: When the most recently written WAL file was written, or C(null).
      type: str
    timelines:
      description: Timelines with WAL files.
      type: list
      elements: int
    history_files:
      description: Names of the timeline history files.
      type: list
      elements: str
    segments_per_log:
      description: Segments per log id used to number segments (256 for 16 MiB segments).
      type: int
    gaps:
      description:
        - Gaps between consecutive segments of the same timeline, at most O(wal_gap_limit), in archive order.
        - C(impact) is C(backup) when the gap removes segments a C(DONE) backup needs (between its C(begin_wal) and
          C(end_wal)), C(pitr) when it lies after the oldest backup usable for point-in-time recovery, C(none) when
          it is older than every such backup.
      type: list
      elements: dict
      contains:
        timeline:
          description: The timeline.
          type: int
        after:
          description: The last segment before the gap.
          type: str
        before:
          description: The first segment after the gap.
          type: str
        missing:
          description: Segments missing in between.
          type: int
        impact:
          description: C(backup), C(pitr) or C(none).
          type: str
    gap_count:
      description: All gaps found (RV(wal.gaps) lists at most O(wal_gap_limit)).
      type: int
    gaps_listed:
      description: Length of RV(wal.gaps).
      type: int
    missing_segments:
      description: Segments missing in all gaps together.
      type: int
    gap_impacts:
      description: Gaps counted by impact.
      type: dict
  sample: {"count": 1204, "bytes": 1981234567, "segments": 1200, "backup_labels": 3, "partial_files": 0,
           "other_objects": 0, "other_bytes": 0, "first_segment": "000000010000000600000010",
           "last_segment": "000000010000000A0000002C", "newest_modified": "2025-11-26T09:16:12Z", "timelines": [1],
           "history_files": [], "segments_per_log": 256,
           "gaps": [{"timeline": 1, "after": "000000010000000800000007", "before": "00000001000000080000000A",
                     "missing": 2, "impact": "pitr"}],
           "gap_count": 1, "gaps_listed": 1, "missing_segments": 2, "gap_impacts": {"backup": 0, "pitr": 1, "none": 0}}
storage:
  description: Storage under O(destination_path) by directory, the runbook's monthly report.
  returned: always
  type: dict
  contains:
    location:
      description: The destination path, C(s3://bucket/prefix/).
      type: str
    total_bytes:
      description: Bytes of every object under O(destination_path).
      type: int
    total_objects:
      description: Objects under O(destination_path).
      type: int
    directories:
      description:
        - This server's C(base/) and C(wals/), any other directory of this server, each other server directory,
          and the objects directly under O(destination_path) (C(server) C(null)).
      type: list
      elements: dict
      contains:
        path:
          description: Key prefix.
          type: str
        kind:
          description: C(base), C(wals) or C(other).
          type: str
        server:
          description: The server directory it belongs to, or C(null).
          type: str
        bytes:
          description: Bytes under it.
          type: int
        objects:
          description: Objects under it.
          type: int
        percent:
          description: Share of RV(storage.total_bytes), in percent (one decimal).
          type: float
        last_modified:
          description: When its newest object was written, or C(null).
          type: str
  sample: {"location": "s3://kilobase/barman/backup/", "total_bytes": 4000000000, "total_objects": 2500,
           "directories": [{"path": "barman/backup/kilobase-postgres-backup/wals/", "kind": "wals",
                            "server": "kilobase-postgres-backup", "bytes": 3000000000, "objects": 2400, "percent": 75.0,
                            "last_modified": "2025-11-26T09:16:12Z"}]}
other_servers:
  description:
    - The other directories under O(destination_path), orphan candidates from old or renamed clusters. A directory
      written recently may belong to a live cluster that shares the destination path.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The directory (server) name.
      type: str
    path:
      description: Its key prefix.
      type: str
    bytes:
      description: Bytes under it.
      type: int
    objects:
      description: Objects under it.
      type: int
    last_modified:
      description: When its newest object was written.
      type: str
    barman_layout:
      description: Whether it holds C(base/) or C(wals/) like a barman server directory.
      type: bool
    backup_count:
      description: C(backup.info) files under its C(base/).
      type: int
  sample: [{"name": "supabase", "path": "barman/backup/supabase/", "bytes": 812345678, "objects": 901,
            "last_modified": "2025-06-02T11:00:00Z", "barman_layout": true, "backup_count": 4}]
stale_backups:
  description: C(FAILED) backups and C(STARTED) ones older than O(stale_started_hours); barman's retention never removes them.
  returned: always
  type: list
  elements: dict
  contains:
    backup_id:
      description: Backup ID.
      type: str
    status:
      description: C(FAILED) or C(STARTED).
      type: str
    begin_time:
      description: When it began, or C(null).
      type: str
    age_seconds:
      description: Seconds since it began (or since its C(backup.info) was written).
      type: int
    reason:
      description: Why it is stale.
      type: str
    prefix:
      description: Its key prefix.
      type: str
    stored_bytes:
      description: Bytes stored under it.
      type: int
  sample: [{"backup_id": "20251120T020000", "status": "FAILED", "begin_time": "2025-11-20T02:00:00Z",
            "age_seconds": 540000, "reason": "FAILED: failure uploading data", "prefix": "barman/backup/pg/base/20251120T020000/",
            "stored_bytes": 1048576}]
prometheus_text:
  description:
    - The results in Prometheus text exposition format, for node_exporter's textfile collector (write it to a
      C(*.prom) file inside C(--collector.textfile.directory), as the C(pgops.resilience.backup_health_check)
      playbook does with C(barman_metrics_file)).
    - The metrics, each labelled C(server), are C(pgops_barman_check_timestamp_seconds),
      C(pgops_barman_verdict) (0 ok, 1 warning, 2 critical), C(pgops_barman_last_backup_timestamp_seconds),
      C(pgops_barman_backup_age_seconds), C(pgops_barman_backups) (by C(status)), C(pgops_barman_stale_backups),
      C(pgops_barman_wal_objects), C(pgops_barman_wal_bytes), C(pgops_barman_last_wal_timestamp_seconds),
      C(pgops_barman_wal_gaps), C(pgops_barman_wal_missing_segments), C(pgops_barman_storage_bytes) and
      C(pgops_barman_storage_objects) (by C(directory) C(base), C(wals) or C(other)) and C(pgops_barman_other_servers).
  returned: always
  type: str
  sample: |
    # HELP pgops_barman_verdict Health verdict of the catalog: 0 ok, 1 warning, 2 critical.
    # TYPE pgops_barman_verdict gauge
    pgops_barman_verdict{server="pg-main"} 0
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.pgops.resilience.plugins.module_utils._core.module import module_main
from ansible_collections.pgops.resilience.plugins.module_utils._barman import health


def main():
    module_main(AnsibleModule, health.module_spec(), health.report_catalog)


if __name__ == '__main__':
    main()
