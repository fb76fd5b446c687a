//! The gateway's own endpoints under `/.sessiongate/`, answered on every
//! host before routing:
//! - `GET  /.sessiongate/login`   the form (issues an anonymous session for its CSRF secret)
//! - `POST /.sessiongate/login`   verify, rotate the token, 303 to a same-origin `rd`
//! - `POST /.sessiongate/logout`  CSRF-checked; delete the session, clear the cookie
//! - `GET  /.sessiongate/session` JSON about the current session, for single-page apps
//! - `GET  /.sessiongate/oidc/start`    with `[oidc]`: off to the provider's sign-in
//! - `GET  /.sessiongate/oidc/callback` with `[oidc]`: verify, rotate the token, 303 to `rd`

use super::oidc::{self, Oidc, OidcError};
use super::{constant_time_eq, pages, throttle::Throttle, LoginError, Users};
use crate::error::GatewayError;
use crate::proxy::body::{self, Body};
use crate::session::record::{EntryDigest, Identity, LoginSource, SessionRecord};
use crate::session::{Live, Lookup, SessionError, Sessions};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::IpAddr;
use std::sync::Arc;

pub const PREFIX: &str = "/.sessiongate/";
/// Largest login or logout form we read.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Everything the endpoints need.
pub struct Auth {
    pub users: Users,
    pub throttle: Throttle,
    /// Sign-in through an OpenID Connect provider, when `[oidc]` is set.
    pub oidc: Option<Arc<Oidc>>,
}

impl Auth {
    /// Fails if the password-hashing threads cannot be placed on `[login] hash_cpus`.
    pub fn new(config: &crate::config::Config) -> std::io::Result<Auth> {
        Ok(Auth {
            users: Users::new(&config.users, &config.login)?,
            throttle: Throttle::new(config.login.max_failures, config.login.failure_window),
            oidc: config.oidc.clone().map(|c| Arc::new(Oidc::new(c))),
        })
    }

    /// The login page: the password form while `[[users]]` has anyone, the
    /// provider's button with `[oidc]`.
    fn page(&self, csrf: &str, rd: &str, error: Option<&str>) -> String {
        self.page_for_age(csrf, rd, error, None)
    }

    /// The login page for a step-up route's `max_age` (seconds).
    fn page_for_age(&self, csrf: &str, rd: &str, error: Option<&str>, max_age: Option<u64>) -> String {
        pages::login(&pages::Login {
            csrf,
            rd,
            error,
            passwords: self.oidc.is_none() || self.users.has_any(),
            sso: self.oidc.as_deref().map(Oidc::name),
            max_age,
        })
    }
}

/// One request to a gateway endpoint.
pub struct EndpointRequest<'a> {
    pub sessions: &'a Sessions,
    pub auth: &'a Auth,
    pub client_ip: IpAddr,
    /// The host the client addressed, with port, for the same-origin check.
    pub authority: Option<String>,
}

impl From<SessionError> for GatewayError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::UserLimit(e) => GatewayError::TooManySessions(e.to_string()),
            SessionError::NewSessionLimit { retry_after } => GatewayError::NewSessionLimit(retry_after),
            e => GatewayError::StoreUnavailable(e.to_string()),
        }
    }
}

const TOO_MANY_SESSIONS: &str =
    "This account is signed in in too many places. Sign out of one of them, or wait for one to expire.";

/// Dispatches `/.sessiongate/*`.
pub async fn handle(
    ep: EndpointRequest<'_>,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let name = &path[PREFIX.len()..];
    match (req.method(), name) {
        (&Method::GET | &Method::HEAD, "login") => login_form(&ep, &req).await,
        (&Method::POST, "login") => login_submit(&ep, req).await,
        (&Method::POST, "logout") => logout(&ep, req).await,
        (&Method::GET | &Method::HEAD, "session") => session_info(&ep, &req).await,
        (&Method::GET | &Method::HEAD, "oidc/start") => oidc_start(&ep, &req).await,
        // Not HEAD: a callback spends its code.
        (&Method::GET, "oidc/callback") => oidc_callback(&ep, &req).await,
        (_, "oidc/start" | "oidc/callback") if ep.auth.oidc.is_some() => Ok(crate::error::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        )),
        (_, "login" | "logout" | "session") => Ok(crate::error::plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method Not Allowed",
        )),
        _ => Err(GatewayError::NoRoute),
    }
}

