# -*- coding: utf-8 -*-
"""Bundle format and store (local directory), names, retention, file modes, left-over partials, and the client-program
environment: no servers."""

from __future__ import annotations

import datetime
import io
import os
import stat
import subprocess
import tarfile
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle, dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import _host, partial_path, run_tag, sha256_file
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import failure, run_program
from ansible_collections.pgops.resilience.plugins.module_utils._core.work import (
    _partial_owner, make_staging_directory, make_work_directory, partial_is_stale)
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import find_client_program
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from tests.requirements import tool_missing
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import (
    libpq_environment, postgres_argument_spec)
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import check_file_mode


def _tree(root):
    (root / 'records.dir').mkdir(parents=True)
    (root / 'records.dir' / 'toc.dat').write_bytes(b'\x00toc' * 1000)
    (root / 'records.dir' / '3001.dat.gz').write_bytes(os.urandom(5000))
    (root / 'globals.sql').write_text('CREATE ROLE app;\n')
    return root


@pytest.fixture
def packed(tmp_path):
    root = _tree(tmp_path / 'root')
    store = tmp_path / 'store'
    store.mkdir()
    return bundle.pack(str(root), str(store / 'nightly-20261121-0600.tar.gz'), 'logical-dump', {'database': 'records'})


def test_pack_writes_archive_checksum_and_manifest(packed, tmp_path):
    store = tmp_path / 'store'
    assert sorted(os.listdir(store)) == ['nightly-20261121-0600.tar.gz', 'nightly-20261121-0600.tar.gz.sha256']
    assert bundle.read_checksum_file(packed['path'] + '.sha256') == packed['sha256'] == sha256_file(packed['path'])[0]
    assert packed['bytes'] == os.path.getsize(packed['path'])
    members = packed['manifest']['members']
    assert sorted(members) == ['globals.sql', 'records.dir/3001.dat.gz', 'records.dir/toc.dat']
    assert members['globals.sql']['bytes'] == 17
    assert packed['manifest']['kind'] == 'logical-dump' and packed['manifest']['info'] == {'database': 'records'}


def test_extract_verified_round_trip(packed, tmp_path):
    manifest = bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert (tmp_path / 'out' / 'globals.sql').read_text() == 'CREATE ROLE app;\n'
    assert (tmp_path / 'out' / 'records.dir' / 'toc.dat').read_bytes() == (tmp_path / 'root' / 'records.dir' / 'toc.dat').read_bytes()
    assert manifest == packed['manifest']


def _rebuild(path, change):
    """Rewrite the archive through ``change(name, data) -> list of (name, data)`` and write a matching .sha256."""
    out = io.BytesIO()
    with tarfile.open(path) as source, tarfile.open(fileobj=out, mode='w:gz') as target:
        for info in source:
            data = source.extractfile(info).read() if info.isfile() else b''
            for name, new in change(info.name, data):
                item = tarfile.TarInfo(name)
                item.size = len(new)
                target.addfile(item, io.BytesIO(new))
    with open(path, 'wb') as handle:
        handle.write(out.getvalue())
    digest, dummy = sha256_file(path)
    with open(path + '.sha256', 'w', encoding='ascii') as handle:
        handle.write(digest + '\n')


@pytest.mark.parametrize('change, message', [
    (lambda n, d: [(n, b'tampered' if n == 'globals.sql' else d)], 'member globals.sql differs from the manifest'),
    (lambda n, d: [] if n == 'records.dir/toc.dat' else [(n, d)], 'member records.dir/toc.dat is listed in the manifest but missing'),
    (lambda n, d: [(n, d)] + ([('extra.sql', b'x')] if n == 'globals.sql' else []), 'member extra.sql is in the archive but not in the manifest'),
    (lambda n, d: [('../escape', d) if n == 'globals.sql' else (n, d)], "member '../escape' would be written outside"),
    (lambda n, d: [] if n == 'manifest.json' else [(n, d)], 'it holds no manifest.json'),
])
def test_tampered_bundles_are_refused_and_nothing_is_left(packed, tmp_path, change, message):
    _rebuild(packed['path'], change)
    with pytest.raises(PgopsError) as refused:
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert message in refused.value.msg and 'is refused' in refused.value.msg
    assert os.listdir(tmp_path / 'out') == []
    assert not (tmp_path / 'escape').exists()


