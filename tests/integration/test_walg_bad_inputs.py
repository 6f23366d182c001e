# -*- coding: utf-8 -*-
"""Bad inputs to the wal-g modules (``walg_backup``, ``walg_backup_info``, ``walg_restore_drill``) against the real
wal-g: wrong credentials, a malformed prefix, an unreachable endpoint, wal-g missing, a backup name that is not there.
Each gets one message that names the input and says what to change, and no secret (the S3 secret key, a ``walg_env``
value such as ``WALG_LIBSODIUM_KEY``, the PostgreSQL password) reaches the output, even at ``-vvv``.

Already covered elsewhere, not repeated here: at the module level, an unreachable endpoint and a missing wal-g for
``walg_backup_info`` and a backup name that is not there for ``walg_restore_drill`` (test_walg_backup_info.py,
test_walg_restore_drill.py); a malformed prefix in the unit tests; a ``walg_env`` value at ``-vvv`` through the
ad-hoc ``ansible`` command.

Wrong credentials need an S3 server that checks them. moto's server accepts any signature unless IAM authentication
is turned on (its ``INITIAL_NO_AUTH_ACTION_COUNT`` setting, infinite by default), so this file starts a moto server of
its own, creates an IAM user with an S3 policy and an access key while authentication is still off, then turns it on
through moto's ``/moto-api/reset-auth`` (what moto's ``set_initial_no_auth_action_count`` does in server mode; the
environment variable would count the set-up requests, readiness probes included).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
import yaml

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.server import free_port
from ansible_collections.pgops.resilience.plugins.module_utils._walg import drill, info, push

from .helpers import run_playbook
from .test_walg_backup import backup_params
from .test_walg_restore_drill import drill_params
from .walg_helpers import module_params

BUCKET = 'pgops-walg-auth'
REGION = 'us-east-1'
UNREACHABLE = 'http://127.0.0.1:9'  # the discard port: nothing listens there, and only root could bind it
ABSENT_BACKUP = 'base_000000010000000000000099'

# moto's server with one correction, in the server process only. moto checks a signature over the request's URL as
# werkzeug rebuilds it, which decodes %2F in the query string (werkzeug.urls.uri_to_iri), while the client signed the
# query as SigV4 prescribes: every name and value percent-encoded, '/' as %2F. Every request with a '/' in its query
# (each wal-g listing: delimiter=/&prefix=<path>/) then fails with SignatureDoesNotMatch whatever the key (moto issue
# 5948). The correction encodes the query the way the client did before the signature is computed, as S3 does; the
# check itself (an HMAC with the secret moto stored for the access key) is moto's own.
MOTO_WITH_AUTHENTICATION = r'''
import sys
from urllib.parse import quote, unquote
from botocore.auth import SigV4Auth

def canonical_query_string(self, parts):
    pairs = []
    for pair in parts.query.split('&') if parts.query else []:
        name, _, value = pair.partition('=')
        pairs.append((quote(unquote(name), safe='-_.~'), quote(unquote(value), safe='-_.~')))
    return '&'.join('%s=%s' % pair for pair in sorted(pairs))

SigV4Auth._canonical_query_string_url = canonical_query_string
from moto.server import main
main(sys.argv[1:])
'''
S3_POLICY = json.dumps({'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': 's3:*', 'Resource': '*'}]})


class AuthenticatingS3:
    """A moto S3 server that checks signatures: ``endpoint_url``, ``bucket``, ``region``, and the one key pair it
    knows (``access_key``, ``secret_key``)."""

    def __init__(self, port):
        self.endpoint_url = 'http://127.0.0.1:%d' % port
        self.bucket = BUCKET
        self.region = REGION
        self.access_key = self.secret_key = None

    def client(self, service, access_key='set-up', secret_key='set-up'):
        """A boto3 client of ``service`` on this server (path-style, no retries, no proxy)."""
        import boto3  # pylint: disable=import-outside-toplevel
        from botocore.config import Config  # pylint: disable=import-outside-toplevel
        session = boto3.session.Session(aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=self.region)
        return session.client(service, endpoint_url=self.endpoint_url, config=Config(
            s3={'addressing_style': 'path'}, retries={'max_attempts': 1}, proxies={}))

    def moto_api(self, path, data=None):
        """GET (or POST ``data``, bytes) moto's own API at ``/moto-api/<path>``; returns the body."""
        request = urllib.request.Request(self.endpoint_url + '/moto-api/' + path, data=data,
                                         headers={'Content-Type': 'text/plain'})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=10) as answer:
            return answer.read()

    def set_up(self):
        """Create the IAM user ``walg`` allowed s3:*, its access key and the bucket, then turn authentication on."""
        iam = self.client('iam')
        iam.create_user(UserName='walg')
        iam.put_user_policy(UserName='walg', PolicyName='s3', PolicyDocument=S3_POLICY)
        key = iam.create_access_key(UserName='walg')['AccessKey']
        self.access_key, self.secret_key = key['AccessKeyId'], key['SecretAccessKey']
        self.client('s3').create_bucket(Bucket=self.bucket)
        self.moto_api('reset-auth', b'0')

    def refuses(self, access_key, secret_key):
        """The error code of a listing with a '/' in its query signed with this pair, or None when it is accepted."""
        from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel
        try:
            self.client('s3', access_key, secret_key).list_objects_v2(Bucket=self.bucket, Prefix='walg/', Delimiter='/')
        except ClientError as exc:
            return exc.response['Error']['Code']
        return None


