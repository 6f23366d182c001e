# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the modules that drive barman's cloud CLIs."""

from __future__ import annotations


class ModuleDocFragment:
    """The barman-cloud catalog (destination and server name) and where barman's programs are."""

    DOCUMENTATION = r'''
options:
  destination_path:
    description:
      - The catalog's location, as barman-cloud takes it, C(s3://bucket/prefix) (CloudNativePG's ObjectStore
        C(destinationPath)).
    type: str
    required: true
  server_name:
    description:
      - The barman server name, the directory under O(destination_path) that holds C(base/) and C(wals/)
        (CloudNativePG's C(serverName), by default the Cluster's name).
    type: str
    required: true
  barman_bin_dir:
    description:
      - Directory holding barman's cloud programs (C(barman-cloud-backup-delete), C(barman-cloud-restore),
        C(barman-cloud-wal-restore)). When unset they are looked up on E(PATH).
    type: path
notes:
  - Needs barman's cloud programs (C(pip install "barman[cloud]"), or the C(barman-cli-cloud) package) on the host
    that runs the module. The S3 credentials reach them through the environment, never the command line.
'''
