-- cairn's queue: one table of action rows, a table of live hosts, and a SQL
-- API any language can call. See docs/queue.md for the lifecycle of a row.
--
-- Everything lives in the schema `cairn`. Functions whose names start with an
-- underscore are internal helpers; the rest are the public API.

CREATE SCHEMA IF NOT EXISTS cairn;

-- One row per requested run of an action `module:name`.
CREATE TABLE cairn.actions (
    id bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME cairn.actions_id_seq) PRIMARY KEY,
    module text NOT NULL,
    name text NOT NULL,
    -- Protobuf `WorkflowArguments` (guest-sdk/payload/proto/messages.proto),
    -- handed to the guest unchanged.
    args bytea NOT NULL DEFAULT '\x',
    status text NOT NULL DEFAULT 'queued'
        CONSTRAINT actions_status_check
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    -- Lower runs first; ties go to the earlier run_at, then the lower id.
    priority integer NOT NULL DEFAULT 0,
    -- Not claimed before this time (delays and retry backoff set it).
    run_at timestamptz NOT NULL DEFAULT now(),
    -- Attempts started so far (a claim counts one; a graceful requeue gives
    -- it back).
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- Overrides of the action's declared defaults; NULL = the default. The
    -- first claim stamps max_attempts with the effective value so that any
    -- host can rescue the row without knowing the action.
    max_attempts integer CHECK (max_attempts >= 1),
    timeout_ms bigint CHECK (timeout_ms > 0),
    initial_backoff_ms bigint CHECK (initial_backoff_ms >= 0),
    max_backoff_ms bigint CHECK (max_backoff_ms >= 0),
    -- Unique among live (queued or running) rows; see the index below.
    idempotency_key text,
    -- Which host runs the row, and until when it must renew its lease.
    lease_owner text,
    lease_expires_at timestamptz,
    -- Result payload (protobuf `WorkflowArguments` with key `result`), stored
    -- unchanged as the guest returned it.
    result bytea,
    -- Last error payload (key `error`); kept across retries.
    error bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    -- A running row always has a lease; no other row has one.
    CONSTRAINT actions_lease_check
        CHECK ((status = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Exactly what the claim needs: queued rows in claim order. Finished rows,
-- however many, are not in it.
CREATE INDEX actions_claim_idx ON cairn.actions (priority, run_at, id)
    WHERE status = 'queued';

-- Rescue of expired leases scans only running rows.
CREATE INDEX actions_lease_idx ON cairn.actions (lease_expires_at)
    WHERE status = 'running';

-- An idempotency key names at most one live row; once the row is finished
-- (succeeded, failed, cancelled) the key may be used again.
CREATE UNIQUE INDEX actions_idempotency_key_idx ON cairn.actions (idempotency_key)
    WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running');

-- Hosts that are up, with the `module:name` keys each serves. A host is live
-- while its heartbeat is recent; the unknown-action rule reads this.
CREATE TABLE cairn.hosts (
    host_id text PRIMARY KEY,
    actions text[] NOT NULL DEFAULT '{}',
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

------------------------------------------------------------------------------
-- Wake-up notifications
------------------------------------------------------------------------------

-- Channel `cairn_actions`: rows became claimable (inserted, requeued or
-- rescued). Payload: the distinct `module:name` keys, comma-separated, or ''
-- when they would not fit a notification. Idle hosts LISTEN and claim.
CREATE FUNCTION cairn._notify_enqueued() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    keys text;
BEGIN
    SELECT string_agg(k, ',') INTO keys
    FROM (SELECT DISTINCT module || ':' || name AS k
          FROM new_rows WHERE status = 'queued' AND run_at <= now()) s;
    IF keys IS NOT NULL THEN
        -- NOTIFY payloads must stay under 8000 bytes.
        PERFORM pg_notify('cairn_actions', CASE WHEN octet_length(keys) < 7000 THEN keys ELSE '' END);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER actions_notify_enqueued
    AFTER INSERT ON cairn.actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION cairn._notify_enqueued();

CREATE FUNCTION cairn._notify_requeued() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Duplicate payloads in one transaction are folded into one notification.
    PERFORM pg_notify('cairn_actions', NEW.module || ':' || NEW.name);
    RETURN NULL;
END $$;

CREATE TRIGGER actions_notify_requeued
    AFTER UPDATE OF status ON cairn.actions
    FOR EACH ROW
    WHEN (NEW.status = 'queued' AND OLD.status <> 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION cairn._notify_requeued();

-- Channel `cairn_results`: a row finished (succeeded, failed or cancelled).
-- Payload: its id. `wait`ers LISTEN here.
CREATE FUNCTION cairn._notify_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cairn_results', NEW.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER actions_notify_finished
    AFTER UPDATE OF status ON cairn.actions
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled') AND OLD.status <> NEW.status)
    EXECUTE FUNCTION cairn._notify_finished();

------------------------------------------------------------------------------
-- JSON -> protobuf `WorkflowArguments`, in SQL
--
-- Byte for byte what `cairn_payload::json::json_to_arguments` followed by
-- prost encoding produces for the same JSON (as jsonb prints it):
--   object  -> dict_value (entries sorted by key bytes, as serde_json's map)
--   array   -> list_value
--   integer -> int_value (sint64, zigzag) inside i64; decimal string_value up
--              to u64::MAX; double beyond (serde_json parses those as f64)
--   other number -> double_value (little-endian IEEE 754)
--   string, bool, null -> string_value, bool_value, null_value
------------------------------------------------------------------------------

-- Base-128 varint of a u64 held in a bigint (negative = high bit set).
CREATE FUNCTION cairn._pb_varint(v bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    out bytea := '\x';
    b integer;
BEGIN
    LOOP
        b := (v & 127)::integer;
        -- Logical shift right by 7: the arithmetic shift, then clear the top
        -- 7 bits (144115188075855871 = 2^57 - 1).
        v := (v >> 7) & 144115188075855871;
        IF v = 0 THEN
            RETURN out || set_byte('\x00'::bytea, 0, b);
        END IF;
        out := out || set_byte('\x00'::bytea, 0, b | 128);
    END LOOP;
END $$;

-- A length-delimited field (wire type 2) with field number `field` (< 16).
CREATE FUNCTION cairn._pb_field(field integer, body bytea) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT set_byte('\x00'::bytea, 0, (field << 3) | 2)
        || CASE WHEN octet_length(body) < 128
                THEN set_byte('\x00'::bytea, 0, octet_length(body))
                ELSE cairn._pb_varint(octet_length(body)) END
        || body
$$;

-- IEEE 754 double, little-endian (float8send is big-endian).
CREATE FUNCTION cairn._pb_double(x double precision) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT substr(b, 8, 1) || substr(b, 7, 1) || substr(b, 6, 1) || substr(b, 5, 1)
        || substr(b, 4, 1) || substr(b, 3, 1) || substr(b, 2, 1) || substr(b, 1, 1)
    FROM (SELECT float8send(x) AS b) s
$$;

-- The body of a `WorkflowArgumentValue` for any JSON value. (Defined before
-- _pb_entries, which it calls and which calls it: a plpgsql body is checked
-- only when first run.)
CREATE FUNCTION cairn._pb_value(v jsonb) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    prim bytea;
    items bytea;
    digits text;
    n numeric;
BEGIN
    CASE jsonb_typeof(v)
    WHEN 'object' THEN
        RETURN cairn._pb_field(6, cairn._pb_entries(v));
    WHEN 'array' THEN
        SELECT coalesce(string_agg(cairn._pb_field(1, cairn._pb_value(e)), '\x'::bytea ORDER BY i), '\x'::bytea)
            INTO items
            FROM jsonb_array_elements(v) WITH ORDINALITY AS a(e, i);
        RETURN cairn._pb_field(4, items);
    WHEN 'string' THEN
        prim := cairn._pb_field(1, convert_to(v #>> '{}', 'UTF8'));
    WHEN 'boolean' THEN
        prim := CASE WHEN v = 'true'::jsonb THEN '\x2001'::bytea ELSE '\x2000'::bytea END;
    WHEN 'number' THEN
        -- jsonb prints numbers without exponents; a number without a
        -- fraction is an integer to serde_json too.
        digits := v::text;
        n := digits::numeric;
        IF digits !~ '[.]' AND n BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
            prim := '\x18'::bytea || cairn._pb_varint((n::bigint << 1) # (n::bigint >> 63));
        ELSIF digits !~ '[.]' AND n BETWEEN 9223372036854775808 AND 18446744073709551615 THEN
            prim := cairn._pb_field(1, convert_to(digits, 'UTF8'));
        ELSE
            prim := '\x11'::bytea || cairn._pb_double(n::double precision);
        END IF;
    ELSE -- 'null'
        prim := '\x2800'::bytea;
    END CASE;
    RETURN cairn._pb_field(1, prim);
END $$;

-- The repeated `WorkflowArgument` entries (field 1) of a JSON object, which
-- is both `WorkflowArguments` and the body of `WorkflowDictArgument`.
CREATE FUNCTION cairn._pb_entries(obj jsonb) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(
        cairn._pb_field(1,
            -- proto3 leaves an empty string key out.
            CASE WHEN key = '' THEN '\x'::bytea ELSE cairn._pb_field(1, convert_to(key, 'UTF8')) END
            || cairn._pb_field(2, cairn._pb_value(value))),
        '\x'::bytea ORDER BY key COLLATE "C"), '\x'::bytea)
    FROM jsonb_each(obj)
$$;

-- Public: a JSON object of keyword arguments as protobuf `WorkflowArguments`
-- bytes, for the `args` column.
CREATE FUNCTION cairn.args_from_json(args jsonb) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'cairn enqueue: arguments must be a JSON object of keyword arguments, got %',
            jsonb_typeof(args)
            USING ERRCODE = '22023';
    END IF;
    RETURN cairn._pb_entries(args);
END $$;

------------------------------------------------------------------------------
-- Enqueue
------------------------------------------------------------------------------

-- The one insert path. With an idempotency key that names a live row, returns
-- that row's id and inserts nothing.
CREATE FUNCTION cairn._enqueue(
    p_module text, p_name text, p_args bytea, p_run_at timestamptz, p_delay interval,
    p_priority integer, p_max_attempts integer, p_idempotency_key text,
    p_timeout_ms bigint, p_initial_backoff_ms bigint, p_max_backoff_ms bigint
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF p_module IS NULL OR p_name IS NULL OR p_module = '' OR p_name = '' THEN
        RAISE EXCEPTION 'cairn enqueue: module and name must be non-empty' USING ERRCODE = '22023';
    END IF;
    LOOP
        INSERT INTO cairn.actions AS a
            (module, name, args, run_at, priority, max_attempts, idempotency_key,
             timeout_ms, initial_backoff_ms, max_backoff_ms)
        VALUES (p_module, p_name, coalesce(p_args, '\x'::bytea),
                coalesce(p_run_at, now()) + coalesce(p_delay, interval '0'),
                coalesce(p_priority, 0), p_max_attempts, p_idempotency_key,
                p_timeout_ms, p_initial_backoff_ms, p_max_backoff_ms)
        ON CONFLICT (idempotency_key)
            WHERE idempotency_key IS NOT NULL AND status IN ('queued', 'running')
            DO NOTHING
        RETURNING a.id INTO new_id;
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
        -- The key is live: return its row. Each statement here sees a fresh
        -- snapshot, so if that row finished in between, the insert is tried
        -- again and now succeeds.
        SELECT a.id INTO new_id FROM cairn.actions a
        WHERE a.idempotency_key = p_idempotency_key AND a.status IN ('queued', 'running');
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
    END LOOP;
END $$;

-- Public: enqueue one action with JSON arguments; returns its id.
-- run_at and delay add up (run_at defaults to now()). With an idempotency key
-- that is already live (queued or running), returns the existing id.
CREATE FUNCTION cairn.enqueue(
    module text,
    name text,
    args jsonb DEFAULT '{}',
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    timeout_ms bigint DEFAULT NULL,
    initial_backoff_ms bigint DEFAULT NULL,
    max_backoff_ms bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $$
    SELECT cairn._enqueue($1, $2, cairn.args_from_json(coalesce($3, '{}'::jsonb)), $4, $5, $6, $7, $8, $9, $10, $11)
$$;

-- Public: the same with JSON arguments as text, so that an untyped literal
-- (`cairn.enqueue('m', 'n', '{"x": 1}')`) is not ambiguous between the jsonb
-- and bytea overloads.
CREATE FUNCTION cairn.enqueue(
    module text,
    name text,
    args text,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    timeout_ms bigint DEFAULT NULL,
    initial_backoff_ms bigint DEFAULT NULL,
    max_backoff_ms bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $$
    SELECT cairn._enqueue($1, $2, cairn.args_from_json(coalesce($3, '{}')::jsonb), $4, $5, $6, $7, $8, $9, $10, $11)
$$;

-- Public: the same with arguments already encoded as protobuf
-- `WorkflowArguments` bytes (stored unchanged).
CREATE FUNCTION cairn.enqueue(
    module text,
    name text,
    args bytea,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    priority integer DEFAULT 0,
    max_attempts integer DEFAULT NULL,
    idempotency_key text DEFAULT NULL,
    timeout_ms bigint DEFAULT NULL,
    initial_backoff_ms bigint DEFAULT NULL,
    max_backoff_ms bigint DEFAULT NULL
) RETURNS bigint
LANGUAGE sql AS $$
    SELECT cairn._enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
$$;

-- Public: enqueue many rows in one call, from arrays of equal length (NULL
-- arrays or elements take the defaults). Returns the ids in input order.
-- Rows without an idempotency key are inserted with one statement; rows with
-- one go through the idempotent path one by one.
CREATE FUNCTION cairn.enqueue_many(
    modules text[],
    names text[],
    args bytea[],
    run_ats timestamptz[] DEFAULT NULL,
    delays interval[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL,
    idempotency_keys text[] DEFAULT NULL,
    timeouts_ms bigint[] DEFAULT NULL,
    initial_backoffs_ms bigint[] DEFAULT NULL,
    max_backoffs_ms bigint[] DEFAULT NULL
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    n integer := coalesce(cardinality(modules), 0);
    ids bigint[];
    positions integer[];
    keyless_ids bigint[];
BEGIN
    IF coalesce(cardinality(names), 0) <> n
       OR (args IS NOT NULL AND cardinality(args) <> n)
       OR (run_ats IS NOT NULL AND cardinality(run_ats) <> n)
       OR (delays IS NOT NULL AND cardinality(delays) <> n)
       OR (priorities IS NOT NULL AND cardinality(priorities) <> n)
       OR (max_attempts IS NOT NULL AND cardinality(max_attempts) <> n)
       OR (idempotency_keys IS NOT NULL AND cardinality(idempotency_keys) <> n)
       OR (timeouts_ms IS NOT NULL AND cardinality(timeouts_ms) <> n)
       OR (initial_backoffs_ms IS NOT NULL AND cardinality(initial_backoffs_ms) <> n)
       OR (max_backoffs_ms IS NOT NULL AND cardinality(max_backoffs_ms) <> n) THEN
        RAISE EXCEPTION 'cairn enqueue_many: every array must have as many elements as modules (%)', n
            USING ERRCODE = '22023';
    END IF;
    IF n = 0 THEN
        RETURN '{}'::bigint[];
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(modules, names) AS u(m, nm)
               WHERE m IS NULL OR nm IS NULL OR m = '' OR nm = '') THEN
        RAISE EXCEPTION 'cairn enqueue_many: module and name must be non-empty' USING ERRCODE = '22023';
    END IF;
    ids := array_fill(NULL::bigint, ARRAY[n]);
    -- Keyless rows: ids drawn in input order, one INSERT for all of them.
    WITH input AS (
        SELECT i, nextval('cairn.actions_id_seq') AS id FROM generate_series(1, n) AS i
        WHERE idempotency_keys IS NULL OR idempotency_keys[i] IS NULL
        ORDER BY i
    ), ins AS (
        INSERT INTO cairn.actions
            (id, module, name, args, run_at, priority, max_attempts,
             timeout_ms, initial_backoff_ms, max_backoff_ms)
        OVERRIDING SYSTEM VALUE
        SELECT input.id, modules[i], names[i], coalesce(args[i], '\x'::bytea),
               coalesce(run_ats[i], now()) + coalesce(delays[i], interval '0'),
               coalesce(priorities[i], 0), max_attempts[i],
               timeouts_ms[i], initial_backoffs_ms[i], max_backoffs_ms[i]
        FROM input ORDER BY i
    )
    SELECT array_agg(i ORDER BY i), array_agg(id ORDER BY i) INTO positions, keyless_ids FROM input;
    FOR k IN 1 .. coalesce(cardinality(positions), 0) LOOP
        ids[positions[k]] := keyless_ids[k];
    END LOOP;
    -- Keyed rows: the idempotent path, in input order (a key repeated in the
    -- batch yields the first row's id).
    IF idempotency_keys IS NOT NULL THEN
        FOR i IN 1 .. n LOOP
            IF idempotency_keys[i] IS NOT NULL THEN
                ids[i] := cairn._enqueue(modules[i], names[i], args[i], run_ats[i], delays[i],
                    priorities[i], max_attempts[i], idempotency_keys[i],
                    timeouts_ms[i], initial_backoffs_ms[i], max_backoffs_ms[i]);
            END IF;
        END LOOP;
    END IF;
    RETURN ids;
END $$;

-- Public: enqueue many rows from a JSON array of objects, each with the keys
-- of cairn.enqueue: {"module", "name", "args", "run_at", "delay", "priority",
-- "max_attempts", "idempotency_key", "timeout_ms", "initial_backoff_ms",
-- "max_backoff_ms"}. Unknown keys are an error. Returns the ids in order.
CREATE FUNCTION cairn.enqueue_many(actions jsonb) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    unknown text;
BEGIN
    IF jsonb_typeof(actions) <> 'array' THEN
        RAISE EXCEPTION 'cairn enqueue_many: expected a JSON array of objects, got %', jsonb_typeof(actions)
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT 1 FROM jsonb_array_elements(actions) e WHERE jsonb_typeof(e) <> 'object') THEN
        RAISE EXCEPTION 'cairn enqueue_many: every element must be a JSON object' USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(DISTINCT k, ', ') INTO unknown
    FROM jsonb_array_elements(actions) e, jsonb_object_keys(e) k
    WHERE k NOT IN ('module', 'name', 'args', 'run_at', 'delay', 'priority', 'max_attempts',
                    'idempotency_key', 'timeout_ms', 'initial_backoff_ms', 'max_backoff_ms');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'cairn enqueue_many: unknown keys: %', unknown USING ERRCODE = '22023';
    END IF;
    RETURN (
        SELECT cairn.enqueue_many(
            array_agg(e->>'module' ORDER BY i),
            array_agg(e->>'name' ORDER BY i),
            array_agg(cairn.args_from_json(coalesce(e->'args', '{}'::jsonb)) ORDER BY i),
            array_agg((e->>'run_at')::timestamptz ORDER BY i),
            array_agg((e->>'delay')::interval ORDER BY i),
            array_agg((e->>'priority')::integer ORDER BY i),
            array_agg((e->>'max_attempts')::integer ORDER BY i),
            array_agg(e->>'idempotency_key' ORDER BY i),
            array_agg((e->>'timeout_ms')::bigint ORDER BY i),
            array_agg((e->>'initial_backoff_ms')::bigint ORDER BY i),
            array_agg((e->>'max_backoff_ms')::bigint ORDER BY i))
        FROM jsonb_array_elements(actions) WITH ORDINALITY AS a(e, i)
    );
END $$;

------------------------------------------------------------------------------
-- Results and cancellation
------------------------------------------------------------------------------

-- Public: where a row is. `result` and `error` are the payload bytes
-- (protobuf); NULL status means no such row.
CREATE FUNCTION cairn.result(action_id bigint)
RETURNS TABLE (status text, attempts integer, result bytea, error bytea,
               created_at timestamptz, started_at timestamptz, finished_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT a.status, a.attempts, a.result, a.error, a.created_at, a.started_at, a.finished_at
    FROM cairn.actions a WHERE a.id = action_id
$$;

-- Public: cancel a queued or running row. A running row's host loses its
-- lease (its next renewal reports the row gone, and its completion is not
-- written). Returns whether the row was cancelled.
CREATE FUNCTION cairn.cancel(action_id bigint) RETURNS boolean
LANGUAGE sql AS $$
    WITH c AS (
        UPDATE cairn.actions
        SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
        WHERE id = action_id AND status IN ('queued', 'running')
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM c)
$$;
