//! The `sessiongate` binary: CLI, logging, signals. Everything else lives in
//! the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sessiongate::config::{Config, ConfigError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod session_cli;
mod upstream_cli;

#[derive(Parser)]
#[command(
    name = "sessiongate",
    version,
    about = "TLS-terminating reverse proxy that owns your app's sessions"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    /// Configuration file (TOML) to run the gateway with.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and print a summary.
    Check {
        #[arg(long, short = 'c')]
        config: PathBuf,
    },
    /// Write a self-signed development certificate (cert.pem, key.pem).
    GenCert {
        #[arg(long)]
        out_dir: PathBuf,
        /// DNS name or IP address; repeatable.
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
    },
    /// Read a password on stdin and print its argon2id PHC string.
    HashPassword,
    /// Run the demo: a built-in upstream plus the gateway on the example config.
    Demo {
        #[arg(long, short = 'c', default_value = "config.toml.example")]
        config: PathBuf,
    },
    /// Session automation through the admin API.
    Session {
        #[command(subcommand)]
        command: session_cli::SessionCommand,
    },
    /// The upstream servers of routes with several, through the admin API.
    Upstream {
        #[command(subcommand)]
        command: upstream_cli::UpstreamCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        None => match cli.config {
            Some(path) => run_gateway(&path, None),
            None => {
                eprintln!("error: --config FILE is required (or a subcommand; see --help)");
                ExitCode::from(2)
            }
        },
        Some(Command::Check { config }) => check(&config),
        Some(Command::GenCert { out_dir, hosts }) => report(gen_cert(&out_dir, &hosts)),
        Some(Command::HashPassword) => report(hash_password()),
        Some(Command::Demo { config }) => demo(&config),
        Some(Command::Session { command }) => {
            report(runtime(&[]).and_then(|rt| rt.block_on(session_cli::run(command))))
        }
        Some(Command::Upstream { command }) => {
            report(runtime(&[]).and_then(|rt| rt.block_on(upstream_cli::run(command))))
        }
    }
}

/// `info` for us; rustls logs client mistakes (an IP address in SNI, a
/// failed handshake) at `warn` per connection, which is noise and a cost.
const DEFAULT_LOG_FILTER: &str = "info,rustls=error";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIONGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("error: invalid configuration: {e}");
    ExitCode::from(2)
}

/// `background`: the CPUs of the runtime's blocking pool (`[server]
/// background_cpus`; empty for the command-line clients).
fn runtime(background: &[usize]) -> anyhow::Result<tokio::runtime::Runtime> {
    // The first HTTPS worker and the admin listener run here; the gateway
    // starts the other workers (`[server] workers`) on threads of their own.
    sessiongate::priority::current_thread_runtime(background).context("cannot start the tokio runtime")
}

