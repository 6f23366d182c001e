# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Values read from PostgreSQL (psycopg2's Python types) made JSON-safe, one way for the whole collection: the
results of drill checks, the rows and server facts a watermark records."""

from __future__ import annotations

import datetime
import decimal
import math
import uuid

from ansible_collections.pgops.resilience.plugins.module_utils._core.clock import isoformat_z


def exact_number(value):
    """A ``Decimal`` (``numeric``) as a JSON value that keeps its value exactly: an int when it is integral (Python
    ints have no size limit), a float when that float's shortest text (``repr``) reads back as the same number, else
    the decimal text (``'0.30000000000000000001'``); ``NaN`` and infinities (numeric has them since PostgreSQL 14) as
    text. So no digit is ever lost to a binary float; only the scale of an equal value may go (``1.50`` -> ``1.5``).
    """
    if not value.is_finite():
        return str(value)
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if decimal.Decimal(repr(as_float)) == value else str(value)


def jsonable(value):
    """Make a database value JSON-safe, recursively through lists, tuples and dicts (keys become str).

    ``Decimal`` -> :func:`exact_number`; a non-finite float -> its text (``'inf'``, ``'nan'``: JSON has neither);
    aware datetimes -> ISO 8601 in UTC with ``Z`` (:func:`~.clock.isoformat_z`), naive ones, dates and times -> ISO
    8601; timedelta (``interval``) -> seconds (float); bytes (``bytea``) -> hex; UUID, ranges and anything else ->
    ``str()``. None, bools, ints and str are returned as they are.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return exact_number(value)
    if isinstance(value, datetime.datetime):
        return isoformat_z(value) if value.tzinfo else value.isoformat()
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return dict((str(k), jsonable(v)) for k, v in value.items())
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)
