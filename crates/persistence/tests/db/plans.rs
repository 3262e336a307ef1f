//! The create path's and the recorder's statements run with generic plans: Postgres plans each once per
//! connection, instead of planning again on every execution (which it does for statements over
//! arrays when left to choose, at about a third of its CPU time on the create path).

use sqlx::postgres::PgPoolOptions;
use voice_proxy_domain::allocation::AllocationPolicy;
use voice_proxy_domain::{CountryCode, NewPairing, ParticipantRequest, PhoneNumber};
use voice_proxy_persistence::callbacks::Outbox;
use voice_proxy_persistence::durable::load_ledger::LoadLedger;
use voice_proxy_persistence::numbers;
use voice_proxy_persistence::pairings;
use voice_proxy_persistence::records::write_batch;

use crate::test_database::{call_record, event_record, migrated_database};

/// Fails if the one connection of `pool` planned any of its prepared statements anew on an
/// execution. (The query itself is not prepared, so it does not count.)
async fn assert_nothing_replanned(pool: &sqlx::PgPool) {
    let replanned: Vec<(String, i64)> = sqlx::query_as(
        "SELECT left(statement, 60), custom_plans FROM pg_prepared_statements
          WHERE custom_plans > 0",
    )
    .persistent(false)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        replanned.is_empty(),
        "statements planned anew on execution: {replanned:?}"
    );
}

fn person(digits: &str) -> ParticipantRequest {
    ParticipantRequest {
        number: PhoneNumber::parse(digits).unwrap(),
        label: None,
        proxy_number: None,
    }
}

#[tokio::test]
async fn creates_reuse_generic_plans_instead_of_planning_each_time() {
    // One connection: its prepared statements are the ones `pg_prepared_statements` shows.
    let (url, pool) = migrated_database(1).await;
    let setup = PgPoolOptions::new()
        .connect_with(url.parse().unwrap())
        .await
        .unwrap();
    let us = CountryCode::parse("US").unwrap();
    for n in ["12125550123", "12125550124"] {
        numbers::add(&setup, &PhoneNumber::parse(n).unwrap(), &us, false)
            .await
            .unwrap();
    }
    let ledger = LoadLedger::new();
    let policy = AllocationPolicy::default();
    // More than the five executions after which Postgres may settle on a generic plan itself.
    for i in 0..8 {
        let request = NewPairing {
            participants: [
                person(&format!("1646555{:04}", 1000 + 2 * i)),
                person(&format!("1646555{:04}", 1001 + 2 * i)),
            ],
            ttl: chrono::Duration::hours(1),
            reference: Some(format!("order-{i}")),
            call_options: Default::default(),
            pin_digits: None,
        };
        pairings::create(&pool, &ledger, &Outbox::new(), &request, &policy)
            .await
            .unwrap();
    }
    assert_nothing_replanned(&pool).await;
    let generic: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_prepared_statements WHERE generic_plans >= 8")
            .persistent(false)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        generic >= 3,
        "the lock, state, candidates and insert statements ran generic ({generic})"
    );
}

#[tokio::test]
async fn recorded_batches_reuse_generic_plans_instead_of_planning_each_time() {
    let (_, pool) = migrated_database(1).await;
    for i in 0..8 {
        let conversation = format!("CON-plan-{i}");
        let call = call_record(&conversation);
        let event = event_record(&conversation, "completed", 1);
        write_batch(&pool, &Outbox::new(), &[call, event])
            .await
            .unwrap();
    }
    assert_nothing_replanned(&pool).await;
}
