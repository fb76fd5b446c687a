//! Session tokens, their hashes and session ids: three types that cannot be
//! confused for one another.
//!
//! A [`SessionToken`] exists only when it came from the OS CSPRNG or parsed as
//! exactly 32 bytes of canonical base64url. The server only ever keeps its
//! [`TokenHash`] (SHA-256), so a leaked store leaks no usable cookie. A
//! [`SessionId`] is a separate random 128-bit name that survives rotation and
//! may be shown to upstreams and operators.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Length of an encoded token (32 bytes in base64url without padding).
pub const TOKEN_LEN: usize = 43;

/// Fills `buf` from the OS CSPRNG. Failure here means the OS cannot give us
/// randomness: refusing to issue is the only safe answer.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| RandomError(e.to_string()))?;
    Ok(buf)
}

#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(String);

/// The secret the client holds. Never logged (no `Debug` of the value), never
/// stored, never forwarded.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken([u8; 32]);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl SessionToken {
    pub fn generate() -> Result<SessionToken, RandomError> {
        Ok(SessionToken(random_bytes()?))
    }

    /// A token whose hash starts with `tag`: rotation on a Redis cluster keeps
    /// old and new keys in one hash slot. The token is still uniformly
    /// random among those with that first hash byte (248 bits of entropy);
    /// it takes 256 tries on average.
    pub fn generate_with_tag(tag: u8) -> Result<SessionToken, RandomError> {
        for _ in 0..100_000 {
            let t = SessionToken::generate()?;
            if t.hash().0[0] == tag {
                return Ok(t);
            }
        }
        Err(RandomError("no token with the required hash tag was found".into()))
    }

    /// Parses a cookie value. Anything but 43 characters of canonical
    /// base64url (no padding, no trailing bits) is refused.
    pub fn parse(value: &str) -> Option<SessionToken> {
        if value.len() != TOKEN_LEN {
            return None;
        }
        let mut out = [0u8; 32];
        match URL_SAFE_NO_PAD.decode_slice(value.as_bytes(), &mut out) {
            Ok(32) => Some(SessionToken(out)),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn hash(&self) -> TokenHash {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.0);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
    }
}

/// SHA-256 of a token: the key of a session in every store and cache.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The first 8 bytes: the session cache's key. Uniform (SHA-256 of a
    /// random token), so it also serves as the key's hash; the cache entry
    /// keeps the full hash, and only a lookup with all 32 bytes equal uses it.
    pub fn prefix(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_le_bytes(first)
    }
}

/// Hashes a [`TokenHash`] (or its [`TokenHash::prefix`]) for a hash table
/// by taking 8 of its bytes: it is already a uniform SHA-256 output of a
/// server-chosen token, so hashing it again (SipHash over 40 bytes) only
/// costs time. Equality still compares the keys. For other inputs it folds
/// the bytes in, which is only sound for uniform input: use it for token
/// hashes alone.
#[derive(Default, Clone, Copy)]
pub struct TokenHasher(u64);

impl std::hash::Hasher for TokenHasher {
    fn write(&mut self, bytes: &[u8]) {
        if let (32.., Some(first)) = (bytes.len(), bytes.first_chunk::<8>()) {
            // A token hash: its first 8 bytes are as uniform as any hash.
            self.0 ^= u64::from_le_bytes(*first);
            return;
        }
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, prefix: u64) {
        self.0 ^= prefix;
    }

    fn write_usize(&mut self, _len: usize) {
        // The length prefix `Hash` writes for an array: always 32 here.
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The `BuildHasher` of the session cache (see [`TokenHasher`]).
pub type BuildTokenHasher = std::hash::BuildHasherDefault<TokenHasher>;

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only a prefix: enough to correlate, useless to an attacker anyway.
        write!(f, "TokenHash({}…)", hex(&self.0[..4]))
    }
}

/// The stable, non-secret name of a session (128 random bits, hex).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub fn generate() -> Result<SessionId, RandomError> {
        Ok(SessionId(random_bytes()?))
    }

    pub fn parse(s: &str) -> Option<SessionId> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(SessionId(out))
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SessionId::parse(&s).ok_or_else(|| serde::de::Error::custom("bad session id"))
    }
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes the lowercase hex of `bytes` into `out` (twice as long; extra
/// input or output is ignored).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The `N` bytes spelled by exactly `2 * N` hex digits (either case).
pub fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A random URL-safe string (for CSRF tokens): `N` bytes, base64url.
pub fn random_string<const N: usize>() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<N>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_noise() {
        let t = SessionToken::generate().unwrap_or_else(|_| unreachable!());
        let s = t.encode();
        assert_eq!(s.len(), TOKEN_LEN);
        assert_eq!(SessionToken::parse(&s).map(|p| p.hash()), Some(t.hash()));
        assert!(SessionToken::parse("").is_none());
        assert!(SessionToken::parse(&format!("{s}A")).is_none());
        assert!(SessionToken::parse(&s.replace(|c: char| c.is_alphanumeric(), "=")).is_none());
        // A non-canonical last character (trailing bits set) is refused.
        let mut last = s.clone();
        last.pop();
        last.push('/');
        assert!(SessionToken::parse(&last).is_none());
    }

    #[test]
    fn unhex_is_strict() {
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(unhex::<2>(&hex(&[1, 254])), Some([1, 254]));
        for bad in ["0a", "0aff00", "+aff", "0agf", "0a f"] {
            assert_eq!(unhex::<2>(bad), None, "{bad}");
        }
    }

    #[test]
    fn token_hashes_hash_to_their_first_bytes() {
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&0x0123_4567_89ab_cdef_u64.to_le_bytes());
        h[8] = 0xff;
        assert_eq!(
            BuildTokenHasher::default().hash_one(TokenHash(h)),
            0x0123_4567_89ab_cdef
        );
        assert_eq!(TokenHash(h).prefix(), 0x0123_4567_89ab_cdef);
        assert_eq!(
            BuildTokenHasher::default().hash_one(TokenHash(h).prefix()),
            0x0123_4567_89ab_cdef
        );
        // Other input still depends on every byte.
        let mut a = TokenHasher::default();
        b"abc".hash(&mut a);
        let mut b = TokenHasher::default();
        b"abd".hash(&mut b);
        assert_ne!(a.finish(), b.finish());
        let mut out = [0u8; 4];
        hex_into(&[0xab, 0x01], &mut out);
        assert_eq!(&out, b"ab01");
    }

    #[test]
    fn ids_round_trip() {
        let id = SessionId::generate().unwrap_or_else(|_| unreachable!());
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        assert!(SessionId::parse("zz").is_none());
    }
}
