//! `TestIdp`: a mock OpenID Connect provider (authorization code flow with PKCE) over HTTPS,
//! for the gateway's OIDC login tests.
//!
//! | endpoint | behaviour |
//! |---|---|
//! | `GET /.well-known/openid-configuration` | discovery document (fetches counted) |
//! | `GET /jwks` | every signing key ever published, as ES256 JWKs (fetches counted) |
//! | `GET /authorize` | checks the request, then 302 to `redirect_uri` with a single-use code |
//! | `POST /token` | client authentication, code, `redirect_uri` and PKCE checked; an ES256 ID token |
//! | `/logout` | 200 `signed out` |
//!
//! It is strict where a real provider is (RFC 6749, RFC 7636, OpenID Connect Core), so that a
//! gateway bug shows up as a refusal here. [`Tamper`] makes the token endpoint misbehave in one
//! way at a time, to prove the gateway refuses each kind of bad ID token.
//!
//! Everything runs on the test's runtime; the server stops accepting when the `TestIdp` drops.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
    Engine,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, header, service::service_fn, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{net::TcpListener, task::JoinHandle};

use super::client::{tls_client_config, ALPN_H1};

const CLIENT_ID: &str = "sessiongate-test";
const CLIENT_SECRET: &str = "test-secret";

/// Lifetime of an ID token, in seconds.
const ID_TOKEN_TTL: u64 = 300;

/// A token request body larger than this is refused: no real one comes close.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// How the token endpoint (and, for [`Tamper::Deny`], the authorize endpoint) misbehaves.
/// Each variant changes exactly one thing about an otherwise valid answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tamper {
    /// Everything as it should be.
    #[default]
    None,
    /// `aud` is `someone-else`.
    WrongAudience,
    /// `iss` is the issuer followed by `/other`.
    WrongIssuer,
    /// `exp` an hour ago (`iat` 3900 s ago).
    Expired,
    /// `nonce` is `not-the-nonce`.
    WrongNonce,
    /// Signed by a key not in the JWKS, under the kid `unknown-kid`.
    UnknownKey,
    /// HS256 with the client secret as key, under the current kid: an algorithm-confusion attempt.
    HmacAlg,
    /// The authorize endpoint redirects with `error=access_denied`, as when the user says no.
    Deny,
    /// The token endpoint answers 400 `{"error":"invalid_grant"}`.
    TokenError,
}

/// One request to the token endpoint, as received.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The form fields in the order sent (decoded).
    pub form: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl TokenRequest {
    /// The first value of form field `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A running mock provider on `https://localhost:<random port>`; stops accepting when dropped.
pub struct TestIdp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Holds the certificate and its key; removed when the provider drops.
    cert_dir: TempDir,
    server: JoinHandle<()>,
}

/// What the server's connection tasks and the test share.
struct Shared {
    issuer: String,
    state: Mutex<State>,
    /// While `true`, the token endpoint holds each request (once recorded) until it turns
    /// `false`: a provider slow to answer, without sleeps ([`TestIdp::hold_tokens`]).
    hold: tokio::sync::watch::Sender<bool>,
    /// How many token requests have been recorded, for tests that await one.
    arrived: tokio::sync::watch::Sender<usize>,
}

impl Shared {
    /// The state; a panicked test thread does not make the provider panic too.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    /// What the next approvals put in the ID token besides the protocol claims.
    claims: Value,
    tamper: Tamper,
    token_requests: Vec<TokenRequest>,
    discovery_fetches: usize,
    jwks_fetches: usize,
    /// Every key ever published; the last one signs.
    keys: Vec<SigningKey>,
    /// Codes issued and not yet presented, each with what the authorize request bound to it.
    codes: HashMap<String, Grant>,
}

