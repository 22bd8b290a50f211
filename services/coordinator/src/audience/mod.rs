//! Audiences: create, list, delete, and import members from CSV.
//!
//! An import arrives in parts (the gateway cuts the uploaded file at record
//! boundaries, so no message comes near NATS's size limit). Each part is parsed,
//! normalised (E.164 phone numbers, checked email addresses) and stored as one
//! chunk of a new generation; bad rows come back with their line numbers. The
//! commit then reads the chunks in file order, drops rows whose phone number or
//! email address came earlier, and makes the generation current with a
//! compare-and-set on the audience, so a reader never sees half an import and
//! two concurrent imports cannot mix. Parts are independent requests, so any
//! coordinator instance can take any of them.
//!
//! Nothing here logs a member's data; row errors name the line and column and
//! never repeat the value.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_proto::audience::{
    Audience, AudienceId, CreateAudience, ImportCommit, ImportPart, ImportReport,
    MAX_REPORTED_ERRORS, MEMBERS_PER_CHUNK, Member, PartReport, RowError, chunk_key,
};
use krisbud_proto::event::{AudienceCreated, AudienceDeleted, AudienceMembersImported};
use krisbud_proto::{Actor, CommandRequest, Envelope, Event, Problem, Role, subject};

use self::rows::{MAX_NAME, parse_part};
use crate::roles::require;

mod rows;

/// Who may read audiences: those who pick them and those who manage them.
const READERS: [Role; 2] = [Role::Admin, Role::DutyOfficer];

/// The audience store and its commands.
#[derive(Clone)]
pub struct Audiences {
    pub bus: Bus,
    /// KRISBUD_AUDIENCES: one key per audience.
    pub meta: kv::Store,
    /// KRISBUD_AUDIENCE_MEMBERS: the chunks.
    pub members: kv::Store,
}

fn internal(e: impl std::fmt::Display) -> Problem {
    tracing::error!(error = %e, "audience storage failed");
    Problem::unavailable("the audience store is unavailable; try again")
}

fn not_found(id: &str) -> Problem {
    Problem::not_found(format!("there is no audience `{id}`"))
}

