//! A crisis in the console: the live board (its state in words, every channel's
//! truth, confirmations, escalations and what was sent when), the operator's
//! confirmation of a channel, and the duty officer's all-clear, correction and
//! close, each behind a page that says what will happen before it happens.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_kit::text::local_time;
use krisbud_proto::command::{CancelCrisis, CrisisStep, ExpectRevision, GetCrisis, Revised};
use krisbud_proto::status::{ChannelState, CrisisState, CrisisStatus, RevisionKind};
use krisbud_proto::{Channel, Role, subject};

use super::pages::{self, Layout, crisis_state, practice};
use super::session::{Posted, SignedIn};
use super::{channel_name, message, page, unavailable};
use crate::state::AppState;

/// One channel's row on the board.
pub struct ChannelRow {
    pub id: &'static str,
    pub name: &'static str,
    pub state: &'static str,
    pub state_class: &'static str,
    pub total: u64,
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    pub pending: u64,
    pub confirmed: String,
    /// Whether the latest revision still waits for an operator's confirmation.
    pub unconfirmed: bool,
}

/// One escalation raised on a channel.
pub struct EscalationRow {
    pub channel: &'static str,
    pub level: u32,
    pub deadline: String,
    pub at: String,
}

/// One revision: what was sent, when, by whom.
pub struct RevisionRow {
    pub kind: &'static str,
    pub by: String,
    pub at: String,
    pub reason: String,
}

/// The status board of one crisis.
pub struct BoardView {
    pub id: String,
    pub revision: u32,
    pub headline: String,
    pub state: &'static str,
    /// What the state means, in a sentence.
    pub state_text: String,
    pub practice: Option<&'static str>,
    pub declared_at: Option<String>,
    pub declared_by: Option<String>,
    pub channels: Vec<ChannelRow>,
    pub escalations: Vec<EscalationRow>,
    pub revisions: Vec<RevisionRow>,
    /// One sentence for screen readers, announced when it changes.
    pub summary: String,
}

impl BoardView {
    pub fn of(s: &CrisisStatus) -> BoardView {
        let taken_down = s.state == CrisisState::Closed || s.expired.is_some();
        let channels: Vec<ChannelRow> = s
            .channels
            .iter()
            .map(|(channel, c)| {
                let (state, class) = match c.state {
                    // The banner is off the public page once the crisis is closed
                    // or has expired, whatever it once showed.
                    _ if taken_down && *channel == Channel::Banner => ("Nedtagen", "done"),
                    ChannelState::Pending => ("Pågår", "pending"),
                    ChannelState::Delivered => ("Klar", "delivered"),
                    ChannelState::PartlyFailed => ("Delvis misslyckad", "partly_failed"),
                    ChannelState::Failed => ("Misslyckad", "failed"),
                };
                let confirmation = c
                    .confirmations
                    .iter()
                    .rev()
                    .find(|k| k.revision == s.revision);
                ChannelRow {
                    id: channel.as_str(),
                    name: channel_name(*channel),
                    state,
                    state_class: class,
                    total: c.total,
                    sent: c.sent,
                    delivered: c.delivered,
                    failed: c.failed,
                    pending: c.pending,
                    confirmed: confirmation
                        .map(|k| format!("{}, {}", k.by, local_time(k.at)))
                        .unwrap_or_else(|| "Nej".to_owned()),
                    unconfirmed: confirmation.is_none() && s.state != CrisisState::Closed,
                }
            })
            .collect();
        let escalations = s
            .channels
            .iter()
            .flat_map(|(channel, c)| {
                c.escalations.iter().map(|e| EscalationRow {
                    channel: channel_name(*channel),
                    level: e.level,
                    deadline: local_time(e.deadline),
                    at: local_time(e.at),
                })
            })
            .collect();
        let revisions = s
            .revisions
            .iter()
            .map(|r| RevisionRow {
                kind: match r.kind {
                    RevisionKind::Declared => "Utlyst",
                    RevisionKind::Updated => "Uppdatering",
                    RevisionKind::AllClear => "Faran över",
                    RevisionKind::Cancelled => "Återkallad",
                },
                by: r.by.clone().unwrap_or_default(),
                at: r.at.map(local_time).unwrap_or_default(),
                reason: r.reason.clone().unwrap_or_default(),
            })
            .collect();
        let done = channels
            .iter()
            .filter(|c| c.state_class != "pending")
            .count();
        let state_text = match (s.state, &s.closed_by, s.closed_at) {
            (CrisisState::Active, _, _) => {
                "Krisen pågår. Meddelandet är ute eller på väg ut.".to_owned()
            }
            (CrisisState::AllClear, _, _) => {
                "Faran är över och det har meddelats. Kvar är att avsluta krisen.".to_owned()
            }
            (CrisisState::Cancelled, _, _) => {
                "Meddelandet är återkallat som felaktigt, och rättelsen har gått ut. Kvar är att avsluta krisen."
                    .to_owned()
            }
            (CrisisState::Closed, by, at) => format!(
                "Krisen är avslutad{}{}. Inget mer skickas, och webbannern är nedtagen.",
                by.as_deref().map(|b| format!(" av {b}")).unwrap_or_default(),
                at.map(|a| format!(" {}", local_time(a))).unwrap_or_default()
            ),
        };
        BoardView {
            id: s.crisis_id.clone(),
            revision: s.revision,
            headline: s.headline.clone(),
            state: crisis_state(s.state),
            state_text,
            practice: practice(s.status),
            declared_at: s.declared_at.map(local_time),
            declared_by: s.declared_by.clone(),
            summary: format!("{done} av {} kanaler klara.", channels.len()),
            channels,
            escalations,
            revisions,
        }
    }
}

