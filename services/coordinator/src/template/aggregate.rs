//! Template versions and their lifecycle: the aggregate folded from the events on
//! `krisbud.evt.template.<id>`, the decision behind each lifecycle step (roles, four
//! eyes, states), and the checks a version passes to be drafted and to be approved.
//!
//! Everything here is pure: [`crate::catalog`] reads the events and appends what
//! these functions decide, so the rules hold however a step arrives (API, CLI
//! import or demo seeding).

use std::collections::BTreeMap;

use krisbud_proto::command::{ChangeTemplateState, TemplateAction};
use krisbud_proto::event::{
    TemplateApproved, TemplateDrafted, TemplateRejected, TemplateRetired, TemplateSubmitted,
};
use krisbud_proto::language;
use krisbud_proto::template::{
    LanguageTemplate, LifecycleStep, SmsWorstCase, TemplateRecord, TemplateState, TemplateVersion,
    VariableSpec, VariableType, VersionInfo,
};
use krisbud_proto::{Actor, AlertStatus, Envelope, Event, Problem, Role, subject};
use sha2::{Digest, Sha256};

use crate::render::ClosingKind;
use crate::roles::require;
use crate::{gsm, render};

/// The demo templates compiled into the binary; `krisbud up --demo` seeds them as
/// approved versions through the lifecycle events.
pub const DEMO: [(&str, &str); 4] = [
    (
        "vattenlacka.toml",
        include_str!("../../templates/vattenlacka.toml"),
    ),
    (
        "it-storning.toml",
        include_str!("../../templates/it-storning.toml"),
    ),
    (
        "varmebolja.toml",
        include_str!("../../templates/varmebolja.toml"),
    ),
    (
        "evakuering-aldreboende.toml",
        include_str!("../../templates/evakuering-aldreboende.toml"),
    ),
];

/// Who the demo templates are written by and approved by: two different people,
/// so four eyes holds for them too.
pub const DEMO_AUTHOR: &str = "demo.redaktor";
/// See [`DEMO_AUTHOR`].
pub const DEMO_APPROVER: &str = "demo.granskare";

/// Most characters of a rejection or retirement reason.
const MAX_REASON: usize = 1_000;
/// Most SMS segments a template may allow (F24 stops at ten as well).
const MAX_SEGMENTS_ALLOWED: u32 = 10;
/// Longest value a variable may be declared to take.
const MAX_VARIABLE_LENGTH: usize = 500;

/// Parses one template file; errors name the file and the line.
pub fn parse(name: &str, text: &str) -> anyhow::Result<TemplateVersion> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("template file {name}: {e}"))
}

/// One template as its events left it.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    pub id: String,
    /// Stream sequence of the last event of the template (0: none yet).
    pub last_sequence: u64,
    pub versions: BTreeMap<u32, VersionState>,
}

/// One version: its wording with its current state, and every step so far.
#[derive(Debug, Clone)]
pub struct VersionState {
    pub template: TemplateVersion,
    pub history: Vec<LifecycleStep>,
}

impl VersionState {
    fn info(&self) -> VersionInfo {
        VersionInfo {
            version: self.template.version,
            state: self.template.state,
            author: self.template.author.clone(),
            approved_by: self.template.approved_by.clone(),
            history: self.history.clone(),
        }
    }
}

impl Aggregate {
    /// A template without events.
    pub fn new(id: &str) -> Aggregate {
        Aggregate {
            id: id.to_owned(),
            ..Aggregate::default()
        }
    }

    /// Folds in one event stored at `sequence`. Steps are taken as recorded: the
    /// rules were checked before the event was appended.
    pub fn apply(&mut self, envelope: &Envelope, sequence: u64) {
        self.last_sequence = self.last_sequence.max(sequence);
        let step = |state, reason: Option<&str>| LifecycleStep {
            state,
            by: envelope.actor.user.clone(),
            at: envelope.occurred_at,
            reason: reason.map(str::to_owned),
        };
        let (version, state, reason) = match &envelope.event {
            Event::TemplateDrafted(e) => {
                let mut template = e.template.clone();
                template.state = TemplateState::Draft;
                template.approved_by = None;
                self.versions
                    .entry(template.version)
                    .or_insert(VersionState {
                        template,
                        history: vec![step(TemplateState::Draft, None)],
                    });
                return;
            }
            Event::TemplateSubmitted(e) => (e.version, TemplateState::Submitted, None),
            Event::TemplateApproved(e) => (e.version, TemplateState::Approved, None),
            Event::TemplateRejected(e) => (e.version, TemplateState::Rejected, Some(&*e.reason)),
            Event::TemplateRetired(e) => (e.version, TemplateState::Retired, e.reason.as_deref()),
            _ => return,
        };
        let Some(v) = self.versions.get_mut(&version) else {
            tracing::warn!(template = %self.id, version, "a lifecycle step for a version that was never drafted");
            return;
        };
        v.template.state = state;
        if state == TemplateState::Approved {
            v.template.approved_by = Some(envelope.actor.user.clone());
        }
        v.history.push(step(state, reason));
    }