@pytest.fixture(scope='module')
def auth_s3(tmp_path_factory):
    """A moto server of its own that checks signatures, with one IAM user's key pair and a bucket; stopped at the
    end of the module. Fails unless the right pair is accepted and a wrong secret refused."""
    port = free_port()
    workdir = tmp_path_factory.mktemp('moto-auth')
    with open(str(workdir / 'moto.log'), 'ab') as log:
        server = subprocess.Popen([sys.executable, '-c', MOTO_WITH_AUTHENTICATION, '-H', '127.0.0.1', '-p', str(port)],  # pylint: disable=consider-using-with
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir),
                                  start_new_session=True)
    s3 = AuthenticatingS3(port)
    try:
        wait_until_answering(s3, server, workdir / 'moto.log')
        s3.set_up()
        assert s3.refuses(s3.access_key, s3.secret_key) is None, 'moto refuses its own key pair'
        assert s3.refuses(s3.access_key, 'not-' + s3.secret_key) == 'SignatureDoesNotMatch', 'moto checks no signature'
        yield s3
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def wait_until_answering(s3, server, log_path, timeout=60):
    """Wait until moto's API answers (it does not count as an S3 action); fail with its log when it exits."""
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            pytest.fail('the moto server exited with code %s: %s' % (server.returncode, log_path.read_text()[-2000:]))
        try:
            s3.moto_api('data.json')
            return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                pytest.fail('the moto server did not answer on %s within %d s' % (s3.endpoint_url, timeout))
            time.sleep(0.2)


def s3_options(s3, **overrides):
    """The S3 options of a wal-g module for the authenticating server, with its key pair."""
    options = dict(endpoint_url=s3.endpoint_url, region=s3.region, access_key=s3.access_key, secret_key=s3.secret_key)
    options.update(overrides)
    return options


def new_prefix(s3):
    return 's3://%s/walg-auth/%s' % (s3.bucket, uuid.uuid4().hex[:8])


def assert_refused_without_the_secret(exc, secret, meaning, prefix):
    """wal-g's failure, what the endpoint refused and what to give instead; the secret nowhere."""
    assert 'refused the credentials: %s' % meaning in exc.msg, exc.msg
    assert 'Give an access_key and secret_key' in exc.msg and prefix in exc.msg
    assert secret not in exc.msg + json.dumps(exc.details)


