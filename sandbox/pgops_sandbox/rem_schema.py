"""A database shaped like the runbook's application: entity tables, an UNLOGGED cache and its rebuild function.

``resources`` and ``moments`` are the entity tables (logged, replicated); ``kv_store`` and ``rate_limits``
are UNLOGGED (empty after crash recovery and on a promoted standby); ``rebuild_kv_store()`` fills
``kv_store`` from the entities and returns one row per entity table, the shape
``RETURNS TABLE(table_name text, rows_inserted bigint)``.
"""

SCHEMA_SQL = """
CREATE TABLE resources (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    uri         text,
    content     text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE moments (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text NOT NULL,
    starts_at   timestamptz NOT NULL,
    summary     text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNLOGGED TABLE kv_store (
    entity_key  text PRIMARY KEY,
    entity_type text NOT NULL,
    entity_id   bigint NOT NULL,
    tenant_id   text NOT NULL,
    data        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE UNLOGGED TABLE rate_limits (
    key          text PRIMARY KEY,
    hits         integer NOT NULL,
    window_start timestamptz NOT NULL
);
CREATE FUNCTION rebuild_kv_store() RETURNS TABLE (table_name text, rows_inserted bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint;
BEGIN
    INSERT INTO kv_store (entity_key, entity_type, entity_id, tenant_id, data, updated_at)
    SELECT 'resources/' || r.tenant_id || '/' || r.id, 'resources', r.id, r.tenant_id,
           jsonb_build_object('name', r.name, 'uri', r.uri), r.updated_at
      FROM resources r
    ON CONFLICT (entity_key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    table_name := 'resources'; rows_inserted := n; RETURN NEXT;

    INSERT INTO kv_store (entity_key, entity_type, entity_id, tenant_id, data, updated_at)
    SELECT 'moments/' || m.tenant_id || '/' || m.id, 'moments', m.id, m.tenant_id,
           jsonb_build_object('name', m.name, 'starts_at', m.starts_at), m.updated_at
      FROM moments m
    ON CONFLICT (entity_key) DO UPDATE SET data = EXCLUDED.data, updated_at = EXCLUDED.updated_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    table_name := 'moments'; rows_inserted := n; RETURN NEXT;
END
$fn$;
"""

FILL_SQL = """
INSERT INTO resources (tenant_id, name, uri, content, updated_at)
SELECT 'tenant-' || (g %% 20), 'resource ' || g, 'https://example.com/r/' || g, repeat('x', 40),
       now() - (g || ' seconds')::interval
  FROM generate_series(1, %(rows)s) AS g;
INSERT INTO moments (tenant_id, name, starts_at, summary, updated_at)
SELECT 'tenant-' || (g %% 20), 'moment ' || g, now() - (g || ' minutes')::interval, 'summary ' || g,
       now() - (g || ' seconds')::interval
  FROM generate_series(1, %(rows)s) AS g;
INSERT INTO rate_limits (key, hits, window_start)
SELECT 'client-' || g, g, now() FROM generate_series(1, 100) AS g;
ANALYZE resources, moments;
"""


def create_rem_schema(conn, rows=50000):
    """Create the tables and the rebuild function in the connected database, load ``rows`` rows into each
    entity table, and fill ``kv_store`` as the running application would have.

    :param conn: psycopg2 connection to an empty database (its autocommit mode is left as it was).
    :param rows: int, rows per entity table.
    :returns: int, rows in ``kv_store`` (``2 * rows``).
    """
    with conn.cursor() as cursor:
        cursor.execute(SCHEMA_SQL)
        cursor.execute(FILL_SQL, {'rows': int(rows)})
        cursor.execute('SELECT sum(rows_inserted) FROM rebuild_kv_store()')
        total = int(cursor.fetchone()[0])
    if not conn.autocommit:
        conn.commit()
    return total
