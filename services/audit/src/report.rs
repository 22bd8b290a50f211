//! The crisis report for an inquiry, drawn from the audit chain alone: who
//! declared and when, the timeline, per channel how many were sent, delivered and
//! failed, the operators' confirmations and any escalations; rendered as Markdown
//! or HTML (in Swedish, for the people who read it). Every line names the record
//! it comes from, so it can be checked against a verified export.
//!
//! Each recipient is counted once per crisis revision, in the state of its last
//! recorded outcome: a message first `sent` and later reported `delivered` counts
//! as delivered. A recipient any of whose outcomes is flagged `possible_duplicate`
//! (its batch was sent again after a crash) is counted once among the channel's
//! possible duplicates. The timeline leaves out the individual delivery reports (a
//! crisis reaching 100 000 people has thousands) except the first and the last
//! of each channel; their totals are in the channel table.

use krisbud_kit::text::escape_html;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use krisbud_proto::audit::{
    AuditRecord, ChainPosition, ChannelReport, ConfirmationEntry, CrisisReport, TimelineEntry,
};
use krisbud_proto::event::DeliveryState;
use krisbud_proto::{AlertStatus, Channel, Envelope, Event};
use serde_json::Value;

/// A report of `crisis_id` from its records (in chain order).
pub fn build(
    crisis_id: &str,
    records: &[AuditRecord],
    head: Option<ChainPosition>,
    now: DateTime<Utc>,
) -> CrisisReport {
    let mut report = CrisisReport {
        crisis_id: crisis_id.to_owned(),
        generated_at: now,
        chain_head: head,
        declared: None,
        status: None,
        template: None,
        timeline: Vec::new(),
        channels: Vec::new(),
        confirmations: Vec::new(),
        escalations: Vec::new(),
    };
    let mut planned: BTreeMap<Channel, u64> = BTreeMap::new();
    let mut reports: BTreeMap<Channel, u64> = BTreeMap::new();
    // The last state of each (channel, revision, target), with its reason. A
    // target is a recipient on SMS and email; the banner and the intranet have
    // one target per language, all called by the channel's name, so there it is
    // the job (one per language) and the recipient together.
    let mut last: HashMap<(Channel, u32, String), (DeliveryState, Option<String>)> = HashMap::new();
    // Every (channel, revision, recipient) with an outcome flagged as a possible duplicate.
    let mut flagged: HashSet<(Channel, u32, String)> = HashSet::new();
    // The first and last delivery report of each channel, for the timeline.
    let mut deliveries: BTreeMap<Channel, (TimelineEntry, Option<TimelineEntry>)> = BTreeMap::new();

    for record in records {
        let Ok(envelope) = serde_json::from_value::<Envelope>(record.event.clone()) else {
            let line = unknown_entry(record);
            if line.kind.contains("Escalat") {
                report.escalations.push(line.clone());
            }
            report.timeline.push(line);
            continue;
        };
        let entry = |summary: String| TimelineEntry {
            sequence: record.sequence,
            occurred_at: envelope.occurred_at,
            actor: envelope.actor.user.clone(),
            kind: envelope.event.kind().to_owned(),
            summary,
        };
        match &envelope.event {
            Event::CrisisDeclared(e) => {
                let line = entry(format!(
                    "Kris utlyst ({}) från mallen {} v{} på {}; målgrupper: {}",
                    status_word(e.status),
                    e.template.id,
                    e.template.version,
                    channel_list(&e.channels),
                    if e.audiences.is_empty() {
                        "inga".to_owned()
                    } else {
                        e.audiences.join(", ")
                    }
                ));
                if report.declared.is_none() {
                    report.declared = Some(line.clone());
                    report.status = Some(format!("{:?}", e.status));
                    report.template = Some(format!("{} v{}", e.template.id, e.template.version));
                }
                report.timeline.push(line);
            }
            Event::DispatchPlanned(e) => {
                let parts: Vec<String> = e
                    .channels
                    .iter()
                    .map(|(channel, plan)| {
                        *planned.entry(*channel).or_default() += plan.recipients;
                        format!("{channel} {} mottagare", plan.recipients)
                    })
                    .collect();
                report.timeline.push(entry(format!(
                    "Utskick planerat (revision {}): {}",
                    e.revision,
                    parts.join(", ")
                )));
            }
            Event::DeliveryReported(e) if krisbud_proto::event::notice_job(&e.job_id).is_some() => {
                // An escalation notice to the duty officers: listed under the
                // escalation, never counted with the crisis's own recipients.
                let sent = e
                    .outcomes
                    .iter()
                    .filter(|o| o.state != DeliveryState::Failed)
                    .count();
                report.timeline.push(entry(format!(
                    "Eskaleringsmeddelande via {} ({}): {} skickade, {} misslyckade",
                    e.channel,
                    e.provider,
                    sent,
                    e.outcomes.len() - sent
                )));
            }
            Event::DeliveryReported(e) => {
                *reports.entry(e.channel).or_default() += 1;
                for outcome in &e.outcomes {
                    let target = if e.channel.has_recipients() {
                        outcome.recipient.clone()
                    } else {
                        format!("{}/{}", e.job_id, outcome.recipient)
                    };
                    last.insert(
                        (e.channel, e.revision, target.clone()),
                        (outcome.state, outcome.reason.clone()),
                    );
                    if outcome.possible_duplicate {
                        flagged.insert((e.channel, e.revision, target));
                    }
                }
                let count = |state| e.outcomes.iter().filter(|o| o.state == state).count();
                let duplicates = e.outcomes.iter().filter(|o| o.possible_duplicate).count();
                let line = entry(format!(
                    "Leveransrapport {} via {}: {} levererade, {} skickade, {} misslyckade{}",
                    e.channel,
                    e.provider,
                    count(DeliveryState::Delivered),
                    count(DeliveryState::Sent),
                    count(DeliveryState::Failed),
                    if duplicates > 0 {
                        format!(", {duplicates} möjliga dubbletter")
                    } else {
                        String::new()
                    }
                ));
                match deliveries.get_mut(&e.channel) {
                    None => {
                        deliveries.insert(e.channel, (line, None));
                    }
                    Some((_, latest)) => *latest = Some(line),
                }
            }
            Event::ChannelConfirmed(e) => {
                report.confirmations.push(ConfirmationEntry {
                    sequence: record.sequence,
                    channel: e.channel,
                    revision: e.revision,
                    by: envelope.actor.user.clone(),
                    at: envelope.occurred_at,
                    note: e.note.clone(),
                });
                report.timeline.push(entry(format!(
                    "{} bekräftad av {}{}",
                    e.channel,
                    envelope.actor.user,
                    e.note
                        .as_deref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default()
                )));
            }
            Event::RecipientLookedUp(e) => report.timeline.push(entry(format!(
                "Granskare slog upp mottagaren {}: {} utfall",
                e.recipient, e.outcomes
            ))),
            other => {
                let line = entry(other.kind().to_owned());
                if other.kind().contains("Escalat") {
                    report.escalations.push(line.clone());
                }
                report.timeline.push(line);
            }
        }
    }

    for (first, latest) in deliveries.into_values() {
        report.timeline.push(first);
        report.timeline.extend(latest);
    }
    report.timeline.sort_by_key(|e| e.sequence);

    let mut channels: BTreeMap<Channel, ChannelReport> = BTreeMap::new();
    let blank = |channel| ChannelReport {
        channel,
        planned: None,
        sent: 0,
        delivered: 0,
        failed: 0,
        pending: None,
        failed_by_reason: BTreeMap::new(),
        possible_duplicates: 0,
        reports: 0,
    };
    for ((channel, _, _), (state, reason)) in last {
        let c = channels.entry(channel).or_insert_with(|| blank(channel));
        match state {
            DeliveryState::Sent => c.sent += 1,
            DeliveryState::Delivered => c.delivered += 1,
            DeliveryState::Failed => {
                c.failed += 1;
                *c.failed_by_reason
                    .entry(reason.unwrap_or_else(|| "okänd orsak".into()))
                    .or_default() += 1;
            }
        }
    }
    for (channel, _, _) in flagged {
        channels
            .entry(channel)
            .or_insert_with(|| blank(channel))
            .possible_duplicates += 1;
    }
    for (channel, n) in planned {
        channels
            .entry(channel)
            .or_insert_with(|| blank(channel))
            .planned = Some(n);
    }
    for (channel, n) in reports {
        channels
            .entry(channel)
            .or_insert_with(|| blank(channel))
            .reports = n;
    }
    report.channels = channels
        .into_values()
        .map(|mut c| {
            c.pending = c
                .planned
                .map(|p| p.saturating_sub(c.sent + c.delivered + c.failed));
            c
        })
        .collect();
    report
}

