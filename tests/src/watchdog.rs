//! A hung test fails loudly and by name, instead of holding CI until its
//! overall time limit with no word of which test or why.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long one test may run: `DRIFTLESS_TEST_DEADLINE_SECS`, or 15
/// minutes (the slowest test, the 200-seed model test, takes about 3).
fn limit() -> Duration {
    let secs = std::env::var("DRIFTLESS_TEST_DEADLINE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// Held by a test's fixtures (its database, its broker): if the test is
/// still running when the limit passes, the whole test binary is aborted
/// with the test's name, so the run fails there and the other binaries
/// still run. Dropping it (the test ended) disarms it.
pub struct Watchdog {
    done: Arc<(Mutex<bool>, Condvar)>,
}

impl Watchdog {
    /// Arms a watchdog for the test running on this thread.
    pub fn arm() -> Self {
        let name = std::thread::current()
            .name()
            .unwrap_or("an unnamed test")
            .to_owned();
        let limit = limit();
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watched = done.clone();
        std::thread::Builder::new()
            .name(format!("watchdog {name}"))
            .spawn(move || {
                let (flag, ended) = &*watched;
                let guard = flag.lock().unwrap_or_else(|e| e.into_inner());
                let (guard, _) = ended
                    .wait_timeout_while(guard, limit, |done| !*done)
                    .unwrap_or_else(|e| e.into_inner());
                if !*guard {
                    eprintln!(
                        "FATAL: test `{name}` is still running after {limit:?}: it hangs. \
                         Aborting this test binary so the run fails here, by name."
                    );
                    std::process::abort();
                }
            })
            .expect("cannot start a watchdog thread");
        Self { done }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (flag, ended) = &*self.done;
        *flag.lock().unwrap_or_else(|e| e.into_inner()) = true;
        ended.notify_all();
    }
}
