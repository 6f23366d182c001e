# -*- coding: utf-8 -*-
"""Unit tests of the barman catalog's pure logic: destination paths, WAL names, backup.info, gaps, the verdict rules,
the Prometheus text (no server). Names and files are checked against barman's own
code (installed with barman[cloud]), which the module itself does not import."""

from __future__ import annotations

import datetime
import io
import os
import re

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._barman import catalog as bc, health, wal as barman_wal
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 1, 31, 6, 0, tzinfo=UTC)

# A backup.info as barman-cloud-backup 3.19.1 wrote it in the sandbox (paths shortened).
BACKUP_INFO = """\
backup_label='START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\\nCHECKPOINT LOCATION: 0/5000060\\n'
begin_offset=40
begin_time=2026-11-21 03:57:39.937949+00:00
begin_wal=000000010000000000000005
begin_xlog=0/5000028
children_backup_ids=None
cluster_size=26767049
compression=None
config_file=/srv/primary/postgresql.conf
copy_stats={'total_time': 4.105175, 'number_of_workers': 2}
data_checksums=off
deduplicated_size=None
encryption=None
end_offset=256
end_time=2026-11-21 03:57:42.858607+00:00
end_wal=000000010000000000000005
end_xlog=0/5000100
error=None
included_files=['/srv/primary/pgops_sandbox.conf']
mode=None
server_name=cloud
size=None
status=DONE
systemid=7710468963763503548
tablespaces=None
timeline=1
version=150018
xlog_segment_size=16777216
"""


def seg(timeline, log, segment, suffix='.gz'):
    return '%08X%08X%08X%s' % (timeline, log, segment, suffix)


def wal_object(name, size=100, modified=NOW):
    wal = barman_wal.parse_wal_name(name)
    wal.update(key='p/srv/wals/%s/%s' % (name[:16], name), size=size, last_modified=modified)
    return wal


def backup(backup_id, status='DONE', begin_wal=None, end_wal=None, end_time=None, begin_time=None, keep=None,
           readable=True, segment_size=16777216, error=None):
    return dict(backup_id=backup_id, backup_name=None, status=status, error=error, begin_time=begin_time,
                end_time=end_time, begin_wal=begin_wal, end_wal=end_wal, timeline=1, keep=keep, readable=readable,
                xlog_segment_size=segment_size, info_modified=None, prefix='p/srv/base/%s/' % backup_id,
                stored_bytes=10, objects=2)


def scan_of(names, backups=(), segment_size=16777216, gap_limit=100):
    scan = barman_wal.WalScan(segment_size, backups, gap_limit)
    for name in names:
        scan.add(wal_object(name))
    return scan


# -- destination paths -------------------------------------------------------------------------------------------

@pytest.mark.parametrize('path, expected', [
    ('s3://bucket/a/b', ('bucket', 'a/b')),
    ('s3://bucket/a/b/', ('bucket', 'a/b')),
    ('s3://kilobase/barman/backup', ('kilobase', 'barman/backup')),
    ('s3://bucket', ('bucket', '')),
    ('s3://bucket/', ('bucket', '')),
])
def test_parse_destination_path(path, expected):
    assert bc.parse_destination_path(path) == expected


@pytest.mark.parametrize('path', ['bucket/prefix', 'https://bucket/prefix', 's3://', 's3:///prefix', '', None, 's3://b/x?y'])
def test_parse_destination_path_errors_name_the_option(path):
    with pytest.raises(PgopsError, match='destination_path'):
        bc.parse_destination_path(path)


def test_catalog_prefixes_and_server_name_check():
    catalog = bc.BarmanCatalog(None, 's3://bucket/barman/backup/', 'pg-main')
    assert (catalog.bucket, catalog.prefix, catalog.root_prefix) == ('bucket', 'barman/backup', 'barman/backup/')
    assert catalog.server_prefix == 'barman/backup/pg-main/'
    assert (catalog.base_prefix, catalog.wal_prefix) == ('barman/backup/pg-main/base/', 'barman/backup/pg-main/wals/')
    assert bc.BarmanCatalog(None, 's3://bucket', 'pg').server_prefix == 'pg/'
    for name in ('', 'a/b', ' pg'):
        with pytest.raises(PgopsError, match='server_name'):
            bc.BarmanCatalog(None, 's3://bucket/x', name)


