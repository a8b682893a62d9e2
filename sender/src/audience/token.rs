//! Device tokens: validation and the compact in-memory encodings.
//!
//! APNs tokens are 32 bytes written as 64 hex characters; we keep the 32 raw
//! bytes. FCM registration tokens are text over the base64url alphabet plus
//! `:` (typically `<22-char instance id>:APA91b<134 chars>`, 163 characters).
//! Kept as text they would cost one byte per character; packed at 6 bits per
//! character with the single `:` stored as a position, a 163-character token
//! takes 3 header bytes + 122 payload bytes instead of 163. Tokens that do not
//! fit that shape (more than one `:`) are kept raw, so no valid token is
//! refused for the sake of the encoding.

use std::fmt;

/// Longest FCM token we accept. FCM documents no maximum; real tokens are
/// 140-200 characters, so anything past 4 KiB is data corruption.
pub const FCM_MAX_TOKEN_LEN: usize = 4096;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// An APNs token that is not exactly 64 hexadecimal characters.
    ApnsFormat,
    /// An empty FCM token.
    FcmEmpty,
    /// An FCM token longer than [`FCM_MAX_TOKEN_LEN`].
    FcmTooLong,
    /// An FCM token with a character outside `[A-Za-z0-9_:-]`.
    FcmAlphabet,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ApnsFormat => "APNs token is not 64 hexadecimal characters",
            Self::FcmEmpty => "FCM token is empty",
            Self::FcmTooLong => "FCM token is longer than 4096 characters",
            Self::FcmAlphabet => "FCM token has a character outside [A-Za-z0-9_:-]",
        })
    }
}

/// Parses an APNs token (64 hex characters, either case) into its 32 bytes.
pub fn parse_apns(text: &str) -> Result<[u8; 32], TokenError> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return Err(TokenError::ApnsFormat);
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = hex_value(pair[0]).ok_or(TokenError::ApnsFormat)?;
        let lo = hex_value(pair[1]).ok_or(TokenError::ApnsFormat)?;
        out[i] = (hi << 4) | lo;
    }
    Ok(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX_PAIRS: [[u8; 2]; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [digits[i >> 4], digits[i & 15]];
        i += 1;
    }
    table
};

/// Writes the 64 lowercase hex characters of an APNs token.
#[inline]
pub fn apns_hex(token: &[u8; 32], out: &mut [u8; 64]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(token) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

/// Checks an FCM token's length and alphabet.
pub fn validate_fcm(text: &str) -> Result<(), TokenError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(TokenError::FcmEmpty);
    }
    if bytes.len() > FCM_MAX_TOKEN_LEN {
        return Err(TokenError::FcmTooLong);
    }
    if bytes.iter().all(|&c| c == b':' || SIXBIT_OF[usize::from(c)] != INVALID) { Ok(()) } else { Err(TokenError::FcmAlphabet) }
}

