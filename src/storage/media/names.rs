//! Which media file names the server stores. Checked before anything touches
//! the disk: a name is the last path component of a file in the user's flat
//! media folder, so it must not be able to mean anything else.
//!
//! The rule: a name a current client could send. Clients never upload a
//! name their own normalisation would change (they strip `[]<>:"/?*^\|` and
//! control characters, append `_` to Windows device names and to names
//! ending in a space or dot), so refusing those costs no real client
//! anything, and keeps the folder copyable to any file system. One
//! exception: clients cut names to 120 bytes, but older ones did not, so the
//! server allows what one path component may hold, 255 bytes.

use unicode_normalization::is_nfc;

/// Longest name in bytes: what Linux file systems allow in one component.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Why a name is refused; the text goes into the error the client gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadName {
    Empty,
    TooLong(usize),
    NotNormalized,
    Separator,
    Dots,
    Control,
    Reserved,
    Punctuation(char),
    Trailing,
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
            BadName::Reserved => write!(f, "is a reserved device name on Windows"),
            BadName::Punctuation(c) => write!(f, "contains {c:?}, which clients never send"),
            BadName::Trailing => write!(f, "ends in a space or a dot"),
        }
    }
}

/// Accepts `name` as a file name in the media folder, or says why not.
pub(crate) fn check(name: &str) -> Result<(), BadName> {
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
    if let Some(c) = name.chars().find(|c| "[]<>:\"?*^|".contains(*c)) {
        return Err(BadName::Punctuation(c));
    }
    if name.ends_with([' ', '.']) {
        return Err(BadName::Trailing);
    }
    if is_device_name(name) {
        return Err(BadName::Reserved);
    }
    Ok(())
}

/// `CON`, `PRN`, `AUX`, `NUL`, `COM1`-`COM9`, `LPT1`-`LPT9`, in any case,
/// alone or before a dot: names Windows keeps for devices.
fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    match stem.as_str() {
        "CON" | "PRN" | "AUX" | "NUL" => true,
        _ => {
            let b = stem.as_bytes();
            b.len() == 4
                && (stem.starts_with("COM") || stem.starts_with("LPT"))
                && (b'1'..=b'9').contains(&b[3])
        }
    }
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
            "CONSOLE.jpg",
            "com10.txt",
            "a.con",
            ".hidden",
            "..double.dots..txt",
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
    fn names_clients_would_never_send_are_refused() {
        assert_eq!(check("CON"), Err(BadName::Reserved));
        assert_eq!(check("con.jpg"), Err(BadName::Reserved));
        assert_eq!(check("Lpt9.tar.gz"), Err(BadName::Reserved));
        assert_eq!(check("com1"), Err(BadName::Reserved));
        assert_eq!(check("what?.jpg"), Err(BadName::Punctuation('?')));
        assert_eq!(check("a:b.jpg"), Err(BadName::Punctuation(':')));
        assert_eq!(check("[sound].mp3"), Err(BadName::Punctuation('[')));
        assert_eq!(check("trailing."), Err(BadName::Trailing));
        assert_eq!(check("trailing "), Err(BadName::Trailing));
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
