//! The Vonage webhooks: answer (what to do with an inbound call) and event (call-state changes).

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde_json::{Map, Value};
use voice_proxy_domain::phone::mask_digits;
use voice_proxy_domain::{CallEvent, CallOutcome, CallerId, Ncco};
use voice_proxy_persistence::calls::{self, NewCall};
use voice_proxy_persistence::pairings::{self, Route};

use crate::{ApiError, AppState, MAX_BODY_BYTES};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/webhooks")
            .route("/answer", web::get().to(answer_get))
            .route("/answer", web::post().to(answer_post))
            .route("/event", web::post().to(event)),
    );
}

/// The fields of an answer request we use. Vonage sends more; they are ignored.
#[derive(Debug, Default, Clone)]
pub struct AnswerRequest {
    pub from: Option<String>,
    pub to: Option<String>,
    pub uuid: Option<String>,
    pub conversation_uuid: Option<String>,
}

impl AnswerRequest {
    fn from_map(map: &Map<String, Value>) -> Self {
        let field = |k: &str| match map.get(k) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        Self {
            from: field("from"),
            to: field("to"),
            uuid: field("uuid"),
            conversation_uuid: field("conversation_uuid"),
        }
    }
}

/// `GET /webhooks/answer?from=..&to=..&uuid=..&conversation_uuid=..`. A query string that cannot
/// be parsed is treated as one without fields: the caller hears the message.
async fn answer_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let map: Map<String, Value> =
        web::Query::<Vec<(String, String)>>::from_query(req.query_string())
            .map(|q| {
                q.into_inner()
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect()
            })
            .unwrap_or_default();
    answer(&state, AnswerRequest::from_map(&map)).await
}

/// `POST /webhooks/answer` with the same fields as a JSON body. A body that is not a JSON object
/// is treated as one without fields.
async fn answer_post(state: web::Data<AppState>, mut payload: web::Payload) -> HttpResponse {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() <= MAX_BODY_BYTES => {
                body.extend_from_slice(&chunk)
            }
            _ => {
                body.clear();
                break;
            }
        }
    }
    let map = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    answer(&state, AnswerRequest::from_map(&map)).await
}

/// Decides the NCCO for an inbound call and records the call. Always a 200 with a valid NCCO:
/// an HTTP error would make Vonage retry, then fall back, while the caller waits.
pub async fn answer(state: &AppState, request: AnswerRequest) -> HttpResponse {
    let settings = &state.settings;
    let caller = CallerId::from_webhook(request.from.as_deref());
    let dialled = request
        .to
        .as_deref()
        .map(|t| t.trim_start_matches('+').to_owned());

    let (outcome, route) = match (&request.uuid, &request.conversation_uuid, &dialled, &caller) {
        (None, _, _, _) | (_, None, _, _) | (_, _, None, _) => (CallOutcome::InvalidRequest, None),
        (_, _, _, CallerId::Withheld) => (CallOutcome::Anonymous, None),
        (_, _, Some(to), CallerId::Number(from)) => {
            match pairings::route(&state.pool, from, to).await {
                Ok(route @ Route::Connect { .. }) => (CallOutcome::Routed, Some(route)),
                Ok(route @ Route::Ended { .. }) => (CallOutcome::PairingEnded, Some(route)),
                Ok(Route::None) => (CallOutcome::NoPairing, None),
                Err(e) => {
                    tracing::error!(error = %e, "routing lookup failed; playing the message");
                    (CallOutcome::NoPairing, None)
                }
            }
        }
    };

    let (ncco, pairing_id, callee) = match route {
        Some(Route::Connect {
            pairing_id,
            callee,
            callee_proxy,
        }) => {
            let event_url = settings
                .public_base_url
                .as_ref()
                .map(|base| format!("{}/webhooks/event", base.trim_end_matches('/')));
            let ncco = Ncco::connect(
                &callee,
                &callee_proxy,
                event_url,
                settings.ring_timeout_seconds,
            );
            (ncco, Some(pairing_id), Some(callee))
        }
        Some(Route::Ended { pairing_id }) => (
            Ncco::talk(&settings.pairing_ended_message, &settings.message_language),
            Some(pairing_id),
            None,
        ),
        _ => (
            Ncco::talk(&settings.no_route_message, &settings.message_language),
            None,
            None,
        ),
    };

    let caller_digits = match &caller {
        CallerId::Number(d) => Some(d.clone()),
        CallerId::Withheld => None,
    };
    tracing::info!(
        outcome = outcome.as_str(),
        caller = caller_digits.as_deref().map(mask_digits),
        dialled = dialled.as_deref().map(mask_digits),
        pairing_id = pairing_id.map(|p| p.to_string()),
        "answered inbound call"
    );
    let call = NewCall {
        conversation_uuid: request.conversation_uuid,
        uuid: request.uuid,
        pairing_id,
        caller: caller_digits,
        proxy_number: dialled,
        callee,
        outcome,
    };
    if let Err(e) = calls::record_answer(&state.pool, &call).await {
        tracing::error!(error = %e, "could not record the call");
    }
    HttpResponse::Ok().json(ncco)
}

/// `POST /webhooks/event`: stores the event once and folds it into its call.
async fn event(
    state: web::Data<AppState>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let event = CallEvent::parse(body.into_inner()).map_err(|e| {
        tracing::warn!(error = %e, "refused a malformed event");
        ApiError::bad_request(format!("malformed event: {e}"))
    })?;
    let stored = calls::record_event(&state.pool, &event).await?;
    tracing::info!(
        status = event.status.as_ref().map(|s| s.as_str()),
        duplicate = !stored,
        "event received"
    );
    Ok(HttpResponse::NoContent().finish())
}
