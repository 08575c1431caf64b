//! `MailStack` against real clients: lettre over submission (STARTTLS) and SMTPS, read back
//! with async-imap over IMAPS and deskmail-pop3 over POP3S; wrong passwords; injection;
//! restarts; parallel stacks; and that dropping a stack leaves no process behind.
//! Nothing is skipped: a missing Dovecot or Postfix fails the test with the install hint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskmail_pop3::{Pop3Client, Pop3Config, Pop3Error, Security, TlsOptions};
use deskmail_testkit::mail::{MailStack, OUTBOUND_SINK, OUTBOUND_SINK_PASSWORD, live_in_group};
use futures::TryStreamExt;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const SUPPORT: (&str, &str) = ("support@desk.test", "support-pass");
const CUSTOMER: (&str, &str) = ("customer@client.test", "customer-pass");

fn stack() -> Result<MailStack> {
    let t = Instant::now();
    let stack = MailStack::builder().user(SUPPORT.0, SUPPORT.1).user(CUSTOMER.0, CUSTOMER.1).start()?;
    eprintln!("MailStack on base {} started in {:?}", stack.base_port(), t.elapsed());
    Ok(stack)
}

fn token(tag: &str) -> String {
    deskmail_testkit::unique(tag)
}

enum SmtpMode {
    Submission,
    Smtps,
}

async fn send(
    stack: &MailStack,
    mode: SmtpMode,
    (user, pass): (&str, &str),
    to: &str,
    subject: &str,
) -> Result<()> {
    let params = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&stack.ca_pem())?)
        .build_rustls()?;
    let (port, tls, mechanism) = match mode {
        SmtpMode::Submission => (stack.submission_port(), Tls::Required(params), Mechanism::Plain),
        SmtpMode::Smtps => (stack.smtps_port(), Tls::Wrapper(params), Mechanism::Login),
    };
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(stack.host())
        .port(port)
        .tls(tls)
        .credentials(Credentials::new(user.into(), pass.into()))
        .authentication(vec![mechanism])
        .timeout(Some(Duration::from_secs(10)))
        .build();
    let email = Message::builder()
        .from(user.parse::<Mailbox>()?)
        .to(to.parse::<Mailbox>()?)
        .subject(subject)
        .body(format!("body of {subject}\r\n"))?;
    transport.send(email).await?;
    Ok(())
}

fn tls_config(ca_pem: &[u8]) -> std::io::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

type ImapSession = async_imap::Session<TlsStream<TcpStream>>;

async fn imaps_login(
    stack: &MailStack,
    user: &str,
    pass: &str,
) -> Result<ImapSession, async_imap::error::Error> {
    let tcp = TcpStream::connect((stack.host(), stack.imaps_port())).await?;
    let name = ServerName::try_from(stack.host().to_string()).map_err(std::io::Error::other)?;
    let tls = tokio_rustls::TlsConnector::from(tls_config(&stack.ca_pem())?).connect(name, tcp).await?;
    let mut client = async_imap::Client::new(tls);
    client.read_response().await?.ok_or(async_imap::error::Error::ConnectionLost)?;
    client.login(user, pass).await.map_err(|(e, _)| e)
}

