//! The page's words: one file per language beside this one (`en.txt`,
//! `ja.txt`, `ru.txt`; the format is described at the top of `en.txt`), so
//! a translator needs no Rust. Built into the binary.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The languages, English first (the fallback), with their files.
const FILES: &[(&str, &str)] = &[
    ("en", include_str!("en.txt")),
    ("ja", include_str!("ja.txt")),
    ("ru", include_str!("ru.txt")),
];

/// One language's texts, by block name.
pub(crate) struct Texts {
    pub(crate) lang: &'static str,
    blocks: HashMap<&'static str, &'static str>,
}

impl Texts {
    /// The block `name`; English's when this language lacks it (a
    /// translation behind the English file still shows a whole page).
    pub(crate) fn get(&self, name: &str) -> &'static str {
        if let Some(text) = self.blocks.get(name) {
            return text;
        }
        all()[0].blocks.get(name).copied().unwrap_or_default()
    }
}

/// Every language, parsed once.
pub(crate) fn all() -> &'static [Texts] {
    static ALL: OnceLock<Vec<Texts>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(lang, file)| Texts {
                lang,
                blocks: parse(file),
            })
            .collect()
    })
}

/// `@name` lines start blocks; `#` lines are notes for translators.
fn parse(file: &'static str) -> HashMap<&'static str, &'static str> {
    let mut blocks = HashMap::new();
    let mut current: Option<(&'static str, usize)> = None;
    let mut offset = 0;
    let mut close = |current: Option<(&'static str, usize)>, end: usize| {
        if let Some((name, start)) = current {
            blocks.insert(name, file[start..end].trim());
        }
    };
    for line in file.split_inclusive('\n') {
        if let Some(name) = line.trim_end().strip_prefix('@') {
            close(current, offset);
            current = Some((name.trim(), offset + line.len()));
        }
        offset += line.len();
    }
    close(current, file.len());
    blocks
}

/// The lines of a block without its translator notes.
pub(crate) fn lines(block: &str) -> impl Iterator<Item = &str> {
    block.lines().filter(|l| !l.starts_with('#'))
}

/// The language for a request: `?lang=` if it names one we have, else the
/// first of `Accept-Language` (by weight) that we have, else English.
pub(crate) fn choose(query_lang: Option<&str>, accept_language: Option<&str>) -> &'static Texts {
    let have = |tag: &str| {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        all().iter().find(|t| t.lang.eq_ignore_ascii_case(primary))
    };
    if let Some(texts) = query_lang.and_then(have) {
        return texts;
    }
    let mut wanted: Vec<(f32, usize, &str)> = accept_language
        .unwrap_or_default()
        .split(',')
        .enumerate()
        .filter_map(|(i, item)| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (!tag.is_empty() && q > 0.0).then_some((q, i, tag))
        })
        .collect();
    // By weight, then in the order given.
    wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    wanted
        .iter()
        .find_map(|(_, _, tag)| have(tag))
        .unwrap_or(&all()[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_every_block_of_english() {
        let english = &all()[0];
        assert_eq!(english.lang, "en");
        for texts in all() {
            for name in english.blocks.keys() {
                assert!(
                    texts.blocks.contains_key(name),
                    "{}.txt lacks @{name}",
                    texts.lang
                );
            }
            for name in texts.blocks.keys() {
                assert!(
                    english.blocks.contains_key(name),
                    "{}.txt: @{name} is not in en.txt",
                    texts.lang
                );
            }
            assert!(!texts.get("title").is_empty());
        }
    }

    #[test]
    fn blocks_run_to_the_next_name_and_notes_are_left_out() {
        let blocks = parse("# note\n@a\none\n\ntwo\n@b\n# for translators\nthree\n");
        assert_eq!(blocks["a"], "one\n\ntwo");
        assert_eq!(lines(blocks["b"]).collect::<Vec<_>>(), ["three"]);
    }

    #[test]
    fn the_language_follows_the_browser() {
        let pick = |q: Option<&str>, a: Option<&str>| choose(q, a).lang;
        assert_eq!(pick(None, None), "en");
        assert_eq!(pick(None, Some("ja-JP,ja;q=0.9,en-US;q=0.8")), "ja");
        assert_eq!(pick(None, Some("de-DE, ru;q=0.7, en;q=0.3")), "ru");
        assert_eq!(pick(None, Some("en;q=0.5, ru")), "ru");
        assert_eq!(pick(None, Some("fr, de")), "en");
        assert_eq!(pick(None, Some("ru;q=0, ja;q=0.1")), "ja");
        assert_eq!(pick(None, Some("*")), "en");
        assert_eq!(pick(None, Some(";;,q=x")), "en");
        assert_eq!(pick(Some("ru"), Some("ja")), "ru");
        assert_eq!(pick(Some("xx"), Some("ja")), "ja");
    }
}
