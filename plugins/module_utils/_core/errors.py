# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors fit for the user, and the one way a module runs its work and exits (``run_module``)."""

from __future__ import annotations
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact

import gc


class PgopsError(Exception):
    """An error with a message fit for the user: it names the input and says what to do.

    Modules turn it into ``fail_json(msg=...)``; ``details`` (a dict) is returned beside the message,
    for example what a rebuild committed before a later step failed.
    """

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


def phase_error(phase, msg):
    """A :class:`PgopsError` that remembers the phase of a run it belongs to (its ``phase`` attribute, str, such as
    ``'recovery'`` or ``'checks'``: a drill's result names the phase that failed)."""
    error = PgopsError(msg)
    error.phase = phase
    return error


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
