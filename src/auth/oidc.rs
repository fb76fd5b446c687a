//! Sign-in through an OpenID Connect provider (`[oidc]`): the authorization
//! code flow with PKCE, as a confidential client.
//!
//! The flow keeps no state of its own. Everything the callback must check
//! is derived from the visitor's session: the `state` parameter carries a
//! random flow id, the return path and a step-up route's `max_age`, signed
//! with the session's CSRF secret
//! (kept in the store, so the callback may reach any instance sharing it);
//! the `nonce` and the PKCE verifier are MACs of the flow id under the same
//! secret. A callback in another browser (an attacker's code planted in a
//! victim's) fails the signature, and a login rotates the secret, so a flow
//! completes at most once.
//!
//! The provider's discovery document and signing keys are fetched when first
//! needed and cached; an ID token signed with a key id the cache lacks
//! fetches the keys again (a provider's key rotation), at most every
//! [`KEYS_REFETCH`].

use super::constant_time_eq;
use crate::config::OidcConfig;
use crate::session::record::{now_ms, Identity};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Where the provider sends the browser back, on the host it came from.
pub const CALLBACK_PATH: &str = "/.sessiongate/oidc/callback";
/// Largest answer read from the provider.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How long a fetched discovery document is used before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// After a failed discovery, logins fail at once for this long instead of
/// each waiting out the provider's timeout.
const FAILURE_HOLD: Duration = Duration::from_secs(5);
/// The least time between two fetches of the signing keys for a key id the
/// cache lacks.
const KEYS_REFETCH: Duration = Duration::from_secs(10);
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_SECS: u64 = 60;
/// Longest user name, email or group taken from a claim.
const MAX_CLAIM_CHARS: usize = 256;
/// Signature algorithms an ID token may use: asymmetric only, so a token
/// "signed" with the client secret (an HMAC) is never accepted.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Why a sign-in through the provider did not produce an identity.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be asked, or answered something unusable:
    /// the visitor can only try again later.
    #[error("the OpenID provider failed: {0}")]
    Provider(String),
    /// The provider's answer was refused (a token that does not verify, a
    /// claim missing): a configuration or a forgery.
    #[error("the OpenID provider's ID token was refused: {0}")]
    Refused(String),
    /// The token is good, but `allowed_email_domains` or `allowed_groups`
    /// leaves its account out.
    #[error("this account may not sign in here: {0}")]
    NotAllowed(String),
    /// `[oidc] max_concurrent` exchanges are in flight already.
    #[error("too many sign-ins with the OpenID provider in flight")]
    Busy,
}

fn provider_error(what: &str, e: impl std::fmt::Display) -> OidcError {
    OidcError::Provider(format!("{what}: {e}"))
}

/// The parts of the discovery document the flow uses.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

/// The provider's endpoints, as discovered.
struct Provider {
    authorization_endpoint: String,
    token_endpoint: Uri,
    jwks_uri: Uri,
    /// `client_secret_basic` (the default of the standard) or else
    /// `client_secret_post`.
    basic_auth: bool,
    /// RP-Initiated Logout, when the provider offers it.
    end_session_endpoint: Option<String>,
    fetched_at: Instant,
}

#[derive(Default)]
struct ProviderSlot {
    provider: Option<Arc<Provider>>,
    failed: Option<(Instant, String)>,
}

#[derive(Default)]
struct KeySlot {
    keys: Option<Arc<JwkSet>>,
    /// When the keys were last fetched again because a token named a key
    /// the cache lacked.
    refetched_at: Option<Instant>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

/// The OpenID Connect client: its configuration and what it learned of the
/// provider.
pub struct Oidc {
    config: OidcConfig,
    provider: Mutex<ProviderSlot>,
    keys: Mutex<KeySlot>,
    /// One permit per code exchange in flight: each holds a connection to
    /// the provider for up to `timeout`, and anyone can start flows.
    exchanges: tokio::sync::Semaphore,
}

impl Oidc {
    pub fn new(config: OidcConfig) -> Oidc {
        Oidc {
            exchanges: tokio::sync::Semaphore::new(config.max_concurrent),
            config,
            provider: Mutex::default(),
            keys: Mutex::default(),
        }
    }