struct SigningKey {
    kid: String,
    /// PKCS#8 DER, what `EncodingKey::from_ec_der` takes.
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate a P-256 key");
        // The uncompressed point: 0x04 || x || y.
        let point = pair.public_key_raw();
        assert_eq!(point.len(), 65, "a P-256 public key point");
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        });
        SigningKey {
            kid: kid.to_owned(),
            pkcs8: pair.serialize_der(),
            jwk,
        }
    }
}

/// What an authorization code stands for.
struct Grant {
    nonce: String,
    code_challenge: String,
    redirect_uri: String,
    claims: Value,
    /// The authorize request asked for a sign-in at most this old (`max_age`): the
    /// provider signs the user in again, so the ID token's `auth_time` is now, unless
    /// the claims set one of their own (a provider that ignores `max_age`).
    max_age: bool,
}

impl TestIdp {
    /// HTTPS on 127.0.0.1:0 with a fresh self-signed certificate for `localhost` and `127.0.0.1`.
    /// Client id [`CLIENT_ID`], client secret [`CLIENT_SECRET`].
    pub async fn start() -> TestIdp {
        let cert_dir = tempfile::tempdir().expect("temp dir for the IdP certificate");
        let hosts = ["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (cert, key) = sessiongate::tls::write_self_signed(cert_dir.path(), &hosts).expect("IdP certificate");
        let chain = CertificateDer::pem_file_iter(&cert)
            .expect("read IdP certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse IdP certificate");
        let key = PrivateKeyDer::from_pem_file(&key).expect("read IdP key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("IdP TLS config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the test IdP");
        let addr = listener.local_addr().expect("test IdP address");
        let shared = Arc::new(Shared {
            issuer: format!("https://localhost:{}", addr.port()),
            state: Mutex::new(State {
                claims: default_claims(),
                keys: vec![SigningKey::generate("key-1")],
                ..State::default()
            }),
            hold: tokio::sync::watch::channel(false).0,
            arrived: tokio::sync::watch::channel(0).0,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let server = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        TestIdp {
            addr,
            shared,
            cert_dir,
            server,
        }
    }

    /// `https://localhost:PORT`, without a trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The certificate to trust (PEM); it is self-signed, so it is its own CA.
    pub fn ca_pem(&self) -> PathBuf {
        self.cert_dir.path().join("cert.pem")
    }

    /// The one client this provider knows: `sessiongate-test`.
    pub fn client_id(&self) -> &'static str {
        CLIENT_ID
    }

    /// Its secret: `test-secret`.
    pub fn client_secret(&self) -> &'static str {
        CLIENT_SECRET
    }

    /// The gateway's `[oidc]` section for this provider (button label "Test IdP"), with the
    /// raw TOML lines `extra` inside it. Unless `extra` sets `allowed_email_domains` or
    /// `allowed_groups`, it lets any account of the provider in (`allow_any_account`).
    pub fn gateway_section(&self, extra: &str) -> String {
        let any = if extra.contains("allowed_") {
            ""
        } else {
            "allow_any_account = true\n"
        };
        format!(
            "[oidc]\nissuer = {}\nclient_id = {}\nclient_secret = {}\nca = {}\nname = \"Test IdP\"\ntimeout = \"5s\"\n{any}{extra}\n",
            super::quoted(&self.issuer()),
            super::quoted(CLIENT_ID),
            super::quoted(CLIENT_SECRET),
            super::quoted(&self.ca_pem().display().to_string()),
        )
    }

    /// The claims the next approvals put in the ID token besides `iss`, `aud`, `exp`, `iat`
    /// and `nonce` (which win over any of the same name here). Must be a JSON object.
    pub fn set_claims(&self, claims: Value) {
        assert!(claims.is_object(), "ID token claims must be a JSON object: {claims}");
        self.shared.state().claims = claims;
    }

    /// How the next responses misbehave, until set otherwise.
    pub fn set_tamper(&self, t: Tamper) {
        self.shared.state().tamper = t;
    }

    /// Every token request received so far, in order, including refused ones.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.shared.state().token_requests.clone()
    }

    /// Holds every token request from now on (after recording it) until `release_tokens`.
    pub fn hold_tokens(&self) {
        self.shared.hold.send_replace(true);
    }

    /// Lets the held token requests (and later ones) be answered.
    pub fn release_tokens(&self) {
        self.shared.hold.send_replace(false);
    }

    /// Waits until `n` token requests in all have been recorded.
    pub async fn token_requests_arrived(&self, n: usize) {
        let mut arrived = self.shared.arrived.subscribe();
        arrived
            .wait_for(|&count| count >= n)
            .await
            .expect("the provider is running");
    }

    /// How many times the discovery document was fetched.
    pub fn discovery_fetches(&self) -> usize {
        self.shared.state().discovery_fetches
    }

    /// How many times the JWKS was fetched.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.state().jwks_fetches
    }

