//! The real `sessiongate` binary: `BinaryGateway` runs it as a server (killed on drop) and
//! follows its JSON log on stderr; `run_cli` runs one-shot commands (`check`, `gen-cert`).
//!
//! With port 0 in the config, the ports are learned from the startup log lines
//! (`"message":"listening"`, `"listener"`, `"addr"`), so nothing is guessed.

use std::{
    collections::HashMap,
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    ops::Deref,
    process::{Child, ChildStderr, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::watch;

use super::{
    config::{GatewayConfig, PreparedConfig},
    gateway::GatewayAddrs,
};

/// Path of the binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_sessiongate");

/// How long the binary may take to start listening.
const STARTUP_LIMIT: Duration = Duration::from_secs(15);

/// Kills and reaps the child process when dropped, so no test leaves a gateway behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `sessiongate --config FILE --log-format json` process.
pub struct BinaryGateway {
    addrs: GatewayAddrs,
    child: ChildGuard,
    log: Arc<LogTail>,
    /// The config directory; kept until the process is gone (field order: dropped last).
    prepared: PreparedConfig,
}

impl BinaryGateway {
    /// Writes `config`, starts the binary and waits for its listeners to be announced.
    pub async fn start(config: GatewayConfig) -> Self {
        Self::start_command(config, Command::new(BIN)).await
    }

    /// As [`BinaryGateway::start`], with the process confined to `cpus` (`taskset -c`), as
    /// an operator pins it.
    pub async fn start_pinned(config: GatewayConfig, cpus: &str) -> Self {
        let mut command = Command::new("taskset");
        command.args(["-c", cpus]).arg(BIN);
        Self::start_command(config, command).await
    }

    async fn start_command(config: GatewayConfig, mut command: Command) -> Self {
        let want_redirect = config.has_redirect_listener();
        let prepared = config.prepare();
        let mut child = ChildGuard(
            command
                .arg("--config")
                .arg(&prepared.path)
                .args(["--log-format", "json"])
                // The binary's own default level (info) is what operators get.
                .env_remove("SESSIONGATE_LOG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the sessiongate binary"),
        );
        let stderr = child.0.stderr.take().expect("piped stderr");
        let log = LogTail::follow(stderr);

        let mut wanted = vec!["https", "admin"];
        if want_redirect {
            wanted.push("redirect");
        }
        let listeners = log
            .wait_until(STARTUP_LIMIT, |lines, _closed| {
                let found = listening_addrs(lines);
                wanted.iter().all(|name| found.contains_key(*name)).then_some(found)
            })
            .await
            .unwrap_or_else(|| {
                panic!(
                    "the binary did not announce listeners {wanted:?}\n--- stderr ---\n{}\n--- config ---\n{}",
                    log.text(),
                    prepared.text
                )
            });
        let addrs = GatewayAddrs {
            https: listeners["https"],
            admin: listeners["admin"],
            redirect: listeners.get("redirect").copied(),
            cert: prepared.cert.clone(),
        };
        Self {
            addrs,
            child,
            log,
            prepared,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// The text of `/proc/PID/task/*/{file}` (`stat`, `status`), one entry per thread.
    pub fn thread_files(&self, file: &str) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .expect("task list")
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join(file)).ok())
            .collect()
    }

    /// Sends a signal by name (`TERM`, `INT`) with `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Waits (at most `limit`) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        // stderr reaches EOF when the process exits; then `wait` returns at once.
        let closed = self.log.wait_until(limit, |_lines, closed| closed.then_some(())).await;
        if closed.is_none() {
            panic!(
                "the gateway process did not exit within {limit:?}\n--- stderr ---\n{}",
                self.log.text()
            );
        }
        self.child.0.wait().expect("reap the gateway process")
    }

    /// Waits (at most `limit`) for a JSON log line matching `pred` and returns it.
    pub async fn wait_for_log(&self, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let found = self
            .log
            .wait_until(limit, |lines, _closed| {
                lines
                    .iter()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .find(|value| pred(value))
            })
            .await;
        found.unwrap_or_else(|| {
            panic!(
                "no matching log line within {limit:?}\n--- stderr ---\n{}",
                self.log.text()
            )
        })
    }

    /// The config file the process was started with (SIGHUP reads it again).
    pub fn config_path(&self) -> &std::path::Path {
        &self.prepared.path
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr_text(&self) -> String {
        self.log.text()
    }

    /// Peak resident memory (`VmHWM`) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Current resident memory (`VmRSS`) of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }
}

impl Deref for BinaryGateway {
    type Target = GatewayAddrs;

    fn deref(&self) -> &GatewayAddrs {
        &self.addrs
    }
}

/// A field of a tracing-subscriber JSON line: under `fields`, or at the top level when the
/// event is flattened.
pub fn log_field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line.get("fields")
        .and_then(|fields| fields.get(name))
        .or_else(|| line.get(name))
}

