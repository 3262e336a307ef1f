-- Invariant 1 and the one-active-pairing-per-reference rule move from GiST exclusion constraints
-- to plain unique B-tree indexes over the rows not yet *released*. Building and updating the GiST
-- indexes over a million pairings proved far too slow (minutes to build, and a GiST insert per
-- participant on every create); B-tree is what the hot paths need.
--
-- A pairing is released once it has ended: at once when it is closed (below), and, for a pairing
-- that expired, by the next allocation that touches the same person or reference (in its own
-- transaction, before it chooses) or by the sweeper. So no background job is needed for an
-- expired pairing's (person, number) combinations to be given again, and among pairings that are
-- active now (never released), (person, proxy number) and reference stay unique. An ended
-- pairing stays ended: it cannot be reopened or re-timed, so a released row never routes again.

ALTER TABLE pairings ADD COLUMN released boolean NOT NULL DEFAULT false;
ALTER TABLE participants ADD COLUMN released boolean NOT NULL DEFAULT false;
UPDATE pairings SET released = true WHERE upper(active_during) <= now();
UPDATE participants pa SET released = true FROM pairings p WHERE p.id = pa.pairing_id AND p.released;

ALTER TABLE participants DROP CONSTRAINT participants_one_route;
CREATE UNIQUE INDEX participants_one_route ON participants (number, proxy_number) WHERE NOT released;
ALTER TABLE pairings DROP CONSTRAINT pairings_reference_once;
CREATE UNIQUE INDEX pairings_reference_once ON pairings (reference)
    WHERE reference IS NOT NULL AND NOT released;

-- Closing releases; an ended pairing stays ended.
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
       OR NEW.closed_at IS DISTINCT FROM OLD.closed_at THEN
        NEW.changed_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION pairings_propagate_range() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.active_during IS DISTINCT FROM OLD.active_during OR NEW.released <> OLD.released THEN
        UPDATE participants SET active_during = NEW.active_during, released = NEW.released
         WHERE pairing_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION participants_take_pairing_range() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT p.active_during, p.released INTO NEW.active_during, NEW.released
      FROM pairings p WHERE p.id = NEW.pairing_id;
    RETURN NEW;
END
$$;
