-- Retention: a stored event's real numbers are replaced wherever they are in its payload, not
-- only in its top-level `from` and `to` strings: inside any string (`sip:+<number>@host`,
-- `tel:...`, an error's reason), and JSON numbers, in nested objects and arrays.
--
-- A number is a run of 7 to 15 digits not starting with 0, with no digit right before or after,
-- written with or without '+' or '00' before it; it is replaced by the hash the other tables use
-- ('hmac:' and the hex HMAC-SHA256 of the digits alone), so one number has one hash everywhere.
-- Our pool numbers stay. Scalar values under keys that hold digits but never a person's number
-- (size, duration, price, rate, sip_code, network, and the identifiers) stay. The service applies
-- the same rule to its dead-letter file (voice_proxy_domain::redact::numbers_in).

CREATE FUNCTION voice_proxy_redact_text(t text, hash_key text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    pattern constant text := '(?<![0-9+])(\+|00)?([1-9][0-9]{6,14})(?![0-9])';
    parts text[];
    found text[];
    result text;
    i int := 1;
BEGIN
    IF t !~ pattern THEN
        RETURN t;
    END IF;
    -- The text between the numbers, and the numbers, in order.
    parts := regexp_split_to_array(t, pattern);
    result := parts[1];
    FOR found IN SELECT m FROM regexp_matches(t, pattern, 'g') AS m LOOP
        i := i + 1;
        IF EXISTS (SELECT 1 FROM pool_numbers WHERE number = found[2]) THEN
            result := result || coalesce(found[1], '') || found[2];
        ELSE
            result := result || 'hmac:' || encode(hmac(found[2], hash_key, 'sha256'), 'hex');
        END IF;
        result := result || parts[i];
    END LOOP;
    RETURN result;
END
$$;

CREATE FUNCTION voice_proxy_redact_numbers(doc jsonb, hash_key text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    result jsonb;
    scalar text;
BEGIN
    CASE jsonb_typeof(doc)
    WHEN 'object' THEN
        SELECT coalesce(jsonb_object_agg(
                   f.key,
                   CASE WHEN f.key IN ('size', 'duration', 'price', 'rate', 'sip_code', 'network',
                                       'uuid', 'call_uuid', 'conversation_uuid',
                                       'conversation_uuid_from', 'conversation_uuid_to',
                                       'recording_uuid', 'recording_url', 'region_url')
                             AND jsonb_typeof(f.value) NOT IN ('object', 'array')
                        THEN f.value
                        ELSE voice_proxy_redact_numbers(f.value, hash_key) END),
               '{}'::jsonb)
          INTO result
          FROM jsonb_each(doc) AS f;
        RETURN result;
    WHEN 'array' THEN
        SELECT coalesce(jsonb_agg(voice_proxy_redact_numbers(a.value, hash_key) ORDER BY a.n),
                        '[]'::jsonb)
          INTO result
          FROM jsonb_array_elements(doc) WITH ORDINALITY AS a (value, n);
        RETURN result;
    WHEN 'string' THEN
        RETURN to_jsonb(voice_proxy_redact_text(doc #>> '{}', hash_key));
    WHEN 'number' THEN
        scalar := doc #>> '{}';
        IF scalar ~ '^[1-9][0-9]{6,14}$'
           AND NOT EXISTS (SELECT 1 FROM pool_numbers WHERE number = scalar) THEN
            RETURN to_jsonb('hmac:' || encode(hmac(scalar, hash_key, 'sha256'), 'hex'));
        END IF;
        RETURN doc;
    ELSE
        RETURN doc;
    END CASE;
END
$$;

-- Events purged by earlier versions (top-level `from` and `to` only) that may still hold a
-- number elsewhere are purged again.
UPDATE call_events SET purged = false WHERE purged AND payload::text ~ '[0-9]{7}';