/// What the possible duplicates column means, under the table when it is not all zeros.
const DUPLICATES_NOTE: &str = "Möjliga dubbletter: mottagare vars meddelande var på väg när en \
     kanalinstans stoppades och därför skickades igen; de kan ha fått meddelandet två gånger. \
     De räknas också bland skickade, levererade eller misslyckade.";

fn unknown_entry(record: &AuditRecord) -> TimelineEntry {
    let text = |pointer: &str| record.event.pointer(pointer).and_then(Value::as_str);
    TimelineEntry {
        sequence: record.sequence,
        occurred_at: text("/occurred_at")
            .and_then(|t| t.parse().ok())
            .unwrap_or(record.recorded_at),
        actor: text("/actor/user").unwrap_or("okänd").to_owned(),
        kind: text("/kind").unwrap_or("okänd").to_owned(),
        summary: "Händelse som denna version inte kan läsa; se posten i exporten".into(),
    }
}

fn status_word(status: AlertStatus) -> &'static str {
    match status {
        AlertStatus::Actual => "skarp",
        AlertStatus::Exercise => "övning",
        AlertStatus::Test => "test",
    }
}

fn channel_list(channels: &[Channel]) -> String {
    channels
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn time(at: DateTime<Utc>) -> String {
    krisbud_kit::text::local_time(at)
}

fn optional(n: Option<u64>) -> String {
    n.map_or_else(|| "–".to_owned(), |n| n.to_string())
}

/// The report as Markdown.
pub fn markdown(report: &CrisisReport) -> String {
    let cell = |text: &str| markdown_cell(text);
    let mut out = String::new();
    let _ = writeln!(out, "# Krisrapport {}\n", cell(&report.crisis_id));
    let _ = writeln!(out, "{}\n", provenance(report));
    if let Some(declared) = &report.declared {
        let _ = writeln!(
            out,
            "- **Utlyst:** {} av {} (post {})",
            time(declared.occurred_at),
            cell(&declared.actor),
            declared.sequence
        );
    } else {
        let _ = writeln!(
            out,
            "- **Utlyst:** ingen utlysning finns i granskningsloggen"
        );
    }
    if let Some(status) = &report.status {
        let _ = writeln!(out, "- **Status:** {}", cell(status));
    }
    if let Some(template) = &report.template {
        let _ = writeln!(out, "- **Mall:** {}", cell(template));
    }

    let _ = writeln!(out, "\n## Tidslinje\n");
    let _ = writeln!(out, "| Tid | Post | Vem | Händelse | Beskrivning |");
    let _ = writeln!(out, "|---|---:|---|---|---|");
    for e in &report.timeline {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            time(e.occurred_at),
            e.sequence,
            cell(&e.actor),
            cell(&e.kind),
            cell(&e.summary)
        );
    }

    let _ = writeln!(out, "\n## Utskick per kanal\n");
    if report.channels.is_empty() {
        let _ = writeln!(out, "Inga utskick registrerade.");
    } else {
        let _ = writeln!(
            out,
            "| Kanal | Planerade | Skickade | Levererade | Misslyckade | Väntar | Möjliga dubbletter | Rapporter |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for c in &report.channels {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                c.channel,
                optional(c.planned),
                c.sent,
                c.delivered,
                c.failed,
                optional(c.pending),
                c.possible_duplicates,
                c.reports
            );
        }
        if report.channels.iter().any(|c| c.possible_duplicates > 0) {
            let _ = writeln!(out, "\n{DUPLICATES_NOTE}");
        }
        for c in report
            .channels
            .iter()
            .filter(|c| !c.failed_by_reason.is_empty())
        {
            let _ = writeln!(out, "\nMisslyckade på {} efter orsak:\n", c.channel);
            for (reason, n) in &c.failed_by_reason {
                let _ = writeln!(out, "- {n}: {}", cell(reason));
            }
        }
    }

    let _ = writeln!(out, "\n## Bekräftelser\n");
    if report.confirmations.is_empty() {
        let _ = writeln!(out, "Inga bekräftelser registrerade.");
    } else {
        let _ = writeln!(out, "| Tid | Post | Kanal | Vem | Revision | Anteckning |");
        let _ = writeln!(out, "|---|---:|---|---|---:|---|");
        for c in &report.confirmations {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                time(c.at),
                c.sequence,
                c.channel,
                cell(&c.by),
                c.revision,
                cell(c.note.as_deref().unwrap_or(""))
            );
        }
    }

    let _ = writeln!(out, "\n## Eskaleringar\n");
    if report.escalations.is_empty() {
        let _ = writeln!(out, "Inga eskaleringar registrerade.");
    } else {
        for e in &report.escalations {
            let _ = writeln!(
                out,
                "- {} (post {}) {}: {}",
                time(e.occurred_at),
                e.sequence,
                cell(&e.actor),
                cell(&e.summary)
            );
        }
    }
    out
}

