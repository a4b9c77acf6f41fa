-- Protobuf payloads -> JSON, in SQL, so that any language can read results
-- without a protobuf library: SELECT cairn.payload_to_json(result) FROM ...
--
-- The mapping is cairn_payload::json's (payload_to_json, value_to_json,
-- error_to_json): {"result": value} or {"error": {type, module, message,
-- traceback, values, type_hierarchy}}; null, bool, string, int as themselves;
-- finite doubles as numbers, NaN/±infinity as "NaN"/"Infinity"/"-Infinity";
-- lists and tuples as arrays; dicts as objects (the first entry of a key
-- wins); a basemodel as the object of its data; an exception as the error
-- object. jsonb cannot keep "1.0 is a float": a double 1.0 reads as 1.

-- One protobuf varint at 0-based offset `pos`: its value (the u64 bits in a
-- bigint) and the offset after it.
CREATE FUNCTION cairn._pb_read_varint(b bytea, pos integer, OUT value bigint, OUT next integer)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    byte integer;
    shift integer := 0;
BEGIN
    value := 0;
    LOOP
        IF pos >= octet_length(b) OR shift > 63 THEN
            RAISE EXCEPTION 'cairn payload: truncated or overlong varint' USING ERRCODE = '22P03';
        END IF;
        byte := get_byte(b, pos);
        pos := pos + 1;
        value := value | ((byte & 127)::bigint << shift);
        shift := shift + 7;
        EXIT WHEN byte < 128;
    END LOOP;
    next := pos;
END $$;

-- The fields of one message, in order: field number, wire type, and the
-- value (varints in `ival`; fixed-width and length-delimited bytes in
-- `bval`).
CREATE FUNCTION cairn._pb_fields(b bytea)
RETURNS TABLE (ord integer, field integer, wire integer, ival bigint, bval bytea)
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    pos integer := 0;
    n integer := octet_length(b);
    tag bigint;
    len bigint;
BEGIN
    ord := 0;
    WHILE pos < n LOOP
        SELECT r.value, r.next INTO tag, pos FROM cairn._pb_read_varint(b, pos) r;
        ord := ord + 1;
        field := (tag >> 3)::integer;
        wire := (tag & 7)::integer;
        ival := NULL;
        bval := NULL;
        CASE wire
        WHEN 0 THEN
            SELECT r.value, r.next INTO ival, pos FROM cairn._pb_read_varint(b, pos) r;
        WHEN 1 THEN
            len := 8;
        WHEN 2 THEN
            SELECT r.value, r.next INTO len, pos FROM cairn._pb_read_varint(b, pos) r;
        WHEN 5 THEN
            len := 4;
        ELSE
            RAISE EXCEPTION 'cairn payload: unsupported protobuf wire type %', wire USING ERRCODE = '22P03';
        END CASE;
        IF wire <> 0 THEN
            IF len < 0 OR pos + len > n THEN
                RAISE EXCEPTION 'cairn payload: field % runs past the end', field USING ERRCODE = '22P03';
            END IF;
            bval := substring(b FROM pos + 1 FOR len::integer);
            pos := pos + len::integer;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- A little-endian IEEE 754 double as JSON: a number, or "NaN" / "Infinity"
-- / "-Infinity".
CREATE FUNCTION cairn._pb_double_to_json(le bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    bits bigint := ('x' || encode(substr(le, 8, 1) || substr(le, 7, 1) || substr(le, 6, 1)
        || substr(le, 5, 1) || substr(le, 4, 1) || substr(le, 3, 1) || substr(le, 2, 1)
        || substr(le, 1, 1), 'hex'))::bit(64)::bigint;
    exponent integer := ((bits >> 52) & 2047)::integer;
    mantissa bigint := bits & 4503599627370495; -- 2^52 - 1
    x double precision;
BEGIN
    IF exponent = 2047 THEN
        RETURN to_jsonb(CASE WHEN mantissa <> 0 THEN 'NaN'
                             WHEN bits < 0 THEN '-Infinity' ELSE 'Infinity' END);
    ELSIF exponent = 0 THEN
        x := mantissa::double precision * power(2::double precision, -1074);
    ELSE
        x := (4503599627370496 + mantissa)::double precision * power(2::double precision, exponent - 1075);
    END IF;
    IF bits < 0 THEN
        x := -x;
    END IF;
    -- float8's text is the shortest that round-trips (float8 -> numeric
    -- would keep only 15 digits).
    RETURN x::text::jsonb;
