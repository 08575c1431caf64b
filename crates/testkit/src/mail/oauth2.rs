//! A stand-in OAuth2 identity provider (`idp.py`, python3 stdlib) and Dovecot's `passdb
//! oauth2` against it, following `shared/recipes/mail-stack-extras.md` section 1. Enabled with
//! [`super::MailStackBuilder::oauth2_idp`]: bearer tokens are then checked by the IdP's RFC 7662
//! introspection endpoint, passwords still by the passwd-file (each passdb only sees its own
//! mechanisms).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

const IDP_PY: &str = include_str!("idp.py");

/// A grant the IdP issued: what a provider's token endpoint answers.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Bearer token for XOAUTH2.
    pub access_token: String,
    /// Single-use refresh token (the IdP rotates it on every refresh).
    pub refresh_token: String,
    /// Lifetime of the access token, in seconds.
    pub expires_in: u64,
}

/// The running IdP. Killed when dropped.
#[derive(Debug)]
pub struct Idp {
    child: Child,
    port: u16,
    agent: ureq::Agent,
}

impl Idp {
    /// Starts `python3 idp.py` in `dir` and waits until it listens (about 0.15 s).
    pub(super) fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let script = dir.join("idp.py");
        std::fs::write(&script, IDP_PY).with_context(|| format!("write {}", script.display()))?;
        let port_file = dir.join("idp.port");
        let log = std::fs::File::create(dir.join("idp.log")).context("create idp.log")?;
        let child = Command::new("python3")
            .arg(&script)
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("start python3 idp.py (is python3 installed?)")?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut idp = Self { child, port: 0, agent };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                idp.port = port;
                return Ok(idp);
            }
            if let Some(status) = idp.child.try_wait()? {
                bail!("idp.py exited ({status}): {}", super::procs::tail(&dir.join("idp.log"), 20));
            }
            if Instant::now() > deadline {
                bail!("idp.py did not write its port within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The IdP's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/token`: the token URL to give a mailbox.
    pub fn token_url(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> Result<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let mut resp =
            self.agent.post(&url).send_form(form.iter().copied()).with_context(|| format!("POST {url}"))?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !resp.status().is_success() {
            bail!("POST {url}: {}: {text}", resp.status());
        }
        serde_json::from_str(&text).with_context(|| format!("POST {url}: not JSON: {text}"))
    }

    /// A fresh grant for `user` (lower-case address; it must be a user of the stack), its
    /// access token valid for `expires_in` seconds.
    pub fn issue(&self, user: &str, expires_in: u64) -> Result<Grant> {
        let v = self.post("/test/issue", &[("user", user), ("expires_in", &expires_in.to_string())])?;
        let s = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("no {k} in {v}"));
        Ok(Grant {
            access_token: s("access_token")?,
            refresh_token: s("refresh_token")?,
            expires_in: v["expires_in"].as_u64().unwrap_or(expires_in),
        })
    }

    /// Makes an access token expire now.
    pub fn expire(&self, access_token: &str) -> Result<()> {
        self.post("/test/expire", &[("token", access_token)]).map(drop)
    }

    /// Lifetime of the access tokens `/token` issues from now on.
    pub fn set_ttl(&self, seconds: u64) -> Result<()> {
        self.post("/test/ttl", &[("expires_in", &seconds.to_string())]).map(drop)
    }

    /// `(introspections, token requests)` served so far.
    pub fn stats(&self) -> Result<(u64, u64)> {
        let url = format!("http://127.0.0.1:{}/test/stats", self.port);
        let mut resp = self.agent.get(&url).call().with_context(|| format!("GET {url}"))?;
        let v: Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        Ok((v["introspect"].as_u64().unwrap_or(0), v["token"].as_u64().unwrap_or(0)))
    }
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Switches a written `dovecot.conf` to password + oauth2 passdbs (recipe section 1).
pub(super) fn enable(dir: &Path, idp_port: u16) -> Result<()> {
    let conf: PathBuf = dir.join("dovecot/dovecot.conf");
    let ext = dir.join("dovecot/dovecot-oauth2.conf.ext");
    std::fs::write(
        &ext,
        format!(
            "introspection_url = http://127.0.0.1:{idp_port}/introspect\nintrospection_mode = post\n\
             username_attribute = email\nactive_attribute = active\nactive_value = true\n\
             timeout_msecs = 5000\n"
        ),
    )
    .with_context(|| format!("write {}", ext.display()))?;
    let text = std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
    let password = "passdb {\n  driver = passwd-file\n";
    if !text.contains(password) || !text.contains("userdb {") {
        bail!("dovecot.conf has no passwd-file passdb/userdb to extend for OAuth2");
    }
    let text = text
        .replacen(password, "passdb {\n  driver = passwd-file\n  mechanisms = plain login\n", 1)
        .replacen(
            "userdb {",
            &format!(
                "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\nuserdb {{",
                ext.display()
            ),
            1,
        );
    std::fs::write(&conf, text).with_context(|| format!("write {}", conf.display()))
}