# -- WAL names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name, expected', [
    ('000000010000000A000000FF', dict(kind='segment', timeline=1, log=10, seg=255, compression=None)),
    ('000000010000000A000000FF.gz', dict(kind='segment', timeline=1, log=10, seg=255, compression='gz')),
    ('0000000200000000000000A3.zst', dict(kind='segment', timeline=2, log=0, seg=0xA3, compression='zst')),
    ('00000002.history', dict(kind='history', timeline=2, log=None, seg=None, compression=None)),
    ('00000002.history.bz2', dict(kind='history', timeline=2, log=None, seg=None, compression='bz2')),
    ('000000010000000000000002.00000028.backup.gz', dict(kind='backup', timeline=1, log=0, seg=2, compression='gz')),
    ('000000010000000000000007.partial', dict(kind='partial', timeline=1, log=0, seg=7, compression=None)),
    ('000000010000000000000007.partial.lz4', dict(kind='partial', timeline=1, log=0, seg=7, compression='lz4')),
    ('p/srv/wals/0000000100000003/000000010000000300000004.xz', dict(kind='segment', timeline=1, log=3, seg=4, compression='xz')),
])
def test_parse_wal_name(name, expected):
    wal = barman_wal.parse_wal_name(name)
    assert dict((k, wal[k]) for k in expected) == expected
    assert not wal['name'].endswith(('.gz', '.bz2', '.xz', '.zst', '.lz4', '.snappy'))


@pytest.mark.parametrize('name', ['backup.info', '00000001000000000000000', '000000010000000000000001.gz.gz',
                                  '000000010000000000000001.tmp', '0000000G0000000000000001', '00000001.history.zip',
                                  '000000010000000000000001.00000028.backup.partial', ''])
def test_parse_wal_name_rejects(name):
    assert barman_wal.parse_wal_name(name) is None


def test_wal_names_agree_with_barman():
    xlog = pytest.importorskip('barman.xlog')
    cloud = pytest.importorskip('barman.cloud')
    names = ['000000010000000A000000FF', '00000002.history', '000000010000000000000002.00000028.backup',
             '000000010000000000000007.partial', 'backup.info', '0000000100000000000000', '00000001.history.bak',
             'abcdef0100000000000000FF']
    for name in names:
        for suffix in [''] + list(cloud.ALLOWED_COMPRESSIONS) + ['.zip']:
            candidate = name + suffix
            stem, ext = os.path.splitext(candidate)
            barman_says = xlog.is_any_xlog_file(candidate) or (ext in cloud.ALLOWED_COMPRESSIONS and xlog.is_any_xlog_file(stem))
            assert (barman_wal.parse_wal_name(candidate) is not None) == barman_says, candidate
    assert sorted(suffix.lstrip('.') for suffix in cloud.ALLOWED_COMPRESSIONS) == sorted(s.lstrip('.') for s in barman_wal.COMPRESSION_SUFFIXES)


@pytest.mark.parametrize('size', [1 << 20, 16 << 20, 64 << 20, 1 << 30])
def test_segment_numbering_matches_barman(size):
    xlog = pytest.importorskip('barman.xlog')
    per_log = barman_wal.segments_per_log(size)
    last = '%08X%08X%08X' % (1, 7, per_log - 1)
    following = xlog.next_segment_name(last, size)
    assert following == '000000010000000800000000'
    position = barman_wal.segment_position(barman_wal.parse_wal_name(last), per_log)
    assert barman_wal.segment_name(1, position + 1, per_log) == following


# -- backup.info -------------------------------------------------------------------------------------------------

def test_parse_backup_info_of_barman_cloud():
    info = bc.parse_backup_info(BACKUP_INFO.encode('utf-8'))
    assert info['status'] == 'DONE'
    assert info['begin_time'] == datetime.datetime(2026, 11, 21, 3, 57, 39, 937949, tzinfo=UTC)
    assert info['end_time'] == datetime.datetime(2026, 11, 21, 3, 57, 42, 858607, tzinfo=UTC)
    assert (info['begin_wal'], info['end_wal'], info['begin_xlog'], info['end_xlog']) == \
        ('000000010000000000000005', '000000010000000000000005', '0/5000028', '0/5000100')
    assert (info['timeline'], info['version'], info['xlog_segment_size'], info['cluster_size']) == (1, 150018, 16777216, 26767049)
    assert info['size'] is None and info['error'] is None and info['deduplicated_size'] is None
    assert info['systemid'] == '7710468963763503548'
    assert info['copy_stats'].startswith('{')


