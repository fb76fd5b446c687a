//! Reading the gateway's cookie out of requests, and keeping it from the
//! upstream. Several `Cookie` headers (HTTP/2 splits them) are read as one
//! list; two *different* values for our name mean no valid session at all,
//! since we cannot tell which one the browser meant (cookie tossing).

use http::header::{self, HeaderMap, HeaderValue};

/// What the request says about our cookie.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    Absent,
    One(&'a str),
    /// Several different values: refused as a whole.
    Conflict,
}

impl Presented<'_> {
    pub fn is_present(&self) -> bool {
        !matches!(self, Presented::Absent)
    }
}

/// Finds our cookie in every `Cookie` header.
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Presented<'a> {
    let mut found = Presented::Absent;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        // Malformed pairs are skipped, never fatal.
        for c in cookie::Cookie::split_parse(value).flatten() {
            if c.name() != name {
                continue;
            }
            let Some(v) = c.value_raw() else { continue };
            found = match found {
                Presented::Absent => Presented::One(v),
                Presented::One(prev) if prev == v => Presented::One(prev),
                _ => return Presented::Conflict,
            };
        }
    }
    found
}

/// Removes our cookie from the request; other cookies pass, joined into one
/// `Cookie` header as HTTP/1.1 upstreams expect. Runs on every forwarded
/// request, so the common cases allocate nothing: a single header without our
/// cookie stays as it is, and one holding only ours is removed.
pub fn strip(headers: &mut HeaderMap, name: &str) {
    let mut all = headers.get_all(header::COOKIE).iter();
    match (all.next(), all.next()) {
        (None, _) => return,
        // One header holding only ours (the common case behind a gateway
        // that owns the session): drop it whole.
        (Some(only), None) if is_single_pair(only.as_bytes(), name.as_bytes()) => {
            headers.remove(header::COOKIE);
            return;
        }
        // One header without our cookie: forwarded as it is.
        (Some(only), None) if !names(only.as_bytes(), name.as_bytes()) => return,
        // One header with ours, or several, which are joined in any case.
        _ => {}
    }
    // `kept` allocates only once another cookie is copied into it.
    let mut kept: Vec<u8> = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        // Not text: dropped entirely rather than forward our token inside it.
        if value.to_str().is_err() {
            continue;
        }
        for pair in pairs(value.as_bytes()).filter(|p| pair_name(p) != name.as_bytes()) {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(pair);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(kept)) {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// The non-empty, trimmed `name=value` pairs of one `Cookie` header.
fn pairs(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|p| !p.is_empty())
}

fn pair_name(pair: &[u8]) -> &[u8] {
    match pair.iter().position(|&b| b == b'=') {
        Some(i) => pair[..i].trim_ascii(),
        None => pair,
    }
}

/// Whether one `Cookie` header is exactly one pair, named `name`.
fn is_single_pair(value: &[u8], name: &[u8]) -> bool {
    let v = value.trim_ascii();
    v.len() > name.len()
        && v.starts_with(name)
        && v[name.len()..].trim_ascii_start().first() == Some(&b'=')
        && !v.contains(&b';')
}

/// Whether one `Cookie` header has a pair named `name`.
fn names(value: &[u8], name: &[u8]) -> bool {
    pairs(value).any(|p| pair_name(p) == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(
                header::COOKIE,
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        m
    }

    #[test]
    fn finds_across_headers_and_refuses_conflicts() {
        assert_eq!(find(&h(&["a=1; sg=x"]), "sg"), Presented::One("x"));
        assert_eq!(find(&h(&["a=1", "sg=x"]), "sg"), Presented::One("x"));
        assert_eq!(find(&h(&["sg=x", "sg=x"]), "sg"), Presented::One("x"));
        assert_eq!(find(&h(&["sg=x", "sg=y"]), "sg"), Presented::Conflict);
        assert_eq!(find(&h(&["sgx=1; xsg=2"]), "sg"), Presented::Absent);
        assert_eq!(find(&h(&[";;=;sg"]), "sg"), Presented::Absent);
    }

    #[test]
    fn strips_only_ours() {
        let mut m = h(&["a=1; sg=x", "b=2"]);
        strip(&mut m, "sg");
        assert_eq!(m.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(m.get(header::COOKIE).map(|v| v.as_bytes()), Some(&b"a=1; b=2"[..]));
        let mut only = h(&["sg=x"]);
        strip(&mut only, "sg");
        assert!(only.get(header::COOKIE).is_none());
        let mut spaced = h(&[" sg = x ;"]);
        strip(&mut spaced, "sg");
        assert!(spaced.get(header::COOKIE).is_none());
        let mut first = h(&["sg=x;a=1"]);
        strip(&mut first, "sg");
        assert_eq!(first.get(header::COOKIE).map(|v| v.as_bytes()), Some(&b"a=1"[..]));
        // Names that merely contain ours are not ours; untouched when alone.
        let mut lookalike = h(&["xsg=1;  sgx=2"]);
        strip(&mut lookalike, "sg");
        assert_eq!(
            lookalike.get(header::COOKIE).map(|v| v.as_bytes()),
            Some(&b"xsg=1;  sgx=2"[..])
        );
        let mut joined = h(&["a=1", "b=2"]);
        strip(&mut joined, "sg");
        assert_eq!(joined.get(header::COOKIE).map(|v| v.as_bytes()), Some(&b"a=1; b=2"[..]));
    }
}
