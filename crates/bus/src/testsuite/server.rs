//! A real NATS server with JetStream for tests (Debian's `nats-server`, or
//! `CITYSEC_NATS_SERVER`), on a free loopback port with its store in a temporary
//! directory.
//!
//! The server runs under a small shell supervisor that reads its standard input: when the
//! test process ends, however it ends, the pipe closes and the supervisor stops the server
//! and removes the directory. Without `nats-server` installed, [`TestNats::shared`]
//! returns `None` after saying so, unless `CITYSEC_REQUIRE_PEERS=1`, when it panics.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{NatsBus, NatsConfig};

fn required() -> bool {
    std::env::var("CITYSEC_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// The `nats-server` binary, if installed.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CITYSEC_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A running server; stopped when the process ends or this is dropped.
pub struct TestNats {
    port: u16,
    dir: PathBuf,
    supervisor: Option<Child>,
}

impl std::fmt::Debug for TestNats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNats")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TestNats {
    /// The one server of this test process, started on first use.
    pub fn shared() -> Option<&'static TestNats> {
        static SHARED: OnceLock<Option<TestNats>> = OnceLock::new();
        SHARED.get_or_init(TestNats::start).as_ref()
    }

    /// Starts a new server (for tests that stop it).
    pub fn start() -> Option<TestNats> {
        let Some(binary) = binary() else {
            if required() {
                panic!("nats-server is required (CITYSEC_REQUIRE_PEERS=1) but was not found");
            }
            eprintln!("skipping: nats-server is not installed (apt-get install nats-server)");
            return None;
        };
        match TestNats::try_start(&binary, None) {
            Ok(server) => Some(server),
            Err(e) if required() => panic!("failed to start nats-server: {e}"),
            Err(e) => {
                eprintln!("skipping: failed to start nats-server: {e}");
                None
            }
        }
    }

    /// Starts a server on `port` (a restart of one that was stopped), or a free port.
    pub fn try_start(binary: &std::path::Path, port: Option<u16>) -> Result<TestNats, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "citysec-nats-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("bind a loopback port")
        });
        // The supervisor reads commands on its standard input (`term`, `kill`: stop the
        // server with that signal, keeping port and storage; `start`: start it again) and
        // at end of input stops the server and removes the directory.
        let script = r#"
            bin="$1"; port="$2"; dir="$3"
            run() { "$bin" -js -a 127.0.0.1 -p "$port" -sd "$dir/js" >>"$dir/server.log" 2>&1 & pid=$!; }
            run
            while read cmd; do
                case "$cmd" in
                    term) kill -TERM "$pid" 2>/dev/null; wait "$pid" ;;
                    kill) kill -KILL "$pid" 2>/dev/null; wait "$pid" ;;
                    start) run ;;
                esac
            done
            kill -TERM "$pid" 2>/dev/null
            wait "$pid"
            rm -rf "$3"
        "#;
        let supervisor = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(binary)
            .arg(port.to_string())
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start nats-server: {e}"))?;
        let mut server = TestNats {
            port,
            dir,
            supervisor: Some(supervisor),
        };
        server.wait_ready(1)?;
        Ok(server)
    }

    /// Waits until the server accepts connections and its log says it is ready for the
    /// `starts`-th time.
    fn wait_ready(&mut self, starts: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Ready once it accepts connections and has logged that JetStream is up.
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && log.matches("Server is ready").count() >= starts
            {
                return Ok(());
            }
            if let Some(child) = self.supervisor.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("nats-server exited early ({status}): {log}"));
            }
            if Instant::now() > deadline {
                if let Some(child) = self.supervisor.as_mut() {
                    let _ = child.kill();
                }
                return Err(format!("nats-server did not become ready in 30 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn command(&mut self, cmd: &str) {
        use std::io::Write;
        let stdin = self
            .supervisor
            .as_mut()
            .and_then(|c| c.stdin.as_mut())
            .expect("the test server's supervisor runs");
        stdin
            .write_all(format!("{cmd}\n").as_bytes())
            .expect("tell the supervisor");
        stdin.flush().expect("tell the supervisor");
    }

    /// Stops the server with SIGTERM (`kill = false`) or SIGKILL, keeping its port and
    /// JetStream storage for [`TestNats::restart`]; returns once the port is closed.
    pub fn halt(&mut self, kill: bool) {
        self.command(if kill { "kill" } else { "term" });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "nats-server did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a halted server again on the same port and storage; returns once it is ready.
    pub fn restart(&mut self) {
        let starts = std::fs::read_to_string(self.dir.join("server.log"))
            .unwrap_or_default()
            .matches("Server is ready")
            .count();
        self.command("start");
        self.wait_ready(starts + 1).expect("nats-server restarts");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A config for a stream of its own (name and subject prefix unique in this process),
    /// so tests sharing a server never see each other's messages.
    pub fn config(&self, partitions: u32) -> NatsConfig {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let id = format!("t{}_{n}", std::process::id());
        NatsConfig {
            url: self.url(),
            stream: format!("CITYSEC_{id}"),
            subject_prefix: id,
            partitions,
            // Every test has a stream of its own on one shared server, and JetStream
            // reserves each stream's `max_bytes` against the disk it has: the default
            // (1 GiB) times every test is more than a CI machine offers.
            max_bytes: 64 << 20,
            ..NatsConfig::default()
        }
    }

    /// A fresh bus on a stream of its own.
    pub async fn fresh_bus(&self) -> NatsBus {
        NatsBus::connect(self.config(8))
            .await
            .expect("connect to the test nats-server")
    }

    /// Stops the server (its JetStream data is removed with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.stop();
    }
}
