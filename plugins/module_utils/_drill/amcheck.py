# -*- coding: utf-8 -*-
# Copyright: pgops.resilience contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Physical consistency of a restored drill instance: ``pg_amcheck`` (PostgreSQL 14 and later) over every database
that allows connections, heap tables and B-tree indexes, and its report read back into a drill result.

A drill that starts, recovers and answers SQL can still hold a damaged page that no check happened to read. pg_amcheck
reads every page of every table (``verify_heapam``) and every B-tree index (``bt_index_parent_check``) and reports what
it finds on stdout, one finding per header line (PostgreSQL 15 docs, "pg_amcheck" and F.2 "amcheck"; the formats are
those of pg_amcheck.c's ``verify_heap_slot_handler`` and ``verify_btree_slot_handler``)::

    heap table "<database>.<schema>.<table>", block <n>, offset <n>[, attribute <n>]:
        <message>
    btree index "<database>.<schema>.<index>":
        ERROR:  <message>
        DETAIL:  <more>

It exits 0 when every check passed, 2 when a check found corruption (a heap check that raised an error, such as
``invalid page in block 0``, counts as corruption too) and 1 when it could not run (a connection, a missing extension
that could not be installed, a lost server): pg_amcheck.c ``main()``.

Public API::

    amcheck_command(program, socket_dir, port, user, maintenance_db) -> list of str
    amcheck_environment(pg_version) -> dict
    parse_report(lines, databases=()) -> dict(findings=[str], count=int, relations=[dict])
    parse_progress(stderr) -> (relations_checked, pages_checked) (ints, or None when not reported)
    explaining_lines(stderr) -> list of str
    corruption_message(report) -> str
    run_amcheck(program, socket_dir, port, user, database, databases, timeout, pg_version) -> dict  # see its docstring
"""

from __future__ import annotations

import io
import re
import tempfile
import time

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError, phase_error
from ansible_collections.pgops.resilience.plugins.module_utils._core.process import Program
from ansible_collections.pgops.resilience.plugins.module_utils._pg.programs import major_number
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import server_environment

PROGRAM = 'pg_amcheck'
MIN_MAJOR = 14  # pg_amcheck first shipped with PostgreSQL 14 (release notes of 14: "Add pg_amcheck")
EXIT_CORRUPTION = 2  # pg_amcheck.c main(): 2 when a check failed, 1 when it could not run
MAX_FINDINGS = 100  # findings returned (all are counted)
MAX_RELATIONS = 100  # corrupt relations returned
MAX_BLOCKS = 20  # blocks named per corrupt relation
MESSAGE_FINDINGS = 5  # findings quoted in the failure message
APPLICATION_NAME = 'pgops.resilience drill amcheck'

# What pg_amcheck checks, and why these options (see the module docstring for the output they produce):
# - --all: every database that allows connections (pg_amcheck's own rule: datallowconn, and not a database left
#   invalid by an interrupted DROP DATABASE); template0 does not allow connections and is not checked.
# - --install-missing: CREATE EXTENSION IF NOT EXISTS amcheck (into pg_catalog) in each database. The drill instance
#   is a throwaway copy that is deleted afterwards, so installing an extension into it changes nothing that stays.
# - --parent-check: bt_index_parent_check instead of bt_index_check: it also verifies the parent/child and sibling
#   relationships of every B-tree, at the price of a ShareLock on each index and its table (blocking writes). Nobody
#   else can connect to the drill's private socket, so that lock costs nothing here (it would on production).
# - --heapallindexed: every heap tuple must have its index entry. A restore that leaves a heap page and an index page
#   at different points in time (a WAL record not replayed, a torn or stale page) can leave each structure sound in
#   itself and only disagreeing with the other, which only this check sees. It costs one more pass over the table per
#   index (a Bloom filter bounded by maintenance_work_mem, F.2.2 "Optional heapallindexed Verification"): accepted,
#   a drill runs on its own host, on a schedule, bounded by the drill's timeout.
# - not --rootdescend: re-finding every tuple from the root page is far more expensive, and the amcheck documentation
#   says it "may be of limited use or even of no use in helping detect the kinds of corruption that occur in
#   practice".
# - not --on-error-stop: every corrupt page is reported, not only the first.
# - heap checks keep their defaults: TOAST pointers followed, no block skipped (all-visible and all-frozen included).
# - --progress: its last line gives the relations and pages checked. -w: never prompt for a password (the drill's
#   pg_hba.conf trusts the private socket). One connection (no --jobs): the drill host's CPUs are not known here.
CHECK_OPTIONS = ('--all', '--install-missing', '--parent-check', '--heapallindexed')

# The databases pg_amcheck --all checks (pg_amcheck.c compile_database_list): the same rule, read by the runner.
DATABASES_SQL = ('SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND datconnlimit <> -2 '
                 'ORDER BY datname')

_HEADER = re.compile(r'^(heap table|btree index) "(.*)"(?:, block (\d+))?(?:, offset (\d+))?(?:, attribute (\d+))?:\s*$')
_EXPLAINS = re.compile(r'^(?:pg_amcheck: |(?:ERROR|FATAL|PANIC|DETAIL|HINT):)')
_PROGRESS = re.compile(r'(\d+)/(\d+) relations \(\d+%\),\s*(\d+)/(\d+) pages')


def amcheck_command(program, socket_dir, port, user, maintenance_db):
    """The pg_amcheck argument list for the drill instance (no secret in it: the private socket is trusted).

    :param program: str, the path of pg_amcheck (in the drill's bindir: the restored server's major version).
    :param socket_dir: str, the drill's private Unix socket directory; ``port``: int.
    :param user: str, the role, a superuser (CREATE EXTENSION amcheck and the amcheck functions need one).
    :param maintenance_db: str, the database pg_amcheck lists the others from (the drill's ``database``, which the
        drill has already connected to).
    :returns: list of str.
    """
    return [program, '--host', socket_dir, '--port', str(port), '--username', user, '--no-password',
            '--maintenance-db', maintenance_db] + list(CHECK_OPTIONS) + ['--progress']


def amcheck_environment(pg_version):
    """pg_amcheck's environment: this process's without its libpq variables (a PGHOST, PGPASSWORD or PGSSLMODE of the
    caller must not redirect it), its messages in English (``LC_ALL=C``: the report is parsed), an application name,
    a connect timeout, and ``PGOPTIONS`` that take the restored configuration's limits out of its way.

    The restored configuration is production's: a ``statement_timeout`` or ``lock_timeout`` there (or set per role or
    per database, which the options of the connection override: PostgreSQL 15 docs, 20.1.4) would cancel checks, and
    pg_amcheck reports a cancelled check as corruption; ``default_transaction_read_only`` would make CREATE EXTENSION
    fail. The whole run is bounded by the drill's timeout instead (:func:`run_amcheck`).

    :param pg_version: str, the server's major version (``transaction_timeout`` exists from PostgreSQL 17).
    :returns: dict.
    """
    settings = ['statement_timeout=0', 'lock_timeout=0', 'idle_in_transaction_session_timeout=0',
                'default_transaction_read_only=off']
    if major_number(pg_version) >= 17:
        settings.append('transaction_timeout=0')
    env = server_environment()
    env.update(LC_ALL='C', PGAPPNAME=APPLICATION_NAME, PGCONNECT_TIMEOUT='10', PGOPTIONS=' '.join('-c ' + s for s in settings))
    return env


def _split_relation(name, databases):
    """``(database, schema.relation)`` of pg_amcheck's ``database.schema.relation`` (names may hold dots: the longest
    known database name that prefixes it wins), or ``(None, name)``."""
    for database in sorted(databases, key=len, reverse=True):
        if name.startswith(database + '.'):
            return database, name[len(database) + 1:]
    return None, name


def parse_report(lines, databases=()):
    """Read pg_amcheck's stdout (the format of the module docstring).

    :param lines: iterable of str (a file, or ``text.splitlines()``).
    :param databases: the names of the databases checked, to split ``database.schema.relation``.
    :returns: dict with ``findings`` (list of str, at most :data:`MAX_FINDINGS`: each finding as one line, its header
        then its message), ``count`` (int, every finding), and ``relations`` (at most :data:`MAX_RELATIONS` dicts
        ``{kind: 'heap table' | 'btree index', database, relation: 'schema.name', blocks: [int]}`` in the order met,
        ``blocks`` the heap blocks named, at most :data:`MAX_BLOCKS`).
    """
    findings, relations, index = [], [], {}
    count = 0
    current = None  # [header, message lines]

    def close():
        if current is not None and len(findings) < MAX_FINDINGS:
            message = ' '.join(' '.join(part.split()) for part in current[1] if part.strip())
            findings.append('%s %s' % (current[0], message) if message else current[0])

    for raw in lines:
        line = raw.rstrip('\r\n')
        match = _HEADER.match(line)
        if match:
            close()
            count += 1
            current = [line.rstrip(), []]
            kind, name, block = match.group(1), match.group(2), match.group(3)
            if (kind, name) not in index and len(relations) < MAX_RELATIONS:
                database, relation = _split_relation(name, databases)
                index[(kind, name)] = dict(kind=kind, database=database, relation=relation, blocks=[])
                relations.append(index[(kind, name)])
            entry = index.get((kind, name))
            if entry is not None and block is not None and int(block) not in entry['blocks'] and len(entry['blocks']) < MAX_BLOCKS:
                entry['blocks'].append(int(block))
        elif current is not None:
            current[1].append(line)
        elif line.strip():  # text before any header: not in pg_amcheck's format, kept as it is
            count += 1
            if len(findings) < MAX_FINDINGS:
                findings.append(' '.join(line.split()))
    close()
    return dict(findings=findings, count=count, relations=relations)


def parse_progress(stderr):
    """``(relations_checked, pages_checked)`` from the last ``--progress`` line of pg_amcheck's stderr
    (``814/814 relations (100%), 2408/2408 pages (100%)``), or ``(None, None)``."""
    found = _PROGRESS.findall(stderr or '')
    if not found:
        return None, None
    last = found[-1]  # (relations checked, of, pages checked, of)
    return int(last[0]), int(last[2])


def explaining_lines(stderr):
    """The lines of pg_amcheck's stderr that explain a failure: its own (``pg_amcheck: error: ...``) and the server's
    (``ERROR:``, ``DETAIL:``...), without the text of the query it quotes; else every line but the progress lines and
    the NOTICEs of ``CREATE EXTENSION IF NOT EXISTS``."""
    lines = [' '.join(line.split()) for line in (stderr or '').splitlines()
             if line.strip() and not _PROGRESS.search(line) and not line.startswith('NOTICE:')]
    said = [line for line in lines if _EXPLAINS.match(line) and 'Query was:' not in line and 'Command was:' not in line]
    return said or lines


def corruption_message(report):
    """What a drill failure says about a report with findings: the relations (kind, database, relation, blocks) and
    the first findings.

    :param report: dict from :func:`parse_report`.
    :returns: str.
    """
    named = []
    for rel in report['relations']:
        where = '%s.%s' % (rel['database'], rel['relation']) if rel['database'] else rel['relation']
        blocks = ''
        if rel['blocks']:
            blocks = ' (block%s %s)' % ('s' if len(rel['blocks']) > 1 else '', ', '.join(str(b) for b in rel['blocks']))
        named.append('%s %s%s' % (rel['kind'], where, blocks))
    databases = sorted(set(rel['database'] for rel in report['relations'] if rel['database']))
    msg = 'pg_amcheck found corruption'
    if databases:
        msg += ' in database%s %s' % ('s' if len(databases) > 1 else '', ', '.join(databases))
    if named:
        msg += ': %d relation%s: %s' % (len(named), 's' if len(named) > 1 else '', ', '.join(named))
    msg += '; %d finding%s' % (report['count'], 's' if report['count'] != 1 else '')
    if report['findings']:
        msg += ', the first: ' + ' | '.join(report['findings'][:MESSAGE_FINDINGS])
    return msg


def run_amcheck(program, socket_dir, port, user, database, databases, timeout, pg_version):  # pylint: disable=too-many-arguments
    """Run pg_amcheck (:func:`amcheck_command`) on the drill instance, bounded by ``timeout``, and read its report.

    :param program: str, the path of pg_amcheck; ``socket_dir``, ``port``, ``user``: the drill instance and role.
    :param database: str, the maintenance database (see :func:`amcheck_command`).
    :param databases: list of str, the databases it checks (:data:`DATABASES_SQL`, read by the caller), returned.
    :param timeout: seconds (float) for the whole run; pg_amcheck is killed after it.
    :param pg_version: str, the server's major version (see :func:`amcheck_environment`).
    :returns: dict ``{databases, relations_checked, pages_checked, options, corruption: [str], corruption_count,
        corrupt_relations: [dict], seconds}`` (see :func:`parse_report` and :func:`parse_progress`) when every check
        passed.
    :raises PgopsError: with ``phase = 'amcheck'`` and ``details['amcheck']`` (the same dict, as far as known) when a
        check found corruption (the message from :func:`corruption_message`), when pg_amcheck could not run or did not
        finish within ``timeout``.
    """
    began = time.monotonic()
    outcome = dict(databases=list(databases), relations_checked=None, pages_checked=None, options=list(CHECK_OPTIONS),
                   corruption=[], corruption_count=0, corrupt_relations=[], seconds=None)
    cmd = amcheck_command(program, socket_dir, port, user, database)
    late = None
    with tempfile.TemporaryFile() as stdout:  # the report may be long: spooled, then read line by line
        checker = Program(cmd, amcheck_environment(pg_version), 'pg_amcheck of the drill instance', stdout=stdout, cwd='/')
        try:
            checker.wait(timeout)
        except PgopsError:
            late = ('pg_amcheck did not finish within timeout=%.0f s and was stopped; raise timeout (pg_amcheck reads '
                    'every page of every table and index, each index once more for --heapallindexed)' % timeout)
        finally:
            checker.stop()
        stderr = checker.stderr.text()
        stdout.seek(0)
        report = parse_report(io.TextIOWrapper(stdout, encoding='utf-8', errors='replace'), databases)
    outcome['relations_checked'], outcome['pages_checked'] = parse_progress(stderr)
    outcome.update(corruption=report['findings'], corruption_count=report['count'], corrupt_relations=report['relations'],
                   seconds=round(time.monotonic() - began, 3))
    parts = []
    if report['count']:
        parts.append(corruption_message(report))
    elif checker.returncode == EXIT_CORRUPTION:
        parts.append('pg_amcheck reported corruption (exit status 2) but printed no finding; it said: %s'
                     % (' | '.join(explaining_lines(stderr)[-10:]) or 'nothing'))
    if late:
        parts.append(late)
    elif checker.returncode not in (0, EXIT_CORRUPTION):
        said = explaining_lines(stderr)
        text = ' | '.join(said[-10:]) or 'nothing on stderr'
        hint = ''
        if 'permission denied' in text or 'must be superuser' in text:
            hint = '; user %s must be a superuser (CREATE EXTENSION amcheck and the amcheck functions need one)' % user
        parts.append('pg_amcheck could not check the drill instance (exit status %s): %s%s' % (checker.returncode, text, hint))
    if parts:
        error = phase_error('amcheck', '; '.join(parts))
        error.details['amcheck'] = outcome
        raise error
    return outcome
