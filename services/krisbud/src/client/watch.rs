//! `krisbud status <id> --watch`: polls `GET /crises/{id}` and shows one progress
//! bar per channel (recipients with an outcome out of the total) and, under the
//! bars, a line per channel saying who confirmed it or that it waits, until every
//! channel has an outcome for every recipient and is confirmed for the crisis's
//! current revision, or Ctrl-C. Every line is cut to one column less than the
//! terminal's width, so nothing wraps; `tests/status_watch.rs` reads the screen
//! under tmux at 80 and 200 columns.
//!
//! When stdout is not a terminal the bars are hidden and a plain line is printed
//! for each channel whenever what it shows changes, so a log or a pipe gets a
//! readable history instead of escape sequences.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use krisbud_proto::Channel;
use krisbud_proto::status::{ChannelStatus, Confirmation, CrisisStatus};

use rust_i18n::t;

use super::Client;

/// How often the status is polled.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// How long a crisis may stay unknown (just declared, or a mistyped id), or the
/// API unreachable after the first answer, before the watch gives up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// How a watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchEnd {
    /// Every channel has an outcome for every recipient and is confirmed.
    Done,
    /// Interrupted with Ctrl-C.
    Interrupted,
}

/// Watches crisis `id` until it is done or Ctrl-C.
pub async fn watch(client: &Client, id: &str) -> anyhow::Result<WatchEnd> {
    let mut view = View::new(std::io::stdout().is_terminal());
    tokio::select! {
        result = poll(client, id, &mut view) => result.map(|()| WatchEnd::Done),
        _ = tokio::signal::ctrl_c() => {
            view.abandon();
            eprintln!("krisbud: {}", t!("watch.interrupted"));
            Ok(WatchEnd::Interrupted)
        }
    }
}

async fn poll(client: &Client, id: &str, view: &mut View) -> anyhow::Result<()> {
    let mut answered_once = false;
    let mut trouble_since: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let why = match client.crisis_if_known(id).await {
            Ok(Some(status)) => {
                answered_once = true;
                trouble_since = None;
                view.show(&status);
                if finished(&status) {
                    view.finish(&status);
                    return Ok(());
                }
                continue;
            }
            Ok(None) => t!("watch.unknown", id = id).into_owned(),
            Err(e) if !answered_once => return Err(e),
            Err(e) => format!("{e:#}"),
        };
        let since = *trouble_since.get_or_insert_with(|| {
            view.note(&t!("watch.waiting", why = why));
            tokio::time::Instant::now()
        });
        if since.elapsed() >= GIVE_UP_AFTER {
            view.abandon();
            anyhow::bail!(t!(
                "watch.gave_up",
                secs = GIVE_UP_AFTER.as_secs(),
                why = why
            ));
        }
    }
}

/// Whether every channel has an outcome for every recipient and is confirmed for
/// the current revision.
pub fn finished(s: &CrisisStatus) -> bool {
    !s.channels.is_empty()
        && s.channels
            .values()
            .all(|c| settled(c) && confirmation(s.revision, c).is_some())
}

/// Whether every planned recipient of the channel has an outcome.
fn settled(c: &ChannelStatus) -> bool {
    c.planned && c.pending == 0
}

/// The confirmation of the channel for `revision` (or a later one), if any.
fn confirmation(revision: u32, c: &ChannelStatus) -> Option<&Confirmation> {
    c.confirmations
        .iter()
        .rev()
        .find(|k| k.revision >= revision)
}

/// Recipients with an outcome: sent, delivered or failed.
fn done(c: &ChannelStatus) -> u64 {
    c.sent + c.delivered + c.failed
}

/// The counts a bar's message shows: delivered, failed, pending, possible
/// duplicates and the provider split.
pub fn counts(c: &ChannelStatus) -> String {
    let mut text = t!(
        "watch.counts",
        delivered = c.delivered,
        failed = c.failed,
        pending = c.pending,
        duplicates = c.possible_duplicates
    )
    .into_owned();
    if !c.providers.is_empty() {
        let split: Vec<String> = c
            .providers
            .iter()
            .map(|(provider, n)| format!("{provider} {n}"))
            .collect();
        text.push_str(&format!("  via {}", split.join(", ")));
    }
    if c.retries > 0 {
        text.push_str(&format!("  {}", t!("watch.retries", n = c.retries)));
    }
    text
}

/// The same counts for a bar's message on a terminal, what needs attention
/// first (the bar already shows the progress), so a narrow terminal cuts the
/// least important end.
fn short_counts(c: &ChannelStatus) -> String {
    let mut text = t!(
        "watch.short_counts",
        delivered = c.delivered,
        failed = c.failed,
        pending = c.pending,
        duplicates = c.possible_duplicates
    )
    .into_owned();
    if !c.providers.is_empty() {
        let split: Vec<String> = c
            .providers
            .iter()
            .map(|(provider, n)| format!("{provider} {n}"))
            .collect();
        text.push_str(&format!(" · via {}", split.join(", ")));
    }
    text
}

