//! The ways an email leaves: SMTP through lettre's SMTP client (no TLS, STARTTLS or
//! implicit TLS, optional authentication) or lettre's file transport writing `.eml`
//! files to `<data_dir>/outbox/email/`.
//!
//! SMTP 250 means the relay took the message (`Sent`); a 5xx, or a message the
//! relay cannot take at all (a non-ASCII address without SMTPUTF8), is final
//! (`Failed`, with the relay's code and text, the address masked); a 4xx, a lost
//! session, a timeout, a relay that cannot be reached or whose certificate is not
//! trusted is transient and the job is tried again. A relay that refuses the login
//! for good (5xx, or no mechanism we can use), or that does not offer the STARTTLS
//! the configuration requires, fails the recipients (`Failed`) instead of being
//! tried forever; nothing is ever sent in clear when TLS is asked for. After such a
//! refusal the pool does not try to open a session again for a minute (failing
//! the messages at once), so a wrong password does not cost the relay one login
//! attempt per recipient. A written `.eml` is where it is read, so it is
//! `Delivered`.
//!
//! The relay's certificate is checked against the system's roots and, when the
//! operator gives them (`email.smtp_tls_ca_file`), a private CA's certificates or
//! the relay's own self-signed one. There is no switch to accept any certificate.
//!
//! The SMTP sessions are this module's own small pool, [`SmtpPool`], over lettre's
//! `AsyncSmtpConnection`, instead of lettre's pooled transport: that one bounds only
//! the sessions it keeps idle (under load it opens a new session whenever none is
//! idle, and hands finished ones back on a task of its own), applies its timeout to
//! connecting only, and leaves Nagle's algorithm on, which delays the end of every
//! message by the relay's delayed ACK.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::io::{AsyncRead as _, AsyncWrite as _};
use krisbud_kit::Secret;
pub use krisbud_kit::channel::Attempt;
use krisbud_kit::channel::error_chain;
use krisbud_kit::privacy::mask;
use krisbud_proto::event::{DeliveryState, RecipientOutcome};
use krisbud_proto::job::Recipient;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
#[allow(deprecated)] // the only public way to run lettre's TLS over a socket of our own
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, AsyncTokioStream, Certificate, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{AsyncFileTransport, AsyncTransport as _, Message, Tokio1Executor};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How much of an SMTP reply goes into a failure reason.
const REASON_LIMIT: usize = 300;

/// TLS towards the SMTP relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text; only for a relay on the same host or a test server.
    None,
    /// STARTTLS, required.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl SmtpTls {
    /// The usual port: 25 without TLS, 587 for STARTTLS, 465 for implicit TLS.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::None => 25,
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
        }
    }
}

/// How to reach the SMTP relay.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The relay's host name.
    pub host: String,
    /// The relay's port.
    pub port: u16,
    /// TLS towards the relay.
    pub tls: SmtpTls,
    /// Authenticate only when set.
    pub username: Option<String>,
    /// The password, used with `username`.
    pub password: Secret,
    /// How long opening a session, or one message's transaction, may take.
    pub timeout: Duration,
    /// SMTP sessions open at once, at most.
    pub connections: usize,
    /// PEM certificates to trust for the relay besides the system's roots: a
    /// private CA, or the relay's own self-signed certificate.
    pub ca_pem: Option<Vec<u8>>,
}

/// Where emails go.
#[derive(Clone)]
pub enum Mailer {
    /// An SMTP relay.
    Smtp(Arc<SmtpPool>),
    /// `.eml` files in a directory.
    Outbox {
        /// lettre's file transport, naming each file after a fresh id.
        transport: AsyncFileTransport<Tokio1Executor>,
        /// The directory it writes to.
        dir: PathBuf,
    },
}

impl Mailer {
    /// An SMTP mailer; sessions are opened when the first message goes.
    pub fn smtp(settings: &SmtpSettings) -> anyhow::Result<Mailer> {
        Ok(Mailer::Smtp(SmtpPool::new(settings)?))
    }

