# -*- coding: utf-8 -*-
"""Unit tests of the pure decisions of pg_unlogged_rebuild: events and JSON conversion (no server)."""

from __future__ import annotations

import datetime
import decimal

from ansible_collections.pgops.resilience.plugins.module_utils._core.jsonable import jsonable
from ansible_collections.pgops.resilience.plugins.module_utils._unlogged.rebuild import detect_events

BASE = dict(system_identifier='7301', timeline=1, postmaster_start_time='2025-01-29T10:00:00Z',
            primary_instance='10.0.1.5:5432')


def _now(**changes):
    current = dict(BASE)
    current.update(changes)
    return current


def test_no_previous_watermark_means_no_events():
    assert detect_events(None, _now()) == []


def test_nothing_changed():
    assert detect_events(dict(BASE), _now()) == []


def test_failover_is_a_timeline_change_and_explains_the_restart():
    events = detect_events(dict(BASE), _now(timeline=2, postmaster_start_time='2025-01-29T11:00:00Z', primary_instance='10.0.1.6:5432'))
    assert events == ['failover', 'primary_changed']


def test_restart_on_the_same_timeline():
    assert detect_events(dict(BASE), _now(postmaster_start_time='2025-01-29T11:00:00Z')) == ['restart']


def test_other_cluster():
    assert detect_events(dict(BASE), _now(system_identifier='9999', timeline=1)) == ['system_changed']


def test_runbook_format_without_identity_fields_only_compares_the_address():
    runbook = {'snapshot_ts': '2025-01-29T10:30:00Z', 'primary_instance': '10.0.1.5:5432', 'kv_store_count': 15420}
    assert detect_events(runbook, _now()) == []
    assert detect_events(runbook, _now(primary_instance='10.0.1.7:5432')) == ['primary_changed']


def test_jsonable():
    stamp = datetime.datetime(2025, 1, 29, 10, 25, tzinfo=datetime.timezone.utc)
    assert jsonable(decimal.Decimal('5000')) == 5000
    assert jsonable(decimal.Decimal('1.5')) == 1.5
    assert jsonable(stamp) == '2025-01-29T10:25:00Z'
    assert jsonable({'a': [stamp, None]}) == {'a': ['2025-01-29T10:25:00Z', None]}


def test_the_orchestrators_primary_name_changed_behind_the_same_address():
    """CloudNativePG's <cluster>-rw service keeps its address across a failover; current_primary tells."""
    before = dict(BASE, current_primary='rem-db-1')
    assert detect_events(before, _now(current_primary='rem-db-2')) == ['primary_changed']
    assert detect_events(before, _now(current_primary='rem-db-1')) == []


def test_primary_name_is_only_compared_when_both_runs_have_one():
    assert detect_events(dict(BASE), _now(current_primary='rem-db-2')) == []
    assert detect_events(dict(BASE, current_primary='rem-db-1'), _now(current_primary=None)) == []
    assert detect_events(dict(BASE, current_primary='rem-db-1'), _now()) == []


def test_address_and_name_changing_together_is_one_event():
    events = detect_events(dict(BASE, current_primary='rem-db-1'),
                           _now(timeline=2, primary_instance='10.0.1.6:5432', current_primary='rem-db-2'))
    assert events == ['failover', 'primary_changed']
