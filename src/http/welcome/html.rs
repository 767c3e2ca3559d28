//! The page's HTML: the texts' light markup made safe (everything is
//! escaped; only bold, code and lists come out as tags), and the QR code as
//! inline SVG.

use std::fmt::Write;

/// `text` with `&<>"'` escaped.
pub(crate) fn escape(text: &str) -> String {
    htmlescape::encode_minimal(text)
}

/// One line of a text: `**bold**`, `` `code` `` and `{name}` (from `vars`,
/// escaped); everything else escaped. An unknown `{name}` stays as written.
pub(crate) fn inline(text: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("**") {
            out.push_str(if bold { "</b>" } else { "<b>" });
            bold = !bold;
            rest = after;
            continue;
        }
        if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
            continue;
        }
        if c == '{' {
            if let Some((name, value)) = vars.iter().find(|(name, _)| {
                rest[1..].starts_with(name) && rest[1 + name.len()..].starts_with('}')
            }) {
                out.push_str(&escape(value));
                rest = &rest[name.len() + 2..];
                continue;
            }
        }
        out.push_str(&escape(&rest[..c.len_utf8()]));
        rest = &rest[c.len_utf8()..];
    }
    // A translation that leaves a mark open still closes its tags.
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</b>");
    }
    out
}

/// A block: paragraphs apart by blank lines, and lists of `- ` items
/// (`<ol>` when `numbered`), the lines of each joined.
pub(crate) fn block(text: &str, vars: &[(&str, &str)], numbered: bool) -> String {
    let (open, close) = if numbered {
        ("<ol>", "</ol>")
    } else {
        ("<ul>", "</ul>")
    };
    let mut out = String::new();
    // What is being gathered: a paragraph's or an item's lines.
    let mut gathered: Vec<&str> = Vec::new();
    let mut in_item = false;
    let mut in_list = false;
    let flush = |out: &mut String, gathered: &mut Vec<&str>, in_item: bool| {
        if gathered.is_empty() {
            return;
        }
        let joined = inline(&gathered.join(" "), vars);
        let tag = if in_item { "li" } else { "p" };
        let _ = write!(out, "<{tag}>{joined}</{tag}>");
        gathered.clear();
    };
    for line in super::text::lines(text) {
        let line = line.trim();
        if let Some(item) = line.strip_prefix("- ") {
            flush(&mut out, &mut gathered, in_item);
            if !in_list {
                out.push_str(open);
                in_list = true;
            }
            in_item = true;
            gathered.push(item);
        } else if line.is_empty() {
            flush(&mut out, &mut gathered, in_item);
            if in_list {
                out.push_str(close);
                in_list = false;
            }
            in_item = false;
        } else {
            gathered.push(line);
        }
    }
    flush(&mut out, &mut gathered, in_item);
    if in_list {
        out.push_str(close);
    }
    out
}

/// `text` as a QR code in SVG (dark on white, with its quiet zone), or
/// nothing if it is too long for one.
pub(crate) fn qr_svg(text: &str, label: &str) -> String {
    use qrcodegen::{QrCode, QrCodeEcc};
    let Ok(qr) = QrCode::encode_text(text, QrCodeEcc::Medium) else {
        return String::new();
    };
    let size = qr.size();
    let mut path = String::new();
    for y in 0..size {
        for x in 0..size {
            if qr.get_module(x, y) {
                let _ = write!(path, "M{x},{y}h1v1h-1z");
            }
        }
    }
    let full = size + 8;
    format!(
        "<svg class=qr role=img aria-label=\"{}\" viewBox=\"-4 -4 {full} {full}\" \
         shape-rendering=crispEdges><rect x=-4 y=-4 width={full} height={full} fill=#fff />\
         <path d=\"{path}\" fill=#000 /></svg>",
        escape(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_the_only_html_that_comes_out() {
        let vars = [("address", "http://x/<y>")];
        assert_eq!(
            inline("Open **Tools > Prefs** at `{address}`, {other}", &vars),
            "Open <b>Tools &gt; Prefs</b> at <code>http://x/&lt;y&gt;</code>, {other}"
        );
        assert_eq!(
            inline("<script>'\"&", &[]),
            "&lt;script&gt;&#x27;&quot;&amp;"
        );
        assert_eq!(inline("**open", &[]), "<b>open</b>");
        assert_eq!(inline("日本語の **設定**", &[]), "日本語の <b>設定</b>");
    }

    #[test]
    fn blocks_make_paragraphs_and_lists() {
        let text = "One\nline.\n\n- first\n  goes on\n- second\n\nAfter.";
        assert_eq!(
            block(text, &[], true),
            "<p>One line.</p><ol><li>first goes on</li><li>second</li></ol><p>After.</p>"
        );
        assert_eq!(block("- a", &[], false), "<ul><li>a</li></ul>");
    }

    #[test]
    fn the_qr_code_is_an_svg_of_dark_modules() {
        let svg = qr_svg("http://leitner.local:8080/", "a \"label\"");
        assert!(svg.starts_with("<svg class=qr role=img aria-label=\"a &quot;label&quot;\""));
        assert!(svg.contains("M0,0h1v1h-1z"), "the finder pattern's corner");
        assert!(qr_svg(&"x".repeat(5000), "").is_empty());
    }
}