def test_archive_checksum_mismatch_and_missing_checksum_file(packed, tmp_path):
    with open(packed['path'], 'r+b') as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(PgopsError, match='is corrupt: its sha256 differs from the one'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    os.unlink(packed['path'] + '.sha256')
    with pytest.raises(PgopsError, match=r'has no nightly-20261121-0600.tar.gz.sha256 beside it'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))


def test_extract_refuses_a_non_empty_destination(packed, tmp_path):
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'keep.txt').write_text('mine')
    with pytest.raises(PgopsError, match='not empty'):
        bundle.extract_verified(packed['path'], str(tmp_path / 'out'))
    assert (tmp_path / 'out' / 'keep.txt').read_text() == 'mine'


def test_pack_refuses_links(tmp_path):
    root = _tree(tmp_path / 'root')
    os.symlink('/etc/passwd', root / 'link')
    with pytest.raises(PgopsError, match='not a regular file'):
        bundle.pack(str(root), str(tmp_path / 'b.tar.gz'), 'logical-dump')
    assert not (tmp_path / 'b.tar.gz').exists()


def test_names_are_unique_per_run_and_sortable_by_time():
    when = datetime.datetime(2026, 11, 21, 6, 0, 12, 345678, tzinfo=datetime.timezone(datetime.timedelta(hours=-5)))
    assert bundle.bundle_name('nightly', when, run_id='0123abcd') == 'nightly-20261121-110012345-0123abcd.tar.gz'  # UTC
    assert bundle.bundle_name('basebackup', when, '.bundle.tar.gz', '0123abcd') == \
        'basebackup-20261121-110012345-0123abcd.bundle.tar.gz'
    same_millisecond = set(bundle.bundle_name('nightly', when) for dummy in range(50))
    assert len(same_millisecond) == 50
    pattern = bundle.name_pattern('nightly')
    assert all(pattern.match(n) for n in same_millisecond)
    assert pattern.match('nightly-20261121-0600.tar.gz').group(1) == '20261121-0600'
    assert pattern.match('nightly-20261121-110012345-0123abcd.tar.gz').group(1) == '20261121-110012345'
    assert pattern.match('nightly-20261121-110012-0123abcd.tar.gz').group(1) == '20261121-110012'
    # Runs of one second are ordered by their millisecond: "newest" is the last started.
    later = when + datetime.timedelta(milliseconds=1)
    names = [bundle.bundle_name('nightly', later, run_id='00000000'), bundle.bundle_name('nightly', when, run_id='ffffffff')]
    entries = [dict(name=n, time=pattern.match(n).group(1)) for n in names]
    assert [e['name'] for e in sorted(entries, key=bundle.bundle_sort_key)] == names[::-1]
    for wrong in ('nightly-20261121-110012.tar.gz', 'nightly-20261121-0600-0123abcd.tar.gz', 'nightly-2026.tar.gz',
                  'nightly-20261121-110012-0123ABCD.tar.gz', 'nightly-20261121-110012-0123abcd.tar.gz.sha256'):
        assert not pattern.match(wrong), wrong
    with pytest.raises(PgopsError, match='8 lowercase hex'):
        bundle.bundle_name('nightly', when, run_id='x')


OLD_AND_NEW = ['nightly-20261119-0600.tar.gz', 'nightly-20261120-055959-ffffffff.tar.gz', 'nightly-20261120-0600.tar.gz',
               'nightly-20261120-060000-00000000.tar.gz', 'nightly-20261120-060001-00000000.tar.gz',
               'nightly-20261121-0600.tar.gz']


