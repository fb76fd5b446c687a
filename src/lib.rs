//! # sessiongate
//!
//! A TLS-terminating reverse proxy that owns the sessions of unmodified
//! upstream web apps.
//!
//! ## Layout
//! - [`config`]: TOML file → validated runtime [`config::Config`].
//! - [`tls`]: certificates, the rustls server config, development certificates.
//! - [`server`]: listeners, connection limits, handshakes, graceful shutdown.
//! - [`proxy_protocol`]: client addresses from a TCP load balancer's PROXY header.
//! - [`routing`]: path normalisation and the route table.
//! - [`proxy`]: the request pipeline, header rules, upstream client, upgrades.
//! - [`cross_origin`]: refusal of state-changing requests from other origins (CSRF).
//! - [`session`]: tokens, records, binding, the cache and the stores.
//! - [`auth`]: built-in login, users, throttling, the gateway's own pages.
//! - [`admin`]: health, metrics and the session admin API.
//! - [`metrics`]: Prometheus metrics.
//! - [`redirect`]: the optional plain-HTTP → HTTPS redirect listener.
//! - [`demo`]: the built-in demo upstream behind `sessiongate demo`.
//! - [`error`]: request-path errors by blame.

pub mod admin;
pub mod auth;
pub mod config;
pub mod cross_origin;
pub mod demo;
pub mod error;
mod handshake;
pub mod metrics;
pub mod priority;
pub mod proxy;
pub mod proxy_protocol;
pub mod redirect;
pub mod routing;
pub mod server;
pub mod session;
pub mod tls;

pub use server::{Gateway, ShutdownHandle, StartError, TlsReloadHandle};
