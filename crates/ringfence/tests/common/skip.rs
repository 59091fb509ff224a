//! Skipped tests, counted. A test that cannot run says why through one of two calls:
//! `skip` when something the machine could have is missing (a tool, srt): under
//! `RINGFENCE_TEST_STRICT=1` (scripts/test, which installs every prerequisite) that fails the test;
//! `not_here` when the case has no meaning on this machine or for this caller (another
//! architecture, a root-only step run unprivileged): never a failure. Both print a line and, when
//! `RINGFENCE_TEST_SKIPS` names a directory, add one line to a file there, which scripts/test
//! counts for its summary. Also compiled into other crates' tests (`#[path]`), so it needs only std.
#![allow(dead_code)]

use std::io::Write;

/// Whether a skip must fail the test (`RINGFENCE_TEST_STRICT=1`).
pub fn strict() -> bool {
    std::env::var_os("RINGFENCE_TEST_STRICT").is_some_and(|v| v == "1")
}

/// A missing prerequisite: a visible, counted skip, or a failure in strict mode.
pub fn skip(reason: &str) {
    record("skip", reason);
    if strict() {
        panic!("SKIPPED under RINGFENCE_TEST_STRICT=1: {reason} (scripts/test installs every prerequisite)");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A case that cannot exist here (architecture, kernel entry, caller's uid): a visible, counted
/// skip that strict mode allows, because the other pass of scripts/test (root or unprivileged) or
/// another machine runs it.
pub fn not_here(reason: &str) {
    eprintln!("NOT APPLICABLE HERE: {reason}");
    record("n/a", reason);
}

fn record(kind: &str, reason: &str) {
    let Some(dir) = std::env::var_os("RINGFENCE_TEST_SKIPS").filter(|d| !d.is_empty()) else {
        return;
    };
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    // libtest names each test's thread after the test.
    let test = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string();
    // The executable's name carries cargo's hash; drop it so the summary reads like the source.
    let binary = match exe.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => exe,
    };
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let status = std::fs::read_to_string("/proc/self/status").ok()?;
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            Some(format!("uid {}", uid.split_whitespace().next()?))
        })
        .unwrap_or_default();
    let line = format!(
        "{kind}\t{binary}::{test}\t{user}\t{}\n",
        reason.replace(['\t', '\n'], " ")
    );
    let file = std::path::Path::new(&dir).join(format!("skips-{}", std::process::id()));
    // One write of one line in append mode: lines from parallel tests do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot record the skip in {}: {e}", file.display());
    }
}
