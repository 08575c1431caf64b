//! deskmail-pop3 against a real Dovecot (deskmail-testkit's MailStack): the three security
//! modes, logins (USER/PASS, AUTH PLAIN, AUTH XOAUTH2 with and without initial response),
//! UIDL/LIST/RETR/DELE, dot-stuffed lines, the size cap, TLS trust, and secret hygiene.

use std::time::{Duration, Instant};

use anyhow::Result;
use deskmail_pop3::{Pop3Client, Pop3Config, Pop3Error, Security, TlsOptions};
use deskmail_testkit::mail::MailStack;

const USER: &str = "support@desk.test";
const PASS: &str = "support-pass";
/// Long enough that `AUTH XOAUTH2 <initial response>` exceeds RFC 5034's 255 octets.
const LONG_TOKEN: &str = "ya29.a0AfB_byC0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz";

fn stack() -> Result<MailStack> {
    let t = Instant::now();
    let stack = MailStack::builder().user(USER, PASS).user("oauth@client.test", LONG_TOKEN).start()?;
    eprintln!("MailStack on base {} started in {:?}", stack.base_port(), t.elapsed());
    Ok(stack)
}

fn config(stack: &MailStack, security: Security) -> Pop3Config {
    let port = match security {
        Security::Tls => stack.pop3s_port(),
        Security::Plain | Security::StartTls => stack.pop3_port(),
    };
    Pop3Config::new(stack.host(), port, security)
        .with_tls(TlsOptions::with_ca_pem(stack.ca_pem()))
        .with_timeout(Duration::from_secs(10))
}

async fn session(stack: &MailStack, security: Security) -> Result<Pop3Client> {
    let mut pop = Pop3Client::connect(&config(stack, security)).await?;
    pop.login(USER, PASS).await?;
    Ok(pop)
}

#[tokio::test]
async fn plain_stls_and_implicit_tls() -> Result<()> {
    let stack = stack()?;
    stack.deliver(USER, b"Subject: one\r\n\r\nbody\r\n")?;
    for (security, tls) in [(Security::Plain, false), (Security::StartTls, true), (Security::Tls, true)] {
        let mut pop = Pop3Client::connect(&config(&stack, security)).await?;
        assert_eq!(pop.is_tls(), tls, "{security:?}");
        assert!(pop.greeting().contains("ready"), "{}", pop.greeting());
        let caps = pop.capa().await?;
        assert!(caps.has("UIDL") && caps.has("USER"), "{caps:?}");
        // STLS is offered only before TLS.
        assert_eq!(caps.has("STLS"), !tls, "{security:?}: {caps:?}");
        assert!(caps.sasl_mechanisms().contains(&"XOAUTH2".to_string()), "{caps:?}");
        pop.login(USER, PASS).await?;
        assert_eq!(pop.stat().await?.0, 1);
        pop.noop().await?;
        pop.quit().await?;
    }
    Ok(())
}