impl Audiences {
    /// One audience, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Audience>, Problem> {
        Ok(self.entry(id).await?.map(|(audience, _)| audience))
    }

    async fn entry(&self, id: &str) -> Result<Option<(Audience, u64)>, Problem> {
        if !subject::is_token(id) {
            return Ok(None);
        }
        match self.meta.entry(id).await.map_err(internal)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let audience = serde_json::from_slice(&entry.value).map_err(internal)?;
                Ok(Some((audience, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// `GET /audiences`.
    pub async fn list(&self, request: CommandRequest<()>) -> Result<Vec<Audience>, Problem> {
        require(&request.actor, &READERS)?;
        let mut keys = self.meta.keys().await.map_err(internal)?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            if let Some(audience) = self.get(&key.map_err(internal)?).await? {
                out.push(audience);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// `GET /audiences/{id}`.
    pub async fn show(&self, request: CommandRequest<AudienceId>) -> Result<Audience, Problem> {
        require(&request.actor, &READERS)?;
        let id = &request.body.id;
        self.get(id).await?.ok_or_else(|| not_found(id))
    }

    /// `POST /audiences`: a new, empty audience. Creating one that exists with the
    /// same name and mark answers with it (a retried request); otherwise 409.
    pub async fn create(
        &self,
        request: CommandRequest<CreateAudience>,
    ) -> Result<Audience, Problem> {
        require(&request.actor, &[Role::Admin])?;
        let body = request.body;
        if !subject::is_token(&body.id) {
            return Err(Problem::invalid(
                "id",
                "an audience id is 1 to 64 letters, digits, `-` or `_`, e.g. farsta-boende",
            ));
        }
        let name = body.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME {
            return Err(Problem::invalid(
                "name",
                format!("give the audience a name of 1 to {MAX_NAME} characters"),
            ));
        }
        if name.chars().any(char::is_control) {
            return Err(Problem::invalid(
                "name",
                "the name contains a control character",
            ));
        }
        let audience = Audience {
            id: body.id.clone(),
            name: name.to_owned(),
            exercise: body.exercise,
            members: 0,
            with_phone: 0,
            with_email: 0,
            generation: 0,
            chunks: 0,
            updated_at: Some(Utc::now()),
            updated_by: Some(request.actor.user.clone()),
        };
        let value: Bytes = serde_json::to_vec(&audience).map_err(internal)?.into();
        if let Err(e) = self.meta.create(&body.id, value).await {
            if e.kind() != kv::CreateErrorKind::AlreadyExists {
                return Err(internal(e));
            }
            return match self.get(&body.id).await? {
                Some(existing)
                    if existing.name == audience.name && existing.exercise == audience.exercise =>
                {
                    Ok(existing)
                }
                _ => Err(Problem::conflict(format!(
                    "there already is an audience `{}`; pick another id or change that one",
                    body.id
                ))),
            };
        }
        let envelope = Envelope::new(
            request.actor,
            Event::AudienceCreated(AudienceCreated {
                audience_id: audience.id.clone(),
                name: audience.name.clone(),
                exercise: audience.exercise,
            }),
        );
        self.bus
            .append(&envelope, Expect::Any)
            .await
            .map_err(internal)?;
        tracing::info!(audience = %audience.id, "audience created");
        Ok(audience)
    }

    /// `DELETE /audiences/{id}`: the audience and every stored member.
    pub async fn delete(&self, request: CommandRequest<AudienceId>) -> Result<Audience, Problem> {
        require(&request.actor, &[Role::Admin])?;
        let id = &request.body.id;
        let audience = self.get(id).await?.ok_or_else(|| not_found(id))?;
        self.meta.purge(id).await.map_err(internal)?;
        self.purge_members(id, &[]).await?;
        let envelope = Envelope::new(
            request.actor,
            Event::AudienceDeleted(AudienceDeleted {
                audience_id: id.clone(),
            }),
        );
        self.bus
            .append(&envelope, Expect::Any)
            .await
            .map_err(internal)?;
        tracing::info!(audience = %id, "audience deleted");
        Ok(audience)
    }

    /// Removes the member chunks of `id`, except those of the generations in `keep`.
    async fn purge_members(&self, id: &str, keep: &[u32]) -> Result<(), Problem> {
        let prefix = format!("{id}.");
        let mut keys = self.members.keys().await.map_err(internal)?;
        let mut doomed = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(internal)?;
            let generation = key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('.').next())
                .and_then(|g| g.parse::<u32>().ok());
            if generation.is_some_and(|g| !keep.contains(&g)) {
                doomed.push(key);
            }
        }
        for key in doomed {
            self.members.purge(&key).await.map_err(internal)?;
        }
        Ok(())
    }

    /// Stores one part of an import as one chunk and reports its bad rows.
    pub async fn import_part(
        &self,
        request: CommandRequest<ImportPart>,
    ) -> Result<PartReport, Problem> {
        require(&request.actor, &[Role::Admin])?;
        let part = request.body;
        if self.get(&part.audience).await?.is_none() {
            return Err(not_found(&part.audience));
        }
        let (members, report) = parse_part(&part)?;
        let key = chunk_key(&part.audience, part.generation, part.part);
        self.members
            .put(&key, encode_chunk(&members).into())
            .await
            .map_err(internal)?;
        Ok(report)
    }

    /// Finishes an import: drops duplicates in file order, then makes the
    /// generation current.
    pub async fn import_commit(
        &self,
        request: CommandRequest<ImportCommit>,
    ) -> Result<ImportReport, Problem> {
        require(&request.actor, &[Role::Admin])?;
        let commit = request.body;
        let mut report = ImportReport {
            audience: commit.audience.clone(),
            rows: commit.rows,
            rejected: commit.rejected,
            generation: commit.generation,
            ..ImportReport::default()
        };
        let mut seen = Seen::default();
        for part in 0..commit.parts {
            let key = chunk_key(&commit.audience, commit.generation, part);
            let chunk = self
                .members
                .get(&key)
                .await
                .map_err(internal)?
                .ok_or_else(|| {
                    Problem::conflict(format!(
                        "part {part} of the import is missing; send the file again"
                    ))
                })?;
            let members = decode_chunk(&chunk).map_err(internal)?;
            let before = members.len();
            let mut kept: Vec<Member> = Vec::with_capacity(before);
            for member in members {
                match seen.first(&member) {
                    None => kept.push(member),
                    Some(repeated) => {
                        report.duplicates += 1;
                        if report.errors.len() < MAX_REPORTED_ERRORS
                            && let Some(line) = member.line
                        {
                            report.errors.push(repeated.error(line));
                        }
                    }
                }
            }
            report.imported += kept.len() as u64;
            report.with_phone += kept.iter().filter(|m| m.phone.is_some()).count() as u64;
            report.with_email += kept.iter().filter(|m| m.email.is_some()).count() as u64;
            if kept.len() != before {
                self.members
                    .put(&key, encode_chunk(&kept).into())
                    .await
                    .map_err(internal)?;
            }
        }
        self.make_current(&request.actor, &report, commit.parts)
            .await?;
        Ok(report)
    }

    /// Points the audience at the report's generation (compare-and-set), records
    /// the import and removes older generations but the one before, which a plan
    /// declared a moment ago may still be reading.
    async fn make_current(
        &self,
        actor: &Actor,
        report: &ImportReport,
        chunks: u32,
    ) -> Result<(), Problem> {
        let id = &report.audience;
        let previous = loop {
            let (mut audience, revision) = self.entry(id).await?.ok_or_else(|| not_found(id))?;
            let previous = audience.generation;
            audience.members = report.imported;
            audience.with_phone = report.with_phone;
            audience.with_email = report.with_email;
            audience.generation = report.generation;
            audience.chunks = chunks;
            audience.updated_at = Some(Utc::now());
            audience.updated_by = Some(actor.user.clone());
            let value: Bytes = serde_json::to_vec(&audience).map_err(internal)?.into();
            match self.meta.update(id, value, revision).await {
                Ok(_) => break previous,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(internal(e)),
            }
        };
        let envelope = Envelope::new(
            actor.clone(),
            Event::AudienceMembersImported(AudienceMembersImported {
                audience_id: id.clone(),
                generation: report.generation,
                rows: report.rows,
                members: report.imported,
                duplicates: report.duplicates,
                rejected: report.rejected,
                with_phone: report.with_phone,
                with_email: report.with_email,
            }),
        );
        self.bus
            .append(&envelope, Expect::Any)
            .await
            .map_err(internal)?;
        // Keep the current and the previous generation.
        self.purge_members(id, &[report.generation, previous])
            .await?;
        tracing::info!(
            audience = %id,
            members = report.imported,
            duplicates = report.duplicates,
            rejected = report.rejected,
            "audience members imported"
        );
        Ok(())
    }

    /// Replaces an audience's members with `members` (already normalised), creating
    /// the audience when needed: for seeding the demo set and for tests.
    pub async fn replace(
        &self,
        actor: &Actor,
        audience: CreateAudience,
        members: Vec<Member>,
    ) -> Result<ImportReport, Problem> {
        let mut admin = actor.clone();
        if !admin.has(Role::Admin) {
            admin.roles.push(Role::Admin);
        }
        let id = audience.id.clone();
        let existing = self.get(&id).await?;
        if existing.is_none() {
            self.create(CommandRequest {
                actor: admin.clone(),
                idempotency_key: None,
                body: audience,
            })
            .await?;
        }
        let generation = existing.map_or(1, |a| a.generation.wrapping_add(1).max(1));
        let chunks: Vec<&[Member]> = members.chunks(MEMBERS_PER_CHUNK).collect();
        for (n, chunk) in chunks.iter().enumerate() {
            self.members
                .put(
                    chunk_key(&id, generation, n as u32),
                    encode_chunk(chunk).into(),
                )
                .await
                .map_err(internal)?;
        }
        self.import_commit(CommandRequest {
            actor: admin,
            idempotency_key: None,
            body: ImportCommit {
                audience: id,
                generation,
                parts: chunks.len() as u32,
                rows: members.len() as u64,
                rejected: 0,
            },
        })
        .await
    }

    /// The members of one generation, chunk by chunk, in file order.
    pub fn chunks(
        &self,
        audience: &str,
        generation: u32,
    ) -> impl futures::Stream<Item = anyhow::Result<Vec<Member>>> + '_ {
        let audience = audience.to_owned();
        futures::stream::unfold(Some(0u32), move |next| {
            let audience = audience.clone();
            async move {
                let n = next?;
                match self.members.get(chunk_key(&audience, generation, n)).await {
                    Ok(Some(bytes)) => Some((decode_chunk(&bytes), Some(n + 1))),
                    Ok(None) => None,
                    Err(e) => Some((Err(e.into()), None)),
                }
            }
        })
    }
}

/// Addresses met so far in an import, by a 64-bit hash of the normalised form.
#[derive(Default)]
struct Seen {
    /// The line each address was first seen on (0 when the member has none).
    first_lines: HashMap<u64, u64>,
}

/// A member left out because an address of theirs came earlier.
struct Repeated {
    column: &'static str,
    first_line: u64,
}

impl Repeated {
    /// The report's entry for the duplicate on `line`, naming the line it repeats
    /// but never the address.
    fn error(&self, line: u64) -> RowError {
        let what = if self.column == "phone" {
            "phone number"
        } else {
            "email address"
        };
        RowError {
            line,
            column: Some(self.column.to_owned()),
            reason: if self.first_line > 0 {
                format!("left out: the same {what} as line {}", self.first_line)
            } else {
                format!("left out: the same {what} as an earlier row")
            },
        }
    }
}

impl Seen {
    /// `None` when neither of the member's addresses came before (and remembers
    /// them), else which address came before and on what line.
    fn first(&mut self, member: &Member) -> Option<Repeated> {
        let phone = member.phone.as_deref().map(|p| hash_of('p', p));
        let email = member.email.as_deref().map(|e| hash_of('e', e));
        for (hash, column) in [(phone, "phone"), (email, "email")] {
            if let Some(first_line) = hash.and_then(|h| self.first_lines.get(&h)) {
                return Some(Repeated {
                    column,
                    first_line: *first_line,
                });
            }
        }
        let line = member.line.unwrap_or(0);
        for hash in phone.into_iter().chain(email) {
            self.first_lines.insert(hash, line);
        }
        None
    }
}

fn hash_of(kind: char, address: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    kind.hash(&mut hasher);
    address.hash(&mut hasher);
    hasher.finish()
}

fn encode_chunk(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::with_capacity(members.len() * 64);
    for member in members {
        serde_json::to_writer(&mut out, member).expect("a member serializes");
        out.push(b'\n');
    }
    out
}

fn decode_chunk(bytes: &[u8]) -> anyhow::Result<Vec<Member>> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| Ok(serde_json::from_slice(line)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(header: &str, csv: &str, first_line: u64) -> ImportPart {
        ImportPart {
            audience: "farsta".into(),
            generation: 1,
            part: 0,
            header: header.into(),
            first_line,
            csv: csv.into(),
        }
    }

    #[test]
    fn rows_are_normalised_and_bad_ones_named_by_line() {
        let csv = "070-123 45 67,Anna@Farsta.Example,sv\n\
                   070-12,anna@farsta.example,sv\n\
                   ,not-an-address,en\n\
                   +46 70 765 43 21,,klingon-language-tag\n\
                   ,,sv\n\
                   0046701112233,,en,extra\n\
                   \"08-508 000 00\",info@stockholm.example,\n";
        let (members, report) = parse_part(&part("phone,email,language", csv, 2)).unwrap();
        assert_eq!(report.rows, 7);
        assert_eq!(report.accepted, 2);
        assert_eq!(report.rejected, 5);
        assert_eq!(members[0].phone.as_deref(), Some("+46701234567"));
        assert_eq!(members[0].email.as_deref(), Some("anna@farsta.example"));
        assert_eq!(members[1].phone.as_deref(), Some("+46850800000"));
        assert_eq!(members[1].language, None);
        let lines: Vec<(u64, Option<&str>)> = report
            .errors
            .iter()
            .map(|e| (e.line, e.column.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                (3, Some("phone")),
                (4, Some("email")),
                (5, Some("language")),
                (6, None),
                (7, None)
            ]
        );
        for error in &report.errors {
            assert!(!error.reason.contains("070"), "{}", error.reason);
            assert!(!error.reason.contains("not-an-address"), "{}", error.reason);
        }
    }

    #[test]
    fn line_numbers_count_quoted_newlines_and_the_part_offset() {
        let csv = "\"Anna\nLind\",0701234567\n\"Bo\",0701\n";
        let (_, report) = parse_part(&part("name,phone", csv, 100)).unwrap();
        let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
        // A line break inside a name is refused as a control character.
        assert_eq!(lines, [100, 102]);
    }

    #[test]
    fn headers_are_checked() {
        for (header, word) in [
            ("phone,fax", "unknown column `fax`"),
            ("name,language", "needs a `phone` or an `email`"),
            ("phone,telefon", "appears twice"),
            ("", "empty"),
        ] {
            let problem = parse_part(&part(header, "", 2)).unwrap_err();
            assert_eq!(problem.field.as_deref(), Some("csv"));
            assert!(
                problem.detail.contains(word),
                "{header}: {}",
                problem.detail
            );
        }
        assert!(parse_part(&part("Telefon;E-post", "", 2)).is_err());
        assert!(parse_part(&part("\u{feff}Telefon,E-post,Språk,Namn", "", 2)).is_ok());
    }

    #[test]
    fn a_broken_quote_refuses_the_file_naming_the_line() {
        let csv = "0701234567,sv\n\"0701234568,sv\n";
        let problem = parse_part(&part("phone,language", csv, 2)).unwrap_err();
        assert!(problem.detail.starts_with("line 3"), "{}", problem.detail);
    }

    #[test]
    fn duplicates_are_found_by_either_address() {
        let m = |phone: Option<&str>, email: Option<&str>, line: u64| Member {
            phone: phone.map(Into::into),
            email: email.map(Into::into),
            language: None,
            name: None,
            external_id: None,
            line: Some(line),
        };
        let mut seen = Seen::default();
        assert!(
            seen.first(&m(Some("+46701234567"), Some("a@x.se"), 2))
                .is_none()
        );
        let by_phone = seen.first(&m(Some("+46701234567"), None, 3)).unwrap();
        assert_eq!((by_phone.column, by_phone.first_line), ("phone", 2));
        let by_email = seen.first(&m(None, Some("a@x.se"), 4)).unwrap();
        assert_eq!((by_email.column, by_email.first_line), ("email", 2));
        assert_eq!(
            by_email.error(4).reason,
            "left out: the same email address as line 2"
        );
        assert!(
            seen.first(&m(Some("+46701234568"), Some("b@x.se"), 5))
                .is_none()
        );
    }

    #[test]
    fn chunks_round_trip() {
        let members = vec![Member {
            phone: Some("+46701234567".into()),
            email: None,
            language: Some("sv".into()),
            name: Some("Anna, \"Lind\"".into()),
            external_id: None,
            line: Some(7),
        }];
        assert_eq!(decode_chunk(&encode_chunk(&members)).unwrap(), members);
    }
}
