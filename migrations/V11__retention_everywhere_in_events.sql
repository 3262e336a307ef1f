-- Retention: a stored event's real numbers are replaced wherever they are in its payload, not
-- only in its top-level `from` and `to` strings: as JSON strings or numbers, in nested objects
-- and arrays. A value counts as a number when it is 7 to 15 digits not starting with 0, with or
-- without a leading '+', and is not one of our pool numbers; values under keys that hold digits
-- but never a phone number (size, duration, price, rate, sip_code, network) stay. The hash is the
-- one the other tables use ('hmac:' and the hex HMAC-SHA256 of the digits without '+'), so one
-- number has one hash everywhere.

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
                   CASE WHEN f.key IN ('size', 'duration', 'price', 'rate', 'sip_code', 'network')
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
    WHEN 'string', 'number' THEN
        scalar := doc #>> '{}';
        IF scalar ~ '^\+?[1-9][0-9]{6,14}$'
           AND NOT EXISTS (SELECT 1 FROM pool_numbers WHERE number = ltrim(scalar, '+')) THEN
            RETURN to_jsonb('hmac:' || encode(hmac(ltrim(scalar, '+'), hash_key, 'sha256'), 'hex'));
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
