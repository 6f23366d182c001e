# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""S3 connection options shared by every module that reads or writes objects."""

from __future__ import annotations


class ModuleDocFragment:
    """S3 endpoint and credential options (the AWS SDK's environment variables are the fallbacks)."""

    DOCUMENTATION = r'''
options:
  endpoint_url:
    description:
      - URL of an S3-compatible endpoint (MinIO, Ceph RGW, moto's server). Leave unset for AWS S3.
      - With an endpoint set, path-style addressing is used and botocore's optional request and response
        checksums are only sent or checked when the operation requires them, since many S3-compatible
        stores reject them.
      - Falls back to the E(AWS_ENDPOINT_URL_S3) and then E(AWS_ENDPOINT_URL) environment variables.
    type: str
  region:
    description:
      - Region of the bucket.
      - Falls back to the E(AWS_REGION) and then E(AWS_DEFAULT_REGION) environment variables.
    type: str
    default: us-east-1
  access_key:
    description:
      - Access key ID. When unset (and E(AWS_ACCESS_KEY_ID) is unset), boto3's own credential chain is
        used (shared config, instance profile, IRSA web identity).
      - Falls back to the E(AWS_ACCESS_KEY_ID) environment variable.
    type: str
  secret_key:
    description:
      - Secret access key. Never written to output or logs.
      - Falls back to the E(AWS_SECRET_ACCESS_KEY) environment variable.
    type: str
  session_token:
    description:
      - Session token of temporary credentials.
      - Falls back to the E(AWS_SESSION_TOKEN) environment variable.
    type: str
  validate_certs:
    description:
      - Whether to verify the endpoint's TLS certificate.
    type: bool
    default: true
requirements:
  - boto3 >= 1.34
'''
