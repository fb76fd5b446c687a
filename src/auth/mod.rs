//! Authentication: the users of the built-in login, password verification,
//! failed-login throttling, and the gateway's own endpoints under
//! `/.sessiongate/`.
//!
//! Password hashing is argon2id, run on dedicated `SCHED_IDLE` threads
//! ([`hasher`]) behind a small semaphore, so that a login storm cannot starve
//! proxied requests of CPU. An unknown user is verified against a dummy hash,
//! so it costs the same time and gets the same answer as a wrong password.

pub mod endpoints;
pub mod hasher;
pub mod oidc;
pub mod pages;
pub mod throttle;

use crate::config::{LoginConfig, UserConfig};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// `a` equals the secret `b` (never an empty one), in time that does not
/// depend on where they differ: CSRF fields, OIDC states and nonces.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    !b.is_empty() && aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// Checks that `phc` is an argon2id PHC string (config validation).
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| format!("not a PHC string ({e}); create one with `sessiongate hash-password`"))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(format!("algorithm `{}` is not argon2id", parsed.algorithm));
    }
    Ok(())
}

/// Hashes a password as an argon2id PHC string with the crate's defaults.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A hash of a throwaway password with the same cost parameters as `like`,
/// so that verifying an unknown user costs what a wrong password costs.
fn dummy_hash_like(like: Option<&str>) -> String {
    let params = like
        .and_then(|phc| PasswordHash::new(phc).ok())
        .and_then(|h| argon2::Params::try_from(&h).ok());
    let hasher = match params {
        Some(p) => Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p),
        None => Argon2::default(),
    };
    hasher
        .hash_password(b"sessiongate-dummy-password")
        .map(|h| h.to_string())
        .unwrap_or_default()
}

fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

/// How many CPUs this process may run on (its affinity mask and cgroup
/// quota, as the standard library counts them); 1 if unknown.
fn usable_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Why a login did not produce an identity.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("invalid username or password")]
    Invalid,
    #[error("too many concurrent logins")]
    Busy,
}

/// The configured users, by name, as one value that a reload replaces whole.
pub struct UserTable {
    by_name: HashMap<String, UserConfig>,
    /// Verified when the user is unknown, to equalise timing.
    dummy_hash: String,
}

impl UserTable {
    /// Hashes a dummy password (tens of milliseconds): build it off the
    /// request path.
    pub fn new(users: &[UserConfig]) -> UserTable {
        UserTable {
            by_name: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            dummy_hash: dummy_hash_like(users.first().map(|u| u.password_hash.as_str())),
        }
    }
}

/// What replacing the user table changed, by user name (sorted).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UserChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Password hash, email or groups differ.
    pub changed: Vec<String>,
}

/// Whether two entries of one user grant the same: password, email, groups.
fn same_entry(a: &UserConfig, b: &UserConfig) -> bool {
    a.password_hash == b.password_hash && a.email == b.email && a.groups == b.groups
}

/// A handle on the users in force, for the config reload (`admin`).
#[derive(Clone)]
pub struct UserDirectory(Arc<arc_swap::ArcSwap<UserTable>>);

impl UserDirectory {
    /// The user `name` as configured now.
    pub fn get(&self, name: &str) -> Option<UserConfig> {
        self.0.load().by_name.get(name).cloned()
    }

    /// Puts `table` in force for every login from now on; says what changed.
    pub fn replace(&self, table: UserTable) -> UserChanges {
        let old = self.0.swap(Arc::new(table));
        let new = self.0.load();
        let mut changes = UserChanges::default();
        for (name, u) in &new.by_name {
            match old.by_name.get(name) {
                None => changes.added.push(name.clone()),
                Some(o) if !same_entry(o, u) => changes.changed.push(name.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .by_name
            .keys()
            .filter(|n| !new.by_name.contains_key(*n))
            .cloned()
            .collect();
        changes.added.sort();
        changes.removed.sort();
        changes.changed.sort();
        changes
    }
}

/// The configured users (replaceable by a reload) and the password hashing.
pub struct Users {
    table: UserDirectory,
    /// At most `max_concurrent` verifications at once, the rest wait (briefly).
    permits: Arc<Semaphore>,
    /// `SCHED_IDLE` threads that run the hashes: `max_concurrent`, but no
    /// more than the CPUs they may use (`[login] hash_cpus`, or else the
    /// process's). A hash is single-threaded, so further threads add no
    /// throughput; each would only hold another argon2 memory block (19 MiB
    /// by default) for good and interleave one more working set in the
    /// caches. Jobs beyond the threads queue, still holding their permit.
    hasher: hasher::Hasher,
}

impl Users {
    /// Fails if the hashing threads cannot be placed on `login.hash_cpus`.
    pub fn new(users: &[UserConfig], login: &LoginConfig) -> std::io::Result<Users> {
        let cpus = match login.hash_cpus.len() {
            0 => usable_cpus(),
            n => n,
        };
        Ok(Users {
            table: UserDirectory(Arc::new(arc_swap::ArcSwap::from_pointee(UserTable::new(users)))),
            permits: Arc::new(Semaphore::new(login.max_concurrent)),
            hasher: hasher::Hasher::new(login.max_concurrent.min(cpus), &login.hash_cpus)?,
        })
    }

    /// Verifies a password on the hashing threads; waits for a hashing slot
    /// at most a few seconds.
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<UserConfig, LoginError> {
        let permit = tokio::time::timeout(std::time::Duration::from_secs(5), self.permits.clone().acquire_owned())
            .await
            .map_err(|_| LoginError::Busy)?
            .map_err(|_| LoginError::Busy)?;
        let (user, phc) = {
            let table = self.table.0.load();
            let user = table.by_name.get(name).cloned();
            let phc = user
                .as_ref()
                .map_or_else(|| table.dummy_hash.clone(), |u| u.password_hash.clone());
            (user, phc)
        };
        let ok = self.hasher.verify(phc, password.to_string(), Some(permit)).await;
        match (ok, user) {
            // A reload that removed or changed the user while the hash ran
            // ends the user's sessions: this login must not outlive it.
            (true, Some(u)) if self.table.get(name).is_some_and(|now| same_entry(&now, &u)) => Ok(u),
            _ => Err(LoginError::Invalid),
        }
    }

    /// Whether `[[users]]` names anyone now.
    pub fn has_any(&self) -> bool {
        !self.table.0.load().by_name.is_empty()
    }

    pub fn directory(&self) -> UserDirectory {
        self.table.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_validate() {
        let h = hash_password("pw").unwrap_or_default();
        assert!(check_phc(&h).is_ok());
        assert!(verify(&h, "pw"));
        assert!(!verify(&h, "other"));
        assert!(check_phc("plain").is_err());
    }
}
