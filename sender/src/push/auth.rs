//! Provider credentials: the APNs token key (ES256 JWTs), the FCM service
//! account (RS256 JWT bearer grant), and the shared, refreshing bearer tokens
//! that sessions put on every request.
//!
//! Secrets never reach logs, errors, metrics or recordings: key material is
//! held in types whose `Debug` prints nothing, bearer header values are marked
//! sensitive, and errors name files and key ids, never contents.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, LineEnding};
use rsa::pkcs8::{DecodePublicKey as _, EncodePublicKey as _};
use rsa::sha2::Sha256;

/// The OAuth scope FCM v1 needs.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The JWT bearer grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// A credential that could not be loaded or used. Names files, never contents.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The credential file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected kind of key or document.
    #[error("{path}: {message}", path = path.display())]
    Invalid {
        /// The credential file.
        path: PathBuf,
        /// What is wrong (no key material).
        message: String,
    },
    /// The token endpoint refused or could not be reached.
    #[error("OAuth token request to {url} failed: {message}")]
    Token {
        /// The token endpoint.
        url: String,
        /// The status and the endpoint's error code.
        message: String,
    },
}

/// Base64url without padding, as JWTs use.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding.
pub fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Seconds since the UNIX epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A JWT split into its parts, signature not yet checked.
#[derive(Debug)]
pub struct UnverifiedJwt<'a> {
    /// The header, decoded.
    pub header: serde_json::Value,
    /// The claims, decoded.
    pub claims: serde_json::Value,
    /// `base64(header).base64(claims)`: what the signature covers.
    pub signed: &'a str,
    /// The raw signature bytes.
    pub signature: Vec<u8>,
}

/// Splits and decodes a compact JWT.
pub fn parse_jwt(token: &str) -> Option<UnverifiedJwt<'_>> {
    let (signed, sig) = token.rsplit_once('.')?;
    let (header, claims) = signed.split_once('.')?;
    let decode = |part: &str| -> Option<serde_json::Value> { serde_json::from_slice(&b64url_decode(part)?).ok() };
    Some(UnverifiedJwt { header: decode(header)?, claims: decode(claims)?, signed, signature: b64url_decode(sig)? })
}

fn compact(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()))
}

/// An APNs token-signing key (`.p8`), its key id and the team id.
pub struct ApnsKey {
    signing: p256::ecdsa::SigningKey,
    /// The 10-character key id from the developer account.
    pub key_id: String,
    /// The 10-character team id.
    pub team_id: String,
}

impl fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApnsKey").field("key_id", &self.key_id).field("team_id", &self.team_id).finish_non_exhaustive()
    }
}

impl ApnsKey {
    /// Loads a `.p8` (PKCS#8 PEM, P-256) key.
    pub fn load(path: &Path, key_id: &str, team_id: &str) -> Result<Self, AuthError> {
        let pem = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_owned(), source })?;
        Self::from_pem(&pem, key_id, team_id).ok_or_else(|| AuthError::Invalid {
            path: path.to_owned(),
            message: "not a PKCS#8 P-256 private key (an APNs .p8 token key)".into(),
        })
    }

    /// Parses `.p8` PEM text.
    pub fn from_pem(pem: &str, key_id: &str, team_id: &str) -> Option<Self> {
        let signing = p256::ecdsa::SigningKey::from_pkcs8_pem(pem).ok()?;
        Some(Self { signing, key_id: key_id.to_owned(), team_id: team_id.to_owned() })
    }

    /// A new random key (for test credentials).
    pub fn generate(key_id: &str, team_id: &str) -> Self {
        use p256::elliptic_curve::Generate as _;
        Self { signing: p256::ecdsa::SigningKey::generate(), key_id: key_id.to_owned(), team_id: team_id.to_owned() }
    }

    /// The key as `.p8` PEM text.
    pub fn to_p8_pem(&self) -> String {
        self.signing.to_pkcs8_pem(LineEnding::LF).expect("a P-256 key encodes").to_string()
    }

    /// The public half, for verifying.
    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        *self.signing.verifying_key()
    }

    /// A provider token: `{alg: ES256, kid}` / `{iss: team, iat}`.
    pub fn sign(&self, iat: u64) -> String {
        let signed =
            compact(&serde_json::json!({"alg": "ES256", "kid": self.key_id}), &serde_json::json!({"iss": self.team_id, "iat": iat}));
        let signature: p256::ecdsa::Signature = self.signing.sign(signed.as_bytes());
        format!("{signed}.{}", b64url(&signature.to_bytes()))
    }
}

