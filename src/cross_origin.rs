//! Cross-origin request refusal: CSRF protection for upstreams that have none.
//!
//! A legacy app behind the gateway trusts every request that carries its
//! users' cookies, and `SameSite=Lax` only keeps cookies off requests from
//! other *sites*: a sibling origin on the same registrable domain
//! (`uploads.example.com` against `app.example.com`), or any page for an
//! `auth = "none"` route with the app's own cookies, can still make the
//! browser send a state-changing request. So a request that can change
//! state is refused unless the browser says it came from this origin.
//!
//! The rule is the one Go 1.25's `http.CrossOriginProtection` uses, since
//! every current browser supports it and it needs no token in the page:
//! - `GET`, `HEAD` and `OPTIONS` pass (navigations, preflights), unless they
//!   carry `Upgrade`: a WebSocket handshake is a GET that opens a channel
//!   with the user's cookies (cross-site WebSocket hijacking).
//! - `Sec-Fetch-Site` (which no page can set) decides when present:
//!   `same-origin` or `none` (typed, bookmarked) pass; anything else,
//!   `same-site` included, is refused.
//! - Without it (browsers before 2023, non-browsers): a request with no
//!   `Origin` passes, since no browser omits `Origin` on a cross-origin
//!   state-changing request; an `Origin` that is not this origin is refused.
//! - An `Origin` listed in `[cross_origin] trusted_origins` passes either way.
//!
//! Only the browser is constrained: a non-browser client can send anything,
//! but it has no victim's cookies to send. This never replaces the session
//! checks; it runs before them, so a refused request costs no store work.

use http::{header, HeaderMap, HeaderValue, Method};

/// The header that tells where a browser's request was made
/// (Fetch Metadata, <https://w3c.github.io/webappsec-fetch-metadata/>).
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Why a request was refused, for the metric's `by` label and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Sec-Fetch-Site` named another origin.
    SecFetchSite,
    /// No `Sec-Fetch-Site`, and `Origin` named another origin.
    Origin,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::SecFetchSite => "sec_fetch_site",
            Refusal::Origin => "origin",
        }
    }
}

/// `[cross_origin] trusted_origins`, each in the form [`normalize`] gives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedOrigins(Vec<String>);

impl TrustedOrigins {
    /// `origins` must already be normalised (config validation does it).
    pub fn new(origins: Vec<String>) -> TrustedOrigins {
        TrustedOrigins(origins)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    fn contains(&self, origin: &HeaderValue) -> bool {
        !self.0.is_empty()
            && origin
                .to_str()
                .ok()
                .and_then(normalize)
                .is_some_and(|o| self.0.contains(&o))
    }
}

/// Whether a request can change state in the upstream, and so must come
/// from this origin: `upgrade`, whether it carries `Upgrade`.
pub fn needs_check(method: &Method, upgrade: bool) -> bool {
    upgrade || !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The verdict for a request that [`needs_check`]. `authority` is the
/// `host[:port]` the request addressed; `None` when it named none, which
/// leaves no origin to be the same as.
pub fn check(headers: &HeaderMap, authority: Option<&str>, trusted: &TrustedOrigins) -> Result<(), Refusal> {
    let origin = headers.get(header::ORIGIN);
    let trusted_origin = || origin.is_some_and(|o| trusted.contains(o));
    match headers.get(SEC_FETCH_SITE).map(HeaderValue::as_bytes) {
        Some(b"same-origin" | b"none") => Ok(()),
        Some(_) if trusted_origin() => Ok(()),
        Some(_) => Err(Refusal::SecFetchSite),
        None => match origin {
            None => Ok(()),
            Some(o) if authority.is_some_and(|a| o.to_str().is_ok_and(|o| same_origin(o, a))) => Ok(()),
            Some(_) if trusted_origin() => Ok(()),
            Some(_) => Err(Refusal::Origin),
        },
    }
}

/// `origin` (an `Origin` header's value) is `https://` plus `authority`,
/// the `host[:port]` a request to this gateway addressed. Browsers leave
/// out the default port; a `Host` may carry it.
pub fn same_origin(origin: &str, authority: &str) -> bool {
    let authority = strip_port(authority, ":443");
    origin
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        && strip_port(&origin[8..], ":443").eq_ignore_ascii_case(authority)
}

fn strip_port<'a>(authority: &'a str, default: &str) -> &'a str {
    authority.strip_suffix(default).unwrap_or(authority)
}

