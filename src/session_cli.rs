//! `sessiongate session ...`: session automation through the admin API.
//!
//! `mint` makes logged-in sessions for load tests and scripts; `list` and
//! `revoke` are what an operator reaches for when an account is
//! compromised: see who holds sessions, end them. All three speak the admin
//! listener's JSON API with the bearer token from a file, so that the token
//! never shows in a process listing.

use anyhow::Context;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::Value;
use std::path::PathBuf;

/// Where the admin API is and how to authenticate to it.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// Admin listener URL, e.g. http://127.0.0.1:9090
    #[arg(long)]
    admin: String,
    /// File holding the admin bearer token.
    #[arg(long)]
    token_file: PathBuf,
}

#[derive(clap::Subcommand)]
pub enum SessionCommand {
    /// Mint a logged-in session and print its `Cookie:` header value
    /// (with --count, that many sessions, one value per line).
    Mint {
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        user: String,
        /// Client IP the session is bound to (the load tool's address).
        #[arg(long)]
        client_ip: Option<std::net::IpAddr>,
        /// A fingerprint header the load tool sends, as 'Name: value'; repeatable.
        #[arg(long = "header")]
        headers: Vec<String>,
        /// Mint this many sessions (batches of 10000 per request)
        /// and print one `Cookie:` value per line, for load tests that need
        /// many distinct sessions.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// List live sessions (never their tokens): one line each, tab-separated
    /// under a header line, or the admin API's JSON with --json.
    List {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only this user's sessions (required with a Redis Cluster store).
        #[arg(long)]
        user: Option<String>,
        /// The newest this many (the admin API's default: 1000; at most
        /// 10000). When more match, a note on stderr says how many.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Print the admin API's answer as it is.
        #[arg(long)]
        json: bool,
    },
    /// End sessions at once, everywhere: one by its id, or all of a user's.
    /// Prints `revoked N`.
    Revoke {
        #[command(flatten)]
        admin: AdminArgs,
        /// Every session of this user.
        #[arg(long, required_unless_present = "id", conflicts_with = "id")]
        user: Option<String>,
        /// One session, by the id that `list` shows.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Runs one `session` command to completion.
pub async fn run(command: SessionCommand) -> anyhow::Result<()> {
    match command {
        SessionCommand::Mint {
            admin,
            user,
            client_ip,
            headers,
            count,
        } => {
            let body = mint_body(&user, client_ip, &headers)?;
            mint(&AdminClient::new(&admin)?, body, count).await
        }
        SessionCommand::List {
            admin,
            user,
            limit,
            json,
        } => list(&AdminClient::new(&admin)?, user.as_deref(), limit, json).await,
        SessionCommand::Revoke { admin, user, id } => {
            let path = match (user, id) {
                (Some(user), _) => format!("/sessions?{}", user_query(&user)),
                (None, id) => format!("/sessions/{}", session_id(&id.context("--user or --id is required")?)?),
            };
            let answer = AdminClient::new(&admin)?
                .call(Method::DELETE, &path, None, StatusCode::OK)
                .await?;
            let n = answer
                .get("revoked")
                .and_then(Value::as_u64)
                .context("admin answer has no `revoked` count")?;
            println!("revoked {n}");
            Ok(())
        }
    }
}

/// An HTTP/1.1 client for the admin listener, with its bearer token.
pub(crate) struct AdminClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    pub(crate) fn new(args: &AdminArgs) -> anyhow::Result<AdminClient> {
        let token = std::fs::read_to_string(&args.token_file)
            .with_context(|| format!("cannot read {}", args.token_file.display()))?;
        let base = args.admin.trim_end_matches('/').to_owned();
        format!("{base}/sessions")
            .parse::<http::Uri>()
            .with_context(|| format!("bad --admin URL `{}`", args.admin))?;
        Ok(AdminClient {
            base,
            token: token.trim().to_owned(),
            client: Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        })
    }

    /// One request; anything but `expect` with a JSON body is an error that
    /// carries the admin API's answer.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expect: StatusCode,
    ) -> anyhow::Result<Value> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = req.body(Full::new(body)).context("building the admin request")?;
        let resp = self
            .client
            .request(req)
            .await
            .context("cannot reach the admin listener")?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .context("reading the admin answer")?
            .to_bytes();
        anyhow::ensure!(
            status == expect,
            "admin API answered {status}: {}",
            String::from_utf8_lossy(&bytes).trim_end()
        );
        serde_json::from_slice(&bytes).context("admin answer is not JSON")
    }
}

/// Sessions per admin request. The server takes up to 100,000; smaller
/// batches keep the gateway's transient memory (the batch's records, the
/// store transaction's dirty pages, the answer) small, which matters when
/// its resident memory is being measured, and cost only a few more commits.
const MINT_BATCH: u64 = 10_000;

/// The `POST /sessions` body shared by every mint request of one run.
fn mint_body(user: &str, client_ip: Option<std::net::IpAddr>, headers: &[String]) -> anyhow::Result<Value> {
    let mut header_map = serde_json::Map::new();
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .with_context(|| format!("--header `{h}` is not 'Name: value'"))?;
        header_map.insert(k.trim().to_ascii_lowercase(), Value::String(v.trim().to_string()));
    }
    let mut body = serde_json::json!({"user": user, "headers": header_map});
    if let Some(ip) = client_ip {
        body["client_ip"] = Value::String(ip.to_string());
    }
    Ok(body)
}

