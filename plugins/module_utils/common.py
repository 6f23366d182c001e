# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors, secret redaction and time helpers shared by every module of the collection."""

from __future__ import annotations

import datetime
import gc
import re

REDACTED = '********'

# password=... in a libpq key/value string, quoted ('...' with \' escapes) or bare.
_KV_SECRET = re.compile(r"""(?P<key>\b(?:password|sslpassword)\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s'"]+)""", re.IGNORECASE)
# scheme://user:password@host in a URI (postgresql://, s3://, https://).
_URI_SECRET = re.compile(r'(?P<key>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<value>[^@\s]+)(?=@)', re.IGNORECASE)
# ?password=... or &password=... in a URI query string.
_QUERY_SECRET = re.compile(r'(?P<key>[?&](?:password|sslpassword)=)(?P<value>[^&#\s]+)', re.IGNORECASE)


class PgopsError(Exception):
    """An error with a message fit for the user: it names the input and says what to do.

    Modules turn it into ``fail_json(msg=...)``; ``details`` (a dict) is returned beside the message,
    for example what a rebuild committed before a later step failed.
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


def redact(text, secrets=()):
    """Return ``text`` with passwords in DSNs and URIs, and each literal secret, replaced by ``********``.

    :param text: any object; it is turned into ``str`` first (``None`` becomes ``''``).
    :param secrets: iterable of literal secret strings (passwords, secret keys) to mask wherever they
        appear; empty and very short values (under 4 characters) are ignored so common text is not mangled.
    :returns: str
    """
    if text is None:
        return ''
    out = str(text)
    for secret in sorted((s for s in secrets if s and len(str(s)) >= 4), key=lambda s: -len(str(s))):
        out = out.replace(str(secret), REDACTED)
    for pattern in (_KV_SECRET, _URI_SECRET, _QUERY_SECRET):
        out = pattern.sub(lambda m: m.group('key') + REDACTED, out)
    return out


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


def run_module(module, work):
    """Run ``work()`` (returning the result dict) and exit the module with it.

    A :class:`PgopsError` becomes ``fail_json`` with its message and details; any secret in the message
    (no_log option values, passwords in DSNs or URIs) is masked first. Other exceptions propagate, so a
    real bug still shows its traceback.

    :param module: ``AnsibleModule``.
    :param work: callable without arguments returning a dict.
    """
    # A module is a short process: what exists now (imported modules, the arguments) lives until it exits, so
    # the cyclic garbage collector need not walk it again and again (gc.freeze, "the permanent generation").
    # Frozen again before the exit: the interpreter's last collection would otherwise walk every object
    # left, boto3's loaded service models among them, about 50 ms at the end of each S3-using module.
    gc.freeze()
    try:
        result = work()
    except PgopsError as exc:
        secrets = getattr(module, 'no_log_values', ())
        gc.freeze()
        module.fail_json(msg=redact(exc.msg, secrets), **exc.details)
    gc.freeze()
    module.exit_json(**result)