/// An origin as browsers serialise it: `https://` or `http://`, then a
/// lowercase `host[:port]` without the scheme's default port. `None` for
/// anything else: a path, userinfo, a wildcard, `null`.
pub fn normalize(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let authority: http::uri::Authority = rest.parse().ok()?;
    // `Authority` admits userinfo, and its parse stops at nothing else.
    if rest.is_empty() || rest.contains(['@', '*', '/', '?', '#']) || authority.host().is_empty() {
        return None;
    }
    // `Authority` takes any digits as a port.
    let port = &authority.as_str()[authority.host().len()..];
    if !port.is_empty()
        && port
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|&p| p != 0)
            .is_none()
    {
        return None;
    }
    let host_port = strip_port(authority.as_str(), default).to_ascii_lowercase();
    Some(format!("{scheme}://{host_port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    fn trusted() -> TrustedOrigins {
        TrustedOrigins::new(vec!["https://partner.example".to_string()])
    }

    #[test]
    fn only_state_changing_requests_and_upgrades_are_checked() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!needs_check(&m, false), "{m}");
            assert!(needs_check(&m, true), "{m} with Upgrade");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::TRACE] {
            assert!(needs_check(&m, false), "{m}");
        }
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        let t = TrustedOrigins::default();
        let a = Some("app.example");
        assert_eq!(check(&headers(&[("sec-fetch-site", "same-origin")]), a, &t), Ok(()));
        assert_eq!(check(&headers(&[("sec-fetch-site", "none")]), a, &t), Ok(()));
        for site in ["same-site", "cross-site", "SAME-ORIGIN", ""] {
            let h = headers(&[("sec-fetch-site", site), ("origin", "https://app.example")]);
            assert_eq!(check(&h, a, &t), Err(Refusal::SecFetchSite), "{site:?}");
        }
    }

    #[test]
    fn origin_decides_without_fetch_metadata() {
        let t = TrustedOrigins::default();
        assert_eq!(check(&HeaderMap::new(), Some("app.example"), &t), Ok(()));
        for (origin, authority) in [
            ("https://app.example", "app.example"),
            ("https://App.Example", "app.example:443"),
            ("https://app.example:8443", "app.example:8443"),
        ] {
            let h = headers(&[("origin", origin)]);
            assert_eq!(check(&h, Some(authority), &t), Ok(()), "{origin} at {authority}");
        }
        for (origin, authority) in [
            ("https://evil.example", Some("app.example")),
            ("http://app.example", Some("app.example")),
            ("https://app.example", Some("app.example:8443")),
            ("https://app.example.evil", Some("app.example")),
            ("null", Some("app.example")),
            ("https://app.example", None),
        ] {
            let h = headers(&[("origin", origin)]);
            assert_eq!(
                check(&h, authority, &t),
                Err(Refusal::Origin),
                "{origin} at {authority:?}"
            );
        }
    }

    #[test]
    fn trusted_origins_pass_either_rule() {
        let t = trusted();
        for origin in ["https://partner.example", "HTTPS://Partner.Example:443"] {
            let by_fetch = headers(&[("sec-fetch-site", "cross-site"), ("origin", origin)]);
            assert_eq!(check(&by_fetch, Some("app.example"), &t), Ok(()), "{origin}");
        }
        let h = headers(&[("origin", "https://partner.example")]);
        assert_eq!(check(&h, Some("app.example"), &t), Ok(()));
        let other_port = headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://partner.example:8443"),
        ]);
        assert_eq!(check(&other_port, Some("app.example"), &t), Err(Refusal::SecFetchSite));
        let no_origin = headers(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(check(&no_origin, Some("app.example"), &t), Err(Refusal::SecFetchSite));
    }

    #[test]
    fn origins_normalise_as_browsers_serialise_them() {
        assert_eq!(
            normalize("https://Partner.Example").as_deref(),
            Some("https://partner.example")
        );
        assert_eq!(normalize("https://a.example:443").as_deref(), Some("https://a.example"));
        assert_eq!(normalize("http://a.example:80").as_deref(), Some("http://a.example"));
        assert_eq!(
            normalize("http://a.example:443").as_deref(),
            Some("http://a.example:443")
        );
        assert_eq!(normalize("https://[::1]:8443").as_deref(), Some("https://[::1]:8443"));
        for bad in [
            "null",
            "*",
            "https://*.example",
            "https://a.example/",
            "https://a.example/app",
            "https://user@a.example",
            "ftp://a.example",
            "https://",
            "a.example",
            "https://a.example?x",
            "https://a.example:99999",
            "https://a.example:0",
        ] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }
}
