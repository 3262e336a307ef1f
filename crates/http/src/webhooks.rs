//! The Vonage webhooks: answer (what to do with an inbound call) and event (call-state changes).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Map, Value};
use voice_proxy_domain::call::MAX_ID_CHARS;
use voice_proxy_domain::call_options::MAX_WHISPER_CHARS;
use voice_proxy_domain::pairing::{MAX_LABEL_LEN, MAX_REFERENCE_LEN};
use voice_proxy_domain::phone::{mask_digit_runs, mask_digits};
use voice_proxy_domain::routing::Route;
use voice_proxy_domain::text::is_clean;
use voice_proxy_domain::{CallEvent, CallId, CallOutcome, CallStatus, CallerId, Ncco};
use voice_proxy_domain::{CallRecord, EventRecord};
use voice_proxy_persistence::durable::recorder::Stored;
use voice_proxy_persistence::records::Record;

use crate::ask;
use crate::error::method_not_allowed;
use crate::nccos::{event_url, routed_ncco};
use crate::pin::{self, PinGate};
use crate::webhook_request::{query_map, signed, signed_body, signed_json_body};
use crate::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/webhooks")
            .service(
                web::resource("/answer")
                    .route(web::get().to(answer_get))
                    .route(web::post().to(answer_post))
                    .default_service(method_not_allowed("GET, POST")),
            )
            .service(
                web::resource("/event")
                    .route(web::post().to(event_post))
                    .route(web::get().to(event_get))
                    .default_service(method_not_allowed("GET, POST")),
            )
            .service(
                web::resource("/whisper")
                    .route(web::get().to(whisper_get))
                    .route(web::post().to(whisper_post))
                    .default_service(method_not_allowed("GET, POST")),
            )
            .service(
                web::resource("/pin")
                    .route(web::post().to(pin_post))
                    .route(web::get().to(pin_get))
                    .default_service(method_not_allowed("GET, POST")),
            )
            .service(crate::recordings::webhook()),
    );
}

/// The fields of an answer request we use. Vonage sends more; they are ignored.
#[derive(Debug, Default, Clone)]
pub struct AnswerRequest {
    pub from: Option<String>,
    /// The caller's user name, on calls from an in-app (Client SDK) user.
    pub from_user: Option<String>,
    pub to: Option<String>,
    pub uuid: Option<String>,
    pub conversation_uuid: Option<String>,
    pub endpoint_type: Option<String>,
    /// An identifier was longer than any Vonage sends ([`MAX_ID_CHARS`]); it was dropped.
    pub oversized: bool,
}

impl AnswerRequest {
    fn from_map(map: &Map<String, Value>) -> Self {
        let mut oversized = false;
        // A value with a NUL character cannot be genuine (nor stored): it counts as absent. So
        // does one too long to be an identifier, and the request is then refused.
        let mut field = |k: &str| {
            let value = match map.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() && !s.contains('\0') => {
                    s.trim().to_owned()
                }
                Some(Value::Number(n)) => n.to_string(),
                _ => return None,
            };
            if value.chars().count() > MAX_ID_CHARS {
                oversized = true;
                return None;
            }
            Some(value)
        };
        let request = Self {
            from: field("from"),
            from_user: field("from_user"),
            to: field("to"),
            uuid: field("uuid"),
            conversation_uuid: field("conversation_uuid"),
            endpoint_type: field("endpoint_type").filter(|t| {
                t.len() <= 32
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }),
            oversized: false,
        };
        Self {
            oversized,
            ..request
        }
    }
}

/// `GET /webhooks/answer?from=..&to=..&uuid=..&conversation_uuid=..`. A query string that cannot
/// be parsed is treated as one without fields: the caller hears the message.
async fn answer_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    signed(&req, &state)?;
    Ok(answer(&state, AnswerRequest::from_map(&query_map(&req))).await)
}

/// `POST /webhooks/answer` with the same fields as a JSON body. A body that is not a JSON object
/// is treated as one without fields.
async fn answer_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_body(&req, &state, payload).await?;
    let map = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(answer(&state, AnswerRequest::from_map(&map)).await)
}

