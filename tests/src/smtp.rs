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
//! It can also ask for TLS and a login, as a real relay does: [`SmtpSink::start_starttls`]
//! offers STARTTLS, [`SmtpSink::start_starttls_with_auth`] moreover requires
//! `AUTH PLAIN` or `AUTH LOGIN` (offered only once TLS is on), and
//! [`SmtpSink::start_implicit_tls`] speaks TLS from the first byte (SMTPS). Their
//! certificate, for `127.0.0.1` and `localhost`, is signed by a CA made for the
//! sink alone, whose PEM file [`SmtpSink::ca_file`] names, so a client trusts it only
//! when told to. These sinks listen behind a small relay of their own that watches
//! the wire: [`SmtpSink::connections`] tells for every connection whether it went
//! over to TLS and what the client sent before it did, in clear.
//!
//! mailin-embedded serves on blocking threads and has no way to stop, so the server
//! thread lives until the test process ends; after the sink is dropped it answers
//! every session with 421.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mailin_embedded::response::{AUTH_OK, INVALID_CREDENTIALS, NO_SERVICE, OK};
use mailin_embedded::{AuthMechanism, Handler, Response, Server, SslConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// One mail the sink received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message as transmitted (headers and body, dot-unstuffed).
    pub data: Vec<u8>,
    /// The user the session logged in as, when it did.
    pub user: Option<String>,
}

/// One connection to a sink with TLS, as seen on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkConnection {
    /// Whether the connection went over to TLS: with STARTTLS, the client sent a
    /// TLS handshake after it (whether or not it then trusted the certificate);
    /// with implicit TLS, the handshake succeeded.
    pub tls: bool,
    /// What the client sent in clear, before TLS: with STARTTLS the greeting's
    /// `EHLO` and the `STARTTLS` itself, and nothing more when all is well.
    pub cleartext: String,
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
    /// `MAIL FROM` commands seen.
    mail_commands: usize,
    /// The users that logged in, one entry per successful login.
    logins: Vec<String>,
    /// Logins refused for a wrong user name or password.
    refused_logins: usize,
    /// Connections through the wire-watching front of a TLS sink.
    connections: Vec<SinkConnection>,
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
    /// The user name and password a login must give, when logins are required.
    credentials: Option<Arc<(String, String)>>,
    /// The user this session logged in as.
    user: Option<String>,
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
            credentials: self.credentials.clone(),
            user: None,
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
        lock(&self.inner).mail_commands += 1;
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
            user: self.user.clone(),
        };
        lock(&self.inner).messages.push(mail);
        OK
    }

    fn auth_plain(&mut self, _authorization_id: &str, user: &str, password: &str) -> Response {
        self.login(user, password)
    }

    fn auth_login(&mut self, user: &str, password: &str) -> Response {
        self.login(user, password)
    }
}

impl Sink {
    /// Checks a login (mailin offers `AUTH` only once TLS is on): 235 for the
    /// expected user and password, 535 otherwise.
    fn login(&mut self, user: &str, password: &str) -> Response {
        let mut inner = lock(&self.inner);
        match &self.credentials {
            Some(expected) if expected.0 == user && expected.1 == password => {
                inner.logins.push(user.to_owned());
                self.user = Some(user.to_owned());
                AUTH_OK
            }
            _ => {
                inner.refused_logins += 1;
                INVALID_CREDENTIALS
            }
        }
    }
}

/// TLS towards a sink's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkTls {
    None,
    Starttls,
    Implicit,
}

/// A certificate for `127.0.0.1` and `localhost` signed by a CA of its own, as
/// PEM files in a directory removed with it.
struct TestPki {
    dir: tempfile::TempDir,
    cert_pem: String,
    key_pem: String,
}

