//! The operator's side of a crisis: the list of channels waiting for
//! confirmation, the most escalated first, and the confirmation itself, with a
//! note, from the board.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use krisbud_kit::text::local_time;
use krisbud_proto::command::ConfirmChannel;
use krisbud_proto::status::{CrisisState, CrisisStatus};
use krisbud_proto::{Channel, Role, subject};

use super::pages::{self, Layout, practice};
use super::session::{Posted, SignedIn};
use super::{channel_name, message, page, unavailable};
use crate::state::AppState;

/// `POST /konsol/kris/{id}/bekrafta`: an operator confirms that a channel's
/// message is out, with an optional note.
pub async fn confirm(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Posted { who, form }: Posted,
) -> Response {
    if !who.session.has(Role::Operator) {
        return super::not_allowed(&who, "Bara kanaloperatörer kan bekräfta en kanal.");
    }
    let Some(channel) = pages::value(&form, "channel").and_then(Channel::parse) else {
        return message(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(&who),
            "Välj en kanal",
            "Formuläret saknade kanal. Gå tillbaka och försök igen.",
        );
    };
    let note = pages::value(&form, "note")
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned);
    let confirmed: Result<CrisisStatus, _> = app
        .command(
            subject::cmd::CONFIRM,
            who.session.actor.clone(),
            None,
            ConfirmChannel {
                crisis_id: id.clone(),
                channel,
                note,
            },
        )
        .await;
    match confirmed {
        Ok(_) => Redirect::to(&format!("/konsol/kris/{id}")).into_response(),
        Err(e) if e.problem.status < 500 => message(
            StatusCode::from_u16(e.problem.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY),
            Some(&who),
            "Kanalen kunde inte bekräftas",
            &e.problem.detail,
        ),
        Err(e) => unavailable(&who, &e),
    }
}

/// A channel of a crisis still waiting for an operator's confirmation.
pub struct Unconfirmed {
    pub crisis_id: String,
    pub headline: String,
    pub practice: Option<&'static str>,
    pub channel: &'static str,
    pub since: String,
    pub escalations: usize,
}

#[derive(Template)]
#[template(path = "console/to_confirm.html")]
pub struct ToConfirm {
    pub layout: Layout,
    pub waiting: Vec<Unconfirmed>,
}

/// `GET /konsol/att-bekrafta`: every channel of an open crisis whose latest
/// message no operator has confirmed yet, the most escalated first.
pub async fn to_confirm(State(app): State<AppState>, who: SignedIn) -> Response {
    if !who.session.has(Role::Operator) {
        return super::not_allowed(&who, "Bara kanaloperatörer bekräftar kanaler.");
    }
    let crises: Vec<CrisisStatus> = match app
        .command(
            subject::cmd::LIST_CRISES,
            who.session.actor.clone(),
            None,
            krisbud_proto::command::ListCrises {},
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return unavailable(&who, &e),
    };
    // An operator assigned channels sees only those.
    let assigned = &who.session.actor.channels;
    let mut waiting: Vec<Unconfirmed> = crises
        .iter()
        .filter(|s| s.state != CrisisState::Closed)
        .flat_map(|s| {
            let since = s
                .revisions
                .iter()
                .find(|r| r.revision == s.revision)
                .and_then(|r| r.at)
                .or(s.declared_at)
                .map(local_time)
                .unwrap_or_default();
            s.channels
                .iter()
                .filter(|(channel, _)| assigned.is_empty() || assigned.contains(channel))
                .filter(|(_, c)| !c.confirmations.iter().any(|k| k.revision == s.revision))
                .map(move |(channel, c)| Unconfirmed {
                    crisis_id: s.crisis_id.clone(),
                    headline: s.headline.clone(),
                    practice: practice(s.status),
                    channel: channel_name(*channel),
                    since: since.clone(),
                    escalations: c.escalations.len(),
                })
        })
        .collect();
    waiting.sort_by_key(|w| std::cmp::Reverse(w.escalations));
    page(
        StatusCode::OK,
        &ToConfirm {
            layout: Layout::of(Some(&who)),
            waiting,
        },
    )
}
