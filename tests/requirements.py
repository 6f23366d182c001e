# -*- coding: utf-8 -*-
"""What a test does when something it needs is missing on this machine (a program, a privilege such as mounting,
``chattr +i`` or a PID namespace): skip where the developer's machine lacks it, and fail under
``PGOPS_REQUIRE_TOOLS=1`` (CI, ``.ci/run``), where a skipped real-component test would check nothing."""

from __future__ import annotations

import os

import pytest

REQUIRE_TOOLS = os.environ.get('PGOPS_REQUIRE_TOOLS') == '1'


def tool_missing(message):
    """Skip the test for ``message`` (str: what is missing and how to get it); fail it with ``PGOPS_REQUIRE_TOOLS=1``."""
    if REQUIRE_TOOLS:
        pytest.fail('%s (PGOPS_REQUIRE_TOOLS=1: a missing tool fails the run)' % message)
    pytest.skip(message + ' (PGOPS_REQUIRE_TOOLS=1 makes this a failure)')