impl TestPki {
    fn generate() -> TestPki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name
            .push(DnType::CommonName, "krisbud smtp-sink test CA");
        let ca_key = KeyPair::generate().expect("a ca key");
        let ca_cert = ca.self_signed(&ca_key).expect("a self-signed ca");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate parameters");
        leaf.distinguished_name
            .push(DnType::CommonName, "smtp-sink.krisbud.test");
        let key = KeyPair::generate().expect("a certificate key");
        let cert = leaf
            .signed_by(&key, &ca_cert, &ca_key)
            .expect("a certificate signed by the ca");
        let dir = tempfile::tempdir().expect("a directory for the sink's certificates");
        let pki = TestPki {
            dir,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.ca_file(), ca_cert.pem()).expect("the ca file");
        std::fs::write(pki.cert_file(), &pki.cert_pem).expect("the certificate file");
        std::fs::write(pki.key_file(), &pki.key_pem).expect("the key file");
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn cert_file(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// A rustls server configuration with the certificate (ring, as lettre uses).
    fn server_config(&self) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the sink's certificate");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("the sink's key");
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("tls versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("a tls server configuration")
    }
}

/// The front of a TLS sink: accepts its clients' connections and relays each to
/// the mailin server, watching the wire (`Starttls`) or ending TLS itself
/// (`Implicit`, as mailin-embedded has no implicit TLS). Runs on a thread of its
/// own until the process ends, like the mailin server.
fn start_front(
    listener: TcpListener,
    backend: SocketAddr,
    tls: SinkTls,
    pki: &TestPki,
    inner: Arc<Mutex<Inner>>,
) {
    let acceptor = (tls == SinkTls::Implicit)
        .then(|| tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config())));
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    std::thread::Builder::new()
        .name(format!("smtp-sink-front-{port}"))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the smtp sink's front");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = client.set_nodelay(true);
                    let wire = {
                        let mut state = lock(&inner);
                        state.connections.push(SinkConnection::default());
                        state.connections.len() - 1
                    };
                    let inner = inner.clone();
                    match acceptor.clone() {
                        Some(acceptor) => {
                            tokio::spawn(end_tls(client, acceptor, backend, wire, inner))
                        }
                        None => tokio::spawn(watch(client, backend, wire, inner)),
                    };
                }
            });
        })
        .expect("a thread for the smtp sink's front");
}

