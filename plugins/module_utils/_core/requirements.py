# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Optional Python libraries (psycopg2, boto3, msgspec, kubernetes, kubernetes-validate): each is imported in a
``try`` block where it is used, and checked with :func:`require_library` before its first use, so that a module
without it fails with Ansible's standard message (``missing_required_lib``: the library, the host and the Python
that ran the module) and how to install it, instead of an ``ImportError`` traceback.
"""

from __future__ import annotations

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError


def require_library(name, available, install, error=None, reason=None):
    """Raise :class:`PgopsError` when the library ``name`` could not be imported.

    :param name: str, the library as pip names it (``'psycopg2'``).
    :param available: bool, whether its import succeeded.
    :param install: str, how to install it (``'pip install boto3'``).
    :param error: str or None, the import's traceback, shown by Ansible with ``-vvv`` (``exception``).
    :param reason: str or None, what it is needed for (``'to validate manifests'``).
    :raises PgopsError: with the text of ``missing_required_lib`` and ``install``.
    """
    if available:
        return
    details = dict(exception=error) if error else {}
    raise PgopsError('%s Install it with: %s.' % (missing_required_lib(name, reason=reason), install), **details)
