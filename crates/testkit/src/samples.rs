//! Realistic test mails, generated deterministically from a seed.
//!
//! [`SampleGen`] makes a stream of mails like a service desk receives: plain, HTML and
//! multipart/alternative bodies, attachments (PDF, PNG and DOCX-like bytes, inline images
//! with a Content-ID), the charsets UTF-8, ISO-8859-1, windows-1252, ISO-2022-JP and
//! GB2312/GBK, encoded-word subjects and display names, quoted-printable, base64 and 8bit
//! bodies. The same seed gives the same mails.
//!
//! The size mix (raw bytes, as a service desk's inbox sees it), per 1,000 mails:
//! - 859: a text mail of 2-20 KiB, no file (plain, HTML, multipart/alternative, or HTML with
//!   a small inline logo of 1.5-5.5 KiB);
//! - 140: a mail with one to three files of 10-150 KiB in all (raw size);
//! - 1: a mail with files of 1-5 MiB in all.
//!
//! **Calibration.** The mix is calibrated to the router issue's own reference figure for
//! "realistic" mail on the project's 2-core machine: mail-parser 0.11 parses about **18,000
//! realistic mails/s per core**. Parse time is close to linear in the raw bytes once a mail
//! is past its headers (measured here: about 32,000 mails/s for the text mails alone, about
//! 450-950 MiB/s through base64 attachments), so that figure fixes the mean size at about
//! 20-25 KiB. An earlier mix (15 % with files of 20-300 KiB, 1 % with 1-5 MiB) had a mean of
//! 62 KiB (half of its bytes in the 1 % of big mails) and parsed at about 7,900 mails/s: it
//! was about three times heavier than the mail the issue's figures describe, so every
//! throughput figure measured on it (parse, insert, route) was about that much lower than the
//! issue's own figures for the same machine. The shapes, charsets, inline images and large
//! files are all still there; only how often the heavy ones come was brought in line.
//! Check it with `cargo bench -p deskmail-mailparse --bench parse` (the "mail-parser" rate of
//! the realistic line) or the router's bench, which prints the same bare rate.
//!
//! Seed 42, 2,000 mails: median 9.9 KiB, mean 24.1 KiB, 2 mails of 1 MiB or more; mail-parser
//! 18,800 mails/s on one thread (29 Nov 2026, machine loaded by other builds).
//!
//! ```no_run
//! use deskmail_testkit::samples::{SampleGen, fixed_size};
//! let mut g = SampleGen::new(7).to("desk@example.com");
//! let first = g.mail();                        // a new mail
//! let follow = g.followup(4711);               // "Re: [Ticket#4711] ..."
//! let reply = g.reply(&first.message_id);      // In-Reply-To/References: first
//! let raw: Vec<Vec<u8>> = g.mails(100).into_iter().map(|s| s.raw).collect();
//! let one_kib = fixed_size(1024);              // a plain mail of exactly 1024 bytes
//! ```

use std::fmt::Write as _;

/// One generated mail and what it was made of (for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The raw RFC 5322 bytes (CRLF line ends).
    pub raw: Vec<u8>,
    /// The Message-ID, without `<>`.
    pub message_id: String,
    /// The subject, decoded (as a parser should read it).
    pub subject: String,
    /// The From address.
    pub from: String,
    /// The To address.
    pub to: String,
    /// The In-Reply-To id (without `<>`) when this is a reply.
    pub in_reply_to: Option<String>,
    /// The charset of the body text.
    pub charset: &'static str,
    /// The body structure.
    pub shape: Shape,
    /// The first characters of the plain body text (decoded).
    pub body_start: String,
    /// The attachments, in order.
    pub attachments: Vec<SampleAttachment>,
}

/// One attachment of a [`Sample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleAttachment {
    /// The file name.
    pub filename: String,
    /// `type/subtype`.
    pub content_type: String,
    /// The decoded size in bytes.
    pub size: usize,
    /// The Content-ID (without `<>`) of an inline image.
    pub content_id: Option<String>,
}

