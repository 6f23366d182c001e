# -*- coding: utf-8 -*-
"""Search outputs and written files for secrets, and report where each one leaked.

A :class:`SecretGrep` holds the secrets of a test by label (``{'sandbox password': ..., 'S3 secret key': ...}``)
and searches texts (module stdout/stderr, ``ansible-playbook -vvv`` output, S3 objects) and every file under
directories (bytes, so binary files count too). gzip files are searched decompressed as well, since a secret in
a compressed member would not show as bytes. Failure messages name the label, the place and the byte offset,
and show the surrounding bytes with the secret replaced by ``<label>``: the report itself leaks nothing. A test
names the places where a secret is expected (``allowed``: a base backup's copy of the server's own settings file)
and the directories not to read (``skip``: a restored data directory).
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zlib

_CONTEXT = 40  # bytes shown on each side of a leak


def _tar_members(data):
    """``[(name, bytes)]`` of the regular files of a tar archive in ``data``, or None when it is not one."""
    if len(data) < 512 or data[257:262] != b'ustar':
        return None
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode='r:') as tar:
            return [(m.name, tar.extractfile(m).read() if m.isfile() else b'') for m in tar]
    except tarfile.TarError:
        return None


class Leak(str):
    """One place a secret was found: the text ``<where>: <label> at byte <offset>: ...<context>...`` (a str), with
    ``where`` and ``label`` as attributes."""

    def __new__(cls, where, label, offset, context):
        leak = str.__new__(cls, '%s: %s at byte %d: ...%r...' % (where, label, offset, context))
        leak.where, leak.label = where, label
        return leak


class SecretGrep:
    """The secrets of one test.

    :param secrets: dict ``{label: secret (str)}``; empty values and values under 6 characters are refused (they
        would match ordinary text).
    """

    def __init__(self, secrets):
        self.secrets = {}
        for label, value in secrets.items():
            if not value or len(value) < 6:
                raise ValueError('secret %r is too short to search for reliably' % label)
            self.secrets[label] = value.encode('utf-8')

    def add(self, label, value):
        """Search for one more secret."""
        self.secrets[label] = value.encode('utf-8')

    # -- searching -------------------------------------------------------------------------------------

    def _scan(self, where, data):
        leaks = []
        for label, secret in self.secrets.items():
            start = data.find(secret)
            while start >= 0:
                before = data[max(0, start - _CONTEXT):start]
                after = data[start + len(secret):start + len(secret) + _CONTEXT]
                context = (before + b'<' + label.encode() + b'>' + after)
                for other in self.secrets.values():
                    context = context.replace(other, b'<secret>')
                leaks.append(Leak(where, label, start, context))
                start = data.find(secret, start + 1)
        return leaks

    def leaks_in_texts(self, texts):
        """Leaks in ``texts`` (dict ``{name: str or bytes}``); list of str."""
        leaks = []
        for name, text in texts.items():
            data = text.encode('utf-8', 'surrogateescape') if isinstance(text, str) else (text or b'')
            leaks += self._scan_any(name, data)
        return leaks

    def leaks_in_dirs(self, *directories, skip=()):
        """Leaks in every regular file under ``directories`` (symbolic links not followed), not under the
        directories ``skip``; list of str."""
        leaks = []
        skipped = set(os.path.realpath(str(path)) for path in skip)
        for directory in directories:
            for current, dirs, files in os.walk(str(directory)):
                dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(current, d)) not in skipped]
                for name in files:
                    path = os.path.join(current, name)
                    if os.path.islink(path) or not os.path.isfile(path):
                        continue
                    with open(path, 'rb') as handle:
                        leaks += self._scan_any(path, handle.read())
        return leaks

    def _scan_any(self, where, data):
        """A gzip stream is searched decompressed, a tar archive member by member (names included), so that a
        leak is reported as ``bundle.tar.gz (gunzipped)!pg_settings.tsv at byte N``; anything else as bytes."""
        if data.startswith(b'\x1f\x8b'):
            try:
                plain = gzip.decompress(data)
            except (OSError, EOFError, zlib.error):
                return self._scan(where, data)
            return self._scan_any(where + ' (gunzipped)', plain)
        members = _tar_members(data)
        if members is None:
            return self._scan(where, data)
        leaks = []
        for name, content in members:
            leaks += self._scan('%s!member name' % where, name.encode('utf-8', 'surrogateescape'))
            leaks += self._scan_any('%s!%s' % (where, name), content)
        return leaks

    # -- asserting -------------------------------------------------------------------------------------

    def assert_clean(self, texts=None, dirs=(), allowed=(), skip=()):
        """Raise AssertionError listing every leak in ``texts`` (dict) and under ``dirs`` (not under ``skip``), but
        those ``allowed``.

        :param allowed: ``(place suffix, labels)`` pairs: a leak of one of ``labels`` whose place ends with the
            suffix is expected (a copy of the server's own configuration file in a base backup, say).
        :returns: the allowed leaks found (list of :class:`Leak`).
        """
        leaks = self.leaks_in_texts(texts or {}) + self.leaks_in_dirs(*dirs, skip=skip)
        expected = [leak for leak in leaks if any(leak.where.endswith(suffix) and leak.label in labels
                                                  for suffix, labels in allowed)]
        unexpected = [leak for leak in leaks if leak not in expected]
        if unexpected:
            raise AssertionError('%d secret leak(s):\n%s' % (len(unexpected), '\n'.join(unexpected[:50])))
        return expected