/// The CSRF secret of the current session, or of a fresh anonymous one
/// (with its cookie to set). The secret is kept in the store, not in the
/// session cache: a current session's is read from there, a new one's is
/// in hand.
async fn form_session(
    ep: &EndpointRequest<'_>,
    headers: &HeaderMap,
) -> Result<(String, Option<HeaderValue>), GatewayError> {
    match ep.sessions.lookup(headers, ep.client_ip).await? {
        Lookup::Valid(live) => {
            let csrf = ep.sessions.stored(&live).await?.map(|r| r.csrf).unwrap_or_default();
            Ok((csrf, None))
        }
        Lookup::None { .. } => {
            let (token, _, csrf) = ep.sessions.issue_with_csrf(ep.client_ip, headers).await?;
            Ok((csrf, Some(ep.sessions.set_cookie(&token))))
        }
    }
}

async fn login_form(ep: &EndpointRequest<'_>, req: &Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (csrf, cookie) = form_session(ep, req.headers()).await?;
    let rd = query_param(req.uri().query(), "rd")
        .map(|r| safe_redirect(&r))
        .unwrap_or_else(|| "/".into());
    let max_age = max_age_param(req.uri().query());
    // The provider is the only way in: straight there.
    if let Some(oidc) = ep.auth.oidc.as_deref().filter(|_| !ep.auth.users.has_any()) {
        return to_provider(ep, oidc, &csrf, cookie, &rd, max_age).await;
    }
    let again = max_age.map(|_| "Sign in again to continue.");
    let mut resp = html(StatusCode::OK, ep.auth.page_for_age(&csrf, &rd, again, max_age));
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

async fn login_submit(ep: &EndpointRequest<'_>, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let form = read_form(incoming).await?;
    let mut resp = login_with_form(ep, &parts, &form).await?;
    // The whole form was read: the connection can carry the next request.
    resp.extensions_mut().insert(body::BodyRead);
    Ok(resp)
}

async fn login_with_form(
    ep: &EndpointRequest<'_>,
    parts: &http::request::Parts,
    form: &[(String, String)],
) -> Result<Response<Body>, GatewayError> {
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let (username, password, csrf) = (field("username"), field("password"), field("csrf"));
    let rd = safe_redirect(field("rd"));
    let expired = || forbidden("Your sign-in form expired. Reload the page and try again.");
    let Lookup::Valid(live) = ep.sessions.lookup(&parts.headers, ep.client_ip).await? else {
        return Ok(expired());
    };
    let record = match ep.sessions.stored(&live).await? {
        Some(record) if constant_time_eq(csrf, &record.csrf) => record,
        _ => return Ok(expired()),
    };
    if let Some(wait) = ep.auth.throttle.blocked(ep.client_ip, username) {
        tracing::warn!(event = "login_throttled", client_ip = %ep.client_ip, user = username);
        return Ok(throttled(ep, &record.csrf, &rd, wait));
    }
    match ep.auth.users.authenticate(username, password).await {
        Ok(user) => {
            ep.auth.throttle.succeeded(username);
            let identity = Identity {
                user: user.name.clone(),
                email: user.email.clone(),
                groups: user.groups.clone(),
            };
            let source = LoginSource::Password(EntryDigest::of(&user));
            sign_in(ep, &parts.headers, &live, record, identity, source, &rd).await
        }
        Err(LoginError::Busy) => Err(GatewayError::StoreUnavailable("login capacity exhausted".into())),
        Err(LoginError::Invalid) => {
            ep.auth.throttle.failed(ep.client_ip, username);
            ep.sessions.metrics().login("failed");
            tracing::warn!(event = "login_failed", client_ip = %ep.client_ip, user = username);
            Ok(html(
                StatusCode::UNAUTHORIZED,
                ep.auth.page(&record.csrf, &rd, Some("Invalid username or password.")),
            ))
        }
    }
}

/// 429 with `Retry-After` and the login page: too many failed sign-ins.
fn throttled(ep: &EndpointRequest<'_>, csrf: &str, rd: &str, wait: std::time::Duration) -> Response<Body> {
    ep.sessions.metrics().login("throttled");
    let mut resp = html(
        StatusCode::TOO_MANY_REQUESTS,
        ep.auth
            .page(csrf, rd, Some("Too many failed sign-ins. Try again later.")),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
    resp
}

/// Rotates the session to a new token for `identity` (the session's id and
/// data carry over) and sends the browser on to `rd` with the new cookie.
async fn sign_in(
    ep: &EndpointRequest<'_>,
    headers: &HeaderMap,
    live: &Live,
    record: SessionRecord,
    identity: Identity,
    source: LoginSource,
    rd: &str,
) -> Result<Response<Body>, GatewayError> {
    let csrf = record.csrf.clone();
    let user = identity.user.clone();
    let rotated = ep
        .sessions
        .rotate_login(live, record, identity, source, ep.client_ip, headers)
        .await;
    let (token, new) = match rotated {
        Ok(new) => new,
        Err(SessionError::UserLimit(_)) => {
            // The credentials were right: only now may the answer say
            // anything about the account's sessions.
            ep.sessions.metrics().login("session_limit");
            return Ok(html(
                StatusCode::TOO_MANY_REQUESTS,
                ep.auth.page(&csrf, rd, Some(TOO_MANY_SESSIONS)),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    ep.sessions.metrics().login("succeeded");
    let source = match source {
        LoginSource::Password(_) => "password",
        LoginSource::Provider => "oidc",
    };
    tracing::info!(event = "login", user = %user, source, session_id = %new.record.id, client_ip = %ep.client_ip);
    let mut resp = redirect(StatusCode::SEE_OTHER, rd);
    resp.headers_mut()
        .append(header::SET_COOKIE, ep.sessions.set_cookie(&token));
    Ok(resp)
}

/// `GET /.sessiongate/oidc/start?rd=/path`: the "sign in with" button.
async fn oidc_start(ep: &EndpointRequest<'_>, req: &Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let Some(oidc) = ep.auth.oidc.as_deref() else {
        return Err(GatewayError::NoRoute);
    };
    let (csrf, cookie) = form_session(ep, req.headers()).await?;
    let rd = query_param(req.uri().query(), "rd")
        .map(|r| safe_redirect(&r))
        .unwrap_or_else(|| "/".into());
    to_provider(ep, oidc, &csrf, cookie, &rd, max_age_param(req.uri().query())).await
}

/// The `max_age` a step-up route asked for (seconds; at most a year).
fn max_age_param(query: Option<&str>) -> Option<u64> {
    query_param(query, "max_age")?
        .parse::<u64>()
        .ok()
        .filter(|&age| age <= 366 * 24 * 3600)
}

/// 303 to the provider's authorization endpoint for a flow bound to the
/// session whose CSRF secret is `csrf` (`cookie` sets a new one's).
async fn to_provider(
    ep: &EndpointRequest<'_>,
    oidc: &Oidc,
    csrf: &str,
    cookie: Option<HeaderValue>,
    rd: &str,
    max_age: Option<u64>,
) -> Result<Response<Body>, GatewayError> {
    let authority = ep
        .authority
        .as_deref()
        .ok_or(GatewayError::BadHost("no host to return to"))?;
    let mut resp = match oidc.start(csrf, authority, rd, max_age).await {
        Ok(location) => redirect(StatusCode::SEE_OTHER, &location),
        Err(e) => provider_failed(ep, csrf, rd, &e),
    };
    if let Some(c) = cookie {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    Ok(resp)
}

const PROVIDER_DOWN: &str = "The sign-in service is not available. Try again later.";

/// The provider could not be asked (502), its answer was refused (401), the
/// account is not one `[oidc]` lets in (403), or too many exchanges are in
/// flight (503): counted, logged with the reason, and the login page again.
fn provider_failed(ep: &EndpointRequest<'_>, csrf: &str, rd: &str, e: &OidcError) -> Response<Body> {
    let (status, result, message) = match e {
        OidcError::Provider(_) => (StatusCode::BAD_GATEWAY, "oidc_unavailable", PROVIDER_DOWN),
        OidcError::Refused(_) => (
            StatusCode::UNAUTHORIZED,
            "oidc_refused",
            "The sign-in service's answer could not be verified.",
        ),
        OidcError::NotAllowed(_) => (
            StatusCode::FORBIDDEN,
            "oidc_not_allowed",
            "This account may not sign in here.",
        ),
        OidcError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "oidc_busy",
            "Too many sign-ins at once. Reload this page in a moment.",
        ),
    };
    ep.sessions.metrics().login(result);
    tracing::warn!(event = "oidc_failed", result, client_ip = %ep.client_ip, error = %e);
    let mut resp = html(status, ep.auth.page(csrf, rd, Some(message)));
    if matches!(e, OidcError::Busy) {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// `GET /.sessiongate/oidc/callback?code=..&state=..`: where the provider
/// sends the browser back.
async fn oidc_callback(ep: &EndpointRequest<'_>, req: &Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let Some(oidc) = ep.auth.oidc.as_deref() else {
        return Err(GatewayError::NoRoute);
    };
    let query = req.uri().query();
    let param = |k: &str| query_param(query, k);
    let expired = || {
        ep.sessions.metrics().login("oidc_expired");
        forbidden("Your sign-in expired or did not start in this browser. Go back and sign in again.")
    };
    let live = match ep.sessions.lookup(req.headers(), ep.client_ip).await? {
        Lookup::Valid(live) => live,
        // With `SameSite=Strict` the browser withholds the cookie on the
        // provider's (cross-site) redirect; a refresh from this page is
        // same-site. Once.
        Lookup::None { presented: false } if param("hop").is_none() => return Ok(hop(query.unwrap_or(""))),
        Lookup::None { .. } => return Ok(expired()),
    };
    let Some(record) = ep.sessions.stored(&live).await? else {
        return Ok(expired());
    };
    let Some(state) = oidc::verify_state(&record.csrf, &param("state").unwrap_or_default()) else {
        tracing::warn!(event = "oidc_state_mismatch", client_ip = %ep.client_ip, session_id = %live.record.id);
        return Ok(expired());
    };
    let rd = safe_redirect(&state.rd);
    if let Some(error) = param("error") {
        ep.sessions.metrics().login("oidc_refused");
        // The provider's words, as the visitor's browser brought them: quoted.
        let said = |s: Option<String>| s.unwrap_or_default().chars().take(200).collect::<String>();
        tracing::info!(event = "oidc_refused", client_ip = %ep.client_ip, error = ?said(Some(error)),
            description = ?said(param("error_description")));
        return Ok(html(
            StatusCode::UNAUTHORIZED,
            ep.auth
                .page(&record.csrf, &rd, Some("The sign-in service did not sign you in.")),
        ));
    }
    let (Some(code), Some(authority)) = (param("code"), ep.authority.as_deref()) else {
        return Err(GatewayError::BadRequest("a callback without code"));
    };
    // Each callback costs a request to the provider: an address whose
    // callbacks keep failing (codes made up) is held off as after failed
    // passwords.
    if let Some(wait) = ep.auth.throttle.blocked_ip(ep.client_ip) {
        tracing::warn!(event = "login_throttled", client_ip = %ep.client_ip, source = "oidc");
        return Ok(throttled(ep, &record.csrf, &rd, wait));
    }
    match oidc.finish(&record.csrf, &state, authority, &code).await {
        Ok(identity) => sign_in(ep, req.headers(), &live, record, identity, LoginSource::Provider, &rd).await,
        Err(e) => {
            // Busy is the gateway's state, not the visitor's doing; its
            // code is unspent and a reload may use it.
            if !matches!(e, OidcError::Busy) {
                ep.auth.throttle.failed_ip(ep.client_ip);
            }
            Ok(provider_failed(ep, &record.csrf, &rd, &e))
        }
    }
}

/// A page that loads the callback again from this site, so that a
/// `SameSite=Strict` cookie comes along.
fn hop(query: &str) -> Response<Body> {
    let url = format!("{}?{query}&hop=1", oidc::CALLBACK_PATH);
    let url = pages::escape(&url);
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><title>Signing in</title>\n<p><a href=\"{url}\">Continue</a></p>\n"
        ),
    )
}

async fn logout(ep: &EndpointRequest<'_>, req: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (parts, incoming) = req.into_parts();
    let same_origin = is_same_origin(&parts.headers, ep.authority.as_deref());
    // Read even when it is not needed (a same-origin sign-out needs no
    // field): a body left unread would close the connection.
    let (form, body_read) = match read_form(incoming).await {
        Ok(form) => (form, true),
        // Too large: a same-origin sign-out goes ahead without it, and the
        // connection closes, since unread bytes must never become a request.
        Err(_) if same_origin => (Vec::new(), false),
        Err(e) => return Err(e),
    };
    let mut resp = sign_out(ep, &parts.headers, same_origin, &form).await?;
    if body_read {
        resp.extensions_mut().insert(body::BodyRead);
    }
    Ok(resp)
}

async fn sign_out(
    ep: &EndpointRequest<'_>,
    headers: &http::HeaderMap,
    same_origin: bool,
    form: &[(String, String)],
) -> Result<Response<Body>, GatewayError> {
    let lookup = ep.sessions.lookup(headers, ep.client_ip).await?;
    let live = match lookup {
        Lookup::Valid(live) => Some(live),
        Lookup::None { .. } => None,
    };
    // Only a cross-origin sign-out needs the CSRF secret (kept in the store).
    let csrf_ok = match &live {
        Some(l) if !same_origin => ep
            .sessions
            .stored(l)
            .await?
            .is_some_and(|r| form.iter().any(|(k, v)| k == "csrf" && constant_time_eq(v, &r.csrf))),
        _ => false,
    };
    if !same_origin && !csrf_ok {
        return Ok(forbidden("Sign-out must come from this site."));
    }
    let mut next = None;
    if let Some(live) = live {
        next = provider_logout(ep, &live).await;
        let user = live.record.identity.as_ref().map(|i| i.user.as_str());
        match user.filter(|_| wants_everywhere(form)) {
            // Every session of the user, on every instance sharing the
            // store: the "sign out of all devices" a user reaches for when a
            // device is lost.
            Some(user) => {
                let ended = ep.sessions.revoke_user_because(user, "logout_everywhere").await?;
                tracing::info!(event = "logout", everywhere = true, session_id = %live.record.id, user, ended);
            }
            None => {
                ep.sessions.revoke(live.hash, "logout").await?;
                tracing::info!(event = "logout", session_id = %live.record.id);
            }
        }
    }
    let mut resp = redirect(StatusCode::SEE_OTHER, next.as_deref().unwrap_or("/"));
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, ep.sessions.clear_cookie());
    h.insert(HeaderName::CLEAR_SITE_DATA, HeaderValue::from_static("\"cookies\""));
    Ok(resp)
}

/// For a session the provider made, with `[oidc] logout_at_provider`: the
/// provider's sign-out URL, where the browser goes after ours. Read before
/// the session ends (the mark is in the stored record, not the cache).
async fn provider_logout(ep: &EndpointRequest<'_>, live: &Live) -> Option<String> {
    let oidc = ep.auth.oidc.as_deref().filter(|o| o.logs_out_at_provider())?;
    let record = ep.sessions.stored(live).await.ok().flatten()?;
    if !record.provider_login {
        return None;
    }
    oidc.logout_url(ep.authority.as_deref()?).await
}

/// The form field `everywhere` set to `1`, `true` or `on` (a checkbox).
fn wants_everywhere(form: &[(String, String)]) -> bool {
    form.iter()
        .any(|(k, v)| k == "everywhere" && matches!(v.as_str(), "1" | "true" | "on"))
}

struct HeaderName;
impl HeaderName {
    const CLEAR_SITE_DATA: http::HeaderName = http::HeaderName::from_static("clear-site-data");
}

async fn session_info(ep: &EndpointRequest<'_>, req: &Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let live = match ep.sessions.lookup(req.headers(), ep.client_ip).await? {
        Lookup::Valid(live) => live,
        Lookup::None { .. } => {
            return Ok(json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"error": "no session"}),
            ))
        }
    };
    let r = &live.record;
    let idle_expires = live.last_seen().saturating_add(ep.sessions.idle_ms()).min(r.expires_at);
    let body = serde_json::json!({
        "authenticated": r.identity.is_some(),
        "user": r.identity.as_ref().map(|i| i.user.as_str()),
        "email": r.identity.as_ref().and_then(|i| i.email.as_deref()),
        "groups": r.identity.as_ref().map(|i| i.groups.clone()).unwrap_or_default(),
        "session_id": r.id.to_string(),
        "idle_expires_at": rfc3339(idle_expires),
        "expires_at": rfc3339(r.expires_at),
        // The sign-in (or the session's start) as step-up routes count it
        // (`max_auth_age`): a page can ask for a new sign-in before one.
        "authenticated_at": rfc3339(r.expires_at.saturating_sub(ep.sessions.absolute_ms())),
    });
    Ok(json(StatusCode::OK, &body))
}

