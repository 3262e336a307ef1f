//! Call recordings: the webhook Vonage calls when a recording is ready (`/webhooks/recording`,
//! the `record` action's `eventUrl`), the `recording` object of `GET /v1/calls/{id}`, and
//! `GET /v1/calls/{id}/recording`, which streams the audio: from the archive when it is there,
//! else from Vonage with the application's JWT.
//!
//! A recording's URL comes from the event. Only URLs on Vonage's API hosts (or the configured
//! `VONAGE_API_BASE_URL`) are ever fetched: one elsewhere is stored as `refused` (the event is
//! still acknowledged, so that Vonage does not retry it), counted and logged without its query,
//! and never fetched; the client checks every URL again before it sends anything.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use utoipa::ToSchema;
use voice_proxy_callbacks::vonage::{ApiOrigin, FetchError, VonageClient};
use voice_proxy_domain::call::parse_timestamp;
use voice_proxy_domain::phone::mask_digit_runs;
use voice_proxy_persistence::calls;
use voice_proxy_persistence::recordings::{self, ArchiveState, NewRecording, Recording};

use crate::auth::{Scope, require};
use crate::error::method_not_allowed;
use crate::ids::parse_call_id;
use crate::webhook_request::{query_map, signed, signed_json_body};
use crate::{ApiError, AppState};

/// How long Vonage has to start answering a recording request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each chunk of a recording streamed from Vonage may take.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunks read from an archived file.
const FILE_CHUNK: usize = 64 * 1024;
/// Longest conversation uuid stored.
const MAX_CONVERSATION_CHARS: usize = 256;
/// Longest recording URL stored.
const MAX_URL_CHARS: usize = 2048;

/// What the recording handlers share: the Vonage client, the URL policy, the archive.
#[derive(Clone, Default)]
pub struct Recordings {
    /// Fetches recordings from Vonage; `None` without `VONAGE_APPLICATION_ID` and
    /// `VONAGE_PRIVATE_KEY_PATH`.
    pub client: Option<VonageClient>,
    /// Which URLs may ever be fetched (checked when the event arrives, and again by the client).
    pub origin: ApiOrigin,
    /// Where recordings are archived, when they are (`RECORDING_ARCHIVE_DIR`).
    pub archive_dir: Option<PathBuf>,
    /// Wakes this instance's archive worker when a recording is queued.
    pub wake: Arc<Notify>,
}

/// `POST /webhooks/recording` (JSON) and `GET /webhooks/recording?..`, signed like the other
/// webhooks.
pub fn webhook() -> actix_web::Resource {
    web::resource("/recording")
        .route(web::post().to(recording_post))
        .route(web::get().to(recording_get))
        .default_service(method_not_allowed("GET, POST"))
}

/// `GET /v1/calls/{id}/recording`, with the `recordings:read` scope (or `admin`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/calls/{id}/recording")
            .route(require(Scope::RecordingsRead, web::get().to(get_recording)))
            .default_service(method_not_allowed("GET")),
    );
}

async fn recording_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = signed_json_body(&req, &state, payload, "the recording event").await?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => recording_event(&state, &map).await,
        Ok(_) => Err(ApiError::bad_request(
            "malformed recording event: not a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(format!(
            "malformed recording event: not JSON ({})",
            mask_digit_runs(&e.to_string())
        ))),
    }
}

async fn recording_get(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    signed(&req, &state)?;
    recording_event(&state, &query_map(&req)).await
}

/// A recording event's fields, read.
#[derive(Debug, PartialEq, Eq)]
struct RecordingEvent {
    recording_uuid: String,
    conversation_uuid: String,
    recording_url: String,
    size: Option<i64>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
}

