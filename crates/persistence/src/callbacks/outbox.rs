//! Writing messages: in the transaction of the change they tell, each message with one delivery
//! for every enabled endpoint subscribed to its type. A message no endpoint is to receive is not
//! written at all.
//!
//! [`Outbox`] also remembers which event types some endpoint wants, so that the writers skip the
//! work of making messages nobody would receive: the pairing create path and the call records'
//! writer would otherwise pay for them on every write. What it remembers is only a shortcut:
//! the deliveries are decided by the endpoints table in the same transaction, and until it has
//! read the endpoints (or when it could not), it says every type is wanted.

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Notify;
use uuid::Uuid;
use voice_proxy_domain::callbacks::{EventType, EventTypes, Message};

/// Which event types endpoints want, and a wake-up for this instance's dispatcher when it wrote
/// deliveries.
#[derive(Debug, Default)]
pub struct Outbox {
    wanted: AtomicU16,
    known: AtomicBool,
    written: Notify,
    /// One read at a time, so that a read begun before an endpoint changed cannot store what
    /// it saw after a read begun since.
    refreshing: tokio::sync::Mutex<()>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether some enabled endpoint may want messages of this type (always, until the
    /// endpoints have been read).
    pub fn wants(&self, t: EventType) -> bool {
        !self.known.load(Ordering::Acquire) || self.wanted.load(Ordering::Acquire) & t.bit() != 0
    }

    /// Reads which types the enabled endpoints subscribe to. On failure, every type counts as
    /// wanted until the next read succeeds.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let _one_at_a_time = self.refreshing.lock().await;
        let lists: Result<Vec<Option<Vec<String>>>, sqlx::Error> =
            sqlx::query_scalar("SELECT event_types FROM webhook_endpoints WHERE NOT disabled")
                .fetch_all(pool)
                .await;
        let lists = match lists {
            Ok(lists) => lists,
            Err(e) => {
                self.known.store(false, Ordering::Release);
                return Err(e);
            }
        };
        let bits = lists.iter().fold(0u16, |bits, list| {
            bits | match list {
                None => EventTypes::All.bits(),
                // Names the database holds were checked on the way in; an unknown one (from a
                // later version) wants nothing of ours.
                Some(names) => names
                    .iter()
                    .filter_map(|n| EventType::parse(n))
                    .fold(0, |b, t| b | t.bit()),
            }
        });
        self.wanted.store(bits, Ordering::Release);
        self.known.store(true, Ordering::Release);
        Ok(())
    }

    /// Waits until deliveries were written by this process (see [`Outbox::write`]).
    pub async fn written(&self) {
        self.written.notified().await;
    }

    /// Wakes this process's dispatcher: deliveries are due now.
    pub fn wake(&self) {
        self.written.notify_one();
    }

    /// Writes `messages` (those of a type [`Outbox::wants`]) in `tx`, each with a delivery for
    /// every enabled endpoint subscribed to its type, in the order given (which is the order an
    /// endpoint receives the messages of one ordering key in). Returns how many deliveries were
    /// written. The dispatcher is woken when `tx` has committed: call [`Outbox::wake`] then.
    pub async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        messages: &[Message],
    ) -> Result<u64, sqlx::Error> {
        let messages: Vec<&Message> = messages
            .iter()
            .filter(|m| self.wants(m.event_type))
            .collect();
        if messages.is_empty() {
            return Ok(0);
        }
        let (written, deliveries): (i64, i64) = sqlx::query_as(
            "WITH m AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
                          WITH ORDINALITY AS m(id, event_type, body, ordering_key, n)
             ), targets AS (
                 SELECT m.id AS message_id, e.id AS endpoint_id
                   FROM m JOIN webhook_endpoints e
                     ON NOT e.disabled
                    AND (e.event_types IS NULL OR m.event_type = ANY(e.event_types))
             ), inserted AS (
                 INSERT INTO webhook_messages (id, event_type, body, ordering_key)
                 SELECT id, event_type, body, ordering_key FROM m
                  WHERE id IN (SELECT message_id FROM targets)
                  ORDER BY n
                 RETURNING id, seq, ordering_key
             ), delivered AS (
                 INSERT INTO webhook_deliveries (endpoint_id, message_id, seq, ordering_key)
                 SELECT t.endpoint_id, i.id, i.seq, i.ordering_key
                   FROM inserted i JOIN targets t ON t.message_id = i.id
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM delivered)",
        )
        .bind(
            messages
                .iter()
                .map(|m| m.id.as_uuid())
                .collect::<Vec<Uuid>>(),
        )
        .bind(
            messages
                .iter()
                .map(|m| m.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(messages.iter().map(|m| m.body.as_str()).collect::<Vec<_>>())
        .bind(
            messages
                .iter()
                .map(|m| m.ordering_key.as_deref())
                .collect::<Vec<_>>(),
        )
        .fetch_one(&mut **tx)
        .await?;
        metrics::counter!("callback_messages_total").increment(u64::try_from(written).unwrap_or(0));
        Ok(u64::try_from(deliveries).unwrap_or(0))
    }
}
