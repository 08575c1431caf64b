//! The flags of `mailbox create` and `mailbox update`, and the Mailbox (plus field mask)
//! they make. Passwords come from stdin or an environment variable only: a password flag
//! would land in the shell history and in `ps`.

use std::io::Read;

use clap::{Args, ValueEnum};
use deskmail_proto::v1 as pb;

use crate::client::Api;
use crate::crud;
use crate::fail::Fail;
use crate::patch::{JsonArg, Patch, boolish, parse_seconds, parse_size};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PresetArg {
    Gmail,
    Outlook,
    Yahoo,
    Custom,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Imap,
    Pop3,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SecurityArg {
    /// Clear text (trusted networks only).
    None,
    /// Upgrade with STARTTLS/STLS.
    Starttls,
    /// TLS from the first byte.
    Tls,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthArg {
    None,
    Password,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DispatchArg {
    /// Every mail goes to --queue.
    ByQueue,
    /// Recipients matched against system addresses; no match goes to --fallback-queue.
    ByRecipient,
}

fn security(s: SecurityArg) -> i32 {
    (match s {
        SecurityArg::None => pb::Security::None,
        SecurityArg::Starttls => pb::Security::Starttls,
        SecurityArg::Tls => pb::Security::Tls,
    }) as i32
}

/// Mailbox fields. Switches (`--trusted`, `--dry-run`, ...) take `=false` to turn them off.
#[derive(Debug, Args)]
pub struct MailboxFields {
    /// The mailbox's unique name.
    #[arg(long)]
    name: Option<String>,
    /// Provider preset: fills host, port and security of both parts left empty (create only).
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Whether the daemons use the mailbox (default true on create).
    #[arg(long, value_name = "BOOL", value_parser = boolish())]
    enabled: Option<bool>,

    /// Inbound protocol.
    #[arg(long, value_enum, help_heading = "Inbound (fetching)")]
    in_protocol: Option<ProtocolArg>,
    /// Inbound server host.
    #[arg(long, value_name = "HOST", help_heading = "Inbound (fetching)")]
    in_host: Option<String>,
    /// Inbound server port (1-65535).
    #[arg(long, value_name = "PORT", help_heading = "Inbound (fetching)")]
    in_port: Option<u32>,
    /// Inbound TLS mode.
    #[arg(long, value_enum, help_heading = "Inbound (fetching)")]
    in_security: Option<SecurityArg>,
    /// Inbound login name.
    #[arg(long, value_name = "USER", help_heading = "Inbound (fetching)")]
    in_user: Option<String>,
    /// Read the inbound password from stdin (first line; with --out-password-stdin, the
    /// outbound one is the second line).
    #[arg(long, help_heading = "Inbound (fetching)", conflicts_with = "in_password_env")]
    in_password_stdin: bool,
    /// Read the inbound password from this environment variable.
    #[arg(long, value_name = "VAR", help_heading = "Inbound (fetching)")]
    in_password_env: Option<String>,
    /// IMAP folder to fetch (default INBOX).
    #[arg(long, value_name = "FOLDER", help_heading = "Inbound (fetching)")]
    in_folder: Option<String>,
    /// Time between polls when IDLE is not available: seconds, or 90s, 5m (default 60).
    #[arg(long, value_name = "DURATION", value_parser = parse_seconds, help_heading = "Inbound (fetching)")]
    poll_interval: Option<u32>,
    /// Leave fetched mail on the server.
    #[arg(long, help_heading = "Inbound (fetching)", conflicts_with = "delete")]
    keep: bool,
    /// Delete fetched mail from the server once it is safely queued.
    #[arg(long, help_heading = "Inbound (fetching)")]
    delete: bool,
    /// Leave larger mails on the server: bytes, or 512K, 25M, 1G (0 = no limit).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "Inbound (fetching)")]
    max_size: Option<u64>,
    /// How new tickets find their queue.
    #[arg(long, value_enum, help_heading = "Inbound (fetching)")]
    dispatch: Option<DispatchArg>,
    /// by-queue: the queue (name or id).
    #[arg(long, value_name = "QUEUE", help_heading = "Inbound (fetching)")]
    queue: Option<String>,
    /// by-recipient: where mail to no known address goes (name or id).
    #[arg(long, value_name = "QUEUE", help_heading = "Inbound (fetching)")]
    fallback_queue: Option<String>,
    /// Honour X-Deskmail-* headers on mail from this box.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish(), help_heading = "Inbound (fetching)")]
    trusted: Option<bool>,
    /// Accept invalid TLS certificates on the inbound server (test servers only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish(), help_heading = "Inbound (fetching)")]
    allow_invalid_certs: Option<bool>,

    /// SMTP server host.
    #[arg(long, value_name = "HOST", help_heading = "Outbound (SMTP)")]
    out_host: Option<String>,
    /// SMTP server port (1-65535).
    #[arg(long, value_name = "PORT", help_heading = "Outbound (SMTP)")]
    out_port: Option<u32>,
    /// SMTP TLS mode.
    #[arg(long, value_enum, help_heading = "Outbound (SMTP)")]
    out_security: Option<SecurityArg>,
    /// SMTP authentication (default password).
    #[arg(long, value_enum, help_heading = "Outbound (SMTP)")]
    out_auth: Option<AuthArg>,
    /// SMTP login name.
    #[arg(long, value_name = "USER", help_heading = "Outbound (SMTP)")]
    out_user: Option<String>,
    /// Read the SMTP password from stdin (first line, or the second with --in-password-stdin).
    #[arg(long, help_heading = "Outbound (SMTP)", conflicts_with = "out_password_env")]
    out_password_stdin: bool,
    /// Read the SMTP password from this environment variable.
    #[arg(long, value_name = "VAR", help_heading = "Outbound (SMTP)")]
    out_password_env: Option<String>,
    /// From address.
    #[arg(long, value_name = "ADDR", help_heading = "Outbound (SMTP)")]
    from: Option<String>,
    /// From display name.
    #[arg(long, value_name = "NAME", help_heading = "Outbound (SMTP)")]
    from_name: Option<String>,
    /// Reply-To address.
    #[arg(long, value_name = "ADDR", help_heading = "Outbound (SMTP)")]
    reply_to: Option<String>,
    /// Envelope sender (MAIL FROM; default the From address).
    #[arg(long, value_name = "ADDR", help_heading = "Outbound (SMTP)")]
    return_path: Option<String>,
    /// Ask for read receipts to this address (Disposition-Notification-To).
    #[arg(long, value_name = "ADDR", help_heading = "Outbound (SMTP)")]
    read_receipt_to: Option<String>,
    /// Footer text.
    #[arg(long, value_name = "TEXT", help_heading = "Outbound (SMTP)")]
    footer: Option<String>,
    /// Append the footer to outgoing mail.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish(), help_heading = "Outbound (SMTP)")]
    append_footer: Option<bool>,
    /// Record and log mail, send nothing (staging).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish(), help_heading = "Outbound (SMTP)")]
    dry_run: Option<bool>,
    /// Accept invalid TLS certificates on the SMTP server (test servers only).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = boolish(), help_heading = "Outbound (SMTP)")]
    out_allow_invalid_certs: Option<bool>,
    /// Messages per minute (0 = no limit).
    #[arg(long, value_name = "N", help_heading = "Outbound (SMTP)")]
    rate_limit: Option<u32>,

    #[command(flatten)]
    json: JsonArg,
}

impl MailboxFields {
    /// The mailbox and the paths of every field given. Reads stdin for passwords.
    pub async fn patch(self, api: &Api) -> Result<Patch<pb::Mailbox>, Fail> {
        let (in_password, out_password) = self.passwords()?;
        let mut p = Patch::<pb::Mailbox>::new(&self.json)?;
        p.set("name", self.name, |m, v| m.name = v);
        let preset = self.preset.map(|p| match p {
            PresetArg::Gmail => pb::Preset::Gmail,
            PresetArg::Outlook => pb::Preset::Outlook,
            PresetArg::Yahoo => pb::Preset::Yahoo,
            PresetArg::Custom => pb::Preset::Custom,
        });
        p.set("preset", preset, |m, v| m.preset = v as i32);
        p.set("enabled", self.enabled, |m, v| m.enabled = Some(v));

        let protocol = self.in_protocol.map(|p| match p {
            ProtocolArg::Imap => pb::Protocol::Imap,
            ProtocolArg::Pop3 => pb::Protocol::Pop3,
        });
        p.set("inbound.protocol", protocol, |m, v| inbound(m).protocol = v as i32);
        p.set("inbound.host", self.in_host, |m, v| inbound(m).host = v);
        p.set("inbound.port", self.in_port, |m, v| inbound(m).port = v);
        p.set("inbound.security", self.in_security, |m, v| inbound(m).security = security(v));
        p.set("inbound.username", self.in_user, |m, v| inbound(m).username = v);
        p.set("inbound.password", in_password, |m, v| inbound(m).password = v);
        p.set("inbound.folder", self.in_folder, |m, v| inbound(m).folder = v);
        p.set("inbound.poll_interval_seconds", self.poll_interval, |m, v| {
            inbound(m).poll_interval_seconds = v
        });
        let keep = if self.keep {
            Some(true)
        } else if self.delete {
            Some(false)
        } else {
            None
        };
        p.set("inbound.keep_on_server", keep, |m, v| inbound(m).keep_on_server = v);
        p.set("inbound.max_message_size", self.max_size, |m, v| inbound(m).max_message_size = v);
        let dispatch = self.dispatch.map(|d| match d {
            DispatchArg::ByQueue => pb::DispatchMode::ByQueue,
            DispatchArg::ByRecipient => pb::DispatchMode::ByRecipient,
        });
        p.set("inbound.dispatch_mode", dispatch, |m, v| inbound(m).dispatch_mode = v as i32);
        if let Some(q) = self.queue {
            let id = crud::resolve::<pb::Queue>(api, "--queue", &q).await?;
            p.set("inbound.queue_id", Some(id), |m, v| inbound(m).queue_id = v);
        }
        if let Some(q) = self.fallback_queue {
            let id = crud::resolve::<pb::Queue>(api, "--fallback-queue", &q).await?;
            p.set("inbound.fallback_queue_id", Some(id), |m, v| inbound(m).fallback_queue_id = v);
        }
        p.set("inbound.trusted", self.trusted, |m, v| inbound(m).trusted = v);
        p.set("inbound.allow_invalid_certs", self.allow_invalid_certs, |m, v| {
            inbound(m).allow_invalid_certs = v;
        });

        p.set("outbound.host", self.out_host, |m, v| outbound(m).host = v);
        p.set("outbound.port", self.out_port, |m, v| outbound(m).port = v);
        p.set("outbound.security", self.out_security, |m, v| outbound(m).security = security(v));
        let auth = self.out_auth.map(|a| match a {
            AuthArg::None => pb::AuthMethod::None,
            AuthArg::Password => pb::AuthMethod::Password,
        });
        p.set("outbound.auth", auth, |m, v| outbound(m).auth = v as i32);
        p.set("outbound.username", self.out_user, |m, v| outbound(m).username = v);
        p.set("outbound.password", out_password, |m, v| outbound(m).password = v);
        p.set("outbound.from_address", self.from, |m, v| outbound(m).from_address = v);
        p.set("outbound.from_name", self.from_name, |m, v| outbound(m).from_name = v);
        p.set("outbound.reply_to", self.reply_to, |m, v| outbound(m).reply_to = v);
        p.set("outbound.return_path", self.return_path, |m, v| outbound(m).return_path = v);
        p.set("outbound.read_receipt_to", self.read_receipt_to, |m, v| outbound(m).read_receipt_to = v);
        p.set("outbound.footer", self.footer, |m, v| outbound(m).footer = v);
        p.set("outbound.append_footer", self.append_footer, |m, v| outbound(m).append_footer = v);
        p.set("outbound.dry_run", self.dry_run, |m, v| outbound(m).dry_run = v);
        p.set("outbound.allow_invalid_certs", self.out_allow_invalid_certs, |m, v| {
            outbound(m).allow_invalid_certs = v;
        });
        p.set("outbound.rate_limit_per_minute", self.rate_limit, |m, v| {
            outbound(m).rate_limit_per_minute = v
        });
        Ok(p)
    }

    /// The passwords from stdin or the environment, before anything else reads stdin.
    fn passwords(&self) -> Result<(Option<String>, Option<String>), Fail> {
        if (self.in_password_stdin || self.out_password_stdin) && self.json.from_json.as_deref() == Some("-")
        {
            return Err(Fail::Usage(
                "--from-json - and --*-password-stdin both want stdin; pass the JSON as a file".to_owned(),
            ));
        }
        let mut lines = Vec::new();
        if self.in_password_stdin || self.out_password_stdin {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Fail::Usage(format!("cannot read the password from stdin: {e}")))?;
            lines = text.lines().map(str::to_owned).collect();
        }
        let mut lines = lines.into_iter();
        let mut from_stdin = |flag: &str| {
            lines
                .next()
                .filter(|l| !l.is_empty())
                .ok_or_else(|| Fail::Usage(format!("{flag}: no password on stdin")))
        };
        let inbound = match (&self.in_password_env, self.in_password_stdin) {
            (_, true) => Some(from_stdin("--in-password-stdin")?),
            (Some(var), false) => Some(from_env("--in-password-env", var)?),
            (None, false) => None,
        };
        let outbound = match (&self.out_password_env, self.out_password_stdin) {
            (_, true) => Some(from_stdin("--out-password-stdin")?),
            (Some(var), false) => Some(from_env("--out-password-env", var)?),
            (None, false) => None,
        };
        Ok((inbound, outbound))
    }
}

fn from_env(flag: &str, var: &str) -> Result<String, Fail> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(v),
        Ok(_) => Err(Fail::Usage(format!("{flag} {var}: the variable is empty"))),
        Err(_) => Err(Fail::Usage(format!("{flag} {var}: the variable is not set"))),
    }
}

fn inbound(m: &mut pb::Mailbox) -> &mut pb::InboundSettings {
    m.inbound.get_or_insert_default()
}

fn outbound(m: &mut pb::Mailbox) -> &mut pb::OutboundSettings {
    m.outbound.get_or_insert_default()
}