impl RecordingEvent {
    /// Reads the fields Vonage sends (`recording_uuid`, `conversation_uuid`, `recording_url`,
    /// `size`, `start_time`, `end_time`), as JSON values or, from a query string, as strings.
    fn parse(map: &Map<String, Value>) -> Result<Self, String> {
        let text = |k: &str, max: usize| -> Result<String, String> {
            match map.get(k) {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    let s = s.trim();
                    if s.chars().count() > max || s.chars().any(char::is_control) {
                        Err(format!(
                            "`{k}` is longer than {max} characters or holds control characters"
                        ))
                    } else {
                        Ok(s.to_owned())
                    }
                }
                _ => Err(format!("`{k}` is missing")),
            }
        };
        let recording_uuid = text("recording_uuid", 64)?;
        if !recording_uuid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("`recording_uuid` may hold only letters, digits, `-` and `_`".to_owned());
        }
        let size = match map.get("size") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .filter(|n| *n >= 0)
                    .ok_or("`size` is not a byte count")?,
            ),
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or("`size` is not a byte count")?,
            ),
            Some(_) => return Err("`size` is not a byte count".to_owned()),
        };
        let time = |k: &str| -> Result<Option<DateTime<Utc>>, String> {
            match map.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => parse_timestamp(s.trim())
                    .map(Some)
                    .ok_or_else(|| format!("`{k}` is not a timestamp")),
                Some(_) => Err(format!("`{k}` is not a timestamp")),
            }
        };
        Ok(Self {
            conversation_uuid: text("conversation_uuid", MAX_CONVERSATION_CHARS)?,
            recording_url: text("recording_url", MAX_URL_CHARS)?,
            recording_uuid,
            size,
            start_time: time("start_time")?,
            end_time: time("end_time")?,
        })
    }
}

/// The host and path of a URL, without its query (which could hold a token) or credentials,
/// and with long digit runs masked (a forged URL could carry a phone number).
fn loggable(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let shown: String = format!(
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.path()
            )
            .chars()
            .take(200)
            .collect();
            mask_digit_runs(&shown)
        }
        Err(_) => "(not a URL)".to_owned(),
    }
}

/// Stores a recording's event once and, where recordings are archived, queues its download.
/// Answers 204, also for a URL that is refused (stored, never fetched).
async fn recording_event(
    state: &AppState,
    map: &Map<String, Value>,
) -> Result<HttpResponse, ApiError> {
    let event = RecordingEvent::parse(map).map_err(|e| {
        tracing::warn!(error = %e, "refused a malformed recording event");
        ApiError::bad_request(format!(
            "malformed recording event: {}",
            mask_digit_runs(&e)
        ))
    })?;
    let config = &state.recordings;
    let archive = match config.origin.check(&event.recording_url) {
        Err(refused) => {
            metrics::counter!("recording_urls_refused_total", "reason" => refused.reason())
                .increment(1);
            tracing::warn!(
                recording_uuid = %event.recording_uuid,
                conversation_uuid = %event.conversation_uuid,
                url = %loggable(&event.recording_url),
                reason = %refused,
                "a recording event names a URL that is not Vonage's API: stored, never fetched"
            );
            ArchiveState::Refused
        }
        Ok(_) if config.archive_dir.is_some() && config.client.is_some() => ArchiveState::Pending,
        Ok(_) => ArchiveState::None,
    };
    let new = recordings::insert(
        &state.pool,
        &NewRecording {
            recording_uuid: event.recording_uuid.clone(),
            conversation_uuid: event.conversation_uuid.clone(),
            recording_url: event.recording_url,
            size_bytes: event.size,
            start_time: event.start_time,
            end_time: event.end_time,
            archive,
        },
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "could not store a recording event");
        ApiError::from(e)
    })?;
    let result = if new { "stored" } else { "duplicate" };
    metrics::counter!("recording_events_total", "result" => result).increment(1);
    tracing::info!(
        recording_uuid = %event.recording_uuid,
        conversation_uuid = %event.conversation_uuid,
        archive = archive.as_str(),
        result,
        "recording event received"
    );
    if new && archive == ArchiveState::Pending {
        config.wake.notify_one();
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Where a recording stands in the archive.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveStateName {
    /// Not archived: served from Vonage.
    NotArchived,
    /// Waiting to be downloaded to the archive (served from Vonage meanwhile).
    Pending,
    /// In the archive, and served from it.
    Archived,
    /// The downloads failed; served from Vonage.
    Failed,
    /// Deleted after `RECORDING_RETENTION_DAYS`: no longer served.
    Purged,
    /// The event's URL is not on Vonage's API hosts: never fetched, never served.
    Refused,
}

impl From<ArchiveState> for ArchiveStateName {
    fn from(s: ArchiveState) -> Self {
        match s {
            ArchiveState::None => Self::NotArchived,
            ArchiveState::Pending => Self::Pending,
            ArchiveState::Archived => Self::Archived,
            ArchiveState::Failed => Self::Failed,
            ArchiveState::Purged => Self::Purged,
            ArchiveState::Refused => Self::Refused,
        }
    }
}

/// A call's recording, as Vonage reported it, and where it is kept. The audio itself is at
/// `GET /v1/calls/{id}/recording`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecordingResponse {
    /// Vonage's id of the recording.
    pub recording_uuid: String,
    /// Its size in bytes, as Vonage reported it.
    #[schema(required = true, minimum = 0)]
    pub size: Option<i64>,
    #[schema(required = true)]
    pub start_time: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub end_time: Option<DateTime<Utc>>,
    /// When the recording's event arrived.
    pub received_at: DateTime<Utc>,
    pub archive_state: ArchiveStateName,
    /// When it was archived.
    #[schema(required = true)]
    pub archived_at: Option<DateTime<Utc>>,
    /// When retention deleted it.
    #[schema(required = true)]
    pub purged_at: Option<DateTime<Utc>>,
}

