//! nats-server's `accounts` block for krisbud's users, rendered from the one
//! access model in `krisbud_proto::access`: `krisbud up` writes it with generated
//! passwords, and `deploy/nats/accounts.conf` is the same text with each password
//! taken from the server's environment.

use std::fmt::Write as _;
use std::path::Path;

use krisbud_proto::access::{self, Permissions};

use crate::secret_file;

/// How the block names each user's password.
pub enum Passwords<'a> {
    /// `$KRISBUD_NATS_<USER>_PASSWORD`, read by nats-server from its environment.
    FromEnvironment,
    /// Literal passwords (a private server's generated configuration).
    Literal(&'a dyn Fn(&str) -> String),
}

/// Every krisbud user: the services and the provisioning user.
pub fn users() -> impl Iterator<Item = &'static str> {
    access::SERVICES
        .into_iter()
        .chain(std::iter::once(access::PROVISION_USER))
}

/// The environment variable holding `user`'s password for nats-server.
pub fn password_variable(user: &str) -> String {
    format!(
        "KRISBUD_NATS_{}_PASSWORD",
        user.to_ascii_uppercase().replace('-', "_")
    )
}

/// The `accounts { KRISBUD { ... } }` block with every user and its permissions.
/// No user without a password exists, so an anonymous connection is refused.
pub fn accounts_block(passwords: &Passwords<'_>) -> String {
    accounts_block_with(passwords, &[])
}

/// [`accounts_block`] with further users that may do anything (`krisbud bench`'s
/// own user, which measures raw JetStream on the same server; never in a
/// deployment).
pub fn accounts_block_with(passwords: &Passwords<'_>, unrestricted: &[(String, String)]) -> String {
    let mut out = String::new();
    out.push_str("accounts {\n  KRISBUD {\n    jetstream: enabled\n    users: [\n");
    for (user, p) in users().filter_map(|u| Some((u, access::permissions(u)?))) {
        let password = match passwords {
            Passwords::FromEnvironment => format!("${}", password_variable(user)),
            Passwords::Literal(f) => quote(&f(user)),
        };
        let _ = writeln!(
            out,
            "      {{ user: {}, password: {},\n        permissions: {} }}",
            quote(user),
            password,
            permissions_block(&p)
        );
    }
    for (user, password) in unrestricted {
        let _ = writeln!(
            out,
            "      {{ user: {}, password: {} }}",
            quote(user),
            quote(password)
        );
    }
    out.push_str("    ]\n  }\n}\n");
    out
}

fn permissions_block(p: &Permissions) -> String {
    let list = |items: &[String]| {
        let mut out = String::from("[\n");
        for item in items {
            let _ = writeln!(out, "              {}", quote(item));
        }
        out.push_str("            ]");
        out
    };
    let mut block = String::from("{\n          publish: {\n");
    let _ = writeln!(block, "            allow: {}", list(&p.publish_allow));
    if !p.publish_deny.is_empty() {
        let _ = writeln!(block, "            deny: {}", list(&p.publish_deny));
    }
    block.push_str("          }\n          subscribe: {\n");
    let _ = writeln!(block, "            allow: {}", list(&p.subscribe_allow));
    block.push_str("          }\n");
    if p.allow_responses {
        block.push_str("          allow_responses: true\n");
    }
    block.push_str("        }");
    block
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Creates (once) a password file per user in `dir`, mode 0600, and returns the
/// password of each.
pub fn ensure_passwords(dir: &Path) -> anyhow::Result<Vec<(&'static str, String)>> {
    users()
        .map(|user| {
            let path = dir.join(format!("{user}.password"));
            Ok((
                user,
                secret_file::read_or_create(&path, secret_file::random_password)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_is_in_the_block_with_a_password() {
        let block = accounts_block(&Passwords::FromEnvironment);
        for user in users() {
            assert!(block.contains(&format!("user: \"{user}\"")), "{user}");
            assert!(block.contains(&format!("${}", password_variable(user))));
        }
        assert!(!block.contains("no_auth_user"));
    }
}