#[tokio::test]
async fn uidl_list_retr_dele_roundtrip() -> Result<()> {
    let stack = stack()?;
    for i in 1..=3 {
        stack.deliver(
            USER,
            format!("Subject: msg {i}\r\nMessage-ID: <m{i}@client.test>\r\n\r\nbody {i}\r\n").as_bytes(),
        )?;
    }
    let mut pop = session(&stack, Security::Tls).await?;
    let (count, total) = pop.stat().await?;
    assert_eq!(count, 3);
    let list = pop.list().await?;
    assert_eq!(list.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(list.iter().map(|e| e.size).sum::<u64>(), total);
    let uidl = pop.uidl().await?;
    assert_eq!(uidl.len(), 3);
    assert_eq!(pop.uidl_one(2).await?, uidl[1].uid);
    assert_eq!(pop.list_one(2).await?, list[1].size);
    let raw = pop.retr(2).await?;
    assert_eq!(raw.len() as u64, list[1].size, "RETR size matches LIST (CRLF line ends)");
    let text = String::from_utf8(raw)?;
    assert!(text.contains("Subject: msg 2\r\n") && text.ends_with("body 2\r\n"), "{text}");
    assert!(!text.replace("\r\n", "").contains('\n'), "bare LF in {text:?}");

    // A -ERR for a missing message is a Protocol error, and the session stays usable.
    match pop.retr(9).await {
        Err(Pop3Error::Protocol { command: "RETR", reply }) => assert!(reply.starts_with("-ERR"), "{reply}"),
        other => panic!("expected Protocol, got {other:?}"),
    }
    pop.dele(1).await?;
    pop.rset().await?;
    pop.dele(2).await?;
    assert_eq!(pop.stat().await?.0, 2);
    pop.quit().await?;

    let mut pop = session(&stack, Security::StartTls).await?;
    let after = pop.uidl().await?;
    let uids: Vec<_> = after.iter().map(|e| e.uid.clone()).collect();
    assert_eq!(uids, [uidl[0].uid.clone(), uidl[2].uid.clone()], "UIDs are stable, message 2 is gone");
    pop.quit().await?;
    assert_eq!(stack.message_count(USER, "INBOX")?, 2);

    // Dropping a session without QUIT commits nothing.
    let mut pop = session(&stack, Security::Plain).await?;
    pop.dele(1).await?;
    drop(pop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.message_count(USER, "INBOX")?, 2);
    Ok(())
}

#[tokio::test]
async fn retr_returns_dot_lines_intact() -> Result<()> {
    let stack = stack()?;
    let body = "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\n...three\r\nmiddle . dot\r\n.\r\nlast\r\n";
    // Maildir drop: Dovecot serves exactly these bytes, so RETR must return them exactly.
    stack.deliver_many(USER, [body])?;
    // LMTP: Dovecot prepends Return-Path/Delivered-To/Received; the original must follow.
    stack.deliver(USER, body.as_bytes())?;
    let mut pop = session(&stack, Security::Tls).await?;
    let first = String::from_utf8(pop.retr(1).await?)?;
    assert_eq!(first, body);
    let second = String::from_utf8(pop.retr(2).await?)?;
    assert!(second.starts_with("Return-Path: "), "{second:?}");
    assert!(second.ends_with(body), "{second:?}");
    pop.quit().await?;
    Ok(())
}

#[tokio::test]
async fn retr_max_refuses_big_messages() -> Result<()> {
    let stack = stack()?;
    let big =
        format!("Subject: big\r\n\r\n{}", "0123456789abcdef0123456789abcdef0123456789\r\n".repeat(2000));
    stack.deliver_many(USER, [big.as_bytes(), b"Subject: small\r\n\r\nsmall\r\n"])?;
    let mut pop = session(&stack, Security::Tls).await?;
    match pop.retr_max(1, 10_000).await {
        Err(Pop3Error::TooLarge { id: 1, size, limit: 10_000 }) => assert!(size > 80_000, "{size}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Refused from LIST, so nothing was downloaded and the session is still fine.
    assert_eq!(pop.retr_max(2, 10_000).await?, b"Subject: small\r\n\r\nsmall\r\n");
    assert_eq!(pop.retr_max(1, 1_000_000).await?, big.as_bytes());
    pop.quit().await?;
    Ok(())
}

#[tokio::test]
async fn sasl_plain_and_xoauth2() -> Result<()> {
    let stack = stack()?;
    let mut pop = Pop3Client::connect(&config(&stack, Security::Tls)).await?;
    pop.auth_plain(USER, PASS).await?;
    pop.quit().await?;
    // Dovecot checks an XOAUTH2 bearer token against the passdb password.
    let mut pop = Pop3Client::connect(&config(&stack, Security::StartTls)).await?;
    pop.auth_xoauth2(USER, PASS).await?;
    pop.quit().await?;
    // A token this long goes after the server's "+ " instead of as initial response.
    let mut pop = Pop3Client::connect(&config(&stack, Security::Tls)).await?;
    pop.auth_xoauth2("oauth@client.test", LONG_TOKEN).await?;
    assert_eq!(pop.stat().await?.0, 0);
    pop.quit().await?;

    // Refused logins take Dovecot's 0.5 s flush timer each: run them at once.
    let refused = |attempt: &'static str| {
        let cfg = config(&stack, Security::Tls);
        async move {
            let secret = if attempt == "xoauth2-long" { &LONG_TOKEN[1..] } else { "Wrong-Secret-42" };
            let mut pop = Pop3Client::connect(&cfg).await.expect("connect");
            let err = match attempt {
                "plain" => pop.auth_plain(USER, secret).await,
                "user-pass" => pop.login(USER, secret).await,
                _ => pop.auth_xoauth2(USER, secret).await,
            }
            .expect_err("wrong secret must be refused");
            assert!(matches!(err, Pop3Error::Auth(_)), "{attempt}: {err:?}");
            assert!(!err.is_transient(), "{attempt}: {err:?}");
            for shown in [format!("{err}"), format!("{err:?}"), format!("{pop:?}")] {
                assert!(!shown.contains(secret), "{attempt}: secret leaked in {shown}");
            }
            if attempt == "xoauth2" {
                assert!(format!("{err}").contains("401"), "XOAUTH2 error JSON is reported: {err}");
            }
            // After a refused login the session still works for a good one.
            pop.login(USER, PASS).await.expect("login after a refusal");
            pop.quit().await.expect("quit");
        }
    };
    tokio::join!(refused("plain"), refused("xoauth2"), refused("xoauth2-long"), refused("user-pass"));
    Ok(())
}

#[tokio::test]
async fn tls_trust_is_enforced() -> Result<()> {
    let stack = stack()?;
    let other = MailStack::builder().start()?;
    for security in [Security::Tls, Security::StartTls] {
        // Mozilla roots only, or another stack's CA: the kit's cert is not trusted.
        for tls in [TlsOptions::webpki(), TlsOptions::with_ca_pem(other.ca_pem())] {
            let cfg = config(&stack, security).with_tls(tls);
            match Pop3Client::connect(&cfg).await {
                Err(Pop3Error::Tls(e)) => assert!(e.to_string().contains("certificate"), "{e}"),
                other => panic!("{security:?}: expected Tls error, got {other:?}"),
            }
        }
        // The name must match the cert's SANs (localhost, mail.desk.test, 127.0.0.1).
        let cfg = config(&stack, security).with_tls_server_name("imap.example.com");
        assert!(matches!(Pop3Client::connect(&cfg).await, Err(Pop3Error::Tls(_))));
        let cfg = config(&stack, security).with_tls_server_name("mail.desk.test");
        Pop3Client::connect(&cfg).await?.quit().await?;
        // The explicit opt-out accepts the unknown CA and the wrong name.
        let cfg = config(&stack, security)
            .with_tls(TlsOptions::webpki().danger_accept_invalid_certs(true))
            .with_tls_server_name("imap.example.com");
        let mut pop = Pop3Client::connect(&cfg).await?;
        pop.login(USER, PASS).await?;
        pop.quit().await?;
    }
    assert!(!TlsOptions::default().accepts_invalid_certs());
    assert!(matches!(TlsOptions::with_ca_pem("junk").client_config(), Err(Pop3Error::InvalidInput(_))));
    Ok(())
}

#[tokio::test]
async fn stls_is_required_when_asked_for() -> Result<()> {
    let stack = stack()?;
    // Fault injection on the real server: Dovecot without TLS does not offer STLS.
    let conf = std::fs::read_to_string(stack.dovecot_conf_path())?;
    std::fs::write(stack.dovecot_conf_path(), conf.replace("ssl = yes", "ssl = no"))?;
    stack.restart_dovecot()?;
    match Pop3Client::connect(&config(&stack, Security::StartTls)).await {
        Err(Pop3Error::Tls(e)) => assert!(e.to_string().contains("STLS"), "{e}"),
        other => panic!("expected a Tls error, got {other:?}"),
    }
    // Plain still works there, so the refusal above was the client's doing.
    let mut pop = session(&stack, Security::Plain).await?;
    assert!(!pop.capa().await?.has("STLS"));
    pop.quit().await?;
    Ok(())
}

#[tokio::test]
async fn network_errors_are_typed() -> Result<()> {
    let stack = stack()?;
    // Postfix's SMTP port greets with "220", which is not POP3. (Checked while Dovecot
    // runs: without its auth socket, smtpd drops connections before the greeting.)
    let cfg = Pop3Config::new("127.0.0.1", stack.smtp_port(), Security::Plain);
    match Pop3Client::connect(&cfg).await {
        Err(Pop3Error::Protocol { command: "greeting", reply }) => {
            assert!(reply.starts_with("220"), "{reply}")
        }
        other => panic!("expected Protocol, got {other:?}"),
    }
    let port = stack.pop3_port();
    stack.stop_dovecot()?;
    let cfg = Pop3Config::new("127.0.0.1", port, Security::Plain).with_timeout(Duration::from_secs(2));
    match Pop3Client::connect(&cfg).await {
        Err(e @ Pop3Error::Connect { .. }) => assert!(e.is_transient()),
        other => panic!("expected Connect, got {other:?}"),
    }
    // A listener that never answers: the greeting read times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let cfg = Pop3Config::new("127.0.0.1", silent.local_addr()?.port(), Security::Plain)
        .with_timeout(Duration::from_millis(300));
    match Pop3Client::connect(&cfg).await {
        Err(Pop3Error::Timeout { during: "greeting", .. }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    // A session whose server dies mid-way reports I/O, then refuses further commands.
    stack.start_dovecot()?;
    let mut pop = session(&stack, Security::Plain).await?;
    stack.stop_dovecot()?;
    assert!(pop.noop().await.is_err());
    assert!(matches!(pop.noop().await, Err(Pop3Error::Protocol { .. })));
    Ok(())
}
