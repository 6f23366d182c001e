# -*- coding: utf-8 -*-
"""Unit tests of archive_restore's background S3 watermark writer (pure logic: the target is a stand-in
object that records the documents; the integration tests write real watermarks to moto's server)."""

from __future__ import annotations

import threading
import time

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._archive import watermark as archive_watermark
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


class Target:
    """Records written documents; ``gate`` holds each write until set, ``fail`` makes writes raise."""

    url = 's3://bucket/key'

    def __init__(self, fail=None):
        self.written = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = fail

    def write(self, document):
        self.gate.wait(5)
        if self.fail:
            raise self.fail
        self.written.append(document)


def test_writes_only_the_newest_document_waiting_and_the_last_at_close():
    target = Target()
    target.gate.clear()
    writer = archive_watermark.WatermarkWriter(target)
    first, second, third = dict(n=1), dict(n=2), dict(n=3)
    writer.submit(first)
    deadline = time.monotonic() + 5
    while not writer.busy and time.monotonic() < deadline:  # the thread holds the first document
        time.sleep(0.001)
    assert not writer.due()  # a write is under way
    writer.submit(second)
    writer.submit(third)  # replaces the second, not written yet
    writer.submit(third)  # the same document again is ignored
    target.gate.set()
    assert writer.close() is third
    assert target.written == [first, third]


def test_due_waits_for_the_interval(monkeypatch):
    monkeypatch.setattr(archive_watermark.WatermarkWriter, 'INTERVAL', 0.2)
    writer = archive_watermark.WatermarkWriter(Target())
    assert writer.due()
    writer.submit(dict(n=1))
    assert not writer.due()
    time.sleep(0.3)
    assert writer.due()
    writer.close()


@pytest.mark.parametrize('error', [PgopsError('S3 upload of s3://bucket/key failed: AccessDenied'), OSError('disk')])
def test_a_failed_write_is_reported_to_the_caller(error):
    writer = archive_watermark.WatermarkWriter(Target(fail=error))
    writer.submit(dict(n=1))
    deadline = time.monotonic() + 5
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert writer.due()  # so that the caller submits and hears of it
    with pytest.raises(PgopsError) as info:
        writer.submit(dict(n=2))
    assert 's3://bucket/key' in info.value.msg
    assert writer.close(check=False) is None
    with pytest.raises(PgopsError):
        writer.close()
