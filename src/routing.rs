//! Routing: path normalisation and the route table.
//!
//! The gateway authorises and forwards the *same* normalised path (SECURITY.md
//! rule 5): dot segments are resolved, duplicate slashes merged, unreserved
//! percent-escapes decoded, and anything that could be read differently by the
//! upstream (a climb above the root, encoded `/` or `\` used to climb, NUL,
//! `..;` path parameters) is refused with 400. Matching never looks at the
//! query string.
//!
//! Upstreams then read a normal path in different ways: Express and IIS
//! ignore case, WSGI servers decode `%2F`, servlet containers drop `;`
//! parameters, and Windows drops the dots and spaces that end a file or
//! directory name, so IIS serves `/admin./x` as `/admin/x`. A path is
//! routed only when every such reading picks the route its literal text
//! picks (see [`Router::route`]).

use crate::config::{AuthMode, CrossOrigin, Framing, RouteConfig};
use crate::proxy::balance::Servers;
use std::borrow::Cow;
use std::sync::Arc;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with `/`")]
    NotAbsolute,
    #[error("path climbs above the root")]
    ClimbsOut,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a malformed percent-escape")]
    BadEscape,
    #[error("path contains an ambiguous dot segment with parameters")]
    DotParams,
    #[error(
        "path picks another route once its case is folded, `%2F` decoded, `;` parameters dropped \
         or the dots and spaces that end its segments dropped"
    )]
    AmbiguousRoute,
    /// The path is a route's prefix without its final `/` (`/admin` for a
    /// route `/admin/`), which frameworks serve as that prefix: the client
    /// is sent there (as nginx does for such a location).
    #[error("path is a route's prefix without its final slash")]
    MissingSlash,
}

/// Normalises an origin-form request path (without query). Borrowed when
/// the path is already normal, as nearly every path is: the pipeline then
/// forwards the request target it received without rebuilding it.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let canonical = canonical_escapes(raw)?;
    // A path whose encoded slashes would climb out once a backend decodes them
    // is refused as well as one that climbs out literally.
    let decoded_slashes = canonical.replace("%2F", "/");
    resolve_segments(&decoded_slashes)?;
    let normal = resolve_segments(&canonical)?;
    // Only unreserved escapes were decoded, so equal text is the same path.
    Ok(if normal == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(normal)
    })
}

/// The common case, already normal: no escapes, no backslash or NUL, no
/// empty, `.` or `..` segments, no `;` that could hide a dot segment.
fn is_plain(path: &str) -> bool {
    let b = path.as_bytes();
    !b.iter().any(|c| matches!(c, b'%' | b'\\' | 0 | b';')) && !path.contains("//") && !path.contains("/.")
}

/// Decodes percent-escapes of unreserved characters, upper-cases the hex of
/// the rest, and refuses NUL, backslashes and broken escapes.
fn canonical_escapes(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let v = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(PathError::BadEscape)?;
                match v {
                    0 => return Err(PathError::Nul),
                    b'\\' => return Err(PathError::Backslash),
                    c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => out.push(c as char),
                    c => {
                        out.push('%');
                        out.push(char::from(HEX[(c >> 4) as usize]));
                        out.push(char::from(HEX[(c & 0xf) as usize]));
                    }
                }
                i += 3;
            }
            _ => {
                // `raw` is a &str, so non-ASCII bytes come in whole sequences.
                out.push(b as char);
                i += 1;
                if !b.is_ascii() {
                    out.pop();
                    let ch_len = utf8_len(b);
                    out.push_str(&raw[i - 1..i - 1 + ch_len]);
                    i += ch_len - 1;
                }
            }
        }
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        _ => 2,
    }
}

/// Resolves `.` and `..` and merges empty segments; keeps a trailing slash.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut stack: Vec<&str> = Vec::new();
    let trailing = path.len() > 1 && (path.ends_with('/') || path.ends_with("/.") || path.ends_with("/.."));
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::ClimbsOut);
                }
            }
            s if s.starts_with(".;") || s.starts_with("..;") => return Err(PathError::DotParams),
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &stack {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !stack.is_empty()) {
        out.push('/');
    }
    Ok(out)
}

