//! A real `nats-server` with JetStream per test, on a free port with its own store
//! directory, killed and removed on drop.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// A configuration file (users and permissions) the server runs with.
    config: Option<PathBuf>,
    /// Environment of the server process (the users' passwords).
    env: Vec<(String, String)>,
}

/// The single-server configuration shipped in `deploy/nats`.
pub fn deployed_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nats/single.conf")
}

/// How to install the server when it is missing.
pub const INSTALL_HINT: &str = "apt-get install -y nats-server";

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory and waits until
    /// it accepts connections.
    pub fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("a temporary store directory");
        let port = free_port();
        let mut server = NatsServer {
            child: None,
            port,
            store,
            config: None,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts a closed server, as deployed: the repository's
    /// `deploy/nats/single.conf` (krisbud's users and permissions, no anonymous
    /// access) with a password per user generated into `credentials_dir`, where
    /// `nats.credentials_dir` finds them.
    pub fn start_closed(credentials_dir: &Path) -> NatsServer {
        NatsServer::start_closed_on(free_port(), credentials_dir)
    }

    /// [`NatsServer::start_closed`] on a given port.
    pub fn start_closed_on(port: u16, credentials_dir: &Path) -> NatsServer {
        let passwords = krisbud_kit::nats_auth::ensure_passwords(credentials_dir)
            .expect("generate the nats passwords");
        let store = tempfile::tempdir().expect("a temporary store directory");
        // single.conf with this test's store: nats-server refuses a store_dir
        // given both in the file and on the command line.
        let shipped = std::fs::read_to_string(deployed_config()).expect("deploy/nats/single.conf");
        // nats-server reads an include relative to the including file: the
        // shipped accounts.conf goes next to this copy, unchanged.
        std::fs::copy(
            deployed_config().with_file_name("accounts.conf"),
            store.path().join("accounts.conf"),
        )
        .expect("copy deploy/nats/accounts.conf");
        let config = shipped.replace(
            "store_dir: /var/lib/krisbud/nats",
            &format!("store_dir: \"{}\"", store.path().display()),
        );
        assert!(
            !config.contains("/var/lib/krisbud") && config.contains("include ./accounts.conf"),
            "deploy/nats/single.conf keeps its store_dir and include lines"
        );
        let path = store.path().join("single.conf");
        std::fs::write(&path, config).expect("write the nats-server configuration");
        let mut server = NatsServer {
            child: None,
            port,
            store,
            config: Some(path),
            env: Vec::new(),
        };
        server.env = passwords
            .into_iter()
            .map(|(user, password)| (krisbud_kit::nats_auth::password_variable(user), password))
            .collect();
        server.spawn();
        server
    }

    /// Starts a server on the given port (e.g. one a client is already trying).
    pub fn start_on(port: u16) -> NatsServer {
        let store = tempfile::tempdir().expect("a temporary store directory");
        let mut server = NatsServer {
            child: None,
            port,
            store,
            config: None,
            env: Vec::new(),
        };
        server.spawn();
        server
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Stops the server (SIGKILL), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_on(false);
    }

    fn spawn(&mut self) {
        self.spawn_on(true);
    }

    /// Starts the server and waits until it, and not another test's server that
    /// took the same free port in the meantime, answers: its INFO names it. When
    /// `may_move`, a port lost that way is given up for another free one.
    fn spawn_on(&mut self, may_move: bool) {
        static SERVERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "krisbud-test-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let binary = nats_server_binary();
        let mut command = Command::new(&binary);
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        if self.config.is_none() {
            command.arg("-sd").arg(self.store.path());
        }
        let child = command
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["-js", "-n", &name, "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}); install it with `{INSTALL_HINT}`",
                    binary.display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !answers_as(self.port, &name) {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                if may_move && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    // Another server holds the port: take another.
                    self.child = None;
                    self.port = free_port();
                    return self.spawn_on(true);
                }
                panic!("nats-server exited at start-up with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not accept connections on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `nats-server` binary: `NATS_SERVER` if set, else the one on PATH, else
/// Debian's `/usr/sbin/nats-server`. Panics with the install command when missing.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
    });
    if let Some(path) = on_path {
        return path;
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    if debian.is_file() {
        return debian;
    }
    panic!("nats-server is not installed; install it with `{INSTALL_HINT}`");
}

/// A port nobody listens on right now.
/// Whether the server on `port` is the one called `name` (its INFO line says).
fn answers_as(port: u16, name: &str) -> bool {
    use std::io::{BufRead as _, BufReader};
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut info = String::new();
    if BufReader::new(stream).read_line(&mut info).is_err() {
        return false;
    }
    info.contains(&format!("\"server_name\":\"{name}\""))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