    /// The newest version number (0: none yet).
    pub fn newest(&self) -> u32 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// The read model of the template.
    pub fn record(&self) -> TemplateRecord {
        TemplateRecord {
            id: self.id.clone(),
            name: self
                .versions
                .values()
                .next_back()
                .map(|v| v.template.name.clone())
                .unwrap_or_default(),
            last_sequence: self.last_sequence,
            versions: self.versions.values().map(VersionState::info).collect(),
        }
    }

    fn version(&self, version: u32) -> Result<&VersionState, Problem> {
        self.versions.get(&version).ok_or_else(|| {
            Problem::not_found(format!("template `{}` has no version {version}", self.id))
        })
    }
}

/// What a draft request comes to.
#[derive(Debug)]
pub enum DraftDecision {
    /// A live version already has this wording: answer with it, append nothing.
    Existing(TemplateVersion),
    /// Append this `TemplateDrafted`.
    Append(Box<Envelope>),
}

/// Decides a draft: the actor must be a template editor, the wording must be
/// well-formed, and the new version is one past the newest. An approved version is
/// never touched: new wording always becomes a new version.
pub fn decide_draft(
    aggregate: &Aggregate,
    actor: &Actor,
    mut draft: TemplateVersion,
    new_template: bool,
) -> Result<DraftDecision, Problem> {
    require(actor, &[Role::TemplateEditor])?;
    draft.id = aggregate.id.clone();
    draft.languages = normalise_languages(std::mem::take(&mut draft.languages))?;
    check_draft(&draft)?;
    let id = &aggregate.id;
    if new_template && !aggregate.versions.is_empty() {
        return Err(Problem::conflict(format!(
            "template `{id}` already exists (newest version {}); draft a new version with \
             POST /api/v1/templates/{id}/versions",
            aggregate.newest()
        )));
    }
    if !new_template && aggregate.versions.is_empty() {
        return Err(Problem::not_found(format!(
            "there is no template `{id}`; start it with POST /api/v1/templates"
        )));
    }
    let live = |s: TemplateState| {
        matches!(
            s,
            TemplateState::Draft | TemplateState::Submitted | TemplateState::Approved
        )
    };
    if let Some(existing) = aggregate
        .versions
        .values()
        .rev()
        .find(|v| live(v.template.state) && v.template.same_wording(&draft))
    {
        return Ok(DraftDecision::Existing(existing.template.clone()));
    }
    let version = aggregate.newest() + 1;
    draft.version = version;
    draft.state = TemplateState::Draft;
    draft.author = actor.user.clone();
    draft.approved_by = None;
    let fingerprint = short_hash(&format!("{}\0{}", actor.user, draft.wording_json()));
    let envelope = Envelope::with_id(
        format!("tpl.{id}.v{version}.drafted.{fingerprint}"),
        actor.clone(),
        Event::TemplateDrafted(TemplateDrafted { template: draft }),
    );
    Ok(DraftDecision::Append(Box::new(envelope)))
}

