# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Batches a ``table_archive`` run left unfinished (killed, a lost connection, S3 gone): each left a ``<key>.pending``
marker, which the next run of the same table resolves before it archives anything (see ``docs/archive-format.md``,
"Pending marker").
"""

from __future__ import annotations

from ansible_collections.pgops.resilience.plugins.module_utils._archive import copy_text as archive_copy
from ansible_collections.pgops.resilience.plugins.module_utils._archive import format as fmt
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.errors import pg_errors
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import transaction


class Recovery:
    """The pending markers of one table and how they are resolved.

    :param archiver: the run's ``table_archive.Archiver`` (its bucket, prefixes, table, key columns, connection and
        the cluster's system identifier).
    """

    def __init__(self, archiver):
        self.archiver = archiver

    def pending_markers(self):
        """Keys of the ``.pending`` markers left by interrupted runs on this table (list of str): those under its
        prefix, and those an earlier version left under the format 1 prefix whose sidecar names this table.
        A format 1 marker without a sidecar cannot say which schema's table it belongs to; it is in
        :meth:`legacy_markers_unknown` and left alone."""
        return [o['key'] for o in self.archiver.bucket.list(self.archiver.prefix) if o['key'].endswith(fmt.PENDING_SUFFIX)] + \
            self._legacy_markers()[0]

    def legacy_markers_unknown(self):
        """Format 1 markers under this table's name whose batch has no sidecar to say its schema (list of str)."""
        return self._legacy_markers()[1]

    def _legacy_markers(self):
        ours, unknown = [], []
        objects = self.archiver.bucket.list(self.archiver.legacy_prefix)
        present = set(o['key'] for o in objects)
        for obj in objects:
            marker = obj['key']
            if not marker.endswith(fmt.PENDING_SUFFIX) or fmt.parse_key(marker[:-len(fmt.PENDING_SUFFIX)],
                                                                        under=self.archiver.legacy_prefix) is None:
                continue
            sidecar_key = marker[:-len(fmt.PENDING_SUFFIX)] + fmt.SIDECAR_SUFFIX
            if sidecar_key not in present:
                unknown.append(marker)
                continue
            try:
                fmt.verify_sidecar(marker, self.archiver.bucket.json_object(sidecar_key).read(), self.archiver.database,
                                   self.archiver.relation.schema, self.archiver.relation.name)
                ours.append(marker)
            except fmt.ArchiveFileError:
                continue  # another schema's table of the same name
        return ours, unknown

    def recover_pending(self):
        """Finish or undo the batches an interrupted run left behind.

        Each marker names the transaction of its batch: when PostgreSQL still knows its fate (``txid_status``,
        PostgreSQL docs 9.27.5 "Transaction ID and Snapshot Information Functions"), a committed batch is completed
        (only the marker is removed) and an aborted one rolled back (its objects are removed; its rows, still in the
        table, are archived again by this run). A marker of another cluster or database sharing the prefix is left
        alone (:meth:`foreign_markers`). Without a transaction (earlier versions) or when its fate is no longer kept,
        the rows decide: when the object is missing or every row of it is still in the table, the batch did not
        commit; when none is, it did.

        :returns: list of dicts with ``key`` and ``outcome`` (``rolled_back`` or ``completed``).
        :raises PgopsError: when only some of a batch's rows are in the table, which needs a person to look, or when
            the batch's transaction is still in progress.
        """
        outcomes = []
        for marker in self.pending_markers():
            key = marker[:-len(fmt.PENDING_SUFFIX)]
            document = self._marker(marker)
            if document is None or self._foreign(document):
                continue
            outcome = self._transaction_outcome(key, marker, document.get('xid'))
            if outcome is None:
                outcome = self._rows_outcome(key, marker)
            if outcome == 'rolled_back':
                self.archiver.bucket.delete(key, key + fmt.SIDECAR_SUFFIX, marker)
            else:
                self.archiver.bucket.delete(marker)
            outcomes.append(dict(key=key, outcome=outcome))
        return outcomes

    def foreign_markers(self):
        """Markers under this table's prefix written by another cluster or database that shares the prefix (same
        names; each cluster should have a prefix of its own): they are left alone (list of str)."""
        return [marker for marker in self.pending_markers() if self._foreign(self._marker(marker) or {})]

    def _marker(self, marker):
        """A marker's document (dict), or None when it is gone (another run resolved it) or is not a JSON object."""
        try:
            return self.archiver.bucket.json_object(marker).read()
        except PgopsError:
            return None

    def _foreign(self, document):
        """True when a marker document names another cluster (system identifier) or database than this run's."""
        return bool((document.get('system_identifier') and self.archiver.system_identifier and
                     document['system_identifier'] != self.archiver.system_identifier) or
                    (document.get('database') and document['database'] != self.archiver.current_database))

    def _transaction_outcome(self, key, marker, xid):
        """``completed``, ``rolled_back``, or None when ``xid`` is unknown to the server (or not given)."""
        if not xid:
            return None
        with pg_errors('checking the transaction of the interrupted batch %s' % key), transaction(self.archiver.conn) as cursor:
            cursor.execute('SELECT pg_catalog.txid_status(%s::bigint)', [xid])
            status = cursor.fetchone()[0]
        if status == 'in progress':
            raise PgopsError('%s was interrupted and its transaction %s is still in progress; its session has not ended '
                             'yet. Run again once it has (or end it with pg_terminate_backend); the marker %s stays.'
                             % (key, xid, marker))
        return dict(committed='completed', aborted='rolled_back').get(status)

    def _rows_outcome(self, key, marker):
        """``completed`` or ``rolled_back`` as the batch's rows tell (see :meth:`recover_pending`), keyed by the key
        columns its sidecar records when it has one."""
        body = self.archiver.bucket.get(key, missing_ok=True)
        if body is None:
            return 'rolled_back'
        sidecar = self.archiver.bucket.json_object(key + fmt.SIDECAR_SUFFIX).read()
        key_columns = (sidecar or {}).get('key_columns') or self.archiver.key_columns
        if key_columns != self.archiver.key_columns:
            raise PgopsError('%s was interrupted and archived with key_columns %s, not %s: run with key_columns %s to '
                             'resolve it (the marker %s stays).' % (key, ', '.join(key_columns), ', '.join(self.archiver.key_columns),
                                                                    ', '.join(key_columns), marker))
        lines = archive_copy.split_lines(key, fmt.decompress(key, body))
        values = archive_copy.key_values(key, lines, key_columns)
        with pg_errors('checking the interrupted batch %s' % key), transaction(self.archiver.conn) as cursor:
            present = self.archiver.count_keys(cursor, values)
        if present == len(lines):
            return 'rolled_back'
        if present == 0:
            return 'completed'
        raise PgopsError('%s was interrupted and %d of its %d rows are still in %s: archive and table overlap. '
                         'Compare them by hand, then delete the object or the rows, and the marker %s.'
                         % (key, present, len(lines), self.archiver.relation.display, marker))

    def unresolved_markers(self):
        """The markers this run leaves alone, and a warning for each kind: ``(list of str, list of str)``."""
        legacy, foreign = self.legacy_markers_unknown(), self.foreign_markers()
        warnings = []
        if legacy:
            warnings.append('%d .pending marker(s) of an earlier version under %s have no sidecar, so which schema\'s table '
                            'they belong to is not known; they were left alone: %s. Resolve them with the version that wrote '
                            'them, or by hand.' % (len(legacy), self.archiver.legacy_prefix, ', '.join(legacy)))
        if foreign:
            warnings.append('%d .pending marker(s) under %s were written by another cluster or database (same names, same '
                            'prefix); they were left alone: %s. Give each cluster a prefix of its own.'
                            % (len(foreign), self.archiver.prefix, ', '.join(foreign)))
        return legacy + foreign, warnings