/// Relays a STARTTLS connection, noting what the client sends in clear and
/// whether TLS follows its `STARTTLS` (a TLS handshake record starts with 0x16).
async fn watch(
    client: tokio::net::TcpStream,
    backend: SocketAddr,
    wire: usize,
    inner: Arc<Mutex<Inner>>,
) {
    let Ok(server) = tokio::net::TcpStream::connect(backend).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = async {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut line = Vec::new();
        let mut after_starttls = false;
        let mut tls = false;
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !tls {
                let mut clear = Vec::new();
                for &byte in &buf[..n] {
                    if after_starttls && line.is_empty() && byte == 0x16 {
                        tls = true;
                        break;
                    }
                    clear.push(byte);
                    line.push(byte);
                    if byte == b'\n' {
                        after_starttls = line.trim_ascii().eq_ignore_ascii_case(b"STARTTLS");
                        line.clear();
                    }
                }
                let mut state = lock(&inner);
                let connection = &mut state.connections[wire];
                connection.tls = tls;
                connection
                    .cleartext
                    .push_str(&String::from_utf8_lossy(&clear));
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    tokio::join!(up, down);
}

/// Ends a client's TLS (implicit, from the first byte) and relays the clear
/// session to the mailin server.
async fn end_tls(
    client: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    backend: SocketAddr,
    wire: usize,
    inner: Arc<Mutex<Inner>>,
) {
    // A client that does not trust the certificate gives up in the handshake.
    let Ok(mut client) = acceptor.accept(client).await else {
        return;
    };
    lock(&inner).connections[wire].tls = true;
    let Ok(mut server) = tokio::net::TcpStream::connect(backend).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// A running SMTP server collecting mail in memory.
pub struct SmtpSink {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    closed: Arc<AtomicBool>,
    /// The certificates of a TLS sink, kept for as long as the sink.
    pki: Option<TestPki>,
}

impl SmtpSink {
    /// Starts the server on `127.0.0.1` and a free port, without TLS or
    /// authentication.
    pub fn start() -> SmtpSink {
        SmtpSink::launch(SinkTls::None, None)
    }

    /// Starts a server that offers STARTTLS (and takes mail without it too, so a
    /// test sees whether a client went on in clear), with a certificate signed by
    /// the CA in [`SmtpSink::ca_file`].
    pub fn start_starttls() -> SmtpSink {
        SmtpSink::launch(SinkTls::Starttls, None)
    }

    /// Starts a server that offers STARTTLS and takes mail only after a login as
    /// `user` with `password`, by `AUTH PLAIN` or `AUTH LOGIN`, which it offers
    /// only once TLS is on; a wrong login is refused with 535.
    pub fn start_starttls_with_auth(user: &str, password: &str) -> SmtpSink {
        SmtpSink::launch(
            SinkTls::Starttls,
            Some(Arc::new((user.to_owned(), password.to_owned()))),
        )
    }

    /// Starts a server speaking TLS from the first byte (SMTPS, port 465 style),
    /// with a certificate signed by the CA in [`SmtpSink::ca_file`]. No login: the
    /// mailin server behind the TLS front sees a clear session and would not offer
    /// `AUTH` on it.
    pub fn start_implicit_tls() -> SmtpSink {
        SmtpSink::launch(SinkTls::Implicit, None)
    }

    fn launch(tls: SinkTls, credentials: Option<Arc<(String, String)>>) -> SmtpSink {
        // The workspace builds rustls with two crypto providers, so one must be
        // chosen before mailin makes its TLS configuration: ring, as lettre uses.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port for the smtp sink");
        let addr = listener.local_addr().expect("a bound address");
        let inner = Arc::<Mutex<Inner>>::default();
        let closed = Arc::new(AtomicBool::new(false));
        let pki = (tls != SinkTls::None).then(TestPki::generate);
        // A TLS sink's mailin server listens on a port of its own behind the front.
        let (front, listener) = match tls {
            SinkTls::None => (None, listener),
            SinkTls::Starttls | SinkTls::Implicit => (
                Some(listener),
                TcpListener::bind("127.0.0.1:0").expect("a free port for the smtp sink"),
            ),
        };
        let backend = listener.local_addr().expect("a bound address");
        let authenticate = credentials.is_some();
        let handler = Sink {
            inner: inner.clone(),
            closed: closed.clone(),
            credentials,
            user: None,
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
        if authenticate {
            server
                .with_auth(AuthMechanism::Plain)
                .with_auth(AuthMechanism::Login);
        }
        let ssl = match (&pki, tls) {
            (Some(pki), SinkTls::Starttls) => SslConfig::SelfSigned {
                cert_path: path_text(&pki.cert_file()),
                key_path: path_text(&pki.key_file()),
            },
            _ => SslConfig::None,
        };
        server.with_ssl(ssl).expect("the smtp sink's tls settings");
        if let (Some(front), Some(pki)) = (front, &pki) {
            start_front(front, backend, tls, pki, inner.clone());
        }
        std::thread::Builder::new()
            .name(format!("smtp-sink-{}", backend.port()))
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
            pki,
        }
    }

    /// The PEM file of the CA that signed a TLS sink's certificate, for a client
    /// to trust. Panics for a sink without TLS.
    pub fn ca_file(&self) -> PathBuf {
        self.pki
            .as_ref()
            .expect("only a sink with tls has a ca file")
            .ca_file()
    }

    /// Every connection to a TLS sink so far, in the order they were accepted:
    /// whether it went over to TLS, and what the client sent in clear. Empty for a
    /// sink without TLS.
    pub fn connections(&self) -> Vec<SinkConnection> {
        lock(&self.inner).connections.clone()
    }

    /// How many connections went over to TLS.
    pub fn tls_sessions(&self) -> usize {
        lock(&self.inner)
            .connections
            .iter()
            .filter(|c| c.tls)
            .count()
    }

    /// The users that logged in, one entry per successful login, in order.
    pub fn logins(&self) -> Vec<String> {
        lock(&self.inner).logins.clone()
    }

    /// How many logins were refused (wrong user name or password).
    pub fn refused_logins(&self) -> usize {
        lock(&self.inner).refused_logins
    }

    /// How many `MAIL FROM` commands the server got, accepted or not.
    pub fn mail_commands(&self) -> usize {
        lock(&self.inner).mail_commands
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

fn path_text(path: &Path) -> String {
    path.to_str()
        .expect("the temporary directory's path is UTF-8")
        .to_owned()
}
