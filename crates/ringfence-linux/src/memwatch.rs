//! The whole-sandbox memory limit as the supervisor sees it. With a memory cgroup the kernel
//! enforces the limit and the supervisor only reads whether it killed a process for memory;
//! without one (an unprivileged user with no delegated cgroup) the supervisor itself sums the
//! memory of the sandbox's processes and ends the sandbox when the sum passes the limit.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cgroup::MemoryGroup;

use std::time::Duration;

/// How often the supervisor looks at most, in milliseconds.
pub const INTERVAL_MS: u64 = 50;

/// How often it looks at least, in milliseconds.
pub const MAX_INTERVAL_MS: u64 = 1000;

/// How fast a sandbox is assumed to grow at most, per CPU: faulting in fresh pages runs at a
/// few GB/s per core, more with transparent huge pages. A sandbox far below its limit cannot
/// reach it before the next look, so it is looked at less often (reading every process's
/// memory costs the supervisor time); near the limit it is looked at every `INTERVAL_MS`.
const GROWTH_PER_CPU: u64 = 8 << 30;

/// What ends a sandbox for memory.
#[derive(Debug)]
pub enum MemoryWatch {
    /// The kernel enforces the limit in this group; a process it killed for memory (the
    /// group's own limit or one of a parent group) ends the sandbox.
    Cgroup(MemoryGroup),
    /// The supervisor sums the sandbox's memory, every `INTERVAL_MS` near the limit; `sysv`
    /// is the SysV shared memory PID 1 last reported.
    Resident { limit: u64, sysv: AtomicU64 },
}

impl MemoryWatch {
    /// The supervisor's own sum, for a sandbox without a memory cgroup.
    pub fn resident(limit: u64) -> MemoryWatch {
        MemoryWatch::Resident {
            limit,
            sysv: AtomicU64::new(0),
        }
    }

    /// PID 1's report of the sandbox's SysV shared memory.
    pub fn set_sysv(&self, bytes: u64) {
        if let MemoryWatch::Resident { sysv, .. } = self {
            sysv.store(bytes, Ordering::Relaxed);
        }
    }

    /// Whether the memory limit was reached, with the memory the sandbox used then, in bytes.
    /// `pid1` is the sandbox's PID 1 as the host sees it.
    pub fn reached(&self, pid1: libc::pid_t) -> Option<u64> {
        self.look(pid1).0
    }

    /// As `reached`, and how long until the next look.
    pub fn look(&self, pid1: libc::pid_t) -> (Option<u64>, Duration) {
        let min = Duration::from_millis(INTERVAL_MS);
        match self {
            MemoryWatch::Cgroup(g) => ((oom_kills(g) > 0).then(|| cgroup_peak(g)), min),
            MemoryWatch::Resident { limit, sysv } => {
                let pids = descendants(pid1);
                // Resident anonymous and shared memory is cheap to read (counters); it counts
                // pages shared after fork once per process, so a sum above the limit is checked
                // again with proportional set sizes (each shared page counted once overall)
                // before the sandbox is ended.
                // Attached segments count twice (here and in the attachers' resident sets),
                // which errs on the side of the host.
                let held = held_memfds(&pids) + sysv.load(Ordering::Relaxed);
                let rss: u64 = held + pids.iter().map(|&p| rss_of(p)).sum::<u64>();
                if rss <= *limit {
                    return (None, next_look(*limit, rss));
                }
                let pss: u64 = held
                    + pids
                        .iter()
                        .map(|&p| pss_of(p).unwrap_or(rss_of(p)))
                        .sum::<u64>();
                if pss > *limit {
                    (Some(pss), min)
                } else {
                    (None, next_look(*limit, pss))
                }
            }
        }
    }
}

/// How long a sandbox using `used` bytes needs at least to pass `limit`, within the bounds.
fn next_look(limit: u64, used: u64) -> Duration {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    next_look_with(limit, used, cpus)
}

fn next_look_with(limit: u64, used: u64, cpus: u64) -> Duration {
    let rate = GROWTH_PER_CPU.saturating_mul(cpus);
    let ms = limit.saturating_sub(used).saturating_mul(1000) / rate.max(1);
    Duration::from_millis(ms.clamp(INTERVAL_MS, MAX_INTERVAL_MS))
}

/// How many processes of the group the kernel killed for memory.
fn oom_kills(g: &MemoryGroup) -> u64 {
    let (file, key) = if g.v2 {
        ("memory.events", "oom_kill")
    } else {
        ("memory.oom_control", "oom_kill")
    };
    field(
        &fs::read_to_string(g.dir.join(file)).unwrap_or_default(),
        key,
    )
    .unwrap_or(0)
}