/// A route as the request path uses it.
#[derive(Debug)]
pub struct Route {
    pub path_prefix: String,
    pub host: Option<String>,
    /// Where its requests go (see `proxy::balance`).
    pub servers: Servers,
    pub auth: AuthMode,
    pub groups: Vec<String>,
    pub max_body_bytes: Option<u64>,
    /// `max_auth_age` in milliseconds: how recent the sign-in must be.
    pub max_auth_age_ms: Option<u64>,
    pub cross_origin: CrossOrigin,
    pub framing: Framing,
    /// What the active health check asks its servers for (see
    /// `proxy::health_check`).
    pub health_check: Option<http::uri::PathAndQuery>,
    /// The `Host` of the checks: `health_check_host`, else the route's
    /// `host`; `None`: each server's own.
    pub health_check_host: Option<http::HeaderValue>,
    /// Label used in metrics and logs.
    pub label: String,
    /// Position in the router's table (indexes per-route state elsewhere).
    pub index: usize,
}

/// The readings of a path that [`Router::route`] makes besides the ones it
/// always makes (`%2F` decoded, `;` parameters dropped, Windows names).
#[derive(Debug, Clone, Copy)]
pub struct Readings {
    /// Case folded (`[server] upstream_paths_case_sensitive = false`).
    pub fold_case: bool,
    /// Without the extension of the last segment (`[server]
    /// upstream_paths_format_suffix`): Rails serves `/admin.json` as
    /// `/admin` in JSON, Spring MVC before 5.3 matches `/admin` for
    /// `/admin.anything`.
    pub format_suffix: bool,
}

/// The route table, ordered for first-match lookup: host-specific routes
/// before host-less ones, longer prefixes before shorter ones.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Arc<Route>>,
    readings: Readings,
}