impl From<Recording> for RecordingResponse {
    fn from(r: Recording) -> Self {
        Self {
            recording_uuid: r.recording_uuid,
            size: r.size_bytes,
            start_time: r.start_time,
            end_time: r.end_time,
            received_at: r.received_at,
            archive_state: r.archive_state.into(),
            archived_at: r.archived_at,
            purged_at: r.purged_at,
        }
    }
}

/// The latest recording of a call with this conversation, for `GET /v1/calls/{id}`.
pub async fn of_conversation(
    state: &AppState,
    conversation_uuid: Option<&str>,
) -> Result<Option<RecordingResponse>, ApiError> {
    let Some(conversation) = conversation_uuid else {
        return Ok(None);
    };
    Ok(
        recordings::latest_of_conversation(&state.pool, conversation)
            .await?
            .map(RecordingResponse::from),
    )
}

/// `GET /v1/calls/{id}/recording`: the call's recording, streamed. Scope `recordings:read`.
#[utoipa::path(
    get,
    path = "/v1/calls/{id}/recording",
    tag = "calls",
    params(("id" = Uuid, Path, description = "The call's id.")),
    responses(
        (status = 200, description = "The recording's audio (`audio/mpeg` for the NCCO's `mp3`), \
            with its `Content-Length` when known: from the archive, or streamed from Vonage.",
            content(
                (String = "audio/mpeg"),
                (String = "audio/wav"),
                (String = "audio/ogg"),
                (String = "application/octet-stream"),
            )),
        (status = 400, description = "The id is not a UUID."),
        (status = 404, description = "No such call, or the call has no recording."),
        (status = 409, description = "The recording's URL is not on Vonage's API hosts; it is never fetched."),
        (status = 410, description = "The archived recording was deleted after `RECORDING_RETENTION_DAYS`."),
        (status = 502, description = "Vonage did not deliver the recording."),
        (status = 503, description = "The database is unavailable, or the service has no Vonage application credentials (`VONAGE_APPLICATION_ID`, `VONAGE_PRIVATE_KEY_PATH`) to fetch recordings with."),
    ),
    security(("bearer" = ["recordings:read"]))
)]
pub async fn get_recording(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_call_id(&path)?;
    let call = calls::get(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no call {id}")))?;
    let no_recording = || ApiError::not_found(format!("call {id} has no recording"));
    let conversation = call.conversation_uuid.ok_or_else(no_recording)?;
    let recording = recordings::latest_of_conversation(&state.pool, &conversation)
        .await?
        .ok_or_else(no_recording)?;
    let config = &state.recordings;
    match recording.archive_state {
        ArchiveState::Refused => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "recording-url-refused",
                "Recording not fetched",
                "the recording's event named a URL that is not on Vonage's API hosts; it is \
                 never fetched",
            ));
        }
        ArchiveState::Purged => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "recording-purged",
                "Recording deleted",
                "the archived recording was deleted after RECORDING_RETENTION_DAYS",
            ));
        }
        ArchiveState::Archived => {
            if let (Some(dir), Some(file)) = (&config.archive_dir, &recording.archive_file) {
                let content_type = recording.content_type.as_deref().unwrap_or("audio/mpeg");
                match serve_file(&dir.join(file), content_type).await {
                    Ok(response) => {
                        metrics::counter!("recording_streams_total", "source" => "archive")
                            .increment(1);
                        return Ok(response);
                    }
                    Err(e) => tracing::warn!(
                        recording_uuid = %recording.recording_uuid,
                        error = %e,
                        "an archived recording cannot be read; fetching it from Vonage"
                    ),
                }
            }
        }
        ArchiveState::None | ArchiveState::Pending | ArchiveState::Failed => {}
    }
    let client = config.client.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "recordings-not-configured",
            "Recordings not available",
            "the service has no Vonage application credentials to fetch recordings with: set \
             VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY_PATH",
        )
    })?;
    stream_from_vonage(client, &recording).await
}

