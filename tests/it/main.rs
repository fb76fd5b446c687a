//! End-to-end tests for sessiongate: real TLS, real sockets on port 0, a real upstream.
//!
//! One test binary (one link step) with a module per area of behaviour. `kit` holds the
//! shared test kit; everything else is tests.

mod foundation;
mod kit;
mod redis;
pub(crate) mod sessions;
