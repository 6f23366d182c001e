# -*- coding: utf-8 -*-
"""Running modules and playbooks the way Ansible does, so that a test can kill them at a chosen moment.

:class:`ModuleRun` starts a fresh interpreter on ``plugins/modules/<name>.py`` with an arguments file
``{"ANSIBLE_MODULE_ARGS": {...}}`` (what AnsibleModule reads when a module is run by hand, and what AnsiballZ
hands it under Ansible), captures stdout and stderr, and parses the JSON result when the process ends. A test
kills it with :meth:`ModuleRun.kill` (from an :class:`~.s3_cutter.S3Cutter` hook, for instance) or with
:meth:`ModuleRun.kill_when` (a polling predicate such as "N rows are gone from the table").

:func:`run_playbook_vvv` runs ``ansible-playbook -vvv`` with every directory Ansible and the modules write to
(``ANSIBLE_HOME``, local and remote temporary directories, ``TMPDIR``) inside one work directory, so that a test
can search all of it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from tests.manifest_checks import run_ansible_playbook

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
MODULES = os.path.join(COLLECTIONS, 'ansible_collections', 'pgops', 'resilience', 'plugins', 'modules')
APPLICATION_NAME = 'pgops.resilience'  # the application_name the collection's connections carry


def module_environment(extra=None):
    """The environment of a module process: this one's, without libpq (``PG*``) and AWS variables (so that no
    option falls back to a value the test did not give), the collection importable, plus ``extra``."""
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(('PG', 'AWS_')))
    env['PYTHONPATH'] = os.pathsep.join([COLLECTIONS, os.path.join(ROOT, 'sandbox')])
    env.update(extra or {})
    return env


class ModuleResult:
    """How a module process ended.

    :ivar returncode: int (``-9`` after SIGKILL).
    :ivar stdout: str.
    :ivar stderr: str.
    :ivar result: dict parsed from stdout (the module's JSON), or None when stdout held none (killed, crashed).
    """

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        try:
            self.result = json.loads(stdout)
        except ValueError:
            self.result = None

    @property
    def killed(self):
        """True when the process ended by SIGKILL."""
        return self.returncode == -signal.SIGKILL

    @property
    def failed(self):
        """True when the module reported a failure (``failed: true``)."""
        return bool(self.result and self.result.get('failed'))

    def __repr__(self):
        return '<ModuleResult rc=%s result=%r stderr=%r>' % (self.returncode, self.result, self.stderr[-2000:])


class ModuleRun:
    """One module process.

    :param name: the module's name, e.g. ``table_archive``.
    :param args: dict, the module arguments (``None`` values are left out, so the module fills in its defaults).
    :param workdir: directory for the arguments file (it holds secrets; mode 0600).
    :param check_mode: bool, run in check mode (``_ansible_check_mode``).
    :param env: dict of extra environment variables (see :func:`module_environment`).
    :param new_session: start the process in a session of its own, so that :meth:`kill` with ``group`` reaches
        the programs it started (pg_dump...) too.
    """

    def __init__(self, name, args, workdir, check_mode=False, env=None, new_session=True):
        self.name = name
        args = dict((k, v) for k, v in args.items() if v is not None)
        if check_mode:
            args['_ansible_check_mode'] = True
        self.args_file = os.path.join(str(workdir), '%s-%s-args.json' % (name, os.urandom(4).hex()))
        fd = os.open(self.args_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as handle:
            json.dump(dict(ANSIBLE_MODULE_ARGS=args), handle)
        self.command = [sys.executable, os.path.join(MODULES, name + '.py'), self.args_file]
        self.env = module_environment(env)
        self.new_session = new_session
        self.process = None
        self._out, self._err = [], []
        self._readers = []

    def start(self):
        """Start the process; returns self."""
        self.process = subprocess.Popen(self.command, env=self.env, cwd=os.path.dirname(self.args_file),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        start_new_session=self.new_session)
        for stream, sink in ((self.process.stdout, self._out), (self.process.stderr, self._err)):
            reader = threading.Thread(target=lambda s=stream, k=sink: k.append(s.read()), daemon=True)
            reader.start()
            self._readers.append(reader)
        return self

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        """True while the process has not ended."""
        return self.process.poll() is None

    def kill(self, *dummy, group=False):
        """SIGKILL the process (with ``group``, its whole session) and wait until it is gone. Safe to call from
        any thread and more than once; extra positional arguments are ignored, so it can be an
        :meth:`S3Cutter.on_request` action."""
        if self.process.poll() is None:
            if group and self.new_session:
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            else:
                self.process.kill()
        self.process.wait(timeout=30)

    def kill_when(self, predicate, timeout=60.0, interval=0.01, group=False):
        """Poll ``predicate()`` every ``interval`` seconds while the process runs; SIGKILL it when it returns true.

        :returns: True when it was killed, False when it ended first.
        :raises AssertionError: when neither happened within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while self.running():
            if predicate():
                self.kill(group=group)
                return True
            if time.monotonic() > deadline:
                self.kill(group=group)
                raise AssertionError('%s neither ended nor met the kill condition within %.0f s' % (self.name, timeout))
            time.sleep(interval)
        return False

    def wait(self, timeout=120.0):
        """Wait for the end of the process and return its :class:`ModuleResult` (killed after ``timeout``)."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(group=True)
            raise AssertionError('%s did not end within %.0f s' % (self.name, timeout))
        for reader in self._readers:
            reader.join(timeout=30)
        self.process.stdout.close()
        self.process.stderr.close()
        return ModuleResult(self.process.returncode, b''.join(self._out).decode('utf-8', 'replace'),
                            b''.join(self._err).decode('utf-8', 'replace'))


def run_module(name, args, workdir, check_mode=False, env=None, timeout=120.0):
    """Run a module to its end; the :class:`ModuleResult`."""
    return ModuleRun(name, args, workdir, check_mode=check_mode, env=env).start().wait(timeout)


def wait_backends_gone(sandbox, dbname, timeout=10.0):
    """Wait until no backend of the collection (``application_name`` ``pgops.resilience``) is left in ``dbname``
    on the primary: after a SIGKILL the server notices the closed socket, and its locks (row locks, advisory
    locks) are released only then. Terminates the stragglers after ``timeout`` seconds."""
    sql = "FROM pg_stat_activity WHERE datname = %s AND application_name = %s AND pid <> pg_backend_pid()"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sandbox.primary.execute('SELECT count(*) ' + sql, [dbname, APPLICATION_NAME])[0][0] == 0:
            return
        time.sleep(0.05)
    sandbox.primary.execute('SELECT pg_terminate_backend(pid) ' + sql, [dbname, APPLICATION_NAME])


def playbook_environment(sandbox, workdir, password=True, extra=None):
    """Environment of an ``ansible-playbook`` run against the sandbox's primary and S3 endpoint whose every
    writable place is under ``workdir``: ``ANSIBLE_HOME``, ``ANSIBLE_LOCAL_TEMP``, ``ANSIBLE_REMOTE_TEMP``,
    ``TMPDIR`` (created here).

    :param password: pass the sandbox password as ``PGPASSWORD`` (instead of the passfile), so that the run
        handles the secret itself.
    """
    env = dict(sandbox.env('primary'))
    if password:
        env.pop('PGPASSFILE', None)
        env['PGPASSWORD'] = sandbox.password
    for name, sub in (('ANSIBLE_HOME', 'ansible-home'), ('ANSIBLE_LOCAL_TEMP', 'ansible-local-tmp'),
                      ('ANSIBLE_REMOTE_TEMP', 'ansible-remote-tmp'), ('TMPDIR', 'tmp')):
        path = os.path.join(str(workdir), sub)
        os.makedirs(path, exist_ok=True)
        env[name] = path
    env.update(extra or {})
    return env


def run_playbook_vvv(playbook, extra_vars, env, check=False):
    """``ansible-playbook -vvv <playbook>`` (FQCN or path) with JSON ``extra_vars`` and ``env`` added to the
    collection's Ansible environment; returns the CompletedProcess (text stdout and stderr)."""
    return run_ansible_playbook(playbook, extra_vars, check=check, verbose=True, env=env)