/// `[login] hash_cpus` or `[server] background_cpus` (`key`) names CPUs the
/// kernel refuses: reported as a config error, with the key's line (the file
/// is read again to find it).
fn cpus_error(path: &Path, key: &str, e: &sessiongate::StartError) -> ExitCode {
    let line = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| sessiongate::config::find_key_line(&text, key))
        .map(|l| format!(":{l}"))
        .unwrap_or_default();
    eprintln!("error: invalid configuration: {}{line}: {e}", path.display());
    ExitCode::from(2)
}

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    if let Err(e) = sessiongate::tls::server_config(&config.tls.cert, &config.tls.key) {
        eprintln!("error: invalid configuration: {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if let Err(source) = sessiongate::priority::check_cpus(&config.login.hash_cpus) {
        let e = sessiongate::StartError::HashCpus {
            cpus: config.login.hash_cpus.clone(),
            source,
        };
        return cpus_error(path, "login.hash_cpus", &e);
    }
    if let Err(source) = sessiongate::priority::check_cpus(&config.server.background_cpus) {
        let e = sessiongate::StartError::BackgroundCpus {
            cpus: config.server.background_cpus.clone(),
            source,
        };
        return cpus_error(path, "server.background_cpus", &e);
    }
    println!("{}: OK", path.display());
    println!("  https     {}", config.server.listen);
    if let Some(r) = config.server.http_redirect_listen {
        println!("  redirect  {r}");
    }
    println!("  admin     {}", config.admin.listen);
    match &config.tls.hsts {
        Some(v) => println!("  hsts      {}", v.to_str().unwrap_or("?")),
        None => println!("  hsts      off (the upstream's header, if any, is passed on)"),
    }
    if !config.server.proxy_protocol_from.is_empty() {
        let from: Vec<String> = config
            .server
            .proxy_protocol_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        println!("  PROXY header required from {}", from.join(", "));
    }
    for r in &config.routes {
        let host = r.host.as_deref().unwrap_or("*");
        let groups = if r.groups.is_empty() {
            String::new()
        } else {
            format!(" groups={}", r.groups.join(","))
        };
        let step_up = r
            .max_auth_age
            .map(|age| format!(" max_auth_age={}", humantime::format_duration(age)))
            .unwrap_or_default();
        let cross_origin = match r.cross_origin {
            sessiongate::config::CrossOrigin::Reject => "",
            sessiongate::config::CrossOrigin::Allow => " cross_origin=allow",
        };
        let framing = match r.framing {
            sessiongate::config::Framing::SameOrigin => "",
            sessiongate::config::Framing::Deny => " framing=deny",
            sessiongate::config::Framing::Allow => " framing=allow",
        };
        let servers = r.upstreams.as_slice();
        let upstreams = servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let balance = match (servers.len(), r.balance, r.auth) {
            (1, _, _) => "",
            // No session on such a route, so nothing to stick to.
            (_, sessiongate::config::Balance::Sticky, sessiongate::config::AuthMode::None) => {
                " balance=sticky (auth=none: no sessions, so turns)"
            }
            (_, sessiongate::config::Balance::Sticky, _) => " balance=sticky",
            (_, sessiongate::config::Balance::RoundRobin, _) => " balance=round-robin",
        };
        let checked = r
            .health_check
            .as_ref()
            .map(|path| {
                let every = humantime::format_duration(config.server.health_check_interval);
                let host = match r.health_check_host.as_ref().or(r.host.as_ref()) {
                    Some(host) => format!(" host={host}"),
                    None => String::new(),
                };
                format!(" health_check={path}{host} every {every}")
            })
            .unwrap_or_default();
        println!(
            "  route     {host}{} -> {upstreams}{balance}{checked} auth={:?}{groups}{step_up}{cross_origin}{framing}",
            r.path_prefix, r.auth
        );
    }
    let cookies = &config.upstream_cookies;
    println!(
        "  upstream cookies get Secure{}{}",
        if cookies.http_only { ", HttpOnly" } else { "" },
        match cookies.same_site {
            Some(sessiongate::config::SameSite::Lax) => ", SameSite=Lax",
            Some(sessiongate::config::SameSite::Strict) => ", SameSite=Strict",
            None => "",
        }
    );
    let trusted = config.cross_origin.trusted_origins.as_slice();
    if !trusted.is_empty() {
        println!("  cross-origin requests trusted from {}", trusted.join(", "));
    }
    if let Some(t) = &config.upstream_tls {
        let ca =
            t.ca.as_ref()
                .map_or("the system's trust store".to_string(), |p| p.display().to_string());
        let client = t
            .client
            .as_ref()
            .map_or(String::new(), |(c, _)| format!(", client certificate {}", c.display()));
        println!("  upstream TLS verified against {ca}{client}");
    }
    println!("  users     {}", config.users.len());
    if let Some(warning) = config.sign_in_warning() {
        println!("  warning   {warning}");
    }
    if let Some(o) = &config.oidc {
        println!(
            "  oidc      {} as client {}, user from the claim `{}`; register https://<host>{} at the provider",
            o.issuer,
            o.client_id,
            o.username_claim,
            sessiongate::auth::oidc::CALLBACK_PATH
        );
    }
    let session = &config.session;
    let on_limit = match session.per_user.on_limit {
        sessiongate::config::OnUserLimit::EndLeastRecent => "end_least_recent",
        sessiongate::config::OnUserLimit::Refuse => "refuse",
    };
    println!(
        "  sessions  at most {} per user ({on_limit}), {} new per address per minute",
        session.per_user.max, session.new_per_ip_per_minute
    );
    if !config.login.hash_cpus.is_empty() {
        println!("  hashing   on CPUs {:?}", config.login.hash_cpus);
    }
    if !config.server.background_cpus.is_empty() {
        println!("  background on CPUs {:?}", config.server.background_cpus);
    }
    ExitCode::SUCCESS
}

