# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The watermark location, shared by pg_unlogged_rebuild (which writes it) and cnpg_cluster_info (which reads it)."""

from __future__ import annotations


class ModuleDocFragment:
    """The C(watermark) option: an S3 object and how to reach it. A module may override its description."""

    DOCUMENTATION = r'''
options:
  watermark:
    description:
      - S3 location of the watermark, the JSON record of the last run of M(pgops.resilience.pg_unlogged_rebuild).
    type: dict
    suboptions:
      bucket:
        description: Bucket name.
        type: str
        required: true
      key:
        description: Object key.
        type: str
        default: state/unlogged-watermark.json
      endpoint_url:
        description:
          - URL of an S3-compatible endpoint; unset for AWS S3. With an endpoint, path-style addressing is
            used and optional checksums are only sent when required.
          - Falls back to E(AWS_ENDPOINT_URL_S3), then E(AWS_ENDPOINT_URL).
        type: str
      region:
        description: Region of the bucket. Falls back to E(AWS_REGION), then E(AWS_DEFAULT_REGION).
        type: str
        default: us-east-1
      access_key:
        description:
          - Access key ID. Falls back to E(AWS_ACCESS_KEY_ID); when neither is set, boto3's credential chain is used.
        type: str
      secret_key:
        description: Secret access key, never shown. Falls back to E(AWS_SECRET_ACCESS_KEY).
        type: str
      session_token:
        description: Session token of temporary credentials. Falls back to E(AWS_SESSION_TOKEN).
        type: str
      validate_certs:
        description: Whether to verify the endpoint's TLS certificate.
        type: bool
        default: true
requirements:
  - boto3 >= 1.34
'''
