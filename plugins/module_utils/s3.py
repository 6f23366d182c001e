# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one S3 client factory of the collection, JSON object reads and writes, and the verified object
operations of the archive modules, all with clear errors."""

from __future__ import annotations

import base64
import hashlib
import json
import traceback

from ansible.module_utils.basic import env_fallback

from ansible_collections.pgops.resilience.plugins.module_utils.common import PgopsError, redact

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # pragma: no cover - reported by require_boto3()
    boto3 = None
    BOTO3_IMPORT_ERROR = traceback.format_exc()
else:
    BOTO3_IMPORT_ERROR = None

# Attempts per request, counting the first (botocore "adaptive" retry mode, which also rate-limits
# the client when the store answers SlowDown / 503).
MAX_ATTEMPTS = 5
CONNECT_TIMEOUT = 5  # seconds
READ_TIMEOUT = 60  # seconds


def s3_connection_spec():
    """Argument spec of the options documented in the ``pgops.resilience.s3`` doc fragment.

    Fallbacks are the AWS SDK's environment variables. Used top-level, or as the ``options`` of a dict
    option such as ``pg_unlogged_rebuild``'s ``watermark``.

    :returns: dict for an ``AnsibleModule`` argument_spec.
    """
    return dict(
        endpoint_url=dict(type='str', fallback=(env_fallback, ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL'])),
        region=dict(type='str', default='us-east-1', fallback=(env_fallback, ['AWS_REGION', 'AWS_DEFAULT_REGION'])),
        access_key=dict(type='str', no_log=False, fallback=(env_fallback, ['AWS_ACCESS_KEY_ID'])),
        secret_key=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SECRET_ACCESS_KEY'])),
        session_token=dict(type='str', no_log=True, fallback=(env_fallback, ['AWS_SESSION_TOKEN'])),
        validate_certs=dict(type='bool', default=True),
    )


def require_boto3():
    """Raise :class:`PgopsError` saying how to install boto3 when it cannot be imported."""
    if boto3 is None:
        raise PgopsError('The boto3 Python library is required on the host that runs this module: pip install boto3.',
                         exception=BOTO3_IMPORT_ERROR)


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


def _missing(exc):
    """True when a botocore error says the object does not exist."""
    return isinstance(exc, botocore.exceptions.ClientError) and \
        exc.response.get('Error', {}).get('Code') in ('NoSuchKey', '404', 'NotFound')


class JsonObject:
    """One JSON document at ``s3://bucket/key``, such as a watermark.

    :param client: boto3 S3 client (see :func:`s3_client`).
    :param bucket: str.
    :param key: str, the object key.
    :param endpoint_url: str or None, only for error messages.
    """

    def __init__(self, client, bucket, key, endpoint_url=None):
        self.client = client
        self.bucket = bucket
        self.key = key
        self.endpoint_url = endpoint_url

    @property
    def url(self):
        """``s3://bucket/key``."""
        return 's3://%s/%s' % (self.bucket, self.key)

    def read(self):
        """Return the parsed document (a dict), or ``None`` when the object does not exist.

        :raises PgopsError: when the store cannot be reached or refuses, or the object is not a JSON object.
        """
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            body = response['Body'].read()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if _missing(exc):
                return None
            raise s3_error(exc, 'download', self.bucket, self.key, self.endpoint_url)
        try:
            document = json.loads(body.decode('utf-8'))
        except ValueError as exc:
            raise PgopsError('%s is not a JSON document (%s); move it away or delete it to start afresh.' % (self.url, exc))
        if not isinstance(document, dict):
            raise PgopsError('%s holds JSON but not an object; move it away or delete it to start afresh.' % self.url)
        return document

    def write(self, document, only_if_absent=False):
        """Upload ``document`` (a dict) as pretty, key-sorted JSON; values JSON cannot hold are written as text.

        :param only_if_absent: write only when no object exists at the key (see :func:`conditional_put`); an object
            there that holds exactly this document (an earlier attempt of this write, whose answer was lost) counts as
            written.
        :returns: dict with ``bucket``, ``key``, ``etag`` and ``size`` (bytes).
        :raises ObjectExists: with ``only_if_absent``, when another object is there.
        :raises PgopsError: when the upload fails.
        """
        body = (json.dumps(document, indent=2, sort_keys=True, default=str) + '\n').encode('utf-8')
        try:
            response = conditional_put(self.client, only_if_absent, Bucket=self.bucket, Key=self.key, Body=body,
                                       ContentType='application/json')
        except ObjectExists:
            stored = Bucket(self.client, self.bucket, self.endpoint_url).get(self.key, missing_ok=True)
            if stored != body:
                raise ObjectExists('s3://%s/%s exists already.' % (self.bucket, self.key))
            response = {}
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise s3_error(exc, 'upload', self.bucket, self.key, self.endpoint_url)
        return dict(bucket=self.bucket, key=self.key, etag=response.get('ETag', '').strip('"'), size=len(body))


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


