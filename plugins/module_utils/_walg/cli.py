# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way the collection runs wal-g: the options every wal-g module shares, the storage and its credentials
turned into wal-g's environment (never its command line), a bound on every call, and wal-g's own error text, secrets
masked.

Source of the settings: wal-g 3.0.9's documentation (``docs/STORAGES.md``: ``WALG_S3_PREFIX``, ``WALG_FILE_PREFIX``,
``AWS_ENDPOINT``, ``AWS_S3_FORCE_PATH_STYLE``, ``AWS_REGION``; ``docs/PostgreSQL.md``). wal-g never exits on its own
when its storage does not answer (it retries), hence the ``timeout`` of every call.
"""

from __future__ import annotations

import os
import re
import shutil
from urllib.parse import urlparse

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import STDERR_KEEP, run_program, spooled_output
from ansible_collections.pgops.resilience.plugins.module_utils._s3.options import s3_connection_spec

DEFAULT_TIMEOUT = 3600  # seconds: a push or a fetch of a large base backup takes a while
# Settings wal-g reads from its environment that walg_env may add (wal-g's WALG_*, the AWS SDK's AWS_*).
_ENV_NAME = re.compile(r'(WALG|AWS)_[A-Z0-9_]+\Z')
# Set from the options; walg_env may not name them (prefix, endpoint_url, ... say it once).
_OWNED = frozenset(('WALG_S3_PREFIX', 'WALG_FILE_PREFIX', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN',
                    'AWS_REGION', 'AWS_ENDPOINT', 'AWS_S3_FORCE_PATH_STYLE', 'WALG_DELTA_MAX_STEPS', 'WALG_SENTINEL_USER_DATA'))
INSTALL_HINT = ('make setup builds wal-g 3.0.9 (hacking/install-walg.sh); elsewhere, take a release of '
                'https://github.com/wal-g/wal-g or an image that contains it')
# What an S3 endpoint answers when it refuses a request's credentials (the error codes of the S3 API reference,
# "Error responses"), as wal-g's log repeats them, and what to change. A HEAD request gets no body, so wal-g's
# object checks (wal-push, backup-push) say only "Forbidden ... status code: 403": the last, general entry.
_REFUSALS = (
    ('SignatureDoesNotMatch', 'secret_key is not the secret of access_key'),
    ('InvalidAccessKeyId', 'it does not know access_key'),
    ('InvalidToken', 'session_token is not valid for access_key'),
    ('ExpiredToken', 'session_token has expired'),
    ('AccessDenied', 'access_key may not use this bucket and path'),
    ('status code: 403', 'the credentials are wrong, or access_key may not use this bucket and path'),
)
_LOG_ENTRY = re.compile(r'^(?:INFO|WARNING|ERROR|FATAL|PANIC): ', re.MULTILINE)
WHOLE_LOG = 64 * 1024 * 1024  # bytes of a log read line by line (in memory): some 500,000 marked objects
LAST_WORDS = 600  # characters of wal-g's last log entry put in a timeout's message


def walg_spec():
    """Argument spec of the options every wal-g module shares (the ``pgops.resilience.walg`` doc fragment): ``prefix``,
    ``walg_bin``, ``walg_env``, ``timeout`` and the S3 connection options.

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    spec = dict(
        prefix=dict(type='str', required=True),
        walg_bin=dict(type='str', default='wal-g'),
        walg_env=dict(type='dict', default={}, no_log=True),
        timeout=dict(type='int', default=DEFAULT_TIMEOUT),
    )
    spec.update(s3_connection_spec())
    return spec


def storage_settings(prefix):
    """wal-g's storage setting for the ``prefix`` option: ``s3://bucket/path`` -> ``WALG_S3_PREFIX``;
    ``file:///abs/path`` or ``/abs/path`` -> ``WALG_FILE_PREFIX``.

    :returns: dict with the one setting (str -> str).
    :raises PgopsError: for anything else, naming the forms accepted.
    """
    text = (prefix or '').strip()
    if text.startswith('s3://'):
        parsed = urlparse(text)
        if parsed.netloc and not parsed.query and not parsed.fragment:
            return dict(WALG_S3_PREFIX=text.rstrip('/'))
    elif text.startswith('file://'):
        path = text[len('file://'):]
        if path.startswith('/') and path.rstrip('/'):
            return dict(WALG_FILE_PREFIX=path.rstrip('/'))
    elif text.startswith('/') and text.rstrip('/'):
        return dict(WALG_FILE_PREFIX=text.rstrip('/'))
    raise PgopsError('prefix %r is not a wal-g storage: give s3://bucket/path, or file:///absolute/path (or '
                     '/absolute/path) for a directory.' % (prefix,))


