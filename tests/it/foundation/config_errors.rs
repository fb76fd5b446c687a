//! What an operator sees for a bad config: exit code 2 and a message naming the file, the key
//! and, where known, the line; both from `sessiongate check` and from a plain start. Also
//! `check` on a good file, relative certificate paths, and `gen-cert`.

use std::{ffi::OsStr, path::Path};

use sessiongate::config::Config;

use crate::kit::{
    closed_port, config::PreparedConfig, quoted, run_cli, Echo, GatewayConfig, RouteSpec, TestGateway, TestUpstream,
};

/// A config that would be valid: one route to a port nobody needs to listen on.
fn valid_config() -> GatewayConfig {
    GatewayConfig::new().route(RouteSpec::new("/api/", format!("http://127.0.0.1:{}", closed_port())))
}

/// Writes `config`, then replaces its text with `edit(text)` (for errors the builder cannot
/// express, like broken syntax).
fn prepare_edited(config: GatewayConfig, edit: impl FnOnce(&str) -> String) -> PreparedConfig {
    let mut prepared = config.prepare();
    prepared.text = edit(&prepared.text);
    std::fs::write(&prepared.path, &prepared.text).expect("rewrite config");
    prepared
}

/// Runs both `check --config F` and `--config F`: each must exit 2 and say every word in
/// `mentions` on stderr.
fn assert_rejected(prepared: &PreparedConfig, mentions: &[&str]) {
    let path = prepared.path.as_os_str();
    let check = [OsStr::new("check"), OsStr::new("--config"), path];
    let run = [OsStr::new("--config"), path];
    for args in [&check[..], &run[..]] {
        let out = run_cli(args);
        assert_eq!(
            out.code(),
            Some(2),
            "{args:?} should exit 2\n--- stderr ---\n{}\n--- config ---\n{}",
            out.stderr,
            prepared.text
        );
        for word in mentions {
            assert!(
                out.stderr.contains(word),
                "{args:?}: stderr does not mention {word:?}\n--- stderr ---\n{}",
                out.stderr
            );
        }
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn toml_syntax_error_names_the_file_and_line() {
    let prepared = prepare_edited(valid_config(), |text| text.replace("[admin]", "[admin"));
    assert_rejected(&prepared, &[&path_text(&prepared.path), "line"]);
}

#[test]
fn unknown_key_is_named() {
    let prepared = valid_config().server("lisen", quoted("127.0.0.1:0")).prepare();
    assert_rejected(&prepared, &["lisen"]);
}

#[test]
fn wrong_type_is_named() {
    let prepared = valid_config().server("max_connections", quoted("many")).prepare();
    assert_rejected(&prepared, &["max_connections"]);
}

#[test]
fn bad_cidr_in_trusted_proxies_is_named() {
    let prepared = valid_config()
        .server("trusted_proxies", format!("[{}]", quoted("10.0.0.0/33")))
        .prepare();
    assert_rejected(&prepared, &["trusted_proxies"]);
}

#[test]
fn bad_upstream_url_is_named() {
    let prepared = valid_config().route(RouteSpec::new("/ftp/", "ftp://x")).prepare();
    assert_rejected(&prepared, &["upstream"]);
}

#[test]
fn missing_certificate_file_is_named_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = ["localhost".to_owned()];
    let (_cert, key) =
        sessiongate::tls::write_self_signed(dir.path(), &hosts).expect("write a certificate to get a real key");
    let missing = dir.path().join("no-such-cert.pem");
    let prepared = valid_config().tls_files(&missing, &key).prepare();
    assert_rejected(&prepared, &["cert", &path_text(&missing)]);
}

#[test]
fn zero_or_absurd_worker_counts_are_named() {
    for workers in ["0", "100000"] {
        let prepared = valid_config().server("workers", workers).prepare();
        assert_rejected(&prepared, &["server.workers"]);
    }
}

#[test]
fn a_header_count_limit_out_of_range_is_named() {
    for key in ["max_headers", "upstream_max_headers"] {
        for n in ["0", "31", "10001"] {
            let prepared = valid_config().server(key, n).prepare();
            assert_rejected(&prepared, &[&format!("server.{key}"), "between 32 and 10000"]);
        }
    }
}

#[test]
fn a_request_target_limit_below_256_is_named() {
    let prepared = valid_config().server("max_uri_bytes", "100").prepare();
    assert_rejected(&prepared, &["server.max_uri_bytes", "at least 256"]);
}

#[test]
fn unknown_handshake_mode_is_named() {
    let prepared = valid_config().server_str("tls_handshakes", "sometimes").prepare();
    assert_rejected(&prepared, &["server.tls_handshakes", "sometimes"]);
}

#[test]
fn hash_cpus_listed_twice_or_out_of_range_are_named() {
    for (cpus, reason) in [("[0, 1, 0]", "listed twice"), ("[1024]", "out of range")] {
        let prepared = valid_config()
            .section(&format!("[login]\nhash_cpus = {cpus}\n"))
            .prepare();
        assert_rejected(&prepared, &["login.hash_cpus", reason]);
        let prepared = valid_config().server("background_cpus", cpus).prepare();
        assert_rejected(&prepared, &["server.background_cpus", reason]);
    }
}

#[test]
fn a_per_user_session_limit_of_zero_or_an_unknown_action_is_named() {
    for (section, mentions) in [
        ("max_per_user = 0\n", ["session.max_per_user", "at least 1"]),
        ("on_user_limit = \"evict\"\n", ["session.on_user_limit", "evict"]),
    ] {
        let prepared = valid_config().section(&format!("[session]\n{section}")).prepare();
        assert_rejected(&prepared, &mentions);
    }
}

/// CPU 1023 passes the file's own validation (a machine could have it), but no test machine
/// has it. Listed beside CPU 0 the kernel would drop it silently; `check` refuses it, and a
/// start stops before it listens.
#[cfg(target_os = "linux")]
#[test]
fn hash_cpus_the_machine_lacks_are_refused_with_the_key_named() {
    let prepared = valid_config().section("[login]\nhash_cpus = [0, 1023]\n").prepare();
    assert_rejected_at_key(&prepared, "login.hash_cpus", "1023");
}

/// Rejected as [`assert_rejected`], and the error names the file, the line of `key` (its
/// last dotted part starts the line) and the key, then says `mention`.
fn assert_rejected_at_key(prepared: &PreparedConfig, key: &str, mention: &str) {
    let name = key.rsplit('.').next().unwrap_or(key);
    let line = prepared
        .text
        .lines()
        .position(|l| l.starts_with(name))
        .expect("the key is in the file")
        + 1;
    let file_and_line = format!("{}:{line}: key `{key}`", path_text(&prepared.path));
    assert_rejected(prepared, &[&file_and_line, mention]);
}

/// The same for `[server] background_cpus`: refused by `check`, and a start stops before the
/// store's commit thread or a listener exists.
#[cfg(target_os = "linux")]
#[test]
fn background_cpus_the_machine_lacks_are_refused_with_the_key_named() {
    let prepared = valid_config().server("background_cpus", "[0, 1023]").prepare();
    assert_rejected_at_key(&prepared, "server.background_cpus", "1023");
}

/// Routing reads each path case-folded, with `%2F` decoded and with `;` parameters dropped as
/// well as literally (`Router::route`): prefixes that differ only in case would refuse every
/// path below them, and a prefix holding `;`, `%2F` or `%3B`, or a segment ending in `.` or
/// `%20` (which Windows drops), would match no such reading. A
/// host with a final dot would match nothing, since requests' hosts lose theirs.
#[test]
fn route_prefixes_and_hosts_that_upstreams_read_alike_are_named() {
    let upstream = format!("http://127.0.0.1:{}", closed_port());
    let twins = valid_config()
        .route(RouteSpec::new("/API/", upstream.clone()))
        .prepare();
    assert_rejected(&twins, &["routes[1].path_prefix", "routes[0].path_prefix only in case"]);

    let relaxed = valid_config()
        .route(RouteSpec::new("/API/", upstream.clone()))
        .server("upstream_paths_case_sensitive", "true")
        .prepare();
    let out = run_cli([OsStr::new("check"), OsStr::new("--config"), relaxed.path.as_os_str()]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    let dotted = valid_config()
        .route(RouteSpec::new("/", upstream.clone()).host("secure.test."))
        .prepare();
    assert_rejected(&dotted, &["routes[1].host", "final dot"]);

    for prefix in ["/a;b/", "/a%2Fb/", "/a%3Bb/"] {
        let prepared = valid_config().route(RouteSpec::new(prefix, upstream.clone())).prepare();
        assert_rejected(&prepared, &["routes[1].path_prefix", "`;`, `%2F` or `%3B`"]);
    }
    for prefix in ["/files./", "/a%20/b", "/a/b."] {
        let prepared = valid_config().route(RouteSpec::new(prefix, upstream.clone())).prepare();
        assert_rejected(&prepared, &["routes[1].path_prefix", "`.` or `%20`"]);
    }

    // `/x` beside `/x/`: the first would serve nothing (redirected to the second).
    let twins = valid_config()
        .route(RouteSpec::new("/x", upstream.clone()))
        .route(RouteSpec::new("/x/", upstream.clone()))
        .prepare();
    assert_rejected(&twins, &["routes[2].path_prefix", "only by a final `/`"]);

    // A prefix with an extension: refused while upstreams may read format suffixes.
    let dotted = valid_config().route(RouteSpec::new("/login.php", upstream.clone()));
    assert_rejected(
        &dotted.clone().prepare(),
        &[
            "routes[1].path_prefix",
            "/login.php",
            "upstream_paths_format_suffix = false",
        ],
    );
    let relaxed = dotted.server("upstream_paths_format_suffix", "false").prepare();
    let out = run_cli([OsStr::new("check"), OsStr::new("--config"), relaxed.path.as_os_str()]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

#[test]
fn bad_duration_is_named() {
    let prepared = valid_config().server_str("upstream_timeout", "soon").prepare();
    assert_rejected(&prepared, &["upstream_timeout"]);
}

#[test]
fn config_error_display_names_file_key_and_line() {
    let file = Path::new("/etc/sessiongate/example.toml");
    let text = valid_config()
        .server("lisen", quoted("127.0.0.1:0"))
        .render("cert.pem", "key.pem");
    let message = Config::parse(&text, file)
        .expect_err("unknown key must be rejected")
        .to_string();
    assert!(
        message.contains("/etc/sessiongate/example.toml") && message.contains("lisen"),
        "unknown key error: {message}"
    );

    let broken = valid_config()
        .render("cert.pem", "key.pem")
        .replace("[admin]", "[admin");
    let message = Config::parse(&broken, file)
        .expect_err("syntax error must be rejected")
        .to_string();
    assert!(
        message.contains("/etc/sessiongate/example.toml") && message.contains("line"),
        "syntax error: {message}"
    );
}

#[test]
fn check_accepts_a_good_config_and_lists_listeners_routes_session_limits_and_hashing_cpus() {
    let upstream_port = closed_port();
    let prepared = GatewayConfig::new()
        .route(RouteSpec::new("/api/", format!("http://127.0.0.1:{upstream_port}")))
        .section("[login]\nhash_cpus = [0]\n[session]\nmax_per_user = 3\non_user_limit = \"refuse\"\n")
        .prepare();

    let out = run_cli([OsStr::new("check"), OsStr::new("--config"), prepared.path.as_os_str()]);
    assert_eq!(
        out.code(),
        Some(0),
        "check on a good config\n--- stderr ---\n{}",
        out.stderr
    );
    for expected in [
        "127.0.0.1:0".to_owned(),
        "/api/".to_owned(),
        format!("127.0.0.1:{upstream_port}"),
        "hashing   on CPUs [0]".to_owned(),
        "sessions  at most 3 per user (refuse), 600 new per address per minute".to_owned(),
    ] {
        assert!(
            out.stdout.contains(&expected),
            "check output does not mention {expected:?}:\n{}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_paths_are_relative_to_the_config_file() {
    // Tests run with the crate root as working directory, where no cert.pem exists.
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).relative_tls_paths()).await;
    assert!(gw.config_text().contains("cert = \"cert.pem\""), "{}", gw.config_text());

    let response = gw.client().get(gw.url("/rel")).send().await.expect("request");
    assert_eq!(Echo::from_response(response).await.path(), "/rel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gen_cert_writes_a_pair_the_gateway_serves() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out = run_cli([
        OsStr::new("gen-cert"),
        OsStr::new("--out-dir"),
        out_dir.path().as_os_str(),
        OsStr::new("--host"),
        OsStr::new("localhost"),
        OsStr::new("--host"),
        OsStr::new("127.0.0.1"),
    ]);
    assert_eq!(out.code(), Some(0), "gen-cert\n--- stderr ---\n{}", out.stderr);
    let cert = out_dir.path().join("cert.pem");
    let key = out_dir.path().join("key.pem");
    assert!(
        cert.is_file() && key.is_file(),
        "gen-cert did not write cert.pem and key.pem"
    );

    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::proxy_all_to(&upstream).tls_files(&cert, &key)).await;
    let response = gw
        .client()
        .get(gw.url("/generated"))
        .send()
        .await
        .expect("request over the generated certificate");
    assert_eq!(Echo::from_response(response).await.path(), "/generated");
}

/// `[oidc]` that could never sign anyone in is refused at start with the key named; a good
/// one is listed by `check` with the redirect URI to register. The provider is not asked.
#[test]
fn oidc_settings_that_cannot_work_are_named_and_good_ones_listed() {
    let dir = tempfile::tempdir().expect("temp dir");
    sessiongate::tls::write_self_signed(dir.path(), &["idp.test".to_string()]).expect("certificate");
    let ca = quoted(&dir.path().join("cert.pem").display().to_string());
    let base = "issuer = \"https://idp.test/realms/x\"\nclient_id = \"c\"\nallow_any_account = true\n";
    for (section, mentions) in [
        (
            format!("issuer = \"http://idp.test\"\nclient_id = \"c\"\nclient_secret = \"s\"\nca = {ca}\n"),
            vec!["oidc.issuer", "https://"],
        ),
        (format!("{base}ca = {ca}\n"), vec!["`oidc`", "client_secret_file"]),
        (
            format!("{base}client_secret = \"s\"\nclient_secret_file = \"f\"\nca = {ca}\n"),
            vec!["oidc.client_secret", "not both"],
        ),
        (
            format!("{base}client_secret_file = \"/nonexistent/oidc-secret\"\nca = {ca}\n"),
            vec!["oidc.client_secret_file", "/nonexistent/oidc-secret"],
        ),
        (
            format!("{base}client_secret = \"s\"\nscopes = [\"email\"]\nca = {ca}\n"),
            vec!["oidc.scopes", "openid"],
        ),
        (
            format!("{base}client_secret = \"s\"\nca = \"/nonexistent/idp-ca.pem\"\n"),
            vec!["oidc.ca", "/nonexistent/idp-ca.pem"],
        ),
        (
            format!("{base}client_secret = \"s\"\nca = {ca}\nallowed_email_domains = [\"localhost\"]\n"),
            vec!["oidc.allowed_email_domains", "localhost"],
        ),
        (
            format!("{base}client_secret = \"s\"\nca = {ca}\nallowed_groups = [\"staff\"]\n"),
            vec!["oidc.allow_any_account", "contradicts"],
        ),
        (
            format!("issuer = \"https://accounts.google.com\"\nclient_id = \"c\"\nclient_secret = \"s\"\nca = {ca}\n"),
            vec!["`oidc`", "who may sign in", "allowed_email_domains"],
        ),
    ] {
        let prepared = valid_config().section(&format!("[oidc]\n{section}")).prepare();
        assert_rejected(&prepared, &mentions);
    }

    let prepared = valid_config()
        .section(&format!(
            "[oidc]\n{base}client_secret = \"s\"\nca = {ca}\nusername_claim = \"email\"\n"
        ))
        .prepare();
    let out = run_cli([OsStr::new("check"), OsStr::new("--config"), prepared.path.as_os_str()]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains(
            "oidc      https://idp.test/realms/x as client c, user from the claim `email`; \
             register https://<host>/.sessiongate/oidc/callback"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn max_auth_age_needs_a_required_route_and_a_duration() {
    let route = |auth: &str, age: &str| {
        GatewayConfig::new().route(
            RouteSpec::new("/sudo/", format!("http://127.0.0.1:{}", closed_port()))
                .set("auth", quoted(auth))
                .set("max_auth_age", quoted(age)),
        )
    };
    assert_rejected(
        &route("optional", "5m").prepare(),
        &["routes[0].max_auth_age", "required"],
    );
    assert_rejected(
        &route("required", "soon").prepare(),
        &["routes[0].max_auth_age", "soon"],
    );
    let out = run_cli([
        OsStr::new("check"),
        OsStr::new("--config"),
        route("required", "15m").prepare().path.as_os_str(),
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("auth=Required max_auth_age=15m"), "{}", out.stdout);
}

/// Routes that require a login nobody can make (no `[[users]]`, no `[oidc]`) are said by
/// `check`; the file is still valid (minted sessions get in).
#[test]
fn check_warns_when_nobody_can_sign_in() {
    let required = || {
        GatewayConfig::new()
            .route(RouteSpec::new("/app/", format!("http://127.0.0.1:{}", closed_port())).set("auth", "\"required\""))
    };
    let warning = "nobody can sign in";
    let out = run_cli([
        OsStr::new("check"),
        OsStr::new("--config"),
        required().prepare().path.as_os_str(),
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains(warning), "{}", out.stdout);

    let hash = sessiongate::auth::hash_password("pw").expect("hash");
    let with_user = required().section(&format!("[[users]]\nname = \"a\"\npassword_hash = {}\n", quoted(&hash)));
    let out = run_cli([
        OsStr::new("check"),
        OsStr::new("--config"),
        with_user.prepare().path.as_os_str(),
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.stdout.contains(warning), "{}", out.stdout);
    assert!(!run_cli([
        OsStr::new("check"),
        OsStr::new("--config"),
        valid_config().prepare().path.as_os_str()
    ])
    .stdout
    .contains(warning));
}

/// A route's `cross_origin` is `"reject"` (the default) or `"allow"`, its `framing`
/// `"same-origin"` (the default), `"deny"` or `"allow"`; anything else is refused at start with
/// the route's key and line.
#[test]
fn an_unknown_route_mode_is_named() {
    let cases: [(&str, &str, &[&str]); 2] = [
        ("cross_origin", "maybe", &["reject", "allow"]),
        ("framing", "sameorigin", &["same-origin", "deny", "allow"]),
    ];
    for (key, bad, good) in cases {
        let route = |mode: &str| {
            GatewayConfig::new()
                .route(RouteSpec::new("/api/", format!("http://127.0.0.1:{}", closed_port())).set(key, quoted(mode)))
        };
        assert_rejected_at_key(&route(bad).prepare(), &format!("routes[0].{key}"), bad);
        for mode in good {
            let prepared = route(mode).prepare();
            let out = run_cli([OsStr::new("check"), OsStr::new("--config"), prepared.path.as_os_str()]);
            assert_eq!(out.code(), Some(0), "{key} = {mode:?}\n{}", out.stderr);
        }
    }
}

/// `[cross_origin] trusted_origins` holds origins as browsers send them, `scheme://host[:port]`
/// and nothing else; an entry with a path, a final `/`, user info, a wildcard, another scheme
/// or no scheme, a bad port, or `null` (which any sandboxed page sends) is refused at start
/// with the key and line.
#[test]
fn a_trusted_origin_that_is_not_an_origin_is_named() {
    let trusting = |origins: &[&str]| {
        let list: Vec<String> = origins.iter().map(|o| quoted(o)).collect();
        valid_config().section(&format!("[cross_origin]\ntrusted_origins = [{}]\n", list.join(", ")))
    };
    for bad in [
        "https://partner.example/app",
        "https://partner.example/",
        "https://user@partner.example",
        "https://*.partner.example",
        "*",
        "null",
        "ftp://partner.example",
        "partner.example",
        "https://partner.example:port",
        "https://partner.example:99999",
        "https://partner.example:0",
        "https://partner.example?x=1",
    ] {
        let prepared = trusting(&["https://good.example", bad]).prepare();
        assert_rejected_at_key(&prepared, "cross_origin.trusted_origins", bad);
    }
    let good = trusting(&["https://partner.example", "http://legacy.example:8080"]).prepare();
    let out = run_cli([OsStr::new("check"), OsStr::new("--config"), good.path.as_os_str()]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

/// A route's `upstream` is one origin or a non-empty list of origins, each named once; its
/// `balance` is `"sticky"` (the default) or `"round-robin"`; `[server] upstream_fail_timeout`
/// is a duration. Anything else is refused at start with the key and line.
#[test]
fn a_bad_upstream_list_balance_or_fail_timeout_is_named() {
    let one = format!("http://127.0.0.1:{}", closed_port());
    let other = format!("http://127.0.0.1:{}", closed_port());
    let route = |upstreams: &[&str]| RouteSpec::balanced("/", upstreams).set("auth", quoted("optional"));
    let listed = |upstreams: &[&str]| GatewayConfig::new().route(route(upstreams));
    assert_rejected_at_key(&listed(&[]).prepare(), "routes[0].upstream", "empty");
    assert_rejected_at_key(&listed(&[&one, "ftp://x"]).prepare(), "routes[0].upstream", "ftp://x");
    assert_rejected_at_key(&listed(&[&one, &other, &one]).prepare(), "routes[0].upstream", &one);
    let random = GatewayConfig::new().route(route(&[&one, &other]).set("balance", quoted("random")));
    assert_rejected_at_key(&random.prepare(), "routes[0].balance", "random");
    let soon = listed(&[&one, &other]).server_str("upstream_fail_timeout", "soon");
    assert_rejected_at_key(&soon.prepare(), "server.upstream_fail_timeout", "soon");

    for balance in ["sticky", "round-robin"] {
        let prepared = GatewayConfig::new()
            .server_str("upstream_fail_timeout", "200ms")
            .route(RouteSpec::balanced("/", &[&one, &other]).set("balance", quoted(balance)))
            .route(RouteSpec::new("/single/", one.clone()).set("balance", quoted(balance)))
            .prepare();
        let out = run_cli([OsStr::new("check"), OsStr::new("--config"), prepared.path.as_os_str()]);
        assert_eq!(out.code(), Some(0), "balance = {balance:?}\n{}", out.stderr);
    }
}

/// Origins are compared as origins (RFC 6454): a host in another case, a final `/` or the
/// scheme's default port written out names the same server, listed twice.
#[test]
fn the_same_origin_spelled_two_ways_is_listed_twice() {
    let port = closed_port();
    for (first, again) in [
        (format!("http://localhost:{port}"), format!("http://LOCALHOST:{port}")),
        (format!("http://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}/")),
        ("http://127.0.0.1".to_owned(), "http://127.0.0.1:80".to_owned()),
        ("https://localhost".to_owned(), "https://localhost:443".to_owned()),
    ] {
        let prepared = GatewayConfig::new()
            .route(RouteSpec::balanced("/", &[&first, &again]))
            .prepare();
        assert_rejected_at_key(&prepared, "routes[0].upstream", "listed twice");
    }
}

/// `check`'s output for `prepared`, which must pass.
struct CheckOutput {
    stdout: String,
}

impl CheckOutput {
    fn of(prepared: &PreparedConfig) -> Self {
        let out = run_cli([OsStr::new("check"), OsStr::new("--config"), prepared.path.as_os_str()]);
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        Self { stdout: out.stdout }
    }

    /// The route line of the route with this prefix (and no host).
    fn route_line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(&format!("*{prefix} -> ")))
            .unwrap_or_else(|| panic!("no route line for {prefix}:\n{}", self.stdout))
    }
}

/// `check` names every server of a route and how the route picks one, and says when `sticky`
/// cannot stick (an `auth = "none"` route has no sessions).
#[test]
fn check_prints_a_routes_servers_and_its_balance() {
    let (a, b) = ("http://127.0.0.1:18091", "http://127.0.0.1:18092");
    let prepared = GatewayConfig::new()
        .route(RouteSpec::balanced("/app/", &[a, b]).set("auth", quoted("optional")))
        .route(RouteSpec::balanced("/static/", &[a, b]))
        .route(RouteSpec::balanced("/api/", &[a, b]).set("balance", quoted("round-robin")))
        .route(RouteSpec::new("/one/", a))
        .prepare();
    let out = CheckOutput::of(&prepared);
    let line = |prefix: &str| out.route_line(prefix);
    assert!(
        line("/app/").contains(&format!("-> {a}, {b} balance=sticky auth=Optional")),
        "{}",
        out.stdout
    );
    assert!(
        line("/static/").contains("balance=sticky (auth=none: no sessions, so turns)"),
        "{}",
        out.stdout
    );
    assert!(line("/api/").contains("balance=round-robin"), "{}", out.stdout);
    assert!(!line("/one/").contains("balance"), "{}", out.stdout);
}

/// A route's `health_check` is a path (a query may follow), on a route with several servers:
/// a route's only server gets every request whatever a check says. `[server]
/// health_check_interval` is longer than zero and `health_check_timeout` does not exceed it.
/// Anything else is refused at start with the key and line.
#[test]
fn a_health_check_on_one_server_or_not_a_path_or_longer_than_its_interval_is_named() {
    let one = format!("http://127.0.0.1:{}", closed_port());
    let other = format!("http://127.0.0.1:{}", closed_port());
    let single = valid_config().route(RouteSpec::new("/one/", one.clone()).set("health_check", quoted("/healthz")));
    assert_rejected_at_key(
        &single.prepare(),
        "routes[1].health_check",
        "needs several upstream servers",
    );
    let checked = |path: &str| RouteSpec::balanced("/", &[&one, &other]).set("health_check", quoted(path));
    let relative = GatewayConfig::new().route(checked("healthz"));
    assert_rejected_at_key(&relative.prepare(), "routes[0].health_check", "healthz");

    let longer = GatewayConfig::new()
        .server_str("health_check_interval", "5s")
        .server_str("health_check_timeout", "10s")
        .route(checked("/healthz"));
    assert_rejected_at_key(
        &longer.prepare(),
        "server.health_check_timeout",
        "health_check_interval",
    );
    // Also refused with no route checked, as every other `[server]` key is.
    let longer = valid_config().server_str("health_check_timeout", "10s");
    assert_rejected_at_key(
        &longer.prepare(),
        "server.health_check_timeout",
        "health_check_interval",
    );
    let never = valid_config().server_str("health_check_interval", "0s");
    assert_rejected_at_key(&never.prepare(), "server.health_check_interval", "zero");
    for (key, runs) in [("health_check_fails", "0"), ("health_check_passes", "11")] {
        let config = valid_config().server(key, runs);
        assert_rejected_at_key(&config.prepare(), &format!("server.{key}"), "is not between 1 and 10");
    }

    // `health_check_host`: only with a check, and a host name (a port allowed).
    let unchecked = GatewayConfig::new()
        .route(RouteSpec::balanced("/", &[&one, &other]).set("health_check_host", quoted("app.example.test")));
    assert_rejected_at_key(
        &unchecked.prepare(),
        "routes[0].health_check_host",
        "only applies to routes with health_check",
    );
    for bad in ["app.example.test/healthz", "app example", "user@app.example.test", ""] {
        let config = GatewayConfig::new().route(checked("/healthz").set("health_check_host", quoted(bad)));
        assert_rejected_at_key(&config.prepare(), "routes[0].health_check_host", "is not a host name");
    }

    let good = GatewayConfig::new()
        .server_str("health_check_interval", "1s")
        .server_str("health_check_timeout", "1s")
        .route(checked("/status?deep=1").set("health_check_host", quoted("app.example.test:8080")));
    let out = run_cli([
        OsStr::new("check"),
        OsStr::new("--config"),
        good.prepare().path.as_os_str(),
    ]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

/// `check` says which routes have their servers checked, at which path, with which `Host` when
/// not the servers' own, and how often (after the route's balance); the others say nothing of it.
#[test]
fn check_prints_a_routes_health_check_and_its_interval() {
    let (a, b) = ("http://127.0.0.1:18093", "http://127.0.0.1:18094");
    let site = GatewayConfig::new()
        .route(
            RouteSpec::balanced("/app/", &[a, b])
                .set("auth", quoted("optional"))
                .set("health_check", quoted("/healthz")),
        )
        .route(RouteSpec::balanced("/other/", &[a, b]).set("auth", quoted("optional")))
        .route(
            RouteSpec::balanced("/vhost/", &[a, b])
                .set("health_check", quoted("/healthz"))
                .set("health_check_host", quoted("app.example.test")),
        );
    for (config, every) in [
        (site.clone(), "5s"),
        (
            site.server_str("health_check_interval", "250ms")
                .server_str("health_check_timeout", "100ms"),
            "250ms",
        ),
    ] {
        let prepared = config.prepare();
        let out = CheckOutput::of(&prepared);
        let line = |prefix: &str| out.route_line(prefix);
        assert!(
            line("/app/").contains(&format!(
                "-> {a}, {b} balance=sticky health_check=/healthz every {every} auth=Optional"
            )),
            "{}",
            out.stdout
        );
        assert!(!line("/other/").contains("health_check"), "{}", out.stdout);
        assert!(
            line("/vhost/").contains(&format!("health_check=/healthz host=app.example.test every {every}")),
            "{}",
            out.stdout
        );
    }
}
