//! The route mirror's change feed reads every committed change, however long its transaction took
//! between writing the change and committing it.

use std::time::Duration;

use chrono::Utc;
use sqlx::{Connection, Executor, PgConnection};
use voice_proxy_domain::routing::Route;
use voice_proxy_persistence::durable::route_mirror::RouteMirror;

use crate::helpers::{proxy_of, spawn_app};

#[tokio::test]
async fn a_close_that_commits_long_after_it_was_written_still_reaches_the_mirror() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let pairing = app.pair("16465550101", "16465550102").await;
    let proxy = proxy_of(&pairing, 0);
    let id = pairing["id"].as_str().unwrap().to_owned();

    let mirror = RouteMirror::new(Duration::from_secs(60));
    mirror.load(&app.pool).await.unwrap();
    assert!(matches!(
        mirror.lookup("16465550101", &proxy, Utc::now()),
        Route::Connect { .. }
    ));

    // A close written now, in a transaction that commits only after several polls and more
    // time than any fixed look-back a poll could afford.
    let mut closer = PgConnection::connect(&app.database_url).await.unwrap();
    closer.execute("BEGIN").await.unwrap();
    sqlx::query("UPDATE pairings SET closed_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&mut closer)
        .await
        .unwrap();
    mirror.poll(&app.pool).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    mirror.poll(&app.pool).await.unwrap();
    assert!(
        matches!(
            mirror.lookup("16465550101", &proxy, Utc::now()),
            Route::Connect { .. }
        ),
        "the close is not committed yet"
    );
    closer.execute("COMMIT").await.unwrap();

    mirror.poll(&app.pool).await.unwrap();
    let route = mirror.lookup("16465550101", &proxy, Utc::now());
    assert!(
        !matches!(route, Route::Connect { .. }),
        "the mirror still connects a closed pairing: {route:?}"
    );
}

#[tokio::test]
async fn a_transaction_left_open_does_not_make_every_poll_read_the_changes_again() {
    let app = spawn_app().await;
    app.add_numbers(&["12125550123", "12125550124"]).await;
    let mirror = RouteMirror::new(Duration::from_secs(60));
    mirror.load(&app.pool).await.unwrap();

    // Someone's write transaction stays open (it holds a transaction id) while pairings change.
    let mut idle = PgConnection::connect(&app.database_url).await.unwrap();
    idle.execute("BEGIN").await.unwrap();
    idle.execute("CREATE TEMP TABLE held (x int)")
        .await
        .unwrap();
    app.pair("16465550101", "16465550102").await;
    app.pair("16465550103", "16465550104").await;

    assert_eq!(mirror.poll(&app.pool).await.unwrap(), 2);
    assert_eq!(
        mirror.poll(&app.pool).await.unwrap(),
        0,
        "the second poll read again what the first had read"
    );
    idle.execute("ROLLBACK").await.unwrap();
}
