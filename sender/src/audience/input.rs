//! Reading audience files: CSV (with a header) and JSON Lines, one record per
//! physical line, every problem tied to its line number.
//!
//! The reader never holds more than one line: files of many gigabytes stream
//! through in constant memory, and a line over [`MAX_LINE_BYTES`] is skipped
//! without ever being buffered whole.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::Path;

use super::Platform;
use super::token::{self, TokenError};

/// Longest accepted line, newline excluded.
pub const MAX_LINE_BYTES: usize = 8 * 1024;
/// Longest accepted user id, locale and market.
pub const MAX_USER_ID_BYTES: usize = 256;
const MAX_LOCALE_BYTES: usize = 35;
const MAX_MARKET_BYTES: usize = 16;

/// The columns of an audience row, in the order of the CSV header we write.
pub const COLUMNS: [&str; 5] = ["user_id", "platform", "token", "locale", "market"];

/// The two accepted encodings of an audience file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header line naming the columns.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// Picks the format from the file name: `.jsonl`, `.ndjson` and `.json`
    /// are JSON Lines, anything else is CSV.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("jsonl" | "ndjson" | "json") => Self::Jsonl,
            _ => Self::Csv,
        }
    }
}

/// Why a line was rejected. The set is closed so reports can count by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The line is not valid UTF-8.
    InvalidUtf8,
    /// The line is longer than [`MAX_LINE_BYTES`].
    LineTooLong,
    /// The line is not a CSV record or JSON object of the expected shape.
    Malformed,
    /// A required field is absent or empty.
    MissingField,
    /// `platform` is neither `ios` nor `android`.
    UnknownPlatform,
    /// An APNs token that is not 64 hexadecimal characters.
    ApnsToken,
    /// An empty FCM token.
    FcmTokenEmpty,
    /// An FCM token over 4096 characters.
    FcmTokenTooLong,
    /// An FCM token with a character outside its alphabet.
    FcmTokenAlphabet,
    /// A user id, locale or market that is too long or has invalid characters.
    InvalidField,
    /// A token already seen earlier in the input; the first row is kept.
    DuplicateToken,
}

impl RejectReason {
    /// Every reason, in report order.
    pub const ALL: [Self; 11] = [
        Self::InvalidUtf8,
        Self::LineTooLong,
        Self::Malformed,
        Self::MissingField,
        Self::UnknownPlatform,
        Self::ApnsToken,
        Self::FcmTokenEmpty,
        Self::FcmTokenTooLong,
        Self::FcmTokenAlphabet,
        Self::InvalidField,
        Self::DuplicateToken,
    ];

    /// The stable snake_case name used in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "invalid_utf8",
            Self::LineTooLong => "line_too_long",
            Self::Malformed => "malformed",
            Self::MissingField => "missing_field",
            Self::UnknownPlatform => "unknown_platform",
            Self::ApnsToken => "apns_token",
            Self::FcmTokenEmpty => "fcm_token_empty",
            Self::FcmTokenTooLong => "fcm_token_too_long",
            Self::FcmTokenAlphabet => "fcm_token_alphabet",
            Self::InvalidField => "invalid_field",
            Self::DuplicateToken => "duplicate_token",
        }
    }
}

impl From<TokenError> for RejectReason {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::ApnsFormat => Self::ApnsToken,
            TokenError::FcmEmpty => Self::FcmTokenEmpty,
            TokenError::FcmTooLong => Self::FcmTokenTooLong,
            TokenError::FcmAlphabet => Self::FcmTokenAlphabet,
        }
    }
}

/// A rejected line: its reason and a human explanation (never the whole line,
/// which may be 8 KiB of garbage).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// 1-based line number in the input file.
    pub line: u64,
    /// The reason, for counting.
    pub reason: RejectReason,
    /// What exactly is wrong.
    pub detail: String,
}

/// A validated row, borrowing from the line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    /// The app's user id.
    pub user_id: Cow<'a, str>,
    /// The push platform.
    pub platform: Platform,
    /// The token, already checked for its platform's format.
    pub token: Cow<'a, str>,
    /// BCP 47 locale tag as given (for example `pt-BR`).
    pub locale: Cow<'a, str>,
    /// Market code (for example `BR`).
    pub market: Cow<'a, str>,
}

