//! uuencode (`Content-Transfer-Encoding: x-uuencode`), which mail-parser does not decode.

/// Decodes uuencoded text: optional `begin MODE NAME` and `end` lines, then lines whose
/// first character gives their length. Returns the bytes and the name of the begin line.
pub(crate) fn decode(text: &[u8]) -> Option<(Vec<u8>, Option<String>)> {
    let mut out = Vec::new();
    let mut name = None;
    let mut lines_read = 0usize;
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line.starts_with(b"begin ") {
            let l = String::from_utf8_lossy(line);
            name = l.splitn(3, ' ').nth(2).map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
            continue;
        }
        if line == b"end" {
            break;
        }
        let (&first, rest) = line.split_first()?;
        let len = usize::from(first.wrapping_sub(b' ') & 0x3f);
        if len == 0 {
            // "`" or " ": the last, empty line.
            continue;
        }
        let mut decoded = Vec::with_capacity(len + 2);
        for chunk in rest.chunks(4) {
            let mut v = [0u8; 4];
            for (i, c) in chunk.iter().enumerate() {
                if let Some(slot) = v.get_mut(i) {
                    *slot = c.wrapping_sub(b' ') & 0x3f;
                }
            }
            decoded.push((v[0] << 2) | (v[1] >> 4));
            decoded.push((v[1] << 4) | (v[2] >> 2));
            decoded.push((v[2] << 6) | v[3]);
        }
        if decoded.len() < len {
            return None;
        }
        decoded.truncate(len);
        out.extend_from_slice(&decoded);
        lines_read += 1;
    }
    (lines_read > 0).then_some((out, name))
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_a_line() {
        let (bytes, name) =
            super::decode(b"begin 644 a.txt\n,2&5L;&\\@6F%M;6%D\n`\nend\n").unwrap_or_default();
        assert_eq!(bytes, b"Hello Zammad");
        assert_eq!(name.as_deref(), Some("a.txt"));
    }
}
