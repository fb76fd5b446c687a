//! The upstream's own cookies, made no weaker than the site they travel on.
//!
//! A legacy app sets its cookies (its own session, a cart, preferences)
//! without `Secure`: behind the gateway the site is HTTPS only, but a
//! browser that is once sent to `http://` (a typed address before HSTS is
//! known, the redirect listener) would send such a cookie in the clear. So
//! `Secure` is added to every cookie the upstream sets; `HttpOnly` and
//! `SameSite` only when `[upstream_cookies]` asks, since pages' scripts may
//! read a cookie and other sites may post to the app.
//!
//! Attributes are only ever appended, never rewritten: the cookie's name,
//! value, `Expires` and `Path` reach the browser as the upstream wrote them.

use crate::config::{SameSite, UpstreamCookies};
use http::HeaderValue;

/// The `Set-Cookie` value with the attributes `policy` asks for that it
/// lacks; `None` when it already has them all (the value is kept as is).
pub fn harden(value: &HeaderValue, policy: &UpstreamCookies) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let (mut secure, mut http_only, mut same_site) = (false, false, false);
    // The first `;`-separated part is `name=value`, and never an attribute
    // (a cookie named `Secure` stays a cookie).
    for attribute in bytes.split(|&b| b == b';').skip(1) {
        let name = attribute.split(|&b| b == b'=').next().unwrap_or_default().trim_ascii();
        secure |= name.eq_ignore_ascii_case(b"secure");
        http_only |= name.eq_ignore_ascii_case(b"httponly");
        same_site |= name.eq_ignore_ascii_case(b"samesite");
    }
    let add_http_only = policy.http_only && !http_only;
    let add_same_site = policy.same_site.filter(|_| !same_site);
    if secure && !add_http_only && add_same_site.is_none() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 40);
    out.extend_from_slice(bytes.trim_ascii_end());
    if !secure {
        out.extend_from_slice(b"; Secure");
    }
    if add_http_only {
        out.extend_from_slice(b"; HttpOnly");
    }
    match add_same_site {
        Some(SameSite::Lax) => out.extend_from_slice(b"; SameSite=Lax"),
        Some(SameSite::Strict) => out.extend_from_slice(b"; SameSite=Strict"),
        None => {}
    }
    // Appending visible ASCII to a valid value keeps it valid.
    HeaderValue::from_bytes(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hardened(value: &'static str, policy: &UpstreamCookies) -> String {
        let v = HeaderValue::from_static(value);
        match harden(&v, policy) {
            Some(h) => h.to_str().unwrap_or("?").to_owned(),
            None => value.to_owned(),
        }
    }

    const DEFAULT: UpstreamCookies = UpstreamCookies {
        http_only: false,
        same_site: None,
    };

    #[test]
    fn secure_is_added_unless_present() {
        assert_eq!(hardened("cart=3; Path=/", &DEFAULT), "cart=3; Path=/; Secure");
        assert_eq!(hardened("cart=3", &DEFAULT), "cart=3; Secure");
        assert_eq!(hardened("cart=3; secure", &DEFAULT), "cart=3; secure");
        assert_eq!(hardened("cart=3;Secure;Path=/", &DEFAULT), "cart=3;Secure;Path=/");
        // A cookie named like an attribute is still a cookie.
        assert_eq!(hardened("Secure=1", &DEFAULT), "Secure=1; Secure");
        assert_eq!(
            hardened("id=a; Expires=Wed, 21 Oct 2037 07:28:00 GMT ", &DEFAULT),
            "id=a; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Secure"
        );
    }

    #[test]
    fn http_only_and_same_site_are_added_when_asked_and_absent() {
        let strict = UpstreamCookies {
            http_only: true,
            same_site: Some(SameSite::Lax),
        };
        assert_eq!(hardened("sid=1", &strict), "sid=1; Secure; HttpOnly; SameSite=Lax");
        assert_eq!(
            hardened("sid=1; Secure; HTTPONLY; SameSite=None", &strict),
            "sid=1; Secure; HTTPONLY; SameSite=None"
        );
        assert_eq!(
            hardened("sid=1; httponly", &strict),
            "sid=1; httponly; Secure; SameSite=Lax"
        );
    }
}
