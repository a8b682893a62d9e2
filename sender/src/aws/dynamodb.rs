//! The audience from DynamoDB, where the reference team kept it: a campaign
//! is a list of user ids, and each user's devices are items of a table (or
//! of one of its indexes) keyed by the user id.
//!
//! [`import`] reads them (BatchGetItem, 100 users a call, when the user id
//! is the table's whole key; a Query per user when devices are items under
//! the user's partition, or in an index; or a parallel Scan of the whole
//! table), in parallel, and writes every item as one JSON Lines row in a
//! canonical order (the user-id file's order, then the token), and compiles
//! that file exactly as `audience compile` compiles any audience file: the
//! snapshot is the one the same rows give from CSV. Items that cannot be
//! rows, and rows the compile refuses, are reported by user and token.
//!
//! Throttling (`ProvisionedThroughputExceededException`,
//! `ThrottlingException`, `RequestLimitExceeded`) is answered by backing off
//! with jitter and halving the number of requests in flight; it grows back
//! by one per 50 answers without throttling (AIMD). BatchGetItem's
//! `UnprocessedKeys` (DynamoDB's partial throttle) are asked again the same
//! way. The SDK's own retries are off for this client, so every throttle is
//! seen and counted here.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;

use super::AwsError;
use super::user_ids::{Key, canonical_integers};
use crate::audience::{self, AudienceError, CompileOptions, CompileReport};

pub use crate::audience::TableSpec;

/// Which items to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The devices of these users (BatchGetItem or a Query each, by the
    /// table's key schema).
    Users(Vec<String>),
    /// The whole table, in this many parallel Scan segments.
    Scan {
        /// Segments (1 to 1,000,000).
        segments: u32,
    },
}

/// How the items are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// BatchGetItem, 100 users a call: the user id is the table's whole key.
    BatchGet,
    /// A Query per user: devices under the user's partition, or in an index.
    Query,
    /// A parallel Scan of the whole table.
    Scan,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BatchGet => "batch-get",
            Self::Query => "query",
            Self::Scan => "scan",
        })
    }
}

/// Settings of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Requests in flight at most (throttling lowers it).
    pub concurrency: usize,
    /// The compile's settings (`max_listed` applies to the import's
    /// rejections too).
    pub compile: CompileOptions,
    /// Retries of one request that keeps being throttled.
    pub max_attempts: u32,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self { concurrency: 16, compile: CompileOptions { max_listed: 1000, ..CompileOptions::default() }, max_attempts: 12 }
    }
}

/// An item that is not an audience row, or a row the compile refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RejectedItem {
    /// The user id (the key read).
    pub user_id: String,
    /// The token, if the item had one.
    pub token: Option<String>,
    /// Why.
    pub reason: String,
}

/// What an import read and wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    /// Items read.
    pub items: u64,
    /// Users asked for with no item at all.
    pub missing_users: Vec<String>,
    /// Items not kept, by key and reason (the first `max_listed`).
    pub rejected: Vec<RejectedItem>,
    /// Requests answered "throttled" (each was backed off and sent again).
    pub throttled: u64,
    /// Calls sent again after a transient failure (a 5xx, a timeout, a
    /// lost connection).
    pub transient_retries: u64,
    /// The fewest requests in flight throttling brought it to.
    pub lowest_concurrency: usize,
    /// How the items were read.
    pub method: Method,
    /// The rows file the audience was compiled from.
    pub rows: PathBuf,
    /// The compile of those rows.
    pub compile: CompileReport,
}