/// Decides a lifecycle step: roles, the state it starts from, four eyes, and the
/// approval checks for submit and approve.
pub fn decide_step(
    aggregate: &Aggregate,
    actor: &Actor,
    command: &ChangeTemplateState,
) -> Result<Envelope, Problem> {
    let roles: &[Role] = match command.action {
        TemplateAction::Submit => &[Role::TemplateEditor],
        TemplateAction::Approve | TemplateAction::Reject => &[Role::TemplateApprover],
        TemplateAction::Retire => &[Role::TemplateApprover, Role::Admin],
    };
    require(actor, roles)?;
    let id = &aggregate.id;
    let version = command.version;
    let current = aggregate.version(version)?;
    let template = &current.template;
    let from = match command.action {
        TemplateAction::Submit => TemplateState::Draft,
        TemplateAction::Approve | TemplateAction::Reject => TemplateState::Submitted,
        TemplateAction::Retire => TemplateState::Approved,
    };
    if template.state != from {
        let hint = if template.state == TemplateState::Approved {
            "; an approved version never changes: draft a new version instead"
        } else {
            ""
        };
        return Err(Problem::conflict(format!(
            "template `{id}` version {version} is {}; only a {from} version can be {}{hint}",
            template.state,
            match command.action {
                TemplateAction::Submit => "submitted",
                TemplateAction::Approve => "approved",
                TemplateAction::Reject => "rejected",
                TemplateAction::Retire => "retired",
            },
        )));
    }
    let four_eyes = matches!(
        command.action,
        TemplateAction::Approve | TemplateAction::Reject
    );
    if four_eyes && template.author == actor.user {
        return Err(Problem::forbidden(format!(
            "four eyes: {} wrote version {version} of `{id}` and cannot {} it; \
             another template approver must",
            actor.user,
            command.action.as_str()
        )));
    }
    // A draft is its author's to hand in: another editor drafts their own.
    if command.action == TemplateAction::Submit && template.author != actor.user {
        return Err(Problem::forbidden(format!(
            "{} wrote version {version} of `{id}`; only the author submits a draft \
             (draft a new version to propose other wording)",
            template.author
        )));
    }
    let reason = checked_reason(command)?;
    if matches!(
        command.action,
        TemplateAction::Submit | TemplateAction::Approve
    ) {
        check_approvable(template)?;
    }
    let event = match command.action {
        TemplateAction::Submit => Event::TemplateSubmitted(TemplateSubmitted {
            template_id: id.clone(),
            version,
        }),
        TemplateAction::Approve => Event::TemplateApproved(TemplateApproved {
            template_id: id.clone(),
            version,
        }),
        TemplateAction::Reject => Event::TemplateRejected(TemplateRejected {
            template_id: id.clone(),
            version,
            reason: reason.unwrap_or_default(),
        }),
        TemplateAction::Retire => Event::TemplateRetired(TemplateRetired {
            template_id: id.clone(),
            version,
            reason,
        }),
    };
    Ok(Envelope::with_id(
        format!(
            "tpl.{id}.v{version}.{}.{}",
            command.action.as_str(),
            short_hash(&actor.user)
        ),
        actor.clone(),
        event,
    ))
}

/// The reason of a step: required to reject, optional to retire, one to a thousand
/// characters, no control characters but line breaks.
fn checked_reason(command: &ChangeTemplateState) -> Result<Option<String>, Problem> {
    let reason = command
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    match (command.action, reason) {
        (TemplateAction::Reject, None) => {
            return Err(Problem::invalid(
                "reason",
                "a rejection needs a reason the author can act on",
            ));
        }
        (TemplateAction::Submit | TemplateAction::Approve, _) | (_, None) => return Ok(None),
        _ => {}
    }
    let reason = reason.unwrap_or_default();
    krisbud_kit::text::check_free_text("reason", reason, MAX_REASON)?;
    Ok(Some(reason.to_owned()))
}

/// The first 12 hex digits of a SHA-256, for message ids.
fn short_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()).get(..6).unwrap_or_default())
}

/// The wording keyed by canonical language tags (`EN` becomes `en`); a tag that
/// is none, or two tags that are one, are refused naming the tag.
fn normalise_languages(
    languages: BTreeMap<String, LanguageTemplate>,
) -> Result<BTreeMap<String, LanguageTemplate>, Problem> {
    let mut out = BTreeMap::new();
    for (tag, wording) in languages {
        let canonical = language::normalise(&tag).map_err(|why| {
            Problem::invalid(format!("languages.{tag}"), format!("`{tag}` is {why}"))
        })?;
        if out.contains_key(&canonical) {
            return Err(Problem::invalid(
                format!("languages.{canonical}"),
                format!("the language `{canonical}` is given twice (as `{tag}` too)"),
            ));
        }
        out.insert(canonical, wording);
    }
    Ok(out)
}