/// Who confirmed the channel and when, or that nobody has yet.
fn confirmation_text(revision: u32, c: &ChannelStatus) -> String {
    match confirmation(revision, c) {
        Some(k) => t!(
            "watch.confirmed_by",
            by = k.by,
            at = krisbud_kit::text::local_clock_seconds(k.at)
        )
        .into_owned(),
        None => t!("status.not_confirmed").into_owned(),
    }
}

/// One channel as a plain line: `sms 5/5 levererade 5 ... – ej bekräftad`.
pub fn plain_line(revision: u32, channel: Channel, c: &ChannelStatus) -> String {
    if !c.planned {
        return format!(
            "{:<9} {} – {}",
            channel.as_str(),
            t!("watch.planning"),
            confirmation_text(revision, c)
        );
    }
    format!(
        "{:<9} {}/{}  {} – {}",
        channel.as_str(),
        done(c),
        c.total,
        counts(c),
        confirmation_text(revision, c)
    )
}

/// What is left of a terminal line for a bar's message: the prefix, the bar and
/// the counts take 34 columns, and one column stays free so that no line ever
/// fills the width (a full line makes some terminals wrap, and the redraw then
/// leaves copies behind).
const BAR_COLUMNS: usize = 34;

/// The terminal's width in columns (80 when it cannot be told).
fn terminal_width() -> usize {
    let (_, columns) = console::Term::stdout().size();
    if columns == 0 {
        80
    } else {
        usize::from(columns)
    }
}

/// `text` cut to `columns` display columns, with `…` where it was cut.
pub fn fit(text: &str, columns: usize) -> String {
    console::truncate_str(text, columns, "…").into_owned()
}

/// A channel's bar: recipients with an outcome out of the total once the
/// channel is planned, the message alone before.
fn bar_style(planned: bool) -> ProgressStyle {
    let template = if planned {
        "{prefix:<8} [{bar:12}] {pos:>4}/{len:<4} {msg}"
    } else {
        "{prefix:<8} {msg}"
    };
    ProgressStyle::with_template(template)
        .expect("a template")
        .progress_chars("=> ")
}

/// A channel's confirmation line, under the bars.
fn confirmation_line(revision: u32, channel: Channel, c: &ChannelStatus) -> String {
    match confirmation(revision, c) {
        Some(_) => format!("{}: {}", channel.as_str(), confirmation_text(revision, c)),
        None => format!(
            "{}: {}",
            channel.as_str(),
            t!("watch.awaiting_confirmation", revision = revision)
        ),
    }
}

/// What the terminal shows: on a terminal a bar per channel and, under the bars,
/// a confirmation line per channel, both made once when the channels are first
/// known so the number of lines never changes while it is redrawn; plain lines
/// otherwise.
struct View {
    bars: MultiProgress,
    terminal: bool,
    header: Option<String>,
    channels: BTreeMap<Channel, ChannelView>,
}

struct ChannelView {
    bar: ProgressBar,
    /// Whether the bar has its planned style.
    planned: bool,
    /// Who confirmed the channel, or that it waits for a confirmation.
    confirmation: ProgressBar,
    /// The last plain line printed.
    printed: String,
}

impl View {
    fn new(terminal: bool) -> View {
        let target = if terminal {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        };
        View {
            bars: MultiProgress::with_draw_target(target),
            terminal,
            header: None,
            channels: BTreeMap::new(),
        }
    }

    /// A line above the bars, or a plain line.
    fn say(&self, line: &str) {
        if self.terminal {
            let _ = self
                .bars
                .println(fit(line, terminal_width().saturating_sub(1)));
        } else {
            println!("{line}");
        }
    }

    /// A passing remark (waiting for the API), on stderr.
    fn note(&self, line: &str) {
        self.bars.suspend(|| eprintln!("krisbud: {line}"));
    }

    fn show(&mut self, s: &CrisisStatus) {
        let header = super::format_header(s);
        if self.header.as_ref() != Some(&header) {
            self.say(&header);
            self.header = Some(header);
        }
        self.add_channels(s.channels.keys().copied());
        let width = terminal_width();
        for (channel, c) in &s.channels {
            let Some(view) = self.channels.get_mut(channel) else {
                continue;
            };
            if view.planned != c.planned {
                // Until the plan is known there is no total to draw a bar against.
                view.bar.set_style(bar_style(c.planned));
                view.planned = c.planned;
            }
            view.bar.set_length(c.total);
            view.bar.set_position(done(c).min(c.total));
            let message = if c.planned {
                fit(&short_counts(c), width.saturating_sub(BAR_COLUMNS + 1))
            } else {
                t!("watch.planning").into_owned()
            };
            view.bar.set_message(message);
            view.confirmation.set_message(fit(
                &confirmation_line(s.revision, *channel, c),
                width.saturating_sub(3),
            ));
            let line = plain_line(s.revision, *channel, c);
            if !self.terminal && view.printed != line {
                println!("{line}");
                view.printed = line;
            }
        }
    }

