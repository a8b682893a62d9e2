//! The gateway's FCM side: the OAuth token endpoint (JWT bearer grant) and
//! `messages:send`, validated as Google does and answered with Google's
//! error bodies.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};

use super::{Faults, Incoming, Reply, State};
use crate::audience::{Platform, token};
use crate::campaign::MAX_PAYLOAD_BYTES;
use crate::push::auth::{FCM_SCOPE, JWT_BEARER_GRANT, b64url, parse_jwt, rand_bytes, unix_now, verify_rs256};

/// What one connection remembers about access tokens.
#[derive(Debug, Default)]
pub struct FcmConn {
    token: Option<HeaderValue>,
    expires: Option<Instant>,
}

fn oauth_error(error: &str, description: &str) -> Reply {
    Reply::json(400, &serde_json::json!({ "error": error, "error_description": description }))
}

fn fcm_error(status: u16, grpc: &str, message: &str, code: Option<&str>) -> Reply {
    let mut error = serde_json::json!({ "code": status, "message": message, "status": grpc });
    if let Some(code) = code {
        error["details"] = serde_json::json!([{ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code }]);
    }
    Reply::json(status, &serde_json::json!({ "error": error }))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Handles `POST /token`.
pub fn token_endpoint(state: &State, method: &Method, body: &[u8]) -> Reply {
    if *method != Method::POST {
        return Reply::json(405, &serde_json::json!({ "error": "invalid_request", "error_description": "POST required" }));
    }
    let form: HashMap<String, String> = std::str::from_utf8(body)
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter_map(|(k, v)| Some((percent_decode(k)?, percent_decode(v)?)))
        .collect();
    if form.get("grant_type").map(String::as_str) != Some(JWT_BEARER_GRANT) {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = form.get("assertion") else { return oauth_error("invalid_request", "Missing required parameter: assertion") };
    let Some(jwt) = parse_jwt(assertion) else { return oauth_error("invalid_grant", "Invalid JWT: malformed.") };
    let account = &state.keys.service_account;
    if jwt.header["alg"] != "RS256" || !verify_rs256(&jwt, &state.fcm_verifier) {
        return oauth_error("invalid_grant", "Invalid JWT Signature.");
    }
    if jwt.claims["iss"] != account.client_email.as_str() {
        return oauth_error("invalid_grant", "Invalid email or User ID");
    }
    if jwt.claims["aud"] != account.token_uri.as_str() {
        return oauth_error("invalid_grant", "Invalid JWT: Failed audience check.");
    }
    let scopes = jwt.claims["scope"].as_str().unwrap_or("");
    if !scopes.split(' ').any(|s| s == FCM_SCOPE || s == "https://www.googleapis.com/auth/cloud-platform") {
        return oauth_error("invalid_scope", "Invalid OAuth scope or ID token audience provided.");
    }
    let (iat, exp, now) = (jwt.claims["iat"].as_u64().unwrap_or(0), jwt.claims["exp"].as_u64().unwrap_or(0), unix_now());
    if exp <= iat || exp - iat > 3600 || now + 300 < iat || now > exp {
        return oauth_error(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    let token = format!("ya29.kickoff.{}", b64url(&rand_bytes::<24>()));
    let lifetime = state.config.token_lifetime;
    state.access_tokens.lock().expect("token lock").insert(token.clone(), Instant::now() + lifetime);
    Reply::json(200, &serde_json::json!({ "access_token": token, "expires_in": lifetime.as_secs(), "token_type": "Bearer" }))
}

fn check_access(state: &State, conn: &mut FcmConn, headers: &HeaderMap, now: Instant) -> bool {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else { return false };
    if conn.token.as_ref() == Some(value) && conn.expires.is_some_and(|e| now < e) {
        return true;
    }
    let Some(token) = value.to_str().ok().and_then(|t| t.strip_prefix("Bearer ")) else { return false };
    let expires = state.access_tokens.lock().expect("token lock").get(token).copied();
    match expires {
        Some(e) if now < e => {
            *conn = FcmConn { token: Some(value.clone()), expires: Some(e) };
            true
        }
        _ => false,
    }
}

#[derive(serde::Deserialize)]
struct SendBody<'a> {
    #[serde(borrow)]
    message: Option<Message<'a>>,
}

#[derive(serde::Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(default)]
    data: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow, default)]
    android: Option<Android<'a>>,
}

