//! `krisbud up --demo`: demo users with tokens kept in the data dir across
//! restarts, and small audiences.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use krisbud_proto::Role;
use krisbud_proto::audience::{CreateAudience, Member};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The demo users: name and roles.
pub const USERS: [(&str, &[Role]); 6] = [
    ("tib.maria", &[Role::DutyOfficer]),
    ("operator.ali", &[Role::Operator]),
    ("redaktor.anna", &[Role::TemplateEditor]),
    ("granskare.erik", &[Role::TemplateApprover]),
    ("revisor.karin", &[Role::Auditor]),
    ("admin.olle", &[Role::Admin]),
];

/// The tokens of the demo users, as written to `demo-tokens.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DemoTokens {
    /// Token by user name.
    pub tokens: BTreeMap<String, String>,
    /// Roles by user name.
    pub roles: BTreeMap<String, Vec<Role>>,
}

impl DemoTokens {
    /// Fresh random tokens for every demo user.
    pub fn generate() -> DemoTokens {
        let mut tokens = BTreeMap::new();
        let mut roles = BTreeMap::new();
        for (name, user_roles) in USERS {
            let secret: [u8; 24] = rand::random();
            tokens.insert(name.to_owned(), format!("kb_{}", hex::encode(secret)));
            roles.insert(name.to_owned(), user_roles.to_vec());
        }
        DemoTokens { tokens, roles }
    }

    /// The tokens kept in `path` by an earlier start, or fresh ones: a console
    /// tab left open and an exported `KRISBUD_TOKEN` keep working across restarts
    /// of `krisbud up --demo`. A file missing a demo user or role is replaced.
    pub fn load_or_generate(path: &Path) -> DemoTokens {
        let kept = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str::<DemoTokens>(&text).ok())
            .filter(|kept| {
                USERS.iter().all(|(name, roles)| {
                    kept.tokens.get(*name).is_some_and(|t| t.len() >= 32)
                        && kept.roles.get(*name).is_some_and(|r| r == roles)
                })
            });
        kept.unwrap_or_else(DemoTokens::generate)
    }

    /// The tokens written by `krisbud up --demo` in `data_dir`.
    pub fn read(data_dir: &Path) -> anyhow::Result<DemoTokens> {
        let path = data_dir.join("demo-tokens.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| rust_i18n::t!("demo.no_tokens", path = path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| rust_i18n::t!("demo.unreadable", path = path.display()))
    }

    /// The gateway users: names, roles and token hashes.
    pub fn users(&self) -> Vec<krisbud_gateway::User> {
        self.tokens
            .iter()
            .map(|(name, token)| krisbud_gateway::User {
                name: name.clone(),
                roles: self.roles[name].clone(),
                // The demo operator confirms every channel.
                channels: Vec::new(),
                token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
            })
            .collect()
    }

    /// The token of the first user holding `role`.
    pub fn token_for(&self, role: Role) -> &str {
        let name = self
            .roles
            .iter()
            .find(|(_, roles)| roles.contains(&role))
            .map(|(name, _)| name)
            .expect("every role has a demo user");
        &self.tokens[name]
    }

    /// Writes the tokens to `path`, readable by the owner only.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        krisbud_kit::secret_file::write(path, &serde_json::to_string_pretty(self)?)
    }
}

fn member(phone: &str, email: &str, language: &str, name: &str) -> Member {
    Member {
        phone: Some(phone.to_owned()),
        email: Some(email.to_owned()),
        language: Some(language.to_owned()),
        name: Some(name.to_owned()),
        external_id: None,
        line: None,
    }
}

/// The demo audiences. The numbers are from the range 070-174 06 05 – 070-174 06 99
/// that Swedish regulator PTS keeps for fiction, so no real phone rings.
pub fn audiences() -> Vec<(CreateAudience, Vec<Member>)> {
    vec![
        (
            CreateAudience {
                id: "farsta-boende".into(),
                name: "Boende i Farsta".into(),
                exercise: true,
            },
            vec![
                member(
                    "+46701740605",
                    "anna.lind@farsta.example",
                    "sv",
                    "Anna Lind",
                ),
                member(
                    "+46701740606",
                    "omar.haddad@farsta.example",
                    "en",
                    "Omar Haddad",
                ),
                member(
                    "+46701740607",
                    "greta.nilsson@farsta.example",
                    "sv-x-lattlast",
                    "Greta Nilsson",
                ),
            ],
        ),
        (
            CreateAudience {
                id: "socialtjanst-personal".into(),
                name: "Personal i socialtjänsten".into(),
                exercise: true,
            },
            vec![
                member(
                    "+46701740610",
                    "lena.berg@socialtjanst.example",
                    "sv",
                    "Lena Berg",
                ),
                member(
                    "+46701740611",
                    "johan.ek@socialtjanst.example",
                    "sv",
                    "Johan Ek",
                ),
            ],
        ),
    ]
}