/// Checks an ES256 JWT's signature.
pub fn verify_es256(jwt: &UnverifiedJwt<'_>, key: &p256::ecdsa::VerifyingKey) -> bool {
    p256::ecdsa::Signature::from_slice(&jwt.signature).is_ok_and(|sig| key.verify(jwt.signed.as_bytes(), &sig).is_ok())
}

/// A Google service account, as in its JSON key file.
pub struct ServiceAccount {
    /// Project id.
    pub project_id: String,
    /// Key id (the JWT `kid`).
    pub private_key_id: String,
    /// The account's e-mail (the JWT `iss`).
    pub client_email: String,
    /// Where to exchange the assertion for an access token.
    pub token_uri: String,
    key: rsa::PrivateKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
struct ServiceAccountFile {
    #[serde(rename = "type")]
    kind: String,
    project_id: String,
    private_key_id: String,
    private_key: String,
    client_email: String,
    token_uri: String,
}

impl ServiceAccount {
    /// Loads a service-account JSON key file.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_owned(), source })?;
        let invalid = |message: String| AuthError::Invalid { path: path.to_owned(), message };
        // serde's messages quote offending values; report only the position.
        let file: ServiceAccountFile = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not a service-account key file (line {}, column {})", e.line(), e.column())))?;
        if file.kind != "service_account" {
            return Err(invalid(format!("\"type\" is {:?}, not \"service_account\"", file.kind)));
        }
        let key =
            rsa::PrivateKey::from_pkcs8_pem(&file.private_key).map_err(|_| invalid("\"private_key\" is not a PKCS#8 RSA key".into()))?;
        Ok(Self {
            project_id: file.project_id,
            private_key_id: file.private_key_id,
            client_email: file.client_email,
            token_uri: file.token_uri,
            key,
        })
    }

    /// A new service account with a fresh 2048-bit key (test credentials).
    pub fn generate(project_id: &str, token_uri: &str) -> Self {
        use rsa::Generate as _;
        let key = rsa::PrivateKey::generate();
        let private_key_id = b64url(&rand_bytes::<12>());
        Self {
            project_id: project_id.to_owned(),
            private_key_id,
            client_email: format!("kickoff-sender@{project_id}.iam.gserviceaccount.com"),
            token_uri: token_uri.to_owned(),
            key,
        }
    }

    /// The JSON key file.
    pub fn to_json(&self) -> String {
        use rsa::pkcs8::EncodePrivateKey as _;
        let pem = self.key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).expect("an RSA key encodes");
        serde_json::to_string_pretty(&serde_json::json!({
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": pem.as_str(),
            "client_email": self.client_email,
            "client_id": "0",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }))
        .expect("JSON")
    }

    /// The public key as SPKI PEM, for a verifier.
    pub fn public_key_pem(&self) -> String {
        self.key.to_public_key().to_public_key_pem(rsa::pkcs8::LineEnding::LF).expect("an RSA key encodes")
    }

    /// The JWT bearer assertion for `scope`, valid one hour from `iat`.
    pub fn assertion(&self, scope: &str, iat: u64) -> String {
        let signed = compact(
            &serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": self.private_key_id}),
            &serde_json::json!({"iss": self.client_email, "scope": scope, "aud": self.token_uri, "iat": iat, "exp": iat + 3600}),
        );
        let signature = self.key.pkcs1v15_sign::<Sha256>(signed.as_bytes()).expect("RS256 signing");
        format!("{signed}.{}", b64url(&signature))
    }
}

/// Checks an RS256 JWT against a public key in SPKI PEM.
pub fn verify_rs256(jwt: &UnverifiedJwt<'_>, public_key: &rsa::PublicKey) -> bool {
    public_key.pkcs1v15_verify::<Sha256>(jwt.signed.as_bytes(), &jwt.signature).is_ok()
}

/// Parses an SPKI PEM RSA public key.
pub fn rsa_public_key(pem: &str) -> Option<rsa::PublicKey> {
    rsa::PublicKey::from_public_key_pem(pem).ok()
}

