//! A real HTTP client for the tests, and a parser of the Prometheus text format.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One answer: status, `Content-Type`, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET http://addr/path` with ureq; HTTP error statuses are answers, not errors.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Answer> {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || -> Result<Answer> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let mut resp = agent.get(&url).call().with_context(|| format!("GET {url}"))?;
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = resp.body_mut().read_to_string()?;
        Ok(Answer { status: resp.status().as_u16(), content_type, body })
    })
    .await?
}

/// One sample line of the exposition format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses every sample line (comments skipped). Label values here never hold `,` `"` or `}`.
pub fn parse(text: &str) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').with_context(|| format!("no value: {line}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().with_context(|| format!("bad value: {line}"))?,
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').with_context(|| format!("unclosed labels: {line}"))?;
                let mut labels = BTreeMap::new();
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').with_context(|| format!("bad label: {line}"))?;
                    labels.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample { name, labels, value });
    }
    Ok(out)
}

/// The value of the one sample named `name` whose labels are exactly `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
}

/// Scrapes `/metrics` until `name{labels}` equals `want`, or fails after `timeout` with the
/// last value seen.
pub async fn wait_for_value(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(20);
    loop {
        let answer = get(addr, "/metrics").await?;
        let seen = value(&parse(&answer.body)?, name, labels);
        if seen == Some(want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name}{labels:?} is {seen:?} after {timeout:?}, want {want}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}
