# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where backup bundles (logical dumps, base backups) are kept: a directory or an S3 bucket."""

from __future__ import annotations


class ModuleDocFragment:
    """The bundle store options; the S3 connection options come from the pgops.resilience.s3 fragment. FILE_MODE
    (``pgops.resilience.bundle_store.file_mode``) is the ``mode`` option of the modules that write bundles."""

    DOCUMENTATION = r'''
options:
  directory:
    description:
      - Local directory that holds the bundles, such as the mount point of the backups volume (V(/backups)).
      - Each bundle is a C(.tar.gz) archive with a C(.sha256) file beside it, written under a temporary name and
        renamed into place once complete, so a reader never sees a partial bundle.
      - Only files named like the module's bundles count; anything else in the directory is left alone.
      - Exactly one of O(directory) and O(bucket) is required.
    type: path
  bucket:
    description:
      - S3 bucket that holds the bundles, under O(prefix). The archive is uploaded (multipart when large), then
        its C(.sha256) file, and the stored size is checked.
      - Exactly one of O(directory) and O(bucket) is required.
    type: str
  prefix:
    description:
      - Key prefix of the bundles in O(bucket), without a trailing slash (V(backups/records)).
    type: str
    default: ''
'''

    FILE_MODE = r'''
options:
  mode:
    description:
      - Permissions of the bundle and its C(.sha256) in O(directory) - V('0600'), V('0640') or V('0660'), as a quoted
        octal string. V('0640') or V('0660') let a group read them, such as the C(fsGroup) of a job that copies the
        backups volume off-site.
      - Never readable by others - a bundle holds all the data of the server or database it was taken from (and a
        logical dump's C(globals.sql) the roles' password hashes).
      - Everything else the module writes, the backup while it is built and the copy uploaded from O(scratch_dir), is
        always 0600.
    type: raw
    default: '0600'
'''