/// Random bytes from the operating system.
pub fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom_fill(&mut out);
    out
}

fn getrandom_fill(out: &mut [u8]) {
    getrandom::fill(out).expect("the operating system's random source");
}

/// A bearer header value shared by every session of a provider, replaced
/// when refreshed. Sessions keep a copy and re-read it only when the version
/// moves, so the hot path pays one atomic load.
#[derive(Debug)]
pub struct TokenCell {
    value: RwLock<HeaderValue>,
    version: AtomicU64,
    issued: RwLock<SystemTime>,
}

impl TokenCell {
    /// A cell holding `authorization: <scheme> <token>`.
    pub fn new(scheme: &str, token: &str) -> Self {
        Self { value: RwLock::new(bearer(scheme, token)), version: AtomicU64::new(1), issued: RwLock::new(SystemTime::now()) }
    }

    /// Replaces the token.
    pub fn set(&self, scheme: &str, token: &str) {
        *self.value.write().expect("token lock") = bearer(scheme, token);
        *self.issued.write().expect("token lock") = SystemTime::now();
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current version.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// The current header value.
    pub fn get(&self) -> HeaderValue {
        self.value.read().expect("token lock").clone()
    }

    /// When the current token was set.
    pub fn issued(&self) -> SystemTime {
        *self.issued.read().expect("token lock")
    }
}

fn bearer(scheme: &str, token: &str) -> HeaderValue {
    let mut v = HeaderValue::try_from(format!("{scheme} {token}")).expect("tokens are header-safe");
    v.set_sensitive(true);
    v
}

/// A session's cached copy of a [`TokenCell`].
#[derive(Debug)]
pub struct CachedToken {
    cell: Arc<TokenCell>,
    version: u64,
    value: HeaderValue,
}

impl CachedToken {
    /// Follows `cell`.
    pub fn new(cell: Arc<TokenCell>) -> Self {
        let (version, value) = (cell.version(), cell.get());
        Self { cell, version, value }
    }

    /// The version of the value [`current`](Self::current) returned last.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The current header value, re-read only after a refresh.
    #[inline]
    pub fn current(&mut self) -> &HeaderValue {
        let v = self.cell.version();
        if v != self.version {
            self.value = self.cell.get();
            self.version = v;
        }
        &self.value
    }
}

/// When an APNs provider token is replaced. APNs rejects tokens older than an
/// hour and refuses a new token on a connection more often than every 20
/// minutes (`TooManyProviderTokenUpdates`), so the age must be in [20, 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApnsRefresh(Duration);

impl ApnsRefresh {
    /// Earliest allowed refresh.
    pub const MIN: Duration = Duration::from_secs(20 * 60);
    /// Tokens are refused past this age.
    pub const MAX: Duration = Duration::from_secs(60 * 60);

    /// A refresh age; must be in [20, 60) minutes.
    pub fn new(age: Duration) -> Option<Self> {
        (Self::MIN..Self::MAX).contains(&age).then_some(Self(age))
    }

