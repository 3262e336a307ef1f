//! The answer webhook's questions to the marketplace, each bounded by its own deadline so that
//! the answer still comes in time whatever the marketplace does:
//!
//! - the intercept, before a routable call is connected: allow, or deny with a message; without
//!   a usable answer in time, `INTERCEPT_ON_FAILURE` decides;
//! - the out-of-session request, for a caller without an active pairing on the number they
//!   dialled: a message to speak, or a pairing to make (the caller keeping the dialled number)
//!   and connect; without a usable answer, the call goes on as if nobody had been asked.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use voice_proxy_callbacks::{Intercept, OnFailure, Question};
use voice_proxy_domain::callbacks::{
    CallContext, InterceptDecision, OutOfSessionCall, OutOfSessionReply, intercept_body,
    out_of_session_body,
};
use voice_proxy_domain::phone::mask_digit_runs;
use voice_proxy_domain::routing::{Route, RouteDetails};
use voice_proxy_domain::{CallId, CallOutcome, PairingId, PairingStatus, PhoneNumber};
use voice_proxy_persistence::pairings::lookup::{call_labels, most_recent_on};
use voice_proxy_persistence::pairings::{self, CreateOutcome};

use crate::AppState;
use crate::pairings::{CreatePairingRequest, parse_request};

/// The questions this service asks, where configured.
#[derive(Clone, Default)]
pub struct Questions {
    pub intercept: Option<Intercept>,
    pub out_of_session: Option<Question>,
}

/// The intercept's verdict on a routable call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Connect,
    /// Do not connect; speak this (none: the no-route message).
    Refuse {
        message: Option<String>,
    },
}

/// The call the answer webhook is deciding, as the questions need it.
pub struct Inbound<'a> {
    pub call_id: CallId,
    pub conversation_uuid: Option<&'a str>,
    pub caller: &'a str,
    pub dialled: &'a str,
    pub started_at: chrono::DateTime<Utc>,
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The part of a question's deadline the database lookup before it may take: a stalled
/// database must leave the question its time, so it goes without what the lookup would add.
fn lookup_budget(timeout: Duration) -> Duration {
    (timeout / 3).min(Duration::from_millis(100))
}

