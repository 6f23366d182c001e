# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection runs barman's cloud CLIs (barman-cloud-backup-delete, barman-cloud-restore,
barman-cloud-wal-restore): argument spec, program lookup, credentials in the environment (never on the
command line), and errors that quote barman's own message with secrets masked.

Source of the command lines: barman 3.x, ``barman-cloud-* --help`` and the barman manual's "Barman cloud"
chapter (positional ``SOURCE_URL SERVER_NAME``; ``--cloud-provider aws-s3``; ``--endpoint-url``).
"""

from __future__ import annotations

import os
import shlex
import shutil

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import spooled_output
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec

INSTALL_HINT = 'pip install "barman[cloud]" (or the Debian/RPM package barman-cli-cloud)'
DEFAULT_TIMEOUT = 3600  # seconds; a restore of a large base backup takes a while


def barman_cloud_spec():
    """Argument spec of the options every barman module shares (documented in the ``pgops.resilience.barman``
    doc fragment): ``destination_path``, ``server_name``, ``barman_bin_dir`` and the S3 connection options.

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    spec = dict(
        destination_path=dict(type='str', required=True),
        server_name=dict(type='str', required=True),
        barman_bin_dir=dict(type='path'),
    )
    spec.update(s3_connection_spec())
    return spec


def validate_server_name(name, option='server_name'):
    """Raise :class:`PgopsError` unless ``name`` can be a barman server directory (one path element).

    :returns: ``name``.
    """
    if not name or '/' in name or name in ('.', '..') or name.strip() != name:
        raise PgopsError('%s %r is not a barman server name: use one directory name, without "/" or surrounding spaces.' % (option, name))
    return name


class BarmanCloud:
    """barman's cloud CLIs for one server of one catalog (``destination_path`` = ``s3://bucket/prefix``).

    :param params: dict with the options of :func:`barman_cloud_spec` (the module's params).
    """

    def __init__(self, params):
        self.destination_path = params['destination_path'].rstrip('/')
        self.server_name = validate_server_name(params['server_name'])
        self.endpoint_url = params.get('endpoint_url')
        self.bin_dir = params.get('barman_bin_dir')
        self.secrets = [params.get(key) for key in ('secret_key', 'session_token') if params.get(key)]
        self._env = {}
        for key, env_name in (('access_key', 'AWS_ACCESS_KEY_ID'), ('secret_key', 'AWS_SECRET_ACCESS_KEY'),
                              ('session_token', 'AWS_SESSION_TOKEN'), ('region', 'AWS_DEFAULT_REGION')):
            if params.get(key):
                self._env[env_name] = params[key]

    def program(self, name):
        """Full path of barman program ``name`` from ``barman_bin_dir``, else PATH.

        :raises PgopsError: when it is not there, with how to install it.
        """
        if self.bin_dir:
            path = os.path.join(self.bin_dir, name)
            if os.access(path, os.X_OK):
                return path
            raise PgopsError('%s is not in barman_bin_dir %s. Install barman-cloud there (%s) or fix barman_bin_dir.'
                             % (name, self.bin_dir, INSTALL_HINT))
        path = shutil.which(name)
        if path is None:
            raise PgopsError('%s was not found on PATH. Install it (%s) or set barman_bin_dir.' % (name, INSTALL_HINT))
        return path

    def credentials(self):
        """Only the S3 credentials and region from the options, as environment variables (a new dict).

        For a process that builds its own environment, such as the PostgreSQL server whose restore_command
        runs barman-cloud-wal-restore.
        """
        return dict(self._env)

    def environment(self):
        """The environment for a barman CLI: this process's, plus the S3 credentials and region from the options.

        AWS_REGION is mirrored as AWS_DEFAULT_REGION (boto3 reads both). Returns a new dict (str -> str).
        """
        env = dict(os.environ)
        env.update(self._env)
        return env

    def connection_args(self):
        """``--cloud-provider aws-s3`` and, for a store other than AWS, ``--endpoint-url``."""
        args = ['--cloud-provider', 'aws-s3']
        if self.endpoint_url:
            args += ['--endpoint-url', self.endpoint_url]
        return args

    def command(self, name, *args):
        """``[program, connection args..., args..., destination_path, server_name]`` (list, no shell)."""
        return [self.program(name)] + self.connection_args() + list(args) + [self.destination_path, self.server_name]

    def run_command(self, cmd, timeout=DEFAULT_TIMEOUT):
        """Run ``cmd`` (a list from :meth:`command`) with :meth:`environment`, through the collection's one runner
        (:func:`~ansible_collections.pgops.resilience.plugins.module_utils._core.process.spooled_output`: umask 077,
        its stderr tail kept, secrets masked), and return what it printed on stdout.

        The stdout goes to an unnamed temporary file (0600, gone when closed), not to memory or a pipe: the
        ``--dry-run`` of ``barman-cloud-backup-delete`` prints every WAL object it would delete, megabytes for a large
        archive, and barman's log (its errors) is on stderr.

        :param timeout: seconds; the program is killed after it.
        :returns: str, its stdout (UTF-8, undecodable bytes replaced).
        :raises PgopsError: when it cannot start, runs longer than ``timeout``, or exits non-zero, naming the command
            (no secret is on it: credentials are in the environment), the catalog, the exit status and the end of
            barman's stderr, secrets masked.
        """
        what = '%s for %s/%s' % (' '.join([os.path.basename(cmd[0])] + list(cmd[1:])), self.destination_path, self.server_name)
        return spooled_output(cmd, self.environment(), what, self.secrets, timeout)

    def wal_restore_command(self, server_name=None):
        """A ``restore_command`` (str) running ``barman-cloud-wal-restore`` for this catalog: ``... %f %p``.

        Each part is shell-quoted (PostgreSQL runs restore_command through the shell). The credentials are not
        in it: the server gets them from its environment. ``server_name`` defaults to this catalog's server.
        """
        parts = [self.program('barman-cloud-wal-restore')] + self.connection_args() + [self.destination_path, server_name or self.server_name]
        return ' '.join(shlex.quote(part) for part in parts) + ' %f %p'
