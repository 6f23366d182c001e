# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The time, in UTC, and its ISO 8601 text; times read from text (:func:`parse_time`); the seconds each phase of a
run takes (:func:`timed`)."""

from __future__ import annotations

import contextlib
import datetime
import re
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


def parse_time(value):
    """A time from barman's backup.info, an option or PostgreSQL's text form (``2025-11-26 09:15:49.123456+00:00``,
    ISO 8601, ``Z`` allowed) as an aware datetime.

    A time without offset is taken as UTC (barman-cloud always writes the offset).

    :raises ValueError: when ``value`` is not such a time.
    """
    text = value.strip()
    if text.endswith(('Z', 'z')):
        text = text[:-1] + '+00:00'
    # Python before 3.11 reads only the shapes isoformat() writes: 6-digit fractions, +HH:MM offsets.
    match = re.match(r'^(.*?[T ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([+-]\d{2}(?::?\d{2})?)?$', text)
    if match:
        fraction = ('.' + (match.group(2) + '000000')[:6]) if match.group(2) else ''
        offset = match.group(3) or ''
        if len(offset) == 3:
            offset += ':00'
        elif len(offset) == 5:
            offset = offset[:3] + ':' + offset[3:]
        text = match.group(1) + fraction + offset
    moment = datetime.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment
