//! The exact bytes sent per locale and platform, rendered once at warm-up.
//!
//! An APNs body is the same for every device of a locale; the token goes in
//! the request path. An FCM v1 body carries the token inside the JSON, so it
//! is kept as the bytes before and after the token: sending is then two
//! copies and the token, no JSON work per device. Tokens need no escaping:
//! both alphabets are plain ASCII without quotes or backslashes.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{AndroidPriority, Campaign, CampaignError, MAX_PAYLOAD_BYTES, Mode};
use crate::audience::Platform;

/// Stands in for the token while rendering an FCM body; split out afterwards.
const TOKEN_MARK: &str = "\u{1}KICKOFF-TOKEN\u{1}";

/// One locale's payload for one platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPayload {
    /// The message locale it was rendered from.
    pub locale: String,
    /// APNs or FCM.
    pub platform: Platform,
    /// APNs: the whole body (shared by every request, never copied). FCM:
    /// the body up to the token.
    pub head: Bytes,
    /// FCM: the body after the token. APNs: empty.
    pub tail: Bytes,
    /// Payload size as the provider counts it against its 4096-byte limit
    /// (for FCM, the message without the token).
    pub size: usize,
}

impl RenderedPayload {
    /// Writes the request body for `token` into `out` (cleared first).
    #[inline]
    pub fn write_body(&self, token: &str, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head);
        if self.platform == Platform::Android {
            out.extend_from_slice(token.as_bytes());
            out.extend_from_slice(&self.tail);
        }
    }

    /// The body for `token` as text, for previews and the test-send.
    pub fn body_for(&self, token: &str) -> String {
        let mut out = Vec::new();
        self.write_body(token, &mut out);
        String::from_utf8(out).expect("rendered JSON is UTF-8")
    }
}

/// Every locale's payloads, addressed by index.
#[derive(Debug, Clone)]
pub struct Payloads {
    locales: Vec<String>,
    ios: Vec<RenderedPayload>,
    android: Vec<RenderedPayload>,
}

impl Payloads {
    /// Renders every message for both platforms and checks the size limits.
    pub fn render(c: &Campaign) -> Result<Self, CampaignError> {
        let mut out = Self { locales: Vec::new(), ios: Vec::new(), android: Vec::new() };
        for locale in c.messages.keys() {
            let ios = render_apns(c, locale);
            let android = render_fcm(c, locale);
            for p in [&ios, &android] {
                if p.size > MAX_PAYLOAD_BYTES {
                    return Err(CampaignError::PayloadTooLarge {
                        path: c.source.clone(),
                        line: c.message_line(locale),
                        locale: locale.clone(),
                        platform: p.platform,
                        size: p.size,
                        limit: MAX_PAYLOAD_BYTES,
                    });
                }
            }
            out.locales.push(locale.clone());
            out.ios.push(ios);
            out.android.push(android);
        }
        Ok(out)
    }

    /// Index of a message locale.
    pub fn index_of(&self, message_locale: &str) -> Option<usize> {
        self.locales.iter().position(|l| l == message_locale)
    }

    /// The message locales, by index.
    pub fn locales(&self) -> &[String] {
        &self.locales
    }

    /// Payload `index` of a platform.
    #[inline]
    pub fn get(&self, platform: Platform, index: usize) -> &RenderedPayload {
        match platform {
            Platform::Ios => &self.ios[index],
            Platform::Android => &self.android[index],
        }
    }
}

fn render_apns(c: &Campaign, locale: &str) -> RenderedPayload {
    let m = &c.messages[locale];
    let mut root = Map::new();
    let mut aps = Map::new();
    match c.mode {
        Mode::Alert => {
            aps.insert("alert".into(), json!({ "title": m.title, "body": m.body }));
            aps.insert("sound".into(), json!("default"));
            if m.image_url.is_some() {
                aps.insert("mutable-content".into(), json!(1));
            }
        }
        Mode::Silent => {
            aps.insert("content-available".into(), json!(1));
        }
    }
    root.insert("aps".into(), Value::Object(aps));
    if let Some(url) = &m.image_url {
        root.insert("image_url".into(), json!(url));
    }
    if let Some(link) = &m.deep_link {
        root.insert("deep_link".into(), json!(link));
    }
    for (k, v) in &m.data {
        root.insert(k.clone(), json!(v));
    }
    let head = serde_json::to_vec(&Value::Object(root)).expect("JSON");
    RenderedPayload { locale: locale.to_owned(), platform: Platform::Ios, size: head.len(), head: head.into(), tail: Bytes::new() }
}

fn fcm_message(c: &Campaign, locale: &str, token: Option<&str>) -> Value {
    let m = &c.messages[locale];
    let mut message = Map::new();
    if let Some(token) = token {
        message.insert("token".into(), json!(token));
    }
    let mut data = Map::new();
    if let Some(link) = &m.deep_link {
        data.insert("deep_link".into(), json!(link));
    }
    for (k, v) in &m.data {
        data.insert(k.clone(), json!(v));
    }
    let mut android = Map::new();
    android.insert(
        "priority".into(),
        json!(match c.fcm.priority {
            AndroidPriority::High => "HIGH",
            AndroidPriority::Normal => "NORMAL",
        }),
    );
    if let Some(ttl) = c.fcm.ttl {
        android.insert("ttl".into(), json!(format!("{}s", ttl.as_secs())));
    }
    if let Some(key) = &c.fcm.collapse_key {
        android.insert("collapse_key".into(), json!(key));
    }
    if c.mode == Mode::Alert {
        let mut notification = Map::new();
        notification.insert("title".into(), json!(m.title));
        notification.insert("body".into(), json!(m.body));
        if let Some(url) = &m.image_url {
            notification.insert("image".into(), json!(url));
        }
        message.insert("notification".into(), Value::Object(notification));
        // A second copy (a resumed fire) replaces the first in the tray:
        // the tag defaults to the campaign id.
        android.insert("notification".into(), json!({ "tag": c.fcm.collapse_key.as_deref().unwrap_or(&c.id) }));
    } else if m.data.is_empty() && m.deep_link.is_none() {
        // A data-only message needs at least one key to be delivered.
        data.insert("kickoff".into(), json!("rehearsal"));
    }
    if !data.is_empty() {
        message.insert("data".into(), Value::Object(data));
    }
    message.insert("android".into(), Value::Object(android));
    json!({ "message": message })
}

fn render_fcm(c: &Campaign, locale: &str) -> RenderedPayload {
    let text = serde_json::to_string(&fcm_message(c, locale, Some(TOKEN_MARK))).expect("JSON");
    let mark = serde_json::to_string(TOKEN_MARK).expect("JSON");
    let mark = &mark[1..mark.len() - 1];
    let at = text.find(mark).expect("the token mark is in the rendered message");
    let size = serde_json::to_vec(&fcm_message(c, locale, None)).expect("JSON").len();
    RenderedPayload {
        locale: locale.to_owned(),
        platform: Platform::Android,
        head: Bytes::copy_from_slice(&text.as_bytes()[..at]),
        tail: Bytes::copy_from_slice(&text.as_bytes()[at + mark.len()..]),
        size,
    }
}
