# -*- coding: utf-8 -*-
"""Rows of a table and rows in its archives, as texts that can be counted: the check that no row was lost or
duplicated by a fault (table rows + archived rows == the original rows, exactly)."""

from __future__ import annotations

import collections
import gzip

from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt

from ..archive_helpers import json_rows, list_keys, query

_METADATA_START = b',"_archived_at":'

# Rows with the characters that break hand-made encodings (tab, backslash, quotes, newline, non-ASCII), NULLs,
# numerics, jsonb, bytea and timestamps, one minute apart from 2025-01-01.
_SOURCE = r"""
CREATE TABLE {table} (id bigint PRIMARY KEY, payload text, amount numeric(14,3), doc jsonb, raw bytea,
                      created_at timestamptz NOT NULL);
INSERT INTO {table}
SELECT g, CASE WHEN g % 50 = 0 THEN NULL ELSE md5(g::text) || E'\t\\ "q" ''s é\n中' END, g * 1.125,
       CASE WHEN g % 7 = 0 THEN NULL ELSE jsonb_build_object('g', g, 's', E'x\ny', 'n', NULL) END,
       decode(md5(g::text), 'hex'), timestamptz '2025-01-01 00:00:00+00' + g * interval '1 minute'
FROM generate_series(1, {rows}) AS g;
"""


def create_source_table(sandbox, dbname, table, rows):
    """Create and fill ``table`` (a plain name) with ``rows`` rows, ids 1..rows (see ``_SOURCE``)."""
    query(sandbox, dbname, _SOURCE.format(table=table, rows=int(rows)))


def table_rows(sandbox, dbname, relation):
    """``Counter`` of the ``row_to_json`` text of every row of ``relation`` (a quoted SQL name), rendered under
    the session settings table_archive uses."""
    return collections.Counter(json_rows(sandbox, dbname, 'SELECT * FROM %s' % relation))


def archived_row(line):
    """The ``row_to_json`` text of one archive line (bytes): the line without the metadata fields that
    table_archive appends (``_archived_at``, ``_batch_id``, ``_source_database``, ``_source_table``)."""
    end = line.rfind(_METADATA_START)
    if end < 0:
        raise AssertionError('archive line without table_archive metadata: %r' % line[:200])
    return (line[:end] + b'}').decode('utf-8')


def archived_rows(sandbox, prefix):
    """``Counter`` of the row texts in every ``.jsonl.gz`` object under ``prefix``."""
    client = sandbox.s3.client()
    found = collections.Counter()
    for key in list_keys(sandbox, prefix):
        if key.endswith(fmt.DATA_SUFFIX):
            body = client.get_object(Bucket=sandbox.s3.bucket, Key=key)['Body'].read()
            # Read as the format defines it (gzip, JSON Lines), not with the module's own reader.
            found.update(archived_row(line) for line in gzip.decompress(body).split(b'\n') if line)
    return found


def assert_conserved(original, table, archived):
    """Table rows plus archived rows are exactly the original rows (each ``Counter`` of row texts)."""
    together = table + archived
    if together == original:
        return
    lost = original - together
    extra = together - original
    doubled = table & archived
    lines = ['rows not conserved: %d original, %d in the table, %d archived' % (
        sum(original.values()), sum(table.values()), sum(archived.values())),
        '%d lost, %d extra (%d both in the table and archived)' % (
        sum(lost.values()), sum(extra.values()), sum(doubled.values()))]
    lines += ['lost: %s' % row[:160] for row in list(lost)[:5]]
    lines += ['extra: %s (x%d)' % (row[:160], count) for row, count in list(extra.items())[:5]]
    raise AssertionError('\n'.join(lines))


def markers(sandbox, prefix):
    """Keys of the ``.pending`` markers under ``prefix``."""
    return [k for k in list_keys(sandbox, prefix) if k.endswith(fmt.PENDING_SUFFIX)]


def orphans(sandbox, prefix):
    """Data objects without a sidecar and sidecars without a data object under ``prefix`` (list of keys)."""
    keys = set(list_keys(sandbox, prefix))
    data = set(k for k in keys if k.endswith(fmt.DATA_SUFFIX))
    sidecars = set(k[:-len(fmt.SIDECAR_SUFFIX)] for k in keys if k.endswith(fmt.SIDECAR_SUFFIX))
    return sorted((data - sidecars) | set(k + fmt.SIDECAR_SUFFIX for k in sidecars - data))
