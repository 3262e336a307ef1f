//! What the questions asked during a call need to know of a pairing: its reference and the two
//! people's labels (for the intercept), and a caller's most recent pairing on a number (for the
//! out-of-session request). Never a number: the questions carry none.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;
use voice_proxy_domain::callbacks::RecentPairing;
use voice_proxy_domain::{PairingId, PairingStatus};

/// A pairing as a call's messages name it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallLabels {
    pub reference: Option<String>,
    pub caller_label: Option<String>,
    pub callee_label: Option<String>,
}

/// The reference of `pairing` and the labels of `caller` (a participant's number) and of the
/// other participant; `None` if the pairing has no such participant.
pub async fn call_labels(
    pool: &PgPool,
    pairing: PairingId,
    caller: &str,
) -> Result<Option<CallLabels>, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT p.reference, a.label, b.label
           FROM participants a
           JOIN pairings p ON p.id = a.pairing_id
           JOIN participants b ON b.pairing_id = a.pairing_id AND b.position <> a.position
          WHERE a.pairing_id = $1 AND a.number = $2",
    )
    .bind(pairing.as_uuid())
    .bind(caller)
    .fetch_optional(pool)
    .await?;
    Ok(
        row.map(|(reference, caller_label, callee_label)| CallLabels {
            reference,
            caller_label,
            callee_label,
        }),
    )
}

/// The most recent pairing in which `caller` had `proxy_number`, with its status now.
pub async fn most_recent_on(
    pool: &PgPool,
    caller: &str,
    proxy_number: &str,
) -> Result<Option<RecentPairing>, sqlx::Error> {
    type Row = (
        Uuid,
        Option<String>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        DateTime<Utc>,
        i16,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT p.id, p.reference, p.expires_at, p.closed_at, now(), a.position, a.label
           FROM participants a JOIN pairings p ON p.id = a.pairing_id
          WHERE a.proxy_number = $1 AND a.number = $2
          ORDER BY upper(a.active_during) DESC
          LIMIT 1",
    )
    .bind(proxy_number)
    .bind(caller)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(id, reference, expires_at, closed_at, now, position, label)| RecentPairing {
            pairing_id: PairingId::from_uuid(id),
            reference,
            status: PairingStatus::at(now, expires_at, closed_at),
            position: usize::from(position == 1),
            label,
        },
    ))
}
