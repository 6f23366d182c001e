# -*- coding: utf-8 -*-
"""A TCP proxy in front of the sandbox's S3 endpoint that a test can cut, blackhole and watch.

:class:`S3Cutter` listens on 127.0.0.1 (a free port) and relays every connection to the real endpoint (moto's
server). It reads the HTTP/1.1 requests that pass through it (request line, headers, the body's length from
``Content-Length`` or chunked framing) so that it knows where each request starts on a keep-alive connection, and
records each one as a :class:`Request` (method, path, object key). A test can register hooks that run an action
(kill the module process, cut S3) at the exact moment a chosen request arrives, or at the moment S3 has answered it
(the object is stored, the module has not heard so yet).

Only what the S3 API over plain HTTP needs is understood: no TLS, path-style addressing (``/bucket/key``, which the
collection's client uses for any endpoint but AWS), and no pipelining (botocore waits for each response before it
sends the next request on a connection, so the bytes S3 sends back always answer the last request seen). moto
answers ``Connection: close``, so in the sandbox each request comes on a connection of its own; the keep-alive
framing serves other endpoints (and is checked on its own by test_tools).

Usage::

    with S3Cutter(sandbox.s3.endpoint_url) as s3:
        params['endpoint_url'] = s3.endpoint_url
        s3.on_request(put_of('.meta.json'), run.kill, when='response', drop=True)
        ...
        s3.cut()      # live connections are reset, new ones are accepted and reset at once
        s3.resume()   # relay again
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
import urllib.parse

__all__ = ['Request', 'RequestReader', 'S3Cutter', 'delete_of', 'get_of', 'put_of']

RELAY = 'relay'
CUT = 'cut'
BLACKHOLE = 'blackhole'
_READ = 64 * 1024  # bytes per socket read
_HEAD_LIMIT = 64 * 1024  # longest request or response head (line + headers) accepted, bytes


class Request(collections.namedtuple('Request', 'method path key connection at')):
    """One HTTP request seen by the proxy.

    :ivar method: str, ``GET``, ``PUT``, ``HEAD``, ``DELETE``, ``POST``.
    :ivar path: str, the request target as sent (``/bucket/key?query``, still percent-encoded).
    :ivar key: str, the object key: the decoded path without the bucket (path-style addressing) and the query;
        ``''`` for a bucket-level request such as ListObjectsV2.
    :ivar connection: int, the number of the client connection (1, 2, ...).
    :ivar at: float, ``time.monotonic()`` when its head arrived.
    """


def put_of(suffix=''):
    """Predicate: a PUT of an object whose key ends with ``suffix``."""
    return lambda request: request.method == 'PUT' and request.key.endswith(suffix) and request.key != ''


def get_of(suffix=''):
    """Predicate: a GET of an object whose key ends with ``suffix`` (not a listing)."""
    return lambda request: request.method == 'GET' and request.key.endswith(suffix) and request.key != ''


def delete_of(suffix=''):
    """Predicate: a DELETE of an object whose key ends with ``suffix``."""
    return lambda request: request.method == 'DELETE' and request.key.endswith(suffix) and request.key != ''


def _object_key(path):
    target = urllib.parse.unquote(path.split('?', 1)[0])
    parts = target.lstrip('/').split('/', 1)
    return parts[1] if len(parts) == 2 else ''


def _reset(sock):
    """Close ``sock`` with a TCP RST (SO_LINGER 0), the way a dead peer or a dropping firewall looks.

    The other relay thread may be blocked in ``recv`` on it, and Linux does not end a connection whose socket a
    blocked call still holds: ``shutdown(SHUT_RD)`` wakes that call (it sends nothing), so that the last close,
    with SO_LINGER 0, sends the RST at once.
    """
    _quietly(sock.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    _quietly(sock.shutdown, socket.SHUT_RD)
    _quietly(sock.close)


def _close(sock):
    """Close ``sock`` normally (FIN), waking a thread blocked in ``recv`` on it."""
    _quietly(sock.shutdown, socket.SHUT_RDWR)
    _quietly(sock.close)


def _quietly(call, *args):
    try:
        call(*args)
    except OSError:
        pass


class _Hook:
    """One registration of :meth:`S3Cutter.on_request`; ``fired`` lists the requests its action ran at."""

    def __init__(self, predicate, action, when, drop, nth, times):
        if when not in ('request', 'response'):
            raise ValueError("when must be 'request' or 'response', not %r" % (when,))
        self.predicate, self.action, self.when, self.drop = predicate, action, when, drop
        self.nth, self.left, self.matches, self.fired = nth, times, 0, []


class RequestReader:
    """Finds the request heads in the byte stream a client sends (Content-Length and chunked bodies)."""

    def __init__(self):
        self.buffer = b''
        self.body_left = 0  # bytes of a Content-Length body still to pass
        self.chunked = None  # None, or the chunked decoder's state: 'size', 'data', 'crlf', 'trailer'
        self.chunk_left = 0

    def feed(self, data):
        """Split ``data`` into a list of ``(bytes, head)`` pieces in order; ``head`` is ``(method, path)`` for a
        piece that is a complete request head, else None (body bytes). A head not complete yet stays buffered."""
        self.buffer += data
        pieces = []
        while self.buffer:
            if self.body_left:
                take = self.buffer[:self.body_left]
                self.body_left -= len(take)
                self.buffer = self.buffer[len(take):]
                pieces.append((take, None))
            elif self.chunked:
                piece = self._chunk_piece()
                if piece is None:
                    break
                pieces.append((piece, None))
            else:
                end = self.buffer.find(b'\r\n\r\n')
                if end < 0:
                    if len(self.buffer) > _HEAD_LIMIT:  # not HTTP: relay as it is
                        pieces.append((self.buffer, None))
                        self.buffer = b''
                    break
                head, self.buffer = self.buffer[:end + 4], self.buffer[end + 4:]
                pieces.append((head, self._start_body(head)))
        return pieces

    def _start_body(self, head):
        lines = head.decode('latin-1').split('\r\n')
        request_line = lines[0].split(' ')
        headers = dict((name.strip().lower(), value.strip()) for name, sep, value in
                       (line.partition(':') for line in lines[1:] if line) if sep)
        if 'chunked' in headers.get('transfer-encoding', '').lower():
            self.chunked = 'size'
        else:
            self.body_left = int(headers.get('content-length') or 0)
        return (request_line[0], request_line[1] if len(request_line) > 1 else '')

    def _chunk_piece(self):
        """The next complete piece of a chunked body, or None when more bytes are needed."""
        if self.chunked == 'data':
            take = self.buffer[:self.chunk_left]
            self.chunk_left -= len(take)
            self.buffer = self.buffer[len(take):]
            if not self.chunk_left:
                self.chunked = 'crlf'
            return take
        end = self.buffer.find(b'\r\n')
        if end < 0:
            return None
        line, self.buffer = self.buffer[:end + 2], self.buffer[end + 2:]
        if self.chunked == 'size':
            size = int(line.split(b';', 1)[0].strip() or b'0', 16)
            self.chunked, self.chunk_left = ('data', size) if size else ('trailer', 0)
        elif self.chunked == 'crlf':
            self.chunked = 'size'
        elif line == b'\r\n':  # the empty line that ends the trailer
            self.chunked = None
        return line


class _Connection:
    """One client connection and its connection to S3, relayed by two threads."""

    def __init__(self, proxy, number, client, upstream):
        self.proxy, self.number, self.client, self.upstream = proxy, number, client, upstream
        self.closed = threading.Event()
        self.current = None  # the last request seen
        self.watch = []  # response hooks armed by it
        self.answered = True  # its final response head has been relayed

    def start(self):
        for target in (self._from_client, self._from_upstream):
            threading.Thread(target=target, name='s3-cutter-%d' % self.number, daemon=True).start()

    def close(self, reset=True):
        if self.closed.is_set():
            return
        self.closed.set()
        for sock in (self.client, self.upstream):
            (_reset if reset else _close)(sock)
        self.proxy.forget(self)

    def _from_client(self):
        reader = RequestReader()
        try:
            while not self.closed.is_set():
                data = self.client.recv(_READ)
                if not data:
                    break
                for piece, head in reader.feed(data):
                    if head is not None and not self._request(head):
                        return
                    self.upstream.sendall(piece)
        except OSError:
            pass
        finally:
            self.close(reset=False)

    def _request(self, head):
        """Record a request head and run its request hooks; False when the connection was dropped."""
        request = Request(head[0], head[1], _object_key(head[1]), self.number, time.monotonic())
        now, later = self.proxy.arm(request)
        self.current, self.watch, self.answered = request, later, not later
        for hook in now:
            self.proxy.fire(hook, request)
            if hook.drop:
                self.close()
                return False
        return not self.closed.is_set()

    def _from_upstream(self):
        pending = b''
        try:
            while not self.closed.is_set():
                data = self.upstream.recv(_READ)
                if not data:
                    break
                if self.answered:
                    self.client.sendall(data)
                    continue
                pending += data
                pending = self._response_heads(pending)
                if pending is None:
                    return
        except OSError:
            pass
        finally:
            self.close(reset=False)

    def _response_heads(self, pending):
        """Relay interim (1xx) responses at once; at the final response's head run the response hooks, then
        relay. Returns the bytes still held back, or None when the connection was dropped."""
        while not self.answered:
            end = pending.find(b'\r\n\r\n')
            if end < 0:
                return pending
            head = pending[:end + 4]
            status = head.split(b' ', 2)[1] if head.count(b' ') >= 1 else b'0'
            if status.startswith(b'1'):
                self.client.sendall(head)
                pending = pending[end + 4:]
                continue
            self.answered = True
            for hook in self.watch:
                self.proxy.fire(hook, self.current)
                if hook.drop:
                    self.close()
                    return None
        if pending:
            self.client.sendall(pending)
        return b''


class S3Cutter:
    """The proxy; use it as a context manager (it starts on ``__enter__`` and stops on ``__exit__``).

    :param upstream_url: str, the real endpoint, ``http://127.0.0.1:<port>``.
    """

    def __init__(self, upstream_url):
        parsed = urllib.parse.urlsplit(upstream_url)
        if parsed.scheme != 'http':
            raise ValueError('S3Cutter relays plain HTTP only, not %r' % upstream_url)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self.mode = RELAY
        self.requests = []
        self.errors = []  # (hook action, exception) of actions that raised
        self._lock = threading.RLock()
        self._hooks = []
        self._live = set()
        self._held = []  # blackholed sockets
        self._count = 0
        self._stop = threading.Event()
        self._listener = None
        self._thread = None

    # -- life cycle --------------------------------------------------------------------------------------

    @property
    def endpoint_url(self):
        """``http://127.0.0.1:<port>`` of the proxy: give it to the module as ``endpoint_url``."""
        return 'http://127.0.0.1:%d' % self._listener.getsockname()[1]

    def __enter__(self):
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, name='s3-cutter-accept', daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        self._drop_all(reset=False)
        with self._lock:
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    # -- faults ------------------------------------------------------------------------------------------

    def cut(self):
        """Reset every live connection and, until :meth:`resume`, reset each new one as soon as it is accepted
        (the client sees "connection reset by peer" and retries, then gives up)."""
        with self._lock:
            self.mode = CUT
        self._drop_all(reset=True)

    def blackhole(self):
        """Reset every live connection and, until :meth:`resume`, accept new ones and never answer them (the
        client waits for its read timeout). :meth:`resume` closes the connections held."""
        with self._lock:
            self.mode = BLACKHOLE
        self._drop_all(reset=True)

    def resume(self):
        """Relay again; connections held by :meth:`blackhole` are closed."""
        with self._lock:
            self.mode = RELAY
            held, self._held = self._held, []
        for sock in held:
            _reset(sock)

    # -- observing ---------------------------------------------------------------------------------------

    def on_request(self, predicate, action, when='request', drop=False, nth=1, times=1):
        """Call ``action(request)`` at the ``nth`` request for which ``predicate(request)`` is true, and again at
        every later match until it has run ``times`` times (``times=None``: always).

        :param predicate: callable taking a :class:`Request`, e.g. :func:`put_of` ``('.pending')``.
        :param action: callable taking the :class:`Request`; it runs in the proxy's thread of that connection,
            while the request waits: kill a process (and wait for it to be gone), :meth:`cut`, sleep...
        :param when: ``'request'``: when the request's head has arrived, before any byte of it reaches S3;
            ``'response'``: when S3's final response head has arrived (the request is done at S3: a PUT object
            is stored), before the client sees any byte of it.
        :param drop: after the action, reset this client connection instead of relaying the request (or the
            response): the request never reaches S3 (or the client never learns it succeeded).
        :returns: list that collects the requests at which the action ran.
        """
        hook = _Hook(predicate, action, when, drop, nth, times)
        with self._lock:
            self._hooks.append(hook)
        return hook.fired

    def count(self, predicate):
        """How many requests seen so far match ``predicate`` (int)."""
        with self._lock:
            return sum(1 for r in self.requests if predicate(r))

    def check(self):
        """Raise AssertionError when a hook action raised (its exception would otherwise stay in a thread)."""
        if self.errors:
            raise AssertionError('S3Cutter hook actions failed: %r' % (self.errors,))

    # -- used by the relay threads of each connection --------------------------------------------------

    def arm(self, request):
        """Record ``request``; return (hooks to run now, hooks to run at its response)."""
        now, later = [], []
        with self._lock:
            self.requests.append(request)
            for hook in self._hooks:
                if hook.left == 0 or not hook.predicate(request):
                    continue
                hook.matches += 1
                if hook.matches < hook.nth:
                    continue
                if hook.left is not None:
                    hook.left -= 1
                (now if hook.when == 'request' else later).append(hook)
        return now, later

    def fire(self, hook, request):
        """Run ``hook``'s action for ``request``; an exception is kept for :meth:`check`."""
        hook.fired.append(request)
        try:
            hook.action(request)
        except Exception as exc:  # pylint: disable=broad-except  # reported by check()
            self.errors.append((hook.action, exc))

    def _accept(self):
        while not self._stop.is_set():
            try:
                client, dummy = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._admit(client)

    def _admit(self, client):
        with self._lock:
            mode = self.mode
            if mode == BLACKHOLE:
                self._held.append(client)
                return
        if mode == CUT:
            _reset(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            _reset(client)
            return
        with self._lock:
            if self.mode != RELAY:  # cut or blackholed while connecting
                _reset(client)
                _reset(upstream)
                return
            self._count += 1
            connection = _Connection(self, self._count, client, upstream)
            self._live.add(connection)
        connection.start()

    def forget(self, connection):
        """``connection`` is closed: no longer live."""
        with self._lock:
            self._live.discard(connection)

    def _drop_all(self, reset):
        with self._lock:
            live = list(self._live)
        for connection in live:
            connection.close(reset=reset)