/// Progress of a long import.
#[derive(Debug, Clone, Copy)]
pub struct ImportProgress {
    /// Pieces of work done: 100-user batches, users, or scan segments.
    pub done: u64,
    /// Of.
    pub total: u64,
    /// Items read so far.
    pub items: u64,
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A DynamoDB call failed (not throttling), or throttling outlasted
    /// every retry.
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// The rows could not be written or compiled.
    #[error(transparent)]
    Audience(#[from] AudienceError),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// One item as a row: the five columns, or why it cannot be one.
type Item = HashMap<String, AttributeValue>;

/// An attribute that cannot be a column.
#[derive(Debug, thiserror::Error)]
#[error("attribute `{name}` is {kind}, not a string")]
struct NotText {
    name: String,
    kind: &'static str,
}

fn text(item: &Item, name: &str) -> Result<Option<String>, NotText> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(s)) => Ok(Some(s.clone())),
        Some(AttributeValue::N(n)) => Ok(Some(n.clone())),
        Some(other) => Err(NotText { name: name.to_owned(), kind: kind(other) }),
    }
}

fn kind(v: &AttributeValue) -> &'static str {
    match v {
        AttributeValue::B(_) => "binary",
        AttributeValue::Bool(_) => "a boolean",
        AttributeValue::L(_) => "a list",
        AttributeValue::M(_) => "a map",
        AttributeValue::Ns(_) | AttributeValue::Ss(_) | AttributeValue::Bs(_) => "a set",
        _ => "of another type",
    }
}

/// The shared throttling state: the window of requests in flight.
#[derive(Debug)]
struct Pace {
    limit: AtomicUsize,
    lowest: AtomicUsize,
    max: usize,
    calm: AtomicU64,
    throttled: AtomicU64,
    /// Calls sent again after a transient failure (5xx, timeout, lost
    /// connection).
    transient: AtomicU64,
    /// When the window was last halved (ms since the epoch): one burst of
    /// throttles answered by the requests already in flight halves it once.
    last_cut_ms: AtomicU64,
}

impl Pace {
    fn new(max: usize) -> Self {
        Self {
            limit: AtomicUsize::new(max),
            lowest: AtomicUsize::new(max),
            max,
            calm: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            transient: AtomicU64::new(0),
            last_cut_ms: AtomicU64::new(0),
        }
    }

    fn throttle(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        self.calm.store(0, Ordering::Relaxed);
        let now = crate::clock::now_ms();
        let last = self.last_cut_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 200 || self.last_cut_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let halved = (self.limit.load(Ordering::Relaxed) / 2).max(1);
        self.limit.store(halved, Ordering::Relaxed);
        self.lowest.fetch_min(halved, Ordering::Relaxed);
    }

    /// Counts a retry of `kind`.
    fn retry(&self, kind: Retry) {
        match kind {
            Retry::Throttle => self.throttle(),
            Retry::Transient => {
                self.transient.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ok(&self) {
        if self.calm.fetch_add(1, Ordering::Relaxed) + 1 >= 50 {
            self.calm.store(0, Ordering::Relaxed);
            let l = self.limit.load(Ordering::Relaxed);
            self.limit.store((l + 1).min(self.max), Ordering::Relaxed);
        }
    }
}

/// How a failed call is retried: a throttle also halves the window; a
/// transient failure (a 5xx, a timeout, a connection lost) only backs off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    Throttle,
    Transient,
}

fn retryable<E: ProvideErrorMetadata>(
    e: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Retry> {
    use aws_sdk_dynamodb::error::SdkError;
    if throttling(e.code()) {
        return Some(Retry::Throttle);
    }
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Some(Retry::Transient),
        SdkError::ServiceError(s) if s.raw().status().is_server_error() => Some(Retry::Transient),
        _ => None,
    }
}

fn throttling(code: Option<&str>) -> bool {
    matches!(code, Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded"))
}

/// Backoff with full jitter between throttled attempts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    jitter: crate::rng::SplitMix64,
}

impl Backoff {
    fn new(pace: &Pace) -> Self {
        // Each request its own seed: requests started in the same
        // millisecond must not retry in step.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            next: Duration::from_millis(25),
            jitter: crate::rng::SplitMix64::new(crate::clock::now_ms() ^ n ^ pace.throttled.load(Ordering::Relaxed)),
        }
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next.mul_f64(self.jitter.next_f64())).await;
        self.next = (self.next * 2).min(Duration::from_secs(5));
    }
}

