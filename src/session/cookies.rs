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
/// `Cookie` header as HTTP/1.1 upstreams expect.
pub fn strip(headers: &mut HeaderMap, name: &str) {
    let mut all = headers.get_all(header::COOKIE).iter();
    match (all.next(), all.next()) {
        (None, _) => return,
        // Fast path: one header that cannot contain our name.
        (Some(only), None) if !contains(only.as_bytes(), name.as_bytes()) => return,
        _ => {}
    }
    let values: Vec<HeaderValue> = headers.get_all(header::COOKIE).iter().cloned().collect();
    let mut kept = String::new();
    let mut changed = values.len() > 1;
    for value in &values {
        let Ok(s) = value.to_str() else {
            // Not text: drop it entirely rather than forward our token inside it.
            changed = true;
            continue;
        };
        for pair in s.split(';') {
            let trimmed = pair.trim();
            if trimmed.is_empty() {
                continue;
            }
            let n = trimmed.split_once('=').map_or(trimmed, |(n, _)| n.trim());
            if n == name {
                changed = true;
                continue;
            }
            if !kept.is_empty() {
                kept.push_str("; ");
            }
            kept.push_str(trimmed);
        }
    }
    if !changed {
        return;
    }
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
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
    }
}