END $$;

-- A WorkflowArgumentValue as JSON. (Defined before _pb_entries_to_json and
-- _pb_error_to_json, which it calls and which call it: a plpgsql body is
-- checked only when first run, a SQL one when created.)
CREATE FUNCTION cairn._pb_value_to_json(b bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    kind record;
    p record;
    n bigint;
BEGIN
    -- Of a oneof, the last field present wins.
    SELECT * INTO kind FROM cairn._pb_fields(b) f WHERE f.field BETWEEN 1 AND 6 AND f.wire = 2
        ORDER BY f.ord DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 'null'::jsonb;
    END IF;
    CASE kind.field
    WHEN 1 THEN
        SELECT * INTO p FROM cairn._pb_fields(kind.bval) f WHERE f.field BETWEEN 1 AND 5
            ORDER BY f.ord DESC LIMIT 1;
        IF NOT FOUND THEN
            RETURN 'null'::jsonb;
        END IF;
        CASE p.field
        WHEN 1 THEN RETURN to_jsonb(convert_from(p.bval, 'UTF8'));
        WHEN 2 THEN RETURN cairn._pb_double_to_json(p.bval);
        WHEN 3 THEN
            -- zigzag: (n >>> 1) ^ -(n & 1)
            n := ((p.ival >> 1) & 9223372036854775807) # -(p.ival & 1);
            RETURN to_jsonb(n);
        WHEN 4 THEN RETURN to_jsonb(p.ival <> 0);
        ELSE RETURN 'null'::jsonb;
        END CASE;
    WHEN 2 THEN
        RETURN coalesce((SELECT cairn._pb_entries_to_json(d.bval) FROM cairn._pb_fields(kind.bval) d
                         WHERE d.field = 3 AND d.wire = 2 ORDER BY d.ord DESC LIMIT 1), '{}'::jsonb);
    WHEN 3 THEN
        RETURN cairn._pb_error_to_json(kind.bval);
    WHEN 4, 5 THEN
        RETURN coalesce((SELECT jsonb_agg(cairn._pb_value_to_json(i.bval) ORDER BY i.ord)
                         FROM cairn._pb_fields(kind.bval) i WHERE i.field = 1 AND i.wire = 2), '[]'::jsonb);
    ELSE
        RETURN cairn._pb_entries_to_json(kind.bval);
    END CASE;
END $$;

-- The entries of a WorkflowArguments / WorkflowDictArgument as an object;
-- the first entry of a key wins.
CREATE FUNCTION cairn._pb_entries_to_json(b bytea) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(e.key, e.value ORDER BY e.ord DESC), '{}'::jsonb)
    FROM (
        SELECT f.ord,
               coalesce((SELECT convert_from(k.bval, 'UTF8') FROM cairn._pb_fields(f.bval) k
                         WHERE k.field = 1 AND k.wire = 2 ORDER BY k.ord DESC LIMIT 1), '') AS key,
               coalesce((SELECT cairn._pb_value_to_json(v.bval) FROM cairn._pb_fields(f.bval) v
                         WHERE v.field = 2 AND v.wire = 2 ORDER BY v.ord DESC LIMIT 1), 'null'::jsonb) AS value
        FROM cairn._pb_fields(b) f
        WHERE f.field = 1 AND f.wire = 2
    ) e
$$;

