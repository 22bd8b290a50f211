//! The runtime the channel services share: consuming a channel's dispatch jobs and
//! draining them on shutdown, retry delays, delivering a job recipient by recipient
//! across retries, reporting outcomes as `DeliveryReported`, and durable outboxes.
//!
//! A channel service keeps only what is its own: how a message reaches a recipient.
//! The rules every channel follows live here once: a job is acknowledged only after
//! its outcome event is stored, transient failures are retried with a growing
//! delay, and a retry does not reach again the recipients already settled.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krisbud_proto::audience::Audience;
use krisbud_proto::event::{DeliveryReported, DeliveryState, ExerciseRefused, RecipientOutcome};
use krisbud_proto::job::{DispatchJob, Recipient};
use krisbud_proto::{Actor, AlertStatus, Channel, Envelope, Event, spec};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bus::{AppendError, Expect};
use crate::consumer::{self, Ack, ConsumerSpec, Delivery};
use crate::shutdown::GRACE;
use crate::{Bus, Runtime, Started};

/// The delay before a job with transient failures is first tried again.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);

/// The longest delay between two tries of a job.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// How long the outcomes of a job being retried are remembered. A job that moved to
/// another instance is never finished here, so its entry must not stay forever.
const SETTLED_TTL: Duration = Duration::from_secs(3600);

/// The delay before a job is tried again after its `delivered`-th delivery:
/// `first`, doubling with every delivery, at most [`MAX_RETRY`].
pub fn backoff(first: Duration, delivered: i64) -> Duration {
    let doublings = u32::try_from(delivered.saturating_sub(1).clamp(0, 7)).unwrap_or(7);
    (first * 2u32.pow(doublings)).min(MAX_RETRY)
}

/// The delay before a job with transient failures is tried again: 0.5 s, doubling
/// with every delivery, at most one minute.
pub fn retry_delay(delivered: i64) -> Duration {
    backoff(FIRST_RETRY, delivered)
}

/// A channel service's handling of its dispatch jobs.
pub trait JobHandler: Send + Sync + 'static {
    /// Handles one delivery of `job` and says how to acknowledge it.
    fn handle(&self, delivery: &Delivery, job: DispatchJob) -> impl Future<Output = Ack> + Send;
}

/// Starts consuming `channel`'s dispatch jobs with `handler`, `concurrency` at a
/// time, under a durable consumer named `service` that every instance shares. A
/// message that is not a job is rejected here; the handler gets only jobs.
///
/// Returns once the consumer exists, so a job dispatched afterwards is handled, and
/// with the health component `service` ready. The returned task ends after
/// `shutdown`: it waits for the jobs in hand at most [`GRACE`], then
/// abandons them, and JetStream delivers them again later.
pub async fn consume(
    rt: &Runtime,
    service: &'static str,
    channel: Channel,
    concurrency: usize,
    shutdown: CancellationToken,
    handler: impl JobHandler,
) -> anyhow::Result<Started> {
    let spec = ConsumerSpec {
        concurrency,
        ..ConsumerSpec::provisioned(service)?
    };
    let handler = Arc::new(handler);
    let guard = Arc::new(ExerciseGuard {
        audiences: rt
            .bus
            .js
            .get_key_value(spec::AUDIENCES.name)
            .await
            .map_err(|e| anyhow::anyhow!("audiences bucket: {e}"))?,
        jobs: Jobs::new(rt.bus.clone(), channel, service),
        service,
    });
    let handle = move |delivery: Delivery| {
        let handler = handler.clone();
        let guard = guard.clone();
        async move {
            match read_job(&delivery) {
                Ok(job) => match guard.check(&delivery, &job).await {
                    Some(refused) => refused,
                    None => handler.handle(&delivery, job).await,
                },
                Err(rejected) => rejected,
            }
        }
    };
    let consuming = consumer::spawn(&rt.bus.js, spec, shutdown.clone(), handle).await?;
    let ready = rt.health.component(service);
    ready.set(true);
    let task = tokio::spawn(async move {
        let result = drain(consuming, &shutdown, channel).await;
        ready.set(false);
        result
    });
    Ok(Started { addr: None, task })
}

