# -*- coding: utf-8 -*-
"""Unit tests of redaction, time formatting and S3 endpoint rules (no server)."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils.common import isoformat_z, redact
from ansible_collections.pgops.resilience.plugins.module_utils.s3 import is_aws_endpoint


@pytest.mark.parametrize('text, secret', [
    ('host=db password=hunter22 user=x', 'hunter22'),
    ("host=db password='hun ter\\'22' user=x", 'hun ter'),
    ('postgresql://app:hunter22@db:5432/app', 'hunter22'),
    ('postgresql://db/app?user=a&password=hunter22&sslmode=require', 'hunter22'),
    ('s3://AKIA:wJalrXUtnFEMI@bucket/key', 'wJalrXUtnFEMI'),
])
def test_redact_patterns(text, secret):
    out = redact(text)
    assert secret not in out
    assert '********' in out


def test_redact_literal_secrets_and_keeps_other_text():
    out = redact('could not log in with topsecret as ops', secrets=['topsecret', None, '', 'ab'])
    assert out == 'could not log in with ******** as ops'
    assert redact(None) == ''


def test_isoformat_z():
    value = datetime.datetime(2025, 1, 29, 10, 30, tzinfo=datetime.timezone.utc)
    assert isoformat_z(value) == '2025-01-29T10:30:00Z'
    cet = datetime.timezone(datetime.timedelta(hours=1))
    assert isoformat_z(datetime.datetime(2025, 1, 29, 11, 30, 0, 5, tzinfo=cet)) == '2025-01-29T10:30:00.000005Z'
    assert isoformat_z(None) is None


@pytest.mark.parametrize('url, aws', [
    (None, True),
    ('https://s3.eu-west-1.amazonaws.com', True),
    ('http://127.0.0.1:9000', False),
    ('https://minio.example.internal', False),
    ('https://amazonaws.com.evil.example', False),
])
def test_is_aws_endpoint(url, aws):
    assert is_aws_endpoint(url) is aws
