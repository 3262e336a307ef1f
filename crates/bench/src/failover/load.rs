//! The load the failover run keeps up: pairings made before it, steady calls (an answer and
//! four events each), steady creates, and the check that a close stops routing everywhere.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use super::{ANSWER_LIMIT, PAIRINGS, Route, Shared, lock};
use crate::numbers::{self, Country};

/// Adds pool numbers and makes the pairings whose routes the calls use.
pub(super) async fn setup(
    http: &reqwest::Client,
    bases: &[String],
    auth: &str,
) -> anyhow::Result<Vec<Route>> {
    let base = &bases[0];
    for n in 0..20 {
        let number = format!("1212555{:04}", 7000 + n);
        let r = http
            .post(format!("{base}/v1/numbers"))
            .header("authorization", auth)
            .json(&json!({"number": number}))
            .send()
            .await?;
        if !(r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT) {
            bail!("adding {number}: {}", r.status());
        }
    }
    let mut rng = fastrand::Rng::with_seed(42);
    let mut routes = Vec::new();
    while routes.len() < 2 * PAIRINGS {
        let (a, b) = numbers::two_people(&mut rng, Country::Us);
        let r = http
            .post(format!("{base}/v1/pairings"))
            .header("authorization", auth)
            .json(&json!({"participants": [{"number": a, "label": "driver"},
                                           {"number": b, "label": "passenger"}],
                          "ttl_seconds": 86400}))
            .send()
            .await?;
        if r.status() != reqwest::StatusCode::CREATED {
            bail!("creating a pairing: {}", r.status());
        }
        let p: Value = r.json().await?;
        for (me, i) in [(&a, 0), (&b, 1)] {
            let proxy = p["participants"][i]["proxy_number"]
                .as_str()
                .context("a proxy number")?;
            routes.push((me.clone(), proxy.to_owned()));
        }
    }
    Ok(routes)
}

/// Calls at `rate` per second, round-robin over the instances, until told to stop: each an
/// answer, then the events of a call whose callee answered and talked.
pub(super) async fn calls(
    http: reqwest::Client,
    bases: Vec<String>,
    routes: Vec<Route>,
    rate: f64,
    seen: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut calls = JoinSet::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let base = bases[n % bases.len()].clone();
        let route = routes[n % routes.len()].clone();
        n += 1;
        calls.spawn(call(http.clone(), base, route, seen.clone()));
        while calls.try_join_next().is_some() {}
    }
    while calls.join_next().await.is_some() {}
}

async fn call(http: reqwest::Client, base: String, (from, to): Route, seen: Shared) {
    let conversation = format!("CON-ha-{}", Uuid::now_v7());
    let inbound = format!("{conversation}-in");
    let outbound = format!("{conversation}-out");
    let started = Instant::now();
    let answer = http
        .get(format!("{base}/webhooks/answer"))
        .query(&[
            ("from", from.as_str()),
            ("to", to.as_str()),
            ("uuid", inbound.as_str()),
            ("conversation_uuid", conversation.as_str()),
        ])
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let took = started.elapsed();
    let connected = match answer {
        Ok(r) if r.status().is_success() => r
            .json::<Value>()
            .await
            .is_ok_and(|ncco| ncco[0]["action"] == "connect"),
        _ => false,
    };
    {
        let mut seen = lock(&seen);
        seen.slowest_answer = seen.slowest_answer.max(took);
        if took > ANSWER_LIMIT {
            seen.answers_over_limit += 1;
        }
        if connected {
            seen.connected.push(conversation.clone());
        } else {
            seen.not_connected.push(conversation.clone());
        }
    }
    let t = chrono::Utc::now();
    let at = |ms: i64| (t + chrono::Duration::milliseconds(ms)).to_rfc3339();
    let events = [
        (&inbound, "inbound", "started", at(0), json!({})),
        (&outbound, "outbound", "ringing", at(100), json!({})),
        (&outbound, "outbound", "answered", at(200), json!({})),
        (
            &outbound,
            "outbound",
            "completed",
            at(300),
            json!({"duration": "12", "price": "0.0012"}),
        ),
    ];
    for (leg, direction, status, timestamp, extra) in events {
        let mut body = json!({"uuid": leg, "conversation_uuid": conversation,
            "status": status, "direction": direction, "timestamp": timestamp});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let r = http
            .post(format!("{base}/webhooks/event"))
            .json(&body)
            .send()
            .await;
        let mut seen = lock(&seen);
        match r {
            Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                seen.acknowledged
                    .push((conversation.clone(), leg.clone(), status.to_owned()))
            }
            Ok(r) => seen
                .not_acknowledged
                .push(format!("{conversation} {status}: {}", r.status())),
            Err(e) => seen
                .not_acknowledged
                .push(format!("{conversation} {status}: {e}")),
        }
    }
}