/// Waits for the consumer to drain after shutdown, at most the grace period: jobs
/// still in hand then are abandoned and JetStream delivers them again later.
async fn drain(
    mut consuming: JoinHandle<anyhow::Result<()>>,
    shutdown: &CancellationToken,
    channel: Channel,
) -> anyhow::Result<()> {
    tokio::select! {
        result = &mut consuming => result?,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(GRACE).await;
        } => {
            consuming.abort();
            tracing::warn!("{channel} jobs in hand did not finish within the grace period; they will be delivered again");
            Ok(())
        }
    }
}

/// Every channel's own check that an exercise or test reaches only audiences
/// marked for exercises, whatever the coordinator decided: a job that would reach
/// anyone else is refused, its recipients failed, and the attempt recorded.
struct ExerciseGuard {
    audiences: async_nats::jetstream::kv::Store,
    jobs: Jobs,
    service: &'static str,
}

/// The reason a refused exercise job's recipients fail with.
pub const EXERCISE_REFUSED: &str =
    "refused: an exercise or test may reach only audiences marked for exercises";

impl ExerciseGuard {
    /// `None` when the job may go out; otherwise how to acknowledge it.
    async fn check(&self, delivery: &Delivery, job: &DispatchJob) -> Option<Ack> {
        if job.status == AlertStatus::Actual || job.recipients.is_empty() {
            return None;
        }
        let mut public = Vec::new();
        for id in &job.audiences {
            match self.audiences.get(id).await {
                Ok(Some(bytes)) => {
                    let exercise = serde_json::from_slice::<Audience>(&bytes)
                        .map(|a| a.exercise)
                        .unwrap_or(false);
                    if !exercise {
                        public.push(id.clone());
                    }
                }
                // Deleted since: nobody can say it is an exercise audience.
                Ok(None) => public.push(id.clone()),
                Err(e) => {
                    tracing::warn!(job = %job.job_id, error = %e, "cannot check the job's audiences; trying again later");
                    return Some(Ack::Retry(retry_delay(delivery.delivered)));
                }
            }
        }
        if job.audiences.is_empty() {
            // Recipients from nowhere known: never an exercise audience.
            public.push("(none named)".into());
        }
        if public.is_empty() {
            return None;
        }
        tracing::error!(job = %job.job_id, audiences = ?public, "exercise job to a public audience refused");
        let refused = Envelope::with_id(
            format!("{}.exercise-refused", job.job_id),
            Actor::service(self.service),
            Event::ExerciseRefused(ExerciseRefused {
                crisis_id: Some(job.crisis_id.clone()),
                job_id: Some(job.job_id.clone()),
                status: job.status,
                template: None,
                audiences: public,
                refused_by: self.service.to_owned(),
            }),
        );
        if let Err(e) = self.jobs.bus.append(&refused, Expect::Any).await {
            tracing::warn!(error = %e, "cannot record the refusal; trying again later");
            return Some(Ack::Retry(retry_delay(delivery.delivered)));
        }
        Some(
            self.jobs
                .refuse(
                    delivery,
                    job,
                    "refused",
                    all_failed(job, EXERCISE_REFUSED),
                    EXERCISE_REFUSED,
                )
                .await,
        )
    }
}