    /// An outbox in `<data_dir>/outbox/email`, creating the directory readable by
    /// its owner only (the files hold addresses).
    pub fn outbox(data_dir: &Path) -> anyhow::Result<Mailer> {
        let dir = data_dir.join("outbox").join("email");
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the email outbox {}: {e}", dir.display())
        })?;
        Ok(Mailer::Outbox {
            transport: AsyncFileTransport::new(&dir),
            dir,
        })
    }

    /// The name reported as the job's provider.
    pub fn name(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::Outbox { .. } => "outbox",
        }
    }

    /// Sends one recipient's message.
    pub async fn send(&self, message: Message, recipient: &Recipient, message_id: &str) -> Attempt {
        match self {
            Mailer::Smtp(pool) => match pool.send(message.envelope(), &message.formatted()).await {
                Ok(_) => settled(recipient, DeliveryState::Sent, Some(message_id), None),
                Err(e) if e.is_final() => {
                    let reason = scrub(&e.to_string(), &recipient.address);
                    settled(recipient, DeliveryState::Failed, None, Some(reason))
                }
                Err(e) => Attempt::Transient(scrub(&e.to_string(), &recipient.address)),
            },
            Mailer::Outbox { transport, dir } => match transport.send(message).await {
                Ok(id) => match sync(&dir.join(format!("{id}.eml"))).await {
                    Ok(()) => settled(recipient, DeliveryState::Delivered, Some(&id), None),
                    Err(e) => Attempt::Transient(format!("cannot sync the email outbox: {e}")),
                },
                Err(e) => Attempt::Transient(format!(
                    "cannot write the email outbox: {}",
                    error_chain(&e)
                )),
            },
        }
    }
}

/// Sessions idle this long are checked with `NOOP` before they carry a message
/// (RFC 5321 has relays wait at least five minutes, but some close sooner).
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

/// Sessions idle this long are closed.
const CLOSE_IDLE_AFTER: Duration = Duration::from_secs(60);

/// After the relay refused us for good (the login, or a STARTTLS it does not
/// offer), no session is opened for this long: messages fail at once with the
/// same reason.
const HOLD_AFTER_REFUSAL: Duration = Duration::from_secs(60);

/// The SMTP sessions with one relay: at most `connections` open at once (the ones
/// carrying a message and the idle ones together), kept open between messages.
///
/// A message first takes one of `connections` permits, then an idle session or,
/// when there is none, a new one; it puts the session back (or closes it) before it
/// gives the permit back. So a session is only opened when none is idle and fewer
/// than `connections` are in use, and the sessions never outnumber the permits.
pub struct SmtpPool {
    relay: Relay,
    permits: Semaphore,
    idle: Mutex<Vec<IdleSession>>,
    /// When and why the relay last refused us for good.
    refused: Mutex<Option<(Instant, String)>>,
}

/// How to open a session with the relay.
struct Relay {
    host: String,
    port: u16,
    tls: SmtpTls,
    tls_parameters: Option<TlsParameters>,
    hello: ClientId,
    credentials: Option<Credentials>,
    timeout: Duration,
}

struct IdleSession {
    session: AsyncSmtpConnection,
    since: Instant,
}

/// Why a message did not reach the relay.
#[derive(Debug)]
pub enum SendError {
    /// No session could be opened: the relay is unreachable, refuses us, or TLS or
    /// authentication failed. Nothing about the message; tried again later.
    Connect(String),
    /// The relay did not answer within the timeout; the session is closed.
    Timeout(Duration),
    /// No session can be opened until the relay or the configuration changes: the
    /// relay refused the login for good, or does not offer the STARTTLS required.
    Refused(String),
    /// The relay refused the transaction, or the session broke during it.
    Smtp(lettre::transport::smtp::Error),
}