    /// Publishes a new signing key (new kid) and signs with it from now on; the old keys stay
    /// in the JWKS, as during a real provider's key rotation.
    pub fn rotate_key(&self) {
        let mut state = self.shared.state();
        let kid = format!("key-{}", state.keys.len() + 1);
        state.keys.push(SigningKey::generate(&kid));
    }

    /// A reqwest client that trusts [`Self::ca_pem`], reaches `localhost` at this provider
    /// and does not follow redirects.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls_client_config(&self.ca_pem(), ALPN_H1))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .resolve("localhost", self.addr)
            .build()
            .expect("build the IdP test client")
    }

    /// The browser at the provider: GETs `authorize_url` (where the gateway redirected to),
    /// requires a 302 and returns its `Location`: the gateway's callback with `code` and
    /// `state`, or with `error=access_denied`.
    pub async fn approve(&self, authorize_url: &str) -> String {
        let response = self
            .client()
            .get(authorize_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {authorize_url}: {e}"));
        let status = response.status();
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        match location {
            Some(location) if status == StatusCode::FOUND => location,
            _ => {
                let body = response.text().await.unwrap_or_default();
                panic!("the IdP answered {authorize_url} with {status}: {body}")
            }
        }
    }
}

impl Drop for TestIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn default_claims() -> Value {
    json!({
        "sub": "u-1001",
        "preferred_username": "alice",
        "email": "alice@example.test",
        "email_verified": true,
        "groups": ["staff"],
    })
}

async fn accept_loop(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, shared) = (acceptor.clone(), shared.clone());
        tokio::spawn(async move {
            // A failed handshake (a client that does not trust us) serves nothing.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = service_fn(move |req| handle(req, shared.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type Reply = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Reply, Infallible> {
    let reply = match (req.method(), req.uri().path()) {
        (&Method::GET, "/.well-known/openid-configuration") => {
            shared.state().discovery_fetches += 1;
            json_reply(StatusCode::OK, &discovery(&shared.issuer))
        }
        (&Method::GET, "/jwks") => {
            let mut state = shared.state();
            state.jwks_fetches += 1;
            let keys: Vec<Value> = state.keys.iter().map(|k| k.jwk.clone()).collect();
            json_reply(StatusCode::OK, &json!({ "keys": keys }))
        }
        (&Method::GET, "/authorize") => authorize(req.uri().query().unwrap_or_default(), &shared),
        (&Method::POST, "/token") => token(req, &shared).await,
        (_, "/logout") => text_reply(StatusCode::OK, "signed out"),
        _ => text_reply(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(reply)
}

fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "end_session_endpoint": format!("{issuer}/logout"),
    })
}

