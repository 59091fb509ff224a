//! A per-step breakdown of a run's start and end, for benchmarks: with `RINGFENCE_TIMING=1` in
//! the supervisor's environment, each step's end is marked and the marks are written to stderr
//! (the sandbox's setup steps by PID 1 just before the command starts, the supervisor's when
//! the run ends). Off by default: then a mark is one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
static MARKS: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());
static START: Mutex<Option<Instant>> = Mutex::new(None);
/// The last mark already written out: the next report's first step is timed from it.
static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Starts the clock when `RINGFENCE_TIMING` is set to anything but `0` or empty.
pub fn init() {
    let on = std::env::var_os("RINGFENCE_TIMING").is_some_and(|v| !v.is_empty() && v != "0");
    if !on {
        return;
    }
    if let Ok(mut s) = START.lock() {
        *s = Some(Instant::now());
    }
    ENABLED.store(true, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Marks the end of `step`.
pub fn mark(step: &'static str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    if let Ok(mut m) = MARKS.lock() {
        m.push((step, now));
    }
}

/// The marks as text, one line per step: time since the previous mark and since the start.
/// Clears them (PID 1 inherits the supervisor's marks up to the clone and prints only its own).
fn take_text(side: &str) -> Option<String> {
    if !enabled() {
        return None;
    }
    let start = START.lock().ok()?.as_ref().copied()?;
    let marks = std::mem::take(&mut *MARKS.lock().ok()?);
    let mut last = LAST.lock().ok()?;
    let mut prev = last.unwrap_or(start);
    let mut out = String::new();
    for (step, at) in marks {
        let prev_at = if at < prev { start } else { prev };
        out.push_str(&format!(
            "ringfence: timing: {side:<10} {step:<32} +{:7.2} ms  at {:7.2} ms\n",
            at.duration_since(prev_at).as_secs_f64() * 1000.0,
            at.duration_since(start).as_secs_f64() * 1000.0,
        ));
        prev = at;
    }
    *last = Some(prev);
    Some(out)
}

/// Forgets the marks made so far and restarts the step clock at `at` (PID 1, right after the
/// clone: its copy of the supervisor's marks is the supervisor's to print).
pub fn forget_before(step: &'static str) {
    if !enabled() {
        return;
    }
    if let Ok(mut m) = MARKS.lock() {
        m.clear();
        m.push((step, Instant::now()));
    }
    if let Ok(mut l) = LAST.lock() {
        *l = None;
    }
}

/// Writes the marks to stderr and clears them.
pub fn report(side: &str) {
    if let Some(text) = take_text(side) {
        let _ = crate::sys::write_all(&std::io::stderr(), text.as_bytes());
    }
}
