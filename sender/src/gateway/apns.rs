//! The gateway's APNs side: validates a request as APNs does and answers
//! with APNs's statuses and `{"reason": ...}` bodies.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use super::{Faults, Incoming, Reply, State};
use crate::audience::{Platform, token};
use crate::campaign::MAX_PAYLOAD_BYTES;
use crate::push::auth::{parse_jwt, unix_now, verify_es256};

const PUSH_TYPES: [&str; 11] =
    ["alert", "background", "location", "voip", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk", "widgets", "controls"];
/// APNs refuses a new provider token on a connection sooner than this.
pub const MIN_TOKEN_SWITCH: Duration = Duration::from_secs(20 * 60);

/// What one connection remembers about provider tokens.
#[derive(Debug, Default)]
pub struct ApnsConn {
    token: Option<HeaderValue>,
    iat: u64,
    adopted_at: Option<Instant>,
    key_id: Option<String>,
}

fn error(status: u16, reason: &str, id: &HeaderValue) -> Reply {
    let body = if status == 410 {
        serde_json::json!({ "reason": reason, "timestamp": unix_now() * 1000 })
    } else {
        serde_json::json!({ "reason": reason })
    };
    Reply::json(status, &body).header("apns-id", id.clone())
}

fn is_uuid(v: &[u8]) -> bool {
    v.len() == 36 && v.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// Checks the provider token of a request on a connection.
fn check_token(state: &State, conn: &mut ApnsConn, headers: &HeaderMap, now: Instant) -> Result<(), (u16, &'static str)> {
    let value = headers.get(http::header::AUTHORIZATION).ok_or((403, "MissingProviderToken"))?;
    if conn.token.as_ref() == Some(value) {
        return if unix_now().saturating_sub(conn.iat) > 3600 { Err((403, "ExpiredProviderToken")) } else { Ok(()) };
    }
    let text = value.to_str().map_err(|_| (403, "InvalidProviderToken"))?;
    let jwt = text.strip_prefix("bearer ").or_else(|| text.strip_prefix("Bearer ")).ok_or((403, "InvalidProviderToken"))?;
    let parsed = parse_jwt(jwt).ok_or((403, "InvalidProviderToken"))?;
    let kid = parsed.header["kid"].as_str().unwrap_or_default().to_owned();
    if conn.key_id.as_ref().is_some_and(|k| *k != kid) {
        return Err((403, "UnrelatedKeyIdInToken"));
    }
    let key = &state.keys.apns;
    if parsed.header["alg"] != "ES256"
        || kid != key.key_id
        || parsed.claims["iss"] != key.team_id.as_str()
        || !verify_es256(&parsed, &state.apns_verifier)
    {
        return Err((403, "InvalidProviderToken"));
    }
    let iat = parsed.claims["iat"].as_u64().ok_or((403, "InvalidProviderToken"))?;
    let wall = unix_now();
    if iat > wall + 60 {
        return Err((403, "InvalidProviderToken"));
    }
    if wall - iat.min(wall) > 3600 {
        return Err((403, "ExpiredProviderToken"));
    }
    if conn.adopted_at.is_some_and(|t| now.saturating_duration_since(t) < MIN_TOKEN_SWITCH) {
        return Err((429, "TooManyProviderTokenUpdates"));
    }
    *conn = ApnsConn { token: Some(value.clone()), iat, adopted_at: Some(now), key_id: Some(kid) };
    Ok(())
}

/// Handles `POST /3/device/<token>`.
pub fn handle(state: &State, conn: &mut ApnsConn, req: &Incoming<'_>, faults: &mut Faults) -> Reply {
    let Incoming { method, path, headers, body, now } = *req;
    let id = match headers.get("apns-id") {
        Some(v) if is_uuid(v.as_bytes()) => v.clone(),
        Some(_) => return error(400, "BadMessageId", &state.new_apns_id()),
        None => state.new_apns_id(),
    };
    if *method != Method::POST {
        return error(405, "MethodNotAllowed", &id);
    }
    let Some(device) = path.strip_prefix("/3/device/") else { return error(404, "BadPath", &id) };
    if device.is_empty() {
        return error(400, "MissingDeviceToken", &id);
    }
    for name in ["apns-topic", "apns-push-type", "apns-priority", "apns-expiration", "apns-collapse-id", "apns-id", "authorization"] {
        if headers.get_all(name).iter().count() > 1 {
            return error(400, "DuplicateHeaders", &id);
        }
    }
    if let Err((status, reason)) = check_token(state, conn, headers, now) {
        return error(status, reason, &id);
    }
    if token::parse_apns(device).is_err() {
        return error(400, "BadDeviceToken", &id);
    }
    let Some(topic) = headers.get("apns-topic") else { return error(400, "MissingTopic", &id) };
    if topic.as_bytes() != state.keys.topic.as_bytes() {
        return error(400, "TopicDisallowed", &id);
    }
    let push_type = headers.get("apns-push-type").map(|v| v.to_str().unwrap_or(""));
    if push_type.is_some_and(|t| !PUSH_TYPES.contains(&t)) {
        return error(400, "InvalidPushType", &id);
    }
    let priority = headers.get("apns-priority").map(|v| v.as_bytes());
    if priority.is_some_and(|p| !matches!(p, b"10" | b"5" | b"1")) || (push_type == Some("background") && priority == Some(b"10")) {
        return error(400, "BadPriority", &id);
    }
    if headers.get("apns-expiration").is_some_and(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()).is_none()) {
        return error(400, "BadExpirationDate", &id);
    }
    if headers.get("apns-collapse-id").is_some_and(|v| v.len() > 64) {
        return error(400, "BadCollapseId", &id);
    }
    if body.is_empty() {
        return error(400, "PayloadEmpty", &id);
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return error(413, "PayloadTooLarge", &id);
    }
    if !has_aps_dictionary(body) {
        // Apple documents no reason for malformed JSON; this one is the
        // gateway's own and clients treat it as a bad request.
        return error(400, "BadPayload", &id);
    }
    if let Some(status) = faults.inject() {
        let reason = match status {
            429 => "TooManyRequests",
            500 => "InternalServerError",
            _ => "ServiceUnavailable",
        };
        let reply = error(status, reason, &id);
        return match state.config.retry_after {
            Some(s) if status != 500 => reply.header("retry-after", HeaderValue::from(s)),
            _ => reply,
        };
    }
    if state.is_unregistered(device) {
        return error(410, "Unregistered", &id);
    }
    let collapsible = headers.get("apns-collapse-id").is_some_and(|v| !v.is_empty());
    state.records.delivered(Platform::Ios, device.to_ascii_lowercase().as_bytes(), now, collapsible);
    Reply::new(200, Bytes::new()).header("apns-id", id)
}

/// True for a JSON object whose `aps` member is an object, checked without
/// building the document.
fn has_aps_dictionary(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Payload {
        #[allow(dead_code, reason = "only its presence and type are checked")]
        aps: super::AnyObject,
    }
    serde_json::from_slice::<Payload>(body).is_ok()
}