/// Decides the NCCO for an inbound call and records the call. Always a 200 with a valid NCCO:
/// an HTTP error would make Vonage retry, then fall back, while the caller waits.
pub async fn answer(state: &AppState, request: AnswerRequest) -> HttpResponse {
    let answering_since = std::time::Instant::now();
    let settings = &state.settings;
    let caller = CallerId::from_webhook(
        request.from.as_deref(),
        request.from_user.as_deref(),
        request.endpoint_type.as_deref(),
    );
    let dialled = request
        .to
        .as_deref()
        .map(|t| t.trim_start_matches('+').to_owned());

    let complete = request.uuid.is_some()
        && request.conversation_uuid.is_some()
        && dialled.is_some()
        && !request.oversized;
    let (mut outcome, mut route) = match (&caller, &dialled) {
        _ if !complete => (CallOutcome::InvalidRequest, None),
        (CallerId::Withheld, _) => (CallOutcome::Anonymous, None),
        (CallerId::Unsupported, _) => (CallOutcome::UnsupportedCaller, None),
        (CallerId::Number(from), Some(to)) => match state.routing.resolve(from, to).await {
            route @ Route::Connect { .. } => (CallOutcome::Routed, Some(route)),
            route @ Route::Ended { .. } => (CallOutcome::PairingEnded, Some(route)),
            Route::None => (CallOutcome::NoPairing, None),
        },
        (CallerId::Number(_), None) => (CallOutcome::InvalidRequest, None),
    };

    // What the marketplace is asked, where it is: the intercept for a routable call, the
    // out-of-session request for a caller without an active pairing on the number.
    let call_id = CallId::new();
    let started_at = chrono::Utc::now();
    let mut spoken: Option<String> = None;
    // A caller without an active route on a number with PIN access is asked for a PIN (unless
    // they guessed wrong too often lately); nobody else is asked anything then.
    let mut prompt: Option<Ncco> = None;
    if let (CallerId::Number(from), Some(to), Some(conversation), None | Some(Route::Ended { .. })) =
        (&caller, &dialled, &request.conversation_uuid, &route)
        && complete
    {
        match pin::gate(state, from, to, conversation).await {
            PinGate::Prompt(ncco) => {
                outcome = CallOutcome::PinPrompted;
                prompt = Some(ncco);
            }
            PinGate::Throttled => {
                outcome = CallOutcome::PinRefused;
                spoken = Some(settings.no_route_message.clone());
            }
            PinGate::NotOffered => {}
        }
    }
    let asked_pin = outcome == CallOutcome::PinPrompted || outcome == CallOutcome::PinRefused;
    if let (CallerId::Number(from), Some(to), false) = (&caller, &dialled, asked_pin) {
        let inbound = ask::Inbound {
            call_id,
            conversation_uuid: request.conversation_uuid.as_deref(),
            caller: from,
            dialled: to,
            started_at,
        };
        match (&route, &state.questions) {
            (
                Some(Route::Connect { pairing_id, .. }),
                ask::Questions {
                    intercept: Some(intercept),
                    ..
                },
            ) => {
                if let ask::Verdict::Refuse { message } =
                    ask::intercept(state, intercept, &inbound, *pairing_id).await
                {
                    outcome = CallOutcome::Intercepted;
                    spoken = Some(message.unwrap_or_else(|| settings.no_route_message.clone()));
                }
            }
            (
                None | Some(Route::Ended { .. }),
                ask::Questions {
                    out_of_session: Some(question),
                    ..
                },
            ) if complete => {
                let decision = ask::out_of_session(state, question, &inbound).await;
                outcome = decision.outcome().unwrap_or(outcome);
                match decision {
                    ask::OutOfSession::Message(text) => spoken = Some(text),
                    ask::OutOfSession::Connect(made) => route = Some(made),
                    ask::OutOfSession::Refused => {
                        spoken = Some(settings.no_route_message.clone());
                        route = None;
                    }
                    ask::OutOfSession::NoAnswer => {}
                }
            }
            _ => {}
        }
    }

    let (ncco, pairing_id, callee) = match (prompt, spoken, route) {
        (Some(prompt), _, _) => (prompt, None, None),
        (None, Some(text), route) => (
            Ncco::talk(&text, &settings.message_language),
            route.and_then(|r| r.pairing_id()),
            None,
        ),
        (
            None,
            None,
            Some(Route::Connect {
                pairing_id,
                callee,
                callee_proxy,
                details,
            }),
        ) => {
            let ncco = routed_ncco(settings, &callee, &callee_proxy, details.as_deref());
            (ncco, Some(pairing_id), Some(callee))
        }
        (None, None, Some(Route::Ended { pairing_id })) => (
            Ncco::talk(&settings.pairing_ended_message, &settings.message_language),
            Some(pairing_id),
            None,
        ),
        (None, None, _) => (
            Ncco::talk(&settings.no_route_message, &settings.message_language),
            None,
            None,
        ),
    };

    let caller_digits = match &caller {
        CallerId::Number(d) => Some(d.clone()),
        CallerId::Withheld | CallerId::Unsupported => None,
    };
    tracing::info!(
        outcome = outcome.as_str(),
        caller = caller_digits.as_deref().map(mask_digits),
        dialled = dialled.as_deref().map(mask_digits),
        pairing_id = pairing_id.map(|p| p.to_string()),
        "answered inbound call"
    );
    let call = CallRecord {
        id: call_id,
        conversation_uuid: request.conversation_uuid,
        uuid: request.uuid,
        pairing_id,
        caller: caller_digits,
        proxy_number: dialled,
        callee: callee.map(|c| c.expose().to_owned()),
        outcome,
        started_at,
        endpoint_type: request.endpoint_type,
    };
    metrics::counter!("answer_outcomes_total", "outcome" => outcome.as_str()).increment(1);
    // What is left of the time the whole answer may take, however long the questions took.
    let left = ANSWER_BUDGET.saturating_sub(answering_since.elapsed());
    record_call(
        state,
        call,
        settings.answer_deadline.min(left).max(MIN_RECORD_WAIT),
    )
    .await;
    HttpResponse::Ok().json(ncco)
}

