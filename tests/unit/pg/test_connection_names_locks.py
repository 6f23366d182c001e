# -*- coding: utf-8 -*-
"""Unit tests of the pure helpers in module_utils._pg: connection, names, locks, catalog (no server)."""

from __future__ import annotations

import pytest

from ansible_collections.pgops.resilience.plugins.module_utils._core.errors import PgopsError
from ansible_collections.pgops.resilience.plugins.module_utils._pg.catalog import walfile_timeline
from ansible_collections.pgops.resilience.plugins.module_utils._pg.connection import connection_kwargs, describe_server
from ansible_collections.pgops.resilience.plugins.module_utils._pg.locks import advisory_lock_key, validate_lock_key
from ansible_collections.pgops.resilience.plugins.module_utils._pg.names import (
    display_name, parse_qualified_name, function_shape)


@pytest.mark.parametrize('text, expected', [
    ('kv_store', (None, 'kv_store')),
    ('KV_Store', (None, 'kv_store')),
    ('app.kv_store', ('app', 'kv_store')),
    ('app."Documents"', ('app', 'Documents')),
    ('"My Schema"."a ""b"" c"', ('My Schema', 'a "b" c')),
    ('  app . "x.y"  ', ('app', 'x.y')),
    ('"Ünïcode"', (None, 'Ünïcode')),
    ('tëst', (None, 'tëst')),
    ('"; DROP TABLE x; --"', (None, '; DROP TABLE x; --')),
])
def test_parse_qualified_name(text, expected):
    assert parse_qualified_name(text) == expected


@pytest.mark.parametrize('text', ['', 'a.b.c', '"unterminated', '""', 'a;b', '1abc', 'a.', 'x y'])
def test_parse_qualified_name_rejects(text):
    with pytest.raises(PgopsError) as err:
        parse_qualified_name(text, option='target_table')
    assert 'target_table' in err.value.msg


def test_parse_function_call_parentheses():
    assert parse_qualified_name('app.rebuild()', allow_call=True) == ('app', 'rebuild')
    assert parse_qualified_name('"Re build" ( )', allow_call=True) == (None, 'Re build')
    with pytest.raises(PgopsError, match='without arguments'):
        parse_qualified_name('rebuild(1)', option='rebuild_function', allow_call=True)


@pytest.mark.parametrize('schema, name, expected', [
    ('public', 'kv_store', 'kv_store'),
    ('app', 'kv_store', 'app.kv_store'),
    ('app', 'Documents', 'app."Documents"'),
    ('Weird Schema', 'a"b', '"Weird Schema"."a""b"'),
])
def test_display_name(schema, name, expected):
    assert display_name(schema, name) == expected


def test_advisory_lock_key_is_stable_signed_64_bit():
    key = advisory_lock_key('pgops.resilience', 'pg_unlogged_rebuild', 'public', 'kv_store')
    assert key == advisory_lock_key('pgops.resilience', 'pg_unlogged_rebuild', 'public', 'kv_store')
    assert -2 ** 63 <= key < 2 ** 63
    assert key != advisory_lock_key('pgops.resilience', 'pg_unlogged_rebuild', 'public', 'rate_limits')


def test_walfile_timeline():
    assert walfile_timeline('000000020000000000000003') == 2
    assert walfile_timeline('0000000A0000000100000003') == 10


def test_unquoted_names_fold_ascii_only_like_postgresql():
    assert parse_qualified_name('Ümlaut') == (None, 'Ümlaut')
    assert parse_qualified_name('ÄBC') == (None, 'Äbc')


@pytest.mark.parametrize('returns_set, return_type, type_kind, shape', [
    (False, 'void', 'p', 'void'),
    (False, 'bigint', 'b', 'count'),
    (False, 'integer', 'b', 'count'),
    (True, 'record', 'p', 'rows'),      # RETURNS TABLE (...)
    (True, 'bigint', 'b', 'rows'),      # RETURNS SETOF bigint
    (False, 'record', 'p', 'rows'),     # OUT parameters
    (False, 'rebuild_report', 'c', 'rows'),  # a composite type
])
def test_function_shape(returns_set, return_type, type_kind, shape):
    assert function_shape(returns_set, return_type, type_kind) == shape


def test_validate_lock_key():
    assert validate_lock_key(-2 ** 63) == -2 ** 63
    with pytest.raises(PgopsError, match='lock_key 9223372036854775808 is outside the bigint range'):
        validate_lock_key(2 ** 63)


def _params(**overrides):
    params = dict(login_host='db.example', login_port=5433, login_user='ops', login_password='s3cr3t-pw', login_db='app',
                  ssl_mode='require', ca_cert=None, connect_timeout=7, connect_params={}, conninfo=None)
    params.update(overrides)
    return params


def test_connection_kwargs_discrete_options():
    dsn, kwargs = connection_kwargs(_params())
    assert dsn is None
    assert kwargs == dict(host='db.example', port=5433, user='ops', password='s3cr3t-pw', dbname='app', sslmode='require',
                          connect_timeout=7, application_name='pgops.resilience')


def test_connection_kwargs_conninfo_wins_and_keeps_its_own_settings():
    conninfo = 'postgresql://app:pw@db:5432/app?sslmode=verify-full&connect_timeout=3'
    dsn, kwargs = connection_kwargs(_params(conninfo=conninfo, connect_params={'target_session_attrs': 'read-write'}))
    assert dsn == conninfo
    # login_* and ssl_mode are ignored with conninfo; its own connect_timeout is kept.
    assert kwargs == dict(application_name='pgops.resilience', target_session_attrs='read-write')


def test_bad_conninfo_is_reported_without_echoing_it():
    with pytest.raises(PgopsError) as err:
        connection_kwargs(_params(conninfo='host=db password=hunter22 = broken'))
    assert 'conninfo is not a valid' in err.value.msg
    assert 'hunter22' not in err.value.msg


def test_describe_server_has_no_password():
    text = describe_server(_params(conninfo='host=db1 port=6432 user=app password=hunter22 dbname=orders'))
    assert text == 'app@db1:6432/orders'
    assert 'hunter22' not in describe_server(_params())
