//! Sessions end to end: the cookie, what the upstream learns about the session, login,
//! logout, binding, expiry, malformed cookies, durability across restarts and the session
//! admin API, each pinned against the standard site in [`support`].
//!
//! Modules by concern:
//! - `cookie`: the session cookie's shape and attributes, and which routes issue one.
//! - `identity`: the headers the upstream sees, the cookie it never sees, session data, and
//!   what it may not set.
//! - `login`: the form, CSRF, rotation, throttling, `rd`, required routes and groups, and
//!   `/.sessiongate/session`.
//! - `logout`: proof of origin, and the token staying dead.
//! - `flow`: login → identity → logout on HTTP/1.1 and HTTP/2.
//! - `binding`: User-Agent and IP binding, revoke versus reject.
//! - `expiry`: idle and absolute timeouts.
//! - `malformed`: cookies we did not issue, or more than one.
//! - `durability`: the embedded store across SIGTERM and SIGKILL restarts of the binary.
//! - `admin_api`: minting, listing and revoking sessions, and the session metrics.
//! - `batch_mint`: minting many sessions in one admin request (`"count": N`).
//! - `cli`: `sessiongate session mint | list | revoke`, the binary against the admin API.
//! - `user_limit`: `[session] max_per_user`, ending the least recent or refusing.
//! - `new_limit`: `[session] new_per_ip_per_minute`, anonymous sessions per client address.
//! - `recent`: one kept-alive connection presenting the same session again and again.
//! - `reload`: `[[users]]` reloaded from the config file (SIGHUP, `POST /reload`).
//! - `step_up`: routes' `max_auth_age`, a recent sign-in required (password and provider).
//! - `oidc`: sign-in through an OpenID Connect provider (`[oidc]`, the kit's provider).

mod admin_api;
mod batch_mint;
mod binding;
mod cli;
mod cookie;
mod durability;
mod expiry;
mod flow;
mod identity;
mod login;
mod logout;
mod malformed;
mod new_limit;
mod oidc;
mod recent;
mod reload;
mod step_up;
pub(crate) mod support;
mod user_limit;
