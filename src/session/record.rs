//! The server-side session record and the client binding.
//!
//! Lifecycle: created (anonymous, on an `optional`/`required` route) →
//! verified on every request (idle and absolute limits from the record's own
//! timestamps, binding) → touched (`last_seen`, written behind) → rotated at
//! login (new token, same `id` and `data`, absolute lifetime restarts) →
//! revoked (logout, admin, binding mismatch) or expired. Revocation and
//! expiry delete the record; nothing ever resurrects it.

use crate::config::{BindingConfig, IpBinding};
use http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::token::SessionId;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Who a logged-in session belongs to. The cache shares one copy per
/// distinct identity (`session::live::Identities`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub email: Option<String>,
    pub groups: Vec<String>,
}

/// What a session was bound to at creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientBinding {
    /// The client's address or prefix; `None` when IP binding is off.
    pub ip: Option<IpNet>,
    /// SHA-256 of the configured fingerprint headers.
    pub fingerprint: Fingerprint,
}

/// SHA-256 of a client's fingerprint headers. Held as the raw 32 bytes: as
/// a hex `String` it cost about 100 bytes more per cached session (a
/// million sessions are cached). Stored as lowercase hex, as it always was,
/// so existing records stay readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex(d, "fingerprint").map(Fingerprint)
    }
}

/// Digests in records are stored as lowercase hex.
fn serialize_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::token::hex(bytes))
}

fn deserialize_hex<'de, D: serde::Deserializer<'de>, const N: usize>(d: D, what: &str) -> Result<[u8; N], D::Error> {
    let s = std::borrow::Cow::<str>::deserialize(d)?;
    super::token::unhex(&s).ok_or_else(|| serde::de::Error::custom(format!("{what} is not {} hex digits", 2 * N)))
}

/// A digest of the `[[users]]` entry a built-in login checked the password
/// against (name, password hash, email, groups). A session made by that
/// login stays valid only while the entry is unchanged: a cache fill that
/// finds it different or gone ends the session (`Sessions::load`), which
/// covers a restart after the user was removed or changed (a reload ends
/// such sessions itself). 16 bytes of SHA-256; stored as hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryDigest(pub [u8; 16]);

impl EntryDigest {
    pub fn of(user: &crate::config::UserConfig) -> EntryDigest {
        let mut input = Vec::with_capacity(256);
        for part in [
            user.name.as_str(),
            user.password_hash.as_str(),
            user.email.as_deref().unwrap_or("\u{1}"),
        ] {
            input.extend_from_slice(part.as_bytes());
            input.push(0);
        }
        for g in &user.groups {
            input.extend_from_slice(g.as_bytes());
            input.push(1);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input).as_ref()[..16]);
        EntryDigest(out)
    }
}

impl Serialize for EntryDigest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for EntryDigest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex(d, "entry digest").map(EntryDigest)
    }
}

/// Why a request did not match its session's binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    Ip,
    Fingerprint,
}

impl Mismatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Ip => "ip",
            Mismatch::Fingerprint => "fingerprint",
        }
    }
}

impl ClientBinding {
    pub fn new(config: &BindingConfig, ip: IpAddr, headers: &HeaderMap) -> ClientBinding {
        ClientBinding {
            ip: ip_prefix(config.ip, ip),
            fingerprint: fingerprint(config, headers),
        }
    }

    /// Checks a request against the binding; IP first.
    pub fn check(&self, config: &BindingConfig, ip: IpAddr, headers: &HeaderMap) -> Result<(), Mismatch> {
        check_binding(self.ip.as_ref(), &self.fingerprint.0, config, ip, headers)
    }
}

/// Checks a request against a bound network and the leading bytes of a
/// fingerprint (all 32, or the 16 the session cache keeps: matching 128 bits
/// of SHA-256 is as infeasible to forge as matching 256); IP first.
pub fn check_binding(
    net: Option<&IpNet>,
    expected: &[u8],
    config: &BindingConfig,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<(), Mismatch> {
    check_binding_input(net, expected, ip, &fingerprint_input(config, headers))
}

/// [`check_binding`] with the fingerprint input already gathered.
pub fn check_binding_input(net: Option<&IpNet>, expected: &[u8], ip: IpAddr, input: &[u8]) -> Result<(), Mismatch> {
    if let Some(net) = net {
        if !net.contains(&crate::proxy::headers::canonical_ip(ip)) {
            return Err(Mismatch::Ip);
        }
    }
    if digest_input(input).0.get(..expected.len()) != Some(expected) {
        return Err(Mismatch::Fingerprint);
    }
    Ok(())
}

/// The network a client address is bound to under `mode`.
pub fn ip_prefix(mode: IpBinding, ip: IpAddr) -> Option<IpNet> {
    let ip = crate::proxy::headers::canonical_ip(ip);
    let len = match (mode, ip) {
        (IpBinding::Off, _) => return None,
        (IpBinding::Exact, IpAddr::V4(_)) => 32,
        (IpBinding::Exact, IpAddr::V6(_)) => 128,
        (IpBinding::Subnet { v4, .. }, IpAddr::V4(_)) => v4,
        (IpBinding::Subnet { v6, .. }, IpAddr::V6(_)) => v6,
    };
    IpNet::new(ip, len).ok().map(|n| n.trunc())
}

/// SHA-256 over the configured headers' names and values, in config order.
/// A missing header hashes differently from an empty one. The input is
/// gathered on the stack and hashed in one call: an incremental digest
/// context allocates, and this runs on every verified request.
pub fn fingerprint(config: &BindingConfig, headers: &HeaderMap) -> Fingerprint {
    digest_input(&fingerprint_input(config, headers))
}

fn digest_input(input: &[u8]) -> Fingerprint {
    let mut out = [0u8; 32];
    out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, input).as_ref());
    Fingerprint(out)
}