/// Checks that a draft is well-formed: an id that is a subject token, a name,
/// sensible limits, variables that can be filled in, BCP 47 language tags and
/// template text that minijinja can parse. Errors name the field.
pub fn check_draft(t: &TemplateVersion) -> Result<(), Problem> {
    if !subject::is_token(&t.id) {
        return Err(Problem::invalid(
            "id",
            format!(
                "`{}` cannot be a template id: use 1 to 64 letters, digits, - and _",
                t.id
            ),
        ));
    }
    text_field("name", &t.name, 200)?;
    if !(1..=MAX_SEGMENTS_ALLOWED).contains(&t.max_sms_segments) {
        return Err(Problem::invalid(
            "max_sms_segments",
            format!("max_sms_segments must be 1 to {MAX_SEGMENTS_ALLOWED}"),
        ));
    }
    text_field("cap.event", &t.cap.event, 100)?;
    let mut seen = std::collections::BTreeSet::new();
    for (i, v) in t.variables.iter().enumerate() {
        check_variable(i, v)?;
        if !seen.insert(&v.name) {
            return Err(Problem::invalid(
                format!("variables[{i}].name"),
                format!("the variable `{}` is defined twice", v.name),
            ));
        }
    }
    if t.languages.is_empty() {
        return Err(Problem::invalid(
            "languages",
            "a template needs at least one language (sv)",
        ));
    }
    for (tag, wording) in &t.languages {
        if let Err(why) = language::normalise(tag) {
            return Err(Problem::invalid(
                format!("languages.{tag}"),
                format!("`{tag}` is {why}"),
            ));
        }
        if !language::is_normalised(tag) {
            return Err(Problem::invalid(
                format!("languages.{tag}"),
                format!(
                    "`{tag}` is written `{}`",
                    language::normalise(tag).unwrap_or_default()
                ),
            ));
        }
        for (part, source) in render::sources(wording) {
            if let Err(e) = render::parse_source(source) {
                return Err(Problem::invalid(
                    format!("languages.{tag}.{part}"),
                    format!("languages.{tag}.{part} cannot be parsed: {e}"),
                ));
            }
        }
    }
    Ok(())
}

fn text_field(field: &str, value: &str, max: usize) -> Result<(), Problem> {
    if value.trim().is_empty() {
        return Err(Problem::invalid(field, format!("{field} is empty")));
    }
    if value.chars().count() > max {
        return Err(Problem::invalid(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            format!("{field} contains a control character"),
        ));
    }
    Ok(())
}

fn check_variable(i: usize, v: &VariableSpec) -> Result<(), Problem> {
    let field = |name: &str| format!("variables[{i}].{name}");
    let good_name = v.name.len() <= 40
        && v.name.starts_with(|c: char| c.is_ascii_lowercase())
        && v.name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !good_name || v.name == "parts" {
        return Err(Problem::invalid(
            field("name"),
            format!(
                "`{}` cannot be a variable name: use lower-case letters, digits and _ \
                 (starting with a letter, not `parts`)",
                v.name
            ),
        ));
    }
    text_field(&field("label"), &v.label, 200)?;
    let least = match v.kind {
        VariableType::Datetime => 16,
        VariableType::Url => 12,
        VariableType::Phone => 6,
        VariableType::Text | VariableType::Enum => 1,
    };
    if v.max_length < least || v.max_length > MAX_VARIABLE_LENGTH {
        return Err(Problem::invalid(
            field("max_length"),
            format!(
                "max_length of `{}` must be {least} to {MAX_VARIABLE_LENGTH}",
                v.name
            ),
        ));
    }
    match v.kind {
        VariableType::Enum if v.allowed.is_empty() => Err(Problem::invalid(
            field("allowed"),
            format!("the enum variable `{}` needs its allowed values", v.name),
        )),
        VariableType::Enum => match v
            .allowed
            .iter()
            .find(|a| a.trim().is_empty() || a.chars().count() > v.max_length)
        {
            Some(a) => Err(Problem::invalid(
                field("allowed"),
                format!(
                    "the allowed value {a:?} of `{}` is empty or longer than its max_length",
                    v.name
                ),
            )),
            None => Ok(()),
        },
        _ if !v.allowed.is_empty() => Err(Problem::invalid(
            field("allowed"),
            format!(
                "allowed values are only for enum variables, and `{}` is not one",
                v.name
            ),
        )),
        _ => Ok(()),
    }
}

/// What stands between a version and approval, and what its SMS costs at worst.
#[derive(Debug, Clone, Default)]
pub struct Assessment {
    pub worst_case_sms: Vec<SmsWorstCase>,
    /// Why approval would be refused; empty when it can be approved.
    pub problems: Vec<String>,
}