/// The items of up to 100 users by key (BatchGetItem); keys left
/// unprocessed are asked again, backing off, as throttles.
async fn batch_get(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    (users, key): (&[String], Key),
    pace: &Pace,
    max_attempts: u32,
) -> Result<Vec<Item>, AwsError> {
    use aws_sdk_dynamodb::types::KeysAndAttributes;
    let mut keys: Vec<Item> = users.iter().map(|u| HashMap::from([(spec.user_id.clone(), key.value(u))])).collect();
    let mut items = Vec::new();
    let mut backoff = Backoff::new(pace);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let request = KeysAndAttributes::builder().set_keys(Some(keys.clone())).build().map_err(|e| AwsError::Data(e.to_string()))?;
        match client.batch_get_item().request_items(&spec.table, request).send().await {
            Ok(out) => {
                let answered = out.responses.and_then(|mut r| r.remove(&spec.table)).unwrap_or_default();
                if !answered.is_empty() {
                    // Progress: the attempts count again from here.
                    attempt = 0;
                }
                items.extend(answered);
                keys = out.unprocessed_keys.and_then(|mut u| u.remove(&spec.table)).map(|k| k.keys).unwrap_or_default();
                if keys.is_empty() {
                    pace.ok();
                    return Ok(items);
                }
                if attempt >= max_attempts.max(1) {
                    return Err(AwsError::Data(format!(
                        "DynamoDB BatchGetItem on {}: {} keys still unprocessed after {attempt} attempts",
                        spec.table,
                        keys.len()
                    )));
                }
            }
            Err(e) => match retryable(&e) {
                Some(Retry::Transient) if attempt < max_attempts => {
                    pace.retry(Retry::Transient);
                    backoff.wait().await;
                    continue;
                }
                Some(Retry::Throttle) if attempt < max_attempts => {}
                _ => return Err(AwsError::call("DynamoDB", "BatchGetItem", e)),
            },
        }
        // Throttled, or keys left unprocessed (DynamoDB's partial throttle).
        pace.throttle();
        backoff.wait().await;
    }
}

