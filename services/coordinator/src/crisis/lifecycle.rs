//! The crisis lifecycle's pure core: a crisis folded from its events, the table of
//! which step may follow which state, and the decision of each step. No I/O: the
//! shell (`steps.rs`) loads what a decision needs, appends the event it returns
//! and answers.
//!
//! A crisis is declared, then updated any number of times, then given the
//! all-clear or cancelled (a message sent in error), then closed; [`after`] is
//! the one table of it, and ARCHITECTURE.md ("A crisis over time") prints it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use krisbud_proto::audience::Audience;
use krisbud_proto::command::UpdateCrisis;
use krisbud_proto::event::{CrisisClosed, CrisisRevised};
use krisbud_proto::job::{MsgType, message_id};
use krisbud_proto::model::{Address, CapInfo, ResponseType};
use krisbud_proto::status::CrisisState;
use krisbud_proto::template::{RenderedLanguage, TemplateRef, TemplateVersion};
use krisbud_proto::{AlertStatus, Channel, Envelope, Event, Problem};

use super::wording::{Closing, closing_message, prefix_update};
use crate::render;

/// What the messages of the crisis were made from, as of its last declaration or
/// update.
#[derive(Debug, Clone)]
pub struct Current {
    pub template: TemplateRef,
    pub status: AlertStatus,
    pub cap: CapInfo,
    pub variables: BTreeMap<String, String>,
    pub audiences: Vec<String>,
    pub audience_generations: BTreeMap<String, u32>,
    pub channels: Vec<Channel>,
    /// The last alert or update's messages: the all-clear and the correction
    /// quote their headline.
    pub messages: Vec<RenderedLanguage>,
    pub expires_at: Option<DateTime<Utc>>,
    pub declared_at: DateTime<Utc>,
}

/// One crisis folded from its events.
#[derive(Debug, Clone, Default)]
pub struct Crisis {
    pub crisis_id: String,
    /// Stream sequence of the last event read (0: none).
    pub last_sequence: u64,
    /// 0 until declared.
    pub revision: u32,
    pub state: CrisisState,
    pub current: Option<Current>,
}

impl Crisis {
    /// Folds one event of the crisis in.
    pub fn apply(&mut self, envelope: &Envelope, sequence: u64) {
        self.last_sequence = self.last_sequence.max(sequence);
        match &envelope.event {
            Event::CrisisDeclared(e) => {
                self.revision = e.revision;
                self.state = CrisisState::Active;
                self.current = Some(Current {
                    template: e.template.clone(),
                    status: e.status,
                    cap: e.cap.clone(),
                    variables: e.variables.clone(),
                    audiences: e.audiences.clone(),
                    audience_generations: e.audience_generations.clone(),
                    channels: e.channels.clone(),
                    messages: e.messages.clone(),
                    expires_at: e.expires_at,
                    declared_at: envelope.occurred_at,
                });
            }
            Event::CrisisUpdated(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::Active;
                self.current = Some(Current {
                    template: e.template.clone(),
                    status: e.status,
                    cap: e.cap.clone(),
                    variables: e.variables.clone(),
                    audiences: e.audiences.clone(),
                    audience_generations: e.audience_generations.clone(),
                    channels: e.channels.clone(),
                    messages: e.messages.clone(),
                    expires_at: e.expires_at,
                    declared_at: e.declared_at,
                });
            }
            Event::CrisisAllClear(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::AllClear;
            }
            Event::CrisisCancelled(e) => {
                self.revision = self.revision.max(e.revision);
                self.state = CrisisState::Cancelled;
            }
            Event::CrisisClosed(_) => self.state = CrisisState::Closed,
            _ => {}
        }
    }
}

/// A step of the lifecycle after the declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Update,
    AllClear,
    Cancel,
    Close,
}

impl Step {
    /// Every step, in the order of the lifecycle.
    pub const ALL: [Step; 4] = [Step::Update, Step::AllClear, Step::Cancel, Step::Close];