/// Checks the fields of one record and returns a [`Row`] or the reason it is
/// refused. Shared by both input formats and by the synthetic generator, so
/// every path into a snapshot applies the same rules.
pub fn validate<'a>(
    user_id: Option<Cow<'a, str>>,
    platform: Option<Cow<'a, str>>,
    token: Option<Cow<'a, str>>,
    locale: Option<Cow<'a, str>>,
    market: Option<Cow<'a, str>>,
) -> Result<Row<'a>, (RejectReason, String)> {
    fn required<'a>(name: &str, v: Option<Cow<'a, str>>) -> Result<Cow<'a, str>, (RejectReason, String)> {
        match v {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err((RejectReason::MissingField, format!("missing field `{name}`"))),
        }
    }
    let user_id = required("user_id", user_id)?;
    let platform_text = required("platform", platform)?;
    // An empty token is a token problem (the column is there), not a missing field.
    let token = token.ok_or_else(|| (RejectReason::MissingField, "missing field `token`".to_owned()))?;
    let locale = required("locale", locale)?;
    let market = required("market", market)?;

    let platform = Platform::parse(platform_text.trim()).ok_or_else(|| {
        (RejectReason::UnknownPlatform, format!("unknown platform {:?} (expected ios or android)", truncate(&platform_text, 20)))
    })?;
    let token_check = match platform {
        Platform::Ios => token::parse_apns(&token).map(drop),
        Platform::Android => token::validate_fcm(&token),
    };
    token_check.map_err(|e: TokenError| (e.into(), format!("{e} (token {})", token_preview(&token))))?;

    check_field("user_id", &user_id, MAX_USER_ID_BYTES, |c| !c.is_control())?;
    check_field("locale", &locale, MAX_LOCALE_BYTES, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_')?;
    check_field("market", &market, MAX_MARKET_BYTES, |c| c.is_ascii_alphanumeric() || c == '-' || c == '_')?;
    Ok(Row { user_id, platform, token, locale, market })
}