/// One page of a Query or Scan, retried while throttled.
async fn page(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    (what, key): (&Work, Key),
    start: Option<Item>,
    pace: &Pace,
    max_attempts: u32,
) -> Result<(Vec<Item>, Option<Item>), AwsError> {
    let mut backoff = Backoff::new(pace);
    for attempt in 1.. {
        let result = match what {
            Work::User(uid) => client
                .query()
                .table_name(&spec.table)
                .set_index_name(spec.index.clone())
                .key_condition_expression("#u = :u")
                .expression_attribute_names("#u", &spec.user_id)
                .expression_attribute_values(":u", key.value(uid))
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .map(|o| (o.items.unwrap_or_default(), o.last_evaluated_key))
                .map_err(|e| (retryable(&e), AwsError::call("DynamoDB", "Query", e))),
            Work::Users(_) => unreachable!("BatchGetItem is read by batch_get"),
            Work::Segment(segment, total) => client
                .scan()
                .table_name(&spec.table)
                .set_index_name(spec.index.clone())
                .segment(*segment as i32)
                .total_segments(*total as i32)
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .map(|o| (o.items.unwrap_or_default(), o.last_evaluated_key))
                .map_err(|e| (retryable(&e), AwsError::call("DynamoDB", "Scan", e))),
        };
        match result {
            Ok(page) => {
                pace.ok();
                return Ok(page);
            }
            Err((Some(kind), _)) if attempt < max_attempts => {
                pace.retry(kind);
                backoff.wait().await;
            }
            Err((_, e)) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

#[derive(Debug, Clone)]
enum Work {
    /// Up to 100 users by key (BatchGetItem).
    Users(Vec<String>),
    /// One user's partition (Query).
    User(String),
    /// One segment of a Scan.
    Segment(u32, u32),
}

impl Work {
    /// The users this work reads, in the selection's order.
    fn users(&self) -> &[String] {
        match self {
            Work::Users(ids) => ids,
            Work::User(id) => std::slice::from_ref(id),
            Work::Segment(..) => &[],
        }
    }
}

/// Every item of one piece of work.
async fn read_all(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    (what, key): (&Work, Key),
    pace: &Pace,
    max_attempts: u32,
) -> Result<Vec<Item>, AwsError> {
    if let Work::Users(users) = what {
        return batch_get(client, spec, (users, key), pace, max_attempts).await;
    }
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let (page, next) = page(client, spec, (what, key), start, pace, max_attempts).await?;
        items.extend(page);
        match next {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(items),
        }
    }
}

/// How users are read: by key when the user id is the table's whole key,
/// else a Query of the user's partition. Fails, naming the key schema,
/// when neither the table nor the index is keyed by the user id.
async fn user_method(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    pace: &Pace,
    max_attempts: u32,
) -> Result<(Method, Key), AwsError> {
    let mut backoff = Backoff::new(pace);
    let mut attempt = 0;
    let table = loop {
        attempt += 1;
        match client.describe_table().table_name(&spec.table).send().await {
            Ok(t) => break t,
            Err(e) => match retryable(&e) {
                Some(kind) if attempt < max_attempts => {
                    pace.retry(kind);
                    backoff.wait().await;
                }
                _ => return Err(AwsError::call("DynamoDB", "DescribeTable", e)),
            },
        }
    };
    let table = table.table.ok_or_else(|| AwsError::Data(format!("DynamoDB DescribeTable {}: no table description", spec.table)))?;
    let schema = match &spec.index {
        None => table.key_schema().to_vec(),
        Some(index) => table
            .global_secondary_indexes()
            .iter()
            .filter(|i| i.index_name.as_deref() == Some(index))
            .map(|i| i.key_schema.clone().unwrap_or_default())
            .chain(
                table
                    .local_secondary_indexes()
                    .iter()
                    .filter(|i| i.index_name.as_deref() == Some(index))
                    .map(|i| i.key_schema.clone().unwrap_or_default()),
            )
            .next()
            .ok_or_else(|| AwsError::Data(format!("table {} has no index {index}", spec.table)))?,
    };
    let hash =
        schema.iter().find(|k| k.key_type == aws_sdk_dynamodb::types::KeyType::Hash).map(|k| k.attribute_name.clone()).unwrap_or_default();
    if hash != spec.user_id {
        return Err(AwsError::Data(format!(
            "{}{}'s partition key is `{hash}`, not the user id attribute `{}`: name the item attributes, or an index keyed by the user id",
            spec.table,
            spec.index.as_deref().map(|i| format!(" index {i}")).unwrap_or_default(),
            spec.user_id
        )));
    }
    use aws_sdk_dynamodb::types::ScalarAttributeType;
    let key = match table.attribute_definitions().iter().find(|a| a.attribute_name == hash).map(|a| &a.attribute_type) {
        Some(ScalarAttributeType::N) => Key::Number,
        Some(ScalarAttributeType::B) => {
            return Err(AwsError::Data(format!(
                "{}'s user id key `{hash}` is binary: give a table or index keyed by a string or number",
                spec.table
            )));
        }
        _ => Key::Text,
    };
    Ok((if spec.index.is_none() && schema.len() == 1 { Method::BatchGet } else { Method::Query }, key))
}

/// Reads `selection` from `spec`'s table, writes the rows to
/// `out`.rows.jsonl beside `out`, and compiles them into the audience
/// directory `out`.
pub async fn import(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    selection: &Selection,
    out: &Path,
    opts: &ImportOptions,
    progress: &(dyn Fn(ImportProgress) + Send + Sync),
) -> Result<ImportReport, ImportError> {
    if opts.concurrency == 0 {
        return Err(ImportError::Invalid("the concurrency must be at least 1".into()));
    }
    // Refused before reading anything, not after reading the whole table.
    if out.exists() && !opts.compile.force {
        return Err(AudienceError::OutputExists { path: out.to_owned() }.into());
    }
    if opts.compile.shards == 0 {
        return Err(ImportError::Invalid("the shard count must be at least 1".into()));
    }
    // The rows file beside the audience (`aud/` -> `aud.rows.jsonl`),
    // created now so an unwritable place fails before the reads.
    out.file_name().ok_or_else(|| ImportError::Invalid(format!("{}: name the audience directory to write", out.display())))?;
    let rows_path = super::audience::rows_beside(out);
    if let Some(parent) = rows_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| AudienceError::Io { path: parent.to_owned(), source })?;
    }
    let rows_file = std::fs::File::create(&rows_path).map_err(|source| AudienceError::Io { path: rows_path.clone(), source })?;
    let result = read_and_compile(client, spec, selection, out, opts, progress, (rows_path.clone(), rows_file)).await;
    if result.is_err() {
        // Half a table's rows are no input of record.
        let _ = std::fs::remove_file(&rows_path);
    }
    result
}