/// The base64url alphabet in its standard order; index = 6-bit code.
pub const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const INVALID: u8 = 0xFF;
const SIXBIT_OF: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[BASE64URL[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Two characters per 12-bit value: a 3-byte group decodes with two lookups
/// into an 8 KB table that stays in L1, instead of four.
const PAIRS: [[u8; 2]; 4096] = {
    let mut table = [[0u8; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        table[i] = [BASE64URL[i >> 6], BASE64URL[i & 63]];
        i += 1;
    }
    table
};

/// Bytes of header in front of every encoded FCM token: the character count
/// (15 bits) with a raw flag in the top bit, then the position of the `:`
/// (`NO_COLON` when there is none).
pub const FCM_HEADER_LEN: usize = 3;
const RAW_FLAG: u16 = 0x8000;
const NO_COLON: u8 = 0xFF;

/// Appends the encoding of a validated FCM token to `arena`.
///
/// The caller must have checked the token with [`validate_fcm`].
pub fn encode_fcm(text: &str, arena: &mut Vec<u8>) {
    let bytes = text.as_bytes();
    debug_assert!(validate_fcm(text).is_ok());
    let len = u16::try_from(bytes.len()).expect("validated FCM token length fits u16");
    let mut colons = bytes.iter().enumerate().filter(|(_, c)| **c == b':');
    let colon = colons.next().map(|(i, _)| i);
    // One `:` is expected and cheap to record; a position past 254 or a second
    // `:` falls back to raw bytes rather than refusing a token FCM might issue.
    let packable = colons.next().is_none() && colon.is_none_or(|i| i < usize::from(NO_COLON));
    if !packable {
        arena.extend_from_slice(&(len | RAW_FLAG).to_le_bytes());
        arena.push(NO_COLON);
        arena.extend_from_slice(bytes);
        return;
    }
    arena.extend_from_slice(&len.to_le_bytes());
    arena.push(colon.map_or(NO_COLON, |i| i as u8));
    let mut codes = bytes.iter().filter(|c| **c != b':').map(|c| SIXBIT_OF[usize::from(*c)]);
    while let Some(a) = codes.next() {
        let b = codes.next();
        let c = codes.next();
        let d = codes.next();
        let word = (u32::from(a) << 18) | (u32::from(b.unwrap_or(0)) << 12) | (u32::from(c.unwrap_or(0)) << 6) | u32::from(d.unwrap_or(0));
        // Only the bytes that carry bits of real characters are stored.
        let used = match (b, c, d) {
            (None, _, _) => 1,
            (Some(_), None, _) => 2,
            _ => 3,
        };
        arena.extend_from_slice(&word.to_be_bytes()[1..1 + used]);
        if d.is_none() {
            break;
        }
    }
}

/// Number of bytes an encoded FCM token occupies, header included, given the
/// start of its encoding.
pub fn fcm_encoded_len(entry: &[u8]) -> usize {
    let (len, raw, colon) = fcm_header(entry);
    FCM_HEADER_LEN + if raw { len } else { packed_len(len - usize::from(colon.is_some())) }
}

fn packed_len(chars: usize) -> usize {
    (chars * 6).div_ceil(8)
}

fn fcm_header(entry: &[u8]) -> (usize, bool, Option<usize>) {
    let word = u16::from_le_bytes([entry[0], entry[1]]);
    let colon = (entry[2] != NO_COLON).then_some(usize::from(entry[2]));
    (usize::from(word & !RAW_FLAG), word & RAW_FLAG != 0, colon)
}

/// Decodes an encoded FCM token into `out` (cleared first) and returns it as
/// text. `entry` starts at the token's header.
#[inline]
pub fn decode_fcm<'a>(entry: &[u8], out: &'a mut Vec<u8>) -> &'a str {
    let (len, raw, colon) = fcm_header(entry);
    out.clear();
    let body = &entry[FCM_HEADER_LEN..];
    if raw {
        out.extend_from_slice(&body[..len]);
    } else {
        let chars = len - usize::from(colon.is_some());
        out.resize(len, 0);
        let dst = &mut out[..chars];
        let groups = chars / 4;
        for (g, quad) in dst[..groups * 4].chunks_exact_mut(4).enumerate() {
            let s = &body[g * 3..g * 3 + 3];
            let word = (usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]);
            quad[..2].copy_from_slice(&PAIRS[word >> 12]);
            quad[2..].copy_from_slice(&PAIRS[word & 0xFFF]);
        }
        let rest = chars - groups * 4;
        if rest > 0 {
            let s = &body[groups * 3..];
            let mut word = u32::from(s[0]) << 16;
            if rest > 1 {
                word |= u32::from(s[1]) << 8;
            }
            if rest > 2 {
                word |= u32::from(s[2]);
            }
            for k in 0..rest {
                dst[groups * 4 + k] = BASE64URL[(word >> (18 - 6 * k)) as usize & 63];
            }
        }
        if let Some(at) = colon {
            out.copy_within(at..chars, at + 1);
            out[at] = b':';
        }
    }
    // The alphabet is ASCII by construction (validated on the way in).
    std::str::from_utf8(out).expect("FCM tokens are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(token: &str) -> String {
        let mut arena = vec![0xAA]; // a byte before, to catch offset mistakes
        encode_fcm(token, &mut arena);
        assert_eq!(fcm_encoded_len(&arena[1..]), arena.len() - 1, "length for {token:?}");
        let mut out = Vec::new();
        decode_fcm(&arena[1..], &mut out).to_owned()
    }

    #[test]
    fn apns_tokens_parse_and_print() {
        let text = "00ff10AB".repeat(8);
        let raw = parse_apns(&text).unwrap();
        assert_eq!(raw[1], 0xff);
        let mut hex = [0u8; 64];
        apns_hex(&raw, &mut hex);
        assert_eq!(std::str::from_utf8(&hex).unwrap(), text.to_lowercase());
        assert_eq!(parse_apns(&"0".repeat(63)), Err(TokenError::ApnsFormat));
        assert_eq!(parse_apns(&format!("{}g", "0".repeat(63))), Err(TokenError::ApnsFormat));
    }

    #[test]
    fn fcm_validation_reasons() {
        assert_eq!(validate_fcm(""), Err(TokenError::FcmEmpty));
        assert_eq!(validate_fcm(&"a".repeat(4097)), Err(TokenError::FcmTooLong));
        assert_eq!(validate_fcm("abc def"), Err(TokenError::FcmAlphabet));
        assert_eq!(validate_fcm("abc+def"), Err(TokenError::FcmAlphabet));
        assert!(validate_fcm("dGVzdA:APA91b-_x").is_ok());
    }

    #[test]
    fn fcm_tokens_roundtrip_in_every_shape() {
        let typical = format!("{}:APA91b{}", "cK3tQ-_9xYz0123456789A", "Zz09-_".repeat(22) + "ab");
        assert_eq!(typical.len(), 163);
        for token in [
            typical.as_str(),
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            ":",
            ":abc",
            "abc:",
            "a:b:c",
            "APA91bHPRgkF3JUikC4ENAHEeMrd41Zxv3hVZjC9KtT8OvPVGJ-hQMRKRrZuJAEcl7B338qju59zJMjw2DELjzEvxwYv7hH5Ynpc1ODQ0aT4U4OFEeco8ohsN5PjL1iC2dNtk2BAokeMCg2ZXKqpc8FXKmhX94kIxQ",
        ] {
            assert_eq!(roundtrip(token), token);
        }
        let long_colon = format!("{}:x", "a".repeat(300));
        assert_eq!(roundtrip(&long_colon), long_colon);
    }

    #[test]
    fn typical_fcm_token_packs_below_its_text_size() {
        let token = format!("{}:APA91b{}", "A".repeat(22), "b".repeat(134));
        let mut arena = Vec::new();
        encode_fcm(&token, &mut arena);
        assert_eq!(arena.len(), FCM_HEADER_LEN + 122);
    }
}
