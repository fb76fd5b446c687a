//! `sessiongate session mint | list | revoke`: the real binary against a running gateway's
//! admin API, as a load-test script or an operator runs it.

use reqwest::StatusCode;
use std::ffi::OsString;

use super::support::{session_id, user, Site, ADMIN_TOKEN, COOKIE, USER_AGENT};
use crate::kit::{run_cli, CliOutput};

/// The admin URL and a token file for `site`, as the CLI takes them.
struct AdminFlags {
    url: String,
    token_file: tempfile::NamedTempFile,
}

impl AdminFlags {
    fn new(site: &Site, token: &str) -> Self {
        let token_file = tempfile::NamedTempFile::new().expect("token file");
        std::fs::write(token_file.path(), format!("{token}\n")).expect("write the token file");
        Self {
            url: site.gw.admin_url(""),
            token_file,
        }
    }

    /// `sessiongate session {command} --admin URL --token-file F {rest}`, run off the
    /// runtime's threads (the gateway under test shares them).
    async fn run(&self, command: &str, rest: &[&str]) -> CliOutput {
        let mut args: Vec<OsString> = vec!["session".into(), command.into()];
        args.extend(["--admin".into(), self.url.clone().into()]);
        args.extend(["--token-file".into(), self.token_file.path().as_os_str().to_owned()]);
        args.extend(rest.iter().map(OsString::from));
        tokio::task::spawn_blocking(move || run_cli(args))
            .await
            .expect("the CLI thread")
    }
}

fn succeeded(out: &CliOutput) {
    assert_eq!(out.code(), Some(0), "stdout: {}\nstderr: {}", out.stdout, out.stderr);
}