/// The most memory the group used, in bytes.
fn cgroup_peak(g: &MemoryGroup) -> u64 {
    let read = |f: &str| -> Option<u64> {
        fs::read_to_string(g.dir.join(f))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    };
    if g.v2 {
        read("memory.peak").or_else(|| read("memory.current"))
    } else {
        read("memory.max_usage_in_bytes")
    }
    .unwrap_or(0)
}

/// The value of `key` in "key value" lines.
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == key.trim_end_matches(':'))
            .then(|| w.next()?.parse().ok())
            .flatten()
    })
}

/// The value in KiB of a `Key:   123 kB` line, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
        .map(|k| k * 1024)
}

/// Resident anonymous and shared-memory pages of one process (file pages are the page cache's
/// and can be dropped), in bytes; 0 when it is gone.
fn rss_of(pid: libc::pid_t) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kib_field(&text, "RssAnon").unwrap_or(0) + kib_field(&text, "RssShmem").unwrap_or(0)
}

/// The proportional share of anonymous and shared-memory pages of one process, in bytes.
fn pss_of(pid: libc::pid_t) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(kib_field(&text, "Pss_Anon")? + kib_field(&text, "Pss_Shmem").unwrap_or(0))
}

/// Memory in memfds that the sandbox's processes hold open, in bytes (each file once): pages
/// written to a memfd are in no resident set unless they are mapped. Pages of a held memfd
/// that are also mapped count twice (here and as shared memory of the mapping), which errs on
/// the side of the host.
fn held_memfds(pids: &[libc::pid_t]) -> u64 {
    use std::collections::HashMap;
    use std::os::unix::fs::MetadataExt;
    let mut held: HashMap<(u64, u64), u64> = HashMap::new();
    for &pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = fd.path();
            let is_memfd = fs::read_link(&link)
                .is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"));
            if !is_memfd {
                continue;
            }
            if let Ok(m) = fs::metadata(&link) {
                held.insert((m.dev(), m.ino()), m.blocks() * 512);
            }
        }
    }
    held.values().sum()
}

/// `pid1` and every process below it. Orphans of the sandbox are re-parented to its PID 1,
/// so the tree holds every process of the sandbox; a process started while the tree is read
/// is seen at the next look.
pub fn descendants(pid1: libc::pid_t) -> Vec<libc::pid_t> {
    let mut found = vec![pid1];
    let mut i = 0;
    while i < found.len() && found.len() < 1 << 16 {
        let p = found[i];
        i += 1;
        // Children are listed by the thread that started them.
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let file = Path::new("/proc")
                .join(p.to_string())
                .join("task")
                .join(t.file_name())
                .join("children");
            let text = fs::read_to_string(file).unwrap_or_default();
            found.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<libc::pid_t>().ok()),
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn looks_more_often_near_the_limit() {
        let g = 1u64 << 30;
        assert_eq!(next_look(g, g), Duration::from_millis(INTERVAL_MS));
        assert_eq!(next_look(g, 2 * g), Duration::from_millis(INTERVAL_MS));
        assert_eq!(next_look(64 * g, 0), Duration::from_millis(MAX_INTERVAL_MS));
        assert!(next_look(g, g / 2) <= Duration::from_millis(250));
        // 12 GiB to go at 8 GiB/s on one CPU: 1.5 s, so the most; on four CPUs, 375 ms.
        assert_eq!(
            next_look_with(16 * g, 4 * g, 1),
            Duration::from_millis(MAX_INTERVAL_MS)
        );
        assert_eq!(next_look_with(16 * g, 4 * g, 4), Duration::from_millis(375));
    }

    #[test]
    fn reads_fields() {
        let status = "Name:\tx\nRssAnon:\t  1024 kB\nRssFile:\t 50 kB\nRssShmem:\t 4 kB\n";
        assert_eq!(kib_field(status, "RssAnon"), Some(1 << 20));
        assert_eq!(kib_field(status, "RssShmem"), Some(4096));
        assert_eq!(kib_field(status, "Rss"), None);
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(field(oom, "oom_kill"), Some(2));
        assert_eq!(field("oom 1\noom_kill 0\n", "oom_kill"), Some(0));
    }

    #[test]
    fn sees_this_process_and_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let tree = descendants(me);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], me);
        assert!(tree.contains(&(child.id() as libc::pid_t)), "{tree:?}");
        assert!(rss_of(me) > 0);
        assert!(pss_of(me).is_some_and(|p| p > 0));
    }
}