    /// The step's name, as in its URL.
    pub fn name(self) -> &'static str {
        match self {
            Step::Update => "update",
            Step::AllClear => "all-clear",
            Step::Cancel => "cancel",
            Step::Close => "close",
        }
    }
}

/// The lifecycle table: the state a crisis in `state` is left in by `step`, or
/// `None` when the step may not follow that state.
pub fn after(state: CrisisState, step: Step) -> Option<CrisisState> {
    use CrisisState::{Active, AllClear, Cancelled, Closed};
    match (state, step) {
        (Active, Step::Update) => Some(Active),
        (Active, Step::AllClear) => Some(AllClear),
        (Active, Step::Cancel) => Some(Cancelled),
        (Active | AllClear | Cancelled, Step::Close) => Some(Closed),
        (AllClear | Cancelled | Closed, Step::Update | Step::AllClear | Step::Cancel)
        | (Closed, Step::Close) => None,
    }
}

/// Whether `step` may be taken now on `crisis`, read at revision `expected` by
/// the caller: 404 for a crisis never declared, 409 naming the state for a step
/// the table forbids, 409 naming the current revision for a stale read.
pub fn check(crisis: &Crisis, step: Step, expected: u32) -> Result<(), Problem> {
    if crisis.current.is_none() {
        return Err(not_found(&crisis.crisis_id));
    }
    if after(crisis.state, step).is_none() {
        return Err(refused(crisis, step));
    }
    if crisis.revision != expected {
        return Err(stale(crisis, expected));
    }
    Ok(())
}

/// The refusal of a step the table forbids.
pub fn refused(crisis: &Crisis, step: Step) -> Problem {
    Problem::conflict(format!(
        "crisis {} is {} (revision {}); {}",
        crisis.crisis_id,
        crisis.state,
        crisis.revision,
        match crisis.state {
            CrisisState::Closed => "nothing more can be done with it".to_owned(),
            CrisisState::Active | CrisisState::AllClear | CrisisState::Cancelled => {
                format!("only closing is possible, not {}", step.name())
            }
        }
    ))
}

/// 409 for a request that read an older revision, naming the current one.
pub fn stale(crisis: &Crisis, expected: u32) -> Problem {
    Problem::conflict(format!(
        "crisis {} is at revision {} ({}), not {expected}: someone changed it first; \
         read it again and decide on revision {}",
        crisis.crisis_id, crisis.revision, crisis.state, crisis.revision
    ))
}

/// The message ids of revisions 1 to `up_to`.
fn references(crisis_id: &str, up_to: u32) -> Vec<String> {
    (1..=up_to).map(|r| message_id(crisis_id, r)).collect()
}

/// The version an update asks for, when it asks for one: it must be newer than
/// the one in use.
pub fn update_target(current: &Current, body: &UpdateCrisis) -> Result<Option<u32>, Problem> {
    match body.template_version {
        Some(v) if v <= current.template.version => Err(Problem::invalid(
            "template_version",
            format!(
                "the crisis uses version {} of `{}`; an update can only move to a newer approved version",
                current.template.version, current.template.id
            ),
        )),
        other => Ok(other),
    }
}