/// Without `count`, one session and its cookie (the original output);
/// with it, batches until `count` cookies are printed, one per line.
async fn mint(admin: &AdminClient, mut body: Value, count: Option<u64>) -> anyhow::Result<()> {
    let Some(total) = count else {
        let v = admin
            .call(Method::POST, "/sessions", Some(&body), StatusCode::CREATED)
            .await?;
        let cookie = v
            .get("cookie")
            .and_then(Value::as_str)
            .context("admin answer has no cookie")?;
        println!("{cookie}");
        return Ok(());
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut left = total;
    while left > 0 {
        let n = left.min(MINT_BATCH);
        body["count"] = Value::from(n);
        let v = admin
            .call(Method::POST, "/sessions", Some(&body), StatusCode::CREATED)
            .await?;
        let sessions = v
            .get("sessions")
            .and_then(Value::as_array)
            .context("admin answer has no sessions")?;
        anyhow::ensure!(
            sessions.len() as u64 == n,
            "asked for {n} sessions, got {}",
            sessions.len()
        );
        for s in sessions {
            let cookie = s
                .get("cookie")
                .and_then(Value::as_str)
                .context("admin answer has a session without a cookie")?;
            std::io::Write::write_all(&mut out, cookie.as_bytes())?;
            std::io::Write::write_all(&mut out, b"\n")?;
        }
        left -= n;
    }
    std::io::Write::flush(&mut out).context("writing the cookies")?;
    Ok(())
}

/// The columns of `session list`, as the admin API names its fields (new
/// ones go last, so that scripts cutting columns by position keep working).
const LIST_COLUMNS: [&str; 8] = [
    "id",
    "user",
    "ip_prefix",
    "created_at",
    "last_seen",
    "expires_at",
    "login",
    "upstreams",
];

async fn list(admin: &AdminClient, user: Option<&str>, limit: Option<u64>, json: bool) -> anyhow::Result<()> {
    let path = format!("/sessions?{}", list_query(user, limit));
    let answer = admin.call(Method::GET, &path, None, StatusCode::OK).await?;
    if json {
        println!("{answer}");
        return Ok(());
    }
    let sessions = answer
        .get("sessions")
        .and_then(Value::as_array)
        .context("admin answer has no sessions")?;
    if answer.get("truncated").and_then(Value::as_bool) == Some(true) {
        let total = answer.get("total").and_then(Value::as_u64).unwrap_or_default();
        eprintln!(
            "note: the newest {} of {total} sessions; --limit (up to 10000) lists more",
            sessions.len()
        );
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut line = LIST_COLUMNS.join("\t");
    for s in sessions {
        line.push('\n');
        line.push_str(&list_row(s));
    }
    line.push('\n');
    std::io::Write::write_all(&mut out, line.as_bytes())?;
    std::io::Write::flush(&mut out).context("writing the list")?;
    Ok(())
}

/// One session's fields in [`LIST_COLUMNS`] order; `-` for an absent one
/// (an anonymous session has no user, an unbound one no address, an
/// unpinned one no upstream), a list joined with commas.
fn list_row(session: &Value) -> String {
    let item = |v: &Value| {
        v.as_str()
            .map_or_else(|| v.to_string(), |s| s.replace(['\t', '\n', ','], " "))
    };
    let field = |name: &str| match session.get(name) {
        Some(Value::String(s)) => s.replace(['\t', '\n'], " "),
        Some(Value::Array(items)) if !items.is_empty() => items.iter().map(item).collect::<Vec<_>>().join(","),
        Some(Value::Null | Value::Array(_)) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    LIST_COLUMNS.map(field).join("\t")
}

fn user_query(user: &str) -> String {
    list_query(Some(user), None)
}

fn list_query(user: Option<&str>, limit: Option<u64>) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(user) = user {
        query.append_pair("user", user);
    }
    if let Some(limit) = limit {
        query.append_pair("limit", &limit.to_string());
    }
    query.finish()
}

/// A session id as `list` prints it: refused here, before it is put in a
/// URL path, unless it is plain hex.
fn session_id(id: &str) -> anyhow::Result<&str> {
    anyhow::ensure!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "--id `{id}` is not a session id (hex, as `session list` prints it)"
    );
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_rows_follow_the_columns_and_mark_what_is_absent() {
        let s = serde_json::json!({
            "id": "ab12", "user": null, "ip_prefix": "10.0.0.0/24",
            "created_at": "2026-12-07T08:00:00Z", "last_seen": "x\ty", "expires_at": "z",
            "login": "oidc", "upstreams": [],
        });
        assert_eq!(
            list_row(&s),
            "ab12\t-\t10.0.0.0/24\t2026-12-07T08:00:00Z\tx y\tz\toidc\t-"
        );
        let pinned = serde_json::json!({"id": "cd", "upstreams": ["http://a:80", "http://b:80"]});
        assert!(
            list_row(&pinned).ends_with("\t-\thttp://a:80,http://b:80"),
            "{}",
            list_row(&pinned)
        );
    }

    #[test]
    fn user_names_are_query_encoded_and_ids_must_be_hex() {
        assert_eq!(user_query("a b&c=d"), "user=a+b%26c%3Dd");
        assert_eq!(list_query(Some("a"), Some(5)), "user=a&limit=5");
        assert_eq!(list_query(None, None), "");
        assert!(session_id("0123abcdEF").is_ok());
        assert!(session_id("../reload").is_err());
        assert!(session_id("").is_err());
    }

    #[test]
    fn mint_headers_must_be_name_colon_value() {
        let body = mint_body("alice", None, &["User-Agent: k6/1".to_owned()]).expect("a valid header");
        assert_eq!(body["headers"]["user-agent"], "k6/1");
        assert!(body.get("client_ip").is_none());
        assert!(mint_body("alice", None, &["no colon".to_owned()]).is_err());
    }
}