    /// The login page's button label.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Reads the discovery document now, so that a wrong issuer or an
    /// unreachable provider is logged at start, not at the first login.
    pub async fn warm_up(&self) {
        match self.provider().await {
            Ok(p) if self.config.logout_at_provider && p.end_session_endpoint.is_none() => tracing::warn!(
                issuer = %self.config.issuer,
                "OpenID provider discovered; it names no end_session_endpoint, so logout_at_provider does nothing"
            ),
            Ok(_) => tracing::info!(issuer = %self.config.issuer, "OpenID provider discovered"),
            Err(e) => tracing::warn!(issuer = %self.config.issuer, error = %e, "OpenID provider not reachable yet"),
        }
    }

    /// The provider's authorization URL, with every parameter, for a flow
    /// that returns to `rd` on `authority`, bound to the session whose CSRF
    /// secret is `csrf`.
    /// With `max_age` (a step-up route's, in seconds) the provider is asked
    /// to have signed the user in within that long, and the callback checks
    /// the token's `auth_time`.
    pub async fn start(
        &self,
        csrf: &str,
        authority: &str,
        rd: &str,
        max_age: Option<u64>,
    ) -> Result<String, OidcError> {
        let provider = self.provider().await?;
        let mut flow = [0u8; 16];
        getrandom::fill(&mut flow).map_err(|e| provider_error("random", e))?;
        let flow = URL_SAFE_NO_PAD.encode(flow);
        let flow = Flow::new(csrf, &flow);
        let state = flow.state(rd, max_age);
        let mut params = form_urlencoded::Serializer::new(String::new());
        params
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &redirect_uri(authority))
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &flow.nonce())
            .append_pair("code_challenge", &flow.challenge())
            .append_pair("code_challenge_method", "S256");
        if let Some(age) = max_age {
            params.append_pair("max_age", &age.to_string());
        }
        let params = params.finish();
        let join = if provider.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{join}{params}", provider.authorization_endpoint))
    }

    /// Whether `[oidc] logout_at_provider` is set.
    pub fn logs_out_at_provider(&self) -> bool {
        self.config.logout_at_provider
    }

    /// With `logout_at_provider`, where a browser whose provider-made
    /// session just ended goes next: the provider's `end_session_endpoint`
    /// (OpenID Connect RP-Initiated Logout), which sends it back to the
    /// site's root on `authority` (register that URL at the provider).
    /// `None` when not configured or the provider offers none.
    pub async fn logout_url(&self, authority: &str) -> Option<String> {
        let provider = self
            .provider()
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "no sign-out at the OpenID provider"))
            .ok()?;
        let end = provider.end_session_endpoint.as_deref()?;
        let params = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &self.config.client_id)
            .append_pair("post_logout_redirect_uri", &format!("https://{authority}/"))
            .finish();
        let join = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{join}{params}"))
    }

    /// Exchanges `code` for an ID token, verifies it (signature, issuer,
    /// audience, expiry, nonce) and reads the identity from its claims.
    /// `state` is what [`verify_state`] returned.
    pub async fn finish(&self, csrf: &str, state: &State, authority: &str, code: &str) -> Result<Identity, OidcError> {
        let _permit = self.exchanges.try_acquire().map_err(|_| OidcError::Busy)?;
        let provider = self.provider().await?;
        let flow = Flow::new(csrf, &state.flow);
        let id_token = self
            .exchange(&provider, code, &redirect_uri(authority), &flow.verifier())
            .await?;
        let claims = self.verify(&provider, &id_token, &flow.nonce()).await?;
        if let Some(age) = state.max_age {
            signed_in_within(&claims, age, now_ms() / 1000)?;
        }
        let identity = identity(&self.config, &claims)?;
        allowed(&self.config, &claims, &identity)?;
        Ok(identity)
    }

    /// The cached discovery, or a fresh one.
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot
            .provider
            .as_ref()
            .filter(|p| p.fetched_at.elapsed() < DISCOVERY_TTL)
        {
            return Ok(p.clone());
        }
        // A stale document is better than none while the provider is away;
        // after a failure, the next tries wait a little instead of each
        // waiting out the timeout.
        let stale = slot.provider.clone();
        if let Some((_, why)) = slot.failed.as_ref().filter(|(at, _)| at.elapsed() < FAILURE_HOLD) {
            return stale.ok_or_else(|| OidcError::Provider(why.clone()));
        }
        match self.discover().await {
            Ok(p) => {
                let p = Arc::new(p);
                slot.provider = Some(p.clone());
                slot.failed = None;
                Ok(p)
            }
            Err(e) => {
                slot.failed = Some((Instant::now(), e.to_string()));
                match stale {
                    Some(stale) => {
                        tracing::warn!(error = %e, "OpenID discovery failed; using the document read before");
                        Ok(stale)
                    }
                    None => Err(e),
                }
            }
        }
    }

    async fn discover(&self) -> Result<Provider, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let uri = https_uri(&url, "the discovery URL")?;
        let doc: Discovery = self.get_json(uri, "discovery").await?;
        if doc.issuer != self.config.issuer {
            return Err(OidcError::Provider(format!(
                "the discovery document names the issuer `{}`, not `{}` as configured",
                doc.issuer, self.config.issuer
            )));
        }
        https_uri(&doc.authorization_endpoint, "authorization_endpoint")?;
        let basic_auth = doc
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_none_or(|methods| {
                methods.iter().any(|m| m == "client_secret_basic") || !methods.iter().any(|m| m == "client_secret_post")
            });
        if let Some(end) = &doc.end_session_endpoint {
            https_uri(end, "end_session_endpoint")?;
        }
        Ok(Provider {
            end_session_endpoint: doc.end_session_endpoint,
            authorization_endpoint: doc.authorization_endpoint,
            token_endpoint: https_uri(&doc.token_endpoint, "token_endpoint")?,
            jwks_uri: https_uri(&doc.jwks_uri, "jwks_uri")?,
            basic_auth,
            fetched_at: Instant::now(),
        })
    }

    /// The authorization code grant: the ID token it answers with.
    async fn exchange(
        &self,
        provider: &Provider,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let req = self
            .token_request(provider, code, redirect_uri, verifier)
            .map_err(|e| provider_error("token request", e))?;
        let (status, body) = self.send(req).await?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!(
                "the token endpoint answered {status}: {}",
                excerpt(&body)
            )));
        }
        let answer: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| provider_error("the token endpoint's answer", e))?;
        answer
            .id_token
            .ok_or_else(|| OidcError::Refused("the token endpoint answered without an id_token".into()))
    }

    /// The token endpoint's request, with the client's credentials.
    fn token_request(
        &self,
        provider: &Provider,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(provider.token_endpoint.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if provider.basic_auth {
            // RFC 6749 2.3.1: each part form-encoded before base64.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", enc(&self.config.client_id), enc(&self.config.client_secret));
            req = req.header(header::AUTHORIZATION, format!("Basic {}", base64_standard(&pair)));
        } else {
            form.append_pair("client_id", &self.config.client_id)
                .append_pair("client_secret", &self.config.client_secret);
        }
        req.body(Full::new(Bytes::from(form.finish())))
    }

    /// Verifies `token` and answers its claims.
    async fn verify(&self, provider: &Provider, token: &str, nonce: &str) -> Result<Map<String, Value>, OidcError> {
        let refused = |what: &str, e: &dyn std::fmt::Display| OidcError::Refused(format!("{what}: {e}"));
        let head = jsonwebtoken::decode_header(token).map_err(|e| refused("not a JWT", &e))?;
        if !ALGORITHMS.contains(&head.alg) {
            return Err(OidcError::Refused(format!("algorithm {:?} is not accepted", head.alg)));
        }
        let jwk = self.key(provider, head.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm {
            if alg != jsonwebtoken::jwk::KeyAlgorithm::from(head.alg) {
                return Err(OidcError::Refused(format!(
                    "the token says {:?}, its key {alg:?}",
                    head.alg
                )));
            }
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| refused("the provider's key", &e))?;
        let mut validation = Validation::new(head.alg);
        validation.set_issuer(&accepted_issuers(&self.config.issuer));
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| refused("the ID token", &e))?;
        let claims = data.claims;
        let sent = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !constant_time_eq(sent, nonce) {
            return Err(OidcError::Refused("the nonce is not this sign-in's".into()));
        }
        // With several audiences, the token must have been issued to us.
        if let Some(Value::Array(aud)) = claims.get("aud") {
            let azp = claims.get("azp").and_then(Value::as_str);
            if aud.len() > 1 && azp != Some(self.config.client_id.as_str()) {
                return Err(OidcError::Refused(
                    "several audiences and azp is not this client".into(),
                ));
            }
        }
        Ok(claims)
    }

    /// The signing key `kid` (or the only one, when the token names none),
    /// fetching the provider's keys when the cache lacks it.
    async fn key(&self, provider: &Provider, kid: Option<&str>) -> Result<Jwk, OidcError> {
        let mut slot = self.keys.lock().await;
        if let Some(jwk) = slot.keys.as_ref().and_then(|k| pick(k, kid)) {
            return Ok(jwk);
        }
        if slot.keys.is_some() {
            if slot.refetched_at.is_some_and(|at| at.elapsed() < KEYS_REFETCH) {
                return Err(OidcError::Refused(format!("no signing key {kid:?} at the provider")));
            }
            slot.refetched_at = Some(Instant::now());
        }
        let keys = usable_keys(self.get_json(provider.jwks_uri.clone(), "jwks_uri").await?);
        let found = pick(&keys, kid);
        slot.keys = Some(Arc::new(keys));
        found.ok_or_else(|| OidcError::Refused(format!("no signing key {kid:?} at the provider")))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, uri: Uri, what: &str) -> Result<T, OidcError> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| provider_error(what, e))?;
        let (status, body) = self.send(req).await?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!("{what} answered {status}")));
        }
        serde_json::from_slice(&body).map_err(|e| provider_error(what, e))
    }

    /// One request on a connection of its own (a handful per login: not
    /// worth a pool), bounded by `[oidc] timeout` as a whole.
    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), OidcError> {
        let uri = req.uri().clone();
        tokio::time::timeout(self.config.timeout, self.send_unbounded(req))
            .await
            .map_err(|_| OidcError::Provider(format!("{uri}: no answer within {:?}", self.config.timeout)))?
            .map_err(|e| OidcError::Provider(format!("{uri}: {e}")))
    }

    async fn send_unbounded(&self, mut req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let uri = req.uri().clone();
        let host = uri.host().ok_or("no host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = rustls_pki_types::ServerName::try_from(bare.to_string()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(self.config.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *req.uri_mut() = path.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
        req.headers_mut().insert(
            header::HOST,
            http::HeaderValue::from_str(&authority).map_err(|e| e.to_string())?,
        );
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

/// The `iss` values an ID token may carry: the configured issuer, and for
/// Google also `accounts.google.com` without the scheme, which Google
/// documents that its tokens may carry (as go-oidc accepts).
fn accepted_issuers(issuer: &str) -> Vec<&str> {
    const GOOGLE: &str = "https://accounts.google.com";
    if issuer == GOOGLE {
        vec![GOOGLE, "accounts.google.com"]
    } else {
        vec![issuer]
    }
}

/// A provider's key set, each key read on its own: one this crate cannot
/// read (a curve or key type it lacks, an encryption key) is left out, not
/// a reason to refuse the others.
fn usable_keys(mut set: Value) -> JwkSet {
    let keys = match set.get_mut("keys").map(Value::take) {
        Some(Value::Array(keys)) => keys,
        _ => Vec::new(),
    };
    let total = keys.len();
    let keys: Vec<Jwk> = keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .collect();
    if keys.len() < total {
        tracing::debug!(
            skipped = total - keys.len(),
            "OpenID provider keys left out (unreadable)"
        );
    }
    JwkSet { keys }
}

/// The key `kid`; without one, the set's only signing key.
fn pick(keys: &JwkSet, kid: Option<&str>) -> Option<Jwk> {
    match kid {
        Some(kid) => keys.find(kid).cloned(),
        None => match keys.keys.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        },
    }
}

fn https_uri(url: &str, what: &str) -> Result<Uri, OidcError> {
    let uri: Uri = url.parse().map_err(|e| provider_error(what, e))?;
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) || uri.host().is_none() {
        return Err(OidcError::Provider(format!("{what} `{url}` is not an https:// URL")));
    }
    Ok(uri)
}