/// `GET /authorize`: the provider's login page, with the user approving at once.
fn authorize(query: &str, shared: &Shared) -> Reply {
    let params = match Params::parse(query.as_bytes()) {
        Ok(params) => params,
        Err(problem) => return text_reply(StatusCode::BAD_REQUEST, &problem),
    };
    let checked = (|| {
        params.require("response_type", "code")?;
        params.require("client_id", CLIENT_ID)?;
        params.require("code_challenge_method", "S256")?;
        if !params.get("scope")?.split(' ').any(|s| s == "openid") {
            return Err("scope lacks openid".to_owned());
        }
        let redirect_uri = params.get("redirect_uri")?;
        // RFC 6749 3.1.2: an absolute URI.
        if !redirect_uri.starts_with("https://") && !redirect_uri.starts_with("http://") {
            return Err(format!("redirect_uri is not absolute: {redirect_uri}"));
        }
        Ok((
            redirect_uri,
            params.get("state")?,
            params.get("nonce")?,
            params.get("code_challenge")?,
        ))
    })();
    let (redirect_uri, state, nonce, code_challenge) = match checked {
        Ok(checked) => checked,
        Err(problem) => return text_reply(StatusCode::BAD_REQUEST, &problem),
    };

    let mut idp = shared.state();
    let answer: Vec<(&str, String)> = if idp.tamper == Tamper::Deny {
        vec![("error", "access_denied".to_owned()), ("state", state.to_owned())]
    } else {
        let code = random_token();
        let grant = Grant {
            nonce: nonce.to_owned(),
            code_challenge: code_challenge.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
            claims: idp.claims.clone(),
            max_age: query.contains("max_age="),
        };
        idp.codes.insert(code.clone(), grant);
        vec![("code", code), ("state", state.to_owned())]
    };
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(answer)
        .finish();
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, format!("{redirect_uri}{separator}{query}"))
        .body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| text_reply(StatusCode::BAD_REQUEST, "redirect_uri is not a valid header value"))
}

/// `POST /token`: the code exchange (RFC 6749 4.1.3, RFC 7636 4.6).
async fn token(req: Request<Incoming>, shared: &Shared) -> Reply {
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_FORM_BYTES).collect().await else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unreadable body");
    };
    let body = body.to_bytes();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let count = {
        let mut state = shared.state();
        state.token_requests.push(TokenRequest {
            form: form_urlencoded::parse(&body).into_owned().collect(),
            authorization: authorization.clone(),
        });
        state.token_requests.len()
    };
    shared.arrived.send_replace(count);
    let mut hold = shared.hold.subscribe();
    // The sender lives as long as `shared`, which this handler holds.
    let _ = hold.wait_for(|held| !held).await;

    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "not a form");
    }
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(problem) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &problem),
    };
    let basic_ok = authorization.as_deref().is_some_and(basic_is_client);
    let post_ok = params.get("client_id").is_ok_and(|id| id == CLIENT_ID)
        && params.get("client_secret").is_ok_and(|secret| secret == CLIENT_SECRET);
    if !basic_ok && !post_ok {
        return json_reply(StatusCode::UNAUTHORIZED, &json!({ "error": "invalid_client" }));
    }

    let mut idp = shared.state();
    if idp.tamper == Tamper::TokenError {
        return json_reply(StatusCode::BAD_REQUEST, &json!({ "error": "invalid_grant" }));
    }
    let grant = (|| {
        params.require("grant_type", "authorization_code")?;
        // A code is spent by any attempt to use it, right or wrong (RFC 6749 4.1.2).
        let grant = idp.codes.remove(params.get("code")?).ok_or("unknown or spent code")?;
        if params.get("redirect_uri")? != grant.redirect_uri {
            return Err("redirect_uri differs from the authorize request's".to_owned());
        }
        let verifier = params.get("code_verifier")?;
        // RFC 7636 4.1: 43 to 128 unreserved characters.
        let well_formed = (43..=128).contains(&verifier.len())
            && verifier
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !well_formed {
            return Err("code_verifier is not 43-128 unreserved characters".to_owned());
        }
        if pkce_s256(verifier) != grant.code_challenge {
            return Err("code_verifier does not match code_challenge".to_owned());
        }
        Ok(grant)
    })();
    match grant {
        Ok(grant) => {
            let id_token = id_token(&idp, &shared.issuer, grant);
            json_reply(
                StatusCode::OK,
                &json!({
                    "access_token": "opaque-at",
                    "token_type": "Bearer",
                    "expires_in": ID_TOKEN_TTL,
                    "id_token": id_token,
                }),
            )
        }
        Err(problem) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", &problem),
    }
}

