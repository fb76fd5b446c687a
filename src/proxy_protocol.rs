//! The PROXY protocol (HAProxy's, versions 1 and 2) on the listeners: how a
//! TCP load balancer tells the gateway whose connection it is relaying.
//!
//! Behind a layer-4 balancer the socket's peer is the balancer, so without
//! this every session would be bound to the balancer's address and every
//! visitor would share its allowance of new sessions. With
//! `[server] proxy_protocol_from`, a connection from a listed peer must
//! begin with a PROXY header, and the address it declares becomes the
//! connection's client address. A connection from any other peer is served
//! as a direct client: its bytes go to TLS as they are, so a header a client
//! typed is never believed (it fails the handshake).
//!
//! The header is read exactly, never beyond its last byte: the TLS
//! handshake that follows reads the same socket. The socket is peeked, the
//! peeked bytes are parsed (by the `ppp` crate), and only the header's own
//! bytes are consumed. A header that arrives in pieces is consumed piece by
//! piece, since bytes that do not yet complete a header can only be header.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use ppp::{v1, v2, HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest header accepted, TLVs included. Version 1 headers are at
/// most 107 bytes; a version 2 header without TLVs at most 232. Balancers
/// add a few TLVs (AWS its endpoint id, GCP its connection id), well within.
pub const MAX_HEADER_BYTES: usize = 4096;

/// The first byte of a TLS record carrying a handshake message: what a
/// client that sends no PROXY header starts with.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Closed before sending a byte: a balancer's TCP health check does this.
    #[error("connection closed before sending anything")]
    Empty,
    #[error("connection closed before its PROXY header was complete")]
    Closed,
    #[error("PROXY header longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
    #[error(
        "no PROXY header: the connection starts with a TLS handshake (is the balancer set to send the PROXY protocol?)"
    )]
    Missing,
    #[error("no valid PROXY header: {0}")]
    Invalid(String),
    #[error("PROXY header declares a datagram (UDP) connection")]
    Datagram,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// What the connection from `peer` says about its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// The balancer relays the connection of this client.
    Client(SocketAddr),
    /// The balancer's own connection (a v2 `LOCAL` health check, a v1
    /// `UNKNOWN`, a UNIX socket): the socket's peer is the client.
    Local,
}

/// Whether connections from `peer` must start with a PROXY header.
pub fn expected_from(peer: IpAddr, from: &[IpNet]) -> bool {
    // A v4-mapped v6 peer (a dual-stack listener) is matched as the v4
    // address it is.
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    from.iter().any(|net| net.contains(&peer))
}

/// The client address for a connection from `peer`: the one its PROXY
/// header declares, or `peer` for the balancer's own connections.
pub async fn client_of(tcp: &mut TcpStream, peer: SocketAddr) -> Result<SocketAddr, ProxyHeaderError> {
    Ok(match read_header(tcp).await? {
        Declared::Client(addr) => addr,
        Declared::Local => peer,
    })
}

/// Reads one PROXY header from the start of `tcp`, and nothing after it.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Declared, ProxyHeaderError> {
    let mut header: Vec<u8> = Vec::new();
    let mut peeked = [0u8; 1024];
    loop {
        let n = tcp.peek(&mut peeked).await?;
        if n == 0 {
            return Err(if header.is_empty() {
                ProxyHeaderError::Empty
            } else {
                ProxyHeaderError::Closed
            });
        }
        let start = header.len();
        header.extend_from_slice(&peeked[..n]);
        match parse(&header)? {
            Step::Done { len, declared } => {
                // `len > start`: what was consumed before could not complete
                // a header, so this header ends within the peeked bytes.
                discard(tcp, len.saturating_sub(start)).await?;
                return Ok(declared);
            }
            Step::More => {
                if header.len() >= MAX_HEADER_BYTES {
                    return Err(ProxyHeaderError::TooLong);
                }
                // All of it is header: consume it, so the next peek waits
                // for bytes that have not arrived yet.
                discard(tcp, n).await?;
            }
        }
    }
}

async fn discard(tcp: &mut TcpStream, mut n: usize) -> io::Result<()> {
    let mut sink = [0u8; 1024];
    while n > 0 {
        let chunk = n.min(sink.len());
        tcp.read_exact(&mut sink[..chunk]).await?;
        n -= chunk;
    }
    Ok(())
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// A complete header of `len` bytes.
    Done { len: usize, declared: Declared },
    /// A header may still complete with more bytes.
    More,
}

