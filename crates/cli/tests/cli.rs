//! The real `deskmailctl` binary against a real in-process configd (SQLite), and for the
//! connection tests a real Dovecot + Postfix from the test kit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Stdio;
use std::time::Duration;

use deskmail_runtime::CancellationToken;
use deskmail_testkit::mail::MailStack;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

#[path = "cli/dead.rs"]
mod dead;
#[path = "cli/dead_replay.rs"]
mod dead_replay;

const ADMIN: &str = "admin-token-0123456789";
const DAEMON: &str = "daemon-token-0123456789";

struct Configd {
    port: u16,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Configd {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "11".repeat(32)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("configd.db").display());
        let toml = format!(
            "[listen]\nport = {port}\n[database]\nurl = {db:?}\n[secrets]\nkey_file = {key:?}\n\
             [auth]\nadmin_token = {ADMIN:?}\ndaemon_token = {DAEMON:?}\n[log]\nlevel = \"warn\"\n"
        );
        let file = dir.path().join("configd.toml");
        std::fs::write(&file, toml).unwrap();
        let config: deskmail_configd::Config = deskmail_config::load(Some(&file)).unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = deskmail_configd::run(config, stop).await {
                panic!("configd stopped: {e}");
            }
        });
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { port, _dir: dir, shutdown, task: Some(task) }
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(15), task).await.unwrap().unwrap();
        }
    }

    /// `deskmailctl ARGS` with the admin token.
    async fn ctl(&self, args: &[&str]) -> Run {
        run(self.port, Some(ADMIN), args, None).await
    }

    /// `deskmailctl ARGS` with the admin token and this on stdin.
    async fn ctl_in(&self, args: &[&str], stdin: &str) -> Run {
        run(self.port, Some(ADMIN), args, Some(stdin)).await
    }

    /// Asserts success and returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        self.ctl(args).await.success()
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
    }
}

impl Drop for Configd {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn success(self) -> String {
        assert_eq!(self.code, 0, "{self:#?}");
        self.stdout
    }
}

async fn run(port: u16, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> Run {
    let endpoint = format!("http://127.0.0.1:{port}");
    run_env(token, args, stdin, &[("DESKMAILCTL_ENDPOINT", endpoint.as_str())]).await
}

/// `deskmailctl ARGS` with a clean environment plus `env`.
async fn run_env(token: Option<&str>, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_deskmailctl"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("DESKMAILCTL_TOKEN", token);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or("").as_bytes()).await.unwrap();
    drop(pipe);
    let out =
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await.unwrap().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The data row of a table whose first column is `key`.
fn row<'a>(table: &'a str, key: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(key))
        .unwrap_or_else(|| panic!("no row {key:?} in\n{table}"))
}

const IMAP_BOX: [&str; 18] = [
    "--in-protocol",
    "imap",
    "--in-host",
    "127.0.0.1",
    "--in-security",
    "tls",
    "--in-user",
    "support@desk.test",
    "--in-password-stdin",
    "--dispatch",
    "by-queue",
    "--queue",
    "Support",
    "--allow-invalid-certs",
    "--poll-interval",
    "2m",
    "--max-size",
    "25M",
];

