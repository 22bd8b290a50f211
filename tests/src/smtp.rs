//! A real SMTP server (mailin-embedded) on a free local port that keeps every mail
//! it receives in memory, so the email channel is tested over real SMTP.
//!
//! It can be told to refuse the next transactions with a given reply code (4xx
//! transient, 5xx permanent) at the `DATA` command, to refuse chosen recipients at
//! `RCPT TO` the way relays do (quoting the address), or to stop answering for a
//! while at `DATA`, to exercise retries, failures and timeouts. It counts the SMTP
//! sessions open at once (and the most there ever were), so a test can check that a
//! client keeps to its connection limit.
//!
//! mailin-embedded serves on blocking threads and has no way to stop, so the server
//! thread lives until the test process ends; after the sink is dropped it answers
//! every session with 421.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mailin_embedded::response::{NO_SERVICE, OK};
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// One mail the sink received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as transmitted (headers and body, dot-unstuffed).
    pub data: Vec<u8>,
}

impl ReceivedMail {
    /// The message as text (lossy for non-UTF-8 bytes).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The value of the first top-level header called `name` (case-insensitive),
    /// unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push(' ');
                    v.push_str(line.trim());
                    continue;
                }
                break;
            }
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
            {
                value = Some(rest.trim().to_owned());
            }
        }
        value
    }
}

/// Threads serving sessions: far more than any test's connection limit, so the
/// sink never throttles a client and a client opening too many sessions shows.
const SERVER_THREADS: u32 = 48;

#[derive(Default)]
struct Inner {
    messages: Vec<ReceivedMail>,
    failures: Option<(usize, u16)>,
    stalls: Option<(usize, Duration)>,
    /// Recipients to refuse at `RCPT TO`, by lower-cased address: the code and
    /// how many more times.
    refusals: HashMap<String, (u16, usize)>,
    /// `RCPT TO` commands seen, by lower-cased address.
    rcpts: HashMap<String, usize>,
    transactions: usize,
    sessions: usize,
    open_sessions: usize,
    peak_sessions: usize,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A test that panicked while holding the lock must not hide its own failure
    // behind a poisoned lock in a server thread.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open SMTP session: counted while it exists.
struct OpenSession(Arc<Mutex<Inner>>);

impl OpenSession {
    fn open(inner: &Arc<Mutex<Inner>>) -> OpenSession {
        let mut state = lock(inner);
        state.sessions += 1;
        state.open_sessions += 1;
        state.peak_sessions = state.peak_sessions.max(state.open_sessions);
        OpenSession(inner.clone())
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        lock(&self.0).open_sessions -= 1;
    }
}

struct Sink {
    inner: Arc<Mutex<Inner>>,
    closed: Arc<AtomicBool>,
    // Set on the per-connection clones only (see `Clone`); held for its `Drop`.
    _session: Option<OpenSession>,
    // The transaction in progress on this connection (handlers are cloned per
    // connection, so these fields are per session).
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Clone for Sink {
    /// mailin-embedded clones the handler once for every connection it accepts
    /// (before a thread serves it) and drops the clone when the session ends, right
    /// before closing the socket; so a clone is an open session.
    fn clone(&self) -> Self {
        Sink {
            inner: self.inner.clone(),
            closed: self.closed.clone(),
            _session: Some(OpenSession::open(&self.inner)),
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        }
    }
}

impl Handler for Sink {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if self.closed.load(Ordering::Relaxed) {
            return NO_SERVICE;
        }
        OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let address = to.to_lowercase();
        let mut inner = lock(&self.inner);
        *inner.rcpts.entry(address.clone()).or_default() += 1;
        if let Some((code, left)) = inner.refusals.get_mut(&address)
            && *left > 0
        {
            *left -= 1;
            // Relays quote the address back, which is why the channel masks it.
            let text = if *code < 500 {
                format!("4.2.2 <{to}>: Mailbox full, try again later")
            } else {
                format!("5.1.1 <{to}>: Recipient address rejected: User unknown")
            };
            return Response::custom(*code, text);
        }
        OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        from.clone_into(&mut self.from);
        self.to.clear();
        self.data.clear();
        OK
    }

    fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
        let mut inner = lock(&self.inner);
        inner.transactions += 1;
        if let Some((left, stall)) = inner.stalls
            && left > 0
        {
            inner.stalls = (left > 1).then_some((left - 1, stall));
            drop(inner);
            // A relay that stops answering: this session's thread just waits.
            std::thread::sleep(stall);
            return Response::custom(451, "4.4.2 Timeout, try again later".to_owned());
        }
        if let Some((left, code)) = inner.failures
            && left > 0
        {
            inner.failures = (left > 1).then_some((left - 1, code));
            let text = if code < 500 {
                "Requested action aborted: try again later"
            } else {
                "Transaction failed: mailbox unavailable"
            };
            return Response::custom(code, text.to_owned());
        }
        from.clone_into(&mut self.from);
        self.to = to.to_vec();
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mail = ReceivedMail {
            from: std::mem::take(&mut self.from),
            to: std::mem::take(&mut self.to),
            data: std::mem::take(&mut self.data),
        };
        lock(&self.inner).messages.push(mail);
        OK
    }
}

/// A running SMTP server collecting mail in memory.
pub struct SmtpSink {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    closed: Arc<AtomicBool>,
}

impl SmtpSink {
    /// Starts the server on `127.0.0.1` and a free port, without TLS or
    /// authentication.
    pub fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port for the smtp sink");
        let addr = listener.local_addr().expect("a bound address");
        let inner = Arc::<Mutex<Inner>>::default();
        let closed = Arc::new(AtomicBool::new(false));
        let handler = Sink {
            inner: inner.clone(),
            closed: closed.clone(),
            _session: None,
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp-sink.krisbud.test")
            .with_num_threads(SERVER_THREADS)
            .with_tcp_listener(listener);
        server
            .with_ssl(SslConfig::None)
            .expect("an smtp server without tls");
        std::thread::Builder::new()
            .name(format!("smtp-sink-{}", addr.port()))
            .spawn(move || {
                if let Err(e) = server.serve() {
                    eprintln!("smtp sink stopped: {e}");
                }
            })
            .expect("a thread for the smtp sink");
        SmtpSink {
            addr,
            inner,
            closed,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every mail received so far, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.inner).messages.clone()
    }

    /// How many mails were received so far (cheaper than `messages().len()`).
    pub fn message_count(&self) -> usize {
        lock(&self.inner).messages.len()
    }

    /// How many transactions reached `DATA`, accepted or refused.
    pub fn transactions(&self) -> usize {
        lock(&self.inner).transactions
    }

    /// How many `RCPT TO` commands named `address` (case-insensitive), accepted or
    /// refused.
    pub fn rcpt_attempts(&self, address: &str) -> usize {
        lock(&self.inner)
            .rcpts
            .get(&address.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// How many SMTP sessions (connections) were opened so far.
    pub fn sessions(&self) -> usize {
        lock(&self.inner).sessions
    }

    /// How many SMTP sessions are open now.
    pub fn open_sessions(&self) -> usize {
        lock(&self.inner).open_sessions
    }

    /// The most SMTP sessions that were ever open at the same time.
    pub fn peak_sessions(&self) -> usize {
        lock(&self.inner).peak_sessions
    }

    /// Refuses the next `n` transactions at `DATA` with `code` (e.g. 451 for a
    /// transient, 554 for a permanent failure).
    pub fn fail_next(&self, n: usize, code: u16) {
        assert!(
            (400..600).contains(&code),
            "an smtp failure code is 4xx or 5xx, not {code}"
        );
        lock(&self.inner).failures = Some((n, code));
    }

    /// Refuses the next `n` `RCPT TO:<address>` with `code` and a text quoting the
    /// address, as relays do: `4.2.2 <address>: Mailbox full, try again later` for a
    /// 4xx, `5.1.1 <address>: Recipient address rejected: User unknown` for a 5xx.
    /// `usize::MAX` refuses it for good.
    pub fn refuse_recipient(&self, address: &str, n: usize, code: u16) {
        assert!(
            (400..600).contains(&code),
            "an smtp failure code is 4xx or 5xx, not {code}"
        );
        lock(&self.inner)
            .refusals
            .insert(address.to_lowercase(), (code, n));
    }

    /// Stops answering at the next `n` `DATA` commands for `stall` (the session's
    /// thread waits, then replies 451), as a relay that hangs would.
    pub fn stall_next(&self, n: usize, stall: Duration) {
        lock(&self.inner).stalls = Some((n, stall));
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}
