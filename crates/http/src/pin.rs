//! PIN access from another phone: the prompt the answer webhook gives a caller who is not a
//! participant of the dialled number (when a pairing with PIN access uses it), and what the PIN
//! webhook does with the digits typed.
//!
//! A PIN that names an active participant on the dialled number connects the call as that
//! participant would have been connected calling from their own phone. A wrong one (or none)
//! prompts again, up to `PIN_ATTEMPTS` in a call; a caller with 5 wrong PINs within an hour is not
//! prompted any more. Every decision needs the database; while it is unreachable, nobody is
//! prompted and a call at the prompt is refused. PINs are never logged.

use actix_web::HttpResponse;
use serde_json::{Map, Value};
use voice_proxy_domain::pairing::Pin;
use voice_proxy_domain::phone::mask_digits;
use voice_proxy_domain::routing::Route;
use voice_proxy_domain::{CallId, CallOutcome, CallerId, Ncco, PairingId, PhoneNumber};
use voice_proxy_persistence::pins::{self, PinRoute, Standing};

use crate::nccos::{own_url, routed_ncco};
use crate::{AppState, ask};

/// What the answer webhook does about a PIN for a caller without an active route.
pub enum PinGate {
    /// The dialled number has PIN access: ask for one.
    Prompt(Ncco),
    /// It has, but this caller typed too many wrong PINs lately.
    Throttled,
    /// No PIN access here (or no public URL, or the database did not answer in time).
    NotOffered,
}

/// Whether to ask `caller`, who has no active route on `dialled`, for a PIN.
pub async fn gate(state: &AppState, caller: &str, dialled: &str, conversation: &str) -> PinGate {
    let settings = &state.settings;
    let Some(event_url) = own_url(settings, "/webhooks/pin") else {
        return PinGate::NotOffered;
    };
    let asked = pins::prompt_standing(&state.pool, caller, dialled, conversation);
    match tokio::time::timeout(settings.answer_db_timeout, asked).await {
        Ok(Ok(None)) => PinGate::NotOffered,
        Ok(Ok(Some(standing))) if standing.throttled() => {
            metrics::counter!("pin_results_total", "result" => "throttled").increment(1);
            PinGate::Throttled
        }
        Ok(Ok(Some(_))) => PinGate::Prompt(prompt(state, &settings.pin.prompt, event_url)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not check for PIN access; not prompting");
            PinGate::NotOffered
        }
        Err(_) => {
            tracing::warn!("the PIN access check timed out; not prompting");
            PinGate::NotOffered
        }
    }
}

fn prompt(state: &AppState, text: &str, event_url: String) -> Ncco {
    let settings = &state.settings;
    let digits = u8::try_from(settings.pin.digits).unwrap_or(u8::MAX);
    Ncco::pin_prompt(text, &settings.message_language, digits, event_url)
}

/// What came of a PIN typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PinResult {
    Routed,
    /// Right, but the marketplace's intercept said not to connect.
    Intercepted,
    /// Wrong or none, with attempts left: asked again.
    Retry,
    /// Wrong or none, and no attempt left.
    Refused,
    Throttled,
    /// The request lacks what Vonage always sends, or the database failed.
    Failed,
}

impl PinResult {
    fn as_str(self) -> &'static str {
        match self {
            Self::Routed => "routed",
            Self::Intercepted => "intercepted",
            Self::Retry => "retry",
            Self::Refused => "refused",
            Self::Throttled => "throttled",
            Self::Failed => "failed",
        }
    }
}

/// The next NCCO for a call at the PIN prompt, from the input event `event`.
pub async fn typed(state: &AppState, event: &Map<String, Value>) -> HttpResponse {
    let text = |k: &str| event.get(k).and_then(Value::as_str).map(str::trim);
    let caller = CallerId::from_webhook(text("from"), None, None);
    let dialled = text("to").map(|t| t.trim_start_matches('+'));
    let conversation = text("conversation_uuid").filter(|c| !c.is_empty() && c.len() <= 128);
    let (CallerId::Number(caller), Some(dialled), Some(conversation)) =
        (caller, dialled, conversation)
    else {
        tracing::warn!("a PIN event without its caller, dialled number or conversation");
        return finish(state, None, PinResult::Failed);
    };
    let typed = digits(event);
    let decided = tokio::time::timeout(
        state.settings.answer_db_timeout * 4,
        decide(state, &caller, dialled, conversation, typed.as_deref()),
    )
    .await;
    let (result, ncco) = match decided {
        Ok(Ok(decision)) => decision,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not check a PIN; refusing the call");
            (PinResult::Failed, None)
        }
        Err(_) => {
            tracing::error!("checking a PIN timed out; refusing the call");
            (PinResult::Failed, None)
        }
    };
    if matches!(
        result,
        PinResult::Refused | PinResult::Throttled | PinResult::Failed
    ) {
        settle(state, conversation, CallOutcome::PinRefused, None).await;
    }
    tracing::info!(
        result = result.as_str(),
        caller = mask_digits(&caller),
        dialled = mask_digits(dialled),
        "PIN typed"
    );
    finish(state, ncco, result)
}

