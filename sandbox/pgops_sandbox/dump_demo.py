"""The logical dump part of `make demo`: the nightly dump bundle of the application database into a backups
directory (with the row count and checksum of every table of the dumped snapshot), then the logical restore
drill: restored into a scratch database, compared table by table with what was dumped, dropped. Every claim is
read back from the directory, the database list or the playbooks' results."""

import os
import re

DATABASE = 'rem'


def reported_bundle(output):
    """The bundle name the dump_bundle playbook's report gives (``<name> (<size>) written to ...``), or None.

    Read from what the module reports rather than matched in the directory: the name's form belongs to the module
    (``nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz`` now, ``nightly-YYYYMMDD-HHMM.tar.gz`` before)."""
    match = re.search(r'"msg": "(\S+\.tar\.gz) \([^)]*\) written to', output)
    return match.group(1) if match else None


def run_dump_demo(sandbox, node_name, out, ansible_playbook, step, expect):
    """Run demo steps 14-15 against node ``node_name`` (the current primary). Returns (bundle name, tables compared)."""
    node = getattr(sandbox, node_name)
    backups = os.path.join(sandbox.workdir, 'backups')
    os.makedirs(backups, exist_ok=True)

    step(out, '14. Nightly logical dump bundle: pg_dump -Fd -j 2, globals, plain SQL, settings, extensions, sha256 manifest')
    output = ansible_playbook(sandbox, node_name, 'pgops.resilience.dump_bundle',
                              {'dump_database': DATABASE, 'dump_directory': backups, 'dump_keep': 7,
                               'dump_fingerprints': True}, out)[1]
    # The name the module reports (nightly-YYYYMMDD-HHMMSSmmm-<run>.tar.gz, unique per run), read back from the directory.
    name = reported_bundle(output)
    expect(name is not None, 'the playbook should report the bundle it wrote')
    expect(os.path.isfile(os.path.join(backups, name)) and os.path.isfile(os.path.join(backups, name + '.sha256')),
           'the bundle %s and its .sha256 should be in %s' % (name, backups))
    out('%s: %d bytes' % (name, os.path.getsize(os.path.join(backups, name))))

    step(out, '15. Logical restore drill: restored into a scratch database, every table compared with the dump, dropped')
    before = set(r[0] for r in node.execute('SELECT datname FROM pg_database'))
    output = ansible_playbook(sandbox, node_name, 'pgops.resilience.restore_dump',
                              {'restore_drill': True, 'restore_directory': backups}, out)[1]
    match = re.search(r'drill: identical to the fingerprints recorded in the bundle \((\d+) tables\)', output)
    expect(match is not None, 'the drill should find every table identical to the dump')
    after = set(r[0] for r in node.execute('SELECT datname FROM pg_database'))
    expect(after == before, 'the drill database should be dropped')
    return name, int(match.group(1))
