# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The time, in UTC, and its ISO 8601 text."""

from __future__ import annotations

import datetime


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
