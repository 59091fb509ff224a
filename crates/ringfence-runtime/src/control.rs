//! Controlling running sandboxes from outside: `ps`, `stop`, `pause` and `resume`, by the run's
//! name. A run is live while its record has not ended and its supervisor process exists. Each
//! returns the line to show the user.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::runs;
use ringfence_linux::cgroup;

fn live(name: &str) -> Result<Value> {
    let r = runs::load(name)?;
    if !r["status"].is_null() || !runs::is_live(name) {
        bail!("run {name} is not running");
    }
    Ok(r)
}

fn pid_of(r: &Value, key: &str) -> Result<libc::pid_t> {
    r[key]
        .as_i64()
        .map(|p| p as libc::pid_t)
        .with_context(|| format!("the run record has no {key} yet (the sandbox is starting)"))
}

pub fn ps() -> Result<String> {
    let mut out = format!("{:<32} {:>8} {:>8}  COMMAND\n", "RUN", "PID", "SECONDS");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for r in runs::all()? {
        let name = r["name"].as_str().unwrap_or("");
        if !r["status"].is_null() || !runs::is_live(name) {
            continue;
        }
        let argv: Vec<&str> = r["argv"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let cmd = argv.join(" ").escape_debug().to_string();
        out.push_str(&format!(
            "{:<32} {:>8} {:>8}  {}\n",
            name,
            r["supervisorPid"],
            now.saturating_sub(r["started"].as_u64().unwrap_or(now)),
            cmd.chars().take(60).collect::<String>()
        ));
    }
    Ok(out)
}

/// SIGTERM to the supervisor (which passes it to the command), SIGKILL after 5 seconds (which
/// ends the whole sandbox with it).
pub fn stop(name: &str) -> Result<String> {
    let r = live(name)?;
    let sup = pid_of(&r, "supervisorPid")?;
    let _ = ringfence_linux::process::signal(sup, libc::SIGTERM);
    // A paused sandbox could not act on the SIGTERM passed on to it: thaw it.
    if let Some(f) = freezer_of(sup, name) {
        let _ = cgroup::freeze(&f, &|| Vec::new(), false);
    }
    for pid in sandbox_processes(sup).into_iter().skip(1) {
        let _ = ringfence_linux::process::signal(pid, libc::SIGCONT);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if !runs::is_live(name) {
            return Ok(format!("{name}: stopped"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = ringfence_linux::process::signal(sup, libc::SIGKILL);
    Ok(format!(
        "{name}: killed (it did not end within 5 seconds of SIGTERM)"
    ))
}

/// The sandbox's processes: its PID 1 and every descendant (orphans are re-parented to PID 1
/// inside the sandbox, so nothing escapes the walk). Parent links come from /proc/<pid>/stat,
/// which is readable even for PID 1, which is not dumpable.
fn sandbox_processes(pid1: i32) -> Vec<i32> {
    let mut parent = std::collections::HashMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The fields after the command name, which may contain spaces and parentheses.
            let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
            {
                parent.insert(pid, ppid);
            }
        }
    }
    let mut found = vec![pid1];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, &pp)| pp == p).map(|(&c, _)| c));
        i += 1;
    }
    found
}

/// The run's freezer group, when this machine has a freezer this user may use and (for v1)
/// the group exists or can be made.
fn freezer_of(supervisor: libc::pid_t, name: &str) -> Option<cgroup::Freezer> {
    let f = cgroup::freezer(supervisor, name)?;
    match &f {
        cgroup::Freezer::V2(d) if !d.exists() => None,
        _ => Some(f),
    }
}

/// `pause`: the freezer cgroup where there is one (the processes cannot notice or undo it),
/// else SIGSTOP to every process. `resume` undoes either.
pub fn pause(name: &str, paused: bool) -> Result<String> {
    let r = live(name)?;
    let supervisor = pid_of(&r, "supervisorPid")?;
    let Some(pid1) = sandbox_processes(supervisor).get(1).copied() else {
        bail!("run {name} has no sandbox (it is starting or ending)");
    };
    if let Some(f) = freezer_of(supervisor, name) {
        let exists = match &f {
            cgroup::Freezer::V1(d) | cgroup::Freezer::V2(d) => d.exists(),
        };
        if paused || exists {
            match cgroup::freeze(&f, &|| sandbox_processes(pid1), paused) {
                Ok(n) if paused => {
                    return Ok(format!("{name}: paused ({n} processes, freezer cgroup)"));
                }
                Ok(_) => {}
                Err(e) if paused => {
                    eprintln!("ringfence: the freezer cgroup failed ({e}); stopping the processes with SIGSTOP instead");
                }
                Err(e) => eprintln!("ringfence: thawing the freezer cgroup failed: {e}"),
            }
        }
    }
    signal_all(name, if paused { libc::SIGSTOP } else { libc::SIGCONT })
}

/// Sends `sig` to every process of the sandbox (SIGSTOP to pause, SIGCONT to resume).
pub fn signal_all(name: &str, sig: libc::c_int) -> Result<String> {
    let r = live(name)?;
    let supervisor = pid_of(&r, "supervisorPid")?;
    // The supervisor has one child: the sandbox's PID 1.
    let Some(pid1) = sandbox_processes(supervisor).get(1).copied() else {
        bail!("run {name} has no sandbox (it is starting or ending)");
    };
    let mut seen = std::collections::HashSet::new();
    // Twice: a process forked while the first pass ran is caught by the second.
    for _ in 0..2 {
        for pid in sandbox_processes(pid1) {
            if ringfence_linux::process::signal(pid, sig).is_ok() {
                seen.insert(pid);
            }
        }
    }
    let what = if sig == libc::SIGSTOP {
        "paused"
    } else {
        "resumed"
    };
    Ok(format!("{name}: {what} ({} processes)", seen.len()))
}
