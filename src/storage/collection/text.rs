//! A note's sort field and first-field checksum, which the server computes
//! for every note a client sends (the wire carries them empty).
//!
//! The rules are Anki's, reimplemented from their described behaviour: media
//! tags become their file names, comments, style and script blocks and then
//! all tags are removed, and entities are decoded.

use sha1::{Digest, Sha1};

/// The text of a field as the browser sorts it and duplicates are found.
pub(crate) fn strip_html_keeping_media(html: &str) -> String {
    let without_media = replace_media_tags(html);
    let stripped = strip_tags(&without_media);
    if stripped.contains('&') {
        match htmlescape::decode_html(&stripped) {
            Ok(text) => text.replace('\u{a0}', " "),
            Err(_) => stripped,
        }
    } else {
        stripped
    }
}

/// First four bytes of the SHA-1 of the stripped first field, big-endian.
pub(crate) fn checksum(stripped_first_field: &str) -> u32 {
    let digest = Sha1::digest(stripped_first_field.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// `(sfld, csum)` for a note's fields and its notetype's sort field index.
pub(crate) fn sort_field_and_checksum(fields: &[&str], sort_idx: usize) -> (String, u32) {
    let first = strip_html_keeping_media(fields.first().copied().unwrap_or(""));
    let csum = checksum(&first);
    let sort = if sort_idx == 0 {
        first
    } else {
        strip_html_keeping_media(fields.get(sort_idx).copied().unwrap_or(""))
    };
    (sort, csum)
}

/// Removes `<!--…-->`, `<style…>…</style>`, `<script…>…</script>`, then
/// every `<…>`, each the shortest match, case-insensitively. A `<` that
/// starts none of them stays.
fn strip_tags(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        out.push_str(&html[i..start]);
        let rest = &lower[start..];
        let end = rest
            .strip_prefix("<!--")
            .and_then(|body| body.find("-->"))
            .map(|e| start + 4 + e + 3)
            .or_else(|| block_end(&lower, start, "<style", "</style>"))
            .or_else(|| block_end(&lower, start, "<script", "</script>"))
            .or_else(|| rest.find('>').map(|e| start + e + 1));
        match end {
            Some(end) => i = end,
            None => {
                out.push('<');
                i = start + 1;
            }
        }
    }
    out.push_str(&html[i..]);
    out
}

/// End of `<name…>…</name>` starting at `start`, if the text has one.
fn block_end(lower: &str, start: usize, open: &str, close: &str) -> Option<usize> {
    let rest = &lower[start..];
    if !rest.starts_with(open) {
        return None;
    }
    let tag_end = start + rest.find('>')? + 1;
    let close_at = tag_end + lower[tag_end..].find(close)?;
    Some(close_at + close.len())
}

const MEDIA_TAGS: [&str; 5] = ["img", "audio", "video", "object", "source"];

/// Replaces each media tag that names a file in `src=` or `data=` by
/// `" file "`.
fn replace_media_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut i = 0;
    while let Some(off) = html[i..].find('<') {
        let start = i + off;
        out.push_str(&html[i..start]);
        match media_tag(&html[start..]) {
            Some((len, name)) => {
                out.push(' ');
                out.push_str(name);
                out.push(' ');
                i = start + len;
            }
            None => {
                out.push('<');
                i = start + 1;
            }
        }
    }
    out.push_str(&html[i..]);
    out
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// If `s` starts with a media tag naming a file, its length and the file.
fn media_tag(s: &str) -> Option<(usize, &str)> {
    let b = s.as_bytes();
    let name_len = MEDIA_TAGS.iter().find_map(|t| {
        let n = t.len();
        let matches =
            b.len() > n + 1 && b[1..=n].eq_ignore_ascii_case(t.as_bytes()) && !is_word(b[n + 1]);
        matches.then_some(n)
    })?;
    // Walk the attributes (quoted values are opaque) to the first
    // `src=` / `data=` that starts a word, before the tag closes.
    let mut j = 1 + name_len;
    while j < b.len() {
        match b[j] {
            b'>' => return None,
            q @ (b'"' | b'\'') => {
                let close = s[j + 1..].find(q as char)?;
                j += close + 2;
                continue;
            }
            _ => {}
        }
        if !is_word(b[j - 1]) {
            for attr in ["src=", "data="] {
                let a = attr.len();
                if b.len() >= j + a && b[j..j + a].eq_ignore_ascii_case(attr.as_bytes()) {
                    if let Some(found) = attribute_value(s, j + a) {
                        return Some(found);
                    }
                }
            }
        }
        j += 1;
    }
    None
}

/// A value at `at` (double-, single- or unquoted) and the tag's end after it.
fn attribute_value(s: &str, at: usize) -> Option<(usize, &str)> {
    let b = s.as_bytes();
    match *b.get(at)? {
        q @ (b'"' | b'\'') => {
            let len = s[at + 1..].find(q as char)?;
            if len == 0 {
                return None;
            }
            let value = &s[at + 1..at + 1 + len];
            let after = at + 1 + len + 1;
            let close = s[after..].find('>')?;
            Some((after + close + 1, value))
        }
        _ => {
            let len = s[at..].find([' ', '>'])?;
            if len == 0 {
                return None;
            }
            let value = &s[at..at + len];
            let after = at + len;
            let close = if b[after] == b'>' {
                0
            } else {
                s[after..].find('>')?
            };
            Some((after + close + 1, value))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_sort_field_and_checksum() {
        // Observed with the official server.
        let (sfld, csum) = sort_field_and_checksum(&["<b>front 0</b> &amp; x"], 0);
        assert_eq!(sfld, "front 0 & x");
        assert_eq!(csum, 2_570_053_046);
    }

    #[test]
    fn media_tags_become_file_names() {
        assert_eq!(
            strip_html_keeping_media(r#"a<img src="cat.jpg">b"#),
            "a cat.jpg b"
        );
        assert_eq!(
            strip_html_keeping_media("<IMG class=x SRC='d o g.png' />"),
            " d o g.png "
        );
        assert_eq!(strip_html_keeping_media("<audio src=s.mp3>"), " s.mp3 ");
        assert_eq!(
            strip_html_keeping_media("<img alt=\"src=no\" src=\"yes.png\">"),
            " yes.png "
        );
        assert_eq!(
            strip_html_keeping_media("<object data=\"f.svg\"></object>"),
            " f.svg "
        );
        // Not media: the tag is just removed.
        assert_eq!(strip_html_keeping_media("<imgx src=a.png>t"), "t");
        assert_eq!(strip_html_keeping_media("<img alt=x>t"), "t");
    }

    #[test]
    fn tags_blocks_and_entities_go() {
        assert_eq!(strip_html_keeping_media("a<!-- c -->b"), "ab");
        assert_eq!(strip_html_keeping_media("a<STYLE>x{}</style>b"), "ab");
        assert_eq!(
            strip_html_keeping_media("a<script type=x>1<2</script>b"),
            "ab"
        );
        assert_eq!(strip_html_keeping_media("1 < 2"), "1 < 2");
        assert_eq!(strip_html_keeping_media("a&nbsp;b"), "a b");
        assert_eq!(strip_html_keeping_media("&bogus; x"), "&bogus; x");
        assert_eq!(strip_html_keeping_media("<div>\n<br>x</div>"), "\nx");
    }

    #[test]
    fn sort_field_follows_the_index() {
        let (sfld, _) = sort_field_and_checksum(&["a", "<i>b</i>"], 1);
        assert_eq!(sfld, "b");
        let (sfld, _) = sort_field_and_checksum(&["a"], 3);
        assert_eq!(sfld, "");
    }
}