def walg_environment(params):
    """The settings that reach wal-g (dict str -> str): the storage of ``prefix``, the S3 credentials, region and
    endpoint from the collection's S3 options (an endpoint means path-style addressing, as MinIO and Ceph need),
    then ``walg_env``.

    :raises PgopsError: for a malformed prefix, ``validate_certs=false`` with S3, or a ``walg_env`` name that is not
        a ``WALG_*`` / ``AWS_*`` setting or that an option sets.
    """
    settings = storage_settings(params['prefix'])
    if 'WALG_S3_PREFIX' in settings and params.get('validate_certs') is False:
        raise PgopsError('validate_certs=false: wal-g has no setting that skips the check of the endpoint\'s '
                         'certificate; give its CA instead, walg_env: {WALG_S3_CA_CERT_FILE: /path/to/ca.pem}.')
    if 'WALG_S3_PREFIX' in settings:
        for option, name in (('access_key', 'AWS_ACCESS_KEY_ID'), ('secret_key', 'AWS_SECRET_ACCESS_KEY'),
                             ('session_token', 'AWS_SESSION_TOKEN'), ('region', 'AWS_REGION'), ('endpoint_url', 'AWS_ENDPOINT')):
            if params.get(option):
                settings[name] = str(params[option])
        if params.get('endpoint_url'):
            settings['AWS_S3_FORCE_PATH_STYLE'] = 'true'
    for name, value in sorted((params.get('walg_env') or {}).items()):
        if not _ENV_NAME.match(str(name)):
            raise PgopsError('walg_env: %r is not a wal-g setting; give WALG_* or AWS_* names, such as '
                             'WALG_COMPRESSION_METHOD.' % (name,))
        if name in _OWNED:
            raise PgopsError('walg_env: %s is set from the options (prefix, access_key, secret_key, session_token, '
                             'region, endpoint_url; delta_max_steps and user_data of walg_backup); give it there.' % name)
        settings[name] = '' if value is None else str(value)
    return settings


def walg_secrets(params):
    """The values to keep out of every message (list of str): the S3 secret key and session token, and every value
    of ``walg_env`` (such as ``WALG_LIBSODIUM_KEY``)."""
    values = [params.get(key) for key in ('secret_key', 'session_token')]
    values += [str(v) for v in (params.get('walg_env') or {}).values()]
    return [v for v in values if v]


class WalgCli:
    """wal-g on one storage. Settings go through the environment only: the command line is visible to every user
    of the host (``ps``), the environment is not.

    :param params: dict with the options of :func:`walg_spec` (the module's params).
    :param base_env: dict, the environment the settings are added to (default: this process's, without the
        ``WALG_*`` / ``AWS_*`` it inherited, so that only the options decide).
    :raises PgopsError: for a malformed prefix or ``walg_env``, or a wal-g that cannot be found.
    """

    def __init__(self, params, base_env=None):
        self.prefix = params['prefix']
        self.settings = walg_environment(params)
        self.secrets = walg_secrets(params)
        self.timeout = params.get('timeout') or DEFAULT_TIMEOUT
        self.program = find_walg(params.get('walg_bin') or 'wal-g')
        base = dict(os.environ if base_env is None else base_env)
        self.env = dict((k, v) for k, v in base.items() if not _ENV_NAME.match(k))
        self.env.update(self.settings)

    def output(self, args, what, timeout=None):
        """Run ``wal-g <args>`` and return its stdout (str, whole, spooled through an unnamed 0600 temporary file),
        for the commands that answer there (``backup-list --json``, ``st cat``). wal-g logs to stderr; its last lines
        are in the error when it fails.

        :param args: list of str.
        :param what: str, what the call does, for the error (``'listing the backups'``).
        :param timeout: seconds, default the ``timeout`` option.
        :raises PgopsError: naming what was being done and the storage, when wal-g exits non-zero or runs out of
            time, with wal-g's message, secrets masked (see :meth:`_bounded`).
        """
        return self._bounded(args, what, timeout, spool=True)

    def log(self, args, what, timeout=None, whole=False):
        """Run ``wal-g <args>`` and return what it logged (its stderr, the last 1 MiB), for the commands that report
        there (``backup-push``: ``Wrote backup with name ...``). Raises as :meth:`output` does.

        :param whole: bool, the caller reads every line (a ``delete`` dry run's "Object marked for deletion"): up to
            :data:`WHOLE_LOG` bytes are kept, and a longer log raises instead of losing its first lines.
        """
        return self._bounded(args, what, timeout, spool=False, whole=whole)

    def _bounded(self, args, what, timeout, spool, whole=False):
        """Run wal-g through the collection's runner for at most ``timeout`` seconds (default the ``timeout``
        option), killed with the module (``die_with_parent``: a wal-g that outlived a killed module would go on pushing
        or deleting unwatched), and return its stdout (``spool``) or its stderr.

        :raises PgopsError: when it runs out of time (with the last thing it logged, such as a connection refused by
            the endpoint it keeps retrying), or exits non-zero (its stderr's tail, and what to change when the S3
            endpoint refused the credentials). Secrets are masked in both.
        """
        limit = timeout or self.timeout
        cmd = [self.program] + list(args)
        described = 'wal-g %s (%s in %s)' % (args[0], what, self.prefix)
        try:
            if spool:
                return spooled_output(cmd, self.env, described, self.secrets, limit, die_with_parent=True)
            return run_program(cmd, self.env, described, self.secrets, limit, keep=WHOLE_LOG if whole else STDERR_KEEP,
                               complete=whole, die_with_parent=True)
        except PgopsError as exc:
            if 'did not finish within' in exc.msg:
                raise self._out_of_time(args[0], what, limit, exc.details.get('stderr', ''))
            raise self._refused(exc)

    def _out_of_time(self, command, what, limit, log):
        """The error of a call stopped at its bound: what it was doing, where, and the last entry of its log."""
        endpoint = self.settings.get('AWS_ENDPOINT')
        text = ('wal-g %s, %s in %s%s, did not finish within timeout=%d seconds and was stopped. wal-g retries an '
                'unreachable or failing storage instead of exiting: check prefix, endpoint_url and the credentials, or '
                'raise timeout.' % (command, what, self.prefix, ' (endpoint_url %s)' % endpoint if endpoint else '', limit))
        last = last_log_entry(log)
        if last:
            text += ' What wal-g logged last%s: %s' % (' as an error' if last.startswith('ERROR: ') else '', last)
        return PgopsError(text)

    def _refused(self, exc):
        """``exc`` (wal-g's failure) with what to change when the S3 endpoint refused the credentials."""
        if 'WALG_S3_PREFIX' not in self.settings:
            return exc
        said = exc.details.get('stderr') or exc.msg
        for code, meaning in _REFUSALS:
            if code in said:
                where = self.settings.get('AWS_ENDPOINT') or 'AWS S3'
                return PgopsError('%s. The S3 endpoint (%s) refused the credentials: %s. Give an access_key and '
                                  'secret_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY) that it accepts for %s.'
                                  % (exc.msg.rstrip('.'), where, meaning, self.prefix), **exc.details)
        return exc


def last_log_entry(log):
    """The last ``ERROR`` entry of wal-g's log ``log`` (str), else its last entry, continuation lines (``caused by:
    ...``) joined, at most :data:`LAST_WORDS` characters; '' when it logged nothing. An error first: wal-g follows a
    failed write ("no space left on device") with the INFO lines of its retries, which say nothing of the cause."""
    text = log or ''
    starts = [m.start() for m in _LOG_ENTRY.finditer(text)]
    entries = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])] or [text]
    errors = [e for e in entries if e.startswith('ERROR: ')]
    entry = ' '.join(line.strip() for line in (errors or entries)[-1].splitlines() if line.strip())
    return entry if len(entry) <= LAST_WORDS else entry[:LAST_WORDS] + '...'


def find_walg(name):
    """The path of the wal-g program ``name`` (a path, or a name looked up on ``PATH``).

    :raises PgopsError: when it is not there or not executable, with how to get it.
    """
    path = name if os.sep in name else shutil.which(name)
    if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
        raise PgopsError('wal-g (walg_bin=%s) was not found%s or is not executable. %s.'
                         % (name, '' if os.sep in name else ' on PATH', INSTALL_HINT))
    return path