/// The dispatch job a delivery carries, or the rejection of a message that is not
/// one.
fn read_job(delivery: &Delivery) -> Result<DispatchJob, Ack> {
    serde_json::from_slice(&delivery.payload).map_err(|e| {
        // serde's message could quote the payload, addresses included; the
        // position is enough to find the fault.
        Ack::Reject(format!(
            "not a dispatch job ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// What one attempt to reach one recipient came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Settled: sent, delivered or failed for good.
    Settled(RecipientOutcome),
    /// Could not be settled now (the provider overloaded or unreachable); the job
    /// is tried again later. The text says why, without personal data.
    Transient(String),
}

/// The outcome of a recipient the message reached where it is read, with a note
/// when there is something to say.
pub fn delivered(recipient: &str, note: Option<String>) -> RecipientOutcome {
    RecipientOutcome {
        recipient: recipient.to_owned(),
        state: DeliveryState::Delivered,
        provider_ref: None,
        reason: note,
        possible_duplicate: false,
    }
}

/// The outcome of a recipient that can never be reached, and why.
pub fn failed(recipient: &str, reason: &str) -> RecipientOutcome {
    RecipientOutcome {
        recipient: recipient.to_owned(),
        state: DeliveryState::Failed,
        provider_ref: None,
        reason: Some(reason.to_owned()),
        possible_duplicate: false,
    }
}

/// Every recipient of `job` failed for `reason`.
pub fn all_failed(job: &DispatchJob, reason: &str) -> Vec<RecipientOutcome> {
    job.recipients
        .iter()
        .map(|r| failed(&r.reference, reason))
        .collect()
}

/// An error with its causes, `outer: inner: innermost`, for reasons and logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Many errors repeat their cause in their own message.
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// A channel service's side of its jobs: delivering them recipient by recipient
/// across retries, and reporting their outcomes.
pub struct Jobs {
    bus: Bus,
    channel: Channel,
    service: &'static str,
    settled: Settled,
}

impl Jobs {
    /// The jobs of `channel`, reported by `service` on `bus`.
    pub fn new(bus: Bus, channel: Channel, service: &'static str) -> Jobs {
        Jobs {
            bus,
            channel,
            service,
            settled: Settled::default(),
        }
    }

    /// Delivers `job` to the recipients not settled by an earlier delivery of it,
    /// then reports every recipient's outcome and says how to acknowledge.
    ///
    /// `address` reads a recipient's address, or says why it can never be used;
    /// `send` gets the open recipients with their addresses and answers one attempt
    /// for each. When some stay open for a transient reason, the settled ones are
    /// remembered and the job is retried, so the retry reaches only the others.
    /// `provider` names the transport once the sending is over, so a job whose
    /// delivery began before a failover is reported under the provider that
    /// carried it.
    pub async fn deliver<T>(
        &self,
        delivery: &Delivery,
        job: &DispatchJob,
        provider: impl Fn() -> String,
        address: impl Fn(&Recipient) -> Result<T, &'static str>,
        send: impl AsyncFnOnce(Vec<(Recipient, T)>) -> Vec<(Recipient, Attempt)>,
    ) -> Ack {
        let mut settled = self.settled.take(&job.job_id);
        let mut open: Vec<(Recipient, T)> = Vec::new();
        // A recipient named twice in a job is sent to once.
        let mut named = std::collections::HashSet::with_capacity(job.recipients.len());
        for recipient in &job.recipients {
            if settled.contains_key(&recipient.reference)
                || !named.insert(recipient.reference.as_str())
            {
                continue;
            }
            match address(recipient) {
                Ok(to) => open.push((recipient.clone(), to)),
                Err(reason) => {
                    settled.insert(
                        recipient.reference.clone(),
                        failed(&recipient.reference, reason),
                    );
                }
            }
        }
        let mut transient = None;
        if !open.is_empty() {
            let asked = open.len();
            let attempts = send(open).await;
            if attempts.len() != asked {
                transient = Some(format!(
                    "the provider answered for {} of {asked} recipients",
                    attempts.len()
                ));
            }
            for (recipient, attempt) in attempts {
                match attempt {
                    Attempt::Settled(outcome) => {
                        settled.insert(recipient.reference, outcome);
                    }
                    Attempt::Transient(reason) => transient = Some(reason),
                }
            }
        }
        if let Some(reason) = transient {
            let unsettled = job
                .recipients
                .iter()
                .filter(|r| !settled.contains_key(&r.reference))
                .count();
            tracing::warn!(
                job = %job.job_id,
                unsettled,
                %reason,
                "{} job not finished; trying again later",
                self.channel
            );
            self.settled.keep(&job.job_id, settled);
            return Ack::Retry(retry_delay(delivery.delivered));
        }
        let outcomes = job
            .recipients
            .iter()
            .filter_map(|r| settled.get(&r.reference).cloned())
            .collect();
        let ack = self.finish(delivery, job, &provider(), outcomes).await;
        if matches!(ack, Ack::Retry(_)) {
            self.settled.keep(&job.job_id, settled);
        }
        ack
    }

    /// Reports the job's outcomes: done once they are stored, retried when they
    /// cannot be.
    pub async fn finish(
        &self,
        delivery: &Delivery,
        job: &DispatchJob,
        provider: &str,
        outcomes: Vec<RecipientOutcome>,
    ) -> Ack {
        let count = |state| outcomes.iter().filter(|o| o.state == state).count();
        let sent = count(DeliveryState::Sent);
        let delivered = count(DeliveryState::Delivered);
        let failed = count(DeliveryState::Failed);
        match self
            .report(job, provider, outcomes, retries(delivery))
            .await
        {
            Ok(()) => {
                tracing::info!(job = %job.job_id, sent, delivered, failed, "{} job reported", self.channel);
                Ack::Done
            }
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot store the {} outcome; trying again later", self.channel);
                Ack::Retry(retry_delay(delivery.delivered))
            }
        }
    }

    /// Records that a job can never be delivered, with `outcomes` saying why, then
    /// rejects it for good; when that cannot be recorded, the job is retried.
    pub async fn refuse(
        &self,
        delivery: &Delivery,
        job: &DispatchJob,
        provider: &str,
        outcomes: Vec<RecipientOutcome>,
        reason: &str,
    ) -> Ack {
        match self
            .report(job, provider, outcomes, retries(delivery))
            .await
        {
            Ok(()) => Ack::Reject(reason.to_owned()),
            Err(e) => {
                tracing::warn!(job = %job.job_id, error = %e, "cannot store why a job is refused; trying again later");
                Ack::Retry(retry_delay(delivery.delivered))
            }
        }
    }

    /// Appends the job's `DeliveryReported` with the deterministic id
    /// `<job>.outcome`, so reporting the same job twice stores it once.
    pub async fn report(
        &self,
        job: &DispatchJob,
        provider: &str,
        outcomes: Vec<RecipientOutcome>,
        retries: u32,
    ) -> Result<(), AppendError> {
        let event = Event::DeliveryReported(DeliveryReported {
            crisis_id: job.crisis_id.clone(),
            revision: job.revision,
            channel: self.channel,
            job_id: job.job_id.clone(),
            provider: provider.to_owned(),
            outcomes,
            retries,
        });
        let mut envelope = Envelope::with_id(
            format!("{}.outcome", job.job_id),
            Actor::service(self.service),
            event,
        );
        envelope.causation_id = Some(job.job_id.clone());
        self.bus.append(&envelope, Expect::Any).await?;
        Ok(())
    }
}

/// How often a job was delivered before this delivery: its retries.
pub fn retries(delivery: &Delivery) -> u32 {
    u32::try_from(delivery.delivered.saturating_sub(1)).unwrap_or(u32::MAX)
}

/// The settled outcomes of one job, by recipient reference.
type Outcomes = HashMap<String, RecipientOutcome>;

/// Outcomes already settled for jobs that are being retried, by job id, with when
/// they were kept.
#[derive(Default)]
struct Settled {
    jobs: Mutex<HashMap<String, (Instant, Outcomes)>>,
}

impl Settled {
    fn take(&self, job_id: &str) -> Outcomes {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(job_id)
            .map(|(_, outcomes)| outcomes)
            .unwrap_or_default()
    }

    fn keep(&self, job_id: &str, outcomes: Outcomes) {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.retain(|_, (at, _)| at.elapsed() < SETTLED_TTL);
        jobs.insert(job_id.to_owned(), (Instant::now(), outcomes));
    }
}

/// A channel's JSON-lines outbox, `<data_dir>/outbox/<channel>.jsonl`: it stands
/// in for the provider, so a job's lines count as delivered once they are on disk.
pub struct OutboxFile {
    path: PathBuf,
    // Jobs handled at once must not interleave their lines; the lock keeps one
    // append at a time within this process.
    lock: tokio::sync::Mutex<()>,
}

impl OutboxFile {
    /// The outbox of `channel`, creating its directory (the file is created by the
    /// first append).
    pub fn new(data_dir: &Path, channel: Channel) -> anyhow::Result<OutboxFile> {
        let dir = data_dir.join("outbox");
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the {channel} outbox directory {}: {e}",
                dir.display()
            )
        })?;
        Ok(OutboxFile {
            path: dir.join(format!("{channel}.jsonl")),
            lock: tokio::sync::Mutex::default(),
        })
    }

    /// The file the outbox appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one job's lines at once and syncs them to disk.
    pub async fn append(&self, lines: Vec<u8>) -> std::io::Result<()> {
        let _guard = self.lock.lock().await;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || append_synced(&path, &lines))
            .await
            .map_err(std::io::Error::other)?
    }
}

