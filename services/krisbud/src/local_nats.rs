//! The local `nats-server` that `krisbud up` starts when no NATS URL is configured.

use std::ffi::OsString;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::LocalNats;

/// A `nats-server -js` child process, killed when dropped. It accepts only the
/// users of `krisbud_proto::access`, each with a password generated into
/// `credentials_dir` (mode 0600); an anonymous connection is refused.
pub struct LocalNatsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    /// One `<user>.password` file per user.
    pub credentials_dir: PathBuf,
    /// How to start it again, on the same port and store.
    launch: Launch,
}

/// Everything a start of the server needs.
struct Launch {
    binary: PathBuf,
    conf: PathBuf,
    port: u16,
    store: PathBuf,
    pid_file: PathBuf,
    memory_limit: String,
}

impl Launch {
    fn spawn(&self) -> anyhow::Result<Child> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-c")
            .arg(&self.conf)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .arg("-P")
            .arg(&self.pid_file)
            .arg("-l")
            .arg(self.store.join("nats-server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // A process group of its own, so a Ctrl-C at the terminal reaches krisbud
        // only: the services drain against a running server, then `stop` ends it.
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        if !self.memory_limit.is_empty() && std::env::var_os("GOMEMLIMIT").is_none() {
            command.env("GOMEMLIMIT", &self.memory_limit);
        }
        command.spawn().with_context(|| {
            format!(
                "cannot start `{}`; install nats-server 2.9 or newer (Debian: apt-get install -y nats-server) or set nats.url",
                self.binary.display()
            )
        })
    }

    /// Waits until the server accepts connections, or says why it did not.
    fn wait_listening(&self, child: &mut Child) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "nats-server exited with {status}; see {}",
                    self.store.join("nats-server.log").display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl LocalNatsServer {
    /// Starts the server with its store under `<data_dir>/nats` and waits until it
    /// accepts connections.
    pub fn start(config: &LocalNats, data_dir: &Path) -> anyhow::Result<LocalNatsServer> {
        LocalNatsServer::start_with(config, data_dir, &[])
    }

    /// [`LocalNatsServer::start`] with further unrestricted users (the benchmark's).
    pub fn start_with(
        config: &LocalNats,
        data_dir: &Path,
        unrestricted: &[(String, String)],
    ) -> anyhow::Result<LocalNatsServer> {
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        let pid_file = store.join("nats-server.pid");
        stop_stale(&pid_file);
        let port = if config.port == 0 {
            TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        } else {
            config.port
        };
        anyhow::ensure!(
            valid_memory_limit(&config.memory_limit),
            "local_nats.memory_limit: `{}` is not a size such as `128MiB` (B, KiB, MiB, GiB)",
            config.memory_limit
        );
        let credentials_dir = store.join("credentials");
        let passwords = krisbud_kit::nats_auth::ensure_passwords(&credentials_dir)?;
        let password_of = |user: &str| {
            passwords
                .iter()
                .find(|(u, _)| *u == user)
                .map(|(_, p)| p.clone())
                .unwrap_or_default()
        };
        let conf = store.join("nats-server.conf");
        krisbud_kit::secret_file::write(
            &conf,
            &krisbud_kit::nats_auth::accounts_block_with(
                &krisbud_kit::nats_auth::Passwords::Literal(&password_of),
                unrestricted,
            ),
        )?;
        let launch = Launch {
            binary: find_binary(&config.binary, std::env::var_os("PATH"), DEBIAN_BINARY),
            conf,
            port,
            store,
            pid_file,
            memory_limit: config.memory_limit.clone(),
        };
        let mut child = launch.spawn()?;
        if let Err(e) = launch.wait_listening(&mut child) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        Ok(LocalNatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            credentials_dir,
            launch,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server has exited (it was killed, or crashed).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts the server again on the same port and store, after it exited.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.wait();
        let mut child = self.launch.spawn()?;
        self.launch.wait_listening(&mut child)?;
        self.child = child;
        Ok(())
    }

    /// Stops the server and waits for it, so its store is flushed.
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already stopped (by an earlier call, or it died)
        }
        #[cfg(unix)]
        {
            // SIGTERM lets nats-server close its store cleanly; fall back to kill.
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalNatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether `limit` is empty or a size Go's `GOMEMLIMIT` takes: digits and a unit.
fn valid_memory_limit(limit: &str) -> bool {
    let digits = limit.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &limit[digits.len()..];
    limit.is_empty()
        || (!digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && ["", "B", "KiB", "MiB", "GiB", "TiB"].contains(&unit))
}

/// Where Debian and Ubuntu install `nats-server`, off a normal user's PATH.
const DEBIAN_BINARY: &str = "/usr/sbin/nats-server";

/// The binary to start: a configured path as it is; a bare name from `path` (the
/// PATH variable); the default name, when not on PATH, Debian's `debian` if it
/// exists, as the test harness finds it. Otherwise the name, so the error says it.
fn find_binary(configured: &str, path: Option<OsString>, debian: &str) -> PathBuf {
    if configured.contains(std::path::MAIN_SEPARATOR) {
        return PathBuf::from(configured);
    }
    let on_path = path.and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(configured))
            .find(|p| p.is_file())
    });
    if let Some(found) = on_path {
        return found;
    }
    if configured == LocalNats::default().binary && Path::new(debian).is_file() {
        return PathBuf::from(debian);
    }
    PathBuf::from(configured)
}

/// Stops a server left running by an earlier `krisbud up` that was killed, so it
/// does not hold the store.
fn stop_stale(pid_file: &Path) {
    let Ok(pid) = std::fs::read_to_string(pid_file) else {
        return;
    };
    let pid = pid.trim();
    let is_nats = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim() == "nats-server");
    if is_nats {
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = std::fs::remove_file(pid_file);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_are_sizes_go_understands() {
        for good in ["", "128MiB", "1GiB", "500000000", "64B"] {
            assert!(valid_memory_limit(good), "{good}");
        }
        for bad in ["128MB", "MiB", "-1MiB", "12.5MiB", "lots"] {
            assert!(!valid_memory_limit(bad), "{bad}");
        }
    }

    #[test]
    fn nats_server_is_found_on_path_then_where_debian_installs_it() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, sbin) = (dir.path().join("bin"), dir.path().join("sbin"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&sbin).unwrap();
        let debian = sbin.join("nats-server");
        std::fs::write(&debian, "").unwrap();
        let debian = debian.to_str().unwrap();
        let path = || Some(std::env::join_paths([&bin]).unwrap());

        // Not on PATH: Debian's binary.
        assert_eq!(
            find_binary("nats-server", path(), debian),
            Path::new(debian)
        );
        assert_eq!(find_binary("nats-server", None, debian), Path::new(debian));
        // On PATH: that one.
        std::fs::write(bin.join("nats-server"), "").unwrap();
        assert_eq!(
            find_binary("nats-server", path(), debian),
            bin.join("nats-server")
        );
        // A configured path is used as it is; another name is not replaced.
        assert_eq!(
            find_binary("/opt/nats/nats-server", path(), debian),
            Path::new("/opt/nats/nats-server")
        );
        assert_eq!(
            find_binary("nats-server-2.10", path(), debian),
            Path::new("nats-server-2.10")
        );
        // Nowhere: the name, so the error names it.
        let missing = sbin.join("missing").display().to_string();
        assert_eq!(
            find_binary("nats-server", None, &missing),
            Path::new("nats-server")
        );
    }
}
