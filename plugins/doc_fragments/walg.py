# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that drive wal-g."""

from __future__ import annotations


class ModuleDocFragment:
    """The wal-g storage, the wal-g program, further wal-g settings and the bound on every call."""

    DOCUMENTATION = r'''
options:
  prefix:
    description:
      - Where wal-g keeps the backups and the WAL, C(s3://bucket/path) (wal-g's E(WALG_S3_PREFIX)), or a directory,
        C(file:///absolute/path) or C(/absolute/path) (E(WALG_FILE_PREFIX)).
      - With C(s3://), the S3 options (O(endpoint_url), O(region), O(access_key), O(secret_key), O(session_token))
        reach wal-g as E(AWS_ENDPOINT) (with E(AWS_S3_FORCE_PATH_STYLE=true)), E(AWS_REGION), E(AWS_ACCESS_KEY_ID),
        E(AWS_SECRET_ACCESS_KEY) and E(AWS_SESSION_TOKEN). O(validate_certs=false) is refused (wal-g cannot skip the
        check); give E(WALG_S3_CA_CERT_FILE) in O(walg_env).
    type: str
    required: true
  walg_bin:
    description:
      - The wal-g program, a path or a name looked up on E(PATH).
    type: str
    default: wal-g
  walg_env:
    description:
      - Further wal-g settings, C(WALG_*) or C(AWS_*) names, such as C(WALG_COMPRESSION_METHOD) or
        C(WALG_LIBSODIUM_KEY). Every value is kept out of the output and the logs.
      - Names that the options above set are refused (give them there).
    type: dict
    default: {}
  timeout:
    description:
      - Seconds each wal-g call may take; it is stopped after that. wal-g retries an unreachable storage instead of
        exiting, so the message then says what was being done and where.
    type: int
    default: 3600
notes:
  - Settings reach wal-g through its environment only, never its command line (which every user of the host can
    read). wal-g variables inherited from the environment of the module are not passed on, so that only the options
    decide.
'''
