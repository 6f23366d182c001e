# -*- coding: utf-8 -*-
"""A stand-in for the Kubernetes API server, serving CloudNativePG ``Cluster`` objects over real HTTP.

No Kubernetes cluster runs on the machines that run these tests, so this small server answers the one
request ``cnpg_cluster_info`` makes, ``GET /apis/postgresql.cnpg.io/v1/namespaces/<ns>/clusters/<name>``,
the way the API server does (Kubernetes API conventions, "Response Status Kind"):

- 200 with the stored object (``tests/integration/fixtures/cnpg/*.json``, shaped by the CRD schema);
- 401 with a ``Status`` object when the ``Authorization: Bearer <token>`` header is missing or wrong;
- 403 with a ``Status`` object naming the user, verb, resource and namespace, for a forbidden namespace;
- 404 with a ``Status`` object (``reason: NotFound``) for a Cluster that does not exist;
- 404 with the plain-text body ``404 page not found`` for any other path, which is what the API server
  answers for an API group it does not serve (the CRD is not installed).

The kubernetes client talks to it through its real code paths: kubeconfig loading, urllib3, headers,
JSON decoding and exceptions.
"""

from __future__ import annotations

import copy
import json
import os
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'fixtures', 'cnpg')
_CLUSTER_PATH = re.compile(r'^/apis/postgresql\.cnpg\.io/v1/namespaces/(?P<namespace>[^/]+)/clusters/(?P<name>[^/?]+)$')


def load_fixture(name):
    """A recorded Cluster object from ``fixtures/cnpg/<name>.json`` (a fresh copy)."""
    with open(os.path.join(FIXTURES, name + '.json'), encoding='utf-8') as handle:
        return json.load(handle)


def status_object(code, reason, message, details=None):
    """A ``kind: Status`` failure object as the API server returns it."""
    body = dict(kind='Status', apiVersion='v1', metadata={}, status='Failure', message=message, reason=reason, code=code)
    if details:
        body['details'] = details
    return body


class FakeKubeApi:
    """The stand-in server, on ``127.0.0.1`` and a free port, in a daemon thread.

    :param token: the only bearer token accepted.
    :param service_account: the user named in 403 messages.
    :param tls: ``(certificate file, key file)`` to serve HTTPS, as a real API server does; ``None`` for HTTP.
    """

    def __init__(self, token, service_account='system:serviceaccount:rem:unlogged-restorer', tls=None):
        self.token = token
        self.service_account = service_account
        self.objects = {}
        self.forbidden_namespaces = set()
        self.crd_installed = True  # False: the API server serves no postgresql.cnpg.io/v1 at all
        self.requests = []  # (method, path, authorised) of every request, for assertions
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(('127.0.0.1', 0), self._handler_class())
        self._server.daemon_threads = True
        self.scheme = 'http'
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = 'https'
        self._thread = threading.Thread(target=self._server.serve_forever, name='fake-kube-api', daemon=True)

    @property
    def url(self):
        """``http(s)://127.0.0.1:<port>``, the ``server`` of a kubeconfig cluster."""
        return '%s://127.0.0.1:%d' % (self.scheme, self._server.server_address[1])

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def put(self, cluster):
        """Store (or replace) a Cluster object, keyed by its metadata namespace and name."""
        with self._lock:
            self.objects[(cluster['metadata']['namespace'], cluster['metadata']['name'])] = copy.deepcopy(cluster)

    def clear(self):
        with self._lock:
            self.objects.clear()
            self.forbidden_namespaces.clear()
            self.crd_installed = True
            del self.requests[:]

    def respond(self, path, authorization):
        """``(code, content_type, body bytes)`` for a GET of ``path`` with this ``Authorization`` header."""
        authorised = authorization == 'Bearer %s' % self.token
        with self._lock:
            self.requests.append(('GET', path, authorised))
            if not authorised:
                return self._json(status_object(401, 'Unauthorized', 'Unauthorized'))
            match = _CLUSTER_PATH.match(path)
            if not match or not self.crd_installed:
                return 404, 'text/plain; charset=utf-8', b'404 page not found\n'
            namespace, name = match.group('namespace'), match.group('name')
            details = dict(name=name, group='postgresql.cnpg.io', kind='clusters')
            if namespace in self.forbidden_namespaces:
                return self._json(status_object(
                    403, 'Forbidden',
                    'clusters.postgresql.cnpg.io "%s" is forbidden: User "%s" cannot get resource "clusters" in API group '
                    '"postgresql.cnpg.io" in the namespace "%s"' % (name, self.service_account, namespace), details))
            cluster = self.objects.get((namespace, name))
            if cluster is None:
                return self._json(status_object(404, 'NotFound', 'clusters.postgresql.cnpg.io "%s" not found' % name, details))
            return self._json(cluster, code=200)

    @staticmethod
    def _json(body, code=None):
        return code or body['code'], 'application/json', json.dumps(body).encode('utf-8')

    def _handler_class(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def do_GET(self):  # noqa: N802 - the name http.server calls
                code, content_type, body = api.respond(self.path, self.headers.get('Authorization'))
                self.send_response(code)
                self.send_header('Content-Type', content_type)
                self.send_header('Content-Length', str(len(body)))
                self.send_header('Audit-Id', 'c0ffee00-0000-4000-8000-000000000000')
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):  # pylint: disable=redefined-builtin
                pass  # keep pytest's output clean

        return Handler


def write_kubeconfig(path, server, token, context='stand-in', namespace='rem', extra_contexts=None, current=None,
                     certificate_authority=None):
    """Write a kubeconfig (YAML is a superset of JSON, so JSON is written) with a token user.

    :param extra_contexts: ``{context name: server URL}`` of further contexts with the same user.
    :param current: the ``current-context``; ``context`` when ``None``.
    :param certificate_authority: path of the CA certificate of the ``context`` cluster, or ``None``.
    :returns: ``path`` as str.
    """
    contexts = {context: server}
    contexts.update(extra_contexts or {})
    document = {
        'apiVersion': 'v1',
        'kind': 'Config',
        'clusters': [{'name': name, 'cluster': {'server': url}} for name, url in contexts.items()],
        'users': [{'name': 'unlogged-restorer', 'user': {'token': token}}],
        'contexts': [{'name': name, 'context': {'cluster': name, 'user': 'unlogged-restorer', 'namespace': namespace}}
                     for name in contexts],
        'current-context': current or context,
        'preferences': {},
    }
    if certificate_authority:
        document['clusters'][0]['cluster']['certificate-authority'] = str(certificate_authority)
    with open(path, 'w', encoding='utf-8') as handle:
        json.dump(document, handle, indent=2)
    os.chmod(path, 0o600)
    return str(path)