/// The most an answer takes, lookups, questions and the record's wait together (Vonage gives up
/// on an answer URL after a few seconds and the call fails): the record waits only for what is
/// left, and at least [`MIN_RECORD_WAIT`].
const ANSWER_BUDGET: std::time::Duration = std::time::Duration::from_millis(4000);
const MIN_RECORD_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Records the call, waiting for it to be durable for at most the answer deadline: a stalled
/// disk must not keep the caller waiting (Vonage gives up after 5 s and the call fails). Past the
/// deadline the record goes on to the spool, and to Postgres, in the background.
async fn record_call(state: &AppState, call: CallRecord, deadline: std::time::Duration) {
    let recorder = state.recorder.clone();
    let mut recording = Box::pin(async move { recorder.record(Record::Call(call)).await });
    match tokio::time::timeout(deadline, &mut recording).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "could not record the call"),
        Err(_) => {
            metrics::counter!("call_records_late_total").increment(1);
            tracing::warn!(
                "the call record is not durable yet (the spool is slow); answered without waiting for it"
            );
            tokio::spawn(async move {
                match recording.await {
                    Ok(_) => tracing::info!("a late call record is durable now"),
                    Err(e) => tracing::error!(error = %e, "could not record the call"),
                }
            });
        }
    }
}

/// The longest whisper the whisper webhook speaks: a template with the longest label and
/// reference put in.
const MAX_RENDERED_WHISPER_CHARS: usize =
    MAX_WHISPER_CHARS + 4 * (MAX_LABEL_LEN + MAX_REFERENCE_LEN);

