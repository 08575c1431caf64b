//! `deskmailctl dead list|show|replay`: the dead-letter queues in RabbitMQ (not configd).

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::EXIT_FAILED;
use crate::config::CliConfig;
use crate::dead_browse::{Broker, Held};
use crate::dead_letter::{self, Summary};
use crate::fail::Fail;
use crate::output::Out;

/// Longest reason shown in a table (the JSON has it whole).
const REASON_WIDTH: usize = 100;

#[derive(Debug, Subcommand)]
pub enum DeadCommand {
    /// One line per dead letter, oldest first.
    ///
    /// Position, message id (source id or job id), when it died, why (x-deskmail-error, or
    /// the broker's reason) and its size. Reading leaves every message in place and in order.
    List {
        #[command(flatten)]
        queue: QueueArg,
        /// At most this many per queue (the oldest).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Everything about the dead letters with this message id.
    ///
    /// Properties, headers (x-death summarised), where a replay would send it, and the body (a
    /// job's JSON, a mail's header section). Secrets and attachment contents are not printed.
    Show {
        /// The message id (a source id `imap:...`/`pop3:...`, or a job id).
        message_id: String,
        #[command(flatten)]
        queue: QueueArg,
    },
    /// Puts dead letters back where they came from, then removes them from the dead queue.
    ///
    /// Where: inbound to `<prefix>.inbound`/`mail.raw`, outbound to `<prefix>.outbound`/
    /// `mail.send`, other queues to the exchange and routing key of their latest x-death
    /// record. Each is republished with a broker confirm, and only then removed from the dead queue, so
    /// a crash in between leaves a duplicate (which the daemons recognise), never a loss. The
    /// copy loses x-death, x-deskmail-error and the sender's retry count, and gains
    /// x-deskmail-replayed. Fix the cause first, or it comes straight back.
    Replay {
        /// The message id to replay (every dead letter with it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_id: Option<String>,
        /// Replay every dead letter of the queue(s).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        queue: QueueArg,
        /// Print what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct QueueArg {
    /// `inbound`, `outbound` or a dead queue's full name. Default: both dead queues.
    #[arg(long, short = 'q', value_name = "QUEUE")]
    queue: Option<String>,
}

pub async fn run(config: &CliConfig, out: Out, command: DeadCommand) -> Result<u8, Fail> {
    let broker = Broker::connect(&config.amqp).await?;
    let result = match command {
        DeadCommand::List { queue, limit } => list(&broker, out, queue.queue.as_deref(), limit).await,
        DeadCommand::Show { message_id, queue } => {
            show(&broker, out, &message_id, queue.queue.as_deref()).await
        }
        DeadCommand::Replay { message_id, all, queue, dry_run } => {
            let select = match (message_id, all) {
                (Some(id), false) => Select::Id(id),
                (None, true) => Select::All,
                _ => return Err(Fail::Usage("give a message id or --all".into())),
            };
            replay(&broker, out, &select, queue.queue.as_deref(), dry_run).await
        }
    };
    broker.close().await;
    result
}

/// Gives back what was held; says so on stderr when places may have changed.
async fn give_back(held: Held, acked: &[u64]) -> Result<(), Fail> {
    let queue = held.queue.clone();
    let late = held.give_back(acked).await?;
    if late > 0 {
        eprintln!(
            "deskmailctl: warning: {late} message(s) of {queue} were given back but not counted back in time; \
             they are in the queue, maybe not in their old place"
        );
    }
    Ok(())
}

async fn list(broker: &Broker, out: Out, queue: Option<&str>, limit: Option<usize>) -> Result<u8, Fail> {
    let mut rows: Vec<Summary> = Vec::new();
    for q in broker.queues(queue)? {
        let held = broker.hold(&q, |_| false).await?;
        let n = limit.unwrap_or(usize::MAX);
        rows.extend(held.items.iter().take(n).map(|i| i.summary.clone()));
        give_back(held, &[]).await?;
    }
    if out.json() {
        out.print_json(&Value::Array(rows.iter().map(Summary::to_json).collect()))?;
        return Ok(0);
    }
    if rows.is_empty() {
        out.write("No dead letters.\n")?;
        return Ok(0);
    }
    let mut table = out.table(&["QUEUE", "#", "MESSAGE ID", "DIED", "REASON", "SIZE"]);
    for r in &rows {
        table.add_row(vec![
            r.queue.clone(),
            r.position.to_string(),
            r.message_id.clone().unwrap_or_else(|| "-".into()),
            r.dead_at.map_or_else(|| "-".into(), dead_letter::rfc3339),
            one_line(&r.reason, REASON_WIDTH),
            size(r.size),
        ]);
    }
    out.print_table(table).map(|()| 0)
}

fn one_line(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= width {
        return flat;
    }
    let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
    format!("{cut}…")
}

fn size(bytes: usize) -> String {
    match bytes {
        b if b < 1024 => format!("{b} B"),
        b if b < 1024 * 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
    }
}

fn unknown_id(id: &str, queues: &[String]) -> Fail {
    Fail::Failed(format!(
        "no dead letter with message id {id:?} in {} (see `deskmailctl dead list`)",
        queues.join(", ")
    ))
}

async fn show(broker: &Broker, out: Out, id: &str, queue: Option<&str>) -> Result<u8, Fail> {
    let queues = broker.queues(queue)?;
    let mut shown = Vec::new();
    for q in &queues {
        let held = broker.hold(q, |s| s.message_id.as_deref() == Some(id)).await?;
        for item in held.items.iter().filter(|i| i.body.is_some()) {
            shown.push(describe(broker, item));
        }
        give_back(held, &[]).await?;
    }
    if shown.is_empty() {
        return Err(unknown_id(id, &queues));
    }
    if out.json() {
        out.print_json(&Value::Array(shown))?;
        return Ok(0);
    }
    let text: Vec<String> = shown.iter().map(render).collect();
    out.write(&text.join("\n"))?;
    Ok(0)
}

fn describe(broker: &Broker, item: &crate::dead_browse::Item) -> Value {
    let p = &item.properties;
    let s = |v: &Option<deskmail_mq::lapin::types::ShortString>| v.as_ref().map(|x| x.as_str().to_owned());
    let origin = dead_letter::origin(&broker.topology, &item.summary.queue, p);
    let mut v = item.summary.to_json();
    v["correlation_id"] = json!(s(p.correlation_id()));
    v["content_type"] = json!(s(p.content_type()));
    v["timestamp"] = json!(p.timestamp().map(dead_letter::rfc3339));
    v["headers"] = dead_letter::headers_json(p);
    v["deaths"] = Value::Array(dead_letter::deaths(p).iter().map(dead_letter::Death::to_json).collect());
    v["replay_to"] = match origin {
        Some((exchange, routing_key)) => json!({"exchange": exchange, "routing_key": routing_key}),
        None => Value::Null,
    };
    let body = item.body.as_deref().unwrap_or_default();
    v["body"] = dead_letter::body_json(p.content_type().as_ref().map(|c| c.as_str()), body);
    v
}

/// `dead show` as text: `key  value` lines, the headers, the deaths, then the body.
fn render(v: &Value) -> String {
    let str_of = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let mut out = String::new();
    for key in [
        "queue",
        "position",
        "message_id",
        "correlation_id",
        "content_type",
        "timestamp",
        "dead_at",
        "reason",
        "replayed",
    ] {
        out.push_str(&format!("{key:<15} {}\n", str_of(&v[key])));
    }
    let to = &v["replay_to"];
    let replay_to = if to.is_null() {
        "(unknown: no x-death record)".to_owned()
    } else {
        format!("exchange {}, routing key {}", str_of(&to["exchange"]), str_of(&to["routing_key"]))
    };
    out.push_str(&format!("{:<15} {replay_to}\n", "replay_to"));
    if let Some(h) = v["headers"].as_object().filter(|h| !h.is_empty()) {
        out.push_str("headers:\n");
        for (k, val) in h {
            out.push_str(&format!("  {k}: {}\n", str_of(val)));
        }
    }
    if let Some(deaths) = v["deaths"].as_array().filter(|d| !d.is_empty()) {
        out.push_str("x-death (latest first):\n");
        for d in deaths {
            out.push_str(&format!(
                "  {} from {} (exchange {}, routing keys {}), {} time(s), at {}\n",
                str_of(&d["reason"]),
                str_of(&d["queue"]),
                str_of(&d["exchange"]),
                str_of(&d["routing_keys"]),
                str_of(&d["count"]),
                str_of(&d["time"]),
            ));
        }
    }
    let body = &v["body"];
    out.push_str(&format!("body ({}, {} bytes):\n", str_of(&body["kind"]), str_of(&body["size"])));
    match body["kind"].as_str() {
        Some("json") => {
            out.push_str(&serde_json::to_string_pretty(&body["json"]).unwrap_or_default());
            out.push('\n');
        }
        Some("mail") => {
            out.push_str(&str_of(&body["headers"]).replace("\r\n", "\n"));
            out.push_str("\n(mail body not shown)\n");
        }
        Some("invalid json") => out.push_str(&format!("{}...\n", str_of(&body["start"]))),
        _ => out.push_str("(not shown)\n"),
    }
    out
}

enum Select {
    Id(String),
    All,
}

impl Select {
    fn matches(&self, s: &Summary) -> bool {
        match self {
            Select::Id(id) => s.message_id.as_deref() == Some(id.as_str()),
            Select::All => true,
        }
    }
}

async fn replay(
    broker: &Broker,
    out: Out,
    select: &Select,
    queue: Option<&str>,
    dry_run: bool,
) -> Result<u8, Fail> {
    let queues = broker.queues(queue)?;
    let publisher = if dry_run {
        None
    } else {
        Some(
            deskmail_mq::Publisher::new(&broker.conn)
                .await
                .map_err(|e| Fail::Failed(format!("RabbitMQ: cannot open a publishing channel: {e}")))?,
        )
    };
    let mut rows: Vec<Value> = Vec::new();
    // `failed`: something was not replayed; `stop`: the broker failed us, go no further.
    let (mut failed, mut stop) = (false, false);
    for q in &queues {
        let held = broker.hold(q, |s| select.matches(s)).await?;
        let mut acked = Vec::new();
        for item in held.items.iter().filter(|i| i.body.is_some()) {
            let mut row = item.summary.to_json();
            let Some((exchange, routing_key)) = dead_letter::origin(&broker.topology, q, &item.properties)
            else {
                row["result"] =
                    json!("skipped: cannot tell where it came from (no x-death record); left in place");
                failed = true;
                rows.push(row);
                continue;
            };
            row["exchange"] = json!(exchange);
            row["routing_key"] = json!(routing_key);
            let Some(publisher) = &publisher else {
                row["result"] = json!("would replay");
                rows.push(row);
                continue;
            };
            let body = item.body.clone().unwrap_or_default();
            let props = dead_letter::replay_properties(&item.properties);
            let published = match publisher
                .publish_with_properties(exchange.clone(), routing_key.clone(), body, props)
                .await
            {
                Ok(confirm) => confirm.await,
                Err(e) => Err(e),
            };
            if let Err(e) = published {
                row["result"] = json!(format!("failed, left in place: {e}"));
                (failed, stop) = (true, true);
                rows.push(row);
                break;
            }
            if let Err(e) = held.ack(item.tag).await {
                row["result"] = json!(format!(
                    "replayed, but still in the dead queue (a replay later is a harmless duplicate): {}",
                    e.report().trim()
                ));
                (failed, stop) = (true, true);
                rows.push(row);
                break;
            }
            acked.push(item.tag);
            row["result"] = json!("replayed");
            rows.push(row);
        }
        give_back(held, &acked).await?;
        if stop {
            break;
        }
    }
    if let Select::Id(id) = select
        && rows.is_empty()
    {
        return Err(unknown_id(id, &queues));
    }
    if let Some(p) = publisher {
        let _ = p.close().await;
    }
    print_replay(out, &rows)?;
    Ok(if failed { EXIT_FAILED } else { 0 })
}

fn print_replay(out: Out, rows: &[Value]) -> Result<(), Fail> {
    if out.json() {
        return out.print_json(&Value::Array(rows.to_vec()));
    }
    if rows.is_empty() {
        return out.write("No dead letters to replay.\n");
    }
    let mut table = out.table(&["QUEUE", "#", "MESSAGE ID", "TO", "RESULT"]);
    for r in rows {
        let to = match (r["exchange"].as_str(), r["routing_key"].as_str()) {
            (Some(e), Some(k)) => format!("{e} / {k}"),
            _ => "-".into(),
        };
        table.add_row(vec![
            r["queue"].as_str().unwrap_or_default().to_owned(),
            r["position"].to_string(),
            r["message_id"].as_str().unwrap_or("-").to_owned(),
            to,
            one_line(r["result"].as_str().unwrap_or_default(), REASON_WIDTH),
        ]);
    }
    out.print_table(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells() {
        assert_eq!(one_line("a\n  b", 10), "a b");
        assert_eq!(one_line("abcdefghijk", 5), "abcd…");
        let cases = [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024 * 1024, "3.0 MiB")];
        for (bytes, want) in cases {
            assert_eq!(size(bytes), want);
        }
    }
}
