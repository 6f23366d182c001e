# -*- coding: utf-8 -*-
"""cnpg_cluster_info against a stand-in for the Kubernetes API server, with the watermark in the sandbox's real S3.

No Kubernetes cluster runs on the machines that run these tests, so ``fake_kube_api.FakeKubeApi`` stands in
for the Kubernetes API server: a real HTTP server on 127.0.0.1 that serves recorded CloudNativePG ``Cluster``
objects (``fixtures/cnpg/``, which ``tests/unit/unlogged/test_cnpg.py`` checks against the CRD schema), answers errors
with Kubernetes ``Status`` objects, and accepts only one bearer token. It is not a Kubernetes API server:
it serves just the one request the module makes. Everything else is real: a kubeconfig file with a token
user, the official kubernetes client and urllib3, ``ansible-playbook`` running the module, moto's S3 server
holding the watermark, and ``pg_unlogged_rebuild`` writing it against the sandbox's PostgreSQL.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._unlogged import cnpg, rebuild as unlogged_rebuild
from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError

from .fake_kube_api import FakeKubeApi, load_fixture, write_kubeconfig
from .helpers import params_for, run_playbook
from .test_unlogged_rebuild import closed_port, kv_count, read_watermark

TOKEN = 'kube-token-%s' % uuid.uuid4().hex
PLAYBOOK = 'pgops.resilience.unlogged_check_and_restore'


@pytest.fixture(scope='module')
def kube_api():
    server = FakeKubeApi(TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def api(kube_api):
    """The stand-in, serving the healthy Cluster rem/rem-db."""
    kube_api.clear()
    kube_api.put(load_fixture('healthy'))
    return kube_api


@pytest.fixture
def kubeconfig(api, tmp_path):
    return write_kubeconfig(tmp_path / 'kubeconfig', api.url, TOKEN)


def _defaults(spec):
    return dict((name, option.get('default')) for name, option in spec.items())


def info_params(kubeconfig_path, **overrides):
    """Module parameters as AnsibleModule fills them in (defaults; env fallbacks are not applied here)."""
    params = _defaults(cnpg.argument_spec())
    params.update(name='rem-db', namespace='rem', kubeconfig=kubeconfig_path)
    params.update(overrides)
    return params


def watermark_params(sandbox, key, **overrides):
    options = _defaults(cnpg.argument_spec()['watermark']['options'])
    options.update(bucket=sandbox.s3.bucket, key=key, endpoint_url=sandbox.s3.endpoint_url, region=sandbox.s3.region,
                   access_key=sandbox.s3.access_key, secret_key=sandbox.s3.secret_key)
    options.update(overrides)
    return options


def info(params):
    return cnpg.read_cluster(params)


def failure(params):
    with pytest.raises(PgopsError) as err:
        cnpg.read_cluster(params)
    assert TOKEN not in err.value.msg
    return err.value.msg


def rebuild(sandbox, db, key, current_primary=None):
    """One real run of pg_unlogged_rebuild on the primary, which writes the watermark."""
    return unlogged_rebuild.check_and_rebuild(params_for(sandbox, 'primary', db, key, current_primary=current_primary))


# -- the module_utils entry point ----------------------------------------------------------------------------


def test_healthy_cluster(api, kubeconfig):
    result = info(info_params(kubeconfig))
    assert result['changed'] is False and result['warnings'] == []
    assert result['current_primary'] == result['target_primary'] == 'rem-db-1'
    assert result['phase'] == 'Cluster in healthy state' and result['phase_reason'] is None
    assert result['instances'] == result['ready_instances'] == 3
    assert result['instance_names'] == ['rem-db-1', 'rem-db-2', 'rem-db-3']
    assert result['instances_status'] == {'healthy': ['rem-db-1', 'rem-db-2', 'rem-db-3']}
    assert [(e['name'], e['ready'], e['role']) for e in result['instance_readiness']] == [
        ('rem-db-1', True, 'primary'), ('rem-db-2', True, 'replica'), ('rem-db-3', True, 'replica')]
    assert result['timeline_id'] == 1 and result['switchover_in_progress'] is False
    assert result['previous_primary'] is None and result['previous_primary_source'] is None
    assert result['failover_detected'] is False and result['watermark'] is None
    assert result['api_server'] == api.url
    assert api.requests == [('GET', '/apis/postgresql.cnpg.io/v1/namespaces/rem/clusters/rem-db', True)]


@pytest.mark.parametrize('served, detected', [('healthy', False), ('failed_over', True)])
def test_failover_against_the_watermark_pg_unlogged_rebuild_wrote(api, kubeconfig, healthy, rem_db, bucket_key,
                                                                  served, detected):
    written = rebuild(healthy, rem_db, bucket_key, current_primary='rem-db-1')
    assert written['watermark']['written'] is True
    assert read_watermark(healthy, bucket_key)['current_primary'] == 'rem-db-1'
    api.put(load_fixture(served))
    result = info(info_params(kubeconfig, watermark=watermark_params(healthy, bucket_key)))
    assert result['failover_detected'] is detected
    assert result['previous_primary'] == 'rem-db-1' and result['previous_primary_source'] == 'watermark'
    assert result['current_primary'] == ('rem-db-2' if detected else 'rem-db-1')
    assert result['watermark'] == dict(bucket=healthy.s3.bucket, key=bucket_key, found=True, error=None)
    assert result['changed'] is False and result['warnings'] == []


def test_no_watermark_yet_is_a_first_run(api, kubeconfig, sandbox, bucket_key):
    result = info(info_params(kubeconfig, watermark=watermark_params(sandbox, bucket_key)))
    assert result['watermark'] == dict(bucket=sandbox.s3.bucket, key=bucket_key, found=False, error=None)
    assert result['previous_primary'] is None and result['failover_detected'] is False
    assert result['warnings'] == []


def test_a_watermark_without_current_primary_records_no_primary(api, kubeconfig, healthy, rem_db, bucket_key):
    rebuild(healthy, rem_db, bucket_key)  # a run not told the orchestrator's primary
    assert 'current_primary' not in read_watermark(healthy, bucket_key)
    api.put(load_fixture('failed_over'))
    result = info(info_params(kubeconfig, watermark=watermark_params(healthy, bucket_key)))
    assert result['watermark']['found'] is True
    assert result['previous_primary'] is None and result['failover_detected'] is False


def test_previous_primary_overrides_the_watermark(api, kubeconfig, sandbox, bucket_key):
    api.put(load_fixture('failed_over'))
    # The watermark's store is unreachable: it is not even asked.
    unreachable = watermark_params(sandbox, bucket_key, endpoint_url='http://127.0.0.1:%d' % closed_port())
    result = info(info_params(kubeconfig, previous_primary='rem-db-1', watermark=unreachable))
    assert result['failover_detected'] is True and result['previous_primary_source'] == 'option'
    assert result['watermark'] is None and result['warnings'] == []
    assert info(info_params(kubeconfig, previous_primary='rem-db-2'))['failover_detected'] is False


def test_an_unreadable_watermark_is_a_warning(api, kubeconfig, sandbox, bucket_key):
    endpoint = 'http://127.0.0.1:%d' % closed_port()
    result = info(info_params(kubeconfig, watermark=watermark_params(sandbox, bucket_key, endpoint_url=endpoint)))
    assert result['current_primary'] == 'rem-db-1' and result['failover_detected'] is False
    assert result['watermark']['found'] is False and endpoint in result['watermark']['error']
    assert len(result['warnings']) == 1 and 'a failover cannot be detected' in result['warnings'][0]
    assert sandbox.s3.secret_key not in result['warnings'][0]


def test_switchover_in_progress(api, kubeconfig):
    api.put(load_fixture('switchover'))
    result = info(info_params(kubeconfig))
    assert result['switchover_in_progress'] is True
    assert (result['current_primary'], result['target_primary']) == ('rem-db-1', 'rem-db-2')
    assert result['phase'] == 'Switchover in progress' and result['phase_reason'] == 'Switching over to rem-db-2'
    assert result['ready_instances'] == 2
    assert result['instance_readiness'][0] == dict(name='rem-db-1', ready=False, role='primary', state='replicating')


def test_failing_over(api, kubeconfig):
    api.put(load_fixture('failing_over'))
    result = info(info_params(kubeconfig, previous_primary='rem-db-1'))
    assert result['target_primary'] == 'pending' and result['switchover_in_progress'] is True
    assert result['failover_detected'] is False  # currentPrimary has not moved yet
    assert [e['name'] for e in result['instance_readiness'] if not e['ready']] == ['rem-db-1']


def test_cluster_not_found(api, kubeconfig):
    message = failure(info_params(kubeconfig, name='rem-dbx'))
    assert message.startswith('Cluster rem/rem-dbx not found at the Kubernetes API server %s' % api.url)
    assert 'clusters.postgresql.cnpg.io "rem-dbx" not found' in message
    assert 'Check the name and the namespace' in message
    assert failure(info_params(kubeconfig, namespace='app')).startswith('Cluster app/rem-db not found')


def test_operator_not_installed(api, kubeconfig):
    api.crd_installed = False
    message = failure(info_params(kubeconfig))
    assert 'does not serve postgresql.cnpg.io/v1 clusters' in message
    assert 'CustomResourceDefinition clusters.postgresql.cnpg.io' in message


def test_forbidden_names_the_rbac_needed(api, kubeconfig):
    api.forbidden_namespaces.add('rem')
    message = failure(info_params(kubeconfig))
    assert message.startswith('Forbidden (403) to read Cluster rem/rem-db at %s' % api.url)
    assert 'User "system:serviceaccount:rem:unlogged-restorer" cannot get resource "clusters"' in message
    assert 'needs RBAC permission "get" on clusters.postgresql.cnpg.io in namespace rem' in message
    assert 'RoleBinding' in message


def test_wrong_token(api, tmp_path):
    wrong = 'wrong-%s' % uuid.uuid4().hex
    message = failure(info_params(write_kubeconfig(tmp_path / 'wrong', api.url, wrong)))
    assert 'rejected the credentials (401 Unauthorized' in message and api.url in message
    assert wrong not in message
    assert api.requests == [('GET', '/apis/postgresql.cnpg.io/v1/namespaces/rem/clusters/rem-db', False)]


def test_unreachable_api_server(tmp_path):
    server = 'http://127.0.0.1:%d' % closed_port()
    message = failure(info_params(write_kubeconfig(tmp_path / 'kubeconfig', server, TOKEN)))
    assert message.startswith('Cannot reach the Kubernetes API server %s:' % server)
    assert 'Connection refused' in message


def test_missing_kubeconfig_file(tmp_path):
    missing = str(tmp_path / 'no-such-kubeconfig')
    message = failure(info_params(missing))
    assert message.startswith("kubeconfig '%s' does not exist (option kubeconfig" % missing)


def test_context_option(api, tmp_path):
    """The file's current-context points at a dead server; the context option picks the stand-in."""
    path = write_kubeconfig(tmp_path / 'kubeconfig', api.url, TOKEN, extra_contexts={'dead': 'http://127.0.0.1:%d' % closed_port()},
                            current='dead')
    assert info(info_params(path, context='stand-in'))['current_primary'] == 'rem-db-1'
    assert 'Cannot reach' in failure(info_params(path))


