//! `/v1/calls`: the call audit.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use voice_proxy_domain::call::parse_timestamp;
use voice_proxy_domain::{CallOutcome, CallStatus};
use voice_proxy_persistence::calls::{self, Call, CallFilter};

use crate::auth::{Scope, require};
use crate::error::method_not_allowed;
use crate::ids::parse_call_id;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::pairings::parse_pairing_id;
use crate::{ApiError, AppState};

/// Both routes need the `calls:read` scope (or `admin`), checked before the request is read.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/calls")
            .route(require(Scope::CallsRead, web::get().to(list_calls)))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/calls/{id}")
            .route(require(Scope::CallsRead, web::get().to(get_call)))
            .default_service(method_not_allowed("GET")),
    );
}

/// What the answer webhook did with the call.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcomeName {
    /// Connected to the other participant.
    Routed,
    /// The caller has no pairing on the dialled number.
    NoPairing,
    /// The caller's pairing on the dialled number is closed or expired.
    PairingEnded,
    /// The caller id was withheld.
    Anonymous,
    /// The caller is not a phone number (an in-app user or a SIP URI).
    UnsupportedCaller,
    /// The answer request lacked what Vonage always sends.
    InvalidRequest,
    /// The marketplace's intercept said not to connect it.
    Intercepted,
    /// No active pairing; the marketplace's out-of-session answer was a message.
    OutOfSessionMessage,
    /// No active pairing; the marketplace had one made and the call was connected through it.
    OutOfSessionConnected,
    /// No active pairing; the pairing the marketplace asked for could not be made.
    OutOfSessionRefused,
    /// Not a participant of the dialled number, which has PIN access: asked for a PIN, and
    /// neither connected nor refused (the caller hung up, or it is still going on).
    PinPrompted,
    /// Connected by a participant's PIN, as that participant.
    PinRouted,
    /// Asked for a PIN and refused: every attempt wrong, or the caller was throttled.
    PinRefused,
}

impl From<CallOutcome> for CallOutcomeName {
    fn from(o: CallOutcome) -> Self {
        match o {
            CallOutcome::Routed => Self::Routed,
            CallOutcome::NoPairing => Self::NoPairing,
            CallOutcome::PairingEnded => Self::PairingEnded,
            CallOutcome::Anonymous => Self::Anonymous,
            CallOutcome::UnsupportedCaller => Self::UnsupportedCaller,
            CallOutcome::InvalidRequest => Self::InvalidRequest,
            CallOutcome::Intercepted => Self::Intercepted,
            CallOutcome::OutOfSessionMessage => Self::OutOfSessionMessage,
            CallOutcome::OutOfSessionConnected => Self::OutOfSessionConnected,
            CallOutcome::OutOfSessionRefused => Self::OutOfSessionRefused,
            CallOutcome::PinPrompted => Self::PinPrompted,
            CallOutcome::PinRouted => Self::PinRouted,
            CallOutcome::PinRefused => Self::PinRefused,
        }
    }
}

/// A call record: one inbound call, as Vonage reported it.
#[derive(Serialize, ToSchema)]
pub struct CallResponse {
    pub id: Uuid,
    /// Vonage's conversation uuid (`CON-...`).
    #[schema(required = true)]
    pub conversation_uuid: Option<String>,
    /// Vonage's uuid of the inbound leg.
    #[schema(required = true)]
    pub uuid: Option<String>,
    /// The pairing the call was routed (or refused) by.
    #[schema(required = true)]
    pub pairing_id: Option<Uuid>,
    /// The caller's number; `null` when withheld.
    #[schema(required = true)]
    pub caller: Option<String>,
    /// The pool number dialled.
    #[schema(required = true)]
    pub proxy_number: Option<String>,
    /// The number the call was connected to.
    #[schema(required = true)]
    pub callee: Option<String>,
    pub outcome: CallOutcomeName,
    /// How the call ended, or how far it has got, as Vonage reported it for the callee's leg
    /// (the caller's when the call was not connected): `started`, `ringing`, `answered`;
    /// `completed` when the callee answered and the call ended; `busy`, `timeout`,
    /// `unanswered`, `cancelled`, `rejected` or `failed` when the callee never answered.
    #[schema(required = true)]
    pub status: Option<String>,
    pub started_at: DateTime<Utc>,
    #[schema(required = true)]
    pub answered_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub ended_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub duration_seconds: Option<i64>,
    /// The price Vonage reported, as a decimal string.
    #[schema(required = true, pattern = "^-?[0-9]+(\\.[0-9]+)?$")]
    pub price: Option<String>,
    /// The kind of endpoint the caller is, as Vonage reported it (`phone`, `sip`, `app`, ...).
    #[schema(required = true)]
    pub endpoint_type: Option<String>,
    /// Only in `GET /v1/calls/{id}`: the events stored for the call, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub events: Option<Vec<EventResponse>>,
    /// Only in `GET /v1/calls/{id}`: the call's recording (`null` when it has none); its audio
    /// is at `GET /v1/calls/{id}/recording`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::recordings::RecordingResponse>)]
    pub recording: Option<Option<crate::recordings::RecordingResponse>>,
}