/// The report as a self-contained, accessible HTML page.
pub fn html(report: &CrisisReport) -> String {
    let e = escape_html;
    let mut out = String::new();
    let title = format!("Krisrapport {}", report.crisis_id);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"sv\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}}\
         table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #999;padding:.3rem .6rem;text-align:left;vertical-align:top}}\
         td.n{{text-align:right}}caption{{text-align:left;font-weight:bold}}</style>\n</head>\n<body>\n<main>\n<h1>{}</h1>\n<p>{}</p>\n<ul>\n",
        e(&title),
        e(&title),
        e(&provenance(report))
    );
    match &report.declared {
        Some(d) => {
            let _ = writeln!(
                out,
                "<li><strong>Utlyst:</strong> {} av {} (post {})</li>",
                e(&time(d.occurred_at)),
                e(&d.actor),
                d.sequence
            );
        }
        None => {
            let _ = writeln!(
                out,
                "<li><strong>Utlyst:</strong> ingen utlysning finns i granskningsloggen</li>"
            );
        }
    }
    if let Some(status) = &report.status {
        let _ = writeln!(out, "<li><strong>Status:</strong> {}</li>", e(status));
    }
    if let Some(template) = &report.template {
        let _ = writeln!(out, "<li><strong>Mall:</strong> {}</li>", e(template));
    }
    let _ = writeln!(out, "</ul>");

    let _ = writeln!(out, "<h2>Tidslinje</h2>");
    table(
        &mut out,
        "Händelser i ordning",
        &["Tid", "Post", "Vem", "Händelse", "Beskrivning"],
        report.timeline.iter().map(|t| {
            vec![
                Cell::Text(time(t.occurred_at)),
                Cell::Number(t.sequence.to_string()),
                Cell::Text(t.actor.clone()),
                Cell::Text(t.kind.clone()),
                Cell::Text(t.summary.clone()),
            ]
        }),
    );

    let _ = writeln!(out, "<h2>Utskick per kanal</h2>");
    if report.channels.is_empty() {
        let _ = writeln!(out, "<p>Inga utskick registrerade.</p>");
    } else {
        table(
            &mut out,
            "Mottagare per kanal, efter senaste utfall",
            &[
                "Kanal",
                "Planerade",
                "Skickade",
                "Levererade",
                "Misslyckade",
                "Väntar",
                "Möjliga dubbletter",
                "Rapporter",
            ],
            report.channels.iter().map(|c| {
                vec![
                    Cell::Text(c.channel.to_string()),
                    Cell::Number(optional(c.planned)),
                    Cell::Number(c.sent.to_string()),
                    Cell::Number(c.delivered.to_string()),
                    Cell::Number(c.failed.to_string()),
                    Cell::Number(optional(c.pending)),
                    Cell::Number(c.possible_duplicates.to_string()),
                    Cell::Number(c.reports.to_string()),
                ]
            }),
        );
        if report.channels.iter().any(|c| c.possible_duplicates > 0) {
            let _ = writeln!(out, "<p>{}</p>", e(DUPLICATES_NOTE));
        }
        for c in report
            .channels
            .iter()
            .filter(|c| !c.failed_by_reason.is_empty())
        {
            let _ = writeln!(
                out,
                "<h3>Misslyckade på {} efter orsak</h3>\n<ul>",
                e(c.channel.as_str())
            );
            for (reason, n) in &c.failed_by_reason {
                let _ = writeln!(out, "<li>{n}: {}</li>", e(reason));
            }
            let _ = writeln!(out, "</ul>");
        }
    }

    let _ = writeln!(out, "<h2>Bekräftelser</h2>");
    if report.confirmations.is_empty() {
        let _ = writeln!(out, "<p>Inga bekräftelser registrerade.</p>");
    } else {
        table(
            &mut out,
            "Operatörernas bekräftelser",
            &["Tid", "Post", "Kanal", "Vem", "Revision", "Anteckning"],
            report.confirmations.iter().map(|c| {
                vec![
                    Cell::Text(time(c.at)),
                    Cell::Number(c.sequence.to_string()),
                    Cell::Text(c.channel.to_string()),
                    Cell::Text(c.by.clone()),
                    Cell::Number(c.revision.to_string()),
                    Cell::Text(c.note.clone().unwrap_or_default()),
                ]
            }),
        );
    }

    let _ = writeln!(out, "<h2>Eskaleringar</h2>");
    if report.escalations.is_empty() {
        let _ = writeln!(out, "<p>Inga eskaleringar registrerade.</p>");
    } else {
        let _ = writeln!(out, "<ul>");
        for x in &report.escalations {
            let _ = writeln!(
                out,
                "<li>{} (post {}) {}: {}</li>",
                e(&time(x.occurred_at)),
                x.sequence,
                e(&x.actor),
                e(&x.summary)
            );
        }
        let _ = writeln!(out, "</ul>");
    }
    let _ = writeln!(out, "</main>\n</body>\n</html>");
    out
}