/// The bytes [`fingerprint`] hashes, gathered from a request's headers.
pub type FingerprintInput = smallvec::SmallVec<[u8; 256]>;

/// What [`fingerprint`] hashes: equal inputs, equal fingerprints.
pub fn fingerprint_input(config: &BindingConfig, headers: &HeaderMap) -> FingerprintInput {
    let mut input = smallvec::SmallVec::new();
    fingerprint_pieces(config, headers, |piece| {
        input.extend_from_slice(piece);
        true
    });
    input
}

/// Whether `headers` give exactly `input` as their [`fingerprint_input`],
/// compared piece by piece without gathering (or copying) them.
pub fn fingerprint_input_is(config: &BindingConfig, headers: &HeaderMap, input: &[u8]) -> bool {
    let mut rest = input;
    fingerprint_pieces(config, headers, |piece| match rest.strip_prefix(piece) {
        Some(after) => {
            rest = after;
            true
        }
        None => false,
    }) && rest.is_empty()
}

/// The fingerprint input's layout, in one place: each configured name,
/// each of its values after `\0=`, then `\0;`. Stops when `sink` says so.
fn fingerprint_pieces(config: &BindingConfig, headers: &HeaderMap, mut sink: impl FnMut(&[u8]) -> bool) -> bool {
    for name in &config.fingerprint_headers {
        if !sink(name.as_str().as_bytes()) {
            return false;
        }
        for v in headers.get_all(name) {
            if !sink(b"\x00=") || !sink(v.as_bytes()) {
                return false;
            }
        }
        if !sink(b"\x00;") {
            return false;
        }
    }
    true
}

/// The server's copy of a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: SessionId,
    pub identity: Option<Identity>,
    pub binding: ClientBinding,
    pub created_at: u64,
    /// Start of the absolute lifetime: creation, then each login.
    pub authenticated_at: u64,
    pub last_seen: u64,
    /// `authenticated_at + absolute_timeout`.
    pub expires_at: u64,
    pub data: String,
    /// Anti-CSRF secret for the gateway's own forms; rotated at login.
    pub csrf: String,
    /// Set by the built-in login: the user entry it authenticated against.
    /// `None` for anonymous and minted sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_entry: Option<EntryDigest>,
    /// Made by a sign-in through the OpenID provider (`[oidc]`), whose own
    /// session a sign-out may end too.
    #[serde(default, skip_serializing_if = "is_false")]
    pub provider_login: bool,
    /// The upstream servers this session is pinned to, one per group of
    /// servers a route balances over (see `proxy::balance`): written when
    /// a route with several servers first serves the session, and when its
    /// server is taken out of service or marked down and another serves
    /// it. So a session stays where its app state is, whatever servers a
    /// reload adds or a deploy brings back. The newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerKey>,
}

/// An upstream server as a session's pin names it: the server's rendezvous
/// seed (`proxy::balance`), a hash of its origin that is the same in every
/// build, instance and spelling of the address. Stored as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerKey(pub u64);

/// The most pins a session keeps: one per group of servers it used; the
/// oldest goes first (a group that no route lists any more).
pub const MAX_PINS: usize = 4;

impl Serialize for ServerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0.to_be_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for ServerKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_hex(d, "server key").map(|b| ServerKey(u64::from_be_bytes(b)))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What a login checked.
#[derive(Debug, Clone, Copy)]
pub enum LoginSource {
    /// A password, against this `[[users]]` entry.
    Password(EntryDigest),
    /// An ID token of the OpenID provider.
    Provider,
}

/// Why a session is no longer valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Idle,
    Absolute,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::Absolute => "absolute",
        }
    }
}

impl SessionRecord {
    /// Checks the record's own timestamps; `last_seen` may be fresher than
    /// the record's field (kept in the cache entry).
    pub fn expiry(&self, now: u64, last_seen: u64, idle_ms: u64) -> Option<Expiry> {
        expiry(self.expires_at, now, last_seen, idle_ms)
    }

    /// An anonymous, unbound record made at `created_at` (also its last
    /// use) whose absolute lifetime ends at `expires_at`: the stores' tests.
    #[cfg(test)]
    pub fn anonymous_at(created_at: u64, expires_at: u64) -> SessionRecord {
        SessionRecord {
            id: crate::session::token::SessionId([7; 16]),
            identity: None,
            binding: ClientBinding {
                ip: None,
                fingerprint: Fingerprint([0; 32]),
            },
            created_at,
            authenticated_at: created_at,
            last_seen: created_at,
            expires_at,
            data: String::new(),
            csrf: "c".into(),
            login_entry: None,
            provider_login: false,
            servers: Vec::new(),
        }
    }
}

