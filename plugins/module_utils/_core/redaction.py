# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Secrets kept out of messages, reports and files: passwords in DSNs and URIs, literal secrets, and the server
settings that can carry a credential.
"""

from __future__ import annotations

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