/// The MIME structure of a [`Sample`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A single text/plain part.
    Plain,
    /// A single text/html part.
    Html,
    /// multipart/alternative: text/plain and text/html.
    Alternative,
    /// multipart/mixed: a body (plain or alternative) and attachments.
    Mixed,
    /// multipart/related: HTML with inline images (inside multipart/mixed when there are
    /// also files).
    Related,
}

/// A deterministic generator of realistic mails.
#[derive(Debug, Clone)]
pub struct SampleGen {
    rng: u64,
    n: u64,
    to: String,
    domain: String,
}

struct Charset {
    label: &'static str,
    encoding: &'static encoding_rs::Encoding,
    subjects: &'static [&'static str],
    names: &'static [&'static str],
    text: &'static str,
}

const LATIN_TEXT: &str = "Sehr geehrte Damen und Herren, unser Drucker im 2. Stock druckt seit \
gestern nur noch leere Seiten. Wir haben bereits die Patrone getauscht und das Gerät neu \
gestartet, leider ohne Erfolg. Könnten Sie bitte einen Techniker schicken? Der Zugang ist \
über den Empfang möglich. Merci beaucoup, à bientôt — l'équipe comptabilité. ";
const JP_TEXT: &str = "お世話になっております。先日ご依頼いたしました見積書の件ですが、\
内容を確認のうえ、ご返信いただけますでしょうか。よろしくお願いいたします。";
const CN_TEXT: &str = "您好，我们公司的邮件服务器从昨天开始无法发送邮件，\
请尽快帮我们检查一下问题。谢谢您的支持与帮助。";

fn charsets() -> [Charset; 5] {
    [
        Charset {
            label: "utf-8",
            encoding: encoding_rs::UTF_8,
            subjects: &[
                "Drucker im 2. Stock defekt",
                "Passwort zurücksetzen",
                "Réunion de lundi — ordre du jour",
                "VPN-Zugang für neue Mitarbeiterin 🚀",
            ],
            names: &["Jürgen Müller", "Zoë Ångström", "Ana Núñez"],
            text: LATIN_TEXT,
        },
        Charset {
            label: "iso-8859-1",
            encoding: encoding_rs::WINDOWS_1252,
            subjects: &["Rechnung Nr. 4711 – Rückfrage", "Schlüssel für Büro 3"],
            names: &["Björn Größ", "Renée Dubois"],
            text: LATIN_TEXT,
        },
        Charset {
            label: "windows-1252",
            encoding: encoding_rs::WINDOWS_1252,
            subjects: &["Angebot „Wartung 2025“", "Lieferung verzögert"],
            names: &["Søren Kierkegård", "François Lefèvre"],
            text: LATIN_TEXT,
        },
        Charset {
            label: "iso-2022-jp",
            encoding: encoding_rs::ISO_2022_JP,
            subjects: &["見積書の件", "サーバー障害のお知らせ"],
            names: &["山田太郎", "佐藤花子"],
            text: JP_TEXT,
        },
        Charset {
            label: "gb2312",
            encoding: encoding_rs::GBK,
            subjects: &["邮件服务器故障", "关于合同的问题"],
            names: &["王小明", "李华"],
            text: CN_TEXT,
        },
    ]
}

