# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Objects in a bucket: JSON documents, verified uploads, conditional writes, listings."""

from __future__ import annotations

import base64
import hashlib
import json

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import (
    ObjectExists, _missing, conditional_put, s3_error)
try:
    import botocore.exceptions
except ImportError:  # pragma: no cover - reported by _s3.client.require_boto3()
    botocore = None


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
