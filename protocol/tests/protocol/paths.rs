//! Path validation: a table of bad names with the code each must get, names
//! that must pass, and properties of valid paths.

use driftless_protocol::{ErrorCode, SyncPath};
use proptest::prelude::*;

/// (input, code from `SyncPath::parse`).
fn hard_errors() -> Vec<(String, ErrorCode)> {
    use ErrorCode::*;
    let mut t: Vec<(String, ErrorCode)> = [
        ("", PathEmpty),
        ("/", PathAbsolute),
        ("/etc/passwd", PathAbsolute),
        ("/a", PathAbsolute),
        ("//server/share", PathAbsolute),
        ("\\", PathAbsolute),
        ("\\\\server\\share\\x", PathAbsolute),
        ("\\Windows\\System32", PathAbsolute),
        ("C:", PathAbsolute),
        ("C:\\Windows", PathAbsolute),
        ("c:/x", PathAbsolute),
        ("Z:foo", PathAbsolute),
        ("d:", PathAbsolute),
        ("..", PathTraversal),
        (".", PathTraversal),
        ("../x", PathTraversal),
        ("../../etc/passwd", PathTraversal),
        ("a/..", PathTraversal),
        ("a/../b", PathTraversal),
        ("a/b/../../..", PathTraversal),
        ("./a", PathTraversal),
        ("a/./b", PathTraversal),
        ("a/.", PathTraversal),
        ("..\\x", PathTraversal),
        ("a\\..\\b", PathTraversal),
        ("a/..\\b", PathTraversal),
        ("x/..\\..\\y", PathTraversal),
        ("a//b", NameEmpty),
        ("a/", NameEmpty),
        ("a/b/", NameEmpty),
        ("a///b", NameEmpty),
        ("a\0b", NameControlChar),
        ("\0", NameControlChar),
        ("nul\0.txt", NameControlChar),
        ("\x01", NameControlChar),
        ("tab\tname", NameControlChar),
        ("new\nline", NameControlChar),
        ("carriage\rreturn", NameControlChar),
        ("esc\x1b[31mred", NameControlChar),
        ("bell\x07", NameControlChar),
        ("back\x08space", NameControlChar),
        ("unit\x1fsep", NameControlChar),
        ("del\x7f", NameControlChar),
        ("next\u{85}line", NameControlChar),
        ("c1\u{9f}", NameControlChar),
        ("c1\u{80}", NameControlChar),
        ("dir/fi\nle", NameControlChar),
        ("Icon\r", NameControlChar),
        ("a\\b", NameInvalidChar),
        ("trailing\\", NameInvalidChar),
        ("dir\\file.txt", NameInvalidChar),
        ("x/y\\z", NameInvalidChar),
        ("e\u{301}", PathNotNfc),
        ("cafe\u{301}.txt", PathNotNfc),
        ("A\u{30a}ngstrom", PathNotNfc),
        ("\u{212b}", PathNotNfc),
        ("\u{1100}\u{1161}", PathNotNfc),
        ("dir/n\u{303}o", PathNotNfc),
        ("\u{2126}hm", PathNotNfc),
        ("o\u{308}l", PathNotNfc),
        ("u\u{308}ber/file", PathNotNfc),
        (".driftless", NameReserved),
        (".DRIFTLESS", NameReserved),
        (".Driftless", NameReserved),
        ("a/.driftless/state.db", NameReserved),
        (".driftless-partial-1234", NameReserved),
        ("dir/.driftless-partial-x.tmp", NameReserved),
        (".DRIFTLESS-PARTIAL-abc", NameReserved),
    ]
    .into_iter()
    .map(|(s, c)| (s.to_owned(), c))
    .collect();
    t.push(("a".repeat(256), NameTooLong));
    t.push(("é".repeat(128), NameTooLong));
    t.push(("😀".repeat(64), NameTooLong));
    t.push((format!("dir/{}", "x".repeat(300)), NameTooLong));
    t.push((format!("{}.txt", "日".repeat(85)), NameTooLong));
    t.push((vec!["a".repeat(200); 21].join("/"), PathTooLong));
    t.push((vec!["b"; 2049].join("/"), PathTooLong));
    t.push(("c".repeat(5000), PathTooLong));
    t
}