def test_parse_backup_info_written_by_barman_backupinfo():
    pytest.importorskip('barman.output')  # imported first: barman.infofile and barman.output import each other
    infofile = pytest.importorskip('barman.infofile')
    written = infofile.BackupInfo(backup_id='20251126T091549', status='FAILED', error='failure uploading data',
                                  begin_time=datetime.datetime(2025, 11, 26, 9, 15, 49, 123456, tzinfo=UTC),
                                  begin_wal='000000010000000A0000002B', timeline=2, size=1234, backup_name='nightly')
    stream = io.BytesIO()
    written.save(file_object=stream)
    info = bc.parse_backup_info(stream.getvalue())
    assert (info['status'], info['error'], info['timeline'], info['size'], info['backup_name']) == \
        ('FAILED', 'failure uploading data', 2, 1234, 'nightly')
    assert info['begin_time'] == datetime.datetime(2025, 11, 26, 9, 15, 49, 123456, tzinfo=UTC)
    assert info['end_time'] is None


@pytest.mark.parametrize('text, field', [
    ('status=DONE\nthis line is broken\n', 'line 2'),
    ('status=DONE\nend_time=yesterday\n', 'end_time'),
    ('timeline=one\n', 'timeline'),
    (b'status=\xff\xfe\n', 'UTF-8'),
])
def test_parse_backup_info_errors(text, field):
    with pytest.raises(PgopsError, match=field):
        bc.parse_backup_info(text)


@pytest.mark.parametrize('value, expected', [
    ('2025-11-26 09:15:49.123456+00:00', datetime.datetime(2025, 11, 26, 9, 15, 49, 123456, tzinfo=UTC)),
    ('2025-11-26T10:15:49+01:00', datetime.datetime(2025, 11, 26, 9, 15, 49, tzinfo=UTC)),
    ('2025-11-26T09:15:49Z', datetime.datetime(2025, 11, 26, 9, 15, 49, tzinfo=UTC)),
    ('2025-11-26 09:15:49.5+0000', datetime.datetime(2025, 11, 26, 9, 15, 49, 500000, tzinfo=UTC)),
    ('2025-11-26 09:15:49', datetime.datetime(2025, 11, 26, 9, 15, 49, tzinfo=UTC)),
])
def test_parse_time(value, expected):
    assert bc.parse_time(value) == expected


@pytest.mark.parametrize('annotation, expected', [(None, None), ('full', 'full'), ('standalone', 'standalone'),
                                                  ('standalone\n', 'standalone'), ('', 'full'), ('other', 'full')])
def test_keep_target(annotation, expected):
    assert bc.keep_target(annotation) == expected


# -- gaps --------------------------------------------------------------------------------------------------------

def test_no_gap_across_a_log_id_boundary():
    scan = scan_of([seg(1, 0, 0xFE), seg(1, 0, 0xFF), seg(1, 1, 0), seg(1, 1, 1)])
    assert scan.gap_count == 0
    summary = scan.summary()
    assert (summary['first_segment'], summary['last_segment']) == ('0000000100000000000000FE', '000000010000000100000001')
    assert summary['segments'] == 4 and summary['count'] == 4 and summary['bytes'] == 400


def test_gap_across_a_log_id_boundary():
    scan = scan_of([seg(1, 0, 0xFE), seg(1, 1, 0x01)])
    assert scan.gap_count == 1 and scan.missing_segments == 2
    assert scan.gaps == [dict(timeline=1, after='0000000100000000000000FE', before='000000010000000100000001',
                              missing=2, impact='none')]


def test_gap_with_larger_segments():
    # 64 MiB segments: 64 per log id, the last one is ...3F.
    names = [seg(1, 0, 0x3E), seg(1, 0, 0x3F), seg(1, 1, 0x00), seg(1, 1, 0x02)]
    scan = scan_of(names, segment_size=64 << 20)
    assert scan.gap_count == 1 and scan.gaps[0]['after'] == '000000010000000100000000' and scan.gaps[0]['missing'] == 1
    # Read with the 16 MiB numbering, ...3F -> ...00 of the next log id would look like 192 missing segments.
    assert scan_of(names).missing_segments == 192 + 1