def test_selection_and_retention_over_old_and_new_names(tmp_path):
    for name in OLD_AND_NEW[::-1] + ['nightly-2026.tar.gz', 'records_dump_20251102.tar.gz', 'nightly-20261121-0600.tar.gz.sha256']:
        (tmp_path / name).write_bytes(b'x')
    assert sorted(OLD_AND_NEW) == OLD_AND_NEW  # names sort in time order, both forms together
    pattern = bundle.name_pattern('nightly')
    store = bundle.BundleStore.from_params({'directory': str(tmp_path)})
    bundles = store.list(pattern)
    assert [b['name'] for b in bundles] == OLD_AND_NEW
    assert bundle.select_bundle(bundles)['name'] == 'nightly-20261121-0600.tar.gz'
    assert bundle.select_bundle(bundles, 'nightly-20261120-0600.tar.gz')['name'] == 'nightly-20261120-0600.tar.gz'
    with pytest.raises(PgopsError, match='is not in'):
        bundle.select_bundle(bundles, 'nightly-20200101-0000.tar.gz', str(tmp_path))
    with pytest.raises(PgopsError, match='no bundle found'):
        bundle.select_bundle([], None, str(tmp_path))
    assert [b['name'] for b in bundle.expired_bundles(bundles, 4)] == OLD_AND_NEW[:2]
    assert bundle.expired_bundles(bundles, 0) == [] and bundle.expired_bundles(bundles, 9) == []
    with pytest.raises(PgopsError, match='keep must be 0'):
        bundle.expired_bundles(bundles, -1)
    assert store.apply_retention(pattern, 1, check_mode=True) == OLD_AND_NEW[:-1] and len(os.listdir(tmp_path)) == 9
    # A run deletes neither its own bundle nor a newer one (a concurrent run's), whatever keep says.
    own = 'nightly-20261120-060000-00000000.tar.gz'
    assert store.apply_retention(pattern, 1, own=own) == OLD_AND_NEW[:3]
    assert store.apply_retention(pattern, 1) == OLD_AND_NEW[3:5]
    assert sorted(os.listdir(tmp_path)) == ['nightly-2026.tar.gz', 'nightly-20261121-0600.tar.gz',
                                            'nightly-20261121-0600.tar.gz.sha256', 'records_dump_20251102.tar.gz']


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_everything_written_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        root = _tree(tmp_path / 'root')
        assert _mode(root / 'globals.sql') == 0o644
        store = tmp_path / 'store'
        store.mkdir()
        made = bundle.pack(str(root), str(store / 'nightly-20261121-060000-0123abcd.tar.gz'), 'logical-dump')
        assert _mode(made['path']) == 0o600 and _mode(made['path'] + '.sha256') == 0o600
        with tarfile.open(made['path']) as tar:
            assert set(m.mode for m in tar.getmembers()) == {0o600}
        bundle.extract_verified(made['path'], str(tmp_path / 'out' / 'bundle'))
        assert _mode(tmp_path / 'out' / 'bundle') == 0o700
        assert _mode(tmp_path / 'out' / 'bundle' / 'records.dir') == 0o700
        for name in ('globals.sql', 'records.dir/toc.dat', 'records.dir/3001.dat.gz'):
            assert _mode(tmp_path / 'out' / 'bundle' / name) == 0o600, name
        group = bundle.pack(str(root), str(store / 'nightly-20261121-060001-0123abcd.tar.gz'), 'logical-dump', mode=0o640)
        assert _mode(group['path']) == 0o640 and _mode(group['path'] + '.sha256') == 0o640
        staging = make_staging_directory(str(tmp_path), 'nightly-20261121-060002-0123abcd.tar.gz')
        assert _mode(staging) == 0o700
        run_program(['sh', '-c', 'echo secret > "$0"', str(tmp_path / 'by_a_program')], {'PATH': os.environ['PATH']},
                    'sh')
        assert _mode(tmp_path / 'by_a_program') == 0o600
    finally:
        os.umask(previous)