def self_signed_certificate(directory):
    """A key and a self-signed certificate for 127.0.0.1 (written as PEM files); returns ``(cert, key)`` paths."""
    from cryptography import x509  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=import-outside-toplevel
    from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=import-outside-toplevel
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, 'stand-in kube-apiserver')])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / 'apiserver.crt', directory / 'apiserver.key'
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.filterwarnings('ignore:Unverified HTTPS request')  # validate_certs=false asks for exactly that
def test_tls_certificate_checks_and_validate_certs(tmp_path):
    cert, key = self_signed_certificate(tmp_path)
    server = FakeKubeApi(TOKEN, tls=(cert, key)).start()
    try:
        server.put(load_fixture('healthy'))
        unknown_ca = write_kubeconfig(tmp_path / 'unknown-ca', server.url, TOKEN)
        message = failure(info_params(unknown_ca))
        assert message.startswith('Cannot reach the Kubernetes API server %s' % server.url)
        assert 'CERTIFICATE_VERIFY_FAILED' in message and 'validate_certs' in message
        assert info(info_params(unknown_ca, validate_certs=False))['current_primary'] == 'rem-db-1'
        trusted = write_kubeconfig(tmp_path / 'trusted', server.url, TOKEN, certificate_authority=cert)
        assert info(info_params(trusted))['current_primary'] == 'rem-db-1'
    finally:
        server.stop()