impl SampleGen {
    /// A generator; the same seed gives the same mails. Mails go to `desk@example.com`
    /// until [`SampleGen::to`] says otherwise.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            n: 0,
            to: "desk@example.com".into(),
            domain: "customer.example".into(),
        }
    }

    /// Send the mails to this address.
    pub fn to(mut self, to: &str) -> Self {
        self.to = to.to_owned();
        self
    }

    /// Senders' domain (default `customer.example`).
    pub fn from_domain(mut self, domain: &str) -> Self {
        self.domain = domain.to_owned();
        self
    }

    /// `n` mails.
    pub fn mails(&mut self, n: usize) -> Vec<Sample> {
        (0..n).map(|_| self.mail()).collect()
    }

    /// The next new mail (no thread headers).
    pub fn mail(&mut self) -> Sample {
        self.build(None, None)
    }

    /// A follow-up to ticket `number`: subject `Re: [Ticket#number] ...`.
    pub fn followup(&mut self, number: u64) -> Sample {
        self.build(Some(number), None)
    }

    /// A reply to the mail with this Message-ID (without `<>`): In-Reply-To and References.
    pub fn reply(&mut self, message_id: &str) -> Sample {
        self.build(None, Some(message_id.trim_matches(['<', '>']).to_owned()))
    }

    fn next(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// The target size and whether the mail carries files (see the module docs for the mix
    /// and its calibration): per 1,000 mails, 859 text mails of 2-20 KiB, 140 with files of
    /// 10-150 KiB, 1 with files of 1-5 MiB.
    fn target_size(&mut self) -> (usize, bool) {
        match self.below(1000) {
            0 => (1024 * 1024 + self.below(4 * 1024 * 1024), true),
            1..=140 => (10 * 1024 + self.below(140 * 1024), true),
            _ => (2 * 1024 + self.below(18 * 1024), false),
        }
    }

    fn build(&mut self, ticket: Option<u64>, in_reply_to: Option<String>) -> Sample {
        self.n += 1;
        let sets = charsets();
        let cs = &sets[self.below(sets.len())];
        let name = cs.names[self.below(cs.names.len())];
        let user = ["anna", "ben", "chen", "dora", "emil", "fatma"][self.below(6)];
        let from = format!("{user}.{}@{}", self.n, self.domain);
        let base_subject = cs.subjects[self.below(cs.subjects.len())].to_owned();
        let subject = match (ticket, &in_reply_to) {
            (Some(n), _) => format!("Re: [Ticket#{n}] {base_subject}"),
            (None, Some(_)) => format!("Re: {base_subject}"),
            _ => base_subject,
        };
        let message_id = format!("{:016x}.{}@{}", self.next(), self.n, self.domain);
        let (target, with_files) = self.target_size();
        let shape = if with_files {
            // Files: a body and attachments (inline logo too, now and then).
            if self.below(10) == 0 { Shape::Related } else { Shape::Mixed }
        } else {
            match self.below(10) {
                0..=4 => Shape::Plain,
                5 => Shape::Html,
                6..=8 => Shape::Alternative,
                _ => Shape::Related,
            }
        };

        // Body text of roughly the size the attachments leave (encodings and an HTML copy
        // make the raw text part up to about twice the text).
        let text_len = if with_files {
            600 + self.below(3000)
        } else {
            let text = match shape {
                Shape::Plain => target.saturating_sub(1000) * 3 / 4,
                Shape::Html => target.saturating_sub(1000) * 2 / 3,
                _ => target.saturating_sub(1000) * 2 / 5,
            };
            // GBK in quoted-printable: every byte of a character is "=XX".
            let text = if cs.label == "gb2312" { text / 2 } else { text };
            text.max(900)
        };
        let mut text = String::new();
        if in_reply_to.is_some() || ticket.is_some() {
            text.push_str("Danke, das hat geholfen. / Thanks, that helped.\n\n");
        }
        while text.len() < text_len {
            text.push_str(cs.text);
            text.push('\n');
        }
        let text = truncate_chars(&text, text_len);
        let html = format!(
            "<html><body><p>{}</p><p>-- <br>{name}</p></body></html>",
            html_escape(&text).replace('\n', "<br>\n")
        );

        let mut attachments = Vec::new();
        let mut files: Vec<(SampleAttachment, Vec<u8>)> = Vec::new();
        if with_files {
            // Decoded bytes: base64 makes them 4/3 bigger in the raw mail.
            let budget = target.saturating_sub(text.len() * 2).max(2048) * 3 / 4;
            let count = match self.below(10) {
                0..=6 => 1,
                7..=8 => 2,
                _ => 3,
            };
            for i in 0..count {
                let size = (budget / count).max(512);
                let (ct, ext, data) = match self.below(3) {
                    0 => ("application/pdf", "pdf", self.pdf(size)),
                    1 => ("image/png", "png", self.png(size)),
                    _ => (
                        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                        "docx",
                        self.docx(size),
                    ),
                };
                let filename = match (self.below(3), cs.label) {
                    (0, "utf-8" | "iso-8859-1" | "windows-1252") => {
                        format!("Übersicht {i} (Entwurf).{ext}")
                    }
                    _ => format!("document-{}-{i}.{ext}", self.n),
                };
                files.push((
                    SampleAttachment {
                        filename,
                        content_type: ct.into(),
                        size: data.len(),
                        content_id: None,
                    },
                    data,
                ));
            }
        }
        let mut inline: Vec<(SampleAttachment, Vec<u8>)> = Vec::new();
        if shape == Shape::Related {
            let png_size = 1500 + self.below(4000);
            let data = self.png(png_size);
            inline.push((
                SampleAttachment {
                    filename: "logo.png".into(),
                    content_type: "image/png".into(),
                    size: data.len(),
                    content_id: Some(format!("logo.{}@{}", self.n, self.domain)),
                },
                data,
            ));
        }

        // Headers.
        let mut h = String::new();
        let _ = write!(h, "Return-Path: <{from}>\r\n");
        let (ip, minute) = (1 + self.below(250), self.below(60));
        let _ = write!(
            h,
            "Received: from mx.{d} (mx.{d} [192.0.2.{ip}]) by mail.example.com with ESMTPS; \
             Mon, 3 Mar 2025 10:{minute:02}:00 +0100\r\n",
            d = self.domain,
        );
        let _ = write!(
            h,
            "Date: Mon, 3 Mar 2025 {:02}:{:02}:{:02} +0100\r\n",
            8 + self.below(10),
            self.below(60),
            self.below(60)
        );
        let _ = write!(h, "From: {} <{from}>\r\n", self.encoded_word(name, cs));
        let _ = write!(h, "To: Service Desk <{}>\r\n", self.to);
        let _ = write!(h, "Subject: {}\r\n", self.encoded_word(&subject, cs));
        let _ = write!(h, "Message-ID: <{message_id}>\r\n");
        if let Some(irt) = &in_reply_to {
            let _ = write!(h, "In-Reply-To: <{irt}>\r\nReferences: <{irt}>\r\n");
        }
        h.push_str("MIME-Version: 1.0\r\nX-Mailer: deskmail-testkit samples\r\n");

        let text_part = self.text_part("text/plain", &text, cs);
        let html_part = self.text_part("text/html", &html, cs);
        let b = |tag: &str, n: u64| format!("=_{tag}_{n:x}");
        let alternative = |b1: &str| {
            format!(
                "Content-Type: multipart/alternative; boundary=\"{b1}\"\r\n\r\n\
                 --{b1}\r\n{text_part}--{b1}\r\n{html_part}--{b1}--\r\n"
            )
        };
        let mut body = match shape {
            Shape::Plain => text_part.clone(),
            Shape::Html => html_part.clone(),
            Shape::Alternative => alternative(&b("alt", self.next())),
            Shape::Mixed | Shape::Related => String::new(),
        };
        if shape == Shape::Related {
            let rb = b("rel", self.next());
            let (att, data) = &inline[0];
            let cid = att.content_id.clone().unwrap_or_default();
            let html_cid = format!(
                "<html><body><p><img src=\"cid:{cid}\" alt=\"logo\"></p><p>{}</p></body></html>",
                html_escape(&text).replace('\n', "<br>\n")
            );
            let html_cid_part = self.text_part("text/html", &html_cid, cs);
            let alt_b = b("alt", self.next());
            let alt = format!(
                "Content-Type: multipart/alternative; boundary=\"{alt_b}\"\r\n\r\n\
                 --{alt_b}\r\n{text_part}--{alt_b}\r\n{html_cid_part}--{alt_b}--\r\n"
            );
            body = format!(
                "Content-Type: multipart/related; boundary=\"{rb}\"; type=\"multipart/alternative\"\r\n\r\n\
                 --{rb}\r\n{alt}--{rb}\r\nContent-Type: image/png; name=\"{}\"\r\n\
                 Content-Disposition: inline; filename=\"{}\"\r\nContent-ID: <{cid}>\r\n\
                 Content-Transfer-Encoding: base64\r\n\r\n{}--{rb}--\r\n",
                att.filename,
                att.filename,
                base64_lines(data)
            );
            attachments.push(att.clone());
        }
        if !files.is_empty() {
            let mb = b("mix", self.next());
            let inner = match shape {
                Shape::Related => body.clone(),
                _ if self.below(2) == 0 => alternative(&b("alt", self.next())),
                _ => text_part.clone(),
            };
            let mut m = format!(
                "Content-Type: multipart/mixed; boundary=\"{mb}\"\r\n\r\n\
                 This is a multi-part message in MIME format.\r\n\r\n--{mb}\r\n{inner}"
            );
            for (att, data) in &files {
                let _ = write!(
                    m,
                    "--{mb}\r\nContent-Type: {}; name=\"{}\"\r\nContent-Disposition: attachment; {}\r\n\
                     Content-Transfer-Encoding: base64\r\n\r\n{}",
                    att.content_type,
                    self.encoded_word(&att.filename, cs),
                    rfc2231_filename(&att.filename),
                    base64_lines(data)
                );
                attachments.push(att.clone());
            }
            let _ = write!(m, "--{mb}--\r\n");
            body = m;
        }
        let mut raw = h.into_bytes();
        raw.extend_from_slice(body.as_bytes());
        Sample {
            raw,
            message_id,
            subject,
            from,
            to: self.to.clone(),
            in_reply_to,
            charset: cs.label,
            shape: if !files.is_empty() && shape != Shape::Related { Shape::Mixed } else { shape },
            body_start: truncate_chars(&text, 40),
            attachments,
        }
    }

    /// A header word: ASCII as is, else an RFC 2047 encoded word in the charset (B or Q).
    fn encoded_word(&mut self, s: &str, cs: &Charset) -> String {
        if s.is_ascii() {
            return s.to_owned();
        }
        let (bytes, label) = encode(s, cs);
        if self.below(2) == 0 || cs.label == "iso-2022-jp" {
            format!("=?{label}?B?{}?=", base64(&bytes))
        } else {
            let mut q = String::new();
            for b in bytes {
                match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' => q.push(char::from(b)),
                    b' ' => q.push('_'),
                    _ => {
                        let _ = write!(q, "={b:02X}");
                    }
                }
            }
            format!("=?{label}?Q?{q}?=")
        }
    }

    /// A text part (headers and body, ending CRLF) in the charset: quoted-printable,
    /// base64, or 8bit/7bit as the charset allows.
    fn text_part(&mut self, ctype: &str, text: &str, cs: &Charset) -> String {
        let (bytes, label) = encode(&text.replace('\n', "\r\n"), cs);
        let enc = match (label, self.below(3)) {
            ("iso-2022-jp", 0) => "7bit",
            (_, 0) => "quoted-printable",
            (_, 1) => "base64",
            _ => "qp-or-8bit",
        };
        let (cte, body) = match enc {
            "7bit" => ("7bit", String::from_utf8_lossy(&bytes).into_owned()),
            "base64" => ("base64", base64_lines(&bytes)),
            "quoted-printable" => ("quoted-printable", quoted_printable(&bytes)),
            _ if label == "utf-8" => {
                // 8bit UTF-8 stays valid text.
                ("8bit", String::from_utf8_lossy(&bytes).into_owned())
            }
            _ => ("quoted-printable", quoted_printable(&bytes)),
        };
        let mut body = body;
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        format!(
            "Content-Type: {ctype}; charset=\"{label}\"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n{body}"
        )
    }

    fn pdf(&mut self, size: usize) -> Vec<u8> {
        let mut v =
            b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\nstream\n"
                .to_vec();
        let fill = size.saturating_sub(v.len() + 20);
        v.extend(self.bytes(fill));
        v.extend_from_slice(b"\nendstream\n%%EOF\n");
        v
    }

    fn png(&mut self, size: usize) -> Vec<u8> {
        let mut v =
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x40\x00\x00\x00\x40\x08\x06\x00\x00\x00"
                .to_vec();
        let fill = size.saturating_sub(v.len() + 12);
        v.extend(self.bytes(fill));
        v.extend_from_slice(b"\x00\x00\x00\x00IEND\xaeB`\x82");
        v
    }

    fn docx(&mut self, size: usize) -> Vec<u8> {
        let mut v = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml".to_vec();
        let fill = size.saturating_sub(v.len() + 22);
        v.extend(self.bytes(fill));
        v.extend_from_slice(b"PK\x05\x06\x00\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00");
        v
    }
}

