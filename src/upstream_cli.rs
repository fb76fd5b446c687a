//! `sessiongate upstream ...`: the upstream servers of routes with several,
//! through the admin API, for deploy scripts: `list` shows each server's
//! state, `set` takes one out of service before its app restarts and puts
//! it back after (`POST /upstreams/state`).

use crate::session_cli::{AdminArgs, AdminClient};
use anyhow::Context;
use http::{Method, StatusCode};
use serde_json::Value;

#[derive(clap::Subcommand)]
pub enum UpstreamCommand {
    /// One line per upstream server: origin, state, ms it stays marked
    /// down, routes, health check (tab-separated under a header line).
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Take a server out of service (`maintenance`), drain it (`drain`:
    /// only the sessions pinned to it reach it) or put it back (`ready`)
    /// on this gateway instance; prints its new line.
    Set {
        #[command(flatten)]
        admin: AdminArgs,
        /// The server as a route lists it, e.g. http://10.0.0.5:8080
        #[arg(long)]
        upstream: String,
        #[arg(long, value_parser = ["maintenance", "drain", "ready"])]
        state: String,
    },
}

pub async fn run(command: UpstreamCommand) -> anyhow::Result<()> {
    match command {
        UpstreamCommand::List { admin } => {
            let answer = AdminClient::new(&admin)?
                .call(Method::GET, "/upstreams", None, StatusCode::OK)
                .await?;
            let all = answer
                .get("upstreams")
                .and_then(Value::as_array)
                .context("admin answer has no `upstreams` list")?;
            println!("upstream\tstate\tdown_for_ms\troutes\tcheck");
            for upstream in all {
                println!("{}", row(upstream));
            }
        }
        UpstreamCommand::Set { admin, upstream, state } => {
            let body = serde_json::json!({ "upstream": upstream, "state": state });
            let answer = AdminClient::new(&admin)?
                .call(Method::POST, "/upstreams/state", Some(&body), StatusCode::OK)
                .await?;
            println!("{}", row(&answer));
        }
    }
    Ok(())
}

/// One server's line: what `GET /upstreams` says of it, tab-separated.
fn row(upstream: &Value) -> String {
    let text = |key: &str| {
        upstream
            .get(key)
            .map_or_else(String::new, |v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let routes: Vec<&str> = upstream
        .get("routes")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    format!(
        "{}\t{}\t{}\t{}\t{}",
        text("upstream"),
        text("state"),
        text("down_for_ms"),
        routes.join(","),
        text("check")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_the_fields_tab_separated() {
        let entry = serde_json::json!({
            "upstream": "http://10.0.0.5:8080", "state": "maintenance",
            "down_for_ms": 1500, "routes": ["/", "shop.test/cart/"], "check": "failing",
        });
        assert_eq!(
            row(&entry),
            "http://10.0.0.5:8080\tmaintenance\t1500\t/,shop.test/cart/\tfailing"
        );
    }
}