impl Router {
    /// `readings`: which readings of a path besides the literal one must
    /// pick its route (see [`Router::route`]).
    pub fn new(config: &[RouteConfig], origins: &crate::proxy::upstream::Origins, readings: Readings) -> Router {
        let mut routes: Vec<Route> = config
            .iter()
            .map(|r| Route {
                path_prefix: r.path_prefix.clone(),
                host: r.host.clone(),
                servers: Servers::new(r, origins),
                auth: r.auth,
                groups: r.groups.clone(),
                max_body_bytes: r.max_body_bytes,
                max_auth_age_ms: r.max_auth_age.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                cross_origin: r.cross_origin,
                framing: r.framing,
                health_check: r.health_check.clone(),
                health_check_host: r
                    .health_check_host
                    .as_ref()
                    .or(r.host.as_ref())
                    .and_then(|h| http::HeaderValue::from_str(h).ok()),
                label: match &r.host {
                    Some(h) => format!("{h}{}", r.path_prefix),
                    None => r.path_prefix.clone(),
                },
                index: 0,
            })
            .collect();
        routes.sort_by(|a, b| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.path_prefix.len().cmp(&a.path_prefix.len()))
        });
        let routes = routes
            .into_iter()
            .enumerate()
            .map(|(index, r)| Arc::new(Route { index, ..r }))
            .collect();
        Router { routes, readings }
    }

    /// The route for a lowercased host (no port) and a normalised path,
    /// read literally.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.find_by(host, path, false)
    }

    /// The route for a lowercased host (no port) and a normalised path, or
    /// `AmbiguousRoute` when a reading of the path that some upstream makes
    /// (case folded, `%2F` decoded, `;` parameters dropped, in any order,
    /// then segments' final dots and spaces dropped) picks a different
    /// one. Were `/Admin/keys` routed by its literal text
    /// to a public catch-all while an Express upstream served it as
    /// `/admin/keys`, an `auth = "required"` route would be skipped
    /// (SECURITY.md rule 5). The literal route is the one used and the
    /// literal path the one forwarded.
    pub fn route(&self, host: Option<&str>, path: &str) -> Result<Option<&Arc<Route>>, PathError> {
        let literal = self.find(host, path);
        let same = |other: Option<&Arc<Route>>| other.map(|r| r.index) == literal.map(|r| r.index);
        let fold = self.readings.fold_case;
        // A reading picks the literal route read as it is and, for an
        // upstream that folds case, folded too.
        let agrees = |reading: &str| {
            same(self.find_by(host, reading, false)) && (!fold || same(self.find_by(host, reading, true)))
        };
        // ... and so does the reading with a final `/`, where a route's
        // prefix is that (`/admin.json` read as `/admin`, served as `/admin/`).
        let reads_alike =
            |reading: &str| agrees(reading) && (!self.has_slash_twin(reading, fold) || agrees(&format!("{reading}/")));
        // One pass over the path; nearly every one has no upper case, no
        // `;` or escape, no segment that ends in a dot, and no dot in its
        // last segment (a format suffix: `format_stem`, an `rfind` and a
        // `find` that cost 249 instructions per request when run on every
        // path).
        let (mut upper, mut marks, mut dotted, mut prev) = (false, false, false, 0u8);
        for b in path.bytes() {
            upper |= b.is_ascii_uppercase();
            marks |= b == b';' || b == b'%' || (b == b'/' && prev == b'.');
            dotted = b == b'.' || (dotted && b != b'/');
            prev = b;
        }
        marks |= prev == b'.';
        if fold && upper && !same(self.find_by(host, path, true)) {
            return Err(PathError::AmbiguousRoute);
        }
        let stem_agrees = |reading: &str| !self.readings.format_suffix || format_stem(reading).is_none_or(&reads_alike);
        if dotted && !stem_agrees(path) {
            return Err(PathError::AmbiguousRoute);
        }
        if self.has_slash_twin(path, fold) {
            let slashed = format!("{path}/");
            if !same(self.find_by(host, &slashed, false)) {
                return Err(PathError::MissingSlash);
            }
            if fold && !same(self.find_by(host, &slashed, true)) {
                return Err(PathError::AmbiguousRoute);
            }
        }
        if !marks {
            return Ok(literal);
        }
        for reading in other_readings(path)? {
            if !reads_alike(&reading) || !stem_agrees(&reading) {
                return Err(PathError::AmbiguousRoute);
            }
        }
        Ok(literal)
    }

    /// Whether some route's prefix is `path` and a final `/` (`/admin/` for
    /// `/admin`). Express, Rails and Spring serve `/admin` as `/admin/`, so
    /// routing it by its literal text to a public catch-all would skip the
    /// route. A scan of the prefixes' lengths for nearly every path.
    fn has_slash_twin(&self, path: &str, fold: bool) -> bool {
        !path.ends_with('/')
            && self.routes.iter().any(|r| {
                let prefix = r.path_prefix.as_bytes();
                prefix.len() == path.len() + 1
                    && prefix.ends_with(b"/")
                    && prefix_matches(&r.path_prefix[..path.len()], path, fold)
            })
    }

    fn find_by(&self, host: Option<&str>, path: &str, fold: bool) -> Option<&Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.host.as_deref().is_none_or(|h| Some(h) == host) && prefix_matches(&r.path_prefix, path, fold))
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// `/api` matches `/api` and `/api/x` but not `/apiary`; `/api/` and `/`
/// match everything below them. `fold`: ASCII case is ignored.
fn prefix_matches(prefix: &str, path: &str, fold: bool) -> bool {
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    let Some((head, rest)) = path.split_at_checked(prefix.len()) else {
        return false;
    };
    let equal = if fold {
        head.eq_ignore_ascii_case(prefix)
    } else {
        head == prefix
    };
    equal && (prefix.ends_with(b"/") || rest.is_empty() || rest[0] == b'/')
}

/// Whether an upstream could read `path` as another path: `;` parameters
/// to drop, or an escaped `/` or `;` to decode. Escapes are upper-case once
/// normalised.
pub fn has_reading_marks(path: &str) -> bool {
    path.contains(';') || path.contains("%2F") || path.contains("%3B")
}

/// `path` without the extension of its last segment, from the segment's
/// first dot (`/admin.json` → `/admin`, `/a/b.tar.gz` → `/a/b`), as an
/// upstream that reads a format suffix serves it; `None` without one. A
/// segment that starts with its dot (`/.well-known`) has no stem.
pub fn format_stem(path: &str) -> Option<&str> {
    let start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[start..].find('.').filter(|&i| i > 0)?;
    Some(&path[..start + dot])
}

/// Whether a segment of `path` ends in a dot or an escaped space, which
/// Windows drops from file and directory names. A route prefix with one
/// would be refused for every path below it, so config refuses it too.
pub fn has_alias_marks(path: &str) -> bool {
    path.split('/').any(|seg| seg.ends_with('.') || seg.ends_with("%20"))
}