class Bucket:
    """The object operations the archive modules need on one bucket, each turning botocore's errors into
    a :class:`PgopsError` that names the object.

    :param client: boto3 S3 client (see :func:`s3_client`).
    :param bucket: str.
    :param endpoint_url: str or None, only for error messages.
    """

    def __init__(self, client, bucket, endpoint_url=None):
        self.client = client
        self.bucket = bucket
        self.endpoint_url = endpoint_url

    def _error(self, exc, action, key):
        return s3_error(exc, action, self.bucket, key, self.endpoint_url)

    def json_object(self, key):
        """A :class:`JsonObject` at ``key`` of this bucket."""
        return JsonObject(self.client, self.bucket, key, self.endpoint_url)

    def list(self, prefix):
        """Every object under ``prefix``, in key order.

        :returns: list of dicts with ``key`` (str), ``size`` (bytes) and ``last_modified`` (aware datetime).
        :raises PgopsError: when the bucket cannot be listed.
        """
        objects = []
        try:
            for page in self.client.get_paginator('list_objects_v2').paginate(Bucket=self.bucket, Prefix=prefix):
                objects.extend(dict(key=o['Key'], size=o['Size'], last_modified=o['LastModified'])
                               for o in page.get('Contents', ()))
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, 'listing', prefix)
        return sorted(objects, key=lambda o: o['key'])

    def get(self, key, missing_ok=False):
        """The bytes of ``key``; ``None`` when it does not exist and ``missing_ok``.

        :raises PgopsError: naming the key when it does not exist (unless ``missing_ok``) or cannot be read.
        """
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)['Body'].read()
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if _missing(exc):
                if missing_ok:
                    return None
                raise PgopsError('s3://%s/%s does not exist. List the archives (leave out s3_key) to see the keys.'
                                 % (self.bucket, key))
            raise self._error(exc, 'download', key)

    def exists(self, key):
        """True when ``key`` exists."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if _missing(exc):
                return False
            raise self._error(exc, 'lookup', key)

    def put_verified(self, key, body, content_type, only_if_absent=False):
        """Upload ``body`` (bytes) and check that the store holds exactly it.

        The upload carries ``Content-MD5``, so the store refuses a body damaged on the way; afterwards
        ``HeadObject`` must report the same size and, for a single-part upload, an ETag equal to the MD5
        (the S3 API's documented ETag of a non-encrypted single-part object).

        :param only_if_absent: never replace an object at ``key`` (see :func:`conditional_put`); an object there with
            this body's size and MD5 (an earlier attempt of this upload, whose answer was lost) counts as uploaded.
        :returns: dict with ``key``, ``size`` (bytes) and ``etag``.
        :raises ObjectExists: with ``only_if_absent``, when another object is there (it is left as it is).
        :raises PgopsError: when the upload fails or the stored object differs.
        """
        md5 = hashlib.md5(body)  # nosec - integrity check required by the S3 API, not a security use
        try:
            try:
                conditional_put(self.client, only_if_absent, Bucket=self.bucket, Key=key, Body=body,
                                ContentType=content_type, ContentMD5=base64.b64encode(md5.digest()).decode('ascii'))
            except ObjectExists:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
                if head.get('ContentLength') != len(body) or head.get('ETag', '').strip('"') != md5.hexdigest():
                    raise ObjectExists('s3://%s/%s exists already, with other content.' % (self.bucket, key))
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, 'upload', key)
        etag = head.get('ETag', '').strip('"')
        if head.get('ContentLength') != len(body) or ('-' not in etag and etag and etag != md5.hexdigest()):
            raise PgopsError('s3://%s/%s: the stored object (%s bytes, ETag %s) differs from what was uploaded '
                             '(%d bytes, MD5 %s).' % (self.bucket, key, head.get('ContentLength'), etag, len(body),
                                                      md5.hexdigest()))
        return dict(key=key, size=len(body), etag=etag)

    def delete(self, *keys):
        """Delete ``keys`` (a missing key is not an error).

        :raises PgopsError: when a deletion fails.
        """
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
                raise self._error(exc, 'deletion', key)