/// Polls INBOX over IMAPS until a message whose Subject holds `subject` shows up.
async fn imap_find(stack: &MailStack, (user, pass): (&str, &str), subject: &str) -> Result<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_millis(20);
    loop {
        let mut session = imaps_login(stack, user, pass).await?;
        session.examine("INBOX").await?;
        let hits = session.search(format!("SUBJECT \"{subject}\"")).await?;
        if let Some(seq) = hits.into_iter().max() {
            let fetches: Vec<_> = session.fetch(seq.to_string(), "BODY.PEEK[]").await?.try_collect().await?;
            session.logout().await?;
            let body = fetches.first().and_then(|f| f.body()).context("FETCH without body")?;
            return Ok(body.to_vec());
        }
        session.logout().await?;
        if Instant::now() > deadline {
            bail!("{subject} not in {user}'s INBOX after 10 s\n{}", stack.logs());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

fn pop3_config(stack: &MailStack, security: Security) -> Pop3Config {
    let port = if security == Security::Tls { stack.pop3s_port() } else { stack.pop3_port() };
    Pop3Config::new(stack.host(), port, security)
        .with_tls(TlsOptions::with_ca_pem(stack.ca_pem()))
        .with_timeout(Duration::from_secs(10))
}

/// Reads every message over POP3S and returns the first that contains `needle`.
async fn pop3_find(stack: &MailStack, (user, pass): (&str, &str), needle: &str) -> Result<Vec<u8>> {
    let mut pop = Pop3Client::connect(&pop3_config(stack, Security::Tls)).await?;
    pop.login(user, pass).await?;
    for entry in pop.list().await? {
        let raw = pop.retr(entry.id).await?;
        if raw.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            pop.quit().await?;
            return Ok(raw);
        }
    }
    bail!("{needle} not found over POP3S for {user}")
}

#[tokio::test]
async fn submission_and_smtps_arrive_over_imaps_and_pop3s() -> Result<()> {
    let stack = stack()?;
    let t = Instant::now();
    let starttls = token("starttls");
    send(&stack, SmtpMode::Submission, SUPPORT, CUSTOMER.0, &starttls).await?;
    let via_imap = imap_find(&stack, CUSTOMER, &starttls).await?;
    eprintln!("submission -> IMAPS visible after {:?}", t.elapsed());
    assert!(String::from_utf8_lossy(&via_imap).contains(&format!("body of {starttls}")));
    let via_pop = pop3_find(&stack, CUSTOMER, &starttls).await?;
    assert!(String::from_utf8_lossy(&via_pop).contains(&format!("Subject: {starttls}")));

    let smtps = token("smtps");
    send(&stack, SmtpMode::Smtps, CUSTOMER, SUPPORT.0, &smtps).await?;
    imap_find(&stack, SUPPORT, &smtps).await?;
    pop3_find(&stack, SUPPORT, &smtps).await?;

    // Authenticated mail to a foreign domain is captured in the outbound sink.
    let outbound = token("outbound");
    send(&stack, SmtpMode::Submission, SUPPORT, "someone@example.com", &outbound).await?;
    let sunk = imap_find(&stack, (OUTBOUND_SINK, OUTBOUND_SINK_PASSWORD), &outbound).await?;
    assert!(String::from_utf8_lossy(&sunk).contains("To: someone@example.com"));
    Ok(())
}

#[tokio::test]
async fn wrong_password_is_refused_on_smtp_imap_and_pop3() -> Result<()> {
    let stack = stack()?;
    let bad = (SUPPORT.0, "not-the-password");
    let stack = &stack;
    // Dovecot answers a failed login after its 0.5 s flush timer: run the four at once.
    let smtp = |mode| async move {
        let err = send(stack, mode, bad, CUSTOMER.0, "never").await.expect_err("SMTP AUTH must fail");
        let err = err.downcast::<lettre::transport::smtp::Error>().expect("an SMTP error");
        assert!(err.is_permanent(), "{err:?}");
        assert_eq!(err.status().map(u16::from), Some(535), "{err:?}");
    };
    let imap = async {
        match imaps_login(stack, bad.0, bad.1).await {
            Err(async_imap::error::Error::No(text)) => {
                assert!(text.contains("AUTHENTICATIONFAILED"), "{text}")
            }
            Err(other) => panic!("IMAP: expected NO, got {other:?}"),
            Ok(_) => panic!("IMAP accepted a wrong password"),
        }
    };
    let pop3 = async {
        let mut pop = Pop3Client::connect(&pop3_config(stack, Security::Tls)).await.expect("POP3S connect");
        match pop.login(bad.0, bad.1).await {
            Err(Pop3Error::Auth(text)) => assert!(text.contains("[AUTH]"), "{text}"),
            other => panic!("POP3: expected Pop3Error::Auth, got {other:?}"),
        }
    };
    tokio::join!(smtp(SmtpMode::Submission), smtp(SmtpMode::Smtps), imap, pop3);
    // No auth penalty (recipe pitfall 3): the right password works at once.
    let t = Instant::now();
    imaps_login(stack, SUPPORT.0, SUPPORT.1).await?.logout().await?;
    assert!(t.elapsed() < Duration::from_secs(2), "login after failures took {:?}", t.elapsed());
    Ok(())
}

#[tokio::test]
async fn deliver_count_and_restart() -> Result<()> {
    let stack = stack()?;
    stack.deliver(SUPPORT.0, b"Subject: via lmtp\n\nhello\n")?;
    let t = Instant::now();
    let n = stack.deliver_many(CUSTOMER.0, (0..200).map(|i| format!("Subject: bulk {i}\n\nbody {i}\n")))?;
    eprintln!("maildir drop of {n} took {:?}", t.elapsed());
    assert_eq!(stack.message_count(SUPPORT.0, "INBOX")?, 1);
    assert_eq!(stack.message_count(CUSTOMER.0, "INBOX")?, 200);
    assert_eq!(stack.message_count(CUSTOMER.0, "Sent")?, 0);
    let err = stack.deliver("nobody@desk.test", b"Subject: x\n\nx\n").expect_err("unknown user");
    assert!(format!("{err:#}").contains("RCPT"), "{err:#}");

    let (dovecot, postfix) =
        (stack.dovecot_pid().context("dovecot")?, stack.postfix_pid().context("postfix")?);
    let t = Instant::now();
    stack.restart_dovecot()?;
    stack.restart_postfix()?;
    eprintln!("restart of both took {:?}", t.elapsed());
    assert!(live_in_group(dovecot).is_empty() && live_in_group(postfix).is_empty());
    assert_ne!(stack.dovecot_pid(), Some(dovecot));
    // Mail survives, and the whole path works again.
    assert_eq!(stack.message_count(CUSTOMER.0, "INBOX")?, 200);
    let subject = token("after-restart");
    send(&stack, SmtpMode::Submission, CUSTOMER, SUPPORT.0, &subject).await?;
    imap_find(&stack, SUPPORT, &subject).await?;

    // Stopped Dovecot means refused connections, which fault tests rely on.
    stack.stop_dovecot()?;
    assert!(TcpStream::connect((stack.host(), stack.pop3s_port())).await.is_err());
    stack.start_dovecot()?;
    assert!(stack.logs().contains("dovecot.log"));
    Ok(())
}

#[test]
fn parallel_stacks_are_isolated() -> Result<()> {
    let stacks: Vec<MailStack> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|_| s.spawn(stack)).collect();
        handles.into_iter().map(|h| h.join().expect("start thread")).collect::<Result<_>>()
    })?;
    let mut bases: Vec<u16> = stacks.iter().map(|s| s.base_port()).collect();
    bases.sort_unstable();
    bases.dedup();
    assert_eq!(bases.len(), 3, "bases must differ");
    for (i, s) in stacks.iter().enumerate() {
        for _ in 0..=i {
            s.deliver(SUPPORT.0, b"Subject: mine\n\n.\n")?;
        }
    }
    for (i, s) in stacks.iter().enumerate() {
        assert_eq!(s.message_count(SUPPORT.0, "INBOX")?, i + 1);
    }
    Ok(())
}

