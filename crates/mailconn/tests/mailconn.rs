//! deskmail-mailconn against a real Dovecot and Postfix (deskmail-testkit's MailStack):
//! every security mode of IMAP, POP3 and SMTP; the failure classes (auth, connect, TLS,
//! DNS, timeout, missing folder, untrusted cert); XOAUTH2; the test email; and the
//! TCP_NODELAY guard (200 mails over one Postfix session). No mocks, nothing skipped.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deskmail_core::StatusReason;
use deskmail_mailconn::lettre::address::Envelope;
use deskmail_mailconn::lettre::{Address, AsyncTransport};
use deskmail_mailconn::smtp::{self, SendError, SenderConfig, SmtpSender};
use deskmail_mailconn::{
    ConnError, Credentials, InboundProbe, Security, ServerEndpoint, TlsPolicy, imap, test_inbound_imap,
    test_inbound_pop3,
};
use deskmail_testkit::mail::MailStack;

const SUPPORT: (&str, &str) = ("support@desk.test", "support-pass-7Qx");
const CUSTOMER: (&str, &str) = ("customer@client.test", "customer-pass-9Kd");
const WRONG: &str = "wrong-secret-4Zr";

fn stack() -> Result<MailStack> {
    let t = Instant::now();
    let stack = MailStack::builder().user(SUPPORT.0, SUPPORT.1).user(CUSTOMER.0, CUSTOMER.1).start()?;
    eprintln!("MailStack on base {} started in {:?}", stack.base_port(), t.elapsed());
    Ok(stack)
}

/// An endpoint on the kit that trusts the kit's CA.
fn ep(stack: &MailStack, port: u16, security: Security) -> ServerEndpoint {
    ServerEndpoint::new(stack.host(), port, security)
        .with_tls(TlsPolicy::with_extra_ca(stack.ca_pem()))
        .with_timeout(Duration::from_secs(10))
}

fn support() -> Credentials {
    Credentials::password(SUPPORT.0, SUPPORT.1)
}

fn wrong() -> Credentials {
    Credentials::password(SUPPORT.0, WRONG)
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Imap,
    Pop3,
    Smtp,
}

/// The connection test of `kind`, reduced to its outcome.
async fn probe(kind: Kind, ep: &ServerEndpoint, creds: &Credentials) -> Result<Vec<String>, ConnError> {
    match kind {
        Kind::Imap => test_inbound_imap(ep, creds, "INBOX").await.map(|p| p.capabilities),
        Kind::Pop3 => test_inbound_pop3(ep, creds).await.map(|p| p.capabilities),
        Kind::Smtp => smtp::test_outbound(ep, creds, Some("desk.test")).await.map(|p| p.capabilities),
    }
}

/// Asserts `err` has `reason` and that no secret shows in any rendering of it.
fn assert_reason(err: &ConnError, reason: StatusReason, what: &str) {
    assert_eq!(err.reason(), reason, "{what}: {err} / {err:?}");
    for shown in [err.to_string(), format!("{err:?}"), err.server_message()] {
        for secret in [SUPPORT.1, CUSTOMER.1, WRONG] {
            assert!(!shown.contains(secret), "{what}: secret in {shown}");
        }
    }
}

async fn expect_err<T: std::fmt::Debug>(
    what: &str,
    fut: impl Future<Output = Result<T, ConnError>>,
) -> Result<ConnError> {
    match fut.await {
        Ok(v) => bail!("{what}: expected an error, got {v:?}"),
        Err(e) => Ok(e),
    }
}

