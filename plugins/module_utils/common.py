# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors, secret redaction, private files and time helpers shared by every module of the collection."""

from __future__ import annotations

import datetime
import gc
import os
import re

REDACTED = '********'

# password=... in a libpq key/value string, quoted ('...' with \' escapes) or bare.
_KV_SECRET = re.compile(r"""(?P<key>\b(?:password|sslpassword)\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*'|[^\s'"]+)""", re.IGNORECASE)
# scheme://user:password@host in a URI (postgresql://, s3://, https://).
_URI_SECRET = re.compile(r'(?P<key>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<value>[^@\s]+)(?=@)', re.IGNORECASE)
# ?password=... or &password=... in a URI query string.
_QUERY_SECRET = re.compile(r'(?P<key>[?&](?:password|sslpassword)=)(?P<value>[^&#\s]+)', re.IGNORECASE)


# Server settings whose value can carry a credential: a connection string (primary_conninfo), a shell command
# (archive_command, restore_command, archive_cleanup_command, recovery_end_command, ssl_passphrase_command, and
# any extension's *_command, which may hold AWS_SECRET_ACCESS_KEY=... or a password), and any custom setting whose
# name says it holds a secret (app.api_key, pgsodium's *.encryption_key, anon.salt, *.auth_*). PostgreSQL docs,
# chapter 20 "Server Configuration". Erring towards masking: ssl_key_file, krb_server_keyfile and
# authentication_timeout match too, which hides a path or a timeout, never a secret.
_SECRET_SETTING = re.compile(r'(conninfo|_command|password|passphrase|secret|token|credential|key|salt|auth)', re.IGNORECASE)


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


def secret_setting(name):
    """True when the server setting ``name`` (str) can carry a credential, so its value is masked in every report
    and file (see :func:`mask_setting`)."""
    return bool(_SECRET_SETTING.search(name or ''))


def mask_setting(name, value):
    """The value of server setting ``name`` as reports and files may show it: ``********`` for a setting that can
    carry a credential (:func:`secret_setting`) and is not empty, else ``value`` with DSN and URI passwords masked.

    :param name: str, the setting's name (``primary_conninfo``, ``archive_command``, ``shared_buffers``).
    :param value: str or None.
    :returns: str or None (None stays None; an empty value stays empty, so "not set" remains visible).
    """
    if value is None or value == '':
        return value
    if secret_setting(name):
        return REDACTED
    return redact(value)


def private_file(path, mode='wb'):
    """Open a new file at ``path`` that only its owner may read and write (0600, whatever the umask), for
    anything that can hold data or settings: bundles, checksums, dumps, metrics, logs.

    :param path: str; an existing file is truncated and its mode set to 0600 as well.
    :param mode: ``'wb'`` or ``'w'``.
    :returns: an open file object.
    :raises OSError: as ``os.open`` does.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


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
    real bug still shows its traceback. A ``warnings`` list in the result (or in the error's details) goes
    through ``module.warn``: a ``warnings`` key passed to ``exit_json`` is deprecated since ansible-core 2.19.

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
        details = _warned(module, exc.details)
        gc.freeze()
        module.fail_json(msg=redact(exc.msg, secrets), **details)
        return  # fail_json exits; a stand-in in a test may not
    result = _warned(module, result)
    gc.freeze()
    module.exit_json(**result)


def _warned(module, result):
    """``result`` without its ``warnings`` list, each of which is handed to ``module.warn``."""
    if 'warnings' not in result:
        return result
    result = dict(result)
    for warning in result.pop('warnings') or ():
        module.warn(str(warning))
    return result