impl SendError {
    /// Whether trying again can never help: the relay refused the message for good
    /// (5xx), or the message cannot be sent to this relay at all.
    pub fn is_final(&self) -> bool {
        match self {
            SendError::Smtp(e) => e.is_permanent() || e.is_client(),
            SendError::Refused(_) => true,
            SendError::Connect(_) | SendError::Timeout(_) => false,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(why) => write!(f, "smtp cannot open a session: {why}"),
            SendError::Refused(why) => write!(f, "smtp relay refused the session: {why}"),
            SendError::Timeout(after) => {
                write!(f, "smtp relay did not answer within {} s", after.as_secs())
            }
            // `permanent error (550): 5.1.1 <...>: Recipient address rejected`
            SendError::Smtp(e) => write!(f, "smtp {}", error_chain(e)),
        }
    }
}

impl SmtpPool {
    /// A pool for the relay in `settings`; no session is opened yet. Within a Tokio
    /// runtime, a task closes the sessions left idle for a minute.
    pub fn new(settings: &SmtpSettings) -> anyhow::Result<Arc<SmtpPool>> {
        let tls_parameters = match settings.tls {
            SmtpTls::None => None,
            SmtpTls::Starttls | SmtpTls::Tls => {
                let mut builder = TlsParameters::builder(settings.host.clone());
                if let Some(pem) = &settings.ca_pem {
                    builder = builder.add_root_certificate(Certificate::from_pem(pem)?);
                }
                Some(builder.build()?)
            }
        };
        let pool = Arc::new(SmtpPool {
            relay: Relay {
                host: settings.host.clone(),
                port: settings.port,
                tls: settings.tls,
                tls_parameters,
                hello: ClientId::default(),
                credentials: settings.username.as_ref().map(|username| {
                    Credentials::new(username.clone(), settings.password.expose().to_owned())
                }),
                timeout: settings.timeout,
            },
            permits: Semaphore::new(settings.connections.max(1)),
            idle: Mutex::default(),
            refused: Mutex::default(),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle_sessions(Arc::downgrade(&pool)));
        }
        Ok(pool)
    }

    /// Sends one message over a session of the pool and answers the relay's reply.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<Response, SendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| SendError::Connect("the session pool is closed".into()))?;
        let mut session = self.checkout().await?;
        match tokio::time::timeout(self.relay.timeout, session.send(envelope, message)).await {
            Ok(Ok(response)) => {
                self.park(session);
                Ok(response)
            }
            Ok(Err(e)) => {
                // lettre ends the session (QUIT) on a refusal or a broken stream; it
                // keeps it only for a message it would not send at all.
                if !session.has_broken() {
                    self.park(session);
                }
                Err(SendError::Smtp(e))
            }
            // Dropping the session closes its socket: a relay that stops answering
            // mid-transaction is not asked again on it.
            Err(_) => Err(SendError::Timeout(self.relay.timeout)),
        }
    }

    /// An idle session that still answers, or a new one.
    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(IdleSession { mut session, since }) = self.take_idle() {
            let idle_for = since.elapsed();
            if idle_for < CHECK_IDLE_AFTER {
                return Ok(session);
            }
            if idle_for < CLOSE_IDLE_AFTER
                && tokio::time::timeout(self.relay.timeout, session.test_connected()).await
                    == Ok(true)
            {
                return Ok(session);
            }
            // Stale or dead: close it (politely when it still listens) and look on.
            let _ = tokio::time::timeout(self.relay.timeout, session.abort()).await;
        }
        if let Some(why) = self.refused_lately() {
            return Err(SendError::Refused(why));
        }
        match tokio::time::timeout(self.relay.timeout, self.relay.open()).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err(OpenError::Refused(why))) => {
                *self.refused.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some((Instant::now(), why.clone()));
                Err(SendError::Refused(why))
            }
            Ok(Err(OpenError::Failed(e))) => Err(SendError::Connect(format!("{e:#}"))),
            Err(_) => Err(SendError::Connect(format!(
                "no answer within {} s",
                self.relay.timeout.as_secs()
            ))),
        }
    }

    /// Why the relay refused us for good, when that was less than
    /// [`HOLD_AFTER_REFUSAL`] ago.
    fn refused_lately(&self) -> Option<String> {
        let refused = self.refused.lock().unwrap_or_else(PoisonError::into_inner);
        match &*refused {
            Some((at, why)) if at.elapsed() < HOLD_AFTER_REFUSAL => Some(why.clone()),
            _ => None,
        }
    }

    fn take_idle(&self) -> Option<IdleSession> {
        self.lock_idle().pop()
    }

    fn park(&self, session: AsyncSmtpConnection) {
        self.lock_idle().push(IdleSession {
            session,
            since: Instant::now(),
        });
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<IdleSession>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes out the sessions idle for [`CLOSE_IDLE_AFTER`] or longer.
    fn take_stale(&self) -> Vec<AsyncSmtpConnection> {
        let mut idle = self.lock_idle();
        let (stale, fresh) = std::mem::take(&mut *idle)
            .into_iter()
            .partition::<Vec<_>, _>(|s| s.since.elapsed() >= CLOSE_IDLE_AFTER);
        *idle = fresh;
        stale.into_iter().map(|s| s.session).collect()
    }
}

