//! Test credentials for the loopback gateway: an APNs `.p8` key with its key
//! and team ids, an FCM service account whose `token_uri` is the gateway's,
//! and a CA with a server certificate for `localhost` / `127.0.0.1`.
//!
//! `kickoff-sender gateway keys --out DIR` writes them with a `kickoff.toml`
//! that points the sender at the gateway; `kickoff-sender gateway --keys DIR`
//! serves with them. They are generated fresh, never committed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::push::auth::{ApnsKey, AuthError, ServiceAccount, rand_bytes};

/// File names inside a keys directory.
pub const APNS_KEY_FILE: &str = "apns-key.p8";
/// The service-account key file.
pub const SERVICE_ACCOUNT_FILE: &str = "fcm-service-account.json";
/// The CA certificate clients trust.
pub const CA_FILE: &str = "ca.pem";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";
/// The gateway's own settings (address, ids).
pub const GATEWAY_FILE: &str = "gateway.json";
/// A sender config pointing at the gateway.
pub const CONFIG_FILE: &str = "kickoff.toml";

/// A keys directory could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A file operation failed.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A credential is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Certificate generation or parsing failed.
    #[error("certificates: {0}")]
    Certificate(String),
    /// `gateway.json` is malformed.
    #[error("{path}: {message}", path = path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Everything the gateway and its clients share.
#[derive(Debug, Clone)]
pub struct GatewayKeys {
    /// Signs (sender) and verifies (gateway) APNs provider tokens.
    pub apns: Arc<ApnsKey>,
    /// The APNs topic the gateway expects (the demo campaign's).
    pub topic: String,
    /// The FCM service account (its `token_uri` is the gateway's).
    pub service_account: Arc<ServiceAccount>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub server_cert_pem: String,
    /// The server key, PEM (PKCS#8).
    pub server_key_pem: String,
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// TLS or h2c.
    pub tls: bool,
}

fn id10() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    rand_bytes::<10>().iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
}

impl GatewayKeys {
    /// Fresh credentials for a gateway that will listen on `listen`.
    pub fn generate(listen: SocketAddr, tls: bool, topic: &str) -> Result<Self, KeysError> {
        let cert_err = |e: rcgen::Error| KeysError::Certificate(e.to_string());
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Kickoff loopback gateway test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(cert_err)?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_err)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).map_err(cert_err)?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate().map_err(cert_err)?;
        let server_cert = params.signed_by(&server_key, &issuer).map_err(cert_err)?;
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            apns: Arc::new(ApnsKey::generate(&id10(), &id10())),
            topic: topic.to_owned(),
            service_account: Arc::new(ServiceAccount::generate("kickoff-gateway", &format!("{scheme}://{listen}/token"))),
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            listen,
            tls,
        })
    }

    /// The base URL of the gateway.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.listen)
    }

    /// Writes every file, plus `kickoff.toml` for the sender.
    pub fn write(&self, dir: &Path) -> Result<(), KeysError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeysError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let gateway = serde_json::json!({
            "listen": self.listen.to_string(),
            "tls": self.tls,
            "topic": self.topic,
            "apns_key_id": self.apns.key_id,
            "apns_team_id": self.apns.team_id,
        });
        let config = format!(
            "# Written by `kickoff-sender gateway keys`: points the sender at the loopback gateway.\n\
             [apns]\nkey_file = \"{APNS_KEY_FILE}\"\nkey_id = \"{}\"\nteam_id = \"{}\"\nurl = \"{url}\"\n\n\
             [fcm]\nservice_account = \"{SERVICE_ACCOUNT_FILE}\"\nurl = \"{url}\"\n\n\
             [tls]\nca_file = \"{CA_FILE}\"\n",
            self.apns.key_id,
            self.apns.team_id,
            url = self.url(),
        );
        let files = [
            (APNS_KEY_FILE, self.apns.to_p8_pem()),
            (SERVICE_ACCOUNT_FILE, self.service_account.to_json()),
            (CA_FILE, self.ca_pem.clone()),
            (SERVER_CERT_FILE, self.server_cert_pem.clone()),
            (SERVER_KEY_FILE, self.server_key_pem.clone()),
            (GATEWAY_FILE, serde_json::to_string_pretty(&gateway).expect("JSON")),
            (CONFIG_FILE, config),
        ];
        for (name, content) in files {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(io(&path))?;
            #[cfg(unix)]
            if name.ends_with(".p8") || name.ends_with("key.pem") || name == SERVICE_ACCOUNT_FILE {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Reads a keys directory written by [`write`](Self::write).
    pub fn load(dir: &Path) -> Result<Self, KeysError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| KeysError::Io { path, source })
        };
        let path = dir.join(GATEWAY_FILE);
        let g: serde_json::Value =
            serde_json::from_str(&read(GATEWAY_FILE)?).map_err(|e| KeysError::Invalid { path: path.clone(), message: e.to_string() })?;
        let field = |k: &str| {
            g[k].as_str().map(str::to_owned).ok_or_else(|| KeysError::Invalid { path: path.clone(), message: format!("missing {k}") })
        };
        let listen =
            field("listen")?.parse().map_err(|_| KeysError::Invalid { path: path.clone(), message: "bad listen address".into() })?;
        Ok(Self {
            apns: Arc::new(ApnsKey::load(&dir.join(APNS_KEY_FILE), &field("apns_key_id")?, &field("apns_team_id")?)?),
            topic: field("topic")?,
            service_account: Arc::new(ServiceAccount::load(&dir.join(SERVICE_ACCOUNT_FILE))?),
            ca_pem: read(CA_FILE)?,
            server_cert_pem: read(SERVER_CERT_FILE)?,
            server_key_pem: read(SERVER_KEY_FILE)?,
            listen,
            tls: g["tls"].as_bool().unwrap_or(true),
        })
    }
}
