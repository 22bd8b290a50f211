//! The local `nats-server` that `krisbud up` starts when no NATS URL is configured.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::LocalNats;

/// A `nats-server -js` child process, killed when dropped.
pub struct LocalNatsServer {
    child: Child,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl LocalNatsServer {
    /// Starts the server with its store under `<data_dir>/nats` and waits until it
    /// accepts connections.
    pub fn start(config: &LocalNats, data_dir: &Path) -> anyhow::Result<LocalNatsServer> {
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
        let child = Command::new(&config.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .arg("-sd")
            .arg(&store)
            .arg("-P")
            .arg(&pid_file)
            .arg("-l")
            .arg(store.join("nats-server.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start `{}`; install nats-server 2.9 or newer (Debian: apt-get install -y nats-server) or set nats.url",
                    config.binary
                )
            })?;
        let mut server = LocalNatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = server.child.try_wait()? {
                anyhow::bail!(
                    "nats-server exited with {status}; see {}",
                    store.join("nats-server.log").display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nats-server did not start within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Stops the server and waits for it, so its store is flushed.
    pub fn stop(&mut self) {
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
