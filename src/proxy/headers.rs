//! Header rules for both directions: hop-by-hop removal (RFC 9110 §7.6.1) and
//! the forwarding headers (`X-Forwarded-*`).
//!
//! Order matters (SECURITY.md rule 4): the `Connection`-named and hop-by-hop
//! headers are removed *before* the gateway adds its own, so a client cannot
//! name `X-Forwarded-For` in `Connection` to strip what we set.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use smallvec::SmallVec;
use std::net::IpAddr;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1,
/// plus the legacy `Keep-Alive`, `Proxy-Connection` and proxy credentials);
/// `name` in lowercase, as a `HeaderName` always is.
///
/// A `match` on the name, not a list of `HeaderName`s to compare: every
/// header of every request passes here, and comparing each against the
/// nine names one by one was most of the request filter's header pass.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes every hop-by-hop header and every header named in `Connection`.
/// Returns whether `Connection` carried the `upgrade` token.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    strip(headers, |_| false)
}

/// One pass over the header names: removes hop-by-hop headers, headers named
/// in `Connection`, and every header `also` picks. Allocates only when there
/// is something to remove, which on the common request is never.
pub fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) -> bool {
    let mut upgrade = false;
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    // Names and values together: the `Connection` values are read here,
    // without a second (hashed) lookup.
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            upgrade |= named_in_connection(value, &mut doomed);
        }
        // A name's values come one after another: remove it once.
        if doomed.last() != Some(name) && (is_hop_by_hop(name.as_str()) || also(name)) {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    upgrade
}

/// Adds the headers one `Connection` value names to `doomed`; returns
/// whether it carries the `upgrade` token.
fn named_in_connection(value: &HeaderValue, doomed: &mut SmallVec<[HeaderName; 4]>) -> bool {
    // Nearly every value is one of these two: no tokens to split then
    // (splitting and trimming cost about 400 instructions per message).
    let bytes = value.as_bytes();
    if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
        return false;
    }
    let Ok(value) = value.to_str() else { return false };
    let mut upgrade = false;
    for token in value.split(',').map(str::trim) {
        // Tokens are case-insensitive; `keep-alive` and `close` are the
        // common ones, and they name no header to remove.
        let lower;
        let token = if token.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = token.to_ascii_lowercase();
            lower.as_str()
        } else {
            token
        };
        upgrade |= token == "upgrade";
        if token.is_empty() || token == "close" || is_hop_by_hop(token) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            doomed.push(name);
        }
    }
    upgrade
}

/// Whether a request header is client-typed forwarding information that is
/// never believed from an untrusted peer (`X-Forwarded-*`, `Forwarded`, ...),
/// in any spelling that folds to one of those names (see [`fold`]): an
/// upstream behind WSGI or PHP reads `X_Forwarded_For` as `X-Forwarded-For`.
/// `X-Original-URL` and `X-Rewrite-URL` are among them: Symfony, Zend and
/// IIS's URL Rewrite serve the path they name instead of the request's, so
/// a client could have the route of `/public` authorise `/admin` (SECURITY.md
/// rule 5). `X-Host` and `X-HTTP-Host-Override` are host overrides that some
/// frameworks read instead of `Host`, as they read `X-Forwarded-Host`, when
/// they build absolute links (a password-reset mail pointing elsewhere).
pub fn is_client_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.get(..12).is_some_and(|head| folds_to(head, b"x-forwarded-"))
        || [
            &b"forwarded"[..],
            b"x-real-ip",
            b"true-client-ip",
            b"x-client-ip",
            b"x-original-forwarded-for",
            b"x-original-url",
            b"x-original-uri",
            b"x-rewrite-url",
            b"x-host",
            b"x-http-host-override",
        ]
        .iter()
        .any(|ours| folds_to(name, ours))
}