    /// The age at which tokens are replaced.
    pub fn age(self) -> Duration {
        self.0
    }
}

impl Default for ApnsRefresh {
    /// 50 minutes: well inside the hour, never near the 20-minute floor.
    fn default() -> Self {
        Self(Duration::from_secs(50 * 60))
    }
}

/// Keeps an APNs provider token fresh: signs one now, then a new one every
/// `refresh.age()`. The cell is shared by every connection of every worker.
pub fn spawn_apns_refresher(key: Arc<ApnsKey>, refresh: ApnsRefresh) -> Arc<TokenCell> {
    let cell = Arc::new(TokenCell::new("bearer", &key.sign(unix_now())));
    let weak = Arc::downgrade(&cell);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(refresh.age()).await;
            let Some(cell) = weak.upgrade() else { return };
            cell.set("bearer", &key.sign(unix_now()));
            tracing::info!(key_id = %key.key_id, "APNs provider token refreshed");
        }
    });
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn es256_tokens_verify_and_carry_the_claims() {
        let key = ApnsKey::generate("ABC123DEFG", "TEAM123456");
        let token = key.sign(1_700_000_000);
        let jwt = parse_jwt(&token).unwrap();
        assert_eq!(jwt.header["alg"], "ES256");
        assert_eq!(jwt.header["kid"], "ABC123DEFG");
        assert_eq!(jwt.claims["iss"], "TEAM123456");
        assert_eq!(jwt.claims["iat"], 1_700_000_000);
        assert_eq!(jwt.signature.len(), 64, "raw r||s");
        assert!(verify_es256(&jwt, &key.verifying_key()));
        let other = ApnsKey::generate("ABC123DEFG", "TEAM123456");
        assert!(!verify_es256(&jwt, &other.verifying_key()));
        let tampered = token.replacen('.', ".e", 1);
        assert!(parse_jwt(&tampered).is_none_or(|j| !verify_es256(&j, &key.verifying_key())));
    }

    #[test]
    fn p8_files_round_trip_and_bad_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let key = ApnsKey::generate("K", "T");
        let path = dir.path().join("AuthKey_K.p8");
        std::fs::write(&path, key.to_p8_pem()).unwrap();
        let loaded = ApnsKey::load(&path, "K", "T").unwrap();
        assert_eq!(loaded.verifying_key(), key.verifying_key());
        std::fs::write(&path, "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n").unwrap();
        let err = ApnsKey::load(&path, "K", "T").unwrap_err().to_string();
        assert!(err.contains("AuthKey_K.p8") && err.contains("P-256"), "{err}");
        assert!(!format!("{loaded:?}").contains("BEGIN"));
    }

    #[test]
    fn service_account_assertions_verify() {
        let dir = tempfile::tempdir().unwrap();
        let sa = ServiceAccount::generate("proj", "http://127.0.0.1:1/token");
        let path = dir.path().join("sa.json");
        std::fs::write(&path, sa.to_json()).unwrap();
        let loaded = ServiceAccount::load(&path).unwrap();
        let token = loaded.assertion(FCM_SCOPE, 1_700_000_000);
        let jwt = parse_jwt(&token).unwrap();
        assert_eq!((jwt.header["alg"].as_str(), jwt.claims["aud"].as_str()), (Some("RS256"), Some("http://127.0.0.1:1/token")));
        assert_eq!(jwt.claims["exp"], 1_700_003_600);
        let public = rsa_public_key(&sa.public_key_pem()).unwrap();
        assert!(verify_rs256(&jwt, &public));
        let dbg = format!("{loaded:?}");
        assert!(!dbg.contains("PRIVATE") && dbg.contains("proj"), "{dbg}");
        std::fs::write(&path, r#"{"type":"authorized_user","secret":"hunter2"}"#).unwrap();
        let err = ServiceAccount::load(&path).unwrap_err().to_string();
        assert!(err.contains("sa.json") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn apns_refresh_age_must_be_between_20_and_60_minutes() {
        assert!(ApnsRefresh::new(Duration::from_secs(19 * 60)).is_none());
        assert!(ApnsRefresh::new(Duration::from_secs(60 * 60)).is_none());
        assert!(ApnsRefresh::new(Duration::from_secs(20 * 60)).is_some());
    }

    /// On real time with a short age (a test-only constructor): tokio's
    /// paused clock needs its `test-util` feature, which builds a second
    /// copy of every crate on tokio for `cargo test`. What can fail: a
    /// refresh before the age ("never sooner" holds however loaded the
    /// machine is) and a session that does not follow a refresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apns_tokens_are_replaced_at_the_refresh_age_and_never_sooner() {
        let key = Arc::new(ApnsKey::generate("K", "T"));
        let age = Duration::from_millis(500);
        let started = std::time::Instant::now();
        let cell = spawn_apns_refresher(key, ApnsRefresh(age));
        let first = cell.version();
        let mut cached = CachedToken::new(cell.clone());
        assert_eq!(cached.version, first);
        for n in 1..=2 {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while cell.version() < first + n {
                assert!(std::time::Instant::now() < deadline, "no refresh {n} within 30 s");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert!(started.elapsed() >= age * n as u32, "refresh {n} came before {n} x the age: {:?}", started.elapsed());
            assert_eq!(cached.current(), &cell.get());
            assert_eq!(cached.version, cell.version(), "the session follows the refresh");
        }
        assert!(cached.current().is_sensitive());
    }
}
