//! A real PostgreSQL server for tests, started from Debian's packages (`initdb` and
//! `postgres` under `/usr/lib/postgresql/<version>/bin`, or `CITYSEC_PG_BIN`) into a
//! temporary directory, listening on a free loopback port with password authentication.
//!
//! PostgreSQL refuses to run as root, so under root the server runs as the `postgres`
//! system user (through `runuser`) with the data directory owned by it. The server runs
//! under a small shell supervisor that reads its standard input: when the test process
//! ends, however it ends, the pipe closes, and the supervisor stops the server (fast
//! shutdown) and removes the directory.
//!
//! Without PostgreSQL installed, [`TestPostgres::shared`] returns `None` after saying so,
//! unless `CITYSEC_REQUIRE_PEERS=1`, when it panics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::postgres::{PgConfig, PgStore};

/// The superuser the tests connect as.
pub const USER: &str = "citysec";

/// A running server; stopped when the process ends or this is dropped.
pub struct TestPostgres {
    port: u16,
    password: String,
    bin: PathBuf,
    root: PathBuf,
    supervisor: Option<Child>,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

fn required() -> bool {
    std::env::var("CITYSEC_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}

/// Where `initdb` and `postgres` live, if installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CITYSEC_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists() && p.join("postgres").exists())
        .collect();
    // Prefer 15 (what the test command installs), else the newest.
    found.sort();
    found
        .iter()
        .find(|p| p.starts_with("/usr/lib/postgresql/15"))
        .cloned()
        .or_else(|| found.pop())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The uid and gid of the `postgres` system user.
fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[0] == "postgres")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A command run as the server's user: `postgres` under root, else ourselves.
fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl TestPostgres {
    /// The one server of this test process, started on first use.
    pub fn shared() -> Option<&'static TestPostgres> {
        static SHARED: OnceLock<Option<TestPostgres>> = OnceLock::new();
        SHARED.get_or_init(|| TestPostgres::start(false)).as_ref()
    }

    /// Starts a new server. `durable` keeps fsync on (for measurements); tests turn it off,
    /// which changes nothing they can observe.
    pub fn start(durable: bool) -> Option<TestPostgres> {
        let Some(bin) = bin_dir() else {
            if required() {
                panic!("PostgreSQL is required (CITYSEC_REQUIRE_PEERS=1) but initdb was not found");
            }
            eprintln!("skipping: PostgreSQL is not installed (apt-get install postgresql)");
            return None;
        };
        match TestPostgres::try_start(&bin, durable) {
            Ok(server) => Some(server),
            Err(e) if required() => panic!("failed to start PostgreSQL: {e}"),
            Err(e) => {
                eprintln!("skipping: failed to start PostgreSQL: {e}");
                None
            }
        }
    }

    fn try_start(bin: &Path, durable: bool) -> Result<TestPostgres, String> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "citysec-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let data = root.join("data");
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let password = random_hex();
        let pwfile = root.join("pw");
        std::fs::File::create(&pwfile)
            .and_then(|mut f| f.write_all(password.as_bytes()))
            .map_err(|e| format!("write password file: {e}"))?;
        if is_root() {
            let (uid, gid) = postgres_ids().ok_or("no postgres system user")?;
            for path in [&root, &pwfile] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "scram-sha-256", "-E", "UTF8", "--no-sync"])
            .args(["--locale", "C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run initdb: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&root);
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let _ = std::fs::remove_file(&pwfile);
        let port = free_port();
        let fsync = if durable { "on" } else { "off" };
        // The supervisor reads commands on its standard input (`fast`: fast shutdown,
        // SIGINT; `crash`: immediate shutdown, SIGQUIT, as after a crash; both keep the
        // port and the data; `start`: start again) and at end of input stops the server and
        // removes the directory.
        let script = r#"
            bin="$1"; data="$2"; port="$3"; root="$4"; fsync="$5"
            run() {
                "$bin/postgres" -D "$data" -p "$port" -k "$root" -c listen_addresses=127.0.0.1 \
                    -c fsync="$fsync" -c max_connections=200 -c shared_buffers=128MB \
                    >>"$root/server.log" 2>&1 &
                pid=$!
            }
            run
            while read cmd; do
                case "$cmd" in
                    fast) kill -INT "$pid" 2>/dev/null; wait "$pid" ;;
                    crash) kill -QUIT "$pid" 2>/dev/null; wait "$pid" ;;
                    start) run ;;
                esac
            done
            kill -INT "$pid" 2>/dev/null
            wait "$pid"
            rm -rf "$4"
        "#;
        let supervisor = as_server_user(Path::new("/bin/sh"))
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(bin)
            .arg(&data)
            .arg(port.to_string())
            .arg(&root)
            .arg(fsync)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("start postgres: {e}"))?;
        let mut server = TestPostgres {
            port,
            password,
            bin: bin.to_owned(),
            root,
            supervisor: Some(supervisor),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn is_ready(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.is_ready() {
                return Ok(());
            }
            if let Some(child) = self.supervisor.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("postgres exited early ({status})"));
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
                if let Some(child) = self.supervisor.as_mut() {
                    let _ = child.kill();
                }
                return Err(format!("postgres did not become ready in 60 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&mut self, cmd: &str) {
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

    /// Stops the server, keeping its port and data for [`TestPostgres::restart`]: a fast
    /// shutdown (SIGINT, `crash = false`) or an immediate one (SIGQUIT: no checkpoint, as
    /// after a crash; the restart recovers from the WAL). Returns once it no longer answers.
    /// Only for servers of one test ([`TestPostgres::start`]), never the shared one.
    pub fn halt(&mut self, crash: bool) {
        self.command(if crash { "crash" } else { "fast" });
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a halted server again on the same port and data; returns once it is ready.
    pub fn restart(&mut self) {
        self.command("start");
        self.wait_ready().expect("postgres restarts");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's generated password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The URL of database `db` (no password in it).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// A config for database `db`.
    pub fn config(&self, db: &str) -> PgConfig {
        PgConfig {
            url: self.url(db),
            password: Some(self.password.clone()),
            pool_size: 4,
        }
    }

    /// Creates a fresh, empty database and returns its name.
    pub async fn create_database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut config: tokio_postgres::Config =
            self.url("postgres").parse().expect("test url parses");
        config.password(self.password.as_bytes());
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        drop(client);
        let _ = task.await;
        name
    }

    /// Connects a store to a fresh database.
    pub async fn fresh_store(&self) -> (String, PgStore) {
        let db = self.create_database().await;
        let store = PgStore::connect(&self.config(&db))
            .await
            .expect("connect the store");
        (db, store)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.supervisor.take() {
            // Closing the supervisor's stdin stops the server; wait for it to finish.
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}