impl Drop for SmtpPool {
    /// Says goodbye (`QUIT`) on the idle sessions, on a task of its own when a
    /// runtime is there; otherwise their sockets are just closed.
    fn drop(&mut self) {
        let idle = std::mem::take(&mut *self.lock_idle());
        if idle.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let timeout = self.relay.timeout;
            runtime.spawn(async move {
                for IdleSession { mut session, .. } in idle {
                    let _ = tokio::time::timeout(timeout, session.abort()).await;
                }
            });
        }
    }
}

/// Closes the sessions left idle too long, until the pool is dropped.
async fn close_idle_sessions(pool: Weak<SmtpPool>) {
    let mut every = tokio::time::interval(CLOSE_IDLE_AFTER / 2);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let timeout = pool.relay.timeout;
        let stale = pool.take_stale();
        drop(pool);
        for mut session in stale {
            let _ = tokio::time::timeout(timeout, session.abort()).await;
        }
    }
}

/// Why a session could not be opened.
enum OpenError {
    /// Until the relay or the configuration changes: final.
    Refused(String),
    /// For now (unreachable, TLS failed, a 4xx): tried again later.
    Failed(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for OpenError {
    fn from(e: E) -> Self {
        OpenError::Failed(e.into())
    }
}

impl Relay {
    /// Opens a session: TCP, (TLS,) greeting, EHLO, (STARTTLS, EHLO,) (AUTH).
    async fn open(&self) -> Result<AsyncSmtpConnection, OpenError> {
        use anyhow::Context as _;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}:{}", self.host, self.port))?;
        // lettre writes a message's body and its final `.` line in two writes; with
        // Nagle's algorithm the second waits for the relay to acknowledge the first,
        // which a relay delays (40 ms on Linux) as it has nothing to answer yet.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn AsyncTokioStream> = match (&self.tls, &self.tls_parameters) {
            (SmtpTls::Tls, Some(parameters)) => {
                Box::new(ImplicitTls::handshake(tcp, parameters.clone()).await?)
            }
            _ => Box::new(tcp),
        };
        let mut session = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if let (SmtpTls::Starttls, Some(parameters)) = (&self.tls, &self.tls_parameters) {
            // lettre sends nothing more when the relay does not offer STARTTLS: no
            // falling back to clear text.
            if !session.can_starttls() {
                session.abort().await;
                return Err(OpenError::Refused(
                    "the relay does not offer STARTTLS, which email.smtp_tls = \"starttls\" \
                     requires; nothing was sent in clear"
                        .to_owned(),
                ));
            }
            session.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials
            && let Err(e) = session.auth(DEFAULT_MECHANISMS, credentials).await
        {
            // 5xx: wrong user name or password, or logins not allowed; a client
            // error: no mechanism in common. A 4xx (454) may pass.
            let refused = e.is_permanent() || e.is_client();
            session.abort().await;
            return Err(if refused {
                OpenError::Refused(format!("the login failed: {}", error_chain(&e)))
            } else {
                OpenError::Failed(anyhow::Error::new(e).context("the login failed"))
            });
        }
        Ok(session)
    }
}

/// A socket of our own with lettre's TLS on it from the first byte (SMTPS), seen
/// as a Tokio stream, so lettre's SMTP client can run over it. lettre opens such
/// sockets itself only without `TCP_NODELAY`.
#[allow(deprecated)]
#[derive(Debug)]
struct ImplicitTls(AsyncNetworkStream);

#[allow(deprecated)]
impl ImplicitTls {
    async fn handshake(tcp: TcpStream, parameters: TlsParameters) -> anyhow::Result<ImplicitTls> {
        let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
        stream.upgrade_tls(parameters).await?;
        Ok(ImplicitTls(stream))
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.peer_addr()
    }
}

impl tokio::io::AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut self.0).poll_read(cx, buf.initialize_unfilled());
        read.map_ok(|n| buf.advance(n))
    }
}

