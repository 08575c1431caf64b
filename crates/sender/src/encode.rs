//! Text and HTML bodies, encoded as lettre would encode them (CRLF line ends; 7bit when the
//! text is ASCII with lines under 76 characters, else quoted-printable when at most a third
//! of it needs escaping, else base64), but in one pass: lettre's own path (CRLF insertion
//! char by char, the encoding chooser, the `quoted_printable` crate) took over half of the
//! sender's CPU per job for an 8 KiB body in the bench. Base64 stays lettre's.

use lettre::message::Body;
use lettre::message::header::ContentTransferEncoding;

/// Longest encoded line, without its CRLF (RFC 2045 section 6.7, rule 5).
const LIMIT: usize = 76;
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `text` as a body: line ends made CRLF (a lone LF gets a CR, as lettre does), then 7bit,
/// quoted-printable or base64 by lettre's rules (with `supports_utf8` off, as `Body::new`).
pub fn text_body(text: String) -> Body {
    // Chosen on the text as given, as lettre does (before adding CRs).
    let bytes = text.as_bytes();
    if bytes.is_ascii() && !line_too_long(&text) {
        return Body::dangerous_pre_encoded(crlf(text).into_bytes(), ContentTransferEncoding::SevenBit);
    }
    let escaped = escaped_count(bytes);
    let limit = bytes.len() / 3;
    let text = crlf(text);
    if escaped <= limit {
        let encoded = quoted_printable(text.as_bytes());
        return Body::dangerous_pre_encoded(encoded, ContentTransferEncoding::QuotedPrintable);
    }
    Body::new_with_encoding(text, ContentTransferEncoding::Base64)
        .unwrap_or_else(|raw| Body::new(String::from_utf8_lossy(&raw).into_owned()))
}

/// How many bytes quoted-printable must escape (all but tab and printable ASCII). Counted
/// in blocks of 64 into a byte-wide sum, which vectorises; a plain `filter().count()` took
/// ten times as long, more than the encoding itself.
fn escaped_count(bytes: &[u8]) -> usize {
    let escape = |c: u8| !matches!(c, b'\t' | b' '..=b'~');
    let (blocks, rest) = bytes.as_chunks::<64>();
    let mut n = 0;
    for block in blocks {
        n += usize::from(block.iter().fold(0u8, |sum, &c| sum + u8::from(escape(c))));
    }
    n + rest.iter().filter(|&&c| escape(c)).count()
}

