//! `GatewayConfig`: writes the TOML file a gateway under test reads.
//!
//! Defaults keep every listener on `127.0.0.1:0` and the session store in memory, so a test
//! names only the settings it is about:
//!
//! ```ignore
//! GatewayConfig::proxy_all_to(&upstream)
//!     .server_str("upstream_timeout", "300ms")
//!     .route(RouteSpec::new("/api/", api.url()).max_body_bytes(1024))
//! ```
//!
//! Values are raw TOML (`"2"`, `"[\"127.0.0.0/8\"]"`); `*_str` helpers quote strings.

use std::{
    fs,
    path::{Path, PathBuf},
};

use tempfile::TempDir;

use super::{client::TEST_HOSTS, TestUpstream};

/// The store section used unless a test supplies its own: nothing touches the disk.
pub const MEMORY_STORE: &str = "[store]\nkind = \"memory\"\n";

/// File name of the config inside a prepared directory.
pub const CONFIG_FILE: &str = "sessiongate.toml";

/// Quotes `s` as a TOML basic string.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `[[routes]]` entry.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    path_prefix: String,
    /// The `upstream` value as raw TOML: one quoted origin, or an array of them.
    upstream: String,
    host: Option<String>,
    /// Further keys as `(key, raw TOML value)`, in order.
    extra: Vec<(String, String)>,
}

impl RouteSpec {
    /// Requests under `path_prefix` go to `upstream` (`http://127.0.0.1:PORT`).
    pub fn new(path_prefix: &str, upstream: impl Into<String>) -> Self {
        Self {
            path_prefix: path_prefix.to_owned(),
            upstream: quoted(&upstream.into()),
            host: None,
            extra: Vec::new(),
        }
    }

    /// Requests under `path_prefix` go to one of `upstreams` (`upstream = ["...", ...]`, in
    /// this order; empty or repeated as given, for tests of refused configs).
    pub fn balanced<S: AsRef<str>>(path_prefix: &str, upstreams: &[S]) -> Self {
        let list: Vec<String> = upstreams.iter().map(|u| quoted(u.as_ref())).collect();
        Self {
            upstream: format!("[{}]", list.join(", ")),
            ..Self::new(path_prefix, "")
        }
    }

    /// Only for requests to this host.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// Bodies larger than `n` bytes are refused with 413.
    pub fn max_body_bytes(self, n: u64) -> Self {
        self.set("max_body_bytes", n.to_string())
    }

    /// Any other key, with a raw TOML value.
    pub fn set(mut self, key: &str, raw_value: impl Into<String>) -> Self {
        self.extra.push((key.to_owned(), raw_value.into()));
        self
    }

    fn render(&self, out: &mut String) {
        out.push_str("\n[[routes]]\n");
        push_kv(out, "path_prefix", &quoted(&self.path_prefix));
        if let Some(host) = &self.host {
            push_kv(out, "host", &quoted(host));
        }
        push_kv(out, "upstream", &self.upstream);
        for (key, value) in &self.extra {
            push_kv(out, key, value);
        }
    }
}