/// The absolute limit first, then the idle one.
pub fn expiry(expires_at: u64, now: u64, last_seen: u64, idle_ms: u64) -> Option<Expiry> {
    if now >= expires_at {
        Some(Expiry::Absolute)
    } else if now.saturating_sub(last_seen) >= idle_ms {
        Some(Expiry::Idle)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_digests_change_with_the_entry_and_round_trip_as_hex() {
        let user = crate::config::UserConfig {
            name: "ann".into(),
            password_hash: "$argon2id$x".into(),
            email: None,
            groups: vec!["a".into()],
        };
        let d = EntryDigest::of(&user);
        let json = serde_json::to_string(&d).unwrap_or_default();
        assert_eq!(json.len(), 34, "{json}");
        assert_eq!(serde_json::from_str::<EntryDigest>(&json).ok(), Some(d));
        let changed = [
            crate::config::UserConfig {
                password_hash: "$argon2id$y".into(),
                ..user.clone()
            },
            crate::config::UserConfig {
                email: Some("ann@x".into()),
                ..user.clone()
            },
            crate::config::UserConfig {
                groups: vec!["a".into(), "b".into()],
                ..user.clone()
            },
            crate::config::UserConfig {
                groups: vec![],
                ..user.clone()
            },
        ];
        for other in &changed {
            assert_ne!(EntryDigest::of(other), d, "{other:?}");
        }
        assert_eq!(EntryDigest::of(&user.clone()), d);
    }

    #[test]
    fn fingerprints_are_stored_as_the_hex_they_always_were() {
        let fp = Fingerprint([0xab; 32]);
        let json = serde_json::to_string(&fp).unwrap_or_default();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        let back: Result<Fingerprint, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(fp));
        for bad in ["\"ab\"", "\"zz\"", "1"] {
            assert!(serde_json::from_str::<Fingerprint>(bad).is_err(), "{bad}");
        }
    }

    /// Pins are stored as 16 hex digits each, and left out when there are
    /// none: a record written before pins existed reads as unpinned.
    #[test]
    fn pins_are_stored_as_hex_and_optional() {
        let mut r = SessionRecord::anonymous_at(1, 2);
        let plain = serde_json::to_string(&r).unwrap_or_default();
        assert!(!plain.contains("servers"), "{plain}");
        let back: Option<SessionRecord> = serde_json::from_str(&plain).ok();
        assert_eq!(back.map(|b| b.servers), Some(vec![]));
        r.servers = vec![ServerKey(0x0123_4567_89ab_cdef), ServerKey(5)];
        let json = serde_json::to_string(&r).unwrap_or_default();
        assert!(
            json.contains(r#""servers":["0123456789abcdef","0000000000000005"]"#),
            "{json}"
        );
        let back: Option<SessionRecord> = serde_json::from_str(&json).ok();
        assert_eq!(back.map(|b| b.servers), Some(r.servers));
        assert!(serde_json::from_str::<ServerKey>("\"12\"").is_err());
    }

    /// Fingerprinting `User-Agent` and `Accept-Language`; a request with only the first.
    fn user_agent_and_language() -> (BindingConfig, HeaderMap) {
        let config = BindingConfig {
            ip: crate::config::IpBinding::Off,
            fingerprint_headers: vec![http::header::USER_AGENT, http::header::ACCEPT_LANGUAGE],
            on_mismatch: crate::config::OnMismatch::Revoke,
        };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::USER_AGENT, http::HeaderValue::from_static("ua/1"));
        (config, headers)
    }

    /// Records store fingerprints, so the bytes hashed must never change:
    /// pinned against SHA-256 of the literal input it has always hashed.
    #[test]
    fn fingerprint_input_is_stable() {
        let (config, headers) = user_agent_and_language();
        let expected = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            b"user-agent\x00=ua/1\x00;accept-language\x00;",
        );
        assert_eq!(&fingerprint(&config, &headers).0[..], expected.as_ref());
    }

    #[test]
    fn the_input_is_compared_exactly_without_gathering() {
        let (config, mut headers) = user_agent_and_language();
        let input = fingerprint_input(&config, &headers);
        assert!(fingerprint_input_is(&config, &headers, &input));
        assert!(
            !fingerprint_input_is(&config, &headers, &input[..input.len() - 1]),
            "shorter"
        );
        let mut longer = input.to_vec();
        longer.push(b'x');
        assert!(!fingerprint_input_is(&config, &headers, &longer), "longer");
        headers.append(http::header::USER_AGENT, http::HeaderValue::from_static("ua/2"));
        assert!(!fingerprint_input_is(&config, &headers, &input), "another value");
        assert!(fingerprint_input_is(
            &config,
            &headers,
            &fingerprint_input(&config, &headers)
        ));
    }
}
