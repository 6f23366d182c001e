# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The time, in UTC, and its ISO 8601 text; the seconds each phase of a run takes (:func:`timed`)."""

from __future__ import annotations

import contextlib
import datetime
import time


def utc_now():
    """The current time as an aware ``datetime`` in UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat_z(value):
    """Render an aware ``datetime`` as ISO 8601 in UTC with a ``Z`` suffix (``2025-01-29T10:30:00Z``).

    Naive datetimes are taken to be UTC already. ``None`` stays ``None``.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    value = value.astimezone(datetime.timezone.utc)
    text = value.isoformat(timespec='microseconds' if value.microsecond else 'seconds')
    return text.replace('+00:00', 'Z')


def seconds_since(started):
    """Seconds (float, rounded to milliseconds) since ``started``, a ``time.monotonic()`` reading."""
    return round(time.monotonic() - started, 3)


@contextlib.contextmanager
def timed(seconds, phase):
    """Record in ``seconds[phase]`` how long the block took (see :func:`seconds_since`), when it completes: a phase
    that raised has no time in a result, which reports the failure instead.

    :param seconds: dict, phase name -> seconds (a module result's ``seconds``).
    :param phase: str, such as ``'pg_dump'``.
    """
    started = time.monotonic()
    yield
    seconds[phase] = seconds_since(started)
