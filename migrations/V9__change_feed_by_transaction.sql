-- The route mirrors' change feed, by transaction instead of by time.
--
-- Until now each instance read the pairings whose `changed_at` fell after its previous poll, less
-- 5 s for transactions that stamped a row before that poll but committed after it. That re-read
-- every change about eleven times (polls every 500 ms), and a change whose transaction took more
-- than 5 s from stamp to commit was never read.
--
-- Now a pairing records the transaction that created it or last closed or re-timed it
-- (`changed_xid`). A poll reads the rows whose transaction is not older than the oldest one that
-- was still running at the start of the previous poll (`pg_snapshot_xmin`): every transaction
-- below that had finished, so its rows were visible to the previous poll. No time window, no
-- guess.
--
-- Existing rows keep a NULL `changed_xid` (no rewrite of the table): they are read by the mirrors'
-- initial load, and a later close or expiry change stamps them.

ALTER TABLE pairings ADD COLUMN changed_xid xid8;
ALTER TABLE pairings ALTER COLUMN changed_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX pairings_by_changed_xid ON pairings (changed_xid);
-- The time stamp stays (it says when), but nothing searches by it any more.
DROP INDEX pairings_by_changed_at;

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
