-- Calls as they really happened.
--
-- A caller that is not a phone number (an in-app user, a SIP URI) gets its own outcome instead of
-- being counted as anonymous, and the call keeps the kind of endpoint Vonage reported
-- (`endpoint_type`: phone, sip, app, websocket, vbc).
--
-- A transfer event names two conversations (`conversation_uuid_from` and `_to`) and no
-- `conversation_uuid`; it is filed under the first and linked to the second, so that both calls
-- show it.
--
-- The new check is added NOT VALID and then validated, so that only the validation reads the
-- whole table, under a lock that lets writes go on.

ALTER TABLE calls DROP CONSTRAINT calls_outcome_known;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_known CHECK (outcome IN
    ('routed', 'no_pairing', 'pairing_ended', 'anonymous', 'unsupported_caller', 'invalid_request'))
    NOT VALID;
ALTER TABLE calls VALIDATE CONSTRAINT calls_outcome_known;
ALTER TABLE calls ADD COLUMN endpoint_type text;

ALTER TABLE call_events ADD COLUMN linked_conversation_uuid text;
CREATE INDEX call_events_by_linked_conversation ON call_events (linked_conversation_uuid, id)
    WHERE linked_conversation_uuid IS NOT NULL;