/// What a fetcher would send after a failed login.
async fn report_auth_failure(port: u16, mailbox: &str) {
    use deskmail_proto::v1 as pb;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", format!("Bearer {DAEMON}").parse().unwrap());
        Ok(r)
    };
    pb::status_service_client::StatusServiceClient::with_interceptor(channel, bearer)
        .report_status(pb::ReportStatusRequest {
            mailbox_id: mailbox.into(),
            direction: pb::Direction::Inbound as i32,
            state: pb::MailboxState::Error as i32,
            reason: pb::StatusReason::AuthFailed as i32,
            message: "AUTHENTICATIONFAILED".into(),
            messages: 0,
            reporter: "test".into(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_resource_through_the_cli() {
    let d = Configd::start().await;
    let q = d
        .json(&[
            "queue",
            "create",
            "--name",
            "Support",
            "--auto-reply",
            "true",
            "--auto-reply-body",
            "Thanks",
        ])
        .await;
    assert_eq!((q["name"].as_str(), q["auto_reply"].as_bool()), (Some("Support"), Some(true)));

    let mut create = vec!["mailbox", "create", "--name", "support", "--in-port", "993"];
    create.extend(IMAP_BOX);
    create.extend(["--out-host", "127.0.0.1", "--out-port", "587", "--out-security", "starttls"]);
    create.extend(["--out-user", "support@desk.test", "--out-password-stdin", "--from", "support@desk.test"]);
    let shown = d.ctl_in(&create, "in-pass\nout-pass\n").await.success();
    assert!(row(&shown, "inbound.has_password").ends_with("yes"), "{shown}");
    assert!(row(&shown, "inbound.queue_id").contains("(Support)"), "queue name shown: {shown}");
    assert!(!shown.contains("in-pass") && !shown.contains("out-pass"), "{shown}");

    d.ok(&["company", "create", "--name", "ACME", "--domain", "acme.example", "--domain", "@Acme.TEST"])
        .await;
    d.ok(&["company", "update", "ACME", "--outbound-mailbox", "support"]).await;
    let contract = d.json(&["contract", "create", "--name", "ACME gold", "--company", "ACME"]).await;
    assert!(!contract["company_id"].as_str().unwrap().is_empty());
    let filter = d
        .json(&[
            "filter",
            "create",
            "--name",
            "spam",
            "--header",
            "X-Spam-Flag",
            "--pattern",
            "(?i)^yes",
            "--ignore",
        ])
        .await;
    assert_eq!((filter["action"]["ignore"].as_bool(), filter["enabled"].as_bool()), (Some(true), Some(true)));
    d.ok(&["filter", "update", "spam", "--set-priority", "3", "--stop", "--position", "-5"]).await;
    d.ok(&[
        "address",
        "create",
        "--address",
        "Help@Desk.TEST",
        "--queue",
        "Support",
        "--display-name",
        "Help",
    ])
    .await;

    // Tables name what is there, with names for references.
    let mailboxes = d.ok(&["mailbox", "list"]).await;
    assert!(row(&mailboxes, "NAME").contains("INBOUND"), "{mailboxes}");
    let line = row(&mailboxes, "support");
    assert!(line.contains("imap/tls support@desk.test@127.0.0.1:993") && line.contains("Support"), "{line}");
    assert!(row(&d.ok(&["company", "list"]).await, "ACME").contains("acme.example, acme.test"));
    assert!(row(&d.ok(&["contract", "list"]).await, "ACME").contains("ACME gold"));
    let filters = d.ok(&["filter", "list"]).await;
    assert!(
        row(&filters, "-5").contains("spam") && row(&filters, "-5").contains("priority=3 ignore"),
        "{filters}"
    );
    assert!(row(&d.ok(&["address", "list"]).await, "help@desk.test").contains("Support"));

    // JSON: an array with proto field names, secrets never, has_password instead.
    let list = d.json(&["mailbox", "list"]).await;
    let m = &list.as_array().unwrap()[0];
    assert_eq!(m["name"], "support");
    assert_eq!(m["inbound"]["has_password"], true);
    assert_eq!(m["inbound"]["poll_interval_seconds"], 120);
    assert_eq!(m["inbound"]["max_message_size"], (25u64 << 20).to_string());
    assert_eq!(m["inbound"]["security"], "SECURITY_TLS");
    assert_eq!(m["outbound"]["has_password"], true);
    assert!(m["inbound"].get("password").is_none() && m["outbound"].get("password").is_none());
    for kind in ["queue", "address", "company", "contract", "filter"] {
        assert_eq!(d.json(&[kind, "list"]).await.as_array().unwrap().len(), 1, "{kind}");
    }

    // Update sends a mask of exactly the flags given: false is sent, the rest is kept.
    let q = d.json(&["queue", "update", "Support", "--auto-reply", "false"]).await;
    assert_eq!((q["auto_reply"].as_bool(), q["auto_reply_body"].as_str()), (Some(false), Some("Thanks")));
    let m = d.json(&["mailbox", "update", "support", "--in-port", "995", "--trusted"]).await;
    assert_eq!((m["inbound"]["port"].as_u64(), m["inbound"]["trusted"].as_bool()), (Some(995), Some(true)));
    assert_eq!(m["inbound"]["host"], "127.0.0.1");
    assert_eq!(m["inbound"]["has_password"], true, "a password not named is kept");
    assert_eq!(m["outbound"]["port"], 587);
    let m = d.json(&["mailbox", "update", "support", "--trusted=false"]).await;
    assert_eq!(m["inbound"]["trusted"], false);
    let usage = d.ctl(&["queue", "update", "Support"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");

    // --from-json: a whole document, from a file or stdin; the mask names its fields.
    let doc = r#"{"name": "Sales", "autoReplySubject": "Re: {{subject}}"}"#;
    let sales = d.ctl_in(&["queue", "create", "--from-json", "-", "-o", "json"], doc).await.success();
    let sales: Value = serde_json::from_str(&sales).unwrap();
    assert_eq!(sales["auto_reply_subject"], "Re: {{subject}}");
    let paged = d.json(&["queue", "list", "--page-size", "1"]).await;
    assert_eq!(paged["queues"].as_array().unwrap().len(), 1);
    let token = paged["next_page_token"].as_str().unwrap();
    let next = d.json(&["queue", "list", "--page-size", "1", "--page-token", token]).await;
    assert_eq!(next["queues"][0]["name"], "Support");
    assert_eq!(d.json(&["queue", "list"]).await.as_array().unwrap().len(), 2, "every page");

    // Status: never tried yet, so waiting; --fail-on-error passes.
    let status = d.ok(&["status", "--fail-on-error"]).await;
    assert!(row(&status, "NAME").contains("LAST SUCCESS"), "{status}");
    assert!(row(&status, "support").contains("waiting"), "{status}");
    let one = d.json(&["status", "support"]).await;
    assert_eq!(one[0]["status"]["state"], "MAILBOX_STATE_WAITING");

    // A daemon reports an error: shown with its reason; --fail-on-error makes it exit 1.
    report_auth_failure(d.port, "support").await;
    let status = d.ok(&["status"]).await;
    let line = row(&status, "support");
    assert!(line.contains("inbound") && line.contains("error") && line.contains("auth_failed"), "{status}");
    assert!(line.contains("AUTHENTICATIONFAILED"), "{status}");
    let failing = d.ctl(&["status", "--fail-on-error"]).await;
    assert_eq!(failing.code, 1, "{failing:?}");
    assert!(failing.stdout.contains("auth_failed"), "the table is printed too: {failing:?}");

    // Settings: update one field, the rest keeps its defaults.
    let s = d
        .ok(&["settings", "update", "--auto-reply-limit", "3", "--default-outbound-mailbox", "support"])
        .await;
    assert!(row(&s, "auto_reply_limit_per_day").ends_with('3'), "{s}");
    let s = d.json(&["settings", "get"]).await;
    assert_eq!(
        (s["auto_reply_limit_per_day"].as_u64(), s["ticket_hook"].as_str()),
        (Some(3), Some("Ticket#"))
    );
    d.ok(&["settings", "update", "--number-format", "auto-increment", "--ignore-unknown-senders", "yes"])
        .await;
    let s = d.json(&["settings", "get"]).await;
    assert_eq!(
        (s["number_format"].as_str(), s["ignore_unknown_senders"].as_bool()),
        (Some("NUMBER_FORMAT_AUTO_INCREMENT"), Some(true))
    );

    let snap = d.json(&["snapshot"]).await;
    assert_eq!(snap["mailboxes"][0]["name"], "support");
    assert!(snap["mailboxes"][0]["inbound"].get("password").is_none());
    // The daemon role's snapshot carries the secrets; the CLI still prints none.
    let daemon_view = run(d.port, Some(DAEMON), &["snapshot", "-o", "json"], None).await.success();
    assert!(daemon_view.contains("has_password") && !daemon_view.contains("in-pass"), "{daemon_view}");
    assert!(!daemon_view.contains("out-pass") && !daemon_view.contains("\"password\""), "{daemon_view}");
    assert!(row(&d.ok(&["snapshot"]).await, "queues").contains("Sales, Support"));
    assert!(d.ok(&["mailbox", "presets"]).await.contains("imap.gmail.com:993 tls"));

    // Delete: refused while used, then --force (the users fall back).
    let refused = d.ctl(&["mailbox", "delete", "support"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("FAILED_PRECONDITION") && refused.stderr.contains("ACME"), "{refused:?}");
    let queue_in_use = d.ctl(&["queue", "delete", "Support", "--force"]).await;
    assert_eq!(queue_in_use.code, 1, "a queue in use stays: {queue_in_use:?}");
    assert!(d.ok(&["mailbox", "delete", "support", "--force"]).await.contains("deleted mailbox"));
    assert_eq!(d.json(&["company", "get", "ACME"]).await["outbound_mailbox_id"], "");
    for (kind, name) in [("filter", "spam"), ("contract", "ACME gold"), ("address", "help@desk.test")] {
        d.ok(&[kind, "delete", name]).await;
    }
    let gone = d.ctl(&["filter", "get", "spam"]).await;
    assert_eq!(gone.code, 1, "{gone:?}");
    assert!(gone.stderr.starts_with("deskmailctl: get filter \"spam\": NOT_FOUND"), "{gone:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_problem_and_exit_codes_tell_them_apart() {
    let d = Configd::start().await;
    d.ok(&["queue", "create", "--name", "Support"]).await;

    // Validation: every field violation on its own line, exit 3.
    let mut bad = vec!["mailbox", "create", "--name", "", "--in-port", "70000", "--in-host", ""];
    bad.extend(IMAP_BOX.iter().filter(|a| !["--in-host", "127.0.0.1"].contains(a)));
    let err = d.ctl_in(&bad, "pw\n").await;
    assert_eq!(err.code, 3, "{err:?}");
    assert!(err.stderr.starts_with("deskmailctl: create mailbox: INVALID_ARGUMENT"), "{err:?}");
    for line in [
        "  mailbox.inbound.port: 70000 is not a port (1-65535)",
        "  mailbox.name: is required",
        "  mailbox.inbound.host: is required",
    ] {
        assert!(err.stderr.lines().any(|l| l == line), "{line:?} missing in\n{}", err.stderr);
    }
    assert!(err.stdout.is_empty());

    // A name that resolves to nothing: exit 3, naming the flag.
    let err = d.ctl(&["address", "create", "--address", "a@desk.test", "--queue", "Nope"]).await;
    assert_eq!(err.code, 3, "{err:?}");
    assert!(err.stderr.contains("--queue: no queue with id or name \"Nope\""), "{err:?}");

    // Auth: a wrong token is UNAUTHENTICATED (exit 1), the daemon token PERMISSION_DENIED.
    let err = run(d.port, Some("wrong-token"), &["queue", "list"], None).await;
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.contains("UNAUTHENTICATED") && err.stderr.contains("DESKMAILCTL_TOKEN"), "{err:?}");
    let err = run(d.port, Some(DAEMON), &["queue", "list"], None).await;
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.contains("PERMISSION_DENIED"), "{err:?}");
    // No token at all: the CLI config is incomplete (78), said before any call.
    let err = run(d.port, None, &["queue", "list"], None).await;
    assert_eq!(err.code, 78, "{err:?}");
    assert!(err.stderr.contains("token") && err.stderr.contains("DESKMAILCTL_TOKEN"), "{err:?}");
    // health needs none.
    assert!(run(d.port, None, &["health"], None).await.success().contains("SERVING"));

    // Usage errors: clap's own, an unset password variable, an unreadable --from-json.
    assert_eq!(d.ctl(&["queue", "frobnicate"]).await.code, 2);
    assert_eq!(d.ctl(&["mailbox", "create", "--in-port", "x"]).await.code, 2);
    let err = d.ctl(&["mailbox", "create", "--name", "m", "--in-password-env", "NO_SUCH_VAR"]).await;
    assert_eq!(err.code, 2, "{err:?}");
    assert!(err.stderr.contains("NO_SUCH_VAR"), "{err:?}");
    assert_eq!(d.ctl(&["queue", "create", "--from-json", "/nonexistent.json"]).await.code, 2);
    let err = d.ctl_in(&["queue", "create", "--from-json", "-"], "{\"nope\": 1}").await;
    assert_eq!(err.code, 2, "{err:?}");

    // Already exists and unreachable: exit 1.
    let err = d.ctl(&["queue", "create", "--name", "Support"]).await;
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.contains("ALREADY_EXISTS"), "{err:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = run(closed, Some(ADMIN), &["queue", "list"], None).await;
    assert_eq!(err.code, 1, "{err:?}");
    assert!(err.stderr.contains("cannot reach configd"), "{err:?}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_test_against_a_real_mail_server() {
    let stack = MailStack::builder().user("support@desk.test", "support-pass").start().unwrap();
    stack.deliver("support@desk.test", b"Subject: one\r\n\r\nhi\r\n").unwrap();
    stack.deliver("support@desk.test", b"Subject: two\r\n\r\nhi\r\n").unwrap();
    let d = Configd::start().await;
    d.ok(&["queue", "create", "--name", "Support"]).await;
    let port = stack.imaps_port().to_string();
    let mut create = vec!["mailbox", "create", "--name", "support", "--in-port", &port];
    create.extend(IMAP_BOX);
    d.ctl_in(&create, "support-pass\n").await.success();

    let ok = d.ok(&["mailbox", "test", "support"]).await;
    let line = row(&ok, "inbound");
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..4], ["inbound", "ok", "-", "2"], "{ok}");
    let json = d.json(&["mailbox", "test", "support", "--direction", "inbound"]).await;
    assert_eq!(json["results"][0]["message_count"], "2");
    let none = d.ctl(&["mailbox", "test", "support", "--direction", "outbound"]).await;
    assert_eq!(none.code, 1, "no outbound part: {none:?}");

    // A wrong password, set through stdin on update: auth_failed, exit 1.
    d.ctl_in(&["mailbox", "update", "support", "--in-password-stdin"], "wrong-pass\n").await.success();
    let failed = d.ctl(&["mailbox", "test", "support"]).await;
    assert_eq!(failed.code, 1, "{failed:?}");
    let line = row(&failed.stdout, "inbound");
    assert!(line.contains("failed") && line.contains("auth_failed"), "{failed:?}");
    assert!(!failed.stdout.contains("wrong-pass"));

    // An outbound part over SMTPS, then a test mail through it: it arrives.
    let smtps = stack.smtps_port().to_string();
    let args = [
        "mailbox",
        "update",
        "support",
        "--out-host",
        "127.0.0.1",
        "--out-port",
        &smtps,
        "--out-security",
        "tls",
        "--out-auth",
        "password",
        "--out-user",
        "support@desk.test",
        "--out-password-stdin",
        "--from",
        "support@desk.test",
        "--out-allow-invalid-certs",
    ];
    d.ctl_in(&args, "support-pass\n").await.success();
    let sent = d.ok(&["mailbox", "send-test", "support", "--to", "support@desk.test"]).await;
    assert!(sent.contains("250") || sent.to_lowercase().contains("ok"), "{sent}");
    let mut count = 0;
    for _ in 0..100 {
        count = stack.message_count("support@desk.test", "INBOX").unwrap();
        if count == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(count, 3, "the test mail arrived");
    let refused = d.ctl(&["mailbox", "send-test", "support", "--to", "not an address"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    d.stop().await;
}