def test_the_right_key_pair_pushes_and_lists_and_a_wrong_secret_is_refused_by_each_module(auth_s3, sandbox, walg_bin):
    prefix = new_prefix(auth_s3)
    made = push.take_backup(backup_params(sandbox, walg_bin, prefix, **s3_options(auth_s3)))['backup']
    listed = info.list_backups(module_params(sandbox, walg_bin, prefix, **s3_options(auth_s3)))
    assert [b['name'] for b in listed['backups']] == [made['name']]

    wrong = 'wrong-secret-%s' % uuid.uuid4().hex
    calls = (
        ('walg_backup_info', lambda: info.list_backups(module_params(sandbox, walg_bin, prefix, **s3_options(auth_s3, secret_key=wrong)))),
        ('walg_backup', lambda: push.take_backup(backup_params(sandbox, walg_bin, prefix, **s3_options(auth_s3, secret_key=wrong)))),
        ('walg_restore_drill', lambda: drill.restore_drill(drill_params(sandbox, walg_bin, prefix, **s3_options(auth_s3, secret_key=wrong)))),
    )
    for module, call in calls:
        with pytest.raises(PgopsError) as refused:
            call()
        assert_refused_without_the_secret(refused.value, wrong, 'secret_key is not the secret of access_key', prefix)
        assert 'SignatureDoesNotMatch' in refused.value.msg, module

    # An access key the endpoint does not know is told apart from a wrong secret.
    with pytest.raises(PgopsError) as refused:
        info.list_backups(module_params(sandbox, walg_bin, prefix, **s3_options(auth_s3, access_key='AKIANOTKNOWN0000000', secret_key=wrong)))
    assert_refused_without_the_secret(refused.value, wrong, 'it does not know access_key', prefix)
    # The refused push wrote nothing.
    again = info.list_backups(module_params(sandbox, walg_bin, prefix, **s3_options(auth_s3)))
    assert [b['name'] for b in again['backups']] == [made['name']]


def bad_input_cases(s3, sandbox, walg_bin, prefix, missing_walg):
    """``(task name, module, its arguments, expected failure: None or the texts the message must hold)``, in order:
    a push and a list with the right key pair first (the drill's absent backup needs a backup to list)."""
    right = s3_options(s3)
    wrong = s3_options(s3, secret_key='{{ wrong_secret }}')
    connection = dict(login_host='127.0.0.1', login_port=sandbox.primary.port, login_password='{{ pg_password }}',
                      data_directory=sandbox.primary.datadir)
    # A passphrase without a PGP key changes nothing; a libsodium key only where nothing is encrypted or decrypted
    # (this wal-g may be built without libsodium, and then refuses the key before a push).
    common = dict(walg_bin=walg_bin, walg_env=dict(WALG_PGP_KEY_PASSPHRASE='{{ passphrase }}'), timeout=60)
    sodium = dict(walg_env=dict(WALG_PGP_KEY_PASSPHRASE='{{ passphrase }}', WALG_LIBSODIUM_KEY='{{ sodium_key }}'))
    modules = (('walg_backup_info', sodium), ('walg_backup', connection), ('walg_restore_drill', sodium))
    cases = [('push with the right key pair', 'walg_backup', dict(common, prefix=prefix, **dict(right, **connection)), None),
             ('list with the right key pair', 'walg_backup_info', dict(common, prefix=prefix, **dict(right, **sodium)), None)]
    for module, extra in modules:
        options = dict(common, **extra)
        cases += [
            ('%s, wrong secret_key' % module, module, dict(options, prefix=prefix, **wrong),
             ['refused the credentials: secret_key is not the secret of access_key', prefix]),
            ('%s, malformed prefix' % module, module, dict(options, prefix='%s/walg' % s3.bucket, **right),
             ["prefix '%s/walg' is not a wal-g storage: give s3://bucket/path" % s3.bucket]),
            ('%s, unreachable endpoint' % module, module, dict(options, prefix=prefix, timeout=4, **dict(right, endpoint_url=UNREACHABLE)),
             ['did not finish within timeout=4 seconds', 'endpoint_url %s' % UNREACHABLE, 'connection refused']),
            ('%s, wal-g missing' % module, module, dict(options, prefix=prefix, walg_bin=missing_walg, **right),
             ['wal-g (walg_bin=%s) was not found' % missing_walg, 'make setup builds wal-g']),
        ]
    cases.append(('walg_restore_drill, a backup name that is not there', 'walg_restore_drill',
                  dict(common, prefix=prefix, backup_name=ABSENT_BACKUP, **dict(right, **sodium)),
                  ["backup_name '%s' is not in %s; it holds: base_" % (ABSENT_BACKUP, prefix)]))
    return cases