/// [`import`] once the rows file is open: the reads, then the rows written
/// and compiled.
async fn read_and_compile(
    client: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    selection: &Selection,
    out: &Path,
    opts: &ImportOptions,
    progress: &(dyn Fn(ImportProgress) + Send + Sync),
    (rows_path, rows_file): (PathBuf, std::fs::File),
) -> Result<ImportReport, ImportError> {
    let pace = Arc::new(Pace::new(opts.concurrency));
    let (method, key, work): (Method, Key, Vec<Work>) = match selection {
        Selection::Users(ids) => {
            let (method, key) = user_method(client, spec, &pace, opts.max_attempts).await?;
            // Number keys come back in DynamoDB's form (`007` reads as `7`).
            let numeric;
            let ids = if key == Key::Number {
                numeric = canonical_integers(ids).map_err(|e| ImportError::Invalid(e.to_string()))?;
                &numeric
            } else {
                ids
            };
            match method {
                Method::BatchGet => (method, key, ids.chunks(100).map(|c| Work::Users(c.to_vec())).collect()),
                _ => (Method::Query, key, ids.iter().cloned().map(Work::User).collect()),
            }
        }
        Selection::Scan { segments } if (1..=1_000_000).contains(segments) => {
            (Method::Scan, Key::Text, (0..*segments).map(|s| Work::Segment(s, *segments)).collect())
        }
        Selection::Scan { segments } => return Err(ImportError::Invalid(format!("{segments} scan segments: give 1 to 1,000,000"))),
    };
    let total = work.len() as u64;
    let done = AtomicU64::new(0);
    let items_read = AtomicU64::new(0);
    // Up to the pace's limit in flight; results kept by position, so the
    // rows come out in the selection's order whatever the finishing order.
    let mut results: Vec<Option<Vec<Item>>> = vec![None; work.len()];
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let mut next = 0;
    use futures_util::StreamExt;
    loop {
        while next < work.len() && pending.len() < pace.limit.load(Ordering::Relaxed) {
            let (i, w, pace, client) = (next, work[next].clone(), pace.clone(), client.clone());
            let spec = spec.clone();
            let attempts = opts.max_attempts;
            pending.push(async move { (i, read_all(&client, &spec, (&w, key), &pace, attempts).await) });
            next += 1;
        }
        let Some((i, result)) = pending.next().await else { break };
        let items = result?;
        items_read.fetch_add(items.len() as u64, Ordering::Relaxed);
        results[i] = Some(items);
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if d.is_multiple_of(256) || d == total {
            progress(ImportProgress { done: d, total, items: items_read.load(Ordering::Relaxed) });
        }
    }
    let (work, results) = if method == Method::Scan {
        // One order for the whole table, whatever the segments.
        let all: Vec<Item> = results.into_iter().flatten().flatten().collect();
        (vec![Work::Segment(0, 1)], vec![Some(all)])
    } else {
        (work, results)
    };
    let report = ImportReport {
        items: 0,
        missing_users: Vec::new(),
        rejected: Vec::new(),
        throttled: pace.throttled.load(Ordering::Relaxed),
        transient_retries: pace.transient.load(Ordering::Relaxed),
        lowest_concurrency: pace.lowest.load(Ordering::Relaxed),
        method,
        rows: rows_path,
        compile: CompileReport::default(),
    };
    write_and_compile(spec, &work, results, rows_file, out, opts, report)
}