/// Whether `Authorization` is `Basic` with this client's credentials, each form-urlencoded
/// before joining (RFC 6749 2.3.1).
fn basic_is_client(authorization: &str) -> bool {
    let Some(encoded) = authorization.strip_prefix("Basic ") else {
        return false;
    };
    let Some(decoded) = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
    else {
        return false;
    };
    let Some((id, secret)) = decoded.split_once(':') else {
        return false;
    };
    form_decode(id) == CLIENT_ID && form_decode(secret) == CLIENT_SECRET
}

fn form_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The ID token for `grant`, signed by the current key unless [`State::tamper`] says otherwise.
fn id_token(state: &State, issuer: &str, grant: Grant) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut claims = match grant.claims {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    claims.insert("iss".into(), json!(issuer));
    claims.insert("aud".into(), json!(CLIENT_ID));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + ID_TOKEN_TTL));
    claims.insert("nonce".into(), json!(grant.nonce));
    if grant.max_age && !claims.contains_key("auth_time") {
        claims.insert("auth_time".into(), json!(now));
    }

    let current = state.keys.last().expect("the IdP always has a key");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(current.kid.clone());
    let mut key = EncodingKey::from_ec_der(&current.pkcs8);
    match state.tamper {
        Tamper::None | Tamper::Deny | Tamper::TokenError => {}
        Tamper::WrongAudience => {
            claims.insert("aud".into(), json!("someone-else"));
        }
        Tamper::WrongIssuer => {
            claims.insert("iss".into(), json!(format!("{issuer}/other")));
        }
        Tamper::Expired => {
            claims.insert("iat".into(), json!(now - 3900));
            claims.insert("exp".into(), json!(now - 3600));
        }
        Tamper::WrongNonce => {
            claims.insert("nonce".into(), json!("not-the-nonce"));
        }
        Tamper::UnknownKey => {
            let stranger = SigningKey::generate("unknown-kid");
            header.kid = Some(stranger.kid);
            key = EncodingKey::from_ec_der(&stranger.pkcs8);
        }
        Tamper::HmacAlg => {
            header.alg = Algorithm::HS256;
            key = EncodingKey::from_secret(CLIENT_SECRET.as_bytes()).expect("an HMAC key");
        }
    }
    jsonwebtoken::encode(&header, &claims, &key).expect("sign the ID token")
}

/// BASE64URL-NOPAD(SHA-256(verifier)), the S256 code challenge (RFC 7636 4.2).
fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// 32 random bytes, base64url: an authorization code.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("random bytes");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Request parameters, each at most once (RFC 6749 3.1 and 3.2).
struct Params(HashMap<String, String>);

impl Params {
    fn parse(input: &[u8]) -> Result<Params, String> {
        let mut params = HashMap::new();
        for (name, value) in form_urlencoded::parse(input).into_owned() {
            if params.contains_key(&name) {
                return Err(format!("{name} given more than once"));
            }
            params.insert(name, value);
        }
        Ok(Params(params))
    }

    /// The non-empty value of `name`, or the problem to report.
    fn get(&self, name: &str) -> Result<&str, String> {
        match self.0.get(name) {
            Some(value) if !value.is_empty() => Ok(value),
            _ => Err(format!("{name} missing")),
        }
    }

    fn require(&self, name: &str, expected: &str) -> Result<(), String> {
        let value = self.get(name)?;
        if value == expected {
            Ok(())
        } else {
            Err(format!("{name} is {value:?}, not {expected:?}"))
        }
    }
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Reply {
    json_reply(status, &json!({ "error": error, "error_description": description }))
}

fn text_reply(status: StatusCode, body: &str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}
