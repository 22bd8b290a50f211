//! A real SMTP server (mailin-embedded) on a free local port that keeps every mail
//! it receives in memory, so the email channel is tested over real SMTP.
//!
//! It can be told to refuse the next transactions with a given reply code (4xx
//! transient, 5xx permanent) at the `DATA` command, to exercise retries and
//! failures. mailin-embedded serves on blocking threads and has no way to stop, so
//! the server thread lives until the test process ends; after the sink is dropped
//! it answers every session with 421.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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

#[derive(Default)]
struct Inner {
    messages: Vec<ReceivedMail>,
    failures: Option<(usize, u16)>,
    transactions: usize,
}

#[derive(Clone)]
struct Sink {
    inner: Arc<Mutex<Inner>>,
    closed: Arc<AtomicBool>,
    // The transaction in progress on this connection (handlers are cloned per
    // connection, so these fields are per session).
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Sink {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        if self.closed.load(Ordering::Relaxed) {
            return NO_SERVICE;
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
        let mut inner = self.inner.lock().expect("smtp sink lock");
        inner.transactions += 1;
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
        self.inner
            .lock()
            .expect("smtp sink lock")
            .messages
            .push(mail);
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
            from: String::new(),
            to: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("smtp-sink.krisbud.test")
            .with_num_threads(8)
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
        self.inner.lock().expect("smtp sink lock").messages.clone()
    }

    /// How many transactions reached `DATA`, accepted or refused.
    pub fn transactions(&self) -> usize {
        self.inner.lock().expect("smtp sink lock").transactions
    }

    /// Refuses the next `n` transactions at `DATA` with `code` (e.g. 451 for a
    /// transient, 554 for a permanent failure).
    pub fn fail_next(&self, n: usize, code: u16) {
        assert!(
            (400..600).contains(&code),
            "an smtp failure code is 4xx or 5xx, not {code}"
        );
        self.inner.lock().expect("smtp sink lock").failures = Some((n, code));
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}