/// `GET /webhooks/whisper?text=..`: the callee's `onAnswer`. Vonage fetches it when the callee
/// picks up, and plays what it returns to the callee alone before bridging the call. The text
/// is the whisper the answer webhook rendered into the URL.
async fn whisper_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    signed(&req, &state)?;
    whisper(&req, &state)
}

/// The same, for a `POST` (the body is not used).
async fn whisper_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    signed_body(&req, &state, payload).await?;
    whisper(&req, &state)
}

fn whisper(req: &HttpRequest, state: &AppState) -> Result<HttpResponse, ApiError> {
    let text = query_map(req)
        .remove("text")
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|t| is_clean(t, MAX_RENDERED_WHISPER_CHARS))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the whisper text (`text`) is missing, or not 1 to {MAX_RENDERED_WHISPER_CHARS} \
                 characters of plain text"
            ))
        })?;
    metrics::counter!("whispers_played_total").increment(1);
    Ok(HttpResponse::Ok().json(Ncco::talk(&text, &state.settings.message_language)))
}

/// `POST /webhooks/pin`: the digits a caller typed at the PIN prompt (an `input` action's
/// event); answers with the next NCCO.
async fn pin_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_body(&req, &state, payload).await?;
    let map = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(pin::typed(&state, &map).await)
}

/// `GET /webhooks/pin?..`: the same, for an application whose events come as GET (the digits
/// as `dtmf` JSON, or `dtmf.digits`).
async fn pin_get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    signed(&req, &state)?;
    Ok(pin::typed(&state, &query_map(&req)).await)
}

/// `POST /webhooks/event`: stores the event once and folds it into its call.
async fn event_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_json_body(&req, &state, payload, "the event").await?;
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        tracing::warn!(error = %e, "refused an event that is not JSON");
        ApiError::bad_request(format!(
            "malformed event: not JSON ({})",
            mask_digit_runs(&e.to_string())
        ))
    })?;
    event(&state, value).await
}

/// `GET /webhooks/event?status=..&uuid=..&conversation_uuid=..`: the same, for an application
/// whose event webhook is configured for GET (every value then arrives as a string).
async fn event_get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    signed(&req, &state)?;
    event(&state, Value::Object(query_map(&req))).await
}

/// Stores an event once (durably, before answering) and folds it into its call. Answers 204, or,
/// for the callee's leg ending unanswered on a synchronous connect, 200 with an NCCO that tells
/// the caller so.
async fn event(state: &AppState, value: Value) -> Result<HttpResponse, ApiError> {
    let event = CallEvent::parse(value).map_err(|e| {
        tracing::warn!(error = %e, "refused a malformed event");
        ApiError::bad_request(format!("malformed event: {e}"))
    })?;
    if !event.unreadable.is_empty() {
        tracing::warn!(
            fields = ?event.unreadable,
            "an event's fields could not all be read; stored as received, those left out of its call"
        );
    }
    let status = event.status.clone();
    // Vonage sends the callee leg's state changes of a synchronous connect here, and plays what
    // we answer to the caller.
    let tell_caller = event_url(&state.settings).is_some()
        && event.direction.as_deref() == Some("outbound")
        && status.as_ref().is_some_and(CallStatus::callee_unavailable);
    let stored = state
        .recorder
        .record(Record::Event(EventRecord {
            payload: event.payload,
            received_at: chrono::Utc::now(),
        }))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "could not store an event");
            ApiError::unavailable("the event could not be stored; retry")
        })?;
    let result = match stored {
        Stored::Database { new: true } => "stored",
        Stored::Database { new: false } => "duplicate",
        Stored::Spooled => "spooled",
        Stored::DeadLettered => "dead_lettered",
    };
    metrics::counter!("events_received_total", "result" => result).increment(1);
    tracing::info!(
        status = status.as_ref().map(CallStatus::as_str),
        result,
        "event received"
    );
    if tell_caller {
        let settings = &state.settings;
        return Ok(HttpResponse::Ok().json(Ncco::talk(
            &settings.callee_unavailable_message,
            &settings.message_language,
        )));
    }
    Ok(HttpResponse::NoContent().finish())
}