/// A plain ASCII mail of exactly `n_bytes` bytes (at least its headers, about 300 bytes),
/// for throughput benches. Every call gives the same bytes for the same size; the
/// Message-ID includes the size.
pub fn fixed_size(n_bytes: usize) -> Vec<u8> {
    fixed_size_with_id(n_bytes, &format!("fixed-{n_bytes}@bench.example"))
}

/// Like [`fixed_size`] with a Message-ID of your choice (without `<>`), so that many
/// mails of one size are distinct.
pub fn fixed_size_with_id(n_bytes: usize, message_id: &str) -> Vec<u8> {
    let head = format!(
        "From: Bench Sender <bench@customer.example>\r\nTo: Service Desk <desk@example.com>\r\n\
         Subject: Throughput test mail\r\nDate: Mon, 3 Mar 2025 10:00:00 +0100\r\n\
         Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    );
    let mut raw = head.into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog while the printer prints nothing.\r\n";
    while raw.len() < n_bytes {
        let rest = n_bytes - raw.len();
        if rest >= line.len() {
            raw.extend_from_slice(line);
        } else if rest >= 2 {
            raw.extend(std::iter::repeat_n(b'x', rest - 2));
            raw.extend_from_slice(b"\r\n");
        } else {
            raw.extend(std::iter::repeat_n(b' ', rest));
        }
    }
    raw
}

fn encode(s: &str, cs: &Charset) -> (Vec<u8>, &'static str) {
    let (bytes, _, unmappable) = cs.encoding.encode(s);
    if unmappable {
        // A character the charset lacks (an emoji in Latin-1): the mail is sent as UTF-8.
        (s.as_bytes().to_vec(), "utf-8")
    } else {
        (bytes.into_owned(), cs.label)
    }
}

fn truncate_chars(s: &str, max_bytes: usize) -> String {
    let mut end = max_bytes.min(s.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("").to_owned()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn rfc2231_filename(name: &str) -> String {
    if name.is_ascii() {
        return format!("filename=\"{name}\"");
    }
    let mut v = String::from("filename*=utf-8''");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            v.push(char::from(b));
        } else {
            let _ = write!(v, "%{b:02X}");
        }
    }
    v
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b0 = c.first().copied().unwrap_or(0);
        let b1 = c.get(1).copied().unwrap_or(0);
        let b2 = c.get(2).copied().unwrap_or(0);
        let idx = [b0 >> 2, ((b0 & 3) << 4) | (b1 >> 4), ((b1 & 15) << 2) | (b2 >> 6), b2 & 63];
        for (i, x) in idx.iter().enumerate() {
            if i <= c.len() {
                out.push(char::from(B64[usize::from(*x)]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64 in lines of 76 characters, CRLF after each.
fn base64_lines(data: &[u8]) -> String {
    let b = base64(data);
    let mut out = String::with_capacity(b.len() + b.len() / 38 + 2);
    for chunk in b.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push_str("\r\n");
    }
    out
}

/// Quoted-printable (RFC 2045) of CRLF text: soft breaks at 76 characters.
fn quoted_printable(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 3 / 2);
    let mut col = 0;
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            out.push_str("\r\n");
            col = 0;
            i += 2;
            continue;
        }
        let next_is_eol = data.get(i + 1).is_none_or(|n| *n == b'\r');
        let lit = (b == b'\t' || b == b' ') && !next_is_eol || (33..=126).contains(&b) && b != b'=';
        let piece = if lit { char::from(b).to_string() } else { format!("={b:02X}") };
        if col + piece.len() > 75 {
            out.push_str("=\r\n");
            col = 0;
        }
        col += piece.len();
        out.push_str(&piece);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_mails() {
        let a: Vec<_> = SampleGen::new(1).mails(20);
        let b: Vec<_> = SampleGen::new(1).mails(20);
        assert_eq!(a, b);
        assert_ne!(a, SampleGen::new(2).mails(20));
    }

    #[test]
    fn size_mix_is_as_documented() {
        let mails = SampleGen::new(42).mails(2000);
        let kib = |s: &Sample| s.raw.len() as f64 / 1024.0;
        let small = mails.iter().filter(|s| s.attachments.iter().all(|a| a.content_id.is_some())).count();
        let files: Vec<_> =
            mails.iter().filter(|s| s.attachments.iter().any(|a| a.content_id.is_none())).collect();
        let big = mails.iter().filter(|s| kib(s) >= 1024.0).count();
        assert!((1640..=1800).contains(&small), "text mails: {small}");
        let text: Vec<f64> = mails.iter().filter(|s| s.attachments.is_empty()).map(kib).collect();
        let (lo, hi) = text.iter().fold((f64::MAX, 0.0f64), |(l, h), &k| (l.min(k), h.max(k)));
        assert!(lo >= 1.0 && hi <= 22.0, "text mails {lo:.1}-{hi:.1} KiB");
        let in_range = text.iter().filter(|k| (2.0..=20.0).contains(*k)).count();
        assert!(in_range * 10 >= text.len() * 9, "{in_range} of {} text mails in 2-20 KiB", text.len());
        assert!((220..=340).contains(&files.len()), "with files: {}", files.len());
        assert!(big <= 8, "big: {big}");
        let mut sizes: Vec<f64> = mails.iter().map(kib).collect();
        sizes.sort_by(f64::total_cmp);
        let median = sizes[sizes.len() / 2];
        assert!((5.0..=16.0).contains(&median), "median {median} KiB");
        let mean = sizes.iter().sum::<f64>() / sizes.len() as f64;
        assert!((15.0..=32.0).contains(&mean), "mean {mean} KiB");
        eprintln!("median {median:.1} KiB, mean {mean:.1} KiB, {big} of 2000 at 1 MiB or more");
    }

    #[test]
    fn fixed_size_is_exact() {
        for n in [400usize, 1024, 4096, 65_537, 1024 * 1024] {
            assert_eq!(fixed_size(n).len(), n);
        }
        // Below the header size: just the headers.
        assert!(fixed_size(10).len() > 10);
    }

    #[test]
    fn base64_and_qp() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
        assert_eq!(quoted_printable("ä=b \r\n".as_bytes()), "=C3=A4=3Db=20\r\n");
    }
}