/// Writes the rows read to `rows_file` (`report.rows`), counting into
/// `report`, and compiles them into `out`.
fn write_and_compile(
    spec: &TableSpec,
    work: &[Work],
    results: Vec<Option<Vec<Item>>>,
    rows_file: std::fs::File,
    out: &Path,
    opts: &ImportOptions,
    mut report: ImportReport,
) -> Result<ImportReport, ImportError> {
    let rows_path = report.rows.clone();
    let io = |source| AudienceError::Io { path: rows_path.clone(), source };
    let mut file = std::io::BufWriter::new(rows_file);
    // (user id, token) of each written line, to name the compile's rejections.
    let mut lines: Vec<(String, Option<String>)> = Vec::new();
    let max_listed = opts.compile.max_listed;
    for (w, items) in work.iter().zip(results) {
        let mut items = items.unwrap_or_default();
        report.items += items.len() as u64;
        // Users in the selection's order, each one's devices by token.
        let users = w.users();
        let rank: HashMap<&str, usize> = users.iter().enumerate().map(|(i, u)| (u.as_str(), i)).collect();
        let user_of = |i: &Item| text(i, &spec.user_id).ok().flatten().unwrap_or_default();
        let token_of = |i: &Item| text(i, &spec.token).ok().flatten().unwrap_or_default();
        items.sort_by_cached_key(|i| {
            let u = user_of(i);
            (rank.get(u.as_str()).copied().unwrap_or(usize::MAX), u, token_of(i))
        });
        let found: std::collections::HashSet<String> = items.iter().map(user_of).collect();
        report.missing_users.extend(users.iter().filter(|u| !found.contains(*u)).cloned());
        for item in &items {
            let user = match text(item, &spec.user_id) {
                Ok(Some(u)) => u,
                _ => users.first().cloned().unwrap_or_default(),
            };
            let fields: Result<Vec<Option<String>>, NotText> =
                [&spec.user_id, &spec.platform, &spec.token, &spec.locale, &spec.market].iter().map(|a| text(item, a)).collect();
            match fields {
                Ok(f) => {
                    let row = serde_json::json!({
                        "user_id": f[0].clone().unwrap_or_else(|| user.clone()),
                        "platform": f[1], "token": f[2], "locale": f[3], "market": f[4],
                    });
                    writeln!(file, "{row}").map_err(io)?;
                    lines.push((user, f[2].clone()));
                }
                Err(not_text) => {
                    if report.rejected.len() < max_listed {
                        let token = text(item, &spec.token).ok().flatten();
                        report.rejected.push(RejectedItem { user_id: user, token, reason: not_text.to_string() });
                    }
                }
            }
        }
    }
    file.flush().map_err(io)?;
    drop(file);
    let compile = audience::compile(std::slice::from_ref(&rows_path), out, &opts.compile, &mut |_| {})?;
    for r in &compile.first_rejections {
        if report.rejected.len() >= max_listed {
            break;
        }
        let (user_id, token) = usize::try_from(r.line).ok().and_then(|l| lines.get(l - 1)).cloned().unwrap_or_default();
        report.rejected.push(RejectedItem { user_id, token, reason: format!("{}: {}", r.reason.as_str(), r.detail) });
    }
    report.compile = compile;
    Ok(report)
}
