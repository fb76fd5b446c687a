//! Clickjacking protection for upstream pages that do not ask for any.
//!
//! A page that acts on the user's session can be loaded in an invisible
//! frame on another site and clicked through (clickjacking). Legacy apps
//! seldom send `X-Frame-Options` or a CSP `frame-ancestors`, so the
//! gateway adds `X-Frame-Options` to a response that has neither, as a
//! route's `framing` says. An upstream that states its own framing policy
//! is left alone: it knows which of its pages are meant to be embedded.
//!
//! `X-Frame-Options` alone, not also a CSP `frame-ancestors`: every
//! browser honours it (the CSP directive only adds lists of allowed
//! framers, which a fixed policy does not need), and one field instead of
//! two costs a verified request a few hundred instructions less.

use crate::config::Framing;
use http::{header, HeaderMap, HeaderValue};

/// Adds the route's framing policy to `headers` unless the upstream set
/// one. `xfo` and `csp`: whether the response has `X-Frame-Options` and
/// `Content-Security-Policy` fields (the caller's one pass over the names
/// found out).
pub fn apply(framing: Framing, headers: &mut HeaderMap, xfo: bool, csp: bool) {
    let options = match framing {
        Framing::Allow => return,
        Framing::SameOrigin => "SAMEORIGIN",
        Framing::Deny => "DENY",
    };
    // A browser that knows `frame-ancestors` ignores `X-Frame-Options`
    // beside it, so the upstream's directive stands either way; adding
    // ours would only override it in browsers that predate CSP 2.
    if xfo || (csp && has_frame_ancestors(headers)) {
        return;
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static(options));
}

/// Whether any CSP field has a `frame-ancestors` directive (directive
/// names are case-insensitive, CSP 3 section 2.2).
fn has_frame_ancestors(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_SECURITY_POLICY).iter().any(|v| {
        v.as_bytes().split(|&b| b == b';').any(|directive| {
            let name = directive.trim_ascii_start();
            let name = name.split(|b| b.is_ascii_whitespace()).next().unwrap_or_default();
            name.eq_ignore_ascii_case(b"frame-ancestors")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(n.clone(), HeaderValue::from_static(v));
        }
        h
    }

    fn framed(framing: Framing, mut h: HeaderMap) -> HeaderMap {
        let xfo = h.contains_key(header::X_FRAME_OPTIONS);
        let csp = h.contains_key(header::CONTENT_SECURITY_POLICY);
        apply(framing, &mut h, xfo, csp);
        h
    }

    fn values(h: &HeaderMap, name: header::HeaderName) -> Vec<&str> {
        h.get_all(name).iter().map(|v| v.to_str().unwrap_or("?")).collect()
    }

    #[test]
    fn a_response_without_a_policy_gets_the_routes() {
        let h = framed(Framing::SameOrigin, HeaderMap::new());
        assert_eq!(values(&h, header::X_FRAME_OPTIONS), ["SAMEORIGIN"]);
        let h = framed(Framing::Deny, HeaderMap::new());
        assert_eq!(values(&h, header::X_FRAME_OPTIONS), ["DENY"]);
        assert_eq!(h.len(), 1);
        assert!(framed(Framing::Allow, HeaderMap::new()).is_empty());
    }

    #[test]
    fn the_upstreams_own_policy_stands() {
        let h = framed(Framing::Deny, with(&[(header::X_FRAME_OPTIONS, "SAMEORIGIN")]));
        assert_eq!(values(&h, header::X_FRAME_OPTIONS), ["SAMEORIGIN"]);
        assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
        for csp in [
            "default-src 'self'; frame-ancestors https://portal.example",
            "FRAME-ANCESTORS *",
            "  frame-ancestors 'self'",
        ] {
            let h = framed(Framing::SameOrigin, with(&[(header::CONTENT_SECURITY_POLICY, csp)]));
            assert_eq!(values(&h, header::CONTENT_SECURITY_POLICY), [csp], "{csp}");
            assert!(!h.contains_key(header::X_FRAME_OPTIONS), "{csp}");
        }
    }

    #[test]
    fn a_csp_without_frame_ancestors_is_no_framing_policy() {
        let csp = "default-src 'self'; script-src frame-ancestors.example";
        let h = framed(Framing::SameOrigin, with(&[(header::CONTENT_SECURITY_POLICY, csp)]));
        assert_eq!(values(&h, header::CONTENT_SECURITY_POLICY), [csp]);
        assert_eq!(values(&h, header::X_FRAME_OPTIONS), ["SAMEORIGIN"]);
    }
}
