# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Objects in a bucket: listings (the one ``ListObjectsV2`` paginator of the collection), JSON documents, verified
uploads, conditional writes, downloads and deletions, each failure a :class:`PgopsError` naming the object.

:class:`Bucket` is the one wrapper of the S3 calls: the archive modules, the barman catalog and the object store
(:mod:`.store`) all go through it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._core.files import private_file, remove_quietly
from ansible_collections.pgops.resilience.plugins.module_utils._s3.client import (
    S3_ERRORS, ObjectExists, conditional_put, is_missing, s3_error)

DELETE_BATCH = 1000  # keys per DeleteObjects request, the S3 API's maximum


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
        except S3_ERRORS as exc:
            if is_missing(exc):
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
        except S3_ERRORS as exc:
            raise s3_error(exc, 'upload', self.bucket, self.key, self.endpoint_url)
        return dict(bucket=self.bucket, key=self.key, etag=response.get('ETag', '').strip('"'), size=len(body))


class Bucket:
    """The object operations of the collection on one bucket (the archive modules', the barman catalog's and the
    object store's), each turning botocore's errors into a :class:`PgopsError` that names the object.

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

    def pages(self, prefix, delimiter=None):
        """The ``ListObjectsV2`` pages under ``prefix`` (a key prefix), one at a time: a page holds at most 1,000 keys,
        so a listing of any size is read in bounded memory.

        :param delimiter: str or None; with ``'/'`` a page's ``CommonPrefixes`` are the "directories" one level down.
        :returns: iterator of the response dicts (``Contents``: ``Key``, ``Size``, ``LastModified``...).
        :raises PgopsError: naming the prefix and the endpoint when the listing fails.
        """
        request = dict(Bucket=self.bucket, Prefix=prefix)
        if delimiter:
            request['Delimiter'] = delimiter
        try:
            yield from self.client.get_paginator('list_objects_v2').paginate(**request)
        except S3_ERRORS as exc:
            raise self._error(exc, 'listing', prefix)

    def iter_objects(self, prefix):
        """Every object under ``prefix``, in key order (UTF-8 binary, as ``ListObjectsV2`` returns them), streamed
        page by page.

        :returns: iterator of dicts with ``key`` (str), ``size`` (bytes) and ``last_modified`` (aware datetime).
        :raises PgopsError: when the bucket cannot be listed.
        """
        for page in self.pages(prefix):
            for item in page.get('Contents', ()):
                yield dict(key=item['Key'], size=item['Size'], last_modified=item['LastModified'])

    def list(self, prefix):
        """Every object under ``prefix``, in key order.

        :returns: list of dicts with ``key`` (str), ``size`` (bytes) and ``last_modified`` (aware datetime).
        :raises PgopsError: when the bucket cannot be listed.
        """
        return sorted(self.iter_objects(prefix), key=lambda o: o['key'])

    def get(self, key, missing_ok=False, limit=None):
        """The bytes of ``key``; ``None`` when it does not exist and ``missing_ok``.

        :param limit: int or None: read at most ``limit + 1`` bytes (so a caller can tell an object larger than it
            expects without reading all of it).
        :raises PgopsError: naming the key when it does not exist (unless ``missing_ok``) or cannot be read.
        """
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)['Body']
            try:
                return body.read() if limit is None else body.read(limit + 1)
            finally:
                body.close()
        except S3_ERRORS as exc:
            if is_missing(exc):
                if missing_ok:
                    return None
                raise PgopsError('s3://%s/%s does not exist. List the archives (leave out s3_key) to see the keys.'
                                 % (self.bucket, key))
            raise self._error(exc, 'download', key)

    @contextlib.contextmanager
    def reading(self, key):
        """A context giving the body of ``key`` as a readable binary stream (read once, from the start, never held in
        memory whole); an S3 failure while it is open or read becomes a :class:`PgopsError` naming the key.

        :raises PgopsError: when the object does not exist or cannot be read.
        """
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)['Body']
            try:
                yield body
            finally:
                body.close()
        except S3_ERRORS as exc:
            raise self._error(exc, 'download', key)

    def exists(self, key):
        """True when ``key`` exists.

        :raises PgopsError: when the store cannot answer.
        """
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except S3_ERRORS as exc:
            if is_missing(exc):
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
        except S3_ERRORS as exc:
            raise self._error(exc, 'upload', key)
        etag = head.get('ETag', '').strip('"')
        if head.get('ContentLength') != len(body) or ('-' not in etag and etag and etag != md5.hexdigest()):
            raise PgopsError('s3://%s/%s: the stored object (%s bytes, ETag %s) differs from what was uploaded '
                             '(%d bytes, MD5 %s).' % (self.bucket, key, head.get('ContentLength'), etag, len(body),
                                                      md5.hexdigest()))
        return dict(key=key, size=len(body), etag=etag)

    def put_file(self, key, path):
        """Upload the local file ``path`` to ``key`` (in parts when it is large: boto3's ``upload_file``), then check
        with ``HeadObject`` that the store holds as many bytes as the file has.

        :returns: dict with ``key``, ``size`` (bytes) and ``etag``.
        :raises PgopsError: when the upload fails or the stored object has another size.
        """
        size = os.path.getsize(path)
        try:
            self.client.upload_file(path, self.bucket, key)
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except S3_ERRORS as exc:
            raise self._error(exc, 'upload', key)
        if head.get('ContentLength') != size:
            raise PgopsError('s3://%s/%s: the stored object has %s bytes, but %d were uploaded.'
                             % (self.bucket, key, head.get('ContentLength'), size))
        return dict(key=key, size=size, etag=head.get('ETag', '').strip('"'))

    def download(self, key, path, missing_ok=False):
        """Download ``key`` into a new file ``path``, created 0600 (:func:`private_file`: an object can hold data).

        :returns: True; False when the object does not exist and ``missing_ok`` (nothing is left at ``path`` then).
        :raises PgopsError: when it does not exist (unless ``missing_ok``) or cannot be downloaded.
        """
        try:
            with private_file(path) as out:
                self.client.download_fileobj(self.bucket, key, out)
        except S3_ERRORS as exc:
            remove_quietly(path)
            if missing_ok and is_missing(exc):
                return False
            raise self._error(exc, 'download', key)
        return True

    def delete(self, *keys):
        """Delete ``keys`` (a missing key is not an error).

        :raises PgopsError: when a deletion fails.
        """
        for key in keys:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except S3_ERRORS as exc:
                raise self._error(exc, 'deletion', key)

    def delete_prefix(self, prefix):
        """Delete every object under ``prefix`` (streamed, in ``DeleteObjects`` requests of :data:`DELETE_BATCH`
        keys), then check that none is left.

        :returns: int, the number of objects deleted.
        :raises PgopsError: naming the prefix when a deletion fails or objects remain (object locks, permissions).
        """
        deleted = 0
        batch = []
        for item in self.iter_objects(prefix):
            batch.append(item['key'])
            if len(batch) == DELETE_BATCH:
                deleted += self._delete_batch(prefix, batch)
                batch = []
        if batch:
            deleted += self._delete_batch(prefix, batch)
        if next(iter(self.iter_objects(prefix)), None) is not None:
            raise PgopsError('Objects remain under s3://%s/%s after deleting them; check object locks and permissions.'
                             % (self.bucket, prefix))
        return deleted

    def _delete_batch(self, prefix, keys):
        """One ``DeleteObjects`` request (quiet: the answer lists only failures); returns ``len(keys)``."""
        try:
            response = self.client.delete_objects(Bucket=self.bucket, Delete=dict(Objects=[dict(Key=k) for k in keys], Quiet=True))
        except S3_ERRORS as exc:
            raise self._error(exc, 'deletion', prefix)
        if response.get('Errors'):
            first = response['Errors'][0]
            raise PgopsError('Deleting under s3://%s/%s failed for %d object(s), e.g. %s: %s'
                             % (self.bucket, prefix, len(response['Errors']), first.get('Key'), first.get('Message')))
        return len(keys)
