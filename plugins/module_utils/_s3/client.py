# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one S3 client factory of the collection, its options, and S3 errors as clear messages."""

from __future__ import annotations

import traceback
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.redaction import redact
from ansible_collections.pgops.resilience.plugins.module_utils._core.requirements import require_library
try:
    import boto3
    import boto3.exceptions
    import botocore.config
    import botocore.exceptions
    import s3transfer.exceptions
except ImportError:  # pragma: no cover - reported by require_boto3()
    boto3 = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()
    S3_ERRORS = ()
else:
    BOTO3_IMPORT_ERROR = None
    # What a botocore call raises: the store's answer (ClientError) or no answer (BotoCoreError: connection,
    # timeout, credentials, a body that broke off while read); and what boto3's managed transfers (upload_file,
    # download_fileobj) raise in their place: S3UploadFailedError (a Boto3Error) wrapping the answer, and
    # s3transfer's RetriesExceededError. Empty without boto3, which require_boto3() reports.
    S3_ERRORS = (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError, boto3.exceptions.Boto3Error,
                 s3transfer.exceptions.RetriesExceededError)


# Attempts per request, counting the first (botocore "adaptive" retry mode, which also rate-limits
# the client when the store answers SlowDown / 503).
MAX_ATTEMPTS = 5


CONNECT_TIMEOUT = 5  # seconds


READ_TIMEOUT = 60  # seconds


def require_boto3():
    """Raise :class:`PgopsError` saying how to install boto3 when it cannot be imported."""
    require_library('boto3', boto3 is not None, 'pip install boto3', BOTO3_IMPORT_ERROR)


def is_aws_endpoint(endpoint_url):
    """True for AWS S3 itself (no endpoint, or an ``amazonaws.com`` host)."""
    if not endpoint_url:
        return True
    host = endpoint_url.split('://', 1)[-1].split('/', 1)[0].split(':', 1)[0]
    return host.endswith('.amazonaws.com') or host.endswith('.amazonaws.com.cn')


def s3_client(endpoint_url=None, region='us-east-1', access_key=None, secret_key=None, session_token=None,
              validate_certs=True):
    """Build a boto3 S3 client.

    Credentials left ``None`` fall to boto3's own chain (environment, shared config, web identity). For
    endpoints other than AWS: path-style addressing, and botocore's request checksums / response
    validation only ``when_required`` (botocore >= 1.36 adds CRC32 checksums by default, which many
    S3-compatible stores reject).

    :returns: a ``botocore.client.S3`` client.
    :raises PgopsError: when boto3 is missing, or ``endpoint_url`` or ``region`` is not valid.
    """
    require_boto3()
    options = dict(region_name=region, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                   retries={'mode': 'adaptive', 'max_attempts': MAX_ATTEMPTS})
    if not is_aws_endpoint(endpoint_url):
        options['s3'] = {'addressing_style': 'path'}
        options.update(request_checksum_calculation='when_required', response_checksum_validation='when_required')
    try:
        config = botocore.config.Config(**options)
    except TypeError:  # botocore older than 1.36 has neither checksum setting, and sends no default checksums
        options.pop('request_checksum_calculation', None)
        options.pop('response_checksum_validation', None)
        config = botocore.config.Config(**options)
    try:
        session = boto3.session.Session(aws_access_key_id=access_key or None, aws_secret_access_key=secret_key or None,
                                        aws_session_token=session_token or None, region_name=region)
        return session.client('s3', endpoint_url=endpoint_url or None, verify=validate_certs, config=config)
    except (ValueError, botocore.exceptions.BotoCoreError) as exc:
        raise PgopsError('Cannot set up an S3 client for endpoint_url %r, region %r: %s. An endpoint looks like '
                         'https://minio.example:9000; a region like eu-west-1.' % (endpoint_url, region, exc))


def client_from_params(params):
    """:func:`s3_client` from a dict holding the options of :func:`s3_connection_spec`."""
    return s3_client(params.get('endpoint_url'), params.get('region') or 'us-east-1', params.get('access_key'),
                     params.get('secret_key'), params.get('session_token'), params.get('validate_certs', True))


def s3_error(exc, action, bucket, key, endpoint_url, secrets=()):
    """A :class:`PgopsError` for a failed S3 call that names the object, the endpoint and the reason.

    :param exc: the botocore exception.
    :param action: what was attempted, such as ``'upload'``.
    """
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get('Error', {})
        reason = '%s: %s' % (error.get('Code', 'error'), error.get('Message', str(exc)))
    else:
        reason = str(exc)
    where = endpoint_url or 'AWS S3'
    return PgopsError('S3 %s of s3://%s/%s at %s failed: %s. Check endpoint_url, the bucket name and the credentials.'
                      % (action, bucket, key, where, redact(reason, secrets)))


class ObjectExists(PgopsError):
    """A write that must not replace an object found one there (``If-None-Match: *`` answered 412)."""


def _precondition_failed(exc):
    """True when a conditional write was refused because the object exists (412, or 409 for a write racing another)."""
    return isinstance(exc, botocore.exceptions.ClientError) and \
        exc.response.get('Error', {}).get('Code') in ('PreconditionFailed', 'ConditionalRequestConflict', '412', '409')


def _not_implemented(exc):
    """True when the store does not know a request header (an S3-compatible store without conditional writes)."""
    return isinstance(exc, botocore.exceptions.ClientError) and \
        exc.response.get('Error', {}).get('Code') in ('NotImplemented', '501')


# The error codes of "there is no such object": GetObject answers NoSuchKey; HeadObject has no body, so botocore
# reports its bare status, 404 (or NotFound on some S3-compatible stores).
MISSING_CODES = ('NoSuchKey', '404', 'NotFound')


def is_missing(exc):
    """True when an exception of a botocore call (see :data:`S3_ERRORS`) says the object does not exist
    (:data:`MISSING_CODES`); False for every other error, including no answer at all.

    :param exc: any exception.
    """
    return isinstance(exc, botocore.exceptions.ClientError) and \
        exc.response.get('Error', {}).get('Code') in MISSING_CODES


def conditional_put(client, only_if_absent, **request):
    """``put_object(**request)``; with ``only_if_absent`` it carries ``If-None-Match: *`` (S3 conditional writes),
    so that an object already at the key is never replaced.

    A store that does not implement conditional writes (501) gets the plain request again: callers still hold their
    own lock and check for the key first, so the condition is a second guard, against writers that do not.

    :returns: the ``put_object`` response.
    :raises ObjectExists: when the store refuses because an object is there.
    :raises botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError: for other failures.
    """
    if not only_if_absent:
        return client.put_object(**request)
    try:
        return client.put_object(IfNoneMatch='*', **request)
    except botocore.exceptions.ClientError as exc:
        if _precondition_failed(exc):
            raise ObjectExists('s3://%s/%s exists already.' % (request.get('Bucket'), request.get('Key')))
        if not _not_implemented(exc):
            raise
    return client.put_object(**request)
