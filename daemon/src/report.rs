//! `driftless status` as people read it.

pub(crate) fn print_status(st: &driftless_daemon::status::Status) {
    if let Some(p) = &st.folder_problem {
        println!("{}: NOT SYNCING: {p}", st.folder);
    } else if st.in_sync() {
        println!("{}: {} files in sync", st.folder, st.synced_files);
    } else {
        println!(
            "{}: {} files synced; not in sync ({} pending, {} failing)",
            st.folder,
            st.synced_files,
            st.pending.len(),
            st.failed.len()
        );
    }
    match st.last_pass_ms {
        Some(ms) => println!(
            "last pass {} s ago",
            (driftless_daemon::now_ms() - ms) / 1000
        ),
        None => println!("never synced"),
    }
    if let Some(e) = &st.last_error {
        println!("last pass failed: {e}");
    }
    if st.deletes_held > 0 {
        println!(
            "{} deletions held back (more than the brake allows in one pass): check the folder, then run `driftless sync --confirm-deletes`",
            st.deletes_held
        );
    }
    for e in &st.pending {
        println!("pending  {:<9}{}", e.why, e.path);
    }
    for e in &st.failed {
        println!("failed   {}: {}", e.path, e.why);
    }
    if st.uploads_in_flight > 0 {
        println!(
            "{} upload session(s) in flight (resumed by the next pass)",
            st.uploads_in_flight
        );
    }
    for (copy, of, _) in &st.conflicts {
        println!("conflict {copy} (from {of})");
    }
    for e in &st.skipped {
        println!("skipped  {}: {}", e.path, e.why);
    }
    if st.ignored > 0 {
        println!(
            "ignored  {} synced files match this device's .driftignore (neither sent nor deleted)",
            st.ignored
        );
    }
}