/// Assesses a version the way approval does: Swedish present, the five questions
/// answered in every language, every channel renders with every variable at its
/// maximum length, the banner links to an https address, and every language's SMS
/// stays within `max_sms_segments` at its worst.
pub fn assess(t: &TemplateVersion) -> Assessment {
    let mut out = Assessment::default();
    if !t.languages.contains_key("sv") {
        out.problems
            .push("a Swedish (sv) wording is required".to_owned());
    }
    for (tag, wording) in &t.languages {
        let parts = &wording.parts;
        for (name, text) in [
            ("what_happened", &parts.what_happened),
            ("affects_me", &parts.affects_me),
            ("city_actions", &parts.city_actions),
            ("what_to_do", &parts.what_to_do),
            ("learn_more", &parts.learn_more),
        ] {
            if text.trim().is_empty() {
                out.problems.push(format!(
                    "languages.{tag}.parts.{name} is empty: every message answers the five crisis questions"
                ));
            }
        }
        for kind in [ClosingKind::AllClear, ClosingKind::Cancel] {
            let when = match kind {
                ClosingKind::AllClear => "the danger is over",
                ClosingKind::Cancel => "a message went out in error",
            };
            match kind.of(wording) {
                None => out.problems.push(format!(
                    "languages.{tag}.{} is missing: write what this language says when {when}",
                    kind.key()
                )),
                Some(texts) => {
                    for (field, text) in [
                        ("sms", &texts.sms),
                        ("email_subject", &texts.email_subject),
                        ("email_text", &texts.email_text),
                        ("banner_headline", &texts.banner_headline),
                        ("banner_body", &texts.banner_body),
                        ("intranet_title", &texts.intranet_title),
                        ("intranet_body", &texts.intranet_body),
                    ] {
                        if text.trim().is_empty() {
                            out.problems
                                .push(format!("languages.{tag}.{}.{field} is empty", kind.key()));
                        }
                    }
                }
            }
        }
    }
    let worst = worst_case_values(&t.variables);
    for kind in [ClosingKind::AllClear, ClosingKind::Cancel] {
        match render::render_closing(t, kind, &worst, AlertStatus::Exercise) {
            Err(p) => out.problems.push(format!(
                "the {} texts cannot be rendered with every variable at its maximum length: {}",
                kind.key(),
                p.detail
            )),
            Ok(Some(rendered)) => {
                for language in rendered {
                    if language.sms.segments > t.max_sms_segments {
                        out.problems.push(format!(
                            "the {} {} SMS can take {} segments with every variable at its \
                             maximum length; at most {} are allowed",
                            language.language,
                            kind.key(),
                            language.sms.segments,
                            t.max_sms_segments
                        ));
                    }
                }
            }
            Ok(None) => {}
        }
    }
    // An exercise carries the longest marker ("EXERCISE: "), so it is the worst case.
    match render::render(t, &worst, AlertStatus::Exercise) {
        Err(p) => out.problems.push(format!(
            "it cannot be rendered with every variable at its maximum length: {}",
            p.detail
        )),
        Ok(rendered) => {
            for language in rendered {
                if !language.banner.link_url.starts_with("https://") {
                    out.problems.push(format!(
                        "the {} banner link must be an https:// address, not {:?}",
                        language.language, language.banner.link_url
                    ));
                }
                if language.sms.segments > t.max_sms_segments {
                    out.problems.push(format!(
                        "the {} SMS can take {} segments with every variable at its maximum \
                         length; at most {} are allowed",
                        language.language, language.sms.segments, t.max_sms_segments
                    ));
                }
                out.worst_case_sms.push(SmsWorstCase {
                    language: language.language,
                    encoding: language.sms.encoding,
                    segments: language.sms.segments,
                    limit: t.max_sms_segments,
                });
            }
        }
    }
    out
}

/// Refuses approval (and submission) of a version that [`assess`] finds wanting,
/// naming every problem.
pub fn check_approvable(t: &TemplateVersion) -> Result<(), Problem> {
    let problems = assess(t).problems;
    if problems.is_empty() {
        return Ok(());
    }
    Err(Problem::new(
        422,
        "template cannot be approved",
        format!(
            "template `{}` version {} cannot be approved: {}",
            t.id,
            t.version,
            problems.join("; ")
        ),
    ))
}