def test_timelines_history_and_other_files():
    names = [seg(1, 0, 1), seg(1, 0, 2), '000000010000000000000002.00000028.backup.gz', seg(1, 0, 3, '.partial'),
             '00000002.history.gz', seg(2, 0, 3), seg(2, 0, 4)]
    scan = scan_of(names)
    scan.add(dict(kind=None, size=7, name='junk.txt', timeline=None, log=None, seg=None, last_modified=NOW))
    summary = scan.summary()
    assert summary['gap_count'] == 0, 'a new timeline does not continue the old one'
    assert summary['timelines'] == [1, 2] and summary['history_files'] == ['00000002.history']
    assert (summary['count'], summary['segments'], summary['backup_labels'], summary['partial_files']) == (7, 4, 1, 1)
    assert (summary['other_objects'], summary['other_bytes']) == (1, 7)
    assert (summary['first_segment'], summary['last_segment']) == ('000000010000000000000001', '000000020000000000000004')


def test_gap_limit_keeps_counting():
    names = [seg(1, 0, n) for n in range(0, 40, 2)]  # 20 segments, 19 gaps of one segment
    scan = scan_of(names, gap_limit=5)
    assert len(scan.gaps) == 5 and scan.gap_count == 19 and scan.missing_segments == 19
    assert scan.summary()['gaps_listed'] == 5
    assert scan_of(names, gap_limit=0).gaps == []


def test_duplicate_segment_with_two_compressions_is_no_gap():
    scan = scan_of([seg(1, 0, 1, ''), seg(1, 0, 1), seg(1, 0, 2)])
    assert scan.gap_count == 0 and scan.segments == 3


def test_gap_impacts_and_backup_wal_missing():
    backups = [backup('20260101T000000', begin_wal=seg(1, 0, 2, ''), end_wal=seg(1, 0, 4, '')),
               backup('20260102T000000', begin_wal=seg(1, 0, 0x10, ''), end_wal=seg(1, 0, 0x11, '')),
               backup('20260103T000000', status='FAILED', begin_wal=seg(1, 0, 0x20, ''), end_wal=seg(1, 0, 0x20, ''))]
    # 01 | 02 . 04 (03 missing: inside backup 1) | 05 . 08 (after the oldest backup: pitr) | 10 (11 missing) |
    names = [seg(1, 0, n) for n in (0, 2, 4, 5, 8, 0x10)]
    scan = scan_of(names, backups)
    assert [(g['after'][-2:], g['before'][-2:], g['missing'], g['impact']) for g in scan.gaps] == [
        ('00', '02', 1, 'none'), ('02', '04', 1, 'backup'), ('05', '08', 2, 'pitr'), ('08', '10', 7, 'pitr')]
    assert scan.backup_wal_missing() == {'20260101T000000': 1, '20260102T000000': 1}
    assert scan.gap_impacts == dict(backup=1, pitr=2, none=1)


def test_standalone_backups_do_not_start_the_pitr_window():
    backups = [backup('20260101T000000', begin_wal=seg(1, 0, 2, ''), end_wal=seg(1, 0, 2, ''), keep='standalone'),
               backup('20260105T000000', begin_wal=seg(1, 0, 9, ''), end_wal=seg(1, 0, 9, ''))]
    scan = scan_of([seg(1, 0, 2), seg(1, 0, 9), seg(1, 0, 0xB)], backups)
    assert [g['impact'] for g in scan.gaps] == ['none', 'pitr']
    assert scan.backup_wal_missing() == {'20260101T000000': 0, '20260105T000000': 0}


def test_backup_wal_missing_when_archive_starts_late_or_stops_early():
    backups = [backup('20260101T000000', begin_wal=seg(1, 0, 1, ''), end_wal=seg(1, 0, 3, '')),
               backup('20260102T000000', begin_wal=seg(1, 0, 8, ''), end_wal=seg(1, 0, 9, '')),
               backup('20260103T000000', begin_wal=seg(2, 0, 8, ''), end_wal=seg(2, 0, 8, ''))]
    scan = scan_of([seg(1, 0, n) for n in (2, 3, 4, 5, 6, 7, 8)], backups)
    assert scan.backup_wal_missing() == {'20260101T000000': 1, '20260102T000000': 1, '20260103T000000': 1}


# -- verdict -----------------------------------------------------------------------------------------------------

def hours_ago(hours):
    return NOW - datetime.timedelta(hours=hours)