@pytest.mark.parametrize('value, mode', [(None, 0o600), ('0600', 0o600), ('0640', 0o640), ('660', 0o660), (0o640, 0o640)])
def test_file_mode_option(value, mode):
    assert check_file_mode(value) == mode


@pytest.mark.parametrize('value', ['0644', '0666', '0700', 640, 'rw', '0400'])
def test_file_mode_option_refuses_what_others_could_read(value):
    with pytest.raises(PgopsError, match="mode must be '0600', '0640' or '0660'"):
        check_file_mode(value)


def test_pack_never_replaces_an_existing_bundle(tmp_path):
    root = _tree(tmp_path / 'root')
    dest = tmp_path / 'nightly-20261121-060000-0123abcd.tar.gz'
    dest.write_bytes(b'the other run\'s bundle')
    with pytest.raises(PgopsError, match='already exists; a bundle is never overwritten'):
        bundle.pack(str(root), str(dest), 'logical-dump')
    assert dest.read_bytes() == b'the other run\'s bundle'
    assert sorted(os.listdir(tmp_path)) == ['nightly-20261121-060000-0123abcd.tar.gz', 'root']


def test_verify_writes_nothing_and_refuses_a_corrupt_bundle(packed, tmp_path):
    store = bundle.BundleStore.from_params({'directory': str(tmp_path / 'store')})
    before = sorted(os.listdir(tmp_path / 'store'))
    assert store.verify('nightly-20261121-0600.tar.gz') == packed['manifest']
    _rebuild(packed['path'], lambda n, d: [(n, b'tampered' if n == 'globals.sql' else d)])
    with pytest.raises(PgopsError, match='member globals.sql differs from the manifest'):
        store.verify('nightly-20261121-0600.tar.gz')
    assert sorted(os.listdir(tmp_path / 'store')) == before
    os.unlink(packed['path'] + '.sha256')
    with pytest.raises(PgopsError, match='has no nightly-20261121-0600.tar.gz.sha256 beside it'):
        store.verify('nightly-20261121-0600.tar.gz')


def _dead_pid():
    proc = subprocess.Popen(['true'])
    proc.wait()
    return proc.pid


def _age(path, seconds):
    when = time.time() - seconds
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            os.utime(os.path.join(top, name), (when, when))
    os.utime(path, (when, when))


def test_stale_partials_are_removed_and_nothing_else(tmp_path):
    host = _host()
    name = 'nightly-20261121-060000-0123abcd.tar.gz'
    entries = {
        'dead': '.partial-%s.pid%d@%s.00000001' % (name, _dead_pid(), host),
        'alive': '.partial-%s.pid%d@%s.00000002' % (name, os.getpid(), host),
        'other_host_young': '.partial-%s.pid1@elsewhere.00000003' % name,
        'other_host_old': '.partial-%s.pid2@elsewhere.00000004' % name,
        'old_style_old': '.partial-nightly-20261120-0600.tar.gz-abc_12xy',
        'old_style_young': '.partial-nightly-20261120-0601.tar.gz-abc_12xy',
        'basebackup': '.partial-basebackup-20261120-0600.bundle.tar.gz-abc_12xy',
        'not_ours': '.partial-something-else',
    }
    for key, entry in entries.items():
        os.mkdir(tmp_path / entry)
        (tmp_path / entry / 'toc.dat').write_bytes(b'dump')
        if key.endswith('old') or key in ('basebackup', 'not_ours'):
            _age(tmp_path / entry, 7200)
    dead_archive = '.partial-%s.pid%d@%s.00000005' % (name, _dead_pid(), host)
    (tmp_path / dead_archive).write_bytes(b'half an archive')
    # A link named like a partial (to a directory that is not ours to delete), and a dead run's name on it.
    victim = tmp_path / 'victim'
    victim.mkdir()
    (victim / 'precious').write_bytes(b'keep')
    link = '.partial-%s.pid%d@%s.00000006' % (name, _dead_pid(), host)
    os.symlink(victim, tmp_path / link)

    would, problems = bundle.remove_stale_partials(str(tmp_path), 'nightly', '.tar.gz', 3600, check_mode=True)
    expected = sorted(str(tmp_path / e) for e in (entries['dead'], entries['other_host_old'], entries['old_style_old'],
                                                  dead_archive))
    assert would == expected and problems == []
    assert all((tmp_path / e).exists() for e in entries.values())
    removed, problems = bundle.remove_stale_partials(str(tmp_path), 'nightly', '.tar.gz', 3600)
    assert removed == expected and problems == []
    assert not any(os.path.lexists(p) for p in removed)
    kept = set(entries.values()) - set(os.path.basename(p) for p in removed)
    assert kept | {link, 'victim'} == set(os.listdir(tmp_path))
    assert (victim / 'precious').read_bytes() == b'keep'
    assert bundle.remove_stale_partials(str(tmp_path), 'nightly', '.tar.gz', None) == ([], [])