def test_each_bad_input_through_a_playbook_at_vvv_has_its_message_and_no_secret(auth_s3, sandbox, walg_bin, tmp_path):
    prefix = new_prefix(auth_s3)
    secrets = dict(wrong_secret='wrong-secret-%s' % uuid.uuid4().hex, sodium_key='sodium-%s' % uuid.uuid4().hex,
                   passphrase='passphrase-%s' % uuid.uuid4().hex, pg_password=sandbox.password)
    cases = bad_input_cases(auth_s3, sandbox, walg_bin, prefix, str(tmp_path / 'missing' / 'wal-g'))
    results = tmp_path / 'results.json'
    tasks = [{'name': name, 'pgops.resilience.%s' % module: args, 'register': 'case_%d' % index, 'ignore_errors': True}
             for index, (name, module, args, dummy) in enumerate(cases)]
    tasks.append({'name': 'Keep the results', 'ansible.builtin.copy': {
        'content': '{{ [%s] | to_json }}' % ', '.join('case_%d' % index for index in range(len(cases))),
        'dest': str(results), 'mode': '0600'}})
    playbook = tmp_path / 'bad-inputs.yml'
    playbook.write_text(yaml.safe_dump([{'name': 'Bad inputs to the wal-g modules', 'hosts': 'localhost',
                                         'connection': 'local', 'gather_facts': False, 'tasks': tasks}]))

    done = run_playbook(sandbox, str(playbook), secrets, verbose=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    for secret in [auth_s3.secret_key] + list(secrets.values()):
        assert secret not in output and secret not in results.read_text()

    for (name, module, args, expected), result in zip(cases, json.loads(results.read_text())):
        if expected is None:
            assert not result.get('failed'), (name, result.get('msg'))
            continue
        assert result.get('failed'), (name, result)
        for text in expected:
            assert text in result['msg'], (name, text, result['msg'])
    pushed, listed = json.loads(results.read_text())[:2]
    assert [b['name'] for b in listed['backups']] == [pushed['backup']['name']]


def test_the_backup_playbook_with_a_wrong_secret_in_the_environment(auth_s3, sandbox, walg_bin):
    """As a user runs it: credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, at -vvv."""
    wrong = 'wrong-secret-%s' % uuid.uuid4().hex
    prefix = new_prefix(auth_s3)
    done = run_playbook(sandbox, 'pgops.resilience.walg_backup', dict(
        walg_prefix=prefix, walg_data_directory=sandbox.primary.datadir, walg_bin=walg_bin, walg_timeout=60,
        walg_login_host='127.0.0.1', walg_login_port=sandbox.primary.port), env=dict(
        AWS_ENDPOINT_URL=auth_s3.endpoint_url, AWS_ACCESS_KEY_ID=auth_s3.access_key, AWS_SECRET_ACCESS_KEY=wrong),
        verbose=True)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert 'refused the credentials: secret_key is not the secret of access_key' in output, output[-3000:]
    assert wrong not in output and sandbox.password not in output
    assert not auth_s3.client('s3', auth_s3.access_key, auth_s3.secret_key).list_objects_v2(
        Bucket=auth_s3.bucket, Prefix=prefix[len('s3://%s/' % auth_s3.bucket):] + '/').get('Contents')
