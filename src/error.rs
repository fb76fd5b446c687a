//! Errors of the request path, by blame.
//!
//! Each variant knows who caused it (the client, the upstream, the session
//! store, or us), which decides the status code and how loudly it is logged.
//! Bodies are small and generic: they never name an internal host, a path on
//! disk, or anything secret.

use crate::proxy::body::{self, Body};
use http::{header, HeaderValue, Response, StatusCode};

/// Why a request was answered by the gateway itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("unsafe path: {0}")]
    BadPath(#[from] crate::routing::PathError),
    /// `Host` missing, repeated or not a bare `host[:port]` (RFC 9112 section 3.2).
    #[error("bad host: {0}")]
    BadHost(&'static str),
    #[error("no route")]
    NoRoute,
    /// The path is a route's prefix without its final `/`: redirected to
    /// `location` (the path with the slash, and the query), 301 for `GET`
    /// and `HEAD`, 308 (method and body kept) otherwise.
    #[error("redirect to the route's prefix")]
    MissingSlash { location: HeaderValue, status: StatusCode },
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request target too long")]
    UriTooLong,
    #[error("request body too large")]
    BodyTooLarge,
    /// A body read whole before it is sent (see `proxy::exchange_balanced`)
    /// did not arrive within `upstream_timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    #[error("upstream unreachable: {0}")]
    UpstreamConnect(String),
    #[error("upstream sent no response headers in time")]
    UpstreamTimeout,
    #[error("upstream exchange failed: {0}")]
    UpstreamOther(String),
    #[error("session store unavailable: {0}")]
    StoreUnavailable(String),
    /// `[session] max_per_user` refused a new session.
    #[error("{0}")]
    TooManySessions(String),
    /// The client address passed `[session] new_per_ip_per_minute`.
    #[error("too many new sessions from this address")]
    NewSessionLimit(std::time::Duration),
    /// A state-changing request from another origin (see `cross_origin`).
    #[error("cross-origin request refused (by {})", .0.as_str())]
    CrossOrigin(crate::cross_origin::Refusal),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<crate::session::store::StoreError> for GatewayError {
    fn from(e: crate::session::store::StoreError) -> Self {
        GatewayError::StoreUnavailable(e.to_string())
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) | GatewayError::BadPath(_) | GatewayError::BadHost(_) => {
                StatusCode::BAD_REQUEST
            }
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::CrossOrigin(_) => StatusCode::FORBIDDEN,
            GatewayError::MissingSlash { status, .. } => *status,
            GatewayError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UriTooLong => StatusCode::URI_TOO_LONG,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamOther(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::TooManySessions(_) | GatewayError::NewSessionLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` label of `sessiongate_requests_refused_total` for an
    /// error that can end a request before a route is chosen.
    pub fn refusal(&self) -> &'static str {
        use crate::routing::PathError;
        match self {
            GatewayError::BadPath(PathError::AmbiguousRoute) => "ambiguous_path",
            GatewayError::BadPath(_) => "unsafe_path",
            GatewayError::BadHost(_) => "bad_host",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::NoRoute => "no_route",
            GatewayError::MissingSlash { .. } => "missing_slash",
            GatewayError::HeadersTooLarge => "headers_too_large",
            GatewayError::UriTooLong => "uri_too_long",
            _ => "other",
        }
    }

    /// True when the fault is ours or the upstream's, not the client's.
    pub fn is_server_side(&self) -> bool {
        self.status().is_server_error()
    }

    /// The generic answer the client sees.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let reason = match self {
            GatewayError::CrossOrigin(_) => "Cross-origin request refused",
            _ => status.canonical_reason().unwrap_or("Error"),
        };
        let mut resp = plain(status, reason);
        match self {
            GatewayError::StoreUnavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            GatewayError::MissingSlash { location, .. } => {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            GatewayError::NewSessionLimit(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        resp
    }
}

/// A small `text/plain` response: `"<code> <reason>\n"`.
pub fn plain(status: StatusCode, reason: &str) -> Response<Body> {
    let text = format!("{} {}\n", status.as_u16(), reason);
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