/// Values at their maximum length, made of the characters that cost the most in
/// GSM-7 (extension characters take two septets).
pub fn worst_case_values(specs: &[VariableSpec]) -> BTreeMap<String, String> {
    specs
        .iter()
        .map(|s| {
            let n = s.max_length;
            let value = match s.kind {
                VariableType::Enum => s
                    .allowed
                    .iter()
                    .max_by_key(|a| gsm::cost(a).units)
                    .cloned()
                    .unwrap_or_default(),
                VariableType::Datetime if n >= 25 => "2026-11-26T14:00:00+01:00".to_owned(),
                VariableType::Datetime => "2026-11-26 14:00".to_owned(),
                VariableType::Url => format!("https://{}", "~".repeat(n.saturating_sub(8))),
                VariableType::Phone => {
                    let digits = "+467012345678901"
                        .chars()
                        .take(n.min(16))
                        .collect::<String>();
                    format!("{digits}{}", "-".repeat(n.saturating_sub(16)))
                }
                VariableType::Text => "€".repeat(n),
            };
            (s.name.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use krisbud_proto::envelope::Actor;

    use super::*;

    fn demo(i: usize) -> TemplateVersion {
        let (name, text) = DEMO[i];
        let mut t = parse(name, text).unwrap();
        t.version = 1;
        t
    }

    fn actor(user: &str, role: Role) -> Actor {
        Actor {
            user: user.into(),
            roles: vec![role],
            channels: Vec::new(),
        }
    }

    fn anna() -> Actor {
        actor("redaktor.anna", Role::TemplateEditor)
    }

    fn erik() -> Actor {
        actor("granskare.erik", Role::TemplateApprover)
    }

    fn step(action: TemplateAction, reason: Option<&str>) -> ChangeTemplateState {
        ChangeTemplateState {
            template: "vattenlacka".into(),
            version: 1,
            action,
            reason: reason.map(Into::into),
        }
    }

    /// Applies what a decision appended, as the stream would.
    fn take(aggregate: &mut Aggregate, envelope: &Envelope) {
        let next = aggregate.last_sequence + 1;
        aggregate.apply(envelope, next);
    }

    fn drafted(aggregate: &mut Aggregate, by: &Actor, t: TemplateVersion, new: bool) -> u32 {
        match decide_draft(aggregate, by, t, new).unwrap() {
            DraftDecision::Append(e) => {
                take(aggregate, &e);
                aggregate.newest()
            }
            DraftDecision::Existing(t) => panic!("expected a new version, got {}", t.version),
        }
    }

    #[test]
    fn every_demo_template_parses_is_well_formed_and_can_be_approved() {
        for (i, (name, _)) in DEMO.iter().enumerate() {
            let t = demo(i);
            check_draft(&t).unwrap_or_else(|p| panic!("{name}: {}", p.detail));
            let a = assess(&t);
            assert!(a.problems.is_empty(), "{name}: {:?}", a.problems);
            for w in &a.worst_case_sms {
                assert!(w.segments <= t.max_sms_segments, "{name}: {w:?}");
            }
            assert!(t.languages.contains_key("en"), "{name} has English");
            assert_eq!(t.author, DEMO_AUTHOR, "{name}");
            assert_eq!(t.approved_by.as_deref(), Some(DEMO_APPROVER), "{name}");
        }
        let lattlast = (0..DEMO.len())
            .filter(|i| demo(*i).languages.contains_key("sv-x-lattlast"))
            .count();
        assert!(lattlast >= 2, "lättläst in at least two demo templates");
    }

    #[test]
    fn the_lifecycle_runs_with_four_eyes() {
        let mut agg = Aggregate::new("vattenlacka");
        let v = drafted(&mut agg, &anna(), demo(0), true);
        assert_eq!(v, 1);
        assert_eq!(agg.versions[&1].template.author, "redaktor.anna");
        assert_eq!(agg.versions[&1].template.state, TemplateState::Draft);

        // An approver cannot draft or submit; an editor cannot approve.
        let p = decide_step(&agg, &erik(), &step(TemplateAction::Submit, None)).unwrap_err();
        assert_eq!(p.status, 403);
        // Another editor cannot submit Anna's draft.
        let bo = Actor {
            user: "redaktor.bo".into(),
            roles: vec![Role::TemplateEditor],
            channels: Vec::new(),
        };
        let p = decide_step(&agg, &bo, &step(TemplateAction::Submit, None)).unwrap_err();
        assert_eq!(p.status, 403);
        assert!(p.detail.contains("only the author submits"), "{}", p.detail);
        let e = decide_step(&agg, &anna(), &step(TemplateAction::Submit, None)).unwrap();
        take(&mut agg, &e);
        let p = decide_step(&agg, &anna(), &step(TemplateAction::Approve, None)).unwrap_err();
        assert_eq!(p.status, 403, "{}", p.detail);

        // The author holding both roles still cannot approve their own version.
        let both = Actor {
            user: "redaktor.anna".into(),
            roles: vec![Role::TemplateEditor, Role::TemplateApprover],
            channels: Vec::new(),
        };
        let p = decide_step(&agg, &both, &step(TemplateAction::Approve, None)).unwrap_err();
        assert_eq!(p.status, 403);
        assert!(p.detail.contains("four eyes"), "{}", p.detail);
        let p = decide_step(&agg, &both, &step(TemplateAction::Reject, Some("nej"))).unwrap_err();
        assert!(p.detail.contains("four eyes"), "{}", p.detail);

        let e = decide_step(&agg, &erik(), &step(TemplateAction::Approve, None)).unwrap();
        take(&mut agg, &e);
        let t = &agg.versions[&1].template;
        assert_eq!(t.state, TemplateState::Approved);
        assert_eq!(t.approved_by.as_deref(), Some("granskare.erik"));
        let history: Vec<(TemplateState, &str)> = agg.versions[&1]
            .history
            .iter()
            .map(|s| (s.state, s.by.as_str()))
            .collect();
        assert_eq!(
            history,
            [
                (TemplateState::Draft, "redaktor.anna"),
                (TemplateState::Submitted, "redaktor.anna"),
                (TemplateState::Approved, "granskare.erik"),
            ]
        );

        // Approved is final but for retirement, by an approver or an admin.
        for action in [TemplateAction::Submit, TemplateAction::Approve] {
            let who = if action == TemplateAction::Submit {
                anna()
            } else {
                erik()
            };
            let p = decide_step(&agg, &who, &step(action, None)).unwrap_err();
            assert_eq!(p.status, 409, "{action:?}");
            assert!(p.detail.contains("never changes"), "{}", p.detail);
        }
        let p = decide_step(&agg, &anna(), &step(TemplateAction::Retire, None)).unwrap_err();
        assert_eq!(p.status, 403);
        let admin = actor("admin.olle", Role::Admin);
        let e = decide_step(&agg, &admin, &step(TemplateAction::Retire, Some("ersatt"))).unwrap();
        take(&mut agg, &e);
        assert_eq!(agg.versions[&1].template.state, TemplateState::Retired);
        assert_eq!(
            agg.versions[&1].history.last().unwrap().reason.as_deref(),
            Some("ersatt")
        );
    }

    #[test]
    fn new_wording_for_an_approved_version_becomes_the_next_version() {
        let mut agg = Aggregate::new("vattenlacka");
        drafted(&mut agg, &anna(), demo(0), true);
        for (who, action) in [
            (anna(), TemplateAction::Submit),
            (erik(), TemplateAction::Approve),
        ] {
            let e = decide_step(&agg, &who, &step(action, None)).unwrap();
            take(&mut agg, &e);
        }
        let approved = agg.versions[&1].template.clone();

        // The same wording again is the approved version, not a new one.
        match decide_draft(&agg, &anna(), demo(0), false).unwrap() {
            DraftDecision::Existing(t) => assert_eq!(t, approved),
            DraftDecision::Append(_) => panic!("same wording must not make a version"),
        }
        // A draft that claims to be version 1 with new wording makes version 2.
        let mut changed = demo(0);
        changed.version = 1;
        changed.state = TemplateState::Approved;
        changed.name = "Vattenläcka (ny lydelse)".into();
        let v = drafted(&mut agg, &anna(), changed, false);
        assert_eq!(v, 2);
        assert_eq!(agg.versions[&2].template.state, TemplateState::Draft);
        assert_eq!(
            agg.versions[&1].template, approved,
            "version 1 is untouched"
        );

        // Starting the template again is refused; a version of an unknown one too.
        let p = decide_draft(&agg, &anna(), demo(0), true).unwrap_err();
        assert_eq!(p.status, 409);
        let p = decide_draft(&Aggregate::new("ny"), &anna(), demo(0), false).unwrap_err();
        assert_eq!(p.status, 404);
    }

    #[test]
    fn a_rejection_needs_a_reason() {
        let mut agg = Aggregate::new("vattenlacka");
        drafted(&mut agg, &anna(), demo(0), true);
        let e = decide_step(&agg, &anna(), &step(TemplateAction::Submit, None)).unwrap();
        take(&mut agg, &e);
        let p = decide_step(&agg, &erik(), &step(TemplateAction::Reject, Some("  "))).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("reason"));
        let e = decide_step(
            &agg,
            &erik(),
            &step(TemplateAction::Reject, Some("Ange telefonnummer")),
        )
        .unwrap();
        take(&mut agg, &e);
        assert_eq!(agg.versions[&1].template.state, TemplateState::Rejected);
        let p = decide_step(&agg, &erik(), &step(TemplateAction::Approve, None)).unwrap_err();
        assert_eq!(p.status, 409);
    }

    #[test]
    fn a_template_that_can_overflow_is_refused_at_submission_and_approval() {
        let mut t = demo(0);
        t.max_sms_segments = 1;
        let a = assess(&t);
        assert!(
            a.problems
                .iter()
                .any(|p| p.contains("the sv SMS can take 3 segments")),
            "{:?}",
            a.problems
        );
        let mut agg = Aggregate::new("vattenlacka");
        drafted(&mut agg, &anna(), t, true);
        let p = decide_step(&agg, &anna(), &step(TemplateAction::Submit, None)).unwrap_err();
        assert_eq!(p.status, 422);
        assert!(p.detail.contains("segments"), "{}", p.detail);
    }

    #[test]
    fn approval_needs_swedish_and_every_crisis_question() {
        let mut t = demo(0);
        t.languages.get_mut("en").unwrap().parts.learn_more = " ".into();
        let problems = assess(&t).problems;
        assert!(
            problems
                .iter()
                .any(|p| p.contains("languages.en.parts.learn_more")),
            "{problems:?}"
        );
        t.languages.remove("sv");
        let problems = assess(&t).problems;
        assert!(
            problems.iter().any(|p| p.contains("Swedish")),
            "{problems:?}"
        );
    }

    #[test]
    fn malformed_drafts_name_the_field() {
        type Change = fn(&mut TemplateVersion);
        let cases: Vec<(&str, Change)> = vec![
            ("name", |t| t.name = " ".into()),
            ("max_sms_segments", |t| t.max_sms_segments = 0),
            ("variables[0].name", |t| {
                t.variables[0].name = "Område".into()
            }),
            ("variables[1].name", |t| {
                t.variables[1].name = "omrade".into()
            }),
            ("variables[0].max_length", |t| t.variables[0].max_length = 0),
            ("variables[0].allowed", |t| {
                t.variables[0].allowed = vec!["x".into()]
            }),
            ("languages.sv.sms", |t| {
                t.languages.get_mut("sv").unwrap().sms = "{{ omrade ".into()
            }),
            ("languages.svenska", |t| {
                let sv = t.languages["sv"].clone();
                t.languages.insert("svenska".into(), sv);
            }),
        ];
        for (field, change) in cases {
            let mut t = demo(0);
            change(&mut t);
            let p = check_draft(&t).unwrap_err();
            assert_eq!(p.field.as_deref(), Some(field), "{}", p.detail);
        }
        let mut t = demo(0);
        t.id = "vatten läcka".into();
        assert_eq!(check_draft(&t).unwrap_err().field.as_deref(), Some("id"));
    }

    #[test]
    fn a_malformed_file_names_its_line() {
        let err = parse("bad.toml", "id = \"x\"\nversion = \"one\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn approval_refuses_a_language_without_its_all_clear_or_cancel_texts() {
        let mut t = demo(0);
        t.languages.get_mut("sv").unwrap().all_clear = None;
        t.languages.get_mut("en").unwrap().cancel = None;
        let p = check_approvable(&t).unwrap_err();
        assert!(
            p.detail.contains("languages.sv.all_clear is missing")
                && p.detail.contains("languages.en.cancel is missing"),
            "{}",
            p.detail
        );

        // An all-clear SMS that cannot fit is refused like the alert's.
        let mut t = demo(0);
        t.languages
            .get_mut("sv")
            .unwrap()
            .all_clear
            .as_mut()
            .unwrap()
            .sms = "{{ omrade }} ".repeat(40);
        let p = check_approvable(&t).unwrap_err();
        assert!(
            p.detail.contains("the sv all_clear SMS can take"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn a_draft_s_language_tags_are_put_in_canonical_case() {
        let mut t = demo(0);
        let sv = t.languages.remove("sv").unwrap();
        t.languages.insert("SV".into(), sv.clone());
        let mut agg = Aggregate::new("ny");
        drafted(&mut agg, &anna(), t.clone(), true);
        let newest = &agg.versions[&agg.newest()].template;
        assert!(
            newest.languages.contains_key("sv"),
            "{:?}",
            newest.languages.keys()
        );
        assert!(!newest.languages.contains_key("SV"));

        t.languages.insert("sv".into(), sv);
        let p = decide_draft(&Aggregate::new("ny2"), &anna(), t, true).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("languages.sv"), "{}", p.detail);
    }
}
