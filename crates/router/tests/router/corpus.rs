//! Every real-world mail of the corpus (`tests/corpus/`, written by other projects) routed
//! through the running router into a store: each becomes an article or a dead letter with a
//! reason; nothing is lost and nothing panics. The field-level expectations of `cases.jsonl`
//! are the parser's tests (crates/mailparse); here the whole path is checked.

use std::path::{Path, PathBuf};

use deskmail_mq::OutgoingMessage;
use deskmail_mq::lapin::types::AMQPValue;

use crate::harness::{Db, Env};
use crate::on_both_stores;

on_both_stores!(every_corpus_mail_becomes_an_article_or_a_dead_letter);

fn corpus_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/corpus");
    if repo.join("cases.jsonl").exists() { repo } else { PathBuf::from("/work/shared/corpus") }
}

/// Every mail file: the `cases.jsonl` ones and everything under `otrs/` and `rt/`.
fn corpus_mails() -> Vec<PathBuf> {
    let dir = corpus_dir();
    let mut files = Vec::new();
    let cases = std::fs::read_to_string(dir.join("cases.jsonl")).unwrap();
    for line in cases.lines().filter(|l| !l.trim().is_empty()) {
        let case: serde_json::Value = serde_json::from_str(line).unwrap();
        files.push(dir.join(case["file"].as_str().unwrap()));
    }
    let mut stack = vec![dir.join("otrs"), dir.join("rt")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files.dedup();
    files
}

async fn every_corpus_mail_becomes_an_article_or_a_dead_letter(db: Db) {
    let mails = corpus_mails();
    assert!(mails.len() >= 240, "corpus not found: {} mails in {}", mails.len(), corpus_dir().display());
    let mut env = Env::new(db).await;
    let inbox = env.ids.inbox.clone();
    let messages: Vec<OutgoingMessage> = mails
        .iter()
        .enumerate()
        .map(|(i, path)| {
            OutgoingMessage::new(env.topology.inbound_exchange(), "mail.raw", std::fs::read(path).unwrap())
                .message_id(format!("corpus:{i}"))
                .header("x-mailbox-id", inbox.as_str())
        })
        .collect();
    // Some projects ship the same mail byte for byte: in one mailbox those are one mail
    // (the router's content key), so the count to wait for is that of distinct contents.
    let contents: std::collections::HashSet<&[u8]> = messages.iter().map(|m| m.payload.as_ref()).collect();
    let total = contents.len() as u64;
    eprintln!("{} corpus files, {total} distinct contents", messages.len());
    assert!(env.publisher.publish_all(messages).await.iter().all(Result::is_ok));
    env.start_router().await;

    let dead_queue = env.topology.inbound_dead_queue();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let mut dead = Vec::new();
    let (articles, ignored) = loop {
        dead.extend(env.drain(&dead_queue).await);
        let articles = env.count_articles().await;
        let store = env.store().await;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        let ignored = deskmail_router::store::entity::processed::Entity::find()
            .filter(deskmail_router::store::entity::processed::Column::Outcome.eq("ignored"))
            .count(store.connection())
            .await
            .unwrap();
        if articles + ignored + dead.len() as u64 >= total {
            break (articles, ignored);
        }
        assert!(std::time::Instant::now() < deadline, "{articles} articles + {} dead of {total}", dead.len());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    env.stop_router().await;
    for (id, _, props) in &dead {
        let reason = props.headers().as_ref().and_then(|h| h.inner().get("x-deskmail-error").cloned());
        assert!(
            matches!(reason, Some(AMQPValue::LongString(ref s)) if !s.as_bytes().is_empty()),
            "dead letter {id:?} without a reason"
        );
    }
    let noted = {
        let store = env.store().await;
        use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
        deskmail_router::store::entity::article::Entity::find()
            .filter(deskmail_router::store::entity::article::Column::ParseError.is_not_null())
            .count(store.connection())
            .await
            .unwrap()
    };
    eprintln!(
        "corpus: {total} mails -> {articles} articles ({noted} with parse notes), {} dead letters, {ignored} ignored",
        dead.len()
    );
    assert_eq!(articles + dead.len() as u64 + ignored, total, "every mail accounted for exactly once");
}
