//! A RabbitMQ vhost of its own per test, created and deleted through the management HTTP API.
//!
//! Creating a vhost costs ~12 ms and deleting it ~19 ms (one DELETE drops every queue, exchange
//! and connection of the test), against ~1 s with `rabbitmqctl`. The broker is the local one at
//! `127.0.0.1:5672` (guest/guest, loopback only) with its management API at
//! `http://127.0.0.1:15672/api`. If either is unreachable the error says so and how to start
//! them (`make services`); tests never skip.
//!
//! Management statistics (connections, queue message counts) are refreshed by the broker every
//! 5 s (`collect_statistics_interval`), so the helpers that read them poll, and a count read
//! here may lag what the broker holds. For exact counts in tests, use a passive `queue.declare`
//! over AMQP instead (it reports the ready messages of the queue at that instant).

use std::net::{SocketAddr, TcpStream};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

use crate::broker::PrivateBroker;

const API_BASE: &str = "http://127.0.0.1:15672/api";
const AMQP_HOST: &str = "127.0.0.1";
const AMQP_PORT: u16 = 5672;
/// `guest:guest`, base64.
pub(crate) const BASIC_AUTH: &str = "Basic Z3Vlc3Q6Z3Vlc3Q=";
const HINT: &str = "run make services (scripts/ensure-services.sh)";
/// How long management statistics may take to show a new connection (stats interval 5 s + slack).
const STATS_WAIT: Duration = Duration::from_secs(12);

/// A vhost of its own on the local broker (or on a private node), deleted on drop.
#[derive(Debug)]
pub struct Vhost {
    name: String,
    api: Api,
    amqp_port: u16,
    /// The private node the vhost lives on, kept alive as long as the vhost; dropping it
    /// removes the node and its files, so no DELETE is sent.
    broker: Option<PrivateBroker>,
}

impl Vhost {
    /// Creates a uniquely named vhost (`deskmail-test-<prefix>-<pid>-<n>-<hex>`) with full
    /// permissions for `guest`. The first call in a process also deletes stale `deskmail-test-*`
    /// vhosts left behind by test processes that no longer exist.
    pub fn create(prefix: &str) -> anyhow::Result<Vhost> {
        check_amqp_port(AMQP_PORT)?;
        let api = Api::new(API_BASE.to_owned());
        static SWEEP: Once = Once::new();
        SWEEP.call_once(|| api.sweep_stale());
        Vhost::create_with(api, AMQP_PORT, None, prefix)
    }

    /// Creates a vhost like [`Vhost::create`] on a private node of its own (started here,
    /// 4-6 s), for a test that stops and starts the broker: [`Vhost::broker`].
    pub async fn create_private(prefix: &str) -> anyhow::Result<Vhost> {
        let broker = PrivateBroker::launch(prefix).await?;
        let api = Api::new(broker.api_base());
        let port = broker.amqp_port();
        let prefix = prefix.to_owned();
        blocking(move || Vhost::create_with(api, port, Some(broker), &prefix)).await
    }

