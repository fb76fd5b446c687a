//! TLS: certificate loading, the rustls server configuration, and development
//! certificates.
//!
//! One crypto provider (aws-lc-rs), TLS 1.2 and 1.3 only, ALPN `h2` then
//! `http/1.1`, stateless session tickets plus a session cache so that resumed
//! handshakes are cheap. Private keys are read when loaded and never logged.
//!
//! The certificate and key can be replaced while serving ([`Reloadable`]:
//! SIGHUP, or `POST /tls/reload` on the admin listener), for renewals
//! without a restart. A reload builds a whole new configuration, so the
//! session-ticket key and the session cache are new too: a ticket issued
//! under the old certificate resumes nothing (SECURITY.md, "rotate ticket
//! keys on TLS reload").

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert: cannot read certificate chain from {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("tls.key: cannot read private key from {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("tls: certificate and key do not work together: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the PEM chain and key and builds the server configuration.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = read_certs(cert).map_err(|reason| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    })?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(64 * 1024);
    Ok(Arc::new(config))
}

/// Every certificate in the PEM file at `path`; the reason, for the
/// caller's own error, when it cannot be read or holds none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block found".into());
    }
    Ok(certs)
}

/// Why a TLS client configuration (for `https://` upstreams, or for the
/// OpenID Connect provider) could not be built; `key` names the key at
/// fault, such as `upstream_tls.ca`.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct ClientTlsError {
    pub key: String,
    pub reason: String,
}

/// The client configuration for `https://` upstreams (`section` is
/// `upstream_tls`) and the OpenID Connect provider (`oidc`): the
/// certificates in `ca` (PEM) as the only roots, or the system's trust store
/// without one; a client certificate when `client` (chain and key, PEM) is
/// given, for upstreams that require mutual TLS. ALPN offers HTTP/1.1, all
/// the gateway's clients speak.
pub fn client_config(
    section: &str,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, ClientTlsError> {
    let error = |key: &str, reason: String| ClientTlsError {
        key: if key.is_empty() {
            section.to_string()
        } else {
            format!("{section}.{key}")
        },
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let certs = read_certs(ca).map_err(|e| error("ca", format!("{}: {e}", ca.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(error(
                    "ca",
                    format!("{} holds no usable CERTIFICATE block", ca.display()),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(error(
                    "ca",
                    "the system's trust store is empty or unreadable; name the server's CA here".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| error("", e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = read_certs(cert).map_err(|e| error("client_cert", format!("{}: {e}", cert.display())))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| error("client_key", format!("cannot read {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| error("client_key", format!("does not fit client_cert: {e}")))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration in force, and where to read the next one. New
/// connections take the configuration current when they are accepted;
/// connections already open keep theirs.
#[derive(Clone)]
pub struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<watch::Sender<Arc<rustls::ServerConfig>>>,
}

impl Reloadable {
    /// Loads the certificate and key a first time.
    pub fn load(cert: &Path, key: &Path) -> Result<Reloadable, TlsError> {
        let config = server_config(cert, key)?;
        Ok(Reloadable {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Arc::new(watch::channel(config).0),
        })
    }

    /// Reads the certificate and key again from the same paths. On an
    /// error the configuration in force stays, and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        self.current.send_replace(config);
        Ok(())
    }

    /// A view of the configuration in force, for a listener.
    pub fn watch(&self) -> watch::Receiver<Arc<rustls::ServerConfig>> {
        self.current.subscribe()
    }
}

/// Writes a self-signed development certificate for `hosts` (DNS names or IP
/// addresses) to `out_dir/cert.pem` and `out_dir/key.pem` (mode 0600).
pub fn write_self_signed(out_dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    std::fs::create_dir_all(out_dir).map_err(|source| TlsError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let cert_path = out_dir.join("cert.pem");
    let key_path = out_dir.join("key.pem");
    write_file(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    write_file(&key_path, certified.signing_key.serialize_pem().as_bytes(), 0o600)?;
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(mode);
    let _ = mode;
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        })
}