/// A log field as text: strings as they are, numbers and booleans printed.
pub fn log_field_text(line: &Value, name: &str) -> Option<String> {
    match log_field(line, name)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// `listener -> addr` from the `"listening"` startup lines seen so far.
fn listening_addrs(lines: &[String]) -> HashMap<String, SocketAddr> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| log_field_text(line, "message").as_deref() == Some("listening"))
        .filter_map(|line| {
            let listener = log_field_text(&line, "listener")?;
            let addr = log_field_text(&line, "addr")?.parse().ok()?;
            Some((listener, addr))
        })
        .collect()
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status of the gateway");
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// The stderr of a child process, read line by line on a thread, with async waiting.
struct LogTail {
    lines: Mutex<Vec<String>>,
    /// Set once stderr reached EOF (the process exited or closed it).
    closed: AtomicBool,
    /// Bumped after every line and at EOF, to wake waiters.
    version: watch::Sender<u64>,
}

impl LogTail {
    fn follow(stderr: ChildStderr) -> Arc<Self> {
        let tail = Arc::new(Self {
            lines: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            version: watch::Sender::new(0),
        });
        let writer = tail.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                        writer.lines.lock().expect("log lock").push(text);
                        writer.version.send_modify(|v| *v += 1);
                    }
                }
            }
            writer.closed.store(true, Ordering::SeqCst);
            writer.version.send_modify(|v| *v += 1);
        });
        tail
    }

    /// Re-runs `probe(lines, closed)` whenever something changes until it returns `Some`, the
    /// log closes without a match, or `limit` passes.
    async fn wait_until<T>(&self, limit: Duration, mut probe: impl FnMut(&[String], bool) -> Option<T>) -> Option<T> {
        let mut changes = self.version.subscribe();
        let waiting = async {
            loop {
                // Mark the current state seen *before* looking, so no change is missed.
                changes.mark_unchanged();
                let closed = self.closed.load(Ordering::SeqCst);
                let found = probe(&self.lines.lock().expect("log lock"), closed);
                if found.is_some() || closed {
                    return found;
                }
                if changes.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(limit, waiting).await.ok().flatten()
    }

    fn text(&self) -> String {
        self.lines.lock().expect("log lock").join("\n")
    }
}

/// What a one-shot command printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the binary with `args` to completion; fails the test (killing it) after 15 s.
pub fn run_cli<I, S>(args: I) -> CliOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let described = format!("{command:?}");
    let mut child = ChildGuard(command.spawn().expect("spawn the sessiongate binary"));
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().expect("piped stdout");
    let stderr = child.0.stderr.take().expect("piped stderr");
    read_to_end_on_thread(stdout, true, tx.clone());
    read_to_end_on_thread(stderr, false, tx);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((true, text)) => stdout = text,
            Ok((false, text)) => stderr = text,
            Err(_) => panic!("{described} did not finish within 15 s (killed)"),
        }
    }
    let status = child.0.wait().expect("reap the sessiongate command");
    CliOutput { status, stdout, stderr }
}

/// Reads `stream` to EOF on its own thread and sends `(is_stdout, text)`.
fn read_to_end_on_thread(mut stream: impl Read + Send + 'static, is_stdout: bool, done: mpsc::Sender<(bool, String)>) {
    std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stream.read_to_end(&mut text);
        let _ = done.send((is_stdout, String::from_utf8_lossy(&text).into_owned()));
    });
}
