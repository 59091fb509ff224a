//! Resource limits with cgroups, where this user may create groups: a `pids` limit that holds
//! whatever the uid (RLIMIT_NPROC does not bind host root), and a memory limit for the whole
//! sandbox rather than per process. Each run gets `ringfence/<run>` beneath the group that the
//! supervisor itself runs in (as systemd-run and container runtimes do), so that the limits of
//! a service or CI job that starts ringfence still bound the sandbox. The groups are removed
//! when the run ends, and leftovers of killed supervisors are removed by the next run started
//! from the same group.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::probe::{self, CgroupMount};

/// Which limits the groups enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupLimits {
    pub pids: u64,
    pub memory: u64,
}

/// How limits are enforced on this machine for this user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    /// cgroup v2 with the pids and memory controllers; the directory is this process's own
    /// group, beneath which the run's groups are made.
    V2(PathBuf),
    /// cgroup v1 hierarchies for pids and memory; the directories are this process's own
    /// groups in each.
    V1 { pids: PathBuf, memory: PathBuf },
    /// No cgroup this user may create groups in: rlimits, and the supervisor watches the
    /// sandbox's memory (see `memwatch`).
    NoCgroup,
}

impl Mechanism {
    pub fn describe(&self) -> String {
        match self {
            Mechanism::V2(p) => format!("cgroup v2 beneath {} (pids, memory)", p.display()),
            Mechanism::V1 { pids, memory } => {
                format!(
                    "cgroup v1 beneath {} and {}",
                    pids.display(),
                    memory.display()
                )
            }
            Mechanism::NoCgroup => {
                "no cgroup this user may write to: rlimits, and the supervisor sums the \
                 sandbox's resident memory"
                    .into()
            }
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

/// The group of a process in one hierarchy, from its `/proc/<pid>/cgroup` text: the v2 entry
/// (`0::/path`) for a v2 mount, else the v1 entry naming one of the mount's controllers.
pub fn group_path<'a>(proc_cgroup: &'a str, m: &CgroupMount) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut f = line.splitn(3, ':');
        let (id, ctl, path) = (f.next()?, f.next()?, f.next()?);
        let hit = if m.version == 2 {
            id == "0" && ctl.is_empty()
        } else {
            ctl.split(',').any(|c| m.controllers.iter().any(|x| x == c))
        };
        hit.then_some(path)
    })
}

/// Where the group `path` of hierarchy `m` is in the file system: under the mount point,
/// less the part of the hierarchy above the mount's root. `None` when the mount does not show
/// that group (it lies outside the mount's root or outside this cgroup namespace).
pub fn group_dir(m: &CgroupMount, path: &str) -> Option<PathBuf> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return None;
    }
    let rel = if m.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(m.root.as_str())?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    let rel = rel.trim_start_matches('/');
    Some(if rel.is_empty() {
        PathBuf::from(&m.path)
    } else {
        Path::new(&m.path).join(rel)
    })
}

/// The text of `/proc/<pid>/cgroup` (`None`: this process).
fn proc_cgroup(pid: Option<libc::pid_t>) -> String {
    let file = match pid {
        Some(p) => format!("/proc/{p}/cgroup"),
        None => "/proc/self/cgroup".into(),
    };
    crate::sys::read_kernel_text(file).unwrap_or_default()
}

/// The directory of `pid`'s own group in hierarchy `m`.
fn own_dir(m: &CgroupMount, text: &str) -> Option<PathBuf> {
    group_dir(m, group_path(text, m)?)
}