# -- through ansible-playbook and the real module ------------------------------------------------------------


def _playbook(tmp_path, module_args, check_assertions):
    playbook = tmp_path / 'cnpg.yml'
    playbook.write_text(json.dumps([{
        'name': 'cnpg_cluster_info', 'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
        'tasks': [{'pgops.resilience.cnpg_cluster_info': module_args, 'register': 'out'},
                  {'ansible.builtin.assert': {'that': check_assertions}}],
    }]))
    return str(playbook)


def test_through_ansible_playbook_with_environment_fallbacks(api, sandbox, bucket_key, tmp_path):
    sandbox.s3.client().put_object(Bucket=sandbox.s3.bucket, Key=bucket_key, ContentType='application/json',
                                   Body=json.dumps({'current_primary': 'rem-db-1', 'timeline': 1}).encode())
    api.put(load_fixture('failed_over'))
    path = write_kubeconfig(tmp_path / 'kubeconfig', api.url, TOKEN, extra_contexts={'dead': 'http://127.0.0.1:%d' % closed_port()},
                            current='dead')
    checks = ['not out.changed', "out.current_primary == 'rem-db-2'", "out.previous_primary == 'rem-db-1'",
              'out.failover_detected', 'out.timeline_id == 2', 'out.watermark.found',
              "out.instance_readiness | selectattr('role', 'eq', 'primary') | map(attribute='name') | list == ['rem-db-2']"]
    playbook = _playbook(tmp_path, {'name': 'rem-db', 'namespace': 'rem', 'watermark': {'bucket': sandbox.s3.bucket, 'key': bucket_key}},
                         checks)
    # K8S_AUTH_KUBECONFIG comes before KUBECONFIG; K8S_AUTH_CONTEXT picks the context; S3 settings from AWS_*.
    env = {'K8S_AUTH_KUBECONFIG': path, 'KUBECONFIG': str(tmp_path / 'absent'), 'K8S_AUTH_CONTEXT': 'stand-in'}
    for check in (False, True):
        done = run_playbook(sandbox, playbook, env=env, check=check, verbose=True)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output
        assert 'changed=0' in output and 'failed=0' in output
        assert TOKEN not in output


