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
/// plus the legacy `Keep-Alive`, `Proxy-Connection` and proxy credentials).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Client-typed forwarding headers that are never believed from an untrusted
/// peer; we set our own `X-Forwarded-*` instead.
static CLIENT_FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
    HeaderName::from_static("x-original-forwarded-for"),
];

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
    let mut connection = false;
    let mut doomed: SmallVec<[HeaderName; 4]> = SmallVec::new();
    for name in headers.keys() {
        connection |= name == header::CONNECTION;
        if HOP_BY_HOP.contains(name) || also(name) {
            doomed.push(name.clone());
        }
    }
    if connection {
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                upgrade |= token.eq_ignore_ascii_case("upgrade");
                // `close`, `keep-alive`, `upgrade`...: nothing more to find.
                if token.is_empty()
                    || token.eq_ignore_ascii_case("close")
                    || HOP_BY_HOP.iter().any(|h| token.eq_ignore_ascii_case(h.as_str()))
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    doomed.push(name);
                }
            }
        }
    }
    for name in doomed {
        headers.remove(name);
    }
    upgrade
}

/// Whether a request header is client-typed forwarding information that is
/// never believed from an untrusted peer (`X-Forwarded-*`, `Forwarded`, ...).
pub fn is_client_forwarding(name: &HeaderName) -> bool {
    name.as_str().starts_with("x-forwarded-") || CLIENT_FORWARDING.contains(name)
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