fn parse(input: &[u8]) -> Result<Step, ProxyHeaderError> {
    if v1_line_unfinished(input) {
        // ppp judges a partial line by its fields, and refuses one cut
        // right after a space; a line is only complete at its end.
        return Ok(Step::More);
    }
    let parsed = HeaderResult::parse(input);
    if parsed.is_incomplete() {
        if let HeaderResult::V2(Err(v2::ParseError::Partial(_, length))) = &parsed {
            if 16 + *length > MAX_HEADER_BYTES {
                return Err(ProxyHeaderError::TooLong);
            }
        }
        return Ok(Step::More);
    }
    if input.first() == Some(&TLS_HANDSHAKE_RECORD) {
        return Err(ProxyHeaderError::Missing);
    }
    match parsed {
        HeaderResult::V1(Ok(h)) => Ok(Step::Done {
            len: h.header.len(),
            declared: match h.addresses {
                v1::Addresses::Tcp4(a) => Declared::Client(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Declared::Client(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => Declared::Local,
            },
        }),
        HeaderResult::V2(Ok(h)) => Ok(Step::Done {
            len: h.len(),
            declared: declared_v2(&h)?,
        }),
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
    }
}

/// The start of a version 1 line (`PROXY ...`) without its end yet.
fn v1_line_unfinished(input: &[u8]) -> bool {
    const PREFIX: &[u8] = b"PROXY ";
    const MAX_V1_BYTES: usize = 107;
    let starts = input.len().min(PREFIX.len());
    input[..starts] == PREFIX[..starts] && input.len() < MAX_V1_BYTES && !input.contains(&b'\n')
}

fn declared_v2(h: &v2::Header<'_>) -> Result<Declared, ProxyHeaderError> {
    if h.command == v2::Command::Local {
        return Ok(Declared::Local);
    }
    if h.protocol == v2::Protocol::Datagram {
        return Err(ProxyHeaderError::Datagram);
    }
    Ok(match h.addresses {
        v2::Addresses::IPv4(a) => Declared::Client(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::IPv6(a) => Declared::Client(SocketAddr::from((a.source_address, a.source_port))),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => Declared::Local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, Command, Protocol, Version};

    fn v2_header(command: Command, protocol: Protocol, addresses: impl Into<v2::Addresses>) -> Vec<u8> {
        Builder::with_addresses(Version::Two | command, protocol, addresses)
            .build()
            .unwrap_or_else(|e| panic!("building a v2 header: {e}"))
    }

    fn client(s: &str) -> Declared {
        Declared::Client(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn v1_declares_the_source_and_ends_at_its_crlf() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n";
        let mut input = line.to_vec();
        input.extend_from_slice(&[0x16, 0x03, 0x01, 0x00, 0xff]);
        assert_eq!(
            parse(&input).ok(),
            Some(Step::Done {
                len: line.len(),
                declared: client("203.0.113.7:51000")
            })
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
        assert_eq!(
            parse(six).ok(),
            Some(Step::Done {
                len: six.len(),
                declared: client("[2001:db8::7]:51000")
            })
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").ok(),
            Some(Step::Done {
                len: 15,
                declared: Declared::Local
            })
        );
    }

    #[test]
    fn v2_declares_the_source_and_ends_at_its_length() {
        let addrs: (SocketAddr, SocketAddr) = (
            "198.51.100.9:40000".parse().unwrap_or_else(|_| unreachable!()),
            "10.0.0.1:443".parse().unwrap_or_else(|_| unreachable!()),
        );
        let header = v2_header(Command::Proxy, Protocol::Stream, addrs);
        let mut input = header.clone();
        input.extend_from_slice(&[0x16, 0x03, 0x01]);
        assert_eq!(
            parse(&input).ok(),
            Some(Step::Done {
                len: header.len(),
                declared: client("198.51.100.9:40000")
            })
        );
        let local = v2_header(Command::Local, Protocol::Unspecified, v2::Addresses::Unspecified);
        assert_eq!(
            parse(&local).ok(),
            Some(Step::Done {
                len: local.len(),
                declared: Declared::Local
            })
        );
        let udp = v2_header(Command::Proxy, Protocol::Datagram, addrs);
        assert!(matches!(parse(&udp), Err(ProxyHeaderError::Datagram)));
    }

    #[test]
    fn every_prefix_of_a_header_asks_for_more() {
        let addrs: (SocketAddr, SocketAddr) = (
            "198.51.100.9:40000".parse().unwrap_or_else(|_| unreachable!()),
            "10.0.0.1:443".parse().unwrap_or_else(|_| unreachable!()),
        );
        let v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\n".to_vec();
        for header in [v1, v2_header(Command::Proxy, Protocol::Stream, addrs)] {
            for cut in 1..header.len() {
                assert_eq!(parse(&header[..cut]).ok(), Some(Step::More), "{cut} bytes");
            }
        }
    }

    #[test]
    fn anything_else_is_refused() {
        // A TLS ClientHello, an HTTP request, a v1 line with a bad address,
        // a v1 line that never ends.
        assert!(matches!(
            parse(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]),
            Err(ProxyHeaderError::Missing)
        ));
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse(b"PROXY TCP4 203.0.113.999 10.0.0.1 1 2\r\n").is_err());
        assert!(parse(&[b'P'; 200]).is_err());
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(parse(&long).is_err());
    }

    #[test]
    fn a_v2_header_longer_than_the_limit_is_refused_from_its_length() {
        let mut input = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        input.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&input), Err(ProxyHeaderError::TooLong)));
    }

    #[test]
    fn no_input_makes_it_panic_or_read_past_what_it_was_given() {
        // Random bytes, and random bytes after each signature (xorshift,
        // fixed seed: the same inputs every run).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let prefixes: [&[u8]; 3] = [b"", b"PROXY ", b"\r\n\r\n\0\r\nQUIT\n"];
        for round in 0..30_000 {
            let mut input = prefixes[round % 3].to_vec();
            let extra = (next() % 300) as usize;
            input.extend((0..extra).map(|_| (next() & 0xff) as u8));
            if let Ok(Step::Done { len, .. }) = parse(&input) {
                assert!(len <= input.len(), "{input:?}");
            }
        }
    }

    #[test]
    fn only_listed_peers_must_send_a_header() {
        let from: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap_or_else(|_| unreachable!())];
        assert!(expected_from(
            "10.0.0.7".parse().unwrap_or_else(|_| unreachable!()),
            &from
        ));
        assert!(expected_from(
            "::ffff:10.0.0.7".parse().unwrap_or_else(|_| unreachable!()),
            &from
        ));
        assert!(!expected_from(
            "10.0.1.7".parse().unwrap_or_else(|_| unreachable!()),
            &from
        ));
        assert!(!expected_from(
            "10.0.0.7".parse().unwrap_or_else(|_| unreachable!()),
            &[]
        ));
    }
}
