//! `/v1/calls`: the call audit.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use voice_proxy_domain::CallId;
use voice_proxy_domain::call::parse_timestamp;
use voice_proxy_persistence::calls::{self, Call, CallFilter};

use crate::auth::require_admin;
use crate::pagination::{ListResponse, decode_cursor, encode_cursor, page_size};
use crate::pairings::parse_pairing_id;
use crate::{ApiError, AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/calls", web::get().to(list_calls))
        .route("/calls/{id}", web::get().to(get_call));
}

#[derive(Serialize)]
pub struct CallResponse {
    pub id: Uuid,
    pub conversation_uuid: Option<String>,
    pub uuid: Option<String>,
    pub pairing_id: Option<Uuid>,
    pub caller: Option<String>,
    pub proxy_number: Option<String>,
    pub callee: Option<String>,
    pub outcome: &'static str,
    pub status: Option<String>,
    pub started_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub duration_seconds: Option<i64>,
    pub price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventResponse>>,
}

#[derive(Serialize)]
pub struct EventResponse {
    pub id: i64,
    pub received_at: DateTime<Utc>,
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
            outcome: c.outcome.as_str(),
            status: c.status,
            started_at: c.started_at,
            answered_at: c.answered_at,
            ended_at: c.ended_at,
            duration_seconds: c.duration_seconds,
            price: c.price,
            events: None,
        }
    }
}

fn parse_call_id(raw: &str) -> Result<CallId, ApiError> {
    Uuid::parse_str(raw)
        .map(CallId::from_uuid)
        .map_err(|_| ApiError::bad_request("the call id is not a UUID"))
}

async fn get_call(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let id = parse_call_id(&path)?;
    let call = calls::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no call {id}")))?;
    let events = match &call.conversation_uuid {
        Some(conversation) => calls::events(&state.pool, conversation).await?,
        None => Vec::new(),
    };
    let mut response = CallResponse::from(call);
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    pairing_id: Option<String>,
    /// Calls that started at or after this time (RFC 3339).
    from: Option<String>,
    /// Calls that started before this time (RFC 3339).
    to: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

const CURSOR_KIND: &str = "calls";

async fn list_calls(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    require_admin(&req, &state)?;
    let query = query.into_inner();
    let limit = page_size(query.limit)?;
    let time = |field: &str, v: Option<String>| {
        v.map(|s| {
            parse_timestamp(&s).ok_or_else(|| {
                ApiError::validation(format!("{field} must be an RFC 3339 timestamp"))
            })
        })
        .transpose()
    };
    let filter = CallFilter {
        pairing_id: query
            .pairing_id
            .map(|p| parse_pairing_id(&p))
            .transpose()
            .map_err(|_| ApiError::validation("pairing_id must be a UUID"))?,
        from: time("from", query.from)?,
        to: time("to", query.to)?,
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