/// Inserts a CR before every LF that lacks one.
fn crlf(text: String) -> String {
    let bytes = text.as_bytes();
    if !lf_positions(&text).any(|i| i == 0 || bytes[i - 1] != b'\r') {
        return text;
    }
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut copied = 0;
    for i in lf_positions(&text) {
        if i == 0 || bytes[i - 1] != b'\r' {
            out.push_str(&text[copied..i]);
            out.push('\r');
            copied = i;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Byte offsets of every LF (`match_indices` of a one-byte char runs on memchr).
fn lf_positions(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.match_indices('\n').map(|(i, _)| i)
}

/// A line of 76 bytes or more: the text cannot go as 7bit. Exactly email-encoding's rule
/// (which counts the LF before a line as part of it).
fn line_too_long(text: &str) -> bool {
    let mut last = 0;
    for i in lf_positions(text) {
        if i - last >= LIMIT {
            return true;
        }
        last = i;
    }
    text.len() - last >= LIMIT
}

/// Quoted-printable (RFC 2045 section 6.7) of CRLF text: CRLF stays a line break; printable
/// ASCII but `=` goes as is; space and tab too unless they end a line; everything else is
/// `=XX`; soft line breaks keep every line at 76 characters at most.
fn quoted_printable(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32 + 8);
    let mut line = 0;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if plain(b) {
            // A run of characters that go as they are, up to the room left on the line
            // before a soft break's `=`: copied at once.
            if line + 1 > LIMIT - 1 {
                out.extend_from_slice(b"=\r\n");
                line = 0;
            }
            let end = input.len().min(i + (LIMIT - 1 - line));
            let run = plain_run(&input[i..end]);
            out.extend_from_slice(&input[i..i + run]);
            line += run;
            i += run;
            continue;
        }
        let rest = &input[i + 1..];
        if b == b'\r' && rest.first() == Some(&b'\n') {
            out.extend_from_slice(b"\r\n");
            line = 0;
            i += 2;
            continue;
        }
        let ends_line = rest.is_empty() || rest.starts_with(b"\r\n");
        let literal = matches!(b, b' ' | b'\t') && !ends_line;
        let width = if literal { 1 } else { 3 };
        // Room for this character, and for the `=` of a soft break after it unless the
        // line ends here.
        let room = if ends_line { LIMIT } else { LIMIT - 1 };
        if line + width > room {
            out.extend_from_slice(b"=\r\n");
            line = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        line += width;
        i += 1;
    }
    out
}

/// How many bytes at the start of `s` are [`plain`]. Blocks of 16 are checked without an
/// early exit inside the block, which the compiler turns into a few vector compares: the
/// byte-by-byte scan was most of the sender's CPU per job for an 8 KiB body.
fn plain_run(s: &[u8]) -> usize {
    let mut n = 0;
    let (blocks, _) = s.as_chunks::<16>();
    for block in blocks {
        if !block.iter().fold(true, |all, &c| all & plain(c)) {
            break;
        }
        n += 16;
    }
    n + s[n..].iter().position(|&c| !plain(c)).unwrap_or(s.len() - n)
}

/// Printable ASCII but `=`: goes as it is anywhere on a line.
fn plain(b: u8) -> bool {
    matches!(b, b'!'..=b'<' | b'>'..=b'~')
}

#[cfg(test)]
mod tests {
    use lettre::message::header::ContentType;
    use lettre::message::{IntoBody, SinglePart};

    use super::*;

    /// What a mail reader gets back from the part.
    fn round_trip(text: &str) -> (String, String) {
        let part = SinglePart::builder().header(ContentType::TEXT_PLAIN).body(text_body(text.to_owned()));
        let raw = part.formatted();
        let mail = format!("Subject: t\r\nMIME-Version: 1.0\r\n{}", String::from_utf8(raw.clone()).unwrap());
        let parsed = mail_parser::MessageParser::default().parse(mail.as_bytes()).unwrap();
        let body = parsed.body_text(0).unwrap().into_owned();
        (body, String::from_utf8(raw).unwrap())
    }

    /// The transfer encoding lettre would have picked itself.
    fn lettre_encoding(text: &str) -> String {
        format!("{:?}", text.to_owned().into_body(None).encoding())
    }

    #[test]
    fn bodies_decode_to_the_text_with_crlf_and_lines_stay_short() {
        let long = "x".repeat(7992);
        let cases = [
            "short ascii\nlines\n".to_owned(),
            long.clone(),
            format!("{long}\n\n-- \nfooter\n"),
            "Grüße aus Köln, eine lange Zeile mit Umlauten äöü ÄÖÜ ß und noch etwas mehr Text dahinter.\n"
                .repeat(3),
            format!("{} \t\r\nnext = line ends with space \nx", "a=b ".repeat(40)),
            "trailing space at the very end ".repeat(5),
            ".dot\r\n..two\nmixed\r\nends".to_owned(),
            format!("{}\n{}\n", "b".repeat(74), "c".repeat(74)),
            "日本語のテキスト、ほとんどエスケープが必要です。".repeat(6),
        ];
        for text in cases {
            let (decoded, raw) = round_trip(&text);
            // The part ends with a CRLF of its own; compare up to the last line end.
            let want = crlf(text.clone()).replace("\r\n", "\n");
            let got = decoded.replace("\r\n", "\n");
            assert_eq!(got.trim_end_matches('\n'), want.trim_end_matches('\n'), "{text:?}\n{raw}");
            let body = raw.split_once("\r\n\r\n").unwrap().1;
            assert!(body.split("\r\n").all(|l| l.len() <= LIMIT), "{raw}");
            // The same transfer encoding lettre picks.
            let ours = format!("{:?}", text_body(text.clone()).encoding());
            assert_eq!(ours, lettre_encoding(&text), "{text:?}");
        }
    }

    #[test]
    fn quoted_printable_table() {
        let cases: [(&str, &str); 6] = [
            ("a=b", "a=3Db"),
            ("end space \r\nnext", "end space=20\r\nnext"),
            ("tab\t", "tab=09"),
            ("ü", "=C3=BC"),
            ("lone\rcr", "lone=0Dcr"),
            ("lone\nlf", "lone=0Alf"),
        ];
        for (input, want) in cases {
            assert_eq!(String::from_utf8(quoted_printable(input.as_bytes())).unwrap(), want, "{input:?}");
        }
        let soft = String::from_utf8(quoted_printable("y".repeat(200).as_bytes())).unwrap();
        let lines: Vec<&str> = soft.split("\r\n").collect();
        assert_eq!(lines[0].len(), 76);
        assert!(lines[0].ends_with('=') && lines.last().unwrap().len() < 76, "{soft}");
        assert_eq!(soft.replace("=\r\n", ""), "y".repeat(200));
    }

    #[test]
    fn plain_runs_stop_at_the_first_byte_to_escape() {
        let mut s = "a".repeat(40).into_bytes();
        assert_eq!(plain_run(&s), 40);
        for at in [0, 5, 15, 16, 17, 31, 32, 39] {
            let mut t = s.clone();
            t[at] = b'=';
            assert_eq!(plain_run(&t), at, "{at}");
            t[at] = 0xC3;
            assert_eq!(plain_run(&t), at, "{at}");
        }
        s.clear();
        assert_eq!(plain_run(&s), 0);
    }

    #[test]
    fn escaped_bytes_are_counted_in_and_out_of_blocks() {
        let mut s = "a\tb c~".repeat(30).into_bytes();
        assert_eq!(escaped_count(&s), 0);
        for at in [0, 63, 64, 127, 128, s.len() - 1] {
            s[at] = 0xC3;
        }
        s[10] = b'\n';
        assert_eq!(escaped_count(&s), 7);
        assert_eq!(escaped_count(&[0x80; 64]), 64);
    }

    #[test]
    fn crlf_adds_cr_only_where_missing() {
        assert_eq!(crlf("a\nb\r\nc\n".into()), "a\r\nb\r\nc\r\n");
        assert_eq!(crlf("\n".into()), "\r\n");
        assert_eq!(crlf("none".into()), "none");
    }
}