/// Streams an archived file, with its length.
async fn serve_file(path: &Path, content_type: &str) -> std::io::Result<HttpResponse> {
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = web::BytesMut::with_capacity(FILE_CHUNK);
        match file.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(buf.freeze()), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .body(SizedStream::new(len, Box::pin(chunks))))
}

/// Streams the recording from Vonage: its `Content-Type` and `Content-Length` passed on. Vonage
/// not delivering it is a 502.
async fn stream_from_vonage(
    client: &VonageClient,
    recording: &Recording,
) -> Result<HttpResponse, ApiError> {
    let failed = |e: &FetchError| {
        metrics::counter!("recording_stream_failures_total", "reason" => e.reason()).increment(1);
        tracing::warn!(
            recording_uuid = %recording.recording_uuid,
            error = %e,
            "could not fetch a recording from Vonage"
        );
    };
    let media = match client.fetch(&recording.recording_url, FETCH_TIMEOUT).await {
        Ok(media) => media,
        Err(e @ FetchError::Refused(_)) => {
            failed(&e);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "recording-url-refused",
                "Recording not fetched",
                format!(
                    "the recording's URL is not on {}; it is never fetched",
                    client.origin().describe()
                ),
            ));
        }
        Err(e) => {
            failed(&e);
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "recording-fetch-failed",
                "Vonage did not deliver the recording",
                format!("fetching the recording from Vonage failed: {e}"),
            ));
        }
    };
    metrics::counter!("recording_streams_total", "source" => "vonage").increment(1);
    let content_type = media
        .content_type
        .clone()
        .unwrap_or_else(|| "audio/mpeg".to_owned());
    let length = media.content_length;
    let body = media.into_stream(STREAM_IDLE_TIMEOUT);
    let mut response = HttpResponse::Ok();
    response.content_type(content_type);
    Ok(match length {
        Some(len) => response.body(SizedStream::new(len, Box::pin(body))),
        None => response.streaming(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RecordingEvent, String> {
        match v {
            Value::Object(map) => RecordingEvent::parse(&map),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_recording_event_is_read_from_json_or_query_strings() {
        let json = parse(json!({
            "start_time": "2020-01-01T12:00:00.000Z",
            "recording_url": "https://api.nexmo.com/v1/files/aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "size": 12222,
            "recording_uuid": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "end_time": "2020-01-01T12:01:00.000Z",
            "conversation_uuid": "CON-aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
            "timestamp": "2020-01-01T14:00:00.000Z"
        }))
        .unwrap();
        assert_eq!(json.size, Some(12222));
        assert!(json.start_time.is_some() && json.end_time.is_some());
        let query = parse(json!({
            "start_time": "2020-07-14T01:23:04Z", "size": "12222",
            "recording_url": "https://api.nexmo.com/v1/files/x",
            "recording_uuid": "x", "conversation_uuid": "CON-1"
        }))
        .unwrap();
        assert_eq!(query.size, Some(12222));
        assert_eq!(query.end_time, None);
    }

    #[test]
    fn a_recording_event_without_its_ids_or_with_a_path_in_its_uuid_is_malformed() {
        let base = json!({"recording_url": "https://api.nexmo.com/v1/files/x",
                          "recording_uuid": "x", "conversation_uuid": "CON-1"});
        for (field, value) in [
            ("recording_uuid", json!("../../etc/passwd")),
            ("recording_uuid", json!("")),
            ("recording_uuid", json!(7)),
            ("conversation_uuid", Value::Null),
            ("recording_url", json!("x".repeat(3000))),
            ("size", json!(-1)),
            ("size", json!("big")),
            ("start_time", json!("yesterday")),
        ] {
            let mut event = base.clone();
            event[field] = value;
            assert!(parse(event).is_err(), "{field}");
        }
    }

    #[test]
    fn a_logged_url_has_no_query_nor_credentials_nor_numbers() {
        assert_eq!(
            loggable("https://user:secret@evil.example.com/a/b?token=secret#x"),
            "https://evil.example.com/a/b"
        );
        assert_eq!(
            loggable("https://evil.example.com/16465550101"),
            "https://evil.example.com/***0101"
        );
    }
}
