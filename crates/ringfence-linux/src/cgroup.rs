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
        // A v1 freezer group left frozen: thawed, its processes can die of their pending
        // SIGKILL (PDEATHSIG); the group goes with a later sweep.
        let state = p.join("freezer.state");
        if state.exists() {
            let _ = fs::write(&state, "THAWED");
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

/// A writable cgroup v1 freezer hierarchy, if this machine has one.
fn freezer_v1() -> Option<PathBuf> {
    probe::cgroups()
        .into_iter()
        .find(|m| m.version == 1 && m.controllers.iter().any(|c| c == "freezer") && m.writable)
        .map(|m| PathBuf::from(m.path))
}

/// How `freeze` can freeze a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freezer {
    /// `cgroup.freeze` of the run's own v2 group.
    V2(PathBuf),
    /// A group made for the run in the v1 freezer hierarchy when it is first paused.
    V1(PathBuf),
}

/// The freezer for the run `run` of supervisor `supervisor`, when there is one.
pub fn freezer(mech: &Mechanism, supervisor: libc::pid_t, run: &str) -> Option<Freezer> {
    let name = format!("{supervisor}-{run}");
    match mech {
        Mechanism::V2(base) => Some(Freezer::V2(base.join("ringfence").join(name))),
        _ => freezer_v1().map(|f| Freezer::V1(f.join("ringfence").join(name))),
    }
}

fn freezer_state(dir: &Path, v2: bool) -> String {
    if v2 {
        let events = fs::read_to_string(dir.join("cgroup.events")).unwrap_or_default();
        let frozen = events.lines().any(|l| l.trim() == "frozen 1");
        if frozen { "FROZEN" } else { "THAWED" }.to_string()
    } else {
        fs::read_to_string(dir.join("freezer.state"))
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// Freezes (or thaws) every process of a run. `pids` lists them; for v1 they are moved into
/// the run's freezer group first, again until none is left outside (a process that forks while
/// they move has its child born in the group). Returns how many processes are in the group.
pub fn freeze(f: &Freezer, pids: &dyn Fn() -> Vec<libc::pid_t>, frozen: bool) -> Result<usize> {
    let (dir, v2) = match f {
        Freezer::V2(d) => (d.clone(), true),
        Freezer::V1(d) => (d.clone(), false),
    };
    let set = |state: bool| -> Result<()> {
        if v2 {
            write(&dir.join("cgroup.freeze"), if state { "1" } else { "0" })
        } else {
            write(
                &dir.join("freezer.state"),
                if state { "FROZEN" } else { "THAWED" },
            )
        }
    };
    if !frozen {
        set(false)?;
        return Ok(count(&dir));
    }
    if !v2 {
        if let Some(parent) = dir.parent() {
            mkdir_group(parent, &dir).or_else(|e| match &e {
                Error::Path { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                    Ok(())
                }
                _ => Err(e),
            })?;
        }
    }
    for _ in 0..20 {
        if !v2 {
            for pid in pids() {
                // A process that ended meanwhile is fine.
                let _ = fs::write(dir.join("cgroup.procs"), pid.to_string());
            }
        }
        set(true)?;
        for _ in 0..200 {
            if freezer_state(&dir, v2) == "FROZEN" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let inside = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        let inside: Vec<&str> = inside.lines().collect();
        if pids()
            .iter()
            .all(|p| inside.contains(&p.to_string().as_str()))
        {
            return Ok(inside.len());
        }
    }
    Err(Error::Setup(format!(
        "{}: processes kept appearing outside the freezer group",
        dir.display()
    )))
}

fn count(dir: &Path) -> usize {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Removes the leftovers of runs whose supervisor died, in every hierarchy of `mech`.
pub fn sweep(mech: &Mechanism) -> usize {
    let freezer = match freezer_v1() {
        Some(f) if !matches!(mech, Mechanism::V2(_)) => sweep_dir(&f.join("ringfence")),
        _ => 0,
    };
    freezer
        + match mech {
            Mechanism::Rlimits => 0,
            Mechanism::V2(base) => sweep_dir(&base.join("ringfence")),
            Mechanism::V1 { pids, memory } => {
                sweep_dir(&pids.join("ringfence")) + sweep_dir(&memory.join("ringfence"))
            }
        }
}

/// This supervisor's v1 freezer group for `run` (it exists only once the run was paused). A
/// frozen v1 task does not die of SIGKILL until it is thawed: the supervisor thaws this group
/// before it kills the sandbox.
pub fn own_freezer_v1(run: &str) -> Option<PathBuf> {
    freezer_v1().map(|f| f.join("ringfence").join(group_name(run)))
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