/// The readings of a normalised path, other than the literal one and the
/// case-folded one, that some upstream makes: `%2F` decoded, parameters
/// dropped at `;` (or at `;` and `%3B`), and both in either order; then,
/// of each of these and of the literal path, the Windows readings (see
/// [`strip_segment_ends`]). Each is dot-resolved again, since decoding or
/// dropping can expose a `..`.
fn other_readings(path: &str) -> Result<Vec<String>, PathError> {
    let params = has_reading_marks(path);
    if !params && !has_alias_marks(path) {
        return Ok(Vec::new());
    }
    let mut readings = vec![path.to_owned()];
    if params {
        let decode = |p: &str| p.replace("%2F", "/");
        readings.push(decode(path));
        for at_escaped in [false, true] {
            let dropped = drop_params(path, at_escaped);
            readings.push(decode(&dropped));
            readings.push(drop_params(&decode(path), at_escaped));
            readings.push(dropped);
        }
    }
    let windows: Vec<String> = readings
        .iter()
        .filter(|r| has_alias_marks(r))
        .flat_map(|r| [strip_segment_ends(r, false), strip_segment_ends(r, true)])
        .collect();
    readings.extend(windows);
    readings.sort_unstable();
    readings.dedup();
    readings.retain(|r| r != path);
    readings.iter().map(|r| resolve_segments(r)).collect()
}

/// Each segment without the escaped spaces (and, with `dots`, the dots)
/// that end it, as Windows maps a name to a file: IIS serves `/admin./x`
/// and `/admin%20/x` as `/admin/x`. Both readings are made because a
/// segment such as `..%20` reads as `..` once its spaces alone are gone; a
/// segment left empty merges with its neighbours.
fn strip_segment_ends(path: &str, dots: bool) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(strip_end(seg, dots));
    }
    out
}

fn strip_end(mut seg: &str, dots: bool) -> &str {
    while let Some(shorter) = seg
        .strip_suffix("%20")
        .or_else(|| seg.strip_suffix('.').filter(|_| dots))
    {
        seg = shorter;
    }
    seg
}