fn provenance(report: &CrisisReport) -> String {
    match &report.chain_head {
        Some(head) => format!(
            "Framtagen {} ur granskningsloggen: poster 1–{}, kedjans senaste hash {}. \
             Varje rad anger posten den bygger på.",
            time(report.generated_at),
            head.sequence,
            head.hash
        ),
        None => format!(
            "Framtagen {} ur granskningsloggen, som är tom.",
            time(report.generated_at)
        ),
    }
}

enum Cell {
    Text(String),
    Number(String),
}

fn table(out: &mut String, caption: &str, headers: &[&str], rows: impl Iterator<Item = Vec<Cell>>) {
    let _ = write!(
        out,
        "<table>\n<caption>{}</caption>\n<thead><tr>",
        escape_html(caption)
    );
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape_html(h));
    }
    let _ = writeln!(out, "</tr></thead>\n<tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            match cell {
                Cell::Text(t) => {
                    let _ = write!(out, "<td>{}</td>", escape_html(&t));
                }
                Cell::Number(n) => {
                    let _ = write!(out, "<td class=\"n\">{}</td>", escape_html(&n));
                }
            }
        }
        out.push_str("</tr>\n");
    }
    let _ = writeln!(out, "</tbody>\n</table>");
}

/// Text safe inside a Markdown table cell: one line, Markdown's special
/// characters escaped so a note cannot add links, emphasis or columns.
pub fn markdown_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '\\' | '`' | '*' | '_' | '{' | '}' | '[' | ']' | '(' | ')' | '#' | '+' | '!' | '|'
            | '<' | '>' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use krisbud_proto::Actor;
    use krisbud_proto::event::{
        ChannelConfirmed, CrisisDeclared, DeliveryReported, DispatchPlanned, PlannedChannel,
        RecipientOutcome,
    };
    use krisbud_proto::model::{CapInfo, Category, Certainty, ResponseType, Severity, Urgency};
    use krisbud_proto::template::TemplateRef;
    use serde_json::json;

    use super::*;
    use crate::chain::seal;

    fn person(user: &str) -> Actor {
        Actor {
            user: user.into(),
            roles: Vec::new(),
            channels: Vec::new(),
        }
    }

    fn outcome(recipient: &str, state: DeliveryState, reason: Option<&str>) -> RecipientOutcome {
        RecipientOutcome {
            recipient: recipient.into(),
            state,
            provider_ref: None,
            reason: reason.map(Into::into),
            possible_duplicate: false,
        }
    }

    fn possible_duplicate(recipient: &str, state: DeliveryState) -> RecipientOutcome {
        RecipientOutcome {
            possible_duplicate: true,
            ..outcome(recipient, state, None)
        }
    }

    fn records() -> Vec<AuditRecord> {
        let events = [
            Envelope::new(
                person("tib.maria"),
                Event::CrisisDeclared(CrisisDeclared {
                    crisis_id: "c1".into(),
                    revision: 1,
                    template: TemplateRef {
                        id: "vattenlacka".into(),
                        version: 2,
                    },
                    status: AlertStatus::Exercise,
                    cap: CapInfo {
                        category: Category::Safety,
                        event: "Vattenläcka".into(),
                        severity: Severity::Moderate,
                        urgency: Urgency::Expected,
                        certainty: Certainty::Likely,
                        response_type: ResponseType::Prepare,
                    },
                    variables: Default::default(),
                    audiences: vec!["farsta".into()],
                    audience_generations: Default::default(),
                    channels: vec![Channel::Sms, Channel::Banner],
                    messages: Vec::new(),
                    expires_at: None,
                }),
            ),
            Envelope::new(
                Actor::service("coordinator"),
                Event::DispatchPlanned(DispatchPlanned {
                    crisis_id: "c1".into(),
                    revision: 1,
                    channels: [
                        (
                            Channel::Sms,
                            PlannedChannel {
                                recipients: 3,
                                jobs: 1,
                                duplicates_removed: 0,
                            },
                        ),
                        (
                            Channel::Banner,
                            PlannedChannel {
                                recipients: 1,
                                jobs: 1,
                                duplicates_removed: 0,
                            },
                        ),
                    ]
                    .into(),
                }),
            ),
            Envelope::new(
                Actor::service("channel-sms"),
                Event::DeliveryReported(DeliveryReported {
                    crisis_id: "c1".into(),
                    revision: 1,
                    channel: Channel::Sms,
                    job_id: "j1".into(),
                    provider: "46elks".into(),
                    outcomes: vec![
                        possible_duplicate("rcp:a", DeliveryState::Sent),
                        outcome("rcp:b", DeliveryState::Failed, Some("ogiltigt nummer")),
                        possible_duplicate("rcp:c", DeliveryState::Sent),
                    ],
                    retries: 0,
                }),
            ),
            Envelope::new(
                Actor::service("channel-sms"),
                Event::DeliveryReported(DeliveryReported {
                    crisis_id: "c1".into(),
                    revision: 1,
                    channel: Channel::Sms,
                    job_id: "j1".into(),
                    provider: "46elks".into(),
                    outcomes: vec![outcome("rcp:a", DeliveryState::Delivered, None)],
                    retries: 0,
                }),
            ),
            Envelope::new(
                person("operator.ali"),
                Event::ChannelConfirmed(ChannelConfirmed {
                    crisis_id: "c1".into(),
                    revision: 1,
                    channel: Channel::Banner,
                    note: Some("syns på *stockholm.se* | <b>".into()),
                }),
            ),
        ];
        let at: DateTime<Utc> = "2026-03-01T10:00:00Z".parse().unwrap();
        let mut out: Vec<AuditRecord> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let prev = out
                .last()
                .map_or(krisbud_proto::audit::GENESIS_HASH.to_owned(), |r| {
                    r.hash.clone()
                });
            out.push(seal(
                i as u64 + 1,
                at,
                i as u64 + 1,
                serde_json::to_value(event).unwrap(),
                prev,
            ));
        }
        out
    }

    #[test]
    fn the_report_has_declaration_counts_and_confirmations() {
        let records = records();
        let report = build(
            "c1",
            &records,
            Some(ChainPosition {
                sequence: 6,
                hash: "h".into(),
            }),
            Utc::now(),
        );
        let declared = report.declared.as_ref().unwrap();
        assert_eq!(
            (declared.actor.as_str(), declared.sequence),
            ("tib.maria", 1)
        );
        assert_eq!(report.status.as_deref(), Some("Exercise"));
        assert_eq!(report.template.as_deref(), Some("vattenlacka v2"));
        let sms = report
            .channels
            .iter()
            .find(|c| c.channel == Channel::Sms)
            .unwrap();
        assert_eq!(
            (
                sms.planned,
                sms.sent,
                sms.delivered,
                sms.failed,
                sms.pending,
                sms.possible_duplicates,
                sms.reports
            ),
            (Some(3), 1, 1, 1, Some(0), 2, 2),
            "rcp:a stays a possible duplicate after its later delivery report"
        );
        assert_eq!(sms.failed_by_reason["ogiltigt nummer"], 1);
        let banner = report
            .channels
            .iter()
            .find(|c| c.channel == Channel::Banner)
            .unwrap();
        assert_eq!((banner.planned, banner.pending), (Some(1), Some(1)));
        assert_eq!(report.confirmations.len(), 1);
        assert_eq!(report.confirmations[0].by, "operator.ali");
        assert_eq!(
            report
                .timeline
                .iter()
                .map(|e| e.sequence)
                .collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert!(report.escalations.is_empty());

        let md = markdown(&report);
        assert!(md.contains("# Krisrapport c1"), "{md}");
        // Times as people in Stockholm read them, never UTC.
        let declared_at = krisbud_kit::text::local_time(declared.occurred_at);
        assert!(md.contains(&declared_at), "{declared_at} in {md}");
        assert!(!md.contains("UTC"), "{md}");
        assert!(md.contains("av tib.maria (post 1)"), "{md}");
        assert!(md.contains("| sms | 3 | 1 | 1 | 1 | 0 | 2 | 2 |"), "{md}");
        assert!(
            md.contains("| banner | 1 | 0 | 0 | 0 | 1 | 0 | 0 |"),
            "{md}"
        );
        assert!(md.contains("Möjliga dubbletter:"), "{md}");
        assert!(md.contains("2 möjliga dubbletter"), "{md}");
        assert!(md.contains("operator.ali"), "{md}");
        assert!(md.contains(r"syns på \*stockholm.se\* \| \<b\>"), "{md}");

        let page = html(&report);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<html lang=\"sv\">"));
        assert!(page.contains("operator.ali"));
        assert!(
            page.contains(
                "<tr><td>sms</td><td class=\"n\">3</td><td class=\"n\">1</td>\
                 <td class=\"n\">1</td><td class=\"n\">1</td><td class=\"n\">0</td>\
                 <td class=\"n\">2</td><td class=\"n\">2</td></tr>"
            ),
            "{page}"
        );
        assert!(page.contains("<th scope=\"col\">Möjliga dubbletter</th>"));
        assert!(page.contains("<p>Möjliga dubbletter:"), "{page}");
        assert!(
            page.contains("syns på *stockholm.se* | &lt;b&gt;"),
            "{page}"
        );
        assert!(!page.contains("<b>"));
    }

    #[test]
    fn escalations_are_listed() {
        let mut records = records();
        let at: DateTime<Utc> = "2026-03-01T11:00:00Z".parse().unwrap();
        let escalation = json!({
            "id": "x", "schema_version": 1, "occurred_at": "2026-03-01T11:00:00Z",
            "actor": {"user": "service:coordinator", "roles": []}, "crisis_id": "c1",
            "kind": "CrisisEscalated", "payload": {}
        });
        records.push(seal(6, at, 9, escalation, records[4].hash.clone()));
        let report = build("c1", &records, None, Utc::now());
        // Not an event this version knows, yet listed as an escalation.
        assert_eq!(report.escalations.len(), 1);
        assert_eq!(report.timeline.last().unwrap().sequence, 6);
        assert!(markdown(&report).contains("## Eskaleringar"));
    }
}
