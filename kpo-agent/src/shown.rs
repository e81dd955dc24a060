//! Text that other users choose, shown to the operator: process names and command lines, and
//! device names (any user may name a device in a network namespace of their own). A control
//! character in it (an escape sequence) would steer the operator's terminal in `kpo explain`
//! or a log, and a format character (a bidi override, a zero-width space) would make it read as
//! something it is not, in a terminal, a webhook's chat message or a dashboard. Such characters
//! are shown as `\u{XXXX}`, so that what is there can still be seen.
use std::borrow::Cow;

/// An operator's words on one line: format characters removed, control characters (a line
/// break, a tab) and runs of white space made one space. A reason given to `kpo reject` reaches
/// the LLM's prompt and `kpo explain`, where a line break started what read as a new entry
/// (s52 storyAF AF-2).
pub fn one_line(text: &str) -> String {
    plain(text).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` with format characters removed and control characters made spaces: what the reader
/// sees is what it holds (the LLM's words, a server's error, an operator's reason).
pub fn plain(text: &str) -> String {
    (text.chars())
        .filter(|c| !is_format(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` with each control and format character written as `\u{XXXX}` (hexadecimal).
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) {
            shown.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            shown.push(c);
        }
    }
    Cow::Owned(shown)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// Unicode general category Cf (format), as of Unicode 15.1: invisible characters that steer how
/// text around them is shown (bidi embeddings, overrides and isolates, zero-width joiners and
/// spaces, the BOM, tag characters). Listed here rather than taken from a crate: no dependency
/// of ours has general categories, and the set changes rarely (a new one here would be kept,
/// which is what happened before this list). Removed rather than made spaces: a zero-width space
/// inside a number or a word was never a word break the reader could see.
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_format_characters_are_shown_escaped() {
        assert!(matches!(escaped("nginx: worker"), Cow::Borrowed(_)));
        assert_eq!(escaped("a\u{1b}[2Jb"), "a\\u{001b}[2Jb");
        assert_eq!(escaped("srv\u{202e}gpj.exe"), "srv\\u{202e}gpj.exe");
        assert_eq!(
            escaped("x\u{200b}y\u{7f}\t"),
            "x\\u{200b}y\\u{007f}\\u{0009}"
        );
        assert_eq!(escaped("café\u{fffd}"), "café\u{fffd}");
    }
}