def verdict_of(backups, names=None, stale=(), unreadable=0, modified=None):
    names = [seg(1, 0, n) for n in range(1, 6)] if names is None else names
    scan = barman_wal.WalScan(16777216, backups, 100)
    for name in names:
        scan.add(wal_object(name, modified=modified or hours_ago(1)))
    verdict, reasons, latest = health.assess(backups, scan, list(stale), NOW, 48, 168, unreadable)
    return verdict, reasons, latest


def done(backup_id, hours, begin=2, end=3):
    return backup(backup_id, end_time=hours_ago(hours), begin_time=hours_ago(hours + 0.1),
                  begin_wal=seg(1, 0, begin, ''), end_wal=seg(1, 0, end, ''))


def test_verdict_ok():
    verdict, reasons, latest = verdict_of([done('20260101T000000', 100), done('20260130T000000', 3)])
    assert (verdict, reasons, latest['backup_id']) == ('ok', [], '20260130T000000')


def test_verdict_critical_without_done_backup():
    verdict, reasons, latest = verdict_of([backup('20260130T000000', status='FAILED', begin_time=hours_ago(2))])
    assert verdict == 'critical' and latest is None
    assert 'no completed (DONE) backup' in reasons[0]
    assert verdict_of([])[0] == 'critical'
    unreadable = backup('20260130T000000', status=None, readable=False, end_time=hours_ago(1))
    assert verdict_of([unreadable], unreadable=1)[0] == 'critical'


@pytest.mark.parametrize('hours, verdict', [(47.9, 'ok'), (48.1, 'warning'), (167.9, 'warning'), (168.1, 'critical')])
def test_verdict_by_age_of_newest_done_backup(hours, verdict):
    got, reasons, latest = verdict_of([done('20260101T000000', 500), done('20260120T000000', hours)],
                                      modified=hours_ago(min(hours, 40)))
    assert got == verdict
    if verdict != 'ok':
        assert reasons[0].startswith('the newest DONE backup 20260120T000000 is %.1f hours old' % hours)


def test_verdict_critical_when_newest_backup_lacks_its_wal():
    verdict, reasons, latest = verdict_of([done('20260130T000000', 2, begin=2, end=4)], names=[seg(1, 0, n) for n in (1, 2, 4, 5)])
    assert verdict == 'critical'
    assert 'cannot be restored: 1 WAL segment(s)' in reasons[0]


def test_verdict_warnings():
    # No WAL at all: the backup cannot be restored either (critical), and the archive is empty (warning).
    verdict, reasons, latest = verdict_of([done('20260130T000000', 2)], names=[])
    assert verdict == 'critical' and len(reasons) == 2 and 'cannot be restored: 2 WAL segment(s)' in reasons[0]
    assert reasons[1] == 'no WAL file in the archive: WAL archiving is not writing to this server directory'
    verdict, reasons, latest = verdict_of([done('20260130T000000', 2)], modified=hours_ago(60))
    assert verdict == 'warning' and 'newest WAL file was archived 60.0 hours ago' in reasons[0]
    verdict, reasons, latest = verdict_of([done('20260130T000000', 2)], modified=hours_ago(4))
    assert verdict == 'warning' and 'WAL archiving lags behind' in reasons[0]
    verdict, reasons, latest = verdict_of([done('20260101T000000', 30, 2, 2), done('20260130T000000', 2, 5, 5)],
                                          names=[seg(1, 0, n) for n in (2, 3, 5)])
    assert verdict == 'warning' and reasons == ['1 gap(s) in the WAL archive after the oldest backup usable for point-in-time '
                                                'recovery: recovery cannot replay across them']
    stale = health.stale_backups([backup('20260129T000000', status='FAILED', begin_time=hours_ago(30), error='boom')], NOW, 24)
    verdict, reasons, latest = verdict_of([done('20260130T000000', 2)], stale=stale, unreadable=2)
    assert verdict == 'warning' and '1 stale backup(s)' in reasons[0] and '20260129T000000' in reasons[0]
    assert reasons[1] == '2 backup directories without a readable backup.info'


def test_stale_backups():
    backups = [backup('a', status='FAILED', begin_time=hours_ago(1), error='disk full'),
               backup('b', status='STARTED', begin_time=hours_ago(23)),
               backup('c', status='STARTED', begin_time=hours_ago(25)),
               backup('d', status='DONE', begin_time=hours_ago(100), end_time=hours_ago(99))]
    stale = health.stale_backups(backups, NOW, 24)
    assert [(s['backup_id'], s['status']) for s in stale] == [('a', 'FAILED'), ('c', 'STARTED')]
    assert stale[0]['reason'] == 'FAILED: disk full' and stale[1]['age_seconds'] == 25 * 3600


