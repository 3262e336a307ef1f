-- voice-proxy schema: the pool of numbers, pairings with their participants, calls and events.
-- The invariants of design.md are enforced here, not only in the application.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Pool numbers: our Vonage virtual numbers.
CREATE TABLE pool_numbers (
    number      text        PRIMARY KEY,
    country     text        NOT NULL,
    state       text        NOT NULL DEFAULT 'active',
    reserved    boolean     NOT NULL DEFAULT false,
    -- Active pairings using this number, kept for spreading load; a heuristic, not a rule.
    active_load bigint      NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz,
    CONSTRAINT pool_numbers_number_e164 CHECK (number ~ '^[1-9][0-9]{5,14}$'),
    CONSTRAINT pool_numbers_country_alpha2 CHECK (country ~ '^[A-Z]{2}$'),
    CONSTRAINT pool_numbers_state_known CHECK (state IN ('active', 'retired')),
    CONSTRAINT pool_numbers_retired_when CHECK ((state = 'retired') = (retired_at IS NOT NULL))
);

-- Candidate searches: free numbers of a country (or of any), least loaded first.
CREATE INDEX pool_numbers_free_by_country ON pool_numbers (country, active_load, number)
    WHERE state = 'active' AND NOT reserved;
CREATE INDEX pool_numbers_free ON pool_numbers (active_load, number)
    WHERE state = 'active' AND NOT reserved;

-- Pairings. A pairing routes calls during active_during: from its creation until it expires or is
-- closed, whichever comes first. The range is derived, so it cannot disagree with the columns.
CREATE TABLE pairings (
    id            uuid        PRIMARY KEY,
    reference     text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    closed_at     timestamptz,
    -- Set once the pairing's load has been taken off its numbers (at close, or by the sweeper).
    load_released boolean     NOT NULL DEFAULT false,
    active_during tstzrange   GENERATED ALWAYS AS
                      (tstzrange(created_at, LEAST(expires_at, closed_at), '[)')) STORED,
    CONSTRAINT pairings_expiry_after_creation CHECK (expires_at > created_at),
    CONSTRAINT pairings_closed_after_creation CHECK (closed_at IS NULL OR closed_at >= created_at),
    -- A reference names at most one pairing at any instant.
    CONSTRAINT pairings_reference_once EXCLUDE USING gist
        (reference WITH =, active_during WITH &&) WHERE (reference IS NOT NULL)
);
CREATE INDEX pairings_unreleased_by_expiry ON pairings (expires_at) WHERE NOT load_released;

-- Participants: one row per person in a pairing. active_during is copied from the pairing by the
-- triggers below, so that invariant 1 can be a constraint of this table alone.
CREATE TABLE participants (
    pairing_id         uuid      NOT NULL REFERENCES pairings (id) ON DELETE CASCADE,
    position           smallint  NOT NULL,
    number             text      NOT NULL,
    label              text,
    proxy_number       text      NOT NULL REFERENCES pool_numbers (number),
    counterpart_number text      NOT NULL,
    counterpart_proxy  text      NOT NULL REFERENCES pool_numbers (number),
    active_during      tstzrange NOT NULL,
    PRIMARY KEY (pairing_id, position),
    CONSTRAINT participants_position CHECK (position IN (0, 1)),
    -- Invariant 3 (second half): the two participants differ.
    CONSTRAINT participants_two_people CHECK (number <> counterpart_number),
    -- Invariant 1: while pairings overlap in time, a (person, proxy number) belongs to one of them.
    -- Expiry and close shorten active_during, so nothing needs to sweep for this to hold.
    CONSTRAINT participants_one_route EXCLUDE USING gist
        (number WITH =, proxy_number WITH =, active_during WITH &&)
);
-- The answer webhook's lookup: (caller, dialled number), latest pairing first.
CREATE INDEX participants_route ON participants (proxy_number, number, upper(active_during) DESC);
-- A person's recent pairings (held numbers, cool-off) and last pairing with a counterpart.
CREATE INDEX participants_history ON participants (number, upper(active_during) DESC);
CREATE INDEX participants_with_counterpart
    ON participants (number, counterpart_number, upper(active_during) DESC);
CREATE INDEX participants_by_pairing_number ON participants (number, pairing_id);

CREATE FUNCTION participants_take_pairing_range() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.active_during INTO NEW.active_during FROM pairings p WHERE p.id = NEW.pairing_id;
    RETURN NEW;
END
$$;
CREATE TRIGGER participants_take_pairing_range
    BEFORE INSERT OR UPDATE ON participants
    FOR EACH ROW EXECUTE FUNCTION participants_take_pairing_range();

CREATE FUNCTION pairings_propagate_range() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.active_during IS DISTINCT FROM OLD.active_during THEN
        UPDATE participants SET active_during = NEW.active_during WHERE pairing_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER pairings_propagate_range
    AFTER UPDATE ON pairings
    FOR EACH ROW EXECUTE FUNCTION pairings_propagate_range();

-- Invariant 3 (first half): a participant's real number is never a pool number. Both sides take
-- the same per-number advisory lock, so a concurrent insert on the other table cannot slip by.
CREATE FUNCTION participants_not_pool_number() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('number:' || NEW.number, 0));
    IF EXISTS (SELECT 1 FROM pool_numbers WHERE number = NEW.number) THEN
        RAISE EXCEPTION 'a participant''s number is a pool number'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'participants_not_pool_number';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER participants_not_pool_number
    BEFORE INSERT OR UPDATE OF number ON participants
    FOR EACH ROW EXECUTE FUNCTION participants_not_pool_number();

CREATE FUNCTION pool_numbers_not_participant() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('number:' || NEW.number, 0));
    IF EXISTS (SELECT 1 FROM participants
               WHERE number = NEW.number AND upper(active_during) > now()) THEN
        RAISE EXCEPTION 'the number is a participant of an active pairing'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'pool_numbers_not_participant';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER pool_numbers_not_participant
    BEFORE INSERT ON pool_numbers
    FOR EACH ROW EXECUTE FUNCTION pool_numbers_not_participant();

-- Calls: one row per inbound call (one Vonage conversation, both legs).
CREATE TABLE calls (
    id                uuid        PRIMARY KEY,
    conversation_uuid text,
    uuid              text,
    pairing_id        uuid        REFERENCES pairings (id),
    caller            text,
    proxy_number      text,
    callee            text,
    outcome           text        NOT NULL,
    status            text,
    started_at        timestamptz NOT NULL DEFAULT now(),
    answered_at       timestamptz,
    ended_at          timestamptz,
    duration_seconds  bigint,
    price             numeric,
    CONSTRAINT calls_one_per_conversation UNIQUE (conversation_uuid),
    CONSTRAINT calls_outcome_known CHECK (outcome IN
        ('routed', 'no_pairing', 'pairing_ended', 'anonymous', 'invalid_request'))
);
CREATE INDEX calls_by_pairing ON calls (pairing_id, id DESC);
CREATE INDEX calls_by_start ON calls (started_at, id);

-- Every event webhook as received, once. Append-only.
CREATE TABLE call_events (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dedup_key         text        NOT NULL,
    conversation_uuid text,
    leg_uuid          text,
    status            text,
    event_at          timestamptz,
    payload           jsonb       NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT call_events_once UNIQUE (dedup_key)
);
CREATE INDEX call_events_by_conversation ON call_events (conversation_uuid, id);

-- Each pairing refused because no pool number was free, for the pool report.
CREATE TABLE exhaustion_refusals (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    country    text,
    refused_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX exhaustion_refusals_by_time ON exhaustion_refusals (refused_at);