fn base64_standard(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The start of a provider's error answer, for the log.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// The callback URL on the host the visitor addressed (the session cookie
/// is that host's).
pub fn redirect_uri(authority: &str) -> String {
    format!("https://{authority}{CALLBACK_PATH}")
}

/// The secrets of one flow, derived from the session's CSRF secret.
struct Flow {
    key: aws_lc_rs::hmac::Key,
    id: String,
}

impl Flow {
    fn new(csrf: &str, id: &str) -> Flow {
        Flow {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, csrf.as_bytes()),
            id: id.to_string(),
        }
    }

    fn mac(&self, label: &str, parts: &[&str]) -> String {
        let mut ctx = aws_lc_rs::hmac::Context::with_key(&self.key);
        ctx.update(label.as_bytes());
        for part in std::iter::once(&self.id.as_str()).chain(parts) {
            ctx.update(&[0]);
            ctx.update(part.as_bytes());
        }
        URL_SAFE_NO_PAD.encode(ctx.sign().as_ref())
    }

    /// `id.rd.max_age.signature`: the return path base64url, the step-up
    /// age in seconds (empty without one).
    fn state(&self, rd: &str, max_age: Option<u64>) -> String {
        let age = max_age.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "{}.{}.{age}.{}",
            self.id,
            URL_SAFE_NO_PAD.encode(rd),
            self.mac("sessiongate oidc state", &[rd, &age])
        )
    }

    fn nonce(&self) -> String {
        self.mac("sessiongate oidc nonce", &[])
    }

    /// 43 characters of base64url: the shortest verifier RFC 7636 allows.
    fn verifier(&self) -> String {
        self.mac("sessiongate oidc pkce", &[])
    }

    fn challenge(&self) -> String {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.verifier().as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

/// What a verified `state` carries.
#[derive(Debug, PartialEq, Eq)]
pub struct State {
    /// The flow id, from which the nonce and the PKCE verifier derive.
    pub flow: String,
    /// Where to go once signed in (to be checked same-origin again).
    pub rd: String,
    /// A step-up route's bound on the sign-in's age, in seconds.
    pub max_age: Option<u64>,
}

/// Checks `state` against the session's CSRF secret: what it carries, or
/// `None` when it was not made for this session or was changed.
pub fn verify_state(csrf: &str, state: &str) -> Option<State> {
    let mut parts = state.split('.');
    let (id, rd, age, sig) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || id.is_empty() || csrf.is_empty() {
        return None;
    }
    let rd = String::from_utf8(URL_SAFE_NO_PAD.decode(rd).ok()?).ok()?;
    let expected = Flow::new(csrf, id).mac("sessiongate oidc state", &[&rd, age]);
    if !constant_time_eq(sig, &expected) {
        return None;
    }
    let max_age = match age {
        "" => None,
        age => Some(age.parse().ok()?),
    };
    Some(State {
        flow: id.to_string(),
        rd,
        max_age,
    })
}

/// A step-up's check: the provider says (`auth_time`) it signed the user
/// in at most `max_age` seconds ago (with the clock skew allowed). A
/// provider that did not re-authenticate, or a browser that dropped the
/// authorization request's `max_age`, fails it.
/// `now` in Unix seconds.
fn signed_in_within(claims: &Map<String, Value>, max_age: u64, now: u64) -> Result<(), OidcError> {
    let auth_time = claims
        .get("auth_time")
        .and_then(Value::as_u64)
        .ok_or_else(|| OidcError::Refused("a step-up sign-in's token has no auth_time".into()))?;
    if now.saturating_sub(auth_time) > max_age.saturating_add(LEEWAY_SECS) {
        return Err(OidcError::Refused(format!(
            "the provider signed the user in {}s ago; this route allows {max_age}s",
            now.saturating_sub(auth_time)
        )));
    }
    Ok(())
}

/// A claim fit to travel as a header value: a string of 1 to
/// [`MAX_CLAIM_CHARS`] characters, none of them a control character.
fn header_safe(value: &Value) -> Option<String> {
    let s = value.as_str()?;
    let fits = !s.is_empty() && s.chars().count() <= MAX_CLAIM_CHARS && !s.chars().any(char::is_control);
    fits.then(|| s.to_string())
}

/// The identity the claims name: the user from `username_claim`
/// (required), the email from `email_claim` unless the provider says it is
/// unverified, the groups from `groups_claim` (a list or one string; a
/// group with a comma is left out, since the header joins them with commas).
fn identity(config: &OidcConfig, claims: &Map<String, Value>) -> Result<Identity, OidcError> {
    let user = claims
        .get(&config.username_claim)
        .and_then(header_safe)
        .ok_or_else(|| {
            OidcError::Refused(format!(
                "the claim `{}` is missing or not a short printable string",
                config.username_claim
            ))
        })?;
    let verified = claims.get("email_verified").and_then(Value::as_bool) != Some(false);
    let email = claims
        .get(&config.email_claim)
        .and_then(header_safe)
        .filter(|_| verified);
    let groups = match claims.get(&config.groups_claim) {
        Some(Value::Array(list)) => list.iter().filter_map(header_safe).collect(),
        Some(one @ Value::String(_)) => header_safe(one).into_iter().collect(),
        _ => Vec::new(),
    };
    let (groups, dropped): (Vec<String>, Vec<String>) = groups.into_iter().partition(|g: &String| !g.contains(','));
    if !dropped.is_empty() {
        tracing::warn!(user = %user, dropped = ?dropped, "OpenID groups with a comma left out");
    }
    Ok(Identity { user, email, groups })
}

/// `allowed_email_domains` (a verified email in one of them) and
/// `allowed_groups` (a member of one of them), when set.
fn allowed(config: &OidcConfig, claims: &Map<String, Value>, identity: &Identity) -> Result<(), OidcError> {
    if !config.allowed_email_domains.is_empty() {
        let verified = claims.get("email_verified").and_then(Value::as_bool) == Some(true);
        let domain = identity
            .email
            .as_deref()
            .filter(|_| verified)
            .and_then(|e| e.rsplit_once('@'))
            .map(|(_, d)| d.to_ascii_lowercase());
        if !domain.is_some_and(|d| config.allowed_email_domains.contains(&d)) {
            return Err(OidcError::NotAllowed(format!(
                "{} has no verified email in allowed_email_domains",
                identity.user
            )));
        }
    }
    if !config.allowed_groups.is_empty() && !identity.groups.iter().any(|g| config.allowed_groups.contains(g)) {
        return Err(OidcError::NotAllowed(format!(
            "{} is in none of allowed_groups",
            identity.user
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_verifies_only_for_its_session_and_unchanged() {
        let flow = Flow::new("secret-a", "flow1");
        let state = flow.state("/cart?x=1", None);
        let expected = State {
            flow: "flow1".into(),
            rd: "/cart?x=1".into(),
            max_age: None,
        };
        assert_eq!(verify_state("secret-a", &state), Some(expected));
        assert_eq!(verify_state("secret-b", &state), None);
        let forged = state.replacen(
            &URL_SAFE_NO_PAD.encode("/cart?x=1"),
            &URL_SAFE_NO_PAD.encode("/admin"),
            1,
        );
        assert_eq!(verify_state("secret-a", &forged), None);
        for bad in ["", "a.b", "a.b.c", "a.b.c.d.e", "...", "flow1.%%%..x"] {
            assert_eq!(verify_state("secret-a", bad), None, "{bad}");
        }
        // A step-up's age is signed too: dropping or changing it breaks the state.
        let step_up = flow.state("/admin", Some(300));
        assert_eq!(verify_state("secret-a", &step_up).and_then(|s| s.max_age), Some(300));
        assert_eq!(verify_state("secret-a", &step_up.replacen(".300.", "..", 1)), None);
        assert_eq!(verify_state("secret-a", &step_up.replacen(".300.", ".99999.", 1)), None);
    }

    #[test]
    fn a_step_up_needs_a_recent_auth_time() {
        let now = now_ms() / 1000;
        let at = |t: u64| claims(serde_json::json!({ "auth_time": t }));
        // One `now` for the token and the check: read twice, a second boundary
        // between the reads moved the limit case by one (a CI flake).
        assert!(signed_in_within(&at(now - 10), 300, now).is_ok());
        assert!(signed_in_within(&at(now - 300 - LEEWAY_SECS), 300, now).is_ok());
        assert!(signed_in_within(&at(now - 301 - LEEWAY_SECS), 300, now).is_err());
        assert!(signed_in_within(&claims(serde_json::json!({})), 300, now).is_err());
        assert!(signed_in_within(&claims(serde_json::json!({"auth_time": "recent"})), 300, now).is_err());
    }

    #[test]
    fn only_google_has_a_second_spelling_of_its_issuer() {
        assert_eq!(
            accepted_issuers("https://accounts.google.com"),
            ["https://accounts.google.com", "accounts.google.com"]
        );
        assert_eq!(accepted_issuers("https://idp.test"), ["https://idp.test"]);
        assert_eq!(
            accepted_issuers("https://accounts.google.com/"),
            ["https://accounts.google.com/"]
        );
    }

    #[test]
    fn a_key_set_keeps_the_keys_it_can_read() {
        let set = serde_json::json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": 12, "x": 1},
            {"kty": "EC", "crv": "P-256", "kid": "good", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            "not a key"
        ]});
        let keys = usable_keys(set);
        assert_eq!(keys.keys.len(), 1);
        assert!(keys.find("good").is_some());
        assert!(pick(&keys, None).is_some(), "the only key serves a token without kid");
        assert!(usable_keys(serde_json::json!({"nokeys": 1})).keys.is_empty());
    }

    #[test]
    fn pkce_verifier_is_43_chars_and_the_challenge_its_sha256() {
        let flow = Flow::new("s", "f");
        assert_eq!(flow.verifier().len(), 43);
        assert_ne!(flow.nonce(), flow.verifier());
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, flow.verifier().as_bytes());
        assert_eq!(flow.challenge(), URL_SAFE_NO_PAD.encode(expected.as_ref()));
    }

    fn config() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.test".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scopes: vec!["openid".into()],
            username_claim: "preferred_username".into(),
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            name: "SSO".into(),
            timeout: Duration::from_secs(1),
            allowed_email_domains: Vec::new(),
            allowed_groups: Vec::new(),
            logout_at_provider: false,
            max_concurrent: 1,
            tls: Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| unreachable!()),
            ),
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn identity_takes_only_header_safe_claims() {
        let c = config();
        let id = identity(
            &c,
            &claims(serde_json::json!({
                "preferred_username": "alice", "email": "a@x.test", "email_verified": true,
                "groups": ["staff", "a,b", "line\nbreak", 7]
            })),
        );
        let id = id.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((id.user.as_str(), id.email.as_deref()), ("alice", Some("a@x.test")));
        assert_eq!(id.groups, vec!["staff".to_string()]);
        let unverified = identity(
            &c,
            &claims(serde_json::json!({"preferred_username": "bob", "email": "b@x.test", "email_verified": false, "groups": "ops"})),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(unverified.email, None);
        assert_eq!(unverified.groups, vec!["ops".to_string()]);
        for bad in [
            serde_json::json!({"sub": "x"}),
            serde_json::json!({"preferred_username": ""}),
            serde_json::json!({"preferred_username": "a\r\nX-Evil: 1"}),
            serde_json::json!({"preferred_username": 42}),
            serde_json::json!({"preferred_username": "x".repeat(257)}),
        ] {
            assert!(identity(&c, &claims(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn allowed_domains_need_a_verified_email_and_allowed_groups_a_member() {
        let mut c = config();
        c.allowed_email_domains = vec!["example.com".into()];
        let check = |c: &OidcConfig, v: Value| {
            let claims = claims(v);
            let id = identity(c, &claims).unwrap_or_else(|e| panic!("{e}"));
            allowed(c, &claims, &id).is_ok()
        };
        let user = |email: &str, verified: Option<bool>| {
            let mut v = serde_json::json!({"preferred_username": "u", "email": email});
            if let Some(b) = verified {
                v["email_verified"] = Value::Bool(b);
            }
            v
        };
        assert!(check(&c, user("a@Example.COM", Some(true))));
        assert!(!check(&c, user("a@example.com", Some(false))));
        assert!(!check(&c, user("a@example.com", None)));
        assert!(!check(&c, user("a@example.com.evil.test", Some(true))));
        assert!(!check(&c, user("a@sub.example.com", Some(true))));
        c.allowed_email_domains.clear();
        c.allowed_groups = vec!["staff".into()];
        assert!(check(
            &c,
            serde_json::json!({"preferred_username": "u", "groups": ["x", "staff"]})
        ));
        assert!(!check(
            &c,
            serde_json::json!({"preferred_username": "u", "groups": ["Staff"]})
        ));
        assert!(!check(&c, serde_json::json!({"preferred_username": "u"})));
    }
}