/// A lifecycle step a duty officer can take from the board.
pub struct StepLink {
    pub path: &'static str,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "console/board.html")]
pub struct Board {
    pub layout: Layout,
    pub board: BoardView,
    /// The digest of the status shown ([`status_digest`]), which the page's live
    /// stream is opened with: computed for the page only, not per repaint.
    pub seen: String,
    /// Always false: the page holds the summary's live region itself.
    pub oob: bool,
    pub operator: bool,
    /// The channels the operator is assigned (every channel when empty).
    pub assigned: Vec<&'static str>,
    pub steps: Vec<StepLink>,
    /// The current revision's texts, for the operator to publish by hand.
    pub texts: Vec<super::texts::ChannelText>,
}

impl Board {
    /// Whether the signed-in operator confirms channel `id`.
    pub fn confirms(&self, id: &str) -> bool {
        self.assigned.is_empty() || self.assigned.contains(&id)
    }
}

#[derive(Template)]
#[template(path = "console/board_fragment.html")]
pub struct BoardFragment {
    pub board: BoardView,
    /// Whether the fragment also updates the summary's live region (out of band).
    pub oob: bool,
}

/// A lifecycle step of the board.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    AllClear,
    Cancel,
    Close,
}

impl Step {
    fn parse(path: &str) -> Option<Step> {
        match path {
            "faran-over" => Some(Step::AllClear),
            "aterkalla" => Some(Step::Cancel),
            "avsluta" => Some(Step::Close),
            _ => None,
        }
    }