def test_segment_size_of_newest_readable_backup():
    assert barman_wal.segment_size_of([]) == 16 << 20
    assert barman_wal.segment_size_of([backup('a', segment_size=64 << 20), backup('b', segment_size=None)]) == 64 << 20
    assert barman_wal.segment_size_of([backup('a', segment_size=12345)]) == 16 << 20


@pytest.mark.parametrize('change, match', [
    (dict(backup_age_warning=200), 'must not exceed backup_age_critical'),
    (dict(backup_age_critical=0), 'backup_age_critical must be a number of hours above 0'),
    (dict(stale_started_hours=-1), 'stale_started_hours'),
    (dict(wal_gap_limit=-1), 'wal_gap_limit'),
    (dict(now='last tuesday'), 'now must be an ISO 8601 time'),
])
def test_option_errors(change, match):
    params = dict((name, option.get('default')) for name, option in health.argument_spec().items())
    params.update(destination_path='s3://bucket/barman', server_name='pg', **change)
    with pytest.raises(PgopsError, match=match):
        health.report_catalog(params, client=object())


# -- Prometheus --------------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')


def parse_exposition(text):
    """{(name, labels): value} of every sample; checks HELP/TYPE lines come before each metric's samples."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith('# TYPE '):
            typed.add(line.split()[2])
            continue
        if line.startswith('#'):
            continue
        match = SAMPLE.match(line)
        assert match, 'not a sample line: %r' % line
        assert match.group(1) in typed
        labels = tuple(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match.group(2)))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def result_for(latest=True):
    backups = [dict(backup_id='a', status='DONE', readable=True), dict(backup_id='b', status='FAILED', readable=True),
               dict(backup_id='c', status=None, readable=False)]
    return dict(
        verdict='warning', backups=backups, stale_backups=[dict(backup_id='b')], other_servers=[dict(name='old')],
        latest_backup=dict(backup_id='a', timestamp=1769830000.5, age_seconds=3600) if latest else None,
        wal=dict(count=10, bytes=2048, newest_modified='2026-01-31T05:00:00Z', gap_count=1, missing_segments=3),
        storage=dict(directories=[dict(kind='base', bytes=100, objects=2), dict(kind='wals', bytes=2048, objects=10),
                                  dict(kind='other', bytes=5, objects=1), dict(kind='other', bytes=6, objects=2)]))


def test_prometheus_text():
    text = health.prometheus_text(result_for(), 'pg-"main"', NOW)
    samples = parse_exposition(text)
    server = ('server', 'pg-\\"main\\"')
    assert samples[('pgops_barman_verdict', (server,))] == 1
    assert samples[('pgops_barman_last_backup_timestamp_seconds', (server,))] == 1769830000.5
    assert samples[('pgops_barman_backup_age_seconds', (server,))] == 3600
    assert samples[('pgops_barman_backups', (server, ('status', 'DONE')))] == 1
    assert samples[('pgops_barman_backups', (server, ('status', 'FAILED')))] == 1
    assert samples[('pgops_barman_backups', (server, ('status', 'UNREADABLE')))] == 1
    assert samples[('pgops_barman_wal_objects', (server,))] == 10
    assert samples[('pgops_barman_wal_bytes', (server,))] == 2048
    assert samples[('pgops_barman_wal_gaps', (server,))] == 1
    assert samples[('pgops_barman_storage_bytes', (server, ('directory', 'other')))] == 11
    assert samples[('pgops_barman_storage_objects', (server, ('directory', 'other')))] == 3
    assert samples[('pgops_barman_last_wal_timestamp_seconds', (server,))] == NOW.timestamp() - 3600
    assert samples[('pgops_barman_check_timestamp_seconds', (server,))] == NOW.timestamp()
    assert text.endswith('\n') and text.count('# HELP ') == text.count('# TYPE ') == len(health.METRICS)


def test_prometheus_text_without_backup():
    samples = parse_exposition(health.prometheus_text(result_for(latest=False), 'pg', NOW))
    assert samples[('pgops_barman_backup_age_seconds', (('server', 'pg'),))] == float('inf')
    assert samples[('pgops_barman_last_backup_timestamp_seconds', (('server', 'pg'),))] == 0