    /// Adds the channels not shown yet: their bars after the last bar, their
    /// confirmation lines after the last confirmation line.
    fn add_channels(&mut self, channels: impl Iterator<Item = Channel>) {
        let new: Vec<Channel> = channels
            .filter(|c| !self.channels.contains_key(c))
            .collect();
        if new.is_empty() {
            return;
        }
        for channel in new {
            // Hidden until the MultiProgress takes it: a new bar draws on stderr,
            // and a line drawn there before it joins is never cleared.
            let bar = ProgressBar::hidden();
            bar.set_style(bar_style(false));
            bar.set_prefix(channel.as_str());
            let confirmation = ProgressBar::hidden();
            confirmation.set_style(ProgressStyle::with_template("  {msg}").expect("a template"));
            let last_bar = self.channels.values().map(|v| &v.bar).next_back();
            let bar = match last_bar {
                Some(last) => self.bars.insert_after(last, bar),
                None => self.bars.add(bar),
            };
            let confirmation = self.bars.add(confirmation);
            self.channels.insert(
                channel,
                ChannelView {
                    bar,
                    planned: false,
                    confirmation,
                    printed: String::new(),
                },
            );
        }
    }

    fn finish(&mut self, s: &CrisisStatus) {
        for view in self.channels.values() {
            view.bar.finish();
            view.confirmation.finish();
        }
        let text = if s.channels.len() == 1 {
            t!("watch.done_one", revision = s.revision)
        } else {
            t!("watch.done", n = s.channels.len(), revision = s.revision)
        };
        self.say(&text);
    }

    fn abandon(&mut self) {
        for view in self.channels.values() {
            view.bar.abandon();
            view.confirmation.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn channel(total: u64, delivered: u64, confirmed_rev: Option<u32>) -> ChannelStatus {
        ChannelStatus {
            planned: true,
            total,
            delivered,
            pending: total - delivered,
            providers: [("outbox".to_owned(), delivered)].into(),
            confirmations: confirmed_rev
                .map(|revision| Confirmation {
                    revision,
                    by: "operator.ali".into(),
                    at: Utc::now(),
                    note: None,
                })
                .into_iter()
                .collect(),
            ..ChannelStatus::default()
        }
    }

    fn crisis(revision: u32, channels: Vec<(Channel, ChannelStatus)>) -> CrisisStatus {
        CrisisStatus {
            crisis_id: "c1".into(),
            revision,
            channels: channels.into_iter().collect(),
            ..CrisisStatus::default()
        }
    }

    #[test]
    fn finished_needs_every_outcome_and_a_confirmation_of_the_revision() {
        assert!(!finished(&crisis(1, vec![])));
        assert!(!finished(&crisis(
            1,
            vec![(Channel::Sms, channel(5, 4, Some(1)))]
        )));
        assert!(!finished(&crisis(
            1,
            vec![(Channel::Sms, channel(5, 5, None))]
        )));
        assert!(finished(&crisis(
            1,
            vec![(Channel::Sms, channel(5, 5, Some(1)))]
        )));
        assert!(
            !finished(&crisis(2, vec![(Channel::Sms, channel(5, 5, Some(1)))])),
            "an update needs a new confirmation"
        );
        let unplanned = ChannelStatus {
            confirmations: channel(0, 0, Some(1)).confirmations,
            ..ChannelStatus::default()
        };
        assert!(!finished(&crisis(1, vec![(Channel::Banner, unplanned)])));
    }

    /// In English: unit tests leave the process's language at rust-i18n's
    /// default; the Swedish lines are read in `tests/status_watch.rs`.
    #[test]
    fn a_plain_line_shows_progress_counts_and_providers() {
        let mut sms = channel(5, 3, None);
        sms.possible_duplicates = 2;
        sms.providers = [("46elks".to_owned(), 2), ("sinch".to_owned(), 1)].into();
        assert_eq!(
            plain_line(1, Channel::Sms, &sms),
            "sms       3/5  delivered 3  failed 0  pending 2  possible duplicates 2  \
             via 46elks 2, sinch 1 – not confirmed"
        );
        let banner = channel(1, 1, Some(1));
        let line = plain_line(1, Channel::Banner, &banner);
        assert!(line.starts_with("banner    1/1  "), "{line}");
        assert!(line.contains("confirmed by operator.ali"), "{line}");
    }
}