/// (input, code from `SyncPath::parse_portable`; `parse` accepts them).
fn portability_errors() -> Vec<(&'static str, ErrorCode)> {
    use ErrorCode::*;
    vec![
        ("CON", NameWindowsReserved),
        ("con", NameWindowsReserved),
        ("Con.txt", NameWindowsReserved),
        ("PRN", NameWindowsReserved),
        ("prn.log", NameWindowsReserved),
        ("AUX", NameWindowsReserved),
        ("aux.c", NameWindowsReserved),
        ("NUL", NameWindowsReserved),
        ("nul.tar.gz", NameWindowsReserved),
        ("COM1", NameWindowsReserved),
        ("com9.txt", NameWindowsReserved),
        ("COM0", NameWindowsReserved),
        ("LPT1", NameWindowsReserved),
        ("lpt5.doc", NameWindowsReserved),
        ("COM¹", NameWindowsReserved),
        ("LPT³.txt", NameWindowsReserved),
        ("CONIN$", NameWindowsReserved),
        ("conout$", NameWindowsReserved),
        ("dir/CON/file", NameWindowsReserved),
        ("CON .txt", NameWindowsReserved),
        ("name.", NameTrailingDotSpace),
        ("name ", NameTrailingDotSpace),
        ("...", NameTrailingDotSpace),
        ("dir./file", NameTrailingDotSpace),
        ("a/b /c", NameTrailingDotSpace),
        ("report.pdf.", NameTrailingDotSpace),
        ("CON.", NameTrailingDotSpace),
        ("file<1>", NameWindowsChar),
        ("a>b", NameWindowsChar),
        ("time 10:30", NameWindowsChar),
        ("say \"hi\"", NameWindowsChar),
        ("a|b", NameWindowsChar),
        ("why?", NameWindowsChar),
        ("star*", NameWindowsChar),
        ("dir/a:b/c", NameWindowsChar),
    ]
}

#[test]
fn over_a_hundred_bad_names_get_their_codes() {
    let hard = hard_errors();
    let soft = portability_errors();
    assert!(
        hard.len() + soft.len() >= 100,
        "only {} cases",
        hard.len() + soft.len()
    );
    for (input, code) in &hard {
        let err = SyncPath::parse(input).expect_err(input);
        assert_eq!(err.code(), *code, "{input:?}: {err}");
        // Strict parsing refuses them with the same code.
        assert_eq!(
            SyncPath::parse_portable(input).expect_err(input).code(),
            *code
        );
    }
    for (input, code) in &soft {
        let path = SyncPath::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(
            path.portability().map(|p| p.code()),
            Some(*code),
            "{input:?}"
        );
        assert_eq!(
            SyncPath::parse_portable(input).expect_err(input).code(),
            *code,
            "{input:?}"
        );
    }
}

#[test]
fn good_names_pass_everywhere() {
    for input in [
        "a",
        "a/b/c.txt",
        "CONSOLE",
        "con2",
        "COM10",
        "LPT",
        "auxiliary.c",
        ".gitignore",
        ".hidden/.config",
        "..hidden",
        "a..b",
        "日本語/ファイル.txt",
        "emoji 😀.png",
        "Ünïcödé",
        "space in name.txt",
        ".driftlessness",
        "x/.driftless.bak",
        "a.b.c.d",
        &"a".repeat(255),
        &vec!["d".repeat(100); 40].join("/"),
    ] {
        let p = SyncPath::parse_portable(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(p.as_str(), input);
    }
}

#[test]
fn local_names_are_normalized() {
    let p = SyncPath::from_local("cafe\u{301}/re\u{301}sume\u{301}.txt").unwrap();
    assert_eq!(p.as_str(), "café/résumé.txt");
    assert_eq!(
        SyncPath::from_local("../e\u{301}").unwrap_err().code(),
        ErrorCode::PathTraversal
    );
}

fn name() -> impl Strategy<Value = String> {
    // Letters of several scripts, digits, punctuation that is valid everywhere.
    "[a-zA-Z0-9_\\-. ()\\[\\]{}@#%+=,;'!~éßØж日本😀]{1,40}"
        .prop_filter("not . or ..", |s| s != "." && s != "..")
        .prop_filter("not reserved", |s| {
            !s.to_lowercase().starts_with(".driftless")
        })
}

proptest! {
    #[test]
    fn valid_paths_round_trip(names in prop::collection::vec(name(), 1..8)) {
        let text = names.join("/");
        let nfc_text = SyncPath::from_local(&text).map(|p| p.as_str().to_owned());
        let p = SyncPath::from_local(&text)?;
        prop_assert_eq!(SyncPath::parse(p.as_str())?, p.clone());
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<SyncPath>(&json).unwrap(), p.clone());
        prop_assert_eq!(p.components().count(), names.len());
        prop_assert_eq!(Ok(p.as_str().to_owned()), nfc_text);
    }

    #[test]
    fn collision_key_ignores_case_and_normalization(names in prop::collection::vec(name(), 1..5)) {
        let text = names.join("/");
        let p = SyncPath::from_local(&text)?;
        let upper = SyncPath::from_local(&text.to_uppercase());
        let lower = SyncPath::from_local(&text.to_lowercase());
        if let (Ok(u), Ok(l)) = (upper, lower) {
            prop_assert_eq!(u.collision_key(), l.collision_key());
            prop_assert_eq!(p.collision_key(), l.collision_key());
        }
    }

    #[test]
    fn arbitrary_strings_never_panic_and_valid_ones_are_safe(s in "\\PC{0,64}|[./\\\\a-c]{0,12}") {
        if let Ok(p) = SyncPath::parse(&s) {
            prop_assert!(!p.as_str().starts_with('/'));
            prop_assert!(p.components().all(|c| !c.is_empty() && c != "." && c != ".."));
            prop_assert!(!p.as_str().contains('\\'));
        }
    }
}
