-- Call controls: per-pairing call options, and PIN access from another phone.

-- The call options a pairing sets (announcement, whisper, record, max_call_seconds,
-- ring_timeout_seconds); NULL when it sets none. Options it does not set follow the service's
-- defaults at the time of the call.
ALTER TABLE pairings ADD COLUMN call_options jsonb;
ALTER TABLE pairings ADD CONSTRAINT pairings_call_options_object
    CHECK (call_options IS NULL OR jsonb_typeof(call_options) = 'object');
ALTER TABLE pairings ADD COLUMN pin_access boolean NOT NULL DEFAULT false;

-- With PIN access each participant has a PIN: typed by a caller from another phone who dials the
-- participant's proxy number, it connects them as that participant.
ALTER TABLE participants ADD COLUMN pin text;
ALTER TABLE participants ADD CONSTRAINT participants_pin_digits
    CHECK (pin IS NULL OR pin ~ '^[0-9]{4,10}$');
-- A PIN names at most one participant per proxy number among the pairings not yet released
-- (every active one, and ended ones until they are released).
CREATE UNIQUE INDEX participants_one_pin ON participants (proxy_number, pin)
    WHERE pin IS NOT NULL AND NOT released;

-- A change of call options reaches the route mirrors through the change feed, like a close or
-- an expiry change.
CREATE OR REPLACE FUNCTION pairings_stamp_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.released AND (NEW.closed_at IS DISTINCT FROM OLD.closed_at
                         OR NEW.expires_at IS DISTINCT FROM OLD.expires_at
                         OR NOT NEW.released) THEN
        RAISE EXCEPTION 'an ended pairing cannot be reopened or re-timed'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'pairings_ended_is_final';
    END IF;
    IF OLD.expires_at <= now() AND OLD.closed_at IS NULL
       AND (NEW.closed_at IS NOT NULL OR NEW.expires_at IS DISTINCT FROM OLD.expires_at) THEN
        RAISE EXCEPTION 'an expired pairing cannot be closed or re-timed'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'pairings_ended_is_final';
    END IF;
    IF NEW.closed_at IS NOT NULL THEN
        NEW.released := true;
    END IF;
    IF NEW.expires_at IS DISTINCT FROM OLD.expires_at
       OR NEW.closed_at IS DISTINCT FROM OLD.closed_at
       OR NEW.call_options IS DISTINCT FROM OLD.call_options THEN
        NEW.changed_at := clock_timestamp();
        NEW.changed_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END
$$;

-- Each PIN typed that did not connect the call: wrong (`wrong`), or nothing typed. A call's
-- attempts are counted by its conversation; a caller's wrong PINs within the last hour throttle
-- them. Rows older than a day serve nothing and are purged.
CREATE TABLE pin_failures (
    caller            text        NOT NULL,
    conversation_uuid text        NOT NULL,
    wrong             boolean     NOT NULL,
    failed_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pin_failures_by_caller ON pin_failures (caller, failed_at);
CREATE INDEX pin_failures_by_conversation ON pin_failures (conversation_uuid);
CREATE INDEX pin_failures_by_age ON pin_failures (failed_at);

-- The PIN outcomes: asked for a PIN (and not finished), connected by a PIN, refused.
ALTER TABLE calls DROP CONSTRAINT calls_outcome_known;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_known CHECK (outcome IN
    ('routed', 'no_pairing', 'pairing_ended', 'anonymous', 'unsupported_caller', 'invalid_request',
     'intercepted', 'out_of_session_message', 'out_of_session_connected', 'out_of_session_refused',
     'pin_prompted', 'pin_routed', 'pin_refused'))
    NOT VALID;
ALTER TABLE calls VALIDATE CONSTRAINT calls_outcome_known;

-- The mirrors hear of a change of call options at once, as of a close or an expiry change.
DROP TRIGGER pairings_notify_change ON pairings;
CREATE TRIGGER pairings_notify_change
    AFTER UPDATE OF closed_at, expires_at, call_options ON pairings
    FOR EACH ROW
    WHEN (NEW.closed_at IS DISTINCT FROM OLD.closed_at OR NEW.expires_at IS DISTINCT FROM OLD.expires_at
          OR NEW.call_options IS DISTINCT FROM OLD.call_options)
    EXECUTE FUNCTION pairings_notify_change();