/// Non-zombie processes in `pgid` according to `ps` (independent of the kit's /proc scan).
fn ps_live_in_group(pgid: u32) -> Result<Vec<String>> {
    let out = std::process::Command::new("ps").args(["-e", "-o", "pgid=,stat=,pid=,args="]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(pgid.to_string().as_str()) && !f.next().unwrap_or("Z").starts_with('Z')
        })
        .map(str::to_string)
        .collect())
}

#[test]
fn drop_leaves_no_process_and_no_dir() -> Result<()> {
    let stack = stack()?;
    let dir = stack.dir().to_path_buf();
    let pgids = [stack.dovecot_pid().context("dovecot pid")?, stack.postfix_pid().context("postfix pid")?];
    for g in pgids {
        assert!(!ps_live_in_group(g)?.is_empty(), "group {g} should be running");
    }
    // Open a session so that a login child exists too.
    std::net::TcpStream::connect((stack.host(), stack.pop3_port()))?;
    let ports = [stack.imap_port(), stack.pop3s_port(), stack.smtp_port(), stack.submission_port()];
    let t = Instant::now();
    drop(stack);
    eprintln!("drop took {:?}", t.elapsed());
    for g in pgids {
        assert_eq!(ps_live_in_group(g)?, Vec::<String>::new(), "group {g} left behind");
    }
    assert!(!dir.exists(), "{} not removed", dir.display());
    for p in ports {
        assert!(std::net::TcpStream::connect(("127.0.0.1", p)).is_err(), "port {p} still open");
    }
    Ok(())
}
