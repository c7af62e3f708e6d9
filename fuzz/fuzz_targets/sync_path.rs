//! `SyncPath`: any string either parses into a path that keeps every
//! promise (relative, no empty, `.` or `..` component, parses to itself,
//! parent + name gives it back) or is refused; nothing panics.
#![no_main]

use driftless_protocol::SyncPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for parsed in [SyncPath::parse(s), SyncPath::from_local(s)] {
        let Ok(p) = parsed else { continue };
        let text = p.as_str();
        assert!(!text.starts_with('/') && !text.ends_with('/'), "{text:?}");
        for c in p.components() {
            assert!(!c.is_empty() && c != "." && c != "..", "{text:?}");
            assert!(!c.contains('\0') && !c.contains('\\'), "{text:?}");
        }
        assert_eq!(SyncPath::parse(text).as_ref(), Ok(&p));
        if let Some(parent) = p.parent() {
            assert!(p.starts_with(&parent));
            assert_eq!(parent.join(p.file_name()).as_ref(), Ok(&p));
        }
        let _ = p.collision_key();
        if SyncPath::parse_portable(text).is_ok() {
            assert!(p.portability().is_none());
        }
    }
});
