//! Progress bars for transfers: on a terminal only, never in `--json` runs
//! or when standard error is a file or a pipe.

use std::io::IsTerminal;

pub use indicatif::ProgressBar as Progress;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// A byte-count bar for `len` bytes labelled `what`; hidden unless asked
/// for and standard error is a terminal.
pub fn bytes_bar(len: u64, what: &str, show: bool) -> Progress {
    if !show || !std::io::stderr().is_terminal() {
        return Progress::hidden();
    }
    let bar = Progress::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{msg:20!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}