fn check_field(name: &str, value: &str, max: usize, ok: impl Fn(char) -> bool) -> Result<(), (RejectReason, String)> {
    if value.len() > max {
        return Err((RejectReason::InvalidField, format!("`{name}` is longer than {max} bytes")));
    }
    if let Some(c) = value.chars().find(|c| !ok(*c)) {
        return Err((RejectReason::InvalidField, format!("`{name}` {:?} has an invalid character {c:?}", truncate(value, 40))));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The first characters of a token for messages: enough to find the row,
/// not the whole credential-like string.
pub fn token_preview(token: &str) -> String {
    let head = truncate(token, 8);
    if head.len() < token.len() { format!("{head}… ({} chars)", token.chars().count()) } else { head.to_owned() }
}

/// One line handed out by [`LineReader`].
#[derive(Debug)]
pub enum Line<'a> {
    /// A line within the size limit, newline and trailing `\r` removed.
    Text(&'a [u8]),
    /// A line over [`MAX_LINE_BYTES`]; its bytes were skipped.
    TooLong,
}

/// Reads lines of at most [`MAX_LINE_BYTES`] from a buffered reader, counting
/// them from 1, without ever holding an over-long line in memory.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    line_no: u64,
}

impl<R: BufRead> LineReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, buf: Vec::with_capacity(512), line_no: 0 }
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns the next line and its 1-based number, or `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (take, done) = match memchr_newline(chunk) {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            if !too_long {
                // Allow one extra byte so a trailing `\r` does not count.
                if self.buf.len() + take > MAX_LINE_BYTES + 1 {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.inner.consume(take + usize::from(done));
            if done {
                break;
            }
        }
        if !saw_any {
            return Ok(None);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if too_long || self.buf.len() > MAX_LINE_BYTES {
            return Ok(Some((self.line_no, Line::TooLong)));
        }
        Ok(Some((self.line_no, Line::Text(&self.buf))))
    }
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// Column positions of a CSV file, read from its header line.
#[derive(Debug, Clone)]
pub struct CsvHeader {
    positions: [usize; 5],
    width: usize,
}

impl CsvHeader {
    /// Parses the header line. Column names are matched case-insensitively
    /// and may come in any order; extra columns are ignored.
    ///
    /// Errors are text: the compile puts them in its typed
    /// `AudienceError::Header` with the file and line (this parser sees
    /// neither).
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut fields = Vec::new();
        split_csv(line.trim_start_matches('\u{feff}'), &mut fields)?;
        let mut positions = [usize::MAX; 5];
        for (i, name) in fields.iter().enumerate() {
            if let Some(col) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name.trim())) {
                positions[col] = i;
            }
        }
        let missing: Vec<&str> = COLUMNS.iter().zip(positions).filter(|(_, p)| *p == usize::MAX).map(|(c, _)| *c).collect();
        if !missing.is_empty() {
            return Err(format!("the CSV header must name the columns {}; missing: {}", COLUMNS.join(", "), missing.join(", ")));
        }
        Ok(Self { positions, width: fields.len() })
    }

    /// Parses and validates one data line.
    pub fn row<'a>(&self, line: &'a str) -> Result<Row<'a>, (RejectReason, String)> {
        let mut cols: [Option<Cow<'a, str>>; 5] = Default::default();
        let mut count = 0;
        for (i, field) in CsvFields::new(line).enumerate() {
            let field = field.map_err(|e| (RejectReason::Malformed, e))?;
            if let Some(col) = self.positions.iter().position(|p| *p == i) {
                cols[col] = Some(field);
            }
            count = i + 1;
        }
        if count > self.width {
            return Err((RejectReason::Malformed, format!("expected {} fields, found {count}", self.width)));
        }
        let [user_id, platform, token, locale, market] = cols;
        validate(user_id, platform, token, locale, market)
    }
}

/// Splits one CSV record (RFC 4180 quoting, no embedded newlines).
///
/// Errors are text: a bad record is a rejected row, reported with its line
/// and reason in the compile report, never an error that stops the compile.
pub fn split_csv<'a>(line: &'a str, out: &mut Vec<Cow<'a, str>>) -> Result<(), String> {
    for field in CsvFields::new(line) {
        out.push(field?);
    }
    Ok(())
}

/// The fields of one CSV record, in order.
#[derive(Debug)]
pub struct CsvFields<'a> {
    line: &'a str,
    pos: usize,
    done: bool,
}

impl<'a> CsvFields<'a> {
    /// Iterates over the fields of `line`.
    pub fn new(line: &'a str) -> Self {
        Self { line, pos: 0, done: false }
    }

    /// Errors are text for the same reason as [`split_csv`]'s.
    fn quoted(&mut self) -> Result<Cow<'a, str>, String> {
        let bytes = self.line.as_bytes();
        let mut value = String::new();
        let mut j = self.pos + 1;
        loop {
            match bytes.get(j) {
                None => return Err("unterminated quoted field".to_owned()),
                Some(b'"') if bytes.get(j + 1) == Some(&b'"') => {
                    value.push('"');
                    j += 2;
                }
                Some(b'"') => break,
                Some(_) => {
                    let next = bytes[j + 1..].iter().position(|&b| b == b'"').map_or(bytes.len(), |p| j + 1 + p);
                    value.push_str(&self.line[j..next]);
                    j = next;
                }
            }
        }
        self.pos = j + 1;
        match bytes.get(self.pos) {
            None => self.done = true,
            Some(b',') => self.pos += 1,
            Some(_) => return Err("unexpected character after a closing quote".to_owned()),
        }
        Ok(Cow::Owned(value))
    }
}

impl<'a> Iterator for CsvFields<'a> {
    /// A field, or why the record is rejected (text: see [`split_csv`]).
    type Item = Result<Cow<'a, str>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let bytes = self.line.as_bytes();
        if bytes.get(self.pos) == Some(&b'"') {
            let field = self.quoted();
            if field.is_err() {
                self.done = true;
            }
            return Some(field);
        }
        let start = self.pos;
        let end = bytes[start..].iter().position(|&b| b == b',').map_or(bytes.len(), |p| start + p);
        if bytes[start..end].contains(&b'"') {
            self.done = true;
            return Some(Err("a quote inside an unquoted field".to_owned()));
        }
        if end == bytes.len() {
            self.done = true;
        } else {
            self.pos = end + 1;
        }
        Some(Ok(Cow::Borrowed(&self.line[start..end])))
    }
}

#[derive(serde::Deserialize)]
struct JsonRow<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    platform: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    locale: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    market: Option<Cow<'a, str>>,
}

/// Parses and validates one JSON Lines record.
pub fn json_row(line: &str) -> Result<Row<'_>, (RejectReason, String)> {
    let raw: JsonRow<'_> = serde_json::from_str(line).map_err(|e| {
        let text = e.to_string();
        // serde_json appends "at line 1 column N"; the line is ours to report.
        let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
        (RejectReason::Malformed, format!("not a JSON object of strings: {text}"))
    })?;
    validate(raw.user_id, raw.platform, raw.token, raw.locale, raw.market)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut r = LineReader::new(io::BufReader::with_capacity(16, input));
        let mut out = Vec::new();
        while let Some((n, l)) = r.next_line().unwrap() {
            out.push((
                n,
                match l {
                    Line::Text(t) => Some(t.to_vec()),
                    Line::TooLong => None,
                },
            ));
        }
        out
    }

    #[test]
    fn line_reader_counts_lines_and_skips_long_ones() {
        let long = vec![b'x'; MAX_LINE_BYTES + 1];
        let exact = vec![b'y'; MAX_LINE_BYTES];
        let mut input = b"a\r\nb\n".to_vec();
        input.extend_from_slice(&long);
        input.push(b'\n');
        input.extend_from_slice(&exact);
        input.extend_from_slice(b"\r\nlast");
        let got = lines(&input);
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], (1, Some(b"a".to_vec())));
        assert_eq!(got[1], (2, Some(b"b".to_vec())));
        assert_eq!(got[2], (3, None));
        assert_eq!(got[3], (4, Some(exact)));
        assert_eq!(got[4], (5, Some(b"last".to_vec())));
    }

    #[test]
    fn csv_splitting_handles_quotes() {
        let mut out = Vec::new();
        split_csv(r#"a,"b,c","d""e",,f"#, &mut out).unwrap();
        assert_eq!(out, vec!["a", "b,c", "d\"e", "", "f"]);
        out.clear();
        assert!(split_csv(r#"a,"b"#, &mut out).is_err());
        out.clear();
        assert!(split_csv(r#"a,b"c"#, &mut out).is_err());
    }

    #[test]
    fn header_in_any_order_and_missing_columns_named() {
        let h = CsvHeader::parse("market,locale,token,platform,user_id,extra").unwrap();
        let token = "ab".repeat(32);
        let line = format!("US,en-US,{token},ios,42,x");
        let row = h.row(&line).unwrap();
        assert_eq!(row.user_id, "42");
        assert_eq!(row.market, "US");
        let err = CsvHeader::parse("user_id,token").unwrap_err();
        assert!(err.contains("platform, locale, market"), "{err}");
    }

    #[test]
    fn every_field_rule_has_its_reason() {
        let h = CsvHeader::parse("user_id,platform,token,locale,market").unwrap();
        let apns = "0f".repeat(32);
        let cases = [
            (format!("1,ios,{apns},en-US"), RejectReason::MissingField),
            (format!(",ios,{apns},en-US,US"), RejectReason::MissingField),
            (format!("1,windows,{apns},en-US,US"), RejectReason::UnknownPlatform),
            ("1,ios,abc,en-US,US".to_owned(), RejectReason::ApnsToken),
            ("1,android,,en-US,US".to_owned(), RejectReason::FcmTokenEmpty),
            ("1,ios,,en-US,US".to_owned(), RejectReason::ApnsToken),
            ("1,android,ab cd,en-US,US".to_owned(), RejectReason::FcmTokenAlphabet),
            (format!("1,android,{},en-US,US", "a".repeat(4097)), RejectReason::FcmTokenTooLong),
            (format!("1,ios,{apns},en US,US"), RejectReason::InvalidField),
            (format!("1,ios,{apns},en-US,US,extra"), RejectReason::Malformed),
            (format!("1,ios,\"{apns},en-US,US"), RejectReason::Malformed),
        ];
        for (line, want) in cases {
            let got = h.row(&line).map(|_| ()).unwrap_err().0;
            assert_eq!(got, want, "{line}");
        }
        let no_token = validate(Some("1".into()), Some("android".into()), None, Some("en".into()), Some("US".into()));
        assert_eq!(no_token.unwrap_err().0, RejectReason::MissingField);
    }

    #[test]
    fn json_rows_parse_and_fail_clearly() {
        let apns = "0f".repeat(32);
        let line = format!(r#"{{"user_id":"7","platform":"IOS","token":"{apns}","locale":"de-DE","market":"DE","x":1}}"#);
        let row = json_row(&line).unwrap();
        assert_eq!(row.platform, Platform::Ios);
        assert_eq!(row.locale, "de-DE");
        let (reason, detail) = json_row(r#"{"user_id":7}"#).unwrap_err();
        assert_eq!(reason, RejectReason::Malformed);
        assert!(!detail.contains("at line"), "{detail}");
        assert_eq!(json_row(r#"{"user_id":"7"}"#).unwrap_err().0, RejectReason::MissingField);
    }
}