-- A WorkflowErrorValue as the error object.
CREATE FUNCTION cairn._pb_error_to_json(b bytea) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT jsonb_build_object(
        'type', coalesce((array_agg(convert_from(bval, 'UTF8') ORDER BY ord DESC) FILTER (WHERE field = 1 AND wire = 2))[1], ''),
        'module', coalesce((array_agg(convert_from(bval, 'UTF8') ORDER BY ord DESC) FILTER (WHERE field = 2 AND wire = 2))[1], ''),
        'message', coalesce((array_agg(convert_from(bval, 'UTF8') ORDER BY ord DESC) FILTER (WHERE field = 3 AND wire = 2))[1], ''),
        'traceback', coalesce((array_agg(convert_from(bval, 'UTF8') ORDER BY ord DESC) FILTER (WHERE field = 4 AND wire = 2))[1], ''),
        'values', coalesce((SELECT cairn._pb_entries_to_json(v.bval) FROM cairn._pb_fields(b) v
                            WHERE v.field = 5 AND v.wire = 2 ORDER BY v.ord DESC LIMIT 1), '{}'::jsonb),
        'type_hierarchy', coalesce(jsonb_agg(to_jsonb(convert_from(bval, 'UTF8')) ORDER BY ord)
                                   FILTER (WHERE field = 6 AND wire = 2), '[]'::jsonb))
    FROM cairn._pb_fields(b)
$$;

-- Public: a result payload (the `result` or `error` column) as JSON:
-- {"result": ...} or {"error": {...}}. NULL for NULL.
CREATE FUNCTION cairn.payload_to_json(payload bytea) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    result_value bytea;
    error_value bytea;
    has_result boolean := false;
    has_error boolean := false;
    entry record;
    key text;
BEGIN
    -- The first entry of each key counts, as in WorkflowArguments::get.
    FOR entry IN SELECT f.bval FROM cairn._pb_fields(payload) f WHERE f.field = 1 AND f.wire = 2 ORDER BY f.ord LOOP
        key := coalesce((SELECT convert_from(k.bval, 'UTF8') FROM cairn._pb_fields(entry.bval) k
                         WHERE k.field = 1 AND k.wire = 2 ORDER BY k.ord DESC LIMIT 1), '');
        IF key = 'result' AND NOT has_result THEN
            has_result := true;
            result_value := (SELECT v.bval FROM cairn._pb_fields(entry.bval) v
                             WHERE v.field = 2 AND v.wire = 2 ORDER BY v.ord DESC LIMIT 1);
        ELSIF key = 'error' AND NOT has_error THEN
            has_error := true;
            error_value := (SELECT v.bval FROM cairn._pb_fields(entry.bval) v
                            WHERE v.field = 2 AND v.wire = 2 ORDER BY v.ord DESC LIMIT 1);
        END IF;
    END LOOP;
    IF has_result AND has_error THEN
        RAISE EXCEPTION 'cairn payload: result payload has both `result` and `error` entries' USING ERRCODE = '22P03';
    ELSIF has_result THEN
        RETURN jsonb_build_object('result', coalesce(cairn._pb_value_to_json(result_value), 'null'::jsonb));
    ELSIF has_error THEN
        IF error_value IS NULL OR NOT EXISTS (SELECT 1 FROM cairn._pb_fields(error_value) f
                                              WHERE f.field = 3 AND f.wire = 2) THEN
            RAISE EXCEPTION 'cairn payload: result payload''s `error` entry is not an exception' USING ERRCODE = '22P03';
        END IF;
        RETURN jsonb_build_object('error', cairn._pb_error_to_json(
            (SELECT f.bval FROM cairn._pb_fields(error_value) f WHERE f.field = 3 AND f.wire = 2
             ORDER BY f.ord DESC LIMIT 1)));
    END IF;
    RAISE EXCEPTION 'cairn payload: result payload has neither a `result` nor an `error` entry' USING ERRCODE = '22P03';
END $$;