/// Decides an update of `crisis`: the values merged into those in force (an
/// empty one removes it), `added` audiences (loaded, not yet in the crisis)
/// appended, the messages rendered from `template` and prefixed as an update.
pub fn decide_update(
    crisis: &Crisis,
    body: &UpdateCrisis,
    template: &TemplateVersion,
    added: &[Audience],
) -> Result<Event, Problem> {
    let current = declared(crisis)?;
    let mut variables = current.variables.clone();
    for (name, value) in &body.variables {
        if value.trim().is_empty() {
            variables.remove(name);
        } else {
            variables.insert(name.clone(), value.clone());
        }
    }
    let mut audiences = current.audiences.clone();
    let mut generations = current.audience_generations.clone();
    let mut added_ids = Vec::new();
    for audience in added {
        if audiences.contains(&audience.id) {
            continue;
        }
        audiences.push(audience.id.clone());
        generations.insert(audience.id.clone(), audience.generation);
        added_ids.push(audience.id.clone());
    }
    if !added_ids.is_empty() && !current.channels.iter().any(|c| c.has_recipients()) {
        return Err(Problem::invalid(
            "audiences",
            format!(
                "crisis {} goes out on neither SMS nor email, so an audience adds nobody",
                crisis.crisis_id
            ),
        ));
    }
    if body.variables.is_empty() && added_ids.is_empty() && body.template_version.is_none() {
        return Err(Problem::invalid(
            "variables",
            "an update needs new values, an added audience or a newer template version",
        ));
    }
    let mut messages = render::render(template, &variables, current.status)?;
    for language in &mut messages {
        prefix_update(language, current.status);
    }
    render::check_sms_segments(template, &messages, &variables)?;
    Ok(Event::CrisisUpdated(CrisisRevised {
        crisis_id: crisis.crisis_id.clone(),
        revision: crisis.revision + 1,
        msg_type: MsgType::Update,
        references: references(&crisis.crisis_id, crisis.revision),
        template: TemplateRef {
            id: template.id.clone(),
            version: template.version,
        },
        status: current.status,
        cap: template.cap.clone(),
        variables,
        audiences,
        audience_generations: generations,
        added_audiences: added_ids,
        channels: current.channels.clone(),
        messages,
        expires_at: current.expires_at,
        declared_at: current.declared_at,
        reason: None,
    }))
}

/// Decides the all-clear or the cancellation: each language's own closing texts
/// in `template`, filled in with the crisis's values, within its SMS limit.
pub fn decide_closing(
    crisis: &Crisis,
    closing: Closing,
    reason: Option<String>,
    template: &TemplateVersion,
) -> Result<Event, Problem> {
    let current = declared(crisis)?;
    let messages =
        match render::render_closing(template, closing, &current.variables, current.status)? {
            Some(messages) => {
                render::check_sms_segments(template, &messages, &current.variables)?;
                messages
            }
            None => current
                .messages
                .iter()
                .map(|m| closing_message(closing, m, current.status, template.max_sms_segments))
                .collect::<Vec<RenderedLanguage>>(),
        };
    let mut cap = current.cap.clone();
    if closing == Closing::AllClear {
        cap.response_type = ResponseType::AllClear;
    }
    let revised = CrisisRevised {
        crisis_id: crisis.crisis_id.clone(),
        revision: crisis.revision + 1,
        msg_type: match closing {
            Closing::AllClear => MsgType::Update,
            Closing::Cancel => MsgType::Cancel,
        },
        references: references(&crisis.crisis_id, crisis.revision),
        template: current.template.clone(),
        status: current.status,
        cap,
        variables: current.variables.clone(),
        audiences: current.audiences.clone(),
        audience_generations: current.audience_generations.clone(),
        added_audiences: Vec::new(),
        channels: current.channels.clone(),
        messages,
        expires_at: current.expires_at,
        declared_at: current.declared_at,
        reason,
    };
    Ok(match closing {
        Closing::AllClear => Event::CrisisAllClear(revised),
        Closing::Cancel => Event::CrisisCancelled(revised),
    })
}

/// Decides closing: nothing more is sent; the languages say which banners and
/// articles come down.
pub fn decide_close(crisis: &Crisis) -> Event {
    Event::CrisisClosed(CrisisClosed {
        crisis_id: crisis.crisis_id.clone(),
        revision: crisis.revision,
        languages: crisis
            .current
            .iter()
            .flat_map(|c| c.messages.iter().map(|m| m.language.clone()))
            .collect(),
    })
}

/// The revision a crisis has after `event`.
pub fn revision_after(crisis: &Crisis, event: &Event) -> u32 {
    match event {
        Event::CrisisUpdated(e) | Event::CrisisAllClear(e) | Event::CrisisCancelled(e) => {
            e.revision
        }
        _ => crisis.revision,
    }
}

/// What the crisis is made from now, or 404 for one never declared.
pub fn declared(crisis: &Crisis) -> Result<&Current, Problem> {
    crisis
        .current
        .as_ref()
        .ok_or_else(|| not_found(&crisis.crisis_id))
}

