-- Callbacks to the marketplace: its endpoints and their signing secrets, the messages, and each
-- message's delivery to each endpoint with its attempts. See crates/persistence/src/callbacks/.

CREATE TABLE webhook_endpoints (
    id          uuid        PRIMARY KEY,
    url         text        NOT NULL,
    -- NULL: every event type.
    event_types text[],
    description text,
    disabled    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_url_http CHECK (url ~ '^https?://' AND char_length(url) <= 2048),
    CONSTRAINT webhook_endpoints_event_types_listed CHECK (cardinality(event_types) > 0),
    CONSTRAINT webhook_endpoints_description_length CHECK (char_length(description) <= 256)
);

-- An endpoint's signing secrets: the current one (retires_at NULL), and, after a rotation, the
-- one before it until it retires. Messages are signed with every secret not yet retired.
CREATE TABLE webhook_endpoint_secrets (
    endpoint_id uuid        NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retires_at  timestamptz,
    CONSTRAINT webhook_endpoint_secrets_form CHECK (secret ~ '^whsec_[A-Za-z0-9+/]+={0,2}$')
);
CREATE INDEX webhook_endpoint_secrets_by_endpoint ON webhook_endpoint_secrets (endpoint_id);
CREATE UNIQUE INDEX webhook_endpoint_secrets_one_current ON webhook_endpoint_secrets (endpoint_id)
    WHERE retires_at IS NULL;

-- A message, written in the transaction of the change it tells (or, for the call path, of the
-- records it comes from), and only when some endpoint is to receive it. Its body is sent, and
-- signed, exactly as stored. `seq` orders the messages of one ordering key (a pairing, or a
-- call's conversation).
CREATE TABLE webhook_messages (
    id           uuid        PRIMARY KEY,
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    event_type   text        NOT NULL,
    body         text        NOT NULL,
    ordering_key text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The retention purge deletes messages by age.
CREATE INDEX webhook_messages_by_age ON webhook_messages (created_at);

-- One message to one endpoint. `pending` until it succeeds or its retries are used up.
-- An instance sending it holds a lease (`leased_until`), so that no other sends it at the same
-- time; a lease that runs out (the instance died) frees it for another attempt.
-- No foreign key to webhook_endpoints: a message written while its endpoint is being deleted
-- must not fail the change it is written with (a pairing create, a call record). Deleting an
-- endpoint deletes its deliveries; one written by a transaction racing the delete is never
-- claimed (the claim joins the endpoint) and goes with its message at the retention purge.
CREATE TABLE webhook_deliveries (
    endpoint_id     uuid        NOT NULL,
    message_id      uuid        NOT NULL REFERENCES webhook_messages ON DELETE CASCADE,
    seq             bigint      NOT NULL,
    ordering_key    text,
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    -- An operator's extra attempt at a failed delivery: not retried if it fails.
    retry_once      boolean     NOT NULL DEFAULT false,
    finished_at     timestamptz,
    PRIMARY KEY (endpoint_id, message_id),
    CONSTRAINT webhook_deliveries_state_known CHECK (state IN ('pending', 'succeeded', 'failed')),
    CONSTRAINT webhook_deliveries_finished_when CHECK ((state = 'pending') = (finished_at IS NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (endpoint_id, ordering_key, seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_message ON webhook_deliveries (message_id);

CREATE TABLE webhook_attempts (
    endpoint_id  uuid        NOT NULL,
    message_id   uuid        NOT NULL,
    attempt      integer     NOT NULL,
    at           timestamptz NOT NULL,
    -- The endpoint's HTTP status; none when it did not answer (the error says why).
    status_code  integer,
    latency_ms   integer     NOT NULL,
    error        text,
    PRIMARY KEY (endpoint_id, message_id, attempt),
    FOREIGN KEY (endpoint_id, message_id) REFERENCES webhook_deliveries ON DELETE CASCADE
);

-- Every instance learns at once which event types some endpoint wants, so that it writes the
-- messages for them (and none when no endpoint would receive them).
CREATE FUNCTION webhook_endpoints_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('voice_proxy_webhook_endpoints', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_endpoints_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhook_endpoints
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_endpoints_notify();

-- The outcomes of the marketplace's intercept and out-of-session answers.
ALTER TABLE calls DROP CONSTRAINT calls_outcome_known;
ALTER TABLE calls ADD CONSTRAINT calls_outcome_known CHECK (outcome IN
    ('routed', 'no_pairing', 'pairing_ended', 'anonymous', 'unsupported_caller', 'invalid_request',
     'intercepted', 'out_of_session_message', 'out_of_session_connected', 'out_of_session_refused'))
    NOT VALID;
ALTER TABLE calls VALIDATE CONSTRAINT calls_outcome_known;

-- When the callee picked up (a callee leg answered), apart from answered_at, which is the
-- caller's leg while no callee leg has reported: `call.answered` is told once, when this is
-- first set.
-- And when every leg had ended (the call is over, its price whole): `call.ended` is told once,
-- when this is first set.
ALTER TABLE calls ADD COLUMN callee_answered_at timestamptz,
                  ADD COLUMN over_at timestamptz;
-- Calls from before: told nothing, and not told now when a late event arrives for one.
UPDATE calls SET callee_answered_at = answered_at, over_at = ended_at WHERE ended_at IS NOT NULL;