/// The token of a printed `Cookie:` value.
fn token_of(cookie: &str) -> String {
    cookie
        .trim()
        .strip_prefix(&format!("{COOKIE}="))
        .unwrap_or_else(|| panic!("not a {COOKIE} cookie: {cookie:?}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mint_prints_cookies_that_work_from_the_bound_client() {
    let site = Site::start().await;
    let admin = AdminFlags::new(&site, ADMIN_TOKEN);
    let agent = format!("User-Agent: {USER_AGENT}");
    let bound = [
        "--user",
        "alice",
        "--client-ip",
        "127.0.0.1",
        "--header",
        agent.as_str(),
    ];

    let out = admin.run("mint", &bound).await;
    succeeded(&out);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let token = token_of(&out.stdout);
    let mut client = site.browser().with_token(&token);
    let echo = client.get("/app/x").await.echo();
    assert_eq!(user(&echo).as_deref(), Some("alice"));
    // Bound to the User-Agent given: another one is refused.
    let mut other_agent = site.browser().with_user_agent("curl/8").with_token(&token);
    assert_eq!(other_agent.get("/app/x").await.status, StatusCode::UNAUTHORIZED);

    let mut with_count = bound.to_vec();
    with_count.extend(["--count", "3"]);
    let out = admin.run("mint", &with_count).await;
    succeeded(&out);
    let tokens: Vec<String> = out.stdout.lines().map(token_of).collect();
    assert_eq!(tokens.len(), 3, "{}", out.stdout);
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);
    for token in &tokens {
        let mut client = site.browser().with_token(token);
        assert_eq!(client.upstream_user("/app/x").await.as_deref(), Some("alice"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_revoke_end_a_users_sessions_by_id_or_all_at_once() {
    let site = Site::start().await;
    let admin = AdminFlags::new(&site, ADMIN_TOKEN);
    let (id1, token1) = site.admin().mint_for("alice").await;
    let (id2, token2) = site.admin().mint_for("alice").await;
    let (bob_id, bob_token) = site.admin().mint_for("bob").await;

    let out = admin.run("list", &["--user", "alice"]).await;
    succeeded(&out);
    let mut lines = out.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("id\tuser\tip_prefix\tcreated_at\tlast_seen\texpires_at\tlogin\tupstreams")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    for row in &rows {
        assert_eq!(row.len(), 8, "{row:?}");
        assert_eq!(row[6], "-", "minted sessions name no login: {row:?}");
        assert_eq!(
            row[7], "-",
            "and no upstream server before their first request: {row:?}"
        );
        assert_eq!(row[1], "alice", "{row:?}");
        assert!(row[2].contains("127.0.0.1"), "{row:?}");
    }
    let mut ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    ids.sort_unstable();
    let mut expected = [id1.as_str(), id2.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for token in [&token1, &token2, &bob_token] {
        assert!(
            !out.stdout.contains(token.as_str()),
            "a token is listed: {}",
            out.stdout
        );
    }

    // The newest only, with a note on stderr that there are more.
    let out = admin.run("list", &["--user", "alice", "--limit", "1"]).await;
    succeeded(&out);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
    assert!(
        out.stderr.contains("the newest 1 of 2 sessions"),
        "stderr: {}",
        out.stderr
    );

    let out = admin.run("list", &["--user", "bob", "--json"]).await;
    succeeded(&out);
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["count"], 1, "{json}");
    assert_eq!(json["sessions"][0]["id"], bob_id.as_str(), "{json}");

    // One by id: that token is refused at once, the other still works.
    let out = admin.run("revoke", &["--id", &id1]).await;
    succeeded(&out);
    assert_eq!(out.stdout.trim(), "revoked 1");
    let mut revoked = site.browser().with_token(&token1);
    assert_eq!(revoked.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let mut kept = site.browser().with_token(&token2);
    assert_eq!(kept.upstream_user("/app/x").await.as_deref(), Some("alice"));

    // An id that names no session is an error, with the admin API's reason.
    let out = admin.run("revoke", &["--id", &id1]).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("404") && out.stderr.contains("no such session"),
        "{}",
        out.stderr
    );

    // All of alice's; bob's is untouched.
    let out = admin.run("revoke", &["--user", "alice"]).await;
    succeeded(&out);
    assert_eq!(out.stdout.trim(), "revoked 1");
    let mut ended = site.browser().with_token(&token2);
    assert_eq!(ended.get("/app/x").await.status, StatusCode::UNAUTHORIZED);
    let mut bob = site.browser().with_token(&bob_token);
    let echo = bob.get("/app/x").await.echo();
    assert_eq!(session_id(&echo).as_deref(), Some(bob_id.as_str()));
    let out = admin.run("list", &["--user", "alice"]).await;
    succeeded(&out);
    assert_eq!(out.stdout.lines().count(), 1, "only the header: {}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_or_a_bad_id_fails_with_the_reason_and_changes_nothing() {
    let site = Site::start().await;
    let (id, token) = site.admin().mint_for("alice").await;
    let wrong = AdminFlags::new(&site, "not-the-admin-token");

    for (command, rest) in [
        ("mint", &["--user", "alice"][..]),
        ("list", &[][..]),
        ("revoke", &["--user", "alice"][..]),
        ("revoke", &["--id", id.as_str()][..]),
    ] {
        let out = wrong.run(command, rest).await;
        assert_eq!(out.code(), Some(1), "{command}: {}", out.stderr);
        assert!(out.stderr.contains("401"), "{command}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{command}: {}", out.stdout);
    }
    let admin = AdminFlags::new(&site, ADMIN_TOKEN);
    let out = admin.run("revoke", &["--id", "../reload"]).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("not a session id"), "{}", out.stderr);
    let out = admin.run("revoke", &[]).await;
    assert_eq!(out.code(), Some(2), "clap wants --user or --id: {}", out.stderr);

    let mut client = site.browser().with_token(&token);
    assert_eq!(client.upstream_user("/app/x").await.as_deref(), Some("alice"));
    let out = admin.run("list", &[]).await;
    succeeded(&out);
    assert_eq!(out.stdout.lines().count(), 2, "{}", out.stdout);
}
