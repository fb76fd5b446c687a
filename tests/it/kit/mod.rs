//! The test kit: what a test needs to put a gateway in front of a fake app and poke at it.
//!
//! # Layout
//! - [`upstream`]: `TestUpstream`, the app behind the gateway, which answers with a JSON report
//!   of what it received (`Echo`), plus a few special paths (streams, delays, WebSocket echo).
//! - [`config`]: `GatewayConfig` and `RouteSpec`, which write the TOML file so that a test states
//!   only the settings it is about.
//! - [`gateway`]: `TestGateway`, the library's `Gateway` run in-process, and `GatewayAddrs`, the
//!   addresses and clients shared by every way of running a gateway.
//! - [`binary`]: `BinaryGateway`, the real `sessiongate` process (killed on drop), its JSON log,
//!   and `run_cli` for one-shot commands such as `check` and `gen-cert`.
//! - [`client`]: HTTPS clients that trust only the test certificate; raw TLS connections.
//! - [`idp`]: `TestIdp`, a mock OpenID Connect provider (code flow with PKCE) over HTTPS.
//! - [`raw`]: a byte-level HTTP/1.x client for requests that real clients refuse to send.

// The kit is shared by several test modules and each uses a different part of it.
#![allow(dead_code)]

pub mod binary;
pub mod client;
pub mod config;
pub mod gateway;
pub mod idp;
pub mod raw;
pub mod upstream;

use std::{future::Future, time::Duration};

// The names tests use most, at the kit's root. Not every test module uses every one, and an
// unused re-export is not a mistake here.
#[allow(unused_imports)]
pub use self::{
    binary::{run_cli, BinaryGateway, CliOutput},
    client::{HttpVersion, ALPN_H1, ALPN_H2, ALPN_H2_H1},
    config::{quoted, GatewayConfig, RouteSpec},
    gateway::{GatewayAddrs, TestGateway},
    raw::{get_request, RawConn, RawResponse},
    upstream::{closed_port, Echo, TestUpstream, SLOW_BODY},
};

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
///
/// This is an upper bound for things that must happen, never a way to wait for something.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// Shorthand for the common upper bound of a few seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Shorthand for short upper bounds and configured delays.
pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}
