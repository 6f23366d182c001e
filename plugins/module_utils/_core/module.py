# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How every module of the collection is built and run, the same way for all of them.

A capability gives two things: ``module_spec()``, its argument spec together with its constraints
(``mutually_exclusive``, ``required_one_of``, ``required_if``, ...) in one dict, and one entry point named after what
it does, ``<verb>(params, check_mode)``, returning the result dict (with an optional ``warnings`` list). A module file
holds its documentation and ``main()``: ``module_main(AnsibleModule, capability.module_spec(), capability.<verb>)``.
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import run_module


def module_main(module_class, spec, entry, secrets=None):
    """Build the module and run its entry point: check mode supported, the values ``secrets(params)`` names added to
    ``no_log_values`` (masked in everything Ansible shows), and ``entry(params, check_mode)`` run through
    :func:`~.errors.run_module` (a ``PgopsError`` becomes ``fail_json``; ``warnings`` go through ``module.warn``).

    :param module_class: ``AnsibleModule``, passed in by the module file, which imports it as Ansible expects.
    :param spec: dict of ``AnsibleModule`` keyword arguments: ``argument_spec`` and its constraints.
    :param entry: callable ``(params, check_mode) -> dict``.
    :param secrets: callable ``params -> list of str`` or None.
    """
    module = module_class(supports_check_mode=True, **spec)
    if secrets is not None:
        module.no_log_values.update(secrets(module.params))
    run_module(module, lambda: entry(module.params, module.check_mode))