    fn create_with(
        api: Api,
        amqp_port: u16,
        broker: Option<PrivateBroker>,
        prefix: &str,
    ) -> anyhow::Result<Vhost> {
        let name = crate::unique(prefix);
        let v = encode(&name);
        api.send("PUT", &format!("/vhosts/{v}"), Some(serde_json::json!({})))
            .with_context(|| format!("creating vhost {name}"))?;
        let vhost = Vhost { name, api, amqp_port, broker };
        vhost
            .api
            .send(
                "PUT",
                &format!("/permissions/{v}/guest"),
                Some(serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"})),
            )
            .with_context(|| format!("granting guest permissions on vhost {}", vhost.name))?;
        Ok(vhost)
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private node this vhost lives on ([`Vhost::create_private`]), to stop and start.
    pub fn broker(&self) -> Option<&PrivateBroker> {
        self.broker.as_ref()
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/<url-encoded vhost>` (port 5672 on the shared
    /// broker).
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{AMQP_HOST}:{}/{}", self.amqp_port, encode(&self.name))
    }

    /// [`Vhost::amqp_url`] as a parsed [`url::Url`].
    pub fn amqp_url_parsed(&self) -> anyhow::Result<url::Url> {
        Ok(url::Url::parse(&self.amqp_url())?)
    }

    /// The broker-side names of this vhost's connections, with their client-provided
    /// `connection_name` (empty when the client set none), as management statistics show them now.
    pub async fn connections(&self) -> anyhow::Result<Vec<(String, String)>> {
        let (api, v) = (self.api.clone(), encode(&self.name));
        blocking(move || api.connections(&v)).await
    }

    /// Force-closes every connection of this vhost (`DELETE /api/connections/{name}`, header
    /// `X-Reason`); clients see `320 CONNECTION_FORCED - <reason>`. New connections take up to
    /// the 5 s statistics interval to be listed, so this polls until at least one shows up (up
    /// to ~12 s) and fails if none does. Returns how many were closed.
    pub async fn close_connections(&self, reason: &str) -> anyhow::Result<usize> {
        self.close_connections_where(reason, |_| true).await
    }

    /// Like [`Vhost::close_connections`], for the connections whose client property
    /// `connection_name` equals `connection_name` only.
    pub async fn close_connection_named(&self, connection_name: &str, reason: &str) -> anyhow::Result<usize> {
        let wanted = connection_name.to_owned();
        self.close_connections_where(reason, move |n| n == wanted).await
    }

    async fn close_connections_where(
        &self,
        reason: &str,
        filter: impl Fn(&str) -> bool + Send + 'static,
    ) -> anyhow::Result<usize> {
        let (api, v, reason) = (self.api.clone(), encode(&self.name), reason.to_owned());
        let vhost = self.name.clone();
        blocking(move || {
            let deadline = Instant::now() + STATS_WAIT;
            loop {
                let found: Vec<String> = api
                    .connections(&v)?
                    .into_iter()
                    .filter(|(_, cn)| filter(cn))
                    .map(|(name, _)| name)
                    .collect();
                if !found.is_empty() {
                    for name in &found {
                        api.delete_connection(name, &reason)?;
                    }
                    return Ok(found.len());
                }
                if Instant::now() >= deadline {
                    bail!(
                        "no matching connection of vhost {vhost} appeared in the management API within {STATS_WAIT:?}"
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .await
    }

    /// The queue's total message count (ready + unacknowledged) from management statistics, or
    /// `None` while the broker has not emitted statistics for it yet. Lags by up to 5 s: prefer
    /// [`Vhost::wait_queue_message_count`] or a passive `queue.declare` for assertions.
    pub async fn queue_message_count(&self, queue: &str) -> anyhow::Result<Option<u64>> {
        let (api, path) = (self.api.clone(), self.queue_path(queue));
        blocking(move || api.message_count(&path)).await
    }

    /// Polls [`Vhost::queue_message_count`] until it equals `expected` or `timeout` passes, and
    /// returns the last count seen.
    pub async fn wait_queue_message_count(
        &self,
        queue: &str,
        expected: u64,
        timeout: Duration,
    ) -> anyhow::Result<Option<u64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.queue_message_count(queue).await?;
            if n == Some(expected) || Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The queue as the management API describes it (`GET /api/queues/{vhost}/{queue}`):
    /// type, durable, arguments, statistics.
    pub async fn queue_info(&self, queue: &str) -> anyhow::Result<Value> {
        let (api, path) = (self.api.clone(), self.queue_path(queue));
        blocking(move || api.get(&path)).await
    }

    fn queue_path(&self, queue: &str) -> String {
        format!("/queues/{}/{}", encode(&self.name), encode(queue))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if self.broker.is_some() {
            // The whole node and its files go with it.
            return;
        }
        let path = format!("/vhosts/{}", encode(&self.name));
        if let Err(e) = self.api.send("DELETE", &path, None) {
            eprintln!("deskmail-testkit: could not delete vhost {}: {e:#}", self.name);
        }
    }
}

/// A minimal blocking client for the management API (guest/guest).
#[derive(Clone)]
struct Api {
    agent: ureq::Agent,
    base: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.base)
    }
}

impl Api {
    fn new(base: String) -> Api {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(15)))
            .http_status_as_error(false)
            .build()
            .into();
        Api { agent, base }
    }

    /// Sends a request and returns the JSON body (`Null` when empty); any non-2xx is an error,
    /// except 404 on DELETE (already gone).
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("authorization", BASIC_AUTH).call(),
            ("DELETE", _) => self.agent.delete(&url).header("authorization", BASIC_AUTH).call(),
            ("PUT", body) => self
                .agent
                .put(&url)
                .header("authorization", BASIC_AUTH)
                .send_json(body.unwrap_or(Value::Null)),
            _ => bail!("unsupported method {method}"),
        };
        let mut resp = result.map_err(|e| unreachable(&url, e))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if method == "DELETE" && status == 404 {
            return Ok(Value::Null);
        }
        if !(200..300).contains(&status) {
            bail!("{method} {url} -> HTTP {status}: {text}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: invalid JSON"))
    }

    fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send("GET", path, None)
    }

    fn connections(&self, encoded_vhost: &str) -> anyhow::Result<Vec<(String, String)>> {
        let list =
            self.get(&format!("/vhosts/{encoded_vhost}/connections?columns=name,client_properties"))?;
        let items = list.as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .filter_map(|c| {
                let name = c.get("name")?.as_str()?.to_owned();
                let cn = c
                    .pointer("/client_properties/connection_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                Some((name, cn))
            })
            .collect())
    }

    fn delete_connection(&self, name: &str, reason: &str) -> anyhow::Result<()> {
        let url = format!("{}/connections/{}", self.base, encode(name));
        let mut resp = self
            .agent
            .delete(&url)
            .header("authorization", BASIC_AUTH)
            .header("x-reason", reason)
            .call()
            .map_err(|e| unreachable(&url, e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) && status != 404 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("DELETE {url} -> HTTP {status}: {text}");
        }
        Ok(())
    }

    fn message_count(&self, path: &str) -> anyhow::Result<Option<u64>> {
        Ok(self.get(path)?.get("messages").and_then(Value::as_u64))
    }

    /// Deletes `deskmail-test-*` vhosts whose creating process is gone. Best effort: a failure
    /// here must not fail the test that happened to run first.
    fn sweep_stale(&self) {
        let Ok(list) = self.get("/vhosts?columns=name") else {
            return;
        };
        let me = std::process::id();
        for name in list.as_array().into_iter().flatten().filter_map(|v| v.get("name")?.as_str()) {
            let Some(pid) = owner_pid(name) else { continue };
            if pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            match self.send("DELETE", &format!("/vhosts/{}", encode(name)), None) {
                Ok(_) => {
                    eprintln!("deskmail-testkit: deleted stale vhost {name} (pid {pid} is gone)")
                }
                Err(e) => eprintln!("deskmail-testkit: could not delete stale vhost {name}: {e:#}"),
            }
        }
    }
}

/// The pid inside a name made by [`crate::unique`]: `deskmail-test-<prefix>-<pid>-<n>-<hex>`
/// (the prefix has no `-`: `unique` maps it to `_`).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("deskmail-test-")?;
    let mut parts = rest.rsplitn(4, '-');
    let (_hex, _n, pid, _prefix) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    pid.parse().ok()
}

fn check_amqp_port(port: u16) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map(drop)
        .map_err(|e| anyhow!("RabbitMQ is unreachable at amqp://{addr} ({e}); {HINT}"))
}

fn unreachable(url: &str, e: ureq::Error) -> anyhow::Error {
    anyhow!("RabbitMQ management API is unreachable at {url} ({e}); {HINT}")
}

/// Percent-encodes a path segment (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await.context("management API task failed")?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner_pid() {
        let cases = [
            ("deskmail-test-mq_x-1234-0-ab12", Some(1234)),
            ("deskmail-test-router-77-3-f", Some(77)),
            ("deskmail-test-bad", None),
            ("other-1-2-3", None),
        ];
        for (name, want) in cases {
            assert_eq!(owner_pid(name), want, "{name}");
        }
        assert_eq!(owner_pid(&crate::unique("a-b c")), Some(std::process::id()));
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("127.0.0.1:1 -> 127.0.0.1:5672"), "127.0.0.1%3A1%20-%3E%20127.0.0.1%3A5672");
    }
}
