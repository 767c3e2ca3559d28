//! Which media file names the server stores. Checked before anything touches
//! the disk: a name is the last path component of a file in the user's flat
//! media folder, so it must not be able to mean anything else.
//!
//! Clients normalise names much further before uploading (reserved Windows
//! names, forbidden punctuation, 120 bytes); the server accepts what older
//! clients could produce, as long as it is safe on disk and exactly one
//! spelling of itself.

use unicode_normalization::is_nfc;

/// Longest name in bytes: what Linux file systems allow in one component.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a name is refused; the text goes into the error the client gets.
#[derive(Debug, PartialEq, Eq)]
pub enum BadName {
    Empty,
    TooLong(usize),
    NotNormalized,
    Separator,
    Dots,
    Control,
}

impl std::fmt::Display for BadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadName::Empty => write!(f, "is empty"),
            BadName::TooLong(n) => write!(f, "is {n} bytes long (at most {MAX_NAME_BYTES})"),
            BadName::NotNormalized => write!(f, "is not in Unicode normal form C"),
            BadName::Separator => write!(f, "contains a path separator"),
            BadName::Dots => write!(f, "names a folder ('.' or '..')"),
            BadName::Control => write!(f, "contains a control character"),
        }
    }
}

/// Accepts `name` as a file name in the media folder, or says why not.
pub fn check(name: &str) -> Result<(), BadName> {
    if name.is_empty() {
        return Err(BadName::Empty);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(BadName::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Err(BadName::Dots);
    }
    // Backslash too: the folder may be copied to, or served from, Windows.
    if name.contains(['/', '\\']) {
        return Err(BadName::Separator);
    }
    // NUL cannot be in a path at all; the other C0 controls and DEL are
    // stripped by every client, so only a forged request carries them.
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err(BadName::Control);
    }
    // Two spellings of one name would be two files to the folder and one to
    // the clients, which compare names after normalising.
    if !is_nfc(name) {
        return Err(BadName::NotNormalized);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_pass() {
        for name in [
            "a.jpg",
            "café.png",
            "with space.mp3",
            "日本語の音声.ogg",
            "CON.jpg",
            ".hidden",
            "..double.dots..",
            "paste-6ef6f8afebed91316e20a3dd00bbb6fb32e44edb.png",
            &"x".repeat(255),
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_that_could_leave_the_folder_are_refused() {
        assert_eq!(check(""), Err(BadName::Empty));
        assert_eq!(check("."), Err(BadName::Dots));
        assert_eq!(check(".."), Err(BadName::Dots));
        assert_eq!(check("../etc/passwd"), Err(BadName::Separator));
        assert_eq!(check("a/b.jpg"), Err(BadName::Separator));
        assert_eq!(check("/abs.jpg"), Err(BadName::Separator));
        assert_eq!(check("..\\win.jpg"), Err(BadName::Separator));
        assert_eq!(check("nul\0.jpg"), Err(BadName::Control));
        assert_eq!(check("line\nbreak.jpg"), Err(BadName::Control));
    }

    #[test]
    fn long_and_unnormalised_names_are_refused() {
        assert_eq!(check(&"x".repeat(256)), Err(BadName::TooLong(256)));
        // 128 two-byte characters: 256 bytes.
        assert_eq!(check(&"é".repeat(128)), Err(BadName::TooLong(256)));
        // "e" followed by a combining acute accent: NFD.
        assert_eq!(check("cafe\u{301}.png"), Err(BadName::NotNormalized));
    }
}