/// Asks the intercept about a call routed to a pairing. The labels and reference are read
/// within the same deadline; if they cannot be, the question goes without them.
pub async fn intercept(
    state: &AppState,
    intercept: &Intercept,
    call: &Inbound<'_>,
    pairing_id: PairingId,
) -> Verdict {
    let deadline = Instant::now() + intercept.question.timeout();
    let labels = tokio::time::timeout(
        lookup_budget(intercept.question.timeout()),
        call_labels(&state.pool, pairing_id, call.caller),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten()
    .unwrap_or_default();
    let context = CallContext {
        call_id: call.call_id,
        conversation_uuid: call.conversation_uuid.map(str::to_owned),
        outcome: CallOutcome::Routed,
        pairing_id: Some(pairing_id),
        reference: labels.reference,
        caller_label: labels.caller_label,
        callee_label: labels.callee_label,
        proxy_number: Some(call.dialled.to_owned()),
        started_at: call.started_at,
    };
    let body = intercept_body(&context, Utc::now());
    let (verdict, result) = match intercept
        .question
        .intercept(&body, remaining(deadline))
        .await
    {
        Ok(InterceptDecision::Allow) => (Verdict::Connect, "allow"),
        Ok(InterceptDecision::Deny { message }) => (Verdict::Refuse { message }, "deny"),
        Err(e) => {
            tracing::warn!(
                error = %e,
                pairing_id = %pairing_id,
                on_failure = ?intercept.on_failure,
                "the intercept gave no usable answer; INTERCEPT_ON_FAILURE decides"
            );
            match intercept.on_failure {
                OnFailure::Allow => (Verdict::Connect, "failed_allow"),
                OnFailure::Deny => (Verdict::Refuse { message: None }, "failed_deny"),
            }
        }
    };
    metrics::counter!("intercept_requests_total", "result" => result).increment(1);
    verdict
}

/// What to do with a caller who has no active pairing on the number they dialled.
#[derive(Debug)]
pub enum OutOfSession {
    /// Speak this.
    Message(String),
    /// Connect through the pairing just made.
    Connect(Route),
    /// The marketplace asked for a pairing that could not be made with the caller keeping the
    /// dialled number: the no-route message.
    Refused,
    /// No usable answer: as if nobody had been asked.
    NoAnswer,
}

impl OutOfSession {
    pub fn outcome(&self) -> Option<CallOutcome> {
        match self {
            Self::Message(_) => Some(CallOutcome::OutOfSessionMessage),
            Self::Connect(_) => Some(CallOutcome::OutOfSessionConnected),
            Self::Refused => Some(CallOutcome::OutOfSessionRefused),
            Self::NoAnswer => None,
        }
    }
}

/// Asks the out-of-session URL about the call, and carries out a `connect` reply.
pub async fn out_of_session(
    state: &AppState,
    question: &Question,
    call: &Inbound<'_>,
) -> OutOfSession {
    let deadline = Instant::now() + question.timeout();
    let recent = tokio::time::timeout(
        lookup_budget(question.timeout()),
        most_recent_on(&state.pool, call.caller, call.dialled),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten();
    let asked = OutOfSessionCall {
        call_id: call.call_id,
        conversation_uuid: call.conversation_uuid.unwrap_or_default().to_owned(),
        caller: PhoneNumber::from_trusted_digits(call.caller.to_owned()),
        dialled: PhoneNumber::from_trusted_digits(call.dialled.to_owned()),
        recent,
    };
    let body = out_of_session_body(&asked, Utc::now());
    let reply = question.out_of_session(&body, remaining(deadline)).await;
    let (decision, result) = match reply {
        Ok(OutOfSessionReply::Message { text }) => (OutOfSession::Message(text), "message"),
        Ok(OutOfSessionReply::Connect { pairing }) => match connect(state, pairing, call).await {
            Ok(route) => (OutOfSession::Connect(route), "connect"),
            Err(why) => {
                tracing::warn!(
                    why,
                    "the out-of-session reply asked for a pairing that cannot be made with the caller keeping the dialled number"
                );
                (OutOfSession::Refused, "refused")
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "the out-of-session request gave no usable answer");
            (OutOfSession::NoAnswer, e.kind())
        }
    };
    metrics::counter!("out_of_session_requests_total", "result" => result).increment(1);
    decision
}

/// Makes the pairing a `connect` reply asks for, the caller keeping the number they dialled,
/// and returns the route to the other participant. The reason it cannot, in words without a
/// number, otherwise.
async fn connect(state: &AppState, body: Value, call: &Inbound<'_>) -> Result<Route, String> {
    let request: CreatePairingRequest = serde_json::from_value(body).map_err(|e| {
        // The error's category only: serde's message may quote a value, a number say.
        format!(
            "the pairing is not a pairing create body ({:?} error)",
            e.classify()
        )
    })?;
    let mut new = parse_request(request, state)
        .map_err(|e| format!("the pairing is not valid: {}", mask_digit_runs(&e.detail)))?;
    let position = new
        .participants
        .iter()
        .position(|p| p.number.expose() == call.caller)
        .ok_or("the caller is not one of the pairing's participants")?;
    let dialled = PhoneNumber::from_trusted_digits(call.dialled.to_owned());
    let keeps = &mut new.participants[position].proxy_number;
    match keeps {
        Some(asked) if asked.expose() != call.dialled => {
            return Err(
                "the pairing gives the caller a proxy number other than the one dialled".into(),
            );
        }
        _ => *keeps = Some(dialled),
    }
    // Run to its end in a task of its own, so that the timeout never cuts it off in the middle
    // (a create stopped during its commit would leave a pairing made and its load uncounted);
    // past the timeout the call is refused and the create finishes or rolls back on its own.
    let (pool, ledger, outbox) = (
        state.pool.clone(),
        state.ledger.clone(),
        state.outbox.clone(),
    );
    let allocation = state.settings.allocation;
    let creating =
        tokio::spawn(
            async move { pairings::create(&pool, &ledger, &outbox, &new, &allocation).await },
        );
    let created = tokio::time::timeout(state.settings.answer_db_timeout, creating)
        .await
        .map_err(|_| "the database did not make the pairing in time".to_owned())?
        .map_err(|_| "the pairing create stopped".to_owned())?
        .map_err(|e| format!("the pairing was refused: {}", refusal(&e)))?;
    let pairing = match created {
        CreateOutcome::Created(p) | CreateOutcome::Existing(p) => p,
    };
    let [a, b] = &pairing.participants;
    let (caller, callee) = if a.number.expose() == call.caller {
        (a, b)
    } else {
        (b, a)
    };
    if caller.proxy_number.expose() != call.dialled || pairing.status() != PairingStatus::Active {
        return Err("an existing pairing with that reference does not route this call".into());
    }
    tracing::info!(pairing_id = %pairing.id, "pairing made for an out-of-session call");
    let details = RouteDetails {
        options: pairing.call_options.clone(),
        caller_label: caller.label.clone(),
        reference: pairing.reference.clone(),
    };
    Ok(Route::Connect {
        pairing_id: pairing.id,
        callee: callee.number.clone(),
        callee_proxy: callee.proxy_number.clone(),
        details: Some(std::sync::Arc::new(details)),
    })
}

/// Why a create was refused, without the numbers some refusals name.
fn refusal(e: &pairings::CreatePairingError) -> &'static str {
    use pairings::CreatePairingError as E;
    match e {
        E::ReferenceConflict(_) => "the reference names another active pairing",
        E::ParticipantIsPoolNumber { .. } => "a participant is a pool number",
        E::ProxyNotInPool { .. } => "a proxy number asked for is not in the pool",
        E::ProxyUnavailable { .. } => {
            "the dialled number is retired or routes the caller in another pairing"
        }
        E::PoolExhausted { .. } => "no pool number is free for the other participant",
        E::Contention => "too many concurrent requests for the same participants",
        E::PinsExhausted => "no PIN is free on a proxy number",
        E::Database(_) => "a database error",
    }
}
