//! The Redis shared session store: several gateway instances serve the same sessions, an
//! ending (logout, rotation, revocation) on one is refused by the others within
//! [`support::PROPAGATION`], a lost invalidation feed or a lost Redis fails closed, and the
//! store holds token hashes, never tokens.
//!
//! Every test starts its own `redis-server` (or cluster) on free ports, see [`server`]. Without
//! Redis installed the tests print "skipping: redis-server not installed" and pass, unless
//! `SESSIONGATE_REQUIRE_REDIS=1` (CI) makes that a failure.
//!
//! Modules by concern:
//! - `sharing`: a session made on one instance is valid on another; the key layout; no raw
//!   token in the store; no start without Redis.
//! - `invalidation`: logout, login rotation and admin revocation reach the other instance.
//! - `pubsub`: with the invalidation feed cut, an instance reads through instead of trusting
//!   its cache, and recovers.
//! - `outage`: Redis killed and restarted under traffic: 503 with `Retry-After`, readiness,
//!   sessions intact afterwards.
//! - `cluster`: the same across a three-node Redis Cluster.
//! - `batch`: a batch mint (`"count": N`) reaches the store whole, on a node and a cluster.
//! - `pinning`: the server a session is pinned to (moved there by one instance) is shared.
//! - `write_behind`: `last_seen` is written behind, not on every request.

mod batch;
mod cluster;
mod invalidation;
mod outage;
mod pinning;
mod pubsub;
mod server;
mod sharing;
mod support;
mod write_behind;

// The session tests' standard site, `Browser` and admin helpers, shared rather than copied.
use crate::sessions::support as site;
