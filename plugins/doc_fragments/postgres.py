# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options shared by every module that talks to PostgreSQL."""

from __future__ import annotations


class ModuleDocFragment:
    """The PostgreSQL connection options, named as community.postgresql names them."""

    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host name or IP address of the PostgreSQL server, or the directory of its Unix socket (a value
        starting with C(/)).
      - Falls back to the E(PGHOST) environment variable; when neither is set, libpq's default socket is used.
    type: str
  login_port:
    description:
      - TCP port of the server (also the suffix of the Unix socket file name).
      - Falls back to the E(PGPORT) environment variable.
    type: int
    default: 5432
  login_user:
    description:
      - Role to connect as.
      - Falls back to the E(PGUSER) environment variable.
    type: str
    default: postgres
  login_password:
    description:
      - Password of O(login_user).
      - Falls back to the E(PGPASSWORD) environment variable. When unset, libpq looks in its password
        file (E(PGPASSFILE), default C(~/.pgpass)).
      - Never written to output or logs.
    type: str
  login_db:
    description:
      - Database to connect to.
      - Falls back to the E(PGDATABASE) environment variable; when neither is set, libpq uses O(login_user).
    type: str
  ssl_mode:
    description:
      - libpq C(sslmode), see the PostgreSQL documentation, section "SSL Support" of libpq.
      - Falls back to the E(PGSSLMODE) environment variable.
    type: str
    default: prefer
    choices: [allow, disable, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - File with the certificate authorities that sign the server certificate (libpq C(sslrootcert)).
      - Falls back to the E(PGSSLROOTCERT) environment variable.
    type: path
  connect_timeout:
    description:
      - Seconds to wait for the connection to be made (libpq C(connect_timeout)).
      - Falls back to the E(PGCONNECT_TIMEOUT) environment variable.
    type: int
    default: 10
  connect_params:
    description:
      - Further libpq connection parameters as a dict, for example keys C(application_name) or C(target_session_attrs).
      - They override the options above and the keys of O(conninfo).
    type: dict
    default: {}
  conninfo:
    description:
      - A complete libpq connection string, either C(key=value) pairs or a C(postgresql://) URI, as held by
        the Kubernetes Secret of an application.
      - When set, O(login_host), O(login_port), O(login_user), O(login_password), O(login_db), O(ssl_mode) and
        O(ca_cert) are ignored; libpq reads its own environment variables for anything the string leaves out.
      - Treated as a secret, because it may hold a password.
    type: str
notes:
  - Requires the C(psycopg2) Python library on the host that runs the module.
  - Every SQL identifier is quoted by C(psycopg2.sql); names are never pasted into SQL text.
requirements:
  - psycopg2 >= 2.8
'''
