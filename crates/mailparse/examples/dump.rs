//! Prints what `deskmail_mailparse::parse` reads from a mail file (for looking at cases).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

fn main() {
    for path in std::env::args().skip(1) {
        let raw = std::fs::read(&path).unwrap();
        match deskmail_mailparse::parse(&raw, &deskmail_mailparse::Limits::default()) {
            Ok(mut m) => {
                for a in &mut m.attachments {
                    a.content.truncate(32);
                }
                m.headers.clear();
                if let Some(t) = m.text_body.as_mut() {
                    let cut = t.char_indices().nth(300).map_or(t.len(), |(i, _)| i);
                    t.truncate(cut);
                }
                if let Some(t) = m.html_body.as_mut() {
                    let cut = t.char_indices().nth(300).map_or(t.len(), |(i, _)| i);
                    t.truncate(cut);
                }
                println!("{path}: {m:#?}");
            }
            Err(e) => println!("{path}: ERROR {e}"),
        }
    }
}