/// Each segment cut at its first `;` (and at `%3B` when `at_escaped`), as a
/// servlet container drops path parameters.
fn drop_params(path: &str, at_escaped: bool) -> String {
    let cut = |seg: &str| {
        let semi = seg.find(';').unwrap_or(seg.len());
        let escaped = if at_escaped {
            seg.find("%3B").unwrap_or(seg.len())
        } else {
            seg.len()
        };
        semi.min(escaped)
    };
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(&seg[..cut(seg)]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dots_and_slashes() {
        assert_eq!(normalize_path("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(normalize_path("/a/x/../b").as_deref(), Ok("/a/b"));
        assert_eq!(normalize_path("//a//b/").as_deref(), Ok("/a/b/"));
        assert_eq!(normalize_path("/").as_deref(), Ok("/"));
        assert_eq!(normalize_path("/a/%2e%2E/b").as_deref(), Ok("/b"));
        assert_eq!(normalize_path("/%7euser/%3f").as_deref(), Ok("/~user/%3F"));
        assert_eq!(normalize_path("/caf%C3%A9").as_deref(), Ok("/caf%C3%A9"));
        assert_eq!(normalize_path("/a/..").as_deref(), Ok("/"));
    }

    #[test]
    fn refuses_unsafe_paths() {
        assert_eq!(normalize_path("/../etc/passwd"), Err(PathError::ClimbsOut));
        assert_eq!(normalize_path("/%2e%2e/x"), Err(PathError::ClimbsOut));
        assert_eq!(normalize_path("/a/%2f..%2f..%2fx"), Err(PathError::ClimbsOut));
        assert_eq!(normalize_path("/a%00b"), Err(PathError::Nul));
        assert_eq!(normalize_path("/a%5cb"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a\\b"), Err(PathError::Backslash));
        assert_eq!(normalize_path("/a/..;/b"), Err(PathError::DotParams));
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadEscape));
    }

    #[test]
    fn prefix_matching_respects_segments() {
        assert!(prefix_matches("/api", "/api", false));
        assert!(prefix_matches("/api", "/api/x", false));
        assert!(!prefix_matches("/api", "/apiary", false));
        assert!(prefix_matches("/", "/anything", false));
        assert!(prefix_matches("/api/", "/api/x", false));
        assert!(!prefix_matches("/api", "/API/x", false));
        assert!(prefix_matches("/api", "/API/x", true));
        assert!(prefix_matches("/Api", "/aPI", true));
        assert!(!prefix_matches("/api", "/APIary", true));
        assert!(!prefix_matches("/api/x", "/api", true));
    }

    fn router(prefixes: &[&str], fold_case: bool) -> Router {
        router_with(
            prefixes,
            Readings {
                fold_case,
                format_suffix: false,
            },
        )
    }

    fn router_with(prefixes: &[&str], readings: Readings) -> Router {
        let routes: Vec<RouteConfig> = prefixes
            .iter()
            .map(|p| RouteConfig::for_tests(p, &["http://127.0.0.1:9"], AuthMode::None))
            .collect();
        Router::new(&routes, &crate::proxy::upstream::Origins::new(&routes), readings)
    }

    fn routed<'a>(router: &'a Router, path: &str) -> Result<Option<&'a str>, PathError> {
        router.route(None, path).map(|r| r.map(|r| r.path_prefix.as_str()))
    }

    #[test]
    fn every_reading_of_a_path_must_pick_the_same_route() {
        let r = router(&["/", "/admin"], true);
        // One route under every reading.
        for path in [
            "/x",
            "/admin/x",
            "/Docs;x",
            "/docs/a%2Fb",
            "/cart;jsessionid=1",
            "/admin/ORDERS;jsessionid=A",
        ] {
            assert!(routed(&r, path).is_ok(), "{path}: {:?}", routed(&r, path));
        }
        assert_eq!(routed(&r, "/admin;x/y"), Err(PathError::AmbiguousRoute));
        assert_eq!(routed(&r, "/ADMIN/keys"), Err(PathError::AmbiguousRoute));
        assert_eq!(routed(&r, "/admin%2Fkeys"), Err(PathError::AmbiguousRoute));
        assert_eq!(routed(&r, "/admin%3Bx/keys"), Err(PathError::AmbiguousRoute));
        assert_eq!(routed(&r, "/x%2F..%2Fadmin"), Err(PathError::AmbiguousRoute));
        // Case folded and parameters dropped, `%2F` left alone: `/admin`.
        assert_eq!(routed(&r, "/ADMIN;x%2F.."), Err(PathError::AmbiguousRoute));
        // A reading that climbs out is refused like a literal climb.
        assert_eq!(routed(&r, "/a%2F..%2F..%2Fx"), Err(PathError::ClimbsOut));
        assert_eq!(routed(&r, "/a/..;x%2F"), Err(PathError::DotParams));
    }

    #[test]
    fn windows_readings_drop_the_dots_and_spaces_that_end_segments() {
        let r = router(&["/", "/admin"], true);
        for path in [
            "/admin./keys",
            "/admin%20/keys",
            "/admin.%20./keys",
            "/ADMIN./keys",
            "/admin.",
        ] {
            assert_eq!(routed(&r, path), Err(PathError::AmbiguousRoute), "{path}");
        }
        // `..%20` is `..` once its space is gone; `...` an empty segment.
        assert_eq!(routed(&r, "/x/..%20/admin/keys"), Err(PathError::AmbiguousRoute));
        assert_eq!(routed(&r, "/..%20/x"), Err(PathError::ClimbsOut));
        assert_eq!(routed(&r, "/admin/.../x"), Ok(Some("/admin")));
        // Composed with the other readings: parameters dropped, then the dot.
        assert_eq!(routed(&r, "/admin.;x/keys"), Err(PathError::AmbiguousRoute));
        // Dots that end a segment but pick the same route, and dots inside.
        for path in ["/docs./x", "/v1.2/x", "/admin/a./b", "/admin/file.txt", "/x%20y"] {
            assert!(routed(&r, path).is_ok(), "{path}: {:?}", routed(&r, path));
        }
        assert_eq!(strip_segment_ends("/a.%20/..%20/b.c", false), "/a./../b.c");
        assert_eq!(strip_segment_ends("/a.%20/..%20/b.c", true), "/a//b.c");
    }

    #[test]
    fn a_prefix_without_its_final_slash_is_sent_there() {
        let r = router(&["/", "/admin/"], true);
        assert_eq!(routed(&r, "/admin"), Err(PathError::MissingSlash));
        assert_eq!(routed(&r, "/admin/"), Ok(Some("/admin/")));
        assert_eq!(routed(&r, "/adminx"), Ok(Some("/")));
        assert_eq!(routed(&r, "/ADMIN"), Err(PathError::AmbiguousRoute));
        // Without a catch-all it would be no route at all: sent there too.
        assert_eq!(
            routed(&router(&["/admin/"], false), "/admin"),
            Err(PathError::MissingSlash)
        );
        // A route for the path itself, or one above both: nothing to send.
        assert_eq!(routed(&router(&["/", "/docs"], true), "/docs"), Ok(Some("/docs")));
        assert_eq!(routed(&router(&["/"], true), "/admin"), Ok(Some("/")));
        // Other readings that land on the prefix without its slash: ambiguous.
        let both = Readings {
            fold_case: true,
            format_suffix: true,
        };
        let r = router_with(&["/", "/admin/"], both);
        for path in ["/admin.json", "/admin;x", "/admin%3Bx", "/admin."] {
            assert_eq!(routed(&r, path), Err(PathError::AmbiguousRoute), "{path}");
        }
    }

    #[test]
    fn format_suffixes_must_not_pick_another_route() {
        let both = Readings {
            fold_case: true,
            format_suffix: true,
        };
        let r = router_with(&["/", "/admin", "/api/"], both);
        for path in ["/admin.json", "/admin.tar.gz", "/ADMIN.json", "/admin.json;x"] {
            assert_eq!(routed(&r, path), Err(PathError::AmbiguousRoute), "{path}");
        }
        // An escaped dot is a dot once normalised.
        let normal = normalize_path("/admin%2Ejson").map(|p| p.into_owned());
        assert_eq!(normal.as_deref(), Ok("/admin.json"));
        // The stem routes alike: static files, dotted directories, a leading dot.
        for path in [
            "/app.js",
            "/admin/logo.png",
            "/api/v1.2/x",
            "/api/x.json",
            "/.well-known/x",
            "/a.b/",
        ] {
            assert!(routed(&r, path).is_ok(), "{path}: {:?}", routed(&r, path));
        }
        // Without the reading, the literal route.
        let literal = router_with(
            &["/", "/admin"],
            Readings {
                fold_case: true,
                format_suffix: false,
            },
        );
        assert_eq!(routed(&literal, "/admin.json"), Ok(Some("/")));
        assert_eq!(format_stem("/a/b.tar.gz"), Some("/a/b"));
        assert_eq!(format_stem("/a.b/c"), None);
        assert_eq!(format_stem("/x/.env"), None);
    }

    #[test]
    fn case_sensitive_upstreams_route_case_literally() {
        let r = router(&["/", "/admin"], false);
        assert_eq!(routed(&r, "/ADMIN/keys"), Ok(Some("/")));
        assert_eq!(routed(&r, "/admin;x/y"), Err(PathError::AmbiguousRoute));
        // Without a route for every reading, the answer is the literal one.
        let only_admin = router(&["/admin"], true);
        assert_eq!(routed(&only_admin, "/admin/x"), Ok(Some("/admin")));
        assert_eq!(routed(&only_admin, "/other"), Ok(None));
        assert_eq!(routed(&only_admin, "/Admin/x"), Err(PathError::AmbiguousRoute));
    }

    #[test]
    fn drops_parameters_per_segment() {
        assert_eq!(drop_params("/a;x/b;y=1/c", false), "/a/b/c");
        assert_eq!(drop_params("/a%3Bx/b", false), "/a%3Bx/b");
        assert_eq!(drop_params("/a%3Bx;y/b", true), "/a/b");
        assert_eq!(drop_params("/a;x/", false), "/a/");
    }

    /// Paths built from the pieces that matter to normalisation and to the
    /// readings, in a fixed pseudo-random sequence: never a panic; a normal
    /// path is absolute, has no empty, `.` or `..` segment and normalises to
    /// itself; routing it either picks a route or refuses it.
    #[test]
    fn random_paths_normalise_to_fixed_points_and_route_without_panicking() {
        const PIECES: [&str; 17] = [
            "/", "/", "a", "A", ".", "..", "%2e", "%2E", "%2F", "%2f", ";", "%3B", "%", "%zz", "\\", "é", "%20",
        ];
        let r = router_with(
            &["/", "/a", "/a/b"],
            Readings {
                fold_case: true,
                format_suffix: true,
            },
        );
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50_000 {
            let len = 1 + next() % 8;
            let mut path = String::from("/");
            for _ in 0..len {
                path.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            let Ok(normal) = normalize_path(&path) else { continue };
            assert!(normal.starts_with('/'), "{path} -> {normal}");
            assert!(
                !normal.contains("//") && normal.split('/').all(|seg| seg != "." && seg != ".."),
                "{path} -> {normal}"
            );
            assert_eq!(
                normalize_path(&normal).as_deref(),
                Ok(&*normal),
                "{path} is not a fixed point"
            );
            let _ = r.route(None, &normal);
        }
    }
}