/// Creates pairings at `rate` per second, round-robin over the instances, until told to stop.
pub(super) async fn creates(
    http: reqwest::Client,
    bases: Vec<String>,
    auth: String,
    rate: f64,
    seen: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut rng = fastrand::Rng::with_seed(7);
    let mut creates = JoinSet::new();
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let (a, b) = numbers::two_people(&mut rng, Country::Us);
        let url = format!("{}/v1/pairings", bases[n % bases.len()]);
        n += 1;
        let (http, auth, seen) = (http.clone(), auth.clone(), seen.clone());
        creates.spawn(async move {
            let r = http
                .post(url)
                .header("authorization", auth)
                .json(&json!({"participants": [{"number": a}, {"number": b}],
                              "reference": format!("ha-{}", Uuid::now_v7()),
                              "ttl_seconds": 3600}))
                .send()
                .await;
            let (status, id) = match r {
                Ok(r) => {
                    let status = r.status().as_u16().to_string();
                    let id = if r.status() == reqwest::StatusCode::CREATED {
                        r.json::<Value>()
                            .await
                            .ok()
                            .and_then(|p| p["id"].as_str()?.parse::<Uuid>().ok())
                    } else {
                        None
                    };
                    (status, id)
                }
                Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
                Err(_) => ("connection error".to_owned(), None),
            };
            let mut seen = lock(&seen);
            *seen.create_statuses.entry(status).or_default() += 1;
            if let Some(id) = id {
                seen.created.push(id);
                seen.last_created = Some(Instant::now());
            }
        });
        while creates.try_join_next().is_some() {}
    }
    while creates.join_next().await.is_some() {}
}

/// A pairing created and closed through the first instance stops routing on every instance at
/// once: the close waits for every route mirror, which must be following the new leader.
pub(super) async fn close_stops_routing_everywhere(
    http: &reqwest::Client,
    bases: &[String],
    auth: &str,
) -> anyhow::Result<()> {
    let mut rng = fastrand::Rng::new();
    let (a, b) = numbers::two_people(&mut rng, Country::Us);
    let base = &bases[0];
    let r = http
        .post(format!("{base}/v1/pairings"))
        .header("authorization", auth)
        .json(&json!({"participants": [{"number": a}, {"number": b}]}))
        .send()
        .await?;
    if r.status() != reqwest::StatusCode::CREATED {
        bail!("create: {}", r.status());
    }
    let p: Value = r.json().await?;
    let id = p["id"].as_str().context("an id")?.to_owned();
    let proxy = p["participants"][0]["proxy_number"]
        .as_str()
        .context("a proxy number")?
        .to_owned();
    // Every instance connects it (from memory, or by asking the database).
    for base in bases {
        if action(http, base, &a, &proxy).await? != "connect" {
            bail!("{base} does not connect a new pairing");
        }
    }
    let r = http
        .post(format!("{base}/v1/pairings/{id}/close"))
        .header("authorization", auth)
        .json(&json!({}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("close: {}", r.status());
    }
    for base in bases {
        let got = action(http, base, &a, &proxy).await?;
        if got != "talk" {
            bail!(
                "{base} still answers {got} for a pairing closed through {}",
                bases[0]
            );
        }
    }
    Ok(())
}

async fn action(
    http: &reqwest::Client,
    base: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<String> {
    let conversation = format!("CON-ha-check-{}", Uuid::now_v7());
    let ncco: Value = http
        .get(format!("{base}/webhooks/answer"))
        .query(&[
            ("from", from),
            ("to", to),
            ("uuid", &format!("{conversation}-in")),
            ("conversation_uuid", &conversation),
        ])
        .send()
        .await?
        .json()
        .await?;
    Ok(ncco[0]["action"].as_str().unwrap_or_default().to_owned())
}