/// A header name byte as upstream frameworks compare names: lowercase, with
/// `_` and `.` read as `-` (SECURITY.md rule 3).
pub fn fold(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Whether `name` folds to `ours` (already folded).
pub fn folds_to(name: &[u8], ours: &[u8]) -> bool {
    name.len() == ours.len() && name.iter().zip(ours).all(|(n, o)| fold(*n) == *o)
}

/// Whether `ip` lies inside one of the trusted proxy networks.
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = canonical_ip(ip);
    trusted.iter().any(|n| n.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's address and the `X-Forwarded-For` value to pass on.
#[derive(Debug, Clone)]
pub struct ClientAddr {
    /// The address every client rule (binding, throttling, logs) uses.
    pub ip: IpAddr,
    /// `X-Forwarded-For` towards the upstream: the trusted chain, ending
    /// with the socket peer.
    pub xff: HeaderValue,
}

impl ClientAddr {
    /// A client that is the socket peer itself.
    pub fn direct(peer: IpAddr) -> ClientAddr {
        let peer = canonical_ip(peer);
        ClientAddr {
            ip: peer,
            xff: xff_value(&[peer]),
        }
    }
}

/// The client as seen from one connection: for a peer outside
/// `trusted_proxies` it never changes, so it is worked out once per
/// connection instead of once per request (formatting an address is a
/// measurable part of a proxied request).
#[derive(Debug)]
pub struct PeerInfo {
    pub addr: std::net::SocketAddr,
    direct: Option<ClientAddr>,
}

impl PeerInfo {
    pub fn new(addr: std::net::SocketAddr, trusted: &[IpNet]) -> PeerInfo {
        let ip = canonical_ip(addr.ip());
        let direct = (!is_trusted(ip, trusted)).then(|| ClientAddr::direct(ip));
        PeerInfo { addr, direct }
    }

    /// The client of one request on this connection.
    pub fn client(&self, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
        match &self.direct {
            Some(c) => c.clone(),
            None => client_addr(self.addr.ip(), headers, trusted),
        }
    }
}

/// The client IP (SECURITY.md rule 6): the socket peer, unless the peer is a
/// trusted proxy; then the rightmost `X-Forwarded-For` entry that is not
/// itself trusted. Unparsable entries stop the walk.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientAddr {
    let peer = canonical_ip(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return ClientAddr::direct(peer);
    }
    let entries: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut chain = vec![peer];
    for entry in entries.iter().rev() {
        let Some(ip) = parse_xff_entry(entry) else { break };
        chain.push(ip);
        if !is_trusted(ip, trusted) {
            break;
        }
    }
    chain.reverse();
    ClientAddr {
        ip: chain[0],
        xff: xff_value(&chain),
    }
}

/// `a, b, c`: addresses only, so the value is always a valid header value.
fn xff_value(chain: &[IpAddr]) -> HeaderValue {
    use std::fmt::Write;
    let mut xff = String::with_capacity(16 * chain.len());
    for (i, ip) in chain.iter().enumerate() {
        if i > 0 {
            xff.push_str(", ");
        }
        let _ = write!(xff, "{ip}");
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// `1.2.3.4`, `1.2.3.4:567`, `2001:db8::1` or `[2001:db8::1]:567`.
fn parse_xff_entry(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    None
}

/// Sets our forwarding headers. Client-sent ones must already be gone (see
/// [`is_client_forwarding`], applied in the same pass as hop-by-hop removal).
pub fn set_forwarding(headers: &mut HeaderMap, client: &ClientAddr, host: Option<HeaderValue>) {
    headers.insert(X_FORWARDED_FOR.clone(), client.xff.clone());
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
}

/// Total bytes of the header section, as counted against `max_header_bytes`.
pub fn header_bytes(headers: &HeaderMap) -> usize {
    headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_str(v).unwrap_or_else(|_| unreachable!()),
            );
        }
        h
    }

    #[test]
    fn connection_named_headers_go_first() {
        let mut h = map(&[
            ("connection", "X-Secret, keep-alive"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get("connection").is_none());
        assert!(h.get("x-kept").is_some());
    }

    #[test]
    fn every_connection_value_and_every_hop_by_hop_name_is_stripped() {
        let mut h = map(&[
            ("connection", "Keep-Alive, X-First"),
            ("connection", " UPGRADE ,x-second,, close"),
            ("x-first", "1"),
            ("x-second", "2"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authenticate", "Basic"),
            ("proxy-authorization", "Basic eA=="),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=1.2.3.4"),
            ("x-real-ip", "1.2.3.4"),
            ("x_forwarded_host", "evil.test"),
            ("true_client.ip", "1.2.3.4"),
            ("x-original-url", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("x-forwarded", "kept: not the prefix"),
            ("tee", "kept"),
            ("x-kept", "1"),
        ]);
        let upgrade = strip(&mut h, is_client_forwarding);
        assert!(upgrade, "`UPGRADE` in the second Connection value");
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["tee", "x-kept", "x-forwarded"]);

        let mut h = map(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert!(!strip_hop_by_hop(&mut h), "no upgrade token, no upgrade");
        assert!(h.is_empty());
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let h = map(&[("x-forwarded-for", "1.2.3.4")]);
        let peer: IpAddr = "10.0.0.1".parse().unwrap_or_else(|_| unreachable!());
        let c = client_addr(peer, &h, &[]);
        assert_eq!(c.ip, peer);
        assert_eq!(c.xff, "10.0.0.1");
        let info = PeerInfo::new(std::net::SocketAddr::new(peer, 1), &[]);
        assert_eq!(info.client(&h, &[]).xff, "10.0.0.1");
    }

    #[test]
    fn trusted_peer_yields_rightmost_untrusted() {
        let h = map(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.9")]);
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())];
        let c = client_addr("10.0.0.1".parse().unwrap_or_else(|_| unreachable!()), &h, &trusted);
        assert_eq!(c.ip.to_string(), "198.51.100.7");
        assert_eq!(c.xff, "198.51.100.7, 10.0.0.9, 10.0.0.1");
        let info = PeerInfo::new("10.0.0.1:9".parse().unwrap_or_else(|_| unreachable!()), &trusted);
        assert_eq!(info.client(&h, &trusted).ip.to_string(), "198.51.100.7");
    }
}