/// Polls the kit until `user`'s INBOX holds `want` messages.
async fn wait_for_count(stack: &MailStack, user: &str, want: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    let mut delay = Duration::from_millis(20);
    loop {
        let n = stack.message_count(user, "INBOX")?;
        if n == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{user} has {n} messages, want {want}\n{}", stack.logs());
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

#[tokio::test]
async fn imap_plain_starttls_and_tls_count_messages() -> Result<()> {
    let stack = stack()?;
    stack.deliver(SUPPORT.0, b"Subject: one\r\n\r\n1\r\n")?;
    stack.deliver(SUPPORT.0, b"Subject: two\r\n\r\n2\r\n")?;
    let want = stack.message_count(SUPPORT.0, "INBOX")?;
    assert_eq!(want, 2);
    for (security, port, tls) in [
        (Security::None, stack.imap_port(), false),
        (Security::StartTls, stack.imap_port(), true),
        (Security::Tls, stack.imaps_port(), true),
    ] {
        let ep = ep(&stack, port, security);
        let InboundProbe { message_count, capabilities } =
            test_inbound_imap(&ep, &support(), "INBOX").await?;
        assert_eq!(message_count as usize, want, "{security:?}");
        assert!(capabilities.iter().any(|c| c == "IMAP4rev1"), "{capabilities:?}");
        assert!(capabilities.iter().any(|c| c == "IDLE"), "{capabilities:?}");
        // The session type the fetcher keeps using: SELECT and a UID search work on it.
        let client = imap::connect(&ep).await?;
        assert_eq!(client.is_tls(), tls, "{security:?}");
        let mut session = imap::login(client, &support()).await?;
        let mailbox = session.select("INBOX").await?;
        assert_eq!(mailbox.exists as usize, want);
        assert_eq!(session.uid_search("ALL").await?.len(), want);
        session.logout().await?;
    }
    // EXAMINE is read-only: nothing was marked \Seen by the probes.
    let mut session =
        imap::login(imap::connect(&ep(&stack, stack.imaps_port(), Security::Tls)).await?, &support()).await?;
    session.examine("INBOX").await?;
    assert_eq!(session.search("UNSEEN").await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn pop3_plain_stls_and_tls_count_messages() -> Result<()> {
    let stack = stack()?;
    for i in 0..3 {
        stack.deliver(SUPPORT.0, format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes())?;
    }
    for (security, port) in [
        (Security::None, stack.pop3_port()),
        (Security::StartTls, stack.pop3_port()),
        (Security::Tls, stack.pop3s_port()),
    ] {
        let probe = test_inbound_pop3(&ep(&stack, port, security), &support()).await?;
        assert_eq!(probe.message_count, 3, "{security:?}");
        assert!(probe.capabilities.iter().any(|c| c == "UIDL"), "{:?}", probe.capabilities);
    }
    // Nothing was deleted.
    assert_eq!(stack.message_count(SUPPORT.0, "INBOX")?, 3);
    Ok(())
}

#[tokio::test]
async fn smtp_plain_starttls_and_tls_ehlo_and_auth() -> Result<()> {
    let stack = stack()?;
    for (security, port) in [
        (Security::None, stack.smtp_port()),
        (Security::StartTls, stack.submission_port()),
        (Security::Tls, stack.smtps_port()),
    ] {
        let caps = probe(Kind::Smtp, &ep(&stack, port, security), &support()).await?;
        assert!(caps.iter().any(|c| c == "PIPELINING"), "{security:?}: {caps:?}");
        assert!(caps.iter().any(|c| c.starts_with("AUTH ") && c.contains("PLAIN")), "{caps:?}");
        // After STARTTLS the server no longer offers it.
        assert!(!caps.iter().any(|c| c == "STARTTLS"), "{security:?}: {caps:?}");
    }
    // Probes send nothing.
    assert_eq!(stack.message_count(smtp_sink(), "INBOX")?, 0);
    Ok(())
}

fn smtp_sink() -> &'static str {
    deskmail_testkit::mail::OUTBOUND_SINK
}

#[tokio::test]
async fn wrong_password_is_auth_failed_with_the_servers_words() -> Result<()> {
    let stack = stack()?;
    let cases = [
        (Kind::Imap, stack.imap_port(), Security::None, "NO [AUTHENTICATIONFAILED]"),
        (Kind::Imap, stack.imaps_port(), Security::Tls, "NO [AUTHENTICATIONFAILED]"),
        (Kind::Pop3, stack.pop3s_port(), Security::Tls, "-ERR [AUTH]"),
        (Kind::Pop3, stack.pop3_port(), Security::None, "-ERR [AUTH]"),
        (Kind::Smtp, stack.submission_port(), Security::StartTls, "535 5.7.8"),
        (Kind::Smtp, stack.smtp_port(), Security::None, "535 5.7.8"),
    ];
    // Dovecot answers a failed login after a short delay: run them all at once.
    let runs = cases.iter().map(|&(kind, port, security, words)| {
        let ep = ep(&stack, port, security);
        async move {
            let what = format!("{kind:?} {security:?}");
            let err = expect_err(&what, probe(kind, &ep, &wrong())).await?;
            assert_reason(&err, StatusReason::AuthFailed, &what);
            assert!(err.server_message().starts_with(words), "{what}: {}", err.server_message());
            assert!(!err.is_transient(), "{what}: {err}");
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

#[tokio::test]
async fn closed_port_unknown_host_and_tls_on_plain_port() -> Result<()> {
    let stack = stack()?;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    for kind in [Kind::Imap, Kind::Pop3, Kind::Smtp] {
        let what = format!("{kind:?} closed port");
        let err = expect_err(&what, probe(kind, &ep(&stack, closed, Security::Tls), &support())).await?;
        assert_reason(&err, StatusReason::ConnectFailed, &what);
        assert!(err.is_transient());

        let what = format!("{kind:?} unknown host");
        let unknown = ServerEndpoint::new("no-such-host.invalid", 993, Security::Tls);
        let err = expect_err(&what, probe(kind, &unknown, &support())).await?;
        assert_reason(&err, StatusReason::DnsFailed, &what);
    }
    for (kind, port) in
        [(Kind::Imap, stack.imap_port()), (Kind::Pop3, stack.pop3_port()), (Kind::Smtp, stack.smtp_port())]
    {
        let what = format!("{kind:?} TLS on a plain port");
        let t = Instant::now();
        let err = expect_err(&what, probe(kind, &ep(&stack, port, Security::Tls), &support())).await?;
        assert_reason(&err, StatusReason::TlsFailed, &what);
        assert!(t.elapsed() < Duration::from_secs(2), "{what} took {:?}", t.elapsed());
    }
    // Port 25 of the kit offers no STARTTLS: asking for it must not fall back to clear text.
    let err = expect_err(
        "SMTP STARTTLS not offered",
        probe(Kind::Smtp, &ep(&stack, stack.smtp_port(), Security::StartTls), &support()),
    )
    .await?;
    assert_reason(&err, StatusReason::TlsFailed, "SMTP STARTTLS not offered");
    assert!(err.server_message().contains("does not offer STARTTLS"), "{err}");
    Ok(())
}

#[tokio::test]
async fn silent_server_is_timeout() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    // Accepts and holds every connection, never says a word.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let short = Duration::from_millis(300);
    for kind in [Kind::Imap, Kind::Pop3, Kind::Smtp] {
        for security in [Security::None, Security::Tls] {
            let ep = ServerEndpoint::new("127.0.0.1", port, security).with_timeout(short);
            let what = format!("{kind:?} {security:?} silent");
            let t = Instant::now();
            let err = expect_err(&what, probe(kind, &ep, &support())).await?;
            assert_reason(&err, StatusReason::Timeout, &what);
            assert!(err.is_transient());
            assert!(t.elapsed() < Duration::from_secs(2), "{what} took {:?}", t.elapsed());
        }
    }
    holder.abort();
    Ok(())
}

#[tokio::test]
async fn missing_folder_is_mailbox_not_found() -> Result<()> {
    let stack = stack()?;
    let ep = ep(&stack, stack.imaps_port(), Security::Tls);
    let err = expect_err("missing folder", test_inbound_imap(&ep, &support(), "No Such Folder")).await?;
    assert_reason(&err, StatusReason::MailboxNotFound, "missing folder");
    // Dovecot 2.3: `NO Mailbox doesn't exist: No Such Folder (0.001 + 0.001 secs).`
    let words = err.server_message();
    assert!(words.starts_with("NO ") && words.contains("No Such Folder"), "{words}");
    // An existing non-INBOX folder works.
    assert_eq!(test_inbound_imap(&ep, &support(), "Sent").await?.message_count, 0);
    Ok(())
}

#[tokio::test]
async fn certificates_are_verified_unless_explicitly_not() -> Result<()> {
    let stack = stack()?;
    let cases = [
        (Kind::Imap, stack.imaps_port(), Security::Tls),
        (Kind::Imap, stack.imap_port(), Security::StartTls),
        (Kind::Pop3, stack.pop3s_port(), Security::Tls),
        (Kind::Pop3, stack.pop3_port(), Security::StartTls),
        (Kind::Smtp, stack.smtps_port(), Security::Tls),
        (Kind::Smtp, stack.submission_port(), Security::StartTls),
    ];
    for (kind, port, security) in cases {
        let what = format!("{kind:?} {security:?} untrusted CA");
        let webpki_only = ep(&stack, port, security).with_tls(TlsPolicy::default());
        let err = expect_err(&what, probe(kind, &webpki_only, &support())).await?;
        assert_reason(&err, StatusReason::TlsFailed, &what);
        assert!(err.to_string().to_lowercase().contains("certificate"), "{what}: {err}");

        let insecure = ep(&stack, port, security).with_tls(TlsPolicy::dangerous_accept_invalid_certs());
        probe(kind, &insecure, &support())
            .await
            .with_context(|| format!("{kind:?} {security:?} insecure"))?;
    }
    Ok(())
}

#[tokio::test]
async fn xoauth2_logins_and_bad_tokens() -> Result<()> {
    let stack = stack()?;
    // On the kit the bearer token is the user's password.
    let good = Credentials::oauth2(SUPPORT.0, SUPPORT.1);
    let bad = Credentials::oauth2(SUPPORT.0, WRONG);
    let cases = [
        (Kind::Imap, stack.imaps_port(), Security::Tls),
        (Kind::Pop3, stack.pop3s_port(), Security::Tls),
        (Kind::Smtp, stack.submission_port(), Security::StartTls),
        (Kind::Smtp, stack.smtps_port(), Security::Tls),
    ];
    let runs = cases.iter().map(|&(kind, port, security)| {
        let ep = ep(&stack, port, security);
        let (good, bad) = (good.clone(), bad.clone());
        async move {
            let what = format!("{kind:?} {security:?} XOAUTH2");
            probe(kind, &ep, &good).await.with_context(|| what.clone())?;
            let err = expect_err(&what, probe(kind, &ep, &bad)).await?;
            assert_reason(&err, StatusReason::AuthFailed, &what);
            eprintln!("{what} refused: {}", err.server_message());
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

#[tokio::test]
async fn test_email_arrives() -> Result<()> {
    let stack = stack()?;
    for (security, port) in
        [(Security::StartTls, stack.submission_port()), (Security::Tls, stack.smtps_port())]
    {
        let sent = smtp::send_test_email(
            &ep(&stack, port, security),
            &support(),
            SUPPORT.0,
            CUSTOMER.0,
            "deskmail test email",
            "If you can read this, the outbound settings work.\n",
        )
        .await?;
        assert!(sent.reply.starts_with("250 "), "{}", sent.reply);
        assert!(
            sent.message_id.starts_with('<') && sent.message_id.ends_with("@desk.test>"),
            "{}",
            sent.message_id
        );
    }
    // lettre's own pooled transport, built with the same settings (STARTTLS required, AUTH).
    let transport =
        smtp::transport(&ep(&stack, stack.submission_port(), Security::StartTls), &support(), None, None)?;
    assert!(transport.test_connection().await?);
    let envelope = Envelope::new(Some(SUPPORT.0.parse::<Address>()?), vec![CUSTOMER.0.parse()?])?;
    transport.send_raw(&envelope, &small_mail(1, CUSTOMER.0)).await?;
    wait_for_count(&stack, CUSTOMER.0, 3, Duration::from_secs(15)).await?;
    let err = expect_err(
        "bad address",
        smtp::send_test_email(
            &ep(&stack, stack.submission_port(), Security::StartTls),
            &support(),
            "not an address",
            CUSTOMER.0,
            "x",
            "x",
        ),
    )
    .await?;
    assert_eq!(err.reason(), StatusReason::ProtocolError);
    Ok(())
}

fn small_mail(i: usize, to: &str) -> Vec<u8> {
    format!(
        "From: support@desk.test\r\nTo: {to}\r\nSubject: small {i}\r\nMessage-ID: <small-{i}@desk.test>\r\n\r\nbody {i}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn sender_reuses_one_session_without_nagle_stall() -> Result<()> {
    let stack = stack()?;
    let ep = ep(&stack, stack.smtp_port(), Security::None);
    let config = SenderConfig { max_messages_per_connection: 1000, ..SenderConfig::default() };
    let sender = SmtpSender::new(ep, Credentials::None, Some("desk.test"), config)?;
    let envelope = Envelope::new(Some("support@desk.test".parse::<Address>()?), vec![CUSTOMER.0.parse()?])?;
    // Warm up: connect, greeting, EHLO.
    sender.send(&envelope, &small_mail(0, CUSTOMER.0)).await?;
    const N: usize = 200;
    let t = Instant::now();
    for i in 1..=N {
        let reply = sender.send(&envelope, &small_mail(i, CUSTOMER.0)).await?;
        assert_eq!(reply.code, 250, "{reply}");
    }
    let took = t.elapsed();
    eprintln!("{N} mails over one session in {took:?} ({:?} per mail)", took / N as u32);
    assert_eq!(sender.connections_opened(), 1, "all mails over one session");
    // With the Nagle/delayed-ACK stall each mail costs >= 40 ms, i.e. >= 8 s for 200.
    assert!(took < Duration::from_secs(4), "{N} mails took {took:?}: Nagle stall is back?");
    sender.close().await;
    wait_for_count(&stack, CUSTOMER.0, N + 1, Duration::from_secs(60)).await?;
    Ok(())
}

#[tokio::test]
async fn sender_tells_permanent_from_transient() -> Result<()> {
    let stack = stack()?;
    let smtp_ep = ep(&stack, stack.smtp_port(), Security::None);
    let sender = SmtpSender::new(smtp_ep, Credentials::None, Some("desk.test"), SenderConfig::default())?;
    // Unknown local user: 550 at RCPT, permanent, with the server's words.
    let envelope =
        Envelope::new(Some("support@desk.test".parse::<Address>()?), vec!["nobody@desk.test".parse()?])?;
    match sender.send(&envelope, &small_mail(1, "nobody@desk.test")).await {
        Err(e @ SendError::Rejected(_)) => {
            assert!(e.is_permanent() && !e.is_transient());
            let reply = e.reply().context("reply")?;
            assert_eq!(reply.code, 550, "{reply}");
            assert!(e.server_message().contains("nobody@desk.test"), "{}", e.server_message());
            assert_eq!(e.mailbox_reason(), None);
        }
        other => bail!("expected a 5xx rejection, got {other:?}"),
    }
    // A good mail after the rejection still goes through (on a fresh session).
    let envelope = Envelope::new(Some("support@desk.test".parse::<Address>()?), vec![CUSTOMER.0.parse()?])?;
    sender.send(&envelope, &small_mail(2, CUSTOMER.0)).await?;

    // Submission with a wrong password: no session, transient for the message, auth_failed for the box.
    let bad = SmtpSender::new(
        ep(&stack, stack.submission_port(), Security::StartTls),
        wrong(),
        None,
        SenderConfig::default(),
    )?;
    match bad.send(&envelope, &small_mail(3, CUSTOMER.0)).await {
        Err(e @ SendError::Connection(_)) => {
            assert!(e.is_transient());
            assert_eq!(e.mailbox_reason(), Some(StatusReason::AuthFailed));
            assert!(e.server_message().starts_with("535"), "{}", e.server_message());
            assert!(!format!("{e:?}").contains(WRONG));
        }
        other => bail!("expected a connection error, got {other:?}"),
    }
    // A stopped Postfix: connect_failed, transient.
    stack.stop_postfix()?;
    let fresh = SmtpSender::new(
        ep(&stack, stack.smtp_port(), Security::None),
        Credentials::None,
        None,
        SenderConfig::default(),
    )?;
    match fresh.send(&envelope, &small_mail(4, CUSTOMER.0)).await {
        Err(e) => {
            assert!(e.is_transient(), "{e}");
            assert_eq!(e.mailbox_reason(), Some(StatusReason::ConnectFailed), "{e}");
        }
        Ok(r) => bail!("sent with Postfix stopped: {r}"),
    }
    Ok(())
}