/// The answer for a crisis id nobody declared.
pub fn not_found(crisis_id: &str) -> Problem {
    Problem::not_found(format!("there is no crisis `{crisis_id}`"))
}

/// Recipients per channel as `audiences` count them now: members with a phone
/// number or an email address for the personal channels (at most: the plan
/// drops addresses that several audiences share), one per language for the
/// shared ones.
pub fn recipient_counts(
    audiences: &[Audience],
    channels: &[Channel],
    languages: usize,
) -> BTreeMap<Channel, u64> {
    channels
        .iter()
        .map(|channel| {
            let n = match channel.address() {
                Some(Address::Phone) => audiences.iter().map(|a| a.with_phone).sum(),
                Some(Address::Email) => audiences.iter().map(|a| a.with_email).sum(),
                None => languages as u64,
            };
            (*channel, n)
        })
        .collect()
}

/// The lifecycle table as ARCHITECTURE.md prints it: one row per state, one
/// column per step, each cell the state the step leaves or `—` where the step
/// is refused.
pub fn table() -> String {
    let states = [
        CrisisState::Active,
        CrisisState::AllClear,
        CrisisState::Cancelled,
        CrisisState::Closed,
    ];
    let mut out = String::from("| state |");
    for step in Step::ALL {
        out.push_str(&format!(" {} |", step.name()));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(Step::ALL.len()));
    out.push('\n');
    for state in states {
        out.push_str(&format!("| {state} |"));
        for step in Step::ALL {
            match after(state, step) {
                Some(next) => out.push_str(&format!(" {next} |")),
                None => out.push_str(" — |"),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use krisbud_proto::Actor;
    use krisbud_proto::event::CrisisDeclared;

    use super::*;

    fn water() -> TemplateVersion {
        let mut t = crate::template::parse("vattenlacka.toml", crate::template::DEMO[0].1).unwrap();
        t.version = 1;
        t
    }

    fn values() -> BTreeMap<String, String> {
        [
            ("omrade", "Farsta"),
            ("beraknat_klart", "i kväll kl. 20"),
            ("vattenpunkt", "Farsta centrum"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn declared() -> Crisis {
        let t = water();
        let messages = render::render(&t, &values(), AlertStatus::Actual).unwrap();
        let envelope = Envelope::new(
            anna(),
            Event::CrisisDeclared(CrisisDeclared {
                crisis_id: "c1".into(),
                revision: 1,
                template: TemplateRef {
                    id: t.id.clone(),
                    version: 1,
                },
                status: AlertStatus::Actual,
                cap: t.cap,
                variables: values(),
                audiences: vec!["farsta".into()],
                audience_generations: [("farsta".to_owned(), 1)].into(),
                channels: Channel::ALL.to_vec(),
                messages,
                expires_at: None,
            }),
        );
        let mut crisis = Crisis {
            crisis_id: "c1".into(),
            ..Crisis::default()
        };
        crisis.apply(&envelope, 1);
        crisis
    }

    fn anna() -> Actor {
        Actor {
            user: "jour.anna".into(),
            roles: vec![krisbud_proto::Role::DutyOfficer],
            channels: Vec::new(),
        }
    }

    fn in_state(state: CrisisState) -> Crisis {
        Crisis {
            state,
            ..declared()
        }
    }

    #[test]
    fn every_forbidden_transition_is_refused_with_the_documented_conflict() {
        let mut forbidden = 0;
        for state in [
            CrisisState::Active,
            CrisisState::AllClear,
            CrisisState::Cancelled,
            CrisisState::Closed,
        ] {
            for step in Step::ALL {
                let crisis = in_state(state);
                let checked = check(&crisis, step, crisis.revision);
                if after(state, step).is_some() {
                    assert!(checked.is_ok(), "{state} → {}", step.name());
                    continue;
                }
                forbidden += 1;
                let p = checked.unwrap_err();
                assert_eq!(p.status, 409, "{state} → {}", step.name());
                let expected = if state == CrisisState::Closed {
                    "crisis c1 is closed (revision 1); nothing more can be done with it".to_owned()
                } else {
                    format!(
                        "crisis c1 is {state} (revision 1); only closing is possible, not {}",
                        step.name()
                    )
                };
                assert_eq!(p.detail, expected);
            }
        }
        // All-clear and cancelled each refuse three steps, closed all four.
        assert_eq!(forbidden, 10);
    }

    #[test]
    fn a_crisis_never_declared_is_not_found_and_a_stale_read_names_the_revision() {
        let unknown = Crisis {
            crisis_id: "c9".into(),
            ..Crisis::default()
        };
        assert_eq!(check(&unknown, Step::Close, 0).unwrap_err().status, 404);
        let p = check(&declared(), Step::Update, 3).unwrap_err();
        assert_eq!(p.status, 409);
        assert!(
            p.detail.contains("at revision 1") && p.detail.contains("not 3"),
            "{}",
            p.detail
        );
    }

    #[test]
    fn the_fold_follows_the_events_through_the_lifecycle() {
        let mut crisis = declared();
        assert_eq!((crisis.state, crisis.revision), (CrisisState::Active, 1));
        let update = UpdateCrisis {
            expected_revision: 1,
            variables: [("beraknat_klart".to_owned(), "i morgon kl. 06".to_owned())].into(),
            audiences: Vec::new(),
            template_version: None,
        };
        let event = decide_update(&crisis, &update, &water(), &[]).unwrap();
        let Event::CrisisUpdated(e) = &event else {
            panic!("an update")
        };
        assert_eq!(e.revision, 2);
        assert_eq!(e.variables["beraknat_klart"], "i morgon kl. 06");
        assert_eq!(e.variables["omrade"], "Farsta", "the other values stay");
        assert!(
            e.messages
                .iter()
                .any(|m| m.sms.text.starts_with("UPPDATERING: "))
        );
        crisis.apply(&Envelope::new(anna(), event), 2);
        assert_eq!((crisis.state, crisis.revision), (CrisisState::Active, 2));

        let event = decide_closing(&crisis, Closing::AllClear, None, &water()).unwrap();
        let Event::CrisisAllClear(e) = &event else {
            panic!("an all-clear")
        };
        assert_eq!(e.cap.response_type, ResponseType::AllClear);
        // The template's own all-clear with the values in force, in every language.
        let sv = e.messages.iter().find(|m| m.language == "sv").unwrap();
        assert!(sv.sms.text.contains("Faran är över") && sv.sms.text.contains("Farsta"));
        assert!(!sv.sms.text.contains("avstängt"), "{}", sv.sms.text);
        assert_eq!(sv.banner.level, krisbud_proto::template::BannerLevel::Info);
        assert_eq!(e.messages.len(), 3);
        assert_eq!(e.references, [message_id("c1", 1), message_id("c1", 2)]);
        crisis.apply(&Envelope::new(anna(), event), 3);
        assert_eq!((crisis.state, crisis.revision), (CrisisState::AllClear, 3));

        let event = decide_close(&crisis);
        crisis.apply(&Envelope::new(anna(), event), 4);
        assert_eq!((crisis.state, crisis.revision), (CrisisState::Closed, 3));
    }

    #[test]
    fn an_update_that_changes_nothing_is_refused_naming_the_field() {
        let update = UpdateCrisis {
            expected_revision: 1,
            variables: BTreeMap::new(),
            audiences: Vec::new(),
            template_version: None,
        };
        let p = decide_update(&declared(), &update, &water(), &[]).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("variables"));
        let older = UpdateCrisis {
            template_version: Some(1),
            ..update
        };
        let p = update_target(declared().current.as_ref().unwrap(), &older).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("template_version"));
    }

    #[test]
    fn architecture_md_prints_the_lifecycle_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ARCHITECTURE.md");
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.contains(&table()),
            "ARCHITECTURE.md (\"A crisis over time\") must hold this table:\n{}",
            table()
        );
    }
}
