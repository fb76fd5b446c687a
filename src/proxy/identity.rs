//! Identity headers towards the upstream (SECURITY.md rule 3).
//!
//! Every inbound header whose name, folded (lowercase, `_` and `.` → `-`),
//! equals one of the names the gateway owns is deleted unconditionally, on
//! every route, whether or not the session has a value for it: upstream
//! frameworks often fold `X_Forwarded_User` into `X-Forwarded-User`. The
//! deletion runs inside the pipeline's single header pass
//! (`headers::strip` with [`OwnedHeaders::collides`]); then, for a session,
//! our values are set.

use super::headers::{fold, folds_to};
use crate::config::HeaderNames;
use crate::session::Live;
use http::header::{HeaderMap, HeaderName};

/// The folded forms of the names we own.
pub struct OwnedHeaders {
    folded: Vec<Vec<u8>>,
}

impl OwnedHeaders {
    pub fn new(names: &HeaderNames) -> OwnedHeaders {
        let all = [
            &names.user,
            &names.email,
            &names.groups,
            &names.session_id,
            &names.session_data,
            &names.session_data_set,
        ];
        OwnedHeaders {
            folded: all.iter().map(|n| n.as_str().bytes().map(fold).collect()).collect(),
        }
    }

    /// Whether `name` folds to one of ours.
    pub fn collides(&self, name: &HeaderName) -> bool {
        self.folded.iter().any(|f| folds_to(name.as_str().as_bytes(), f))
    }
}

/// Sets the session's identity, id and data headers. The identity values
/// are shared by the identity's sessions; the id and data values are made
/// here (see `session::live`).
pub fn apply(headers: &mut HeaderMap, names: &HeaderNames, live: &Live) {
    headers.insert(names.session_id.clone(), live.id_header());
    if let Some(identity) = &live.record.identity {
        if let Some(v) = &identity.user_header {
            headers.insert(names.user.clone(), v.clone());
        }
        if let Some(v) = &identity.email_header {
            headers.insert(names.email.clone(), v.clone());
        }
        if let Some(v) = &identity.groups_header {
            headers.insert(names.groups.clone(), v.clone());
        }
    }
    if let Some(v) = live.data_header() {
        headers.insert(names.session_data.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_every_spelling() {
        let names = HeaderNames {
            user: HeaderName::from_static("x-forwarded-user"),
            email: HeaderName::from_static("x-forwarded-email"),
            groups: HeaderName::from_static("x-forwarded-groups"),
            session_id: HeaderName::from_static("x-session-id"),
            session_data: HeaderName::from_static("x-session-data"),
            session_data_set: HeaderName::from_static("x-session-data-set"),
        };
        let owned = OwnedHeaders::new(&names);
        let mut h = HeaderMap::new();
        for n in [
            "x-forwarded-user",
            "x_forwarded_user",
            "x.forwarded.user",
            "x-session_id",
            "x-other",
        ] {
            h.insert(
                HeaderName::from_bytes(n.as_bytes()).unwrap_or_else(|_| unreachable!()),
                HeaderValue::from_static("evil"),
            );
        }
        crate::proxy::headers::strip(&mut h, |n| owned.collides(n));
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-other"));
    }
}