/// Appends `bytes` with one write to a file opened with `O_APPEND`, then syncs it.
/// A new file is readable by its owner only, because outboxes hold addresses.
pub fn append_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stop_at_a_minute() {
        assert_eq!(retry_delay(1), Duration::from_millis(500));
        assert_eq!(retry_delay(2), Duration::from_secs(1));
        assert_eq!(retry_delay(4), Duration::from_secs(4));
        assert_eq!(retry_delay(100), Duration::from_secs(60));
        assert_eq!(retry_delay(0), Duration::from_millis(500));
    }

    #[test]
    fn backoff_starts_where_asked() {
        let second = Duration::from_secs(1);
        assert_eq!(backoff(second, 1), Duration::from_secs(1));
        assert_eq!(backoff(second, 3), Duration::from_secs(4));
        assert_eq!(backoff(second, 7), Duration::from_secs(60));
        assert_eq!(backoff(second, i64::MAX), Duration::from_secs(60));
        assert_eq!(backoff(second, i64::MIN), Duration::from_secs(1));
    }

    #[test]
    fn a_message_that_is_not_a_job_is_rejected_without_quoting_it() {
        let delivery = Delivery {
            subject: "krisbud.dispatch.sms.c1".into(),
            payload: br#"{"recipients": [{"address": "+46701234567"}]}"#.to_vec().into(),
            headers: None,
            stream_sequence: 1,
            delivered: 1,
        };
        let Err(Ack::Reject(reason)) = read_job(&delivery) else {
            panic!("a job that is not one is rejected");
        };
        assert!(reason.starts_with("not a dispatch job"), "{reason}");
        assert!(!reason.contains("4670"), "{reason}");
    }

    #[tokio::test]
    async fn outbox_appends_whole_jobs_to_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = OutboxFile::new(dir.path(), Channel::Intranet).unwrap();
        assert_eq!(outbox.path(), dir.path().join("outbox/intranet.jsonl"));
        assert!(!outbox.path().exists(), "created by the first append");
        outbox.append(b"{\"a\":1}\n".to_vec()).await.unwrap();
        outbox.append(b"{\"b\":2}\n".to_vec()).await.unwrap();
        let text = std::fs::read_to_string(outbox.path()).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(outbox.path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn error_chains_name_each_cause_once() {
        let refused = || std::io::Error::other("connection refused");
        assert_eq!(
            error_chain(&Wrapped(refused())),
            "cannot connect: connection refused"
        );
        // io::Error shows its inner error's message and hands on its source.
        let wrapped = std::io::Error::other(Wrapped(refused()));
        assert_eq!(error_chain(&wrapped), "cannot connect: connection refused");
    }

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("cannot connect")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
}
