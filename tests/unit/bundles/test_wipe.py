# -*- coding: utf-8 -*-
"""Unit tests of ``pg_wipe_data_directory``'s ``clear_parent`` (module_utils/_bundles/wipe.py) over real directories: it never
deletes another cluster beside (or around) the data directory, in check mode neither."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._bundles import wipe
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


def _cluster(path, version='16'):
    """A data directory as ``initdb`` leaves it, in miniature (PG_VERSION, global/pg_control, base/1/PG_VERSION)."""
    os.makedirs(os.path.join(path, 'base', '1'))
    os.makedirs(os.path.join(path, 'global'))
    for name in ('PG_VERSION', os.path.join('base', '1', 'PG_VERSION')):
        with open(os.path.join(path, name), 'w', encoding='ascii') as handle:
            handle.write(version + '\n')
    with open(os.path.join(path, 'global', 'pg_control'), 'wb') as handle:
        handle.write(b'\0' * 8192)


def _tree(path):
    """Every path under ``path`` (relative, sorted) with the bytes of each file: what a refusal must leave alone."""
    found = []
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(top, name)
            data = None
            if os.path.isfile(full):
                with open(full, 'rb') as handle:
                    data = handle.read()
            found.append((os.path.relpath(full, path), data))
    return sorted(found)


def _params(datadir, **overrides):
    return dict(dict(data_directory=str(datadir), confirm=str(datadir), clear_parent=True, server_user=None), **overrides)


@pytest.fixture
def debian(tmp_path):
    """The Debian layout: /var/lib/postgresql/16/main and a second cluster /var/lib/postgresql/16/replica."""
    version = tmp_path / 'postgresql' / '16'
    _cluster(str(version / 'main'))
    _cluster(str(version / 'replica'))
    (version / 'stray.sql').write_text('select 1;\n')
    return version


def _refused(params, match):
    for check_mode in (True, False):
        with pytest.raises(PgopsError, match=match) as refused:
            wipe.wipe_data_directory(params, check_mode=check_mode)
    return refused.value


def test_clear_parent_refuses_a_sibling_cluster_and_deletes_nothing(debian):
    before = _tree(str(debian))
    refused = _refused(_params(debian / 'main'), 'other PostgreSQL clusters')
    replica = str(debian / 'replica')
    assert '%s (a PostgreSQL data directory)' % replica in refused.msg and 'Nothing was changed' in refused.msg
    assert 'set clear_parent to false' in refused.msg and refused.details['clusters'] == [replica]
    assert _tree(str(debian)) == before
    # Without clear_parent the data directory alone is emptied; the sibling stays whole.
    result = wipe.wipe_data_directory(_params(debian / 'main', clear_parent=False))
    assert result['changed'] and os.listdir(debian / 'main') == []
    assert _tree(replica) == [(p[len('replica/'):], d) for p, d in before if p.startswith('replica/')]


def test_clear_parent_refuses_a_sibling_a_live_server_runs_on(debian):
    """A directory whose postmaster.pid names a live process: refused even without PG_VERSION, whose PID is named."""
    running = debian / 'running'
    running.mkdir()
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], cwd=str(running))
    try:
        (running / 'postmaster.pid').write_text('%d\n%s\n' % (sleeper.pid, running))
        before = _tree(str(debian))
        refused = _refused(_params(debian / 'main'), 'PID %d, which is alive' % sleeper.pid)
        assert str(running) in refused.msg and str(debian / 'replica') in refused.msg
        assert _tree(str(debian)) == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_cluster_deeper_in_the_parent_and_a_parent_that_is_one_are_refused(tmp_path):
    # The runbook's layout with an old Debian cluster on the same volume: /var/lib/postgresql/15/main.
    volume = tmp_path / 'volume'
    _cluster(str(volume / 'data'))
    _cluster(str(volume / '15' / 'main'))
    refused = _refused(_params(volume / 'data'), 'other PostgreSQL clusters')
    assert refused.details['clusters'] == [str(volume / '15' / 'main')]  # not its base/1, which is part of it
    # data_directory inside a cluster (an empty pg_notify): clear_parent would delete the cluster around it.
    cluster = tmp_path / 'cluster'
    _cluster(str(cluster))
    (cluster / 'pg_notify').mkdir()
    refused = _refused(_params(cluster / 'pg_notify'), 'data_directory is inside it')
    assert refused.details['clusters'] == [str(cluster)] and (cluster / 'global' / 'pg_control').exists()


def test_what_is_no_other_cluster_does_not_stop_clear_parent(tmp_path):
    """A tablespace directory of the cluster (its database directories hold PG_VERSION, no global/), a dead
    server's postmaster.pid, a link to a cluster elsewhere (only the link goes) and lost+found are no other cluster."""
    volume = tmp_path / 'volume'
    _cluster(str(volume / 'data'))
    tablespace = volume / 'tblspc' / 'PG_16_202307071' / '16384'
    tablespace.mkdir(parents=True)
    (tablespace / 'PG_VERSION').write_text('16\n')
    exited = subprocess.Popen(['true'])
    exited.wait()
    (volume / 'stale').mkdir()
    (volume / 'stale' / 'postmaster.pid').write_text('%d\n' % exited.pid)
    elsewhere = tmp_path / 'elsewhere'
    _cluster(str(elsewhere))
    os.symlink(str(elsewhere), str(volume / 'link'))
    (volume / 'lost+found').mkdir()
    assert wipe.other_clusters(str(volume), ('data', 'lost+found')) == []
    result = wipe.wipe_data_directory(_params(volume / 'data'))
    assert sorted(os.listdir(volume)) == ['data', 'lost+found'] and os.listdir(volume / 'data') == []
    assert sorted(os.path.basename(p) for p in result['removed'] if os.path.dirname(p) == str(volume)) == ['link', 'stale', 'tblspc']
    assert (elsewhere / 'global' / 'pg_control').exists()