/// Runs the gateway until SIGTERM/SIGINT. `demo` is an extra task (the demo
/// upstream) to run beside it.
fn run_gateway(path: &Path, demo: Option<std::net::TcpListener>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let rt = match runtime(&config.server.background_cpus) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let gateway = match sessiongate::Gateway::bind(config).await {
            Ok(g) => g,
            Err(e @ sessiongate::StartError::Tls(_)) => {
                eprintln!("error: invalid configuration: {}: {e}", path.display());
                return ExitCode::from(2);
            }
            Err(e @ sessiongate::StartError::HashCpus { .. }) => return cpus_error(path, "login.hash_cpus", &e),
            Err(e @ sessiongate::StartError::BackgroundCpus { .. }) => {
                return cpus_error(path, "server.background_cpus", &e)
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The listener joins this runtime's reactor here, inside it.
        if let Some(l) = demo.and_then(|l| tokio::net::TcpListener::from_std(l).ok()) {
            tokio::spawn(sessiongate::demo::serve(l));
        }
        let handle = gateway.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received");
            handle.shutdown();
        });
        if let Err(e) = reload_tls_on_sighup(gateway.tls_reload_handle()) {
            eprintln!("error: cannot handle SIGHUP: {e}");
            return ExitCode::FAILURE;
        }
        match gateway.run().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// SIGHUP reloads the config file's `[[users]]` and the certificate and key
/// (a renewal), as nginx and haproxy reload theirs; it never ends the
/// process. A config file that no longer validates changes nothing but the
/// certificate, so that a renewal still takes. Outcomes are logged.
fn reload_tls_on_sighup(reload: sessiongate::TlsReloadHandle) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading [[users]] and the TLS certificate and key");
            if reload.reload_config().await.is_err() {
                // Logged and counted where it happened; the certificate
                // still reloads (off the worker's thread: it reads files).
                let reload = reload.clone();
                let _ = tokio::task::spawn_blocking(move || reload.reload()).await;
            }
        }
    });
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn gen_cert(out_dir: &Path, hosts: &[String]) -> anyhow::Result<()> {
    let (cert, key) = sessiongate::tls::write_self_signed(out_dir, hosts)?;
    println!(
        "wrote {} and {} for {}",
        cert.display(),
        key.display(),
        hosts.join(", ")
    );
    Ok(())
}

fn hash_password() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read stdin")?;
    let password = input
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&input);
    anyhow::ensure!(!password.is_empty(), "empty password on stdin");
    let phc = sessiongate::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    println!("{phc}");
    Ok(())
}

/// Creates development certificates when the config's are missing, binds the
/// demo upstream where the first route points, and runs the gateway.
fn demo(path: &Path) -> ExitCode {
    let prepared = (|| -> anyhow::Result<std::net::SocketAddr> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: toml::Value = toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let cert = value
            .get("tls")
            .and_then(|t| t.get("cert"))
            .and_then(|c| c.as_str())
            .context("tls.cert missing")?;
        let cert_path = base.join(cert);
        if !cert_path.exists() {
            let dir = cert_path.parent().unwrap_or(Path::new("."));
            sessiongate::tls::write_self_signed(dir, &["localhost".into(), "127.0.0.1".into()])?;
            eprintln!("created a development certificate in {}", dir.display());
        }
        let upstream = value
            .get("routes")
            .and_then(|r| r.as_array())
            .and_then(|r| r.first())
            .and_then(|r| r.get("upstream"))
            .and_then(|u| u.as_str())
            .context("the demo config needs a [[routes]] entry")?;
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        authority
            .parse()
            .with_context(|| format!("demo upstream `{upstream}` must be http://IP:PORT"))
    })();
    let addr = match prepared {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot start the demo upstream on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("demo upstream on http://{addr}; open https://localhost:8443/ and sign in as demo / demo");
    run_gateway(path, Some(listener))
}
