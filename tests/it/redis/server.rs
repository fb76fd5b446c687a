//! Redis servers the tests start themselves: one node ([`RedisServer`]), optionally with an
//! append-only file so that a crash and restart keep its data, and a three-node cluster
//! ([`RedisCluster`]). Each listens on a free port of 127.0.0.1, keeps its files and its log in
//! a temp dir, and is killed when dropped, whether the test passed or panicked.
//!
//! The tests need `redis-server` and `redis-cli` on `PATH`; see [`redis_missing`].

use std::{
    fs::OpenOptions,
    io,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::kit::{millis, secs, within};

/// Set to `1` (CI does) to make a missing Redis a failure instead of a skip.
pub const REQUIRE_ENV: &str = "SESSIONGATE_REQUIRE_REDIS";

/// How long a starting (or restarting, AOF-loading) server may take to answer `PING`.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// Starts on a freshly picked port before giving up; a clash with another process is the
/// only expected reason to need more than one.
const START_ATTEMPTS: usize = 5;
/// Pause between two probes of a polling loop.
const POLL: Duration = Duration::from_millis(10);
/// Redis Cluster listens on `port + 10000` for its bus, so a node's port may not exceed this.
const MAX_CLUSTER_PORT: u16 = 65535 - 10000;

/// Whether the Redis tests must be skipped here. Prints why when they are; panics instead when
/// [`REQUIRE_ENV`] is `1`, so that CI never passes by skipping.
pub fn redis_missing() -> bool {
    let installed = ["redis-server", "redis-cli"].iter().all(|bin| {
        Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    if installed {
        return false;
    }
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!(
            "{REQUIRE_ENV}=1 but redis-server or redis-cli is not on PATH \
             (Debian: apt-get install redis-server redis-tools)"
        );
    }
    eprintln!("skipping: redis-server not installed");
    true
}

/// How a server is configured beyond port, address and directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing on disk: a restart starts empty.
    Ephemeral,
    /// Append-only file, fsynced on every write: a SIGKILL loses nothing.
    Persistent,
    /// A member of a Redis Cluster (slots are assigned by [`RedisCluster::start`]).
    ClusterNode,
}

/// A `redis-server` process on `127.0.0.1:<free port>`, killed on drop.
pub struct RedisServer {
    port: u16,
    mode: Mode,
    /// `--dir` (AOF, cluster config) and the server's output; outlives restarts.
    dir: TempDir,
    /// `None` while stopped.
    child: Option<Child>,
}

impl RedisServer {
    /// A server that keeps nothing on disk.
    pub async fn start() -> Self {
        Self::start_as(Mode::Ephemeral).await
    }

    /// A server with an append-only file in its own directory, fsynced on every write, so
    /// that [`Self::kill`] followed by [`Self::start_again`] keeps every key.
    pub async fn start_persistent() -> Self {
        Self::start_as(Mode::Persistent).await
    }

    async fn start_as(mode: Mode) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let mut server = Self {
            port: 0,
            mode,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            server.port = match mode {
                Mode::ClusterNode => free_cluster_port(),
                Mode::Ephemeral | Mode::Persistent => free_port(),
            };
            match server.launch().await {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "redis-server did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same directory (and so, when
    /// persistent, the same data); fails the test unless it answers `PING`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again on a running redis-server");
        if let Err(failure) = self.launch().await {
            panic!("restarting redis-server on port {}: {failure}", self.port);
        }
    }

    /// [`Self::kill`], then [`Self::start_again`].
    pub async fn restart(&mut self) {
        self.kill();
        self.start_again().await;
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.port))
    }

    /// The end of the server's output, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let common: [&str; 10] = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--save",
            "",
            "--dir",
            &dir,
        ];
        let mut args: Vec<String> = common.map(str::to_owned).to_vec();
        let rest: Vec<String> = match self.mode {
            Mode::Ephemeral => vec!["--appendonly".into(), "no".into()],
            Mode::Persistent => ["--appendonly", "yes", "--appendfsync", "always"]
                .map(str::to_owned)
                .to_vec(),
            Mode::ClusterNode => {
                let conf = self.dir.path().join(format!("nodes-{}.conf", self.port));
                vec![
                    "--appendonly".into(),
                    "no".into(),
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                ]
            }
        };
        args.extend(rest);
        args
    }

    /// Spawns the process on `self.port` and waits until it, and not some other process that
    /// took the port, answers `PING`.
    async fn launch(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("open the redis-server log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("clone the log handle: {e}"))?;
        let child = Command::new("redis-server")
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let pid = child.id();
        self.child = Some(child);

        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if answers_ping(self.port).await {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "redis-server on port {} did not answer PING within {READY_LIMIT:?}:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        // A server of another test may have taken the port between our pick and our bind.
        let info = self.cli(&["INFO", "server"]).await;
        if !info.lines().any(|line| line.trim() == format!("process_id:{pid}")) {
            self.kill();
            return Err(format!("port {} answers, but not from our redis-server", self.port));
        }
        Ok(())
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT args...` and returns its (raw) output; fails the
    /// test if it fails or answers an error.
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut full = vec![
            "-h".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.port.to_string(),
        ];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        run_cli(full).await
    }

    /// How many clients are subscribed to `channel` (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> u64 {
        let out = self.cli(&["PUBSUB", "NUMSUB", channel]).await;
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        match lines.as_slice() {
            [name, count] if *name == channel => count
                .parse()
                .unwrap_or_else(|_| panic!("PUBSUB NUMSUB {channel}: {out:?}")),
            _ => panic!("PUBSUB NUMSUB {channel}: unexpected output {out:?}"),
        }
    }

    /// Waits (at most `limit`) until exactly `n` clients are subscribed to `channel`; returns
    /// how long that took.
    pub async fn wait_subscribers(&self, channel: &str, n: u64, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let now = self.subscribers(channel).await;
            if now == n {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{channel}: {now} subscribers after {limit:?}, expected {n}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// `CLIENT KILL TYPE pubsub`: drops every subscriber's connection; returns how many.
    pub async fn kill_pubsub_clients(&self) -> u64 {
        let out = self.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLIENT KILL TYPE pubsub: {out:?}"))
    }

    /// Forbids (`false`) or allows again `SUBSCRIBE` for the default user, which every client
    /// here uses: a subscriber dropped meanwhile cannot come back until it is allowed.
    pub async fn allow_subscribe(&self, allowed: bool) {
        let rule = if allowed { "+subscribe" } else { "-subscribe" };
        let out = self.cli(&["ACL", "SETUSER", "default", rule]).await;
        assert_eq!(out.trim(), "OK", "ACL SETUSER default {rule}");
    }

    /// Every key (`--scan`).
    pub async fn keys(&self) -> Vec<String> {
        let out = self.cli(&["--scan", "--pattern", "*"]).await;
        out.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
    }

    /// Every key with its whole content as text (string, hash fields and values, set
    /// members), to search the store for something that must not be there.
    pub async fn dump(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for key in self.keys().await {
            let kind = self.cli(&["TYPE", &key]).await;
            let content = match kind.trim() {
                "string" => self.cli(&["GET", &key]).await,
                "hash" => self.cli(&["HGETALL", &key]).await,
                "set" => self.cli(&["SMEMBERS", &key]).await,
                "list" => self.cli(&["LRANGE", &key, "0", "-1"]).await,
                "zset" => self.cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]).await,
                other => format!("<{other}>"),
            };
            out.push((key, content));
        }
        out
    }

    /// `HGET key field`; `None` when the key or field does not exist.
    pub async fn hget(&self, key: &str, field: &str) -> Option<String> {
        let out = self.cli(&["HGET", key, field]).await;
        let value = out.trim_end_matches('\n');
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// How often `command` (lowercase) has run, from `INFO commandstats`.
    pub async fn command_calls(&self, command: &str) -> u64 {
        let out = self.cli(&["INFO", "commandstats"]).await;
        let prefix = format!("cmdstat_{command}:calls=");
        out.lines()
            .find_map(|line| line.trim().strip_prefix(&prefix))
            .map(|rest| {
                rest.split(',')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("INFO commandstats: bad line for {command}: {out}"))
            })
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters on free ports, slots spread by `redis-cli --cluster create`, no replicas.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node says
    /// `cluster_state:ok`.
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_as(Mode::ClusterNode).await);
        }
        let mut create: Vec<String> = vec!["--cluster".into(), "create".into()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
        run_cli(create).await;

        let start = Instant::now();
        for node in &nodes {
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]).await;
                if info.lines().any(|line| line.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    start.elapsed() < secs(15),
                    "node {} not cluster_state:ok after 15 s:\n{info}",
                    node.port
                );
                tokio::time::sleep(POLL).await;
            }
        }
        Self { nodes }
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The TOML array of node URLs for `[store] nodes`.
    pub fn nodes_toml(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
        format!("[{}]", urls.join(", "))
    }

    /// Waits (at most `limit`) until the nodes together count exactly `n` subscribers to
    /// `channel` (a subscriber may be connected to any node).
    pub async fn wait_subscribers(&self, channel: &str, n: u64, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let mut now = 0;
            for node in &self.nodes {
                now += node.subscribers(channel).await;
            }
            if now == n {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{channel}: {now} subscribers on the cluster after {limit:?}, expected {n}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every key of every node, with its content (see [`RedisServer::dump`]).
    pub async fn dump(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.extend(node.dump().await);
        }
        out
    }
}

/// How error replies start (none of the values the tests read starts like this).
const ERROR_CODES: [&str; 9] = [
    "ERR",
    "(error)",
    "WRONGTYPE",
    "NOPERM",
    "NOAUTH",
    "NOSCRIPT",
    "MOVED",
    "CROSSSLOT",
    "LOADING",
];

/// Runs `redis-cli` with `args` on the blocking pool (at most 30 s), returning its output.
async fn run_cli(args: Vec<String>) -> String {
    let shown = format!("redis-cli {}", args.join(" "));
    let mut command = Command::new("redis-cli");
    command.args(&args).stdin(Stdio::null());
    let output = within(secs(30), &shown, tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("redis-cli task")
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{shown} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // Without a terminal redis-cli prints replies raw and exits 0 on an error reply, which is
    // then a line starting with the error code.
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        !ERROR_CODES.iter().any(|code| first.starts_with(code)),
        "{shown} answered an error:\n{stdout}"
    );
    stdout
}

/// Whether something on `port` answers an inline `PING` with `+PONG` (not `-LOADING`).
async fn answers_ping(port: u16) -> bool {
    let probe = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 64];
        let n = stream.read(&mut reply).await?;
        Ok::<_, io::Error>(reply[..n].starts_with(b"+PONG"))
    };
    matches!(tokio::time::timeout(millis(500), probe).await, Ok(Ok(true)))
}

/// A port on 127.0.0.1 that was free a moment ago (bound to port 0, read, released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// A free port whose cluster bus port (`+ 10000`) exists and is free too.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let port = free_port();
        if port <= MAX_CLUSTER_PORT && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port p <= {MAX_CLUSTER_PORT} with p + 10000 free in 200 tries");
}
