//! Names people read: user names, device names, folder names. Beyond a
//! length, a name may not hold what makes one name look like another or
//! hides what it says: control characters, Unicode format characters
//! (bidirectional overrides such as U+202E that reverse the text after
//! them, zero-width spaces and joiners, U+FEFF), line separators, or
//! leading and trailing white space.

/// Unicode's format characters (general category Cf), as ranges.
const FORMAT: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT.iter().any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Checks the name `what` (for the message): 1 to `max` bytes, no control
/// or format characters or line separators, no white space at either end.
pub fn check(what: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() || name.len() > max {
        return Err(format!("{what} must be 1 to {max} bytes"));
    }
    if name.trim() != name {
        return Err(format!("{what} may not begin or end with white space"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(format!(
            "{what} may not contain U+{:04X} (a control, format or line-separator character)",
            u32::from(c)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn names_that_hide_or_reverse_text_are_refused() {
        assert!(check("name", "Alice's laptop", 100).is_ok());
        assert!(check("name", "Ünïcødé 名前", 100).is_ok());
        for bad in [
            "",
            " alice",
            "alice ",
            "ali\u{202E}ecila",
            "\u{FEFF}alice",
            "al\u{200B}ice",
            "a\nb",
            "a\u{2028}b",
            "a\u{0}b",
            "tag\u{E0041}",
        ] {
            assert!(check("name", bad, 100).is_err(), "{bad:?}");
        }
        assert!(check("name", &"x".repeat(101), 100).is_err());
    }
}