fn finish(state: &AppState, ncco: Option<Ncco>, result: PinResult) -> HttpResponse {
    metrics::counter!("pin_results_total", "result" => result.as_str()).increment(1);
    let ncco = ncco.unwrap_or_else(|| {
        Ncco::talk(
            &state.settings.no_route_message,
            &state.settings.message_language,
        )
    });
    HttpResponse::Ok().json(ncco)
}

/// The digits typed: `dtmf.digits` (a JSON object, or in a GET's query string the `dtmf` field
/// as JSON text); `None` when nothing was typed.
fn digits(event: &Map<String, Value>) -> Option<String> {
    let dtmf = match event.get("dtmf") {
        Some(Value::String(raw)) => serde_json::from_str::<Value>(raw).ok(),
        Some(v) => Some(v.clone()),
        None => None,
    };
    dtmf.as_ref()
        .and_then(|d| d.get("digits"))
        .or_else(|| event.get("dtmf.digits"))
        .and_then(Value::as_str)
        .map(|d| d.trim().trim_end_matches('#').to_owned())
        .filter(|d| !d.is_empty())
}

/// Decides on the PIN `typed` (if any): the result, and the NCCO unless it is the no-route
/// message.
async fn decide(
    state: &AppState,
    caller: &str,
    dialled: &str,
    conversation: &str,
    typed: Option<&str>,
) -> Result<(PinResult, Option<Ncco>), sqlx::Error> {
    let pool = &state.pool;
    let settings = &state.settings;
    let standing = pins::standing(pool, caller, conversation).await?;
    if standing.throttled() {
        return Ok((PinResult::Throttled, None));
    }
    let pin = typed.and_then(Pin::parse);
    let found = match &pin {
        Some(pin) => pins::route_by_pin(pool, dialled, pin.expose()).await?,
        None => None,
    };
    if let Some(PinRoute {
        participant,
        route:
            Route::Connect {
                pairing_id,
                callee,
                callee_proxy,
                details,
            },
    }) = found
    {
        // As if the participant called from their own phone: the intercept is asked too.
        if let Some(intercept) = &state.questions.intercept {
            let call_id = pins::call_id(pool, conversation)
                .await?
                .unwrap_or_else(CallId::new);
            let inbound = ask::Inbound {
                call_id,
                conversation_uuid: Some(conversation),
                caller: participant.expose(),
                dialled,
                started_at: chrono::Utc::now(),
            };
            if let ask::Verdict::Refuse { message } =
                ask::intercept(state, intercept, &inbound, pairing_id).await
            {
                let outcome = CallOutcome::Intercepted;
                settle(state, conversation, outcome, Some((pairing_id, None))).await;
                let text = message.unwrap_or_else(|| settings.no_route_message.clone());
                let ncco = Ncco::talk(&text, &settings.message_language);
                return Ok((PinResult::Intercepted, Some(ncco)));
            }
        }
        let outcome = CallOutcome::PinRouted;
        settle(
            state,
            conversation,
            outcome,
            Some((pairing_id, Some(&callee))),
        )
        .await;
        tracing::info!(pairing_id = %pairing_id, "connected by PIN");
        let ncco = routed_ncco(settings, &callee, &callee_proxy, details.as_deref());
        return Ok((PinResult::Routed, Some(ncco)));
    }
    let standing: Standing =
        pins::record_failure(pool, caller, conversation, typed.is_some()).await?;
    if standing.throttled() {
        return Ok((PinResult::Throttled, None));
    }
    if standing.attempts >= settings.pin.attempts {
        return Ok((PinResult::Refused, None));
    }
    match own_url(settings, "/webhooks/pin") {
        Some(url) => Ok((
            PinResult::Retry,
            Some(prompt(state, &settings.pin.retry, url)),
        )),
        None => Ok((PinResult::Refused, None)),
    }
}

/// Writes the PIN's outcome into the call (recorded as `pin_prompted` when the prompt was
/// given), with its pairing and the callee it was connected to; a failure is logged, the caller
/// is answered anyway.
async fn settle(
    state: &AppState,
    conversation: &str,
    outcome: CallOutcome,
    pairing: Option<(PairingId, Option<&PhoneNumber>)>,
) {
    let (pairing_id, callee) = match pairing {
        Some((p, c)) => (Some(p), c),
        None => (None, None),
    };
    match pins::settle_call(&state.pool, conversation, outcome, pairing_id, callee).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            outcome = outcome.as_str(),
            "the PIN call's record is not in the database yet; its outcome stays pin_prompted"
        ),
        Err(e) => tracing::warn!(error = %e, "could not write the PIN call's outcome"),
    }
}
