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

use async_nats::jetstream::kv;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use krisbud_kit::Bus;
use krisbud_kit::bus::Expect;
use krisbud_proto::audience::{
    Audience, AudienceId, CreateAudience, ImportCommit, ImportPart, ImportReport,
    MEMBERS_PER_CHUNK, Member, PartReport, chunk_key,
};
use krisbud_proto::event::AudienceDeleted;
use krisbud_proto::{Actor, CommandRequest, Envelope, Event, Problem, Role, subject};

use self::aggregate::Seen;
use self::rows::parse_part;
use crate::roles::require;

pub mod aggregate;
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
        let audience = aggregate::decide_create(&request.actor, &body, Utc::now())?;
        let value: Bytes = serde_json::to_vec(&audience).map_err(internal)?.into();
        if let Err(e) = self.meta.create(&body.id, value).await {
            if e.kind() != kv::CreateErrorKind::AlreadyExists {
                return Err(internal(e));
            }
            return aggregate::answer_existing(self.get(&body.id).await?, &audience);
        }
        let envelope = Envelope::new(request.actor, aggregate::created(&audience));
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
            let kept = aggregate::keep_first(&mut seen, members, &mut report);
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
            aggregate::make_current(&mut audience, report, chunks, actor, Utc::now());
            let value: Bytes = serde_json::to_vec(&audience).map_err(internal)?.into();
            match self.meta.update(id, value, revision).await {
                Ok(_) => break previous,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(internal(e)),
            }
        };
        let envelope = Envelope::new(actor.clone(), aggregate::imported(report));
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

fn encode_chunk(members: &[Member]) -> Vec<u8> {
    let mut out = Vec::with_capacity(members.len() * 64);
    for member in members {
        #[allow(clippy::expect_used, reason = "a member is strings only")]
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