def test_stale_restore_scratch_directories_are_removed_and_nothing_else(tmp_path):
    host = _host()
    dead = 'pgops-restore-pid%d@%s.0123abcd' % (_dead_pid(), host)
    entries = {
        'dead': dead,
        'alive': 'pgops-restore-pid%d@%s.0123abcd' % (os.getpid(), host),
        'old_style_old': 'pgops-restore-ab_12xyz',
        'old_style_young': 'pgops-restore-cd_34xyz',
        'other_host_old': 'pgops-restore-pid1@elsewhere.0123abcd',
        'not_ours': 'pgops-restore-something-else',
    }
    for key, entry in entries.items():
        os.makedirs(tmp_path / entry / 'bundle')
        (tmp_path / entry / 'bundle' / 'globals.sql').write_bytes(b'CREATE ROLE app;')
        if key.endswith('old') or key == 'not_ours':
            _age(tmp_path / entry, 7200)
    (tmp_path / ('pgops-restore-pid%d@%s.fedcba98' % (_dead_pid(), host))).write_bytes(b'a file: not a scratch directory')
    expected = sorted(str(tmp_path / entries[k]) for k in ('dead', 'old_style_old', 'other_host_old'))
    before = sorted(os.listdir(tmp_path))
    assert dump_restore.remove_stale_scratch(str(tmp_path), 3600, check_mode=True) == (expected, [])
    assert sorted(os.listdir(tmp_path)) == before
    assert dump_restore.remove_stale_scratch(str(tmp_path), 3600) == (expected, [])
    assert sorted(os.listdir(tmp_path)) == sorted(set(before) - set(os.path.basename(p) for p in expected))
    assert dump_restore.remove_stale_scratch(str(tmp_path / 'missing'), 3600)[1][0].startswith('cannot list')


def test_a_partial_whose_pid_was_reused_is_stale():
    now = time.time()
    mine = (12345, 'this-host')
    assert partial_is_stale(mine, now - 60, now, None, 'this-host', lambda pid: None)  # no such process
    assert not partial_is_stale(mine, now - 60, now, None, 'this-host', lambda pid: now - 3600)  # the owner
    assert partial_is_stale(mine, now - 60, now, None, 'this-host', lambda pid: now - 10)  # started since
    assert not partial_is_stale(mine, now - 60, now, None, 'this-host', lambda pid: 0)  # alive, unknown start
    assert not partial_is_stale(mine, now - 60, now, 3600, 'other-host', lambda pid: None)
    assert partial_is_stale(mine, now - 7200, now, 3600, 'other-host', lambda pid: now - 9999)
    assert partial_is_stale((None, None), now - 7200, now, 3600) and not \
        partial_is_stale((None, None), now - 7200, now, None)