@pytest.mark.parametrize('breakage, expected', [
    ('forbidden', 'needs RBAC permission "get" on clusters.postgresql.cnpg.io in namespace rem'),
    ('wrong_token', 'rejected the credentials (401 Unauthorized'),
    ('not_found', 'Cluster rem/rem-db not found'),
])
def test_errors_through_ansible_playbook_are_clear_and_leak_no_token(api, tmp_path, breakage, expected):
    token = TOKEN
    if breakage == 'forbidden':
        api.forbidden_namespaces.add('rem')
    elif breakage == 'wrong_token':
        token = 'wrong-%s' % uuid.uuid4().hex
    else:
        api.clear()
    path = write_kubeconfig(tmp_path / 'kubeconfig', api.url, token)
    playbook = _playbook(tmp_path, {'name': 'rem-db', 'namespace': 'rem', 'kubeconfig': path}, ['out is success'])
    done = run_playbook(None, playbook, verbose=True)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert expected in output
    assert 'Traceback' not in output
    assert TOKEN not in output and token not in output


# -- the playbook with CloudNativePG awareness ---------------------------------------------------------------


def _playbook_vars(key):
    return dict(unlogged_source_tables=['resources', 'moments'], unlogged_watermark_bucket='pgops-sandbox',
                unlogged_watermark_key=key)


def test_playbook_records_the_cnpg_primary_and_reports_a_failover(api, kubeconfig, healthy, rem_db, bucket_key):
    sandbox = healthy
    env = {'CNPG__CLUSTER_NAME': 'rem-db', 'POD_NAMESPACE': 'rem', 'KUBECONFIG': kubeconfig, 'PGDATABASE': rem_db}
    baseline = run_playbook(sandbox, PLAYBOOK, _playbook_vars(bucket_key), env=env)
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert 'CloudNativePG rem/rem-db: primary rem-db-1, no primary recorded before' in baseline.stdout
    assert read_watermark(sandbox, bucket_key)['current_primary'] == 'rem-db-1'

    sandbox.stop_node('primary', mode='immediate')  # the primary's pod is lost; CNPG promotes rem-db-2
    sandbox.promote('standby')
    api.put(load_fixture('failed_over'))
    env['PGPORT'] = str(sandbox.standby.port)
    first = run_playbook(sandbox, PLAYBOOK, _playbook_vars(bucket_key), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert 'rebuilt kv_store: 4000 rows' in first.stdout
    assert 'CloudNativePG rem/rem-db: primary rem-db-2, failover detected (rem-db-1 -> rem-db-2)' in first.stdout
    assert 'events: failover, primary_changed' in first.stdout
    assert kv_count(sandbox.standby, rem_db) == 4000
    document = read_watermark(sandbox, bucket_key)
    assert document['current_primary'] == 'rem-db-2' and document['last_run']['events'] == ['failover', 'primary_changed']

    second = run_playbook(sandbox, PLAYBOOK, _playbook_vars(bucket_key), env=env)
    assert second.returncode == 0
    assert 'changed=0' in second.stdout and 'no rebuild: kv_store has rows; events: none' in second.stdout
    assert 'primary rem-db-2, no failover since the last watermark' in second.stdout


def test_playbook_still_rebuilds_when_the_cluster_cannot_be_read(api, kubeconfig, healthy, rem_db, bucket_key):
    healthy.primary.execute('TRUNCATE kv_store', dbname=rem_db)
    api.forbidden_namespaces.add('rem')
    env = {'CNPG__CLUSTER_NAME': 'rem-db', 'POD_NAMESPACE': 'rem', 'KUBECONFIG': kubeconfig, 'PGDATABASE': rem_db}
    done = run_playbook(healthy, PLAYBOOK, _playbook_vars(bucket_key), env=env)
    output = done.stdout + done.stderr
    assert done.returncode != 0  # the Job fails, so the RBAC problem is seen ...
    assert 'rebuilt kv_store: 4000 rows' in output  # ... but the cache was repaired first
    assert 'CloudNativePG rem/rem-db could not be read' in output
    assert 'The cache was checked, but rem/rem-db could not be read: Forbidden (403)' in output
    assert kv_count(healthy.primary, rem_db) == 4000
    assert 'current_primary' not in read_watermark(healthy, bucket_key)
    assert TOKEN not in output
