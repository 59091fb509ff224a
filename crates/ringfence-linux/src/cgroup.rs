//! Resource limits with cgroups, where this user may create groups: a `pids` limit that holds
//! whatever the uid (RLIMIT_NPROC does not bind host root), and a memory limit for the whole
//! sandbox rather than per process. Each run gets `ringfence/<run>` under the controller's
//! hierarchy; it is removed when the run ends, and leftovers of killed supervisors are removed
//! by the next run.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::probe;

/// Which limits the groups enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    pub pids: u64,
    pub memory: u64,
}

/// How limits are enforced on this machine for this user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v2 with the pids and memory controllers at this directory.
    V2(PathBuf),
    /// cgroup v1 hierarchies for pids and memory.
    V1 { pids: PathBuf, memory: PathBuf },
    /// Neither is usable: rlimits only.
    Rlimits,
}

impl Mechanism {
    pub fn describe(&self) -> String {
        match self {
            Mechanism::V2(p) => format!("cgroup v2 at {} (pids, memory)", p.display()),
            Mechanism::V1 { pids, memory } => {
                format!("cgroup v1 ({} and {})", pids.display(), memory.display())
            }
            Mechanism::Rlimits => "rlimits only (no cgroup this user may write to)".into(),
        }
    }
}

fn writable(p: &Path) -> bool {
    match crate::sys::cstring(p) {
        // SAFETY: access with a valid path string.
        Ok(c) => unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 },
        Err(_) => false,
    }
}

/// Finds what this user can use. cgroup v2 needs the pids and memory controllers enabled for
/// children of the writable directory; v1 needs writable pids and memory hierarchies.
pub fn detect() -> Mechanism {
    let mounts = probe::cgroups();
    for m in mounts.iter().filter(|m| m.version == 2) {
        let base = PathBuf::from(&m.path);
        let sub = fs::read_to_string(base.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| sub.split_whitespace().any(|x| x == c);
        if has("pids") && has("memory") && writable(&base) {
            return Mechanism::V2(base);
        }
    }
    let find = |ctl: &str| {
        mounts
            .iter()
            .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl) && m.writable)
            .map(|m| PathBuf::from(&m.path))
    };
    match (find("pids"), find("memory")) {
        (Some(pids), Some(memory)) => Mechanism::V1 { pids, memory },
        _ => Mechanism::Rlimits,
    }
}

/// The groups of one run.
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
    procs_files: Vec<PathBuf>,
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| Error::Path {
        step: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// The group directory's name: the supervisor's pid first, so that a sweep can tell a group
/// whose supervisor is gone from one that is still being set up.
fn group_name(run: &str) -> String {
    format!("{}-{run}", std::process::id())
}

/// Removes groups whose supervisor is gone and that have no process left (the supervisor was
/// killed before it could remove them). Returns how many were removed.
fn sweep_dir(parent: &Path) -> usize {
    let Ok(rd) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in rd.flatten() {
        let p = e.path();
        if !p.is_dir() {
            continue;
        }
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid, 0) } == 0 {
            continue;
        }
        let empty = fs::read_to_string(p.join("cgroup.procs"))
            .map(|s| s.trim().is_empty())
            .unwrap_or(false);
        if empty && fs::remove_dir(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes the leftovers of runs whose supervisor died, in every hierarchy of `mech`.
pub fn sweep(mech: &Mechanism) -> usize {
    match mech {
        Mechanism::Rlimits => 0,
        Mechanism::V2(base) => sweep_dir(&base.join("ringfence")),
        Mechanism::V1 { pids, memory } => {
            sweep_dir(&pids.join("ringfence")) + sweep_dir(&memory.join("ringfence"))
        }
    }
}

impl Cgroups {
    /// Creates the run's groups with their limits (nothing when the mechanism is rlimits).
    /// On any failure the groups created so far are removed again.
    pub fn create(mech: &Mechanism, run: &str, limits: CgroupLimits) -> Result<Option<Cgroups>> {
        if *mech == Mechanism::Rlimits {
            return Ok(None);
        }
        sweep(mech);
        let mut groups = Cgroups {
            dirs: Vec::new(),
            procs_files: Vec::new(),
        };
        match groups.populate(mech, &group_name(run), limits) {
            Ok(()) => Ok(Some(groups)),
            Err(e) => {
                groups.remove();
                Err(e)
            }
        }
    }

    fn populate(&mut self, mech: &Mechanism, run: &str, limits: CgroupLimits) -> Result<()> {
        let mut settings: Vec<(PathBuf, &str, String)> = Vec::new();
        let mut make = |base: &Path| -> Result<PathBuf> {
            let parent = base.join("ringfence");
            let dir = parent.join(run);
            mkdir_group(&parent, &dir)?;
            self.procs_files.push(dir.join("cgroup.procs"));
            self.dirs.push(dir.clone());
            Ok(dir)
        };
        match mech {
            Mechanism::Rlimits => {}
            Mechanism::V2(base) => {
                let dir = make(base)?;
                // Children of `ringfence` need the controllers too.
                write(
                    &base.join("ringfence/cgroup.subtree_control"),
                    "+pids +memory",
                )?;
                settings.push((dir.clone(), "pids.max", limits.pids.to_string()));
                settings.push((dir.clone(), "memory.max", limits.memory.to_string()));
                settings.push((dir, "memory.swap.max", "0".into()));
            }
            Mechanism::V1 { pids, memory } => {
                settings.push((make(pids)?, "pids.max", limits.pids.to_string()));
                let memory_dir = make(memory)?;
                settings.push((
                    memory_dir,
                    "memory.limit_in_bytes",
                    limits.memory.to_string(),
                ));
            }
        }
        for (dir, file, value) in settings {
            let p = dir.join(file);
            if file == "memory.swap.max" && !p.exists() {
                continue;
            }
            write(&p, &value)?;
        }
        Ok(())
    }

    /// Moves `pid` (and so everything it starts later) into the groups.
    pub fn add(&self, pid: libc::pid_t) -> Result<()> {
        for f in &self.procs_files {
            write(f, &pid.to_string())?;
        }
        Ok(())
    }

    /// Removes the groups; processes must be gone (retries briefly while the kernel finishes
    /// tearing them down).
    pub fn remove(&self) {
        for d in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(2)),
                }
            }
        }
    }
}

fn mkdir_group(parent: &Path, dir: &Path) -> Result<()> {
    if let Err(e) = fs::create_dir(parent) {
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(Error::Path {
                step: "create cgroup",
                path: parent.to_path_buf(),
                source: e,
            });
        }
    }
    fs::create_dir(dir).map_err(|source| Error::Path {
        step: "create cgroup",
        path: dir.to_path_buf(),
        source,
    })
}
