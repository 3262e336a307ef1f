-- The route mirrors' change feed, by transaction instead of by time.
--
-- Until now each instance read the pairings whose `changed_at` fell after its previous poll, less
-- 5 s for transactions that stamped a row before that poll but committed after it. That re-read
-- every change about eleven times (polls every 500 ms), and a change whose transaction took more
-- than 5 s from stamp to commit was never read.
--
-- Now a pairing records the transaction that created it or last closed or re-timed it
-- (`changed_xid`). A poll reads the rows of the transactions that were still running, or had not
-- started, when the previous poll began (`pg_current_snapshot()`: its xmax and its list of running
-- transactions). Every other transaction had finished by then, so the previous poll saw what it
-- wrote. No time window, no guess.
--
-- Existing rows keep a NULL `changed_xid` (no rewrite of the table): they are read by the mirrors'
-- initial load, and a later close or expiry change stamps them. The index on `changed_at` stays
-- while instances of the previous version may still be polling by time during a rolling upgrade.

ALTER TABLE pairings ADD COLUMN changed_xid xid8;
ALTER TABLE pairings ALTER COLUMN changed_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX pairings_by_changed_xid ON pairings (changed_xid);

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
        NEW.changed_xid := pg_current_xact_id();
    END IF;
    RETURN NEW;
END
$$;