impl tokio::io::AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// Flushes a written file to disk, so the job is acknowledged only once the mail
/// survives a crash (lettre's file transport does not sync).
async fn sync(path: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(path).await?.sync_all().await
}

fn settled(
    recipient: &Recipient,
    state: DeliveryState,
    provider_ref: Option<&str>,
    reason: Option<String>,
) -> Attempt {
    Attempt::Settled(RecipientOutcome {
        recipient: recipient.reference.clone(),
        state,
        provider_ref: provider_ref.map(str::to_owned),
        reason,
        possible_duplicate: false,
    })
}

/// A reason fit for an event: one line, bounded, and with the recipient's address
/// masked, because relays like to quote it (`550 <anna@x.se>: unknown user`).
pub(crate) fn scrub(text: &str, address: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let masked = if address.is_empty() {
        one_line
    } else {
        replace_ignoring_case(&one_line, address, &mask(address))
    };
    let mut out: String = masked.chars().take(REASON_LIMIT).collect();
    if masked.chars().count() > REASON_LIMIT {
        out.push('…');
    }
    out
}

fn replace_ignoring_case(text: &str, needle: &str, with: &str) -> String {
    let lower_text = text.to_lowercase();
    let lower_needle = needle.to_lowercase();
    // Lower-casing can change byte lengths outside ASCII; then fall back to an
    // exact replacement rather than cut a character in half.
    if lower_text.len() != text.len() || lower_needle.len() != needle.len() {
        return text.replace(needle, with);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower_text.match_indices(&lower_needle) {
        out.push_str(&text[rest..at]);
        out.push_str(with);
        rest = at + needle.len();
    }
    out.push_str(&text[rest..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_hide_the_address() {
        let reason = scrub(
            "smtp permanent error (550): 5.1.1 <Anna.Lind@Example.se>: Recipient address rejected",
            "anna.lind@example.se",
        );
        assert!(!reason.to_lowercase().contains("anna.lind"), "{reason}");
        assert!(reason.contains("a***@example.se"), "{reason}");
        assert!(reason.starts_with("smtp permanent error (550)"), "{reason}");
    }

    #[tokio::test]
    async fn the_implicit_tls_adapter_carries_an_smtp_session() {
        // Over plain TCP (the sink speaks no TLS): what is checked is the adapter's
        // reading and writing; the TLS handshake itself is lettre's.
        let sink = krisbud_tests::SmtpSink::start();
        let tcp = TcpStream::connect(sink.addr()).await.unwrap();
        #[allow(deprecated)]
        let stream = ImplicitTls(AsyncNetworkStream::use_existing_tokio1(Box::new(tcp)));
        let mut session =
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &ClientId::default())
                .await
                .unwrap();
        let message = Message::builder()
            .from("krisinformation@stockholm.se".parse().unwrap())
            .to("anna.lind@farsta.example".parse().unwrap())
            .subject("Prov")
            .body("Hej\r\n.\r\nSista raden".to_owned())
            .unwrap();
        session
            .send(message.envelope(), &message.formatted())
            .await
            .unwrap();
        session.quit().await.unwrap();
        let mails = sink.messages();
        assert_eq!(mails.len(), 1);
        assert_eq!(mails[0].to, ["anna.lind@farsta.example"]);
        assert!(mails[0].text().contains("Hej\r\n.\r\nSista raden"));
    }
}