/// A call status Vonage reports.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallStatusName {
    Started,
    Ringing,
    Answered,
    Completed,
    Busy,
    Cancelled,
    Unanswered,
    Rejected,
    Failed,
    Timeout,
    Disconnected,
}

/// An event webhook as received.
#[derive(Serialize, ToSchema)]
pub struct EventResponse {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    /// The event's JSON, as Vonage sent it.
    #[schema(value_type = Object)]
    pub payload: Value,
}

impl From<Call> for CallResponse {
    fn from(c: Call) -> Self {
        Self {
            id: c.id.as_uuid(),
            conversation_uuid: c.conversation_uuid,
            uuid: c.uuid,
            pairing_id: c.pairing_id.map(|p| p.as_uuid()),
            caller: c.caller,
            proxy_number: c.proxy_number,
            callee: c.callee,
            outcome: c.outcome.into(),
            status: c.status,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            duration_seconds: c.duration_seconds,
            price: c.price,
            endpoint_type: c.endpoint_type,
            events: None,
            recording: None,
        }
    }
}

/// `GET /v1/calls/{id}`: one call record, with its events. Scope `calls:read`.
#[utoipa::path(
    get,
    path = "/v1/calls/{id}",
    tag = "calls",
    params(("id" = Uuid, Path, description = "The call's id.")),
    responses(
        (status = 200, description = "The call, with `events` and `recording`.", body = CallResponse),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such call."),
    ),
    security(("bearer" = ["calls:read"]))
)]
pub async fn get_call(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_call_id(&path)?;
    let call = calls::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no call {id}")))?;
    let events = match &call.conversation_uuid {
        Some(conversation) => calls::events(&state.pool, conversation).await?,
        None => Vec::new(),
    };
    let recording =
        crate::recordings::of_conversation(&state, call.conversation_uuid.as_deref()).await?;
    let mut response = CallResponse::from(call);
    response.recording = Some(recording);
    response.events = Some(
        events
            .into_iter()
            .map(|e| EventResponse {
                id: e.id,
                received_at: e.received_at,
                payload: e.payload,
            })
            .collect(),
    );
    Ok(HttpResponse::Ok().json(response))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Calls of this pairing.
    #[param(value_type = Option<Uuid>)]
    pairing_id: Option<String>,
    /// Calls that started at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    from: Option<String>,
    /// Calls that started before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    to: Option<String>,
    /// Calls with this status, e.g. `busy` for calls whose callee was busy.
    #[param(value_type = Option<CallStatusName>)]
    status: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "calls";

/// `GET /v1/calls`: call records, newest first. Scope `calls:read`.
#[utoipa::path(
    get,
    path = "/v1/calls",
    tag = "calls",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of calls (without `events`).", body = ListResponse<CallResponse>),
        (status = 400, description = "Malformed query string or cursor."),
        (status = 422, description = "A filter or `limit` is not valid."),
    ),
    security(("bearer" = ["calls:read"]))
)]
pub async fn list_calls(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = page_size(query.limit)?;
    let time = |field: &str, v: Option<String>| {
        v.map(|s| {
            parse_timestamp(&s).ok_or_else(|| {
                ApiError::validation(format!(
                    "{field} must be an RFC 3339 timestamp in the years 1 to 9999"
                ))
            })
        })
        .transpose()
    };
    let status = query
        .status
        .map(|s| {
            CallStatus::KNOWN
                .contains(&s.as_str())
                .then_some(s)
                .ok_or_else(|| {
                    ApiError::validation(format!(
                        "status must be one of {}",
                        CallStatus::KNOWN.join(", ")
                    ))
                })
        })
        .transpose()?;
    let filter = CallFilter {
        pairing_id: query
            .pairing_id
            .map(|p| parse_pairing_id(&p))
            .transpose()
            .map_err(|_| ApiError::validation("pairing_id must be a UUID"))?,
        from: time("from", query.from)?,
        to: time("to", query.to)?,
        status,
    };
    let after = decode_cursor(CURSOR_KIND, query.cursor.as_deref())?
        .map(|k| parse_call_id(&k))
        .transpose()
        .map_err(|_| ApiError::bad_request("malformed cursor"))?;
    let page = calls::list(&state.pool, &filter, after, limit).await?;
    Ok(HttpResponse::Ok().json(ListResponse {
        items: page.items.into_iter().map(CallResponse::from).collect(),
        next_cursor: page
            .next
            .map(|k| encode_cursor(CURSOR_KIND, &k.to_string())),
    }))
}