def _hostname():
    return _host().rsplit('.pidns', 1)[0]


def test_the_run_tag_names_the_pid_namespace_and_every_reader_parses_it():
    host = _host()
    assert host == '%s.pidns%d' % (_hostname(), os.stat('/proc/self/ns/pid').st_ino)
    tag = run_tag()
    assert tag.startswith('pid%d@%s.' % (os.getpid(), host))
    name = 'nightly-20261121-060000-0123abcd.tar.gz'
    owner = (os.getpid(), host)
    assert _partial_owner(os.path.basename(partial_path('/x', name))[len('.partial-' + name):]) == owner
    scratch = dump_restore._SCRATCH_NAME.match(dump_restore.SCRATCH_PREFIX + tag)
    assert (int(scratch.group('pid')), scratch.group('host')) == owner
    comment = dump_restore._INCOMPLETE_COMMENT.match('%s, run %s, started 1764000000' % (dump_restore.INCOMPLETE, tag))
    assert (int(comment.group('pid')), comment.group('host')) == owner


def test_another_pid_namespace_or_an_old_tag_of_this_host_name_is_judged_by_age_only(tmp_path):
    """Two containers can share a host name (hostNetwork pods, --uts=host) but never a PID namespace: a run of another
    namespace, and one whose tag (an earlier version's) has the host name alone, goes only once it is older than
    max_age, whether its PID looks dead or alive from here; so does everything when this namespace is unknown."""
    now, hostname, dead = time.time(), _hostname(), _dead_pid()
    other_namespace = '%s.pidns%d' % (hostname, os.stat('/proc/self/ns/pid').st_ino + 1)
    for owner_host in (other_namespace, hostname):
        for pid in (dead, os.getpid()):
            assert not partial_is_stale((pid, owner_host), now - 60, now, 3600)
            assert not partial_is_stale((pid, owner_host), now - 7200, now, None)
            assert partial_is_stale((pid, owner_host), now - 7200, now, 3600)
    unknown = hostname + '.pidns0'
    assert not partial_is_stale((dead, unknown), now - 60, now, 3600, unknown, lambda pid: None)
    assert partial_is_stale((dead, unknown), now - 7200, now, 3600, unknown, lambda pid: None)
    # On disk (one run each): the young entries of those runs stay, the old go, this namespace's dead run goes at once.
    entries = dict((key, '.partial-nightly-20261121-06000%d-0123abcd.tar.gz.pid%d@%s.0000000%d' % (n, dead, host, n))
                   for n, (key, host) in enumerate([('other_namespace_young', other_namespace), ('other_namespace_old', other_namespace),
                                                    ('old_tag_young', hostname), ('old_tag_old', hostname),
                                                    ('this_namespace_dead', _host())]))
    for key, entry in entries.items():
        os.mkdir(tmp_path / entry)
        (tmp_path / entry / 'toc.dat').write_bytes(b'dump')
        if key.endswith('old'):
            _age(tmp_path / entry, 7200)
    removed, problems = bundle.remove_stale_partials(str(tmp_path), 'nightly', '.tar.gz', 3600)
    expected = sorted(str(tmp_path / entries[k]) for k in ('other_namespace_old', 'old_tag_old', 'this_namespace_dead'))
    assert problems == [] and removed == expected
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    (scratch / ('pgops-restore-pid%d@%s.0123abcd' % (dead, hostname))).mkdir()  # an earlier version's, young
    (scratch / ('pgops-restore-pid%d@%s.0123abcd' % (dead, other_namespace))).mkdir()
    assert dump_restore.remove_stale_scratch(str(scratch), 3600) == ([], [])


_REMOVER = '''
import json, sys
from ansible_collections.pgops.resilience.plugins.module_utils._bundles import bundle, dump_restore
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import _host
print(json.dumps([_host(), bundle.remove_stale_partials(sys.argv[1], 'nightly', '.tar.gz', 3600),
                  dump_restore.remove_stale_scratch(sys.argv[2], 3600)]))
'''


