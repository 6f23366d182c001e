# -*- coding: utf-8 -*-
"""The recovery target time a wal-g drill chooses its backup by: read with its offset, refused without one (PostgreSQL
would read it in the restored server's time zone) or when it is not a time."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._walg.drill import target_time


@pytest.mark.parametrize('text', ['2026-11-20 10:30:00+00', '2026-11-20T10:30:00Z', '2026-11-20 11:30:00.5+01:00',
                                  '2026-11-20 05:30:00-0500'])
def test_a_target_with_its_offset_is_read_in_utc(text):
    when = target_time(dict(recovery_target_time=text))
    assert when.astimezone(datetime.timezone.utc).replace(microsecond=0) == datetime.datetime(2026, 11, 20, 10, 30, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize('text', ['2026-11-20 10:30:00', 'yesterday', '2026-13-40 10:30+00'])
def test_a_target_without_offset_or_not_a_time_is_refused_with_the_form(text):
    with pytest.raises(PgopsError, match='give it with its UTC offset'):
        target_time(dict(recovery_target_time=text))


def test_no_target_chooses_nothing():
    assert target_time(dict(recovery_target_time=None)) is None