/// A whole gateway configuration, rendered to TOML by [`GatewayConfig::prepare`].
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `[server]` keys as `(key, raw TOML value)`; setting a key again replaces it.
    server: Vec<(String, String)>,
    /// `[admin]` keys, same form.
    admin: Vec<(String, String)>,
    /// `[tls]` keys besides `cert` and `key`, same form.
    tls: Vec<(String, String)>,
    /// The `[store]` section, verbatim; `None` leaves it out.
    store: Option<String>,
    /// Further sections (`[session]`, `[[users]]`, ...), verbatim, before the routes.
    sections: Vec<String>,
    routes: Vec<RouteSpec>,
    /// Certificate and key to use instead of generating a self-signed pair.
    tls_files: Option<(PathBuf, PathBuf)>,
    /// Write the generated certificate paths relative to the config file.
    relative_tls_paths: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayConfig {
    /// Listeners on `127.0.0.1:0`, two workers (so every test crosses
    /// them, whatever the machine's CPU count), memory store, no routes.
    pub fn new() -> Self {
        Self {
            server: vec![
                ("listen".to_owned(), quoted("127.0.0.1:0")),
                ("workers".to_owned(), "2".to_owned()),
            ],
            admin: vec![("listen".to_owned(), quoted("127.0.0.1:0"))],
            tls: Vec::new(),
            store: Some(MEMORY_STORE.to_owned()),
            sections: Vec::new(),
            routes: Vec::new(),
            tls_files: None,
            relative_tls_paths: false,
        }
    }

    /// One route, `/` to `upstream`.
    pub fn proxy_all_to(upstream: &TestUpstream) -> Self {
        Self::new().route(RouteSpec::new("/", upstream.url()))
    }

    /// Adds a route (order is kept; the gateway must not depend on it).
    pub fn route(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// Sets a `[server]` key to a raw TOML value.
    pub fn server(mut self, key: &str, raw_value: impl Into<String>) -> Self {
        set_key(&mut self.server, key, raw_value.into());
        self
    }

    /// Sets a `[server]` key to a string (durations, addresses).
    pub fn server_str(self, key: &str, value: &str) -> Self {
        self.server(key, quoted(value))
    }

    /// Sets a `[tls]` key (other than `cert` and `key`) to a raw TOML value.
    pub fn tls(mut self, key: &str, raw_value: impl Into<String>) -> Self {
        set_key(&mut self.tls, key, raw_value.into());
        self
    }

    /// Sets an `[admin]` key to a raw TOML value.
    pub fn admin(mut self, key: &str, raw_value: impl Into<String>) -> Self {
        set_key(&mut self.admin, key, raw_value.into());
        self
    }

    /// Adds the plain-HTTP redirect listener on `127.0.0.1:0`.
    pub fn redirect_listener(self) -> Self {
        self.server_str("http_redirect_listen", "127.0.0.1:0")
    }

    /// Whether the redirect listener is configured.
    pub fn has_redirect_listener(&self) -> bool {
        self.server.iter().any(|(k, _)| k == "http_redirect_listen")
    }

    /// Replaces the `[store]` section (`None` leaves it out entirely).
    pub fn store_section(mut self, section: Option<&str>) -> Self {
        self.store = section.map(str::to_owned);
        self
    }

    /// Appends a section verbatim (it is placed before the routes).
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push(toml.to_owned());
        self
    }

    /// Serves this certificate and key instead of a freshly generated pair.
    pub fn tls_files(mut self, cert: &Path, key: &Path) -> Self {
        self.tls_files = Some((cert.to_owned(), key.to_owned()));
        self
    }

    /// Names the generated certificate and key relative to the config file's directory.
    pub fn relative_tls_paths(mut self) -> Self {
        self.relative_tls_paths = true;
        self
    }

    /// The TOML text for the given certificate and key paths (as they should appear).
    pub fn render(&self, cert: &str, key: &str) -> String {
        let mut out = String::from("[server]\n");
        for (k, v) in &self.server {
            push_kv(&mut out, k, v);
        }
        out.push_str("\n[tls]\n");
        push_kv(&mut out, "cert", &quoted(cert));
        push_kv(&mut out, "key", &quoted(key));
        for (k, v) in &self.tls {
            push_kv(&mut out, k, v);
        }
        out.push_str("\n[admin]\n");
        for (k, v) in &self.admin {
            push_kv(&mut out, k, v);
        }
        if let Some(store) = &self.store {
            out.push('\n');
            out.push_str(store);
        }
        for section in &self.sections {
            out.push('\n');
            out.push_str(section);
            if !section.ends_with('\n') {
                out.push('\n');
            }
        }
        for route in &self.routes {
            route.render(&mut out);
        }
        out
    }

    /// Makes a temp dir holding a certificate (unless [`Self::tls_files`] gave one) and the
    /// config file.
    pub fn prepare(&self) -> PreparedConfig {
        let dir = tempfile::tempdir().expect("create temp dir for the gateway");
        let (cert, key) = match &self.tls_files {
            Some((cert, key)) => (cert.clone(), key.clone()),
            None => {
                let hosts: Vec<String> = TEST_HOSTS
                    .iter()
                    .copied()
                    .chain(["127.0.0.1"])
                    .map(str::to_owned)
                    .collect();
                sessiongate::tls::write_self_signed(dir.path(), &hosts)
                    .unwrap_or_else(|e| panic!("write_self_signed failed: {e}"))
            }
        };
        let (cert_in_file, key_in_file) = if self.relative_tls_paths && self.tls_files.is_none() {
            (file_name(&cert), file_name(&key))
        } else {
            (cert.display().to_string(), key.display().to_string())
        };
        let text = self.render(&cert_in_file, &key_in_file);
        let path = dir.path().join(CONFIG_FILE);
        fs::write(&path, &text).expect("write gateway config");
        PreparedConfig { dir, path, cert, text }
    }
}

/// A config written to disk, ready to load. Keep it alive as long as the gateway runs.
pub struct PreparedConfig {
    /// Holds the config file and certificate; deleted on drop.
    pub dir: TempDir,
    /// The config file.
    pub path: PathBuf,
    /// The certificate clients must trust.
    pub cert: PathBuf,
    /// What the config file says, for failure messages.
    pub text: String,
}

fn set_key(keys: &mut Vec<(String, String)>, key: &str, value: String) {
    match keys.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => keys.push((key.to_owned(), value)),
    }
}

fn push_kv(out: &mut String, key: &str, raw_value: &str) {
    out.push_str(key);
    out.push_str(" = ");
    out.push_str(raw_value);
    out.push('\n');
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("certificate path has a file name")
        .to_string_lossy()
        .into_owned()
}
