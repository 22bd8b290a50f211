//! Secrets kept in files: created readable by the owner only, never logged.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Writes `text` to a new file at `path` that only its owner can read (0600 from
/// the moment it exists, so the secret is never readable by others in between).
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the secret at `path`, or creates it with `make` when the file is missing.
pub fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = make();
            write(path, &text)?;
            Ok(text)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A random password: `kb` and 32 hex digits (128 bits). It starts with letters
/// because nats-server parses a password taken from its environment as a
/// configuration value, and one starting with a digit does not parse.
pub fn random_password() -> String {
    format!("kb{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// Values shipped in this repository's examples and deploy files. A service
/// refuses to start with one of them as a key: anyone can read them.
pub const KNOWN_DEFAULTS: [&str; 4] =
    ["change-me-in-production", "change-me", "changeme", "secret"];

/// Refuses a secret that is a known default (see [`KNOWN_DEFAULTS`]), naming the key.
pub fn refuse_known_default(key: &str, value: &str) -> anyhow::Result<()> {
    let v = value.trim();
    anyhow::ensure!(
        !KNOWN_DEFAULTS.iter().any(|d| d.eq_ignore_ascii_case(v)),
        "key `{key}` holds a value published in krisbud's repository; set a secret of your own (for example `openssl rand -hex 32`)"
    );
    Ok(())
}
