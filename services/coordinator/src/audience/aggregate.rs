//! The audience aggregate's pure core: what creating an audience and committing
//! an import decide, with no I/O. The audience's record in `KRISBUD_AUDIENCES`
//! is its state; the shell (`mod.rs`) reads it, writes it with compare-and-set
//! and appends the event these functions return.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use chrono::{DateTime, Utc};
use krisbud_proto::audience::{
    Audience, CreateAudience, ImportReport, MAX_REPORTED_ERRORS, Member, RowError,
};
use krisbud_proto::event::{AudienceCreated, AudienceMembersImported};
use krisbud_proto::{Actor, Event, Problem, subject};

use super::rows::MAX_NAME;

/// A new, empty audience from `body`, or the problem naming the field.
pub fn decide_create(
    actor: &Actor,
    body: &CreateAudience,
    now: DateTime<Utc>,
) -> Result<Audience, Problem> {
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
    Ok(Audience {
        id: body.id.clone(),
        name: name.to_owned(),
        exercise: body.exercise,
        members: 0,
        with_phone: 0,
        with_email: 0,
        generation: 0,
        chunks: 0,
        updated_at: Some(now),
        updated_by: Some(actor.user.clone()),
    })
}

/// The answer when `wanted`'s id is taken: the audience as it is when it has
/// the same name and mark (a retried request), else 409.
pub fn answer_existing(existing: Option<Audience>, wanted: &Audience) -> Result<Audience, Problem> {
    match existing {
        Some(existing) if existing.name == wanted.name && existing.exercise == wanted.exercise => {
            Ok(existing)
        }
        _ => Err(Problem::conflict(format!(
            "there already is an audience `{}`; pick another id or change that one",
            wanted.id
        ))),
    }
}

/// The event recording a new audience.
pub fn created(audience: &Audience) -> Event {
    Event::AudienceCreated(AudienceCreated {
        audience_id: audience.id.clone(),
        name: audience.name.clone(),
        exercise: audience.exercise,
    })
}

/// The members of one part of an import whose addresses did not come earlier
/// (in file order), counting them and the duplicates into `report`, each
/// duplicate named by its line and the line it repeats.
pub fn keep_first(seen: &mut Seen, members: Vec<Member>, report: &mut ImportReport) -> Vec<Member> {
    let mut kept: Vec<Member> = Vec::with_capacity(members.len());
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
    kept
}

/// The audience pointed at the import's generation with its counts.
pub fn make_current(
    audience: &mut Audience,
    report: &ImportReport,
    chunks: u32,
    actor: &Actor,
    now: DateTime<Utc>,
) {
    audience.members = report.imported;
    audience.with_phone = report.with_phone;
    audience.with_email = report.with_email;
    audience.generation = report.generation;
    audience.chunks = chunks;
    audience.updated_at = Some(now);
    audience.updated_by = Some(actor.user.clone());
}

/// The event recording an import: counts only, never a member.
pub fn imported(report: &ImportReport) -> Event {
    Event::AudienceMembersImported(AudienceMembersImported {
        audience_id: report.audience.clone(),
        generation: report.generation,
        rows: report.rows,
        members: report.imported,
        duplicates: report.duplicates,
        rejected: report.rejected,
        with_phone: report.with_phone,
        with_email: report.with_email,
    })
}

/// Addresses met so far in an import, by a 64-bit hash of the normalised form.
#[derive(Default)]
pub struct Seen {
    /// The line each address was first seen on (0 when the member has none).
    first_lines: HashMap<u64, u64>,
}

/// A member left out because an address of theirs came earlier.
pub struct Repeated {
    column: &'static str,
    first_line: u64,
}

impl Repeated {
    /// The report's entry for the duplicate on `line`, naming the line it repeats
    /// but never the address.
    pub fn error(&self, line: u64) -> RowError {
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
    pub fn first(&mut self, member: &Member) -> Option<Repeated> {
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

#[cfg(test)]
mod tests {
    use krisbud_proto::Role;

    use super::*;

    fn admin() -> Actor {
        Actor {
            user: "admin.olle".into(),
            roles: vec![Role::Admin],
            channels: Vec::new(),
        }
    }

    fn body(id: &str, name: &str) -> CreateAudience {
        CreateAudience {
            id: id.into(),
            name: name.into(),
            exercise: false,
        }
    }

    fn member(line: u64, phone: Option<&str>, email: Option<&str>) -> Member {
        Member {
            phone: phone.map(Into::into),
            email: email.map(Into::into),
            language: None,
            name: None,
            external_id: None,
            line: Some(line),
        }
    }

    #[test]
    fn a_new_audience_is_empty_and_a_bad_id_or_name_is_named() {
        let a = decide_create(&admin(), &body("farsta", "  Boende i Farsta "), Utc::now()).unwrap();
        assert_eq!(
            (a.name.as_str(), a.members, a.generation),
            ("Boende i Farsta", 0, 0)
        );
        assert_eq!(a.updated_by.as_deref(), Some("admin.olle"));
        let p = decide_create(&admin(), &body("far sta", "x"), Utc::now()).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("id"));
        let p = decide_create(&admin(), &body("farsta", " "), Utc::now()).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("name"));
        let p = decide_create(&admin(), &body("farsta", "a\u{7}b"), Utc::now()).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("name"));
    }

    #[test]
    fn creating_again_answers_with_the_same_audience_or_409() {
        let a = decide_create(&admin(), &body("farsta", "Farsta"), Utc::now()).unwrap();
        assert_eq!(answer_existing(Some(a.clone()), &a).unwrap(), a);
        let other = Audience {
            name: "Vällingby".into(),
            ..a.clone()
        };
        assert_eq!(answer_existing(Some(other), &a).unwrap_err().status, 409);
    }

    #[test]
    fn an_import_keeps_the_first_of_each_address_and_names_the_repeats() {
        let mut seen = Seen::default();
        let mut report = ImportReport::default();
        let first = vec![
            member(2, Some("+46701740620"), Some("karin@farsta.example")),
            member(3, Some("+46701740621"), None),
        ];
        let second = vec![
            member(4, Some("+46701740620"), None),
            member(5, None, Some("karin@farsta.example")),
            member(6, None, Some("bo@farsta.example")),
        ];
        assert_eq!(keep_first(&mut seen, first, &mut report).len(), 2);
        let kept = keep_first(&mut seen, second, &mut report);
        assert_eq!(kept.iter().map(|m| m.line).collect::<Vec<_>>(), [Some(6)]);
        assert_eq!((report.imported, report.duplicates), (3, 2));
        assert_eq!((report.with_phone, report.with_email), (2, 2));
        let reasons: Vec<&str> = report.errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "left out: the same phone number as line 2",
                "left out: the same email address as line 2"
            ]
        );
        assert!(
            !format!("{report:?}").contains("karin@"),
            "no address in the report"
        );
    }

    #[test]
    fn making_an_import_current_sets_the_generation_and_counts() {
        let mut a = decide_create(&admin(), &body("farsta", "Farsta"), Utc::now()).unwrap();
        let report = ImportReport {
            audience: "farsta".into(),
            generation: 2,
            rows: 4,
            imported: 3,
            with_phone: 2,
            with_email: 1,
            ..ImportReport::default()
        };
        make_current(&mut a, &report, 1, &admin(), Utc::now());
        assert_eq!((a.generation, a.members, a.chunks), (2, 3, 1));
        let Event::AudienceMembersImported(e) = imported(&report) else {
            panic!("an import event")
        };
        assert_eq!((e.members, e.rows), (3, 4));
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
}
