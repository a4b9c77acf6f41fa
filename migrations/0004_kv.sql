-- The `kv` dependency: durable key-value storage, one namespace per plugin
-- (the plugin's module unless the operator set `kv_namespace`). The host
-- always filters on the calling plugin's namespace, so one plugin cannot
-- read or write another's keys. `increment` stores ASCII decimal i64.
CREATE TABLE cairn.kv (
    namespace text NOT NULL,
    key text NOT NULL,
    value bytea NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, key)
);