def test_a_run_in_another_pid_namespace_of_this_host_leaves_a_live_runs_work_alone(tmp_path):
    """The defect this guards against: a container with its own PID namespace and the same host name (here a process
    started by ``unshare --pid``, as root) sees this live process's PID as gone; its run must not remove this
    process's staging directory or scratch directory."""
    import json
    import shutil
    import sys
    name = 'nightly-20261121-060000-0123abcd.tar.gz'
    staging = make_staging_directory(str(tmp_path), name)
    (tmp_path / 'scratch').mkdir()
    scratch = make_work_directory(str(tmp_path / 'scratch' / (dump_restore.SCRATCH_PREFIX + run_tag())))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    unshare = shutil.which('unshare')
    if not unshare or subprocess.run([unshare, '--pid', '--fork', 'true'], capture_output=True, check=False).returncode:
        tool_missing('unshare --pid is not available here (needs root or user namespaces)')
    done = subprocess.run([unshare, '--pid', '--fork', sys.executable, '-c', _REMOVER, str(tmp_path), str(tmp_path / 'scratch')],
                          capture_output=True, text=True, env=env, check=True)
    their_host, partials, scratches = json.loads(done.stdout)
    assert their_host != _host() and their_host.startswith(_hostname() + '.pidns')
    assert partials == [[], []] and scratches == [[], []]
    assert os.path.isdir(staging) and os.path.isdir(scratch)


def test_store_needs_exactly_one_place(tmp_path):
    with pytest.raises(PgopsError, match='exactly one of directory'):
        bundle.BundleStore.from_params({})
    with pytest.raises(PgopsError, match='exactly one of directory'):
        bundle.BundleStore.from_params({'directory': str(tmp_path), 'bucket': 'b'})
    with pytest.raises(PgopsError, match='does not exist'):
        bundle.BundleStore.from_params({'directory': str(tmp_path / 'missing')})


def _conn_params(**overrides):
    params = dict((k, v.get('default')) for k, v in postgres_argument_spec().items())
    params.update(overrides)
    return params


def test_libpq_environment_carries_the_password_and_overrides_the_base():
    env = libpq_environment(_conn_params(login_host='db', login_password='s3cret', login_db='app'), dbname='other',
                            base={'PATH': '/bin', 'PGPASSFILE': '/p', 'PGHOST': 'elsewhere'})
    assert env['PGHOST'] == 'db' and env['PGPASSWORD'] == 's3cret' and env['PGDATABASE'] == 'other'
    assert env['PGPASSFILE'] == '/p' and env['PATH'] == '/bin' and env['PGAPPNAME'] == 'pgops.resilience'
    from_uri = libpq_environment(_conn_params(conninfo='postgresql://u:pw@h:6543/d?sslmode=require'), base={})
    assert (from_uri['PGUSER'], from_uri['PGPASSWORD'], from_uri['PGPORT'], from_uri['PGSSLMODE']) == ('u', 'pw', '6543', 'require')
    with pytest.raises(PgopsError, match="'keepalives' has no libpq environment variable"):
        libpq_environment(_conn_params(connect_params={'keepalives': 1}), base={})


def test_program_failure_message_masks_secrets_and_keeps_the_tail():
    error = failure('pg_dump of database app', 1, 'x' * 5000 + ' password=hunter22 end', ['hunter22'])
    assert error.msg.startswith('pg_dump of database app failed (exit status 1): ...')
    assert 'hunter22' not in error.msg and error.msg.endswith('end') and error.details['rc'] == 1
    assert 'printed nothing' in failure('psql', 2, '').msg


def test_find_client_program_refuses_an_explicit_directory_without_it(tmp_path):
    with pytest.raises(PgopsError, match='has no pg_dump program'):
        find_client_program('pg_dump', str(tmp_path))