    fn path(self) -> &'static str {
        match self {
            Step::AllClear => "faran-over",
            Step::Cancel => "aterkalla",
            Step::Close => "avsluta",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Step::AllClear => "Faran över",
            Step::Cancel => "Återkalla som felaktigt",
            Step::Close => "Avsluta krisen",
        }
    }

    /// What taking the step does, as the confirmation page says it.
    fn consequence(self) -> &'static str {
        match self {
            Step::AllClear => {
                "Alla som fick meddelandet får besked om att faran är över, på samma kanaler och \
                 språk, med mallens godkända text för faran över. Webbannern visar att faran är över."
            }
            Step::Cancel => {
                "Alla som fick meddelandet får en rättelse: meddelandet skickades av misstag. \
                 Skälet du skriver sparas i loggen."
            }
            Step::Close => {
                "Krisen avslutas. Inget mer skickas och webbannern tas ned. Det går inte att ångra."
            }
        }
    }

    /// The steps open in `state`, in the order the board offers them.
    fn open_in(state: CrisisState) -> Vec<Step> {
        match state {
            CrisisState::Active => vec![Step::AllClear, Step::Cancel],
            CrisisState::AllClear | CrisisState::Cancelled => vec![Step::Close],
            CrisisState::Closed => Vec::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/step.html")]
pub struct StepPage {
    pub layout: Layout,
    pub board: BoardView,
    pub path: &'static str,
    pub label: &'static str,
    pub consequence: &'static str,
    pub needs_reason: bool,
    pub error: Option<String>,
    /// The texts the step sends, in every language (all-clear and correction).
    pub texts: Vec<super::texts::ChannelText>,
}

/// Reads crisis `id`.
pub(super) async fn crisis(
    app: &AppState,
    who: &SignedIn,
    id: String,
) -> Result<CrisisStatus, Response> {
    app.command(
        subject::cmd::GET_CRISIS,
        who.session.actor.clone(),
        None,
        GetCrisis { crisis_id: id },
    )
    .await
    .map_err(|e| {
        if e.problem.status == 404 {
            message(
                StatusCode::NOT_FOUND,
                Some(who),
                "Krisen finns inte",
                "Det finns ingen kris med det numret.",
            )
        } else {
            unavailable(who, &e)
        }
    })
}

/// `GET /konsol/kris/{id}`: the live status board.
pub async fn board(State(app): State<AppState>, who: SignedIn, Path(id): Path<String>) -> Response {
    let status = match crisis(&app, &who, id).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let steps = if who.session.has(Role::DutyOfficer) {
        let update = (status.state == CrisisState::Active).then_some(StepLink {
            path: "uppdatera",
            label: "Uppdatera",
        });
        update
            .into_iter()
            .chain(Step::open_in(status.state).into_iter().map(|s| StepLink {
                path: s.path(),
                label: s.label(),
            }))
            .collect()
    } else {
        Vec::new()
    };
    let operator = who.session.has(Role::Operator);
    let texts = if operator && status.state != CrisisState::Closed {
        let which = super::texts::Which::of_current(&status);
        super::texts::render(&app, &who, &status, which).await
    } else {
        Vec::new()
    };
    page(
        StatusCode::OK,
        &Board {
            layout: Layout::of(Some(&who)),
            board: BoardView::of(&status),
            seen: status_digest(&status),
            oob: false,
            operator,
            assigned: who
                .session
                .actor
                .channels
                .iter()
                .map(|c| c.as_str())
                .collect(),
            steps,
            texts,
        },
    )
}

/// Repaints of a board at most this often, however fast the status changes
/// (a million-recipient fan-out changes it many times a second).
const REPAINT: std::time::Duration = std::time::Duration::from_millis(500);

/// `GET /konsol/kris/{id}/live`: the board's contents as server-sent events
/// (`board`), one at once and then at most two a second while the crisis
/// changes. htmx's SSE extension swaps each in and reconnects after a drop.
pub async fn live(
    State(app): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt as _;
    // The status the page was rendered with (`?seen=`): when it is still the
    // current one, the stream stays quiet until something changes, so an idle
    // board costs no repaint and no buffer for one.
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let seen = pages::value(&params, "seen").map(str::to_owned);
    let statuses = match crate::live_status::watch(&app, who.session.actor.clone(), id).await {
        Ok(s) => s,
        Err(e) if e.problem.status == 404 => {
            return message(
                StatusCode::NOT_FOUND,
                Some(&who),
                "Krisen finns inte",
                "Det finns ingen kris med det numret.",
            );
        }
        Err(e) => return unavailable(&who, &e),
    };
    let render = |status: &CrisisStatus| {
        let html = BoardFragment {
            board: BoardView::of(status),
            oob: true,
        }
        .render()
        .unwrap_or_default();
        // The id is when the repaint was sent (ms since the epoch): a reader can
        // check the pace whatever the network does to the arrivals.
        let sent = chrono::Utc::now().timestamp_millis().to_string();
        Ok::<_, std::convert::Infallible>(Event::default().event("board").id(sent).data(html))
    };
    let shutdown = app.shutdown.clone();
    let events = async_stream::stream! {
        let mut statuses = Box::pin(statuses);
        let Some(first) = statuses.next().await else { return };
        if seen.as_deref() != Some(status_digest(&first).as_str()) {
            yield render(&first);
        }
        let mut latest: Option<CrisisStatus> = None;
        let mut tick = tokio::time::interval(REPAINT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: it stands for the first repaint above.
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                next = statuses.next() => match next {
                    Some(status) => latest = Some(status),
                    None => break,
                },
                _ = tick.tick(), if latest.is_some() => {
                    if let Some(status) = latest.take() {
                        yield render(&status);
                    }
                }
            }
        }
    };
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

/// A short digest of a status: what the board shows, compared by its hash.
pub fn status_digest(status: &CrisisStatus) -> String {
    use sha2::{Digest as _, Sha256};
    let json = serde_json::to_vec(status).unwrap_or_default();
    hex::encode(Sha256::digest(&json).get(..8).unwrap_or_default())
}

/// `GET /konsol/kris/{id}/tavla`: the board alone, for a browser without
/// server-sent events.
pub async fn fragment(
    State(app): State<AppState>,
    who: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match crisis(&app, &who, id).await {
        Ok(status) => page(
            StatusCode::OK,
            &BoardFragment {
                board: BoardView::of(&status),
                oob: true,
            },
        ),
        Err(response) => response,
    }
}

/// The step named by the path, open to this person in this crisis.
fn open_step(who: &SignedIn, status: &CrisisStatus, path: &str) -> Result<Step, Box<Response>> {
    if !who.session.has(Role::DutyOfficer) {
        return Err(Box::new(super::not_allowed(
            who,
            "Bara tjänsteman i beredskap kan ändra en kris.",
        )));
    }
    let step = Step::parse(path).ok_or_else(|| {
        Box::new(message(
            StatusCode::NOT_FOUND,
            Some(who),
            "Sidan finns inte",
            "Det finns inget sådant steg.",
        ))
    })?;
    if !Step::open_in(status.state).contains(&step) {
        return Err(Box::new(message(
            StatusCode::CONFLICT,
            Some(who),
            "Det går inte nu",
            &format!(
                "Krisen är {}; {} går inte i det läget.",
                crisis_state(status.state).to_lowercase(),
                step.label().to_lowercase()
            ),
        )));
    }
    Ok(step)
}

/// `GET /konsol/kris/{id}/steg/{step}`: what the step will do, and the button.
pub async fn step_page(
    State(app): State<AppState>,
    who: SignedIn,
    Path((id, path)): Path<(String, String)>,
) -> Response {
    let status = match crisis(&app, &who, id).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let step = match open_step(&who, &status, &path) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    page(
        StatusCode::OK,
        &step_view(&app, &who, &status, step, None).await,
    )
}

async fn step_view(
    app: &AppState,
    who: &SignedIn,
    status: &CrisisStatus,
    step: Step,
    error: Option<String>,
) -> StepPage {
    let which = match step {
        Step::AllClear => Some(super::texts::Which::AllClear),
        Step::Cancel => Some(super::texts::Which::Cancel),
        Step::Close => None,
    };
    let texts = match which {
        Some(which) => super::texts::render(app, who, status, which)
            .await
            .into_iter()
            .filter(|t| t.channel == "sms" || t.channel == "banner")
            .collect(),
        None => Vec::new(),
    };
    StepPage {
        layout: Layout::of(Some(who)),
        board: BoardView::of(status),
        path: step.path(),
        label: step.label(),
        consequence: step.consequence(),
        needs_reason: step == Step::Cancel,
        error,
        texts,
    }
}

/// `POST /konsol/kris/{id}/steg/{step}`: takes the step, against the revision the
/// duty officer saw (a crisis changed since is refused, not overwritten).
pub async fn step(
    State(app): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    Posted { who, form }: Posted,
) -> Response {
    let status = match crisis(&app, &who, id.clone()).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let step = match open_step(&who, &status, &path) {
        Ok(s) => s,
        Err(response) => return *response,
    };
    let expected_revision = pages::value(&form, "expected_revision")
        .and_then(|r| r.parse::<u32>().ok())
        .unwrap_or(0);
    let actor = who.session.actor.clone();
    let done: Result<Revised, _> = match step {
        Step::AllClear | Step::Close => {
            let subject = if step == Step::AllClear {
                subject::cmd::ALL_CLEAR
            } else {
                subject::cmd::CLOSE
            };
            app.command(
                subject,
                actor,
                None,
                CrisisStep {
                    crisis_id: id.clone(),
                    body: ExpectRevision { expected_revision },
                },
            )
            .await
        }
        Step::Cancel => {
            let reason = pages::value(&form, "reason").unwrap_or_default().trim();
            if reason.is_empty() {
                return page(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &step_view(
                        &app,
                        &who,
                        &status,
                        step,
                        Some("Skriv varför meddelandet återkallas.".to_owned()),
                    )
                    .await,
                );
            }
            app.command(
                subject::cmd::CANCEL,
                actor,
                None,
                CrisisStep {
                    crisis_id: id.clone(),
                    body: CancelCrisis {
                        expected_revision,
                        reason: reason.to_owned(),
                    },
                },
            )
            .await
        }
    };
    match done {
        Ok(_) => Redirect::to(&format!("/konsol/kris/{id}")).into_response(),
        Err(e) if e.problem.status == 409 => page(
            StatusCode::CONFLICT,
            &step_view(
                &app,
                &who,
                &status,
                step,
                Some(
                    "Krisen har ändrats sedan du öppnade sidan. Läs läget nedan och försök igen."
                        .to_owned(),
                ),
            )
            .await,
        ),
        Err(e) if e.problem.status < 500 => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &step_view(&app, &who, &status, step, Some(e.problem.detail)).await,
        ),
        Err(e) => unavailable(&who, &e),
    }
}