#[derive(serde::Deserialize)]
struct Notification<'a> {
    #[serde(borrow, default)]
    tag: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct Android<'a> {
    #[serde(borrow, default)]
    priority: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    ttl: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    collapse_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    notification: Option<Notification<'a>>,
}

fn valid_ttl(ttl: &str) -> bool {
    let Some(number) = ttl.strip_suffix('s') else { return false };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()) && frac.len() <= 9 && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Handles `POST /v1/projects/{project}/messages:send`.
pub fn send(state: &State, conn: &mut FcmConn, project: &str, req: &Incoming<'_>, faults: &mut Faults) -> Reply {
    let Incoming { method, headers, body, now, .. } = *req;
    if *method != Method::POST {
        return fcm_error(405, "INVALID_ARGUMENT", "POST required.", None);
    }
    if !check_access(state, conn, headers, now) {
        return fcm_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
        );
    }
    if project != state.keys.service_account.project_id {
        return fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", Some("SENDER_ID_MISMATCH"));
    }
    let Ok(parsed) = serde_json::from_slice::<SendBody<'_>>(body) else {
        return fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.", Some("INVALID_ARGUMENT"));
    };
    let Some(message) = parsed.message else {
        return fcm_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", Some("INVALID_ARGUMENT"));
    };
    let Some(device) = message.token else {
        return fcm_error(400, "INVALID_ARGUMENT", "Recipient of the message is not set.", Some("INVALID_ARGUMENT"));
    };
    if token::validate_fcm(&device).is_err() {
        return fcm_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
        );
    }
    if let Some(data) = &message.data
        && let Some(i) = data.values().position(|v| !v.is_string())
    {
        return fcm_error(
            400,
            "INVALID_ARGUMENT",
            &format!("Invalid value at 'message.data[{i}].value' (TYPE_STRING)"),
            Some("INVALID_ARGUMENT"),
        );
    }
    if let Some(android) = &message.android {
        if android.priority.as_deref().is_some_and(|p| p != "NORMAL" && p != "HIGH") {
            return fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.android.priority'", Some("INVALID_ARGUMENT"));
        }
        if android.ttl.as_deref().is_some_and(|t| !valid_ttl(t)) {
            return fcm_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration)",
                Some("INVALID_ARGUMENT"),
            );
        }
    }
    // The limit is on the message, which the token does not count against.
    if body.len().saturating_sub(device.len() + 32) > MAX_PAYLOAD_BYTES {
        return fcm_error(400, "INVALID_ARGUMENT", "Android message is too big", Some("INVALID_ARGUMENT"));
    }
    if let Some(status) = faults.inject() {
        let (grpc, code) = match status {
            429 => ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
            500 => ("INTERNAL", "INTERNAL"),
            _ => ("UNAVAILABLE", "UNAVAILABLE"),
        };
        let reply = fcm_error(status, grpc, "The service is overloaded or quota is exceeded.", Some(code));
        return match state.config.retry_after {
            Some(s) if status != 500 => reply.header("retry-after", HeaderValue::from(s)),
            _ => reply,
        };
    }
    if state.is_unregistered(&device) {
        return fcm_error(404, "NOT_FOUND", "Requested entity was not found.", Some("UNREGISTERED"));
    }
    let non_empty = |k: &Option<Cow<'_, str>>| k.as_deref().is_some_and(|k| !k.is_empty());
    let collapsible = message.android.as_ref().is_some_and(|a| non_empty(&a.collapse_key))
        || message.android.as_ref().and_then(|a| a.notification.as_ref()).is_some_and(|n| non_empty(&n.tag));
    state.records.delivered(Platform::Android, device.as_bytes(), now, collapsible);
    let id = state.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Reply::json(200, &serde_json::json!({ "name": format!("projects/{project}/messages/0:{:x}{id:08x}", state.id_prefix) }))
}

/// Lifetime of issued access tokens (Google's is an hour).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_durations_follow_the_protobuf_format() {
        for ok in ["0s", "3600s", "3.5s", "1.000000001s"] {
            assert!(valid_ttl(ok), "{ok}");
        }
        for bad in ["3600", "s", "1.5m", "-1s", "1.0000000001s"] {
            assert!(!valid_ttl(bad), "{bad}");
        }
        assert_eq!(percent_decode("a%3Ab+c").as_deref(), Some("a:b c"));
    }
}