/// Unix milliseconds as an RFC 3339 UTC timestamp.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

async fn read_form(incoming: Incoming) -> Result<Vec<(String, String)>, GatewayError> {
    let bytes: Bytes = Limited::new(incoming, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| GatewayError::BodyTooLarge)?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// SECURITY.md rule 7: only a same-origin relative path survives; anything
/// else (absolute URLs, `//host`, `/\host`, control characters) becomes `/`.
pub fn safe_redirect(rd: &str) -> String {
    let ok = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.starts_with("/\\")
        && rd.len() <= 2048
        && !rd.contains('\\')
        && !rd.chars().any(|c| c.is_control() || c.is_whitespace())
        && rd
            .parse::<http::Uri>()
            .is_ok_and(|u| u.scheme().is_none() && u.authority().is_none());
    if ok {
        rd.to_string()
    } else {
        "/".to_string()
    }
}

/// `Origin` is `https://` plus exactly the authority the request addressed.
fn is_same_origin(headers: &HeaderMap, authority: Option<&str>) -> bool {
    let (Some(origin), Some(authority)) = (headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()), authority) else {
        return false;
    };
    crate::cross_origin::same_origin(origin, authority)
}

fn no_store(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut resp = Response::new(body::full(page));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    no_store(&mut resp);
    resp
}

/// A small JSON response with `Cache-Control: no-store`.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(body::full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(&mut resp);
    resp
}

fn forbidden(message: &str) -> Response<Body> {
    html(
        StatusCode::FORBIDDEN,
        format!(
            "<!doctype html><title>Forbidden</title><p>{}</p>\n",
            pages::escape(message)
        ),
    )
}

/// A redirect with no body and `Cache-Control: no-store`.
pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    let loc = HeaderValue::from_str(location).unwrap_or_else(|_| HeaderValue::from_static("/"));
    resp.headers_mut().insert(header::LOCATION, loc);
    no_store(&mut resp);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_home() {
        assert_eq!(safe_redirect("/app?x=1"), "/app?x=1");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "https:evil.example",
            "/\tx",
            "/x\n",
            "evil",
            "",
            "/a\\b",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_redirect(bad), "/", "{bad:?}");
        }
    }
}