/// The memory limit that already bounds this process: of its own memory cgroup and the groups
/// above it, the lowest. `None` when there is none (or no memory controller is mounted).
pub fn own_memory_limit() -> Option<u64> {
    let text = proc_cgroup(None);
    let mounts = probe::cgroups();
    let mut lowest: Option<u64> = None;
    let mut take = |v: u64| lowest = Some(lowest.map_or(v, |l| l.min(v)));
    for m in mounts {
        let Some(dir) = own_dir(m, &text) else {
            continue;
        };
        if m.version == 1 && m.controllers.iter().any(|c| c == "memory") {
            // The kernel works out the lowest limit of the group and its ancestors.
            let stat = crate::sys::read_kernel_text(dir.join("memory.stat")).unwrap_or_default();
            if let Some(v) = stat.lines().find_map(|l| {
                l.strip_prefix("hierarchical_memory_limit ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            }) {
                take(v);
            }
        } else if m.version == 2 {
            // Each group up to the mount's root (the ones above are not visible here).
            let root = Path::new(&m.path);
            let mut d = dir.as_path();
            while d.starts_with(root) && d != root {
                if let Some(v) = crate::sys::read_kernel_text(d.join("memory.max"))
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                {
                    take(v);
                }
                match d.parent() {
                    Some(p) => d = p,
                    None => break,
                }
            }
        }
    }
    lowest
}

/// Finds what this user can use. cgroup v2 needs the pids and memory controllers enabled for
/// children of this process's own group, and that group writable; v1 needs this process's
/// groups in the pids and memory hierarchies writable.
pub fn detect() -> Mechanism {
    detect_for(None)
}

/// As `detect`, for the groups of process `pid` (`None`: this process).
pub fn detect_for(pid: Option<libc::pid_t>) -> Mechanism {
    let mounts = probe::cgroups();
    let text = proc_cgroup(pid);
    for m in mounts.iter().filter(|m| m.version == 2) {
        let Some(base) = own_dir(m, &text) else {
            continue;
        };
        let sub =
            crate::sys::read_kernel_text(base.join("cgroup.subtree_control")).unwrap_or_default();
        let has = |c: &str| sub.split_whitespace().any(|x| x == c);
        if has("pids") && has("memory") && writable(&base) {
            return Mechanism::V2(base);
        }
    }
    let find = |ctl: &str| {
        mounts
            .iter()
            .filter(|m| m.version == 1 && m.controllers.iter().any(|c| c == ctl))
            .find_map(|m| own_dir(m, &text))
            .filter(|d| writable(d))
    };
    match (find("pids"), find("memory")) {
        (Some(pids), Some(memory)) => Mechanism::V1 { pids, memory },
        _ => Mechanism::NoCgroup,
    }
}

/// The groups of one run.
#[derive(Debug)]
pub struct Cgroups {
    dirs: Vec<PathBuf>,
    procs_files: Vec<PathBuf>,
    memory: Option<MemoryGroup>,
    v1: bool,
}

/// A v1 group's `tasks` file, opened by the supervisor, through which the sandbox's PID 1
/// moves itself (see `Cgroups::tasks_files`).
#[derive(Debug)]
pub struct TasksFile {
    pub fd: std::os::fd::OwnedFd,
    pub path: PathBuf,
}

/// The run's memory group, which the supervisor reads to tell that the kernel killed a process
/// of the sandbox for memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryGroup {
    pub dir: PathBuf,
    pub v2: bool,
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
        // Run groups are named `<pid>-<run>`; the parent's control files (a v1 parent has a
        // few dozen) are passed over by name, without a stat each.
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
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

/// The own group of process `pid` (`None`: this process) in a cgroup v1 freezer hierarchy,
/// if this machine has one and the group is writable.
fn freezer_v1(pid: Option<libc::pid_t>) -> Option<PathBuf> {
    let text = proc_cgroup(pid);
    probe::cgroups()
        .iter()
        .filter(|m| m.version == 1 && m.controllers.iter().any(|c| c == "freezer"))
        .find_map(|m| own_dir(m, &text))
        .filter(|d| writable(d))
}

/// How `freeze` can freeze a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Freezer {
    /// `cgroup.freeze` of the run's own v2 group.
    V2(PathBuf),
    /// A group made for the run in the v1 freezer hierarchy when it is first paused.
    V1(PathBuf),
}

/// The freezer for the run `run` of supervisor `supervisor`, when there is one. The groups
/// are beneath the supervisor's own, which need not be the caller's.
pub fn freezer(supervisor: libc::pid_t, run: &str) -> Option<Freezer> {
    let name = format!("{supervisor}-{run}");
    match detect_for(Some(supervisor)) {
        Mechanism::V2(base) => Some(Freezer::V2(base.join("ringfence").join(name))),
        _ => freezer_v1(Some(supervisor)).map(|f| Freezer::V1(f.join("ringfence").join(name))),
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

/// Removes the leftovers of runs whose supervisor died, in every hierarchy of `mech` (beneath
/// this process's own groups, where its runs make theirs).
pub fn sweep(mech: &Mechanism) -> usize {
    let freezer = match freezer_v1(None) {
        Some(f) if !matches!(mech, Mechanism::V2(_)) => sweep_dir(&f.join("ringfence")),
        _ => 0,
    };
    freezer
        + match mech {
            Mechanism::NoCgroup => 0,
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
    freezer_v1(None).map(|f| f.join("ringfence").join(group_name(run)))
}

impl Cgroups {
    /// Creates the run's groups with their limits (nothing without a cgroup).
    /// On any failure the groups created so far are removed again. The leftovers of dead
    /// supervisors are not swept here: the caller sweeps (`sweep`) once the sandbox is cloned,
    /// off the start's critical path (a leftover in the way would carry this supervisor's
    /// own pid, which no sweep removes).
    pub fn create(mech: &Mechanism, run: &str, limits: CgroupLimits) -> Result<Option<Cgroups>> {
        if *mech == Mechanism::NoCgroup {
            return Ok(None);
        }
        let mut groups = Cgroups {
            dirs: Vec::new(),
            procs_files: Vec::new(),
            memory: None,
            v1: matches!(mech, Mechanism::V1 { .. }),
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
            Mechanism::NoCgroup => {}
            Mechanism::V2(base) => {
                let dir = make(base)?;
                self.memory = Some(MemoryGroup {
                    dir: dir.clone(),
                    v2: true,
                });
                // Children of `ringfence` need the controllers too.
                write(
                    &base.join("ringfence/cgroup.subtree_control"),
                    "+pids +memory",
                )?;
                settings.push((dir.clone(), "pids.max", limits.pids.to_string()));
                settings.push((dir.clone(), "memory.max", limits.memory.to_string()));
                settings.push((dir.clone(), "memory.swap.max", "0".into()));
                // One process killed for memory ends them all, as the supervisor does too.
                settings.push((dir, "memory.oom.group", "1".into()));
            }
            Mechanism::V1 { pids, memory } => {
                settings.push((make(pids)?, "pids.max", limits.pids.to_string()));
                let memory_dir = make(memory)?;
                self.memory = Some(MemoryGroup {
                    dir: memory_dir.clone(),
                    v2: false,
                });
                settings.push((
                    memory_dir.clone(),
                    "memory.limit_in_bytes",
                    limits.memory.to_string(),
                ));
                // Memory and swap together: swapping out does not lift the limit.
                settings.push((
                    memory_dir,
                    "memory.memsw.limit_in_bytes",
                    limits.memory.to_string(),
                ));
            }
        }
        for (dir, file, value) in settings {
            let p = dir.join(file);
            let optional = matches!(
                file,
                "memory.swap.max" | "memory.oom.group" | "memory.memsw.limit_in_bytes"
            );
            if optional && !p.exists() {
                continue;
            }
            write(&p, &value)?;
        }
        Ok(())
    }

    /// The run's memory group.
    pub fn memory(&self) -> Option<&MemoryGroup> {
        self.memory.as_ref()
    }

    /// The run's group directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// For v1 groups, their `tasks` files opened for writing, for the sandbox's PID 1 to move
    /// itself in by writing `0` (`None` for v2: `add` moves it). A thread that moves itself
    /// this way does not take the kernel's global threadgroup lock, whose writers wait for an
    /// RCU grace period (about 10 ms): writing a pid to `cgroup.procs` does. PID 1 is single-
    /// threaded then, so the thread is the whole process; everything it starts inherits the
    /// groups. The files are opened here, with the supervisor's credentials, which the kernel
    /// checks against the mover's.
    pub fn tasks_files(&self) -> Result<Option<Vec<TasksFile>>> {
        if !self.v1 {
            return Ok(None);
        }
        let mut files = Vec::with_capacity(self.dirs.len());
        for d in &self.dirs {
            let path = d.join("tasks");
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| Error::Path {
                    step: "open",
                    path: path.clone(),
                    source,
                })?;
            files.push(TasksFile { fd: f.into(), path });
        }
        Ok(Some(files))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn mount(path: &str, root: &str, version: u8, ctl: &[&str]) -> CgroupMount {
        CgroupMount {
            path: path.into(),
            root: root.into(),
            version,
            controllers: ctl.iter().map(|c| c.to_string()).collect(),
            writable: true,
        }
    }

    const PROC: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/ci/job-7\n\
                        2:cpu,cpuacct:/ci\n0::/user.slice/app.scope\n";

    #[test]
    fn own_group_per_hierarchy() {
        let mem = mount("/sys/fs/cgroup/memory", "/", 1, &["memory"]);
        let pids = mount("/sys/fs/cgroup/pids", "/", 1, &["pids"]);
        let cpu = mount("/sys/fs/cgroup/cpu,cpuacct", "/", 1, &["cpu", "cpuacct"]);
        let v2 = mount("/sys/fs/cgroup/unified", "/", 2, &[]);
        assert_eq!(group_path(PROC, &mem), Some("/ci/job-7"));
        assert_eq!(group_path(PROC, &pids), Some("/"));
        assert_eq!(group_path(PROC, &cpu), Some("/ci"));
        assert_eq!(group_path(PROC, &v2), Some("/user.slice/app.scope"));
        assert_eq!(
            own_dir(&mem, PROC),
            Some(PathBuf::from("/sys/fs/cgroup/memory/ci/job-7"))
        );
        assert_eq!(
            own_dir(&pids, PROC),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        let freezer = mount("/sys/fs/cgroup/freezer", "/", 1, &["freezer"]);
        assert_eq!(own_dir(&freezer, PROC), None);
    }

    #[test]
    fn group_dir_respects_the_mount_root() {
        // A container that sees only its part of the hierarchy, mounted at the usual place.
        let m = mount("/sys/fs/cgroup/memory", "/docker/abc", 1, &["memory"]);
        assert_eq!(
            group_dir(&m, "/docker/abc/inner"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/inner"))
        );
        assert_eq!(
            group_dir(&m, "/docker/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        // Outside what the mount shows: never a group elsewhere.
        assert_eq!(group_dir(&m, "/docker/abcd"), None);
        assert_eq!(group_dir(&m, "/other"), None);
        let root = mount("/sys/fs/cgroup", "/", 2, &[]);
        assert_eq!(group_dir(&root, "/../outside"), None);
        assert_eq!(group_dir(&root, "relative"), None);
    }
}
