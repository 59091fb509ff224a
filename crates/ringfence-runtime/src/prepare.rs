//! From command-line options to a ready-to-start sandbox: load the policy layers, resolve the
//! paths against the real filesystem, find protected entries in the writable roots, and build
//! the mount plan, the seccomp filter, the limits and the environment. `run` and `explain` share
//! this, so what `explain` prints is what `run` does.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ringfence_linux::cgroup::{self, CgroupLimits, Mechanism};
use ringfence_linux::guard::{GuardRules, UnixSocketRules};
use ringfence_linux::limits::Resource;
use ringfence_linux::plan::{self, Kind, MountPlan, PlanInput, Step};
use ringfence_linux::protect::{self, ProtectedNames, ScanCache};
use ringfence_linux::seccomp;
use ringfence_policy::{CliRules, LoadOptions, Policy};

/// Where a run's policy comes from: the managed, user and project layers are always read;
/// these add a settings file and command-line rules on top (which may only restrict what the
/// managed layer fixes).
///
/// ```
/// use ringfence_runtime::Sources;
/// let s = Sources::settings_file("/etc/ringfence/agent.json").in_dir("/tmp");
/// assert_eq!(s.cwd.as_deref(), Some(std::path::Path::new("/tmp")));
/// ```
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `-s FILE`: a settings file read as the user layer.
    pub settings: Option<PathBuf>,
    pub cli: CliRules,
    /// srt mode: the user layer is `~/.srt-settings.json` only (or `-s FILE`).
    pub srt: bool,
    /// The working directory of the command, whose project file (`.ringfence.json`) is read;
    /// `None`: this process's working directory.
    pub cwd: Option<PathBuf>,
    /// The caller sees requests in the clear (`ringfence proxy --reverse`); see
    /// `LoadOptions::clear_requests`.
    pub clear_requests: bool,
}

impl Sources {
    /// The layered files only (managed, user, project).
    pub fn layered() -> Sources {
        Sources::default()
    }

    /// The layered files, with `path` as the user layer (`ringfence run -s FILE`).
    pub fn settings_file(path: impl Into<PathBuf>) -> Sources {
        Sources {
            settings: Some(path.into()),
            ..Sources::default()
        }
    }

    /// The same sources for a command that runs in `dir`.
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Sources {
        self.cwd = Some(dir.into());
        self
    }
}

pub struct Prepared {
    pub policy: Policy,
    pub plan: MountPlan,
    pub cwd: PathBuf,
    /// Existing protected entries found in the writable roots.
    pub protected: Vec<PathBuf>,
    pub scan: ScanStats,
    pub seccomp: Vec<libc::sock_filter>,
    pub limits: Vec<(Resource, u64)>,
    pub env_removed: Vec<String>,
    pub env: Vec<CString>,
    pub guard: Option<GuardRules>,
    /// `network.allowUnixSockets`, checked by the sandbox's PID 1; None without a list.
    pub unix_sockets: Option<UnixSocketRules>,
    /// Protected paths that do not exist yet (kept from being created by the guard).
    pub not_yet: Vec<PathBuf>,
    /// denyWrite paths that do not exist yet (kept from being created by the guard).
    pub deny_not_yet: Vec<PathBuf>,
    pub mechanism: Mechanism,
    pub cgroup_limits: CgroupLimits,
    /// The sandbox's own package caches (empty when a denyRead hides them).
    pub caches: crate::caches::CachePlan,
    /// `network.tlsTerminate`: the proxy's terminator and the trust bundle of the sandbox.
    pub tls: Option<ringfence_proxy::tls::Setup>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub dirs: usize,
    /// Directories read (the others were unchanged since the cached scan).
    pub reread: usize,
    pub entries: usize,
    pub micros: u128,
}

pub fn home() -> Result<PathBuf> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(PathBuf::from(h)),
        _ => bail!("HOME is not set; it is needed to find the user settings and expand `~`"),
    }
}

pub fn load_policy(src: &Sources) -> Result<(Policy, PathBuf)> {
    let cwd = match &src.cwd {
        Some(d) => std::fs::canonicalize(d)
            .with_context(|| format!("the working directory {}", d.display()))?,
        None => std::env::current_dir().context("reading the working directory")?,
    };
    let home = home()?;
    let mut opts = LoadOptions::new(cwd.clone(), home.clone());
    if src.srt {
        opts.user = vec![home.join(".srt-settings.json")];
    }
    opts.settings = src.settings.clone();
    opts.cli = src.cli.clone();
    opts.machine_memory = Some(machine_memory()?);
    opts.clear_requests = src.clear_requests;
    let policy = ringfence_policy::load(&opts).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((policy, cwd))
}

/// The memory of the machine ringfence runs on, from which the default `limits.memory` is
/// derived: MemTotal, or the memory limit of the cgroup ringfence runs in when that is lower
/// (a container or CI job sees the host's MemTotal).
pub fn machine_memory() -> Result<u64> {
    // /proc/meminfo, not sysinfo(2): in a container with lxcfs only the file shows the
    // container's memory.
    let text =
        ringfence_linux::sys::read_kernel_text("/proc/meminfo").context("reading /proc/meminfo")?;
    let total = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .context("no MemTotal in /proc/meminfo: the default limits.memory cannot be derived; set limits.memory")?;
    Ok(cgroup::own_memory_limit().map_or(total, |l| l.min(total)))
}

/// The settings file that "always allow" answers are written to: `-s FILE`, else the user
/// layer that was loaded, else the default user file.
pub fn user_settings_file(src: &Sources, policy: &Policy) -> Option<PathBuf> {
    if let Some(f) = &src.settings {
        return Some(f.clone());
    }
    if let Some((_, f)) = policy
        .files
        .iter()
        .find(|(l, _)| *l == ringfence_policy::Layer::User)
    {
        return Some(f.clone());
    }
    let home = home().ok()?;
    Some(if src.srt {
        home.join(".srt-settings.json")
    } else {
        home.join(".config/ringfence/settings.json")
    })
}

/// The protected names in force for a policy: the fixed lists, less a repository's `config`
/// (and `config.worktree`) when `allowGitConfig` is set. Used by the scan, the creation guard
/// and overlay apply alike; the rule itself is `ringfence_policy::ProtectedNames`, the lists
/// here only key the scan cache.
pub struct ProtectedLists {
    pub rule: ProtectedNames,
    pub names: Vec<&'static str>,
    pub nested: Vec<(&'static str, &'static str)>,
    pub git_internal: Vec<&'static str>,
}

impl ProtectedLists {
    pub fn new(allow_git_config: bool) -> ProtectedLists {
        let rule = ProtectedNames::new(allow_git_config);
        ProtectedLists {
            rule,
            names: rule.names(),
            nested: rule.nested(),
            git_internal: rule.git_internal(),
        }
    }

    pub fn view(&self) -> ProtectedNames {
        self.rule
    }
}

/// Paths resolved for one `prepare`: real paths and the kind of entry at each, each path
/// resolved once, from its parent's resolution. A policy names dozens of paths in the same
/// few directories (the default credential stores are mostly in the home directory, mostly
/// absent); resolving each from scratch is a system call per component, from its resolved
/// parent one `lstat` (and a full resolution only where a component is a symlink).
#[derive(Default)]
struct Resolver {
    paths: std::cell::RefCell<HashMap<PathBuf, Resolved>>,
    kinds: std::cell::RefCell<HashMap<PathBuf, Option<Kind>>>,
}

/// What is at a path.
#[derive(Clone)]
enum Resolved {
    /// An entry, at this real path.
    Real(PathBuf),
    /// A symlink whose target does not resolve.
    Dangling,
    Absent,
}

impl Resolver {
    /// The real path of `p` when it exists (mounts act on real paths); for a name that does
    /// not exist yet, that name in the real path of its parent; else `p` itself.
    fn real(&self, p: &Path) -> PathBuf {
        match self.resolve(p) {
            Resolved::Real(r) => return r,
            Resolved::Dangling => return p.to_path_buf(),
            Resolved::Absent => {}
        }
        let (Some(parent), Some(name)) = (p.parent(), p.file_name()) else {
            return p.to_path_buf();
        };
        match self.dir(parent) {
            Some(r) => {
                let out = r.join(name);
                // Absent beside `p`, so absent there too.
                self.kinds.borrow_mut().insert(out.clone(), None);
                out
            }
            None => p.to_path_buf(),
        }
    }

    /// The real path of `d`, when it exists.
    fn dir(&self, d: &Path) -> Option<PathBuf> {
        match self.resolve(d) {
            Resolved::Real(r) => Some(r),
            _ => None,
        }
    }

    /// What `canonicalize` finds at `p`, worked out from `p`'s parent when `p` is a plain
    /// absolute path (no `.` or `..`, which `canonicalize` resolves after the symlinks before
    /// them): the parent's real path joined with the name, unless the name is a symlink.
    fn resolve(&self, p: &Path) -> Resolved {
        if let Some(r) = self.paths.borrow().get(p) {
            return r.clone();
        }
        let plain = p.is_absolute()
            && p.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        let full = |p: &Path| match std::fs::canonicalize(p) {
            Ok(r) => Resolved::Real(r),
            Err(_) if p.symlink_metadata().is_ok() => Resolved::Dangling,
            Err(_) => Resolved::Absent,
        };
        let r = match (plain, p.parent(), p.file_name()) {
            (true, Some(parent), Some(name)) => match self.resolve(parent) {
                Resolved::Real(rp) => {
                    let at = rp.join(name);
                    match at.symlink_metadata() {
                        Ok(m) if m.file_type().is_symlink() => full(&at),
                        Ok(m) => {
                            // Not a symlink: what `kind` would find, at both names.
                            let k = Some(if m.is_dir() { Kind::Dir } else { Kind::File });
                            let mut kinds = self.kinds.borrow_mut();
                            kinds.insert(p.to_path_buf(), k);
                            kinds.insert(at.clone(), k);
                            Resolved::Real(at)
                        }
                        Err(_) => Resolved::Absent,
                    }
                }
                // Beneath something that is not there (or a dangling symlink): not there.
                Resolved::Dangling | Resolved::Absent => Resolved::Absent,
            },
            _ => full(p),
        };
        if matches!(r, Resolved::Absent) {
            self.kinds.borrow_mut().insert(p.to_path_buf(), None);
        }
        self.paths.borrow_mut().insert(p.to_path_buf(), r.clone());
        r
    }

    fn kind(&self, p: &Path) -> Option<Kind> {
        if let Some(k) = self.kinds.borrow().get(p) {
            return *k;
        }
        let k = kind(p);
        self.kinds.borrow_mut().insert(p.to_path_buf(), k);
        k
    }

    /// Forgets every path resolved, and the kinds found at or beneath `dir` (its real path
    /// too) and on the way there: entries were created there since.
    fn forget(&self, dir: &Path) {
        self.paths.borrow_mut().clear();
        let real = std::fs::canonicalize(dir).ok();
        let stale = |p: &Path| {
            std::iter::once(dir)
                .chain(real.as_deref())
                .any(|d| p.starts_with(d) || d.starts_with(p))
        };
        self.kinds.borrow_mut().retain(|p, _| !stale(p));
    }
}

fn kind(p: &Path) -> Option<Kind> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Some(Kind::Dir),
        Ok(_) => Some(Kind::File),
        // A dangling symlink is still an entry that can be covered.
        Err(_) => std::fs::symlink_metadata(p).ok().map(|_| Kind::File),
    }
}

/// The unix sockets the sandbox may reach by path, as PID 1 checks them. None without a list
/// (socket(AF_UNIX) stays refused) or with allowAllUnixSockets (nothing to check).
///
/// A root caller may list sockets, unlike allowAllUnixSockets: each listed socket is one the
/// user named, and reaching it with root's identity is what the user asked for; what stays
/// out of reach is every other root-owned socket on the host (/run/docker.sock, systemd's,
/// D-Bus's), which allowAllUnixSockets would open. Root is told once on stderr.
fn unix_socket_rules(
    policy: &ringfence_policy::Policy,
    plan: &MountPlan,
    r: &Resolver,
) -> Option<UnixSocketRules> {
    if policy.allow_all_unix_sockets || policy.allow_unix_sockets.is_empty() {
        return None;
    }
    let private_tmp = plan.steps.iter().any(|s| matches!(s, Step::Tmp { .. }));
    let mut allowed = Vec::new();
    for rule in &policy.allow_unix_sockets {
        let path = r.real(&rule.path);
        if private_tmp && path.starts_with("/tmp") {
            eprintln!(
                "ringfence: note: network.allowUnixSockets: {} (from \"{}\") is not visible in the sandbox, whose /tmp is private; put the socket elsewhere (ssh-agent -a PATH) or allowWrite /tmp",
                path.display(),
                rule.pattern
            );
            continue;
        }
        allowed.push(path);
    }
    if ringfence_linux::sys::getuid() == 0 {
        eprintln!(
            "ringfence: network.allowUnixSockets: running as root, the listed sockets ({}) are reached with root's host identity",
            allowed.len()
        );
    }
    let mut scratch = vec![PathBuf::from("/dev/shm")];
    if private_tmp {
        scratch.push(PathBuf::from("/tmp"));
    }
    let ask = policy.ask.then(|| {
        policy
            .ask_timeout_seconds
            .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS)
    });
    Some(UnixSocketRules {
        allowed,
        scratch,
        ask,
    })
}

pub fn prepare(src: &Sources) -> Result<Prepared> {
    let resolver = Resolver::default();
    let (policy, cwd) = load_policy(src)?;
    ringfence_linux::timing::mark("policy loaded");
    if policy.allow_all_unix_sockets && ringfence_linux::sys::getuid() == 0 {
        bail!(
            "network.allowAllUnixSockets: refused for a root caller: the sandbox keeps root's \
             host identity for file access, so unix sockets would reach host services as root \
             (e.g. /run/docker.sock). Run ringfence as an unprivileged user to allow unix sockets."
        );
    }
    if policy.allow_nested_user_namespaces && ringfence_linux::sys::getuid() == 0 {
        bail!(
            "allowNestedUserNamespaces: refused for a root caller: the sandbox keeps root's host \
             identity, and in a user namespace of its own the command would hold every \
             capability over what root owns. Run ringfence as an unprivileged user to allow \
             nested user namespaces."
        );
    }
    let paths = |rules: &[ringfence_policy::PathRule]| -> Vec<PathBuf> {
        rules.iter().map(|r| resolver.real(&r.path)).collect()
    };
    let mut allow_write = paths(&policy.allow_write);
    let home = home()?;

    // Protected entries: every writable root is scanned completely.
    let lists = ProtectedLists::new(policy.allow_git_config);
    let (names, nested, git_internal) = (&lists.names, &lists.nested, &lists.git_internal);
    let protected_names = lists.view();
    // A protected name stays protected when allowWrite names it (or a path inside it) itself:
    // `allowWrite: ["~/.bashrc"]` leaves ~/.bashrc read-only.
    let mut protected_skipped = Vec::new();
    allow_write.retain(|w| {
        let rel = w.strip_prefix("/").unwrap_or(w);
        let refused = protect::is_protected_path(rel, &protected_names);
        if refused {
            protected_skipped.push(format!(
                "allowWrite {}: a protected name; it stays read-only",
                w.display()
            ));
        }
        !refused
    });
    let started = Instant::now();
    let mut found = protect::Found::default();
    let cache_dir = crate::runs::state_dir()?.join("scan-cache");
    let mut reread = 0;
    for root in &allow_write {
        if !root.is_dir() {
            continue;
        }
        // One cache file per root and set of protected names (allowGitConfig changes it).
        let key = cache_key(root, names, nested, git_internal);
        let cache_file = cache_dir.join(format!("{key:016x}"));
        let mut cache = ScanCache::load(&cache_file);
        protect::scan(root, &protected_names, &mut cache, &mut found).map_err(|e| {
            anyhow::anyhow!(
                "cannot scan {} for protected files ({}); a writable root must be fully readable",
                e.path.display(),
                e.source
            )
        })?;
        reread += cache.reread;
        if cache.reread > 0 {
            // The cache only saves work: failing to write it is not an error.
            let _ = std::fs::create_dir_all(&cache_dir).and_then(|()| cache.save(&cache_file));
        }
    }
    ringfence_linux::timing::mark("protected-name scan");
    let scan = ScanStats {
        dirs: found.dirs_scanned,
        entries: found.entries_scanned,
        reread,
        micros: started.elapsed().as_micros(),
    };
    let mut protected = found.paths;
    let mut not_yet: Vec<PathBuf> = found.missing;
    // ringfence's and srt's own settings files are protected wherever they are.
    // ... and so is every settings file this run loaded (`-s FILE` may live in the project).
    let loaded: Vec<PathBuf> = policy.files.iter().map(|(_, f)| resolver.real(f)).collect();
    for p in [
        home.join(".config/ringfence"),
        home.join(".srt-settings.json"),
        PathBuf::from("/etc/ringfence"),
        crate::runs::state_dir()?,
    ]
    .into_iter()
    .chain(loaded)
    {
        if !allow_write.iter().any(|w| p.starts_with(w)) {
            continue;
        }
        if p.symlink_metadata().is_ok() {
            protected.push(p);
        } else {
            not_yet.push(p);
        }
    }
    // A protected symlink's target is protected too when it lies in a writable root.
    let targets: Vec<PathBuf> = protected
        .iter()
        .filter(|p| {
            p.symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
        })
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .filter(|t| allow_write.iter().any(|w| t.starts_with(w)))
        .collect();
    protected.extend(targets);
    protected.sort();
    protected.dedup();

    let tls = crate::tlsrun::setup(&policy)?;
    // It may have made the CA and the trust bundle in the state directory.
    resolver.forget(&crate::runs::state_dir()?);
    // The state directory (run records, activity logs, scan cache, the TLS CA) is not
    // readable inside; the trust bundle in it is (below).
    let mut deny_read = paths(&policy.deny_read);
    // A masked file whose pattern matched nothing, with onExtractNoMatch "warn" (srt's
    // default), is left as it is.
    if let Some(t) = &tls {
        deny_read.retain(|d| !t.unmasked.contains(d));
    }
    deny_read.extend(
        tls.iter()
            .flat_map(|t| t.hidden.iter().map(|p| resolver.real(p))),
    );
    // The credential stores hidden by default; those that do not exist are skipped by the plan.
    deny_read.extend(paths(&policy.default_deny_read));
    let state = crate::runs::state_dir()?;
    if state.exists() {
        deny_read.push(resolver.real(&state));
    }
    // The sandbox's own package caches: writable, outside the protected-name scan and the
    // creation guard (the host never reads them).
    let host_env_var = |k: &str| std::env::var(k).ok();
    let cache_root = crate::caches::root(&home, &host_env_var);
    let caches = crate::caches::plan(
        &home,
        &cache_root,
        &host_env_var,
        &|p| allow_write.iter().any(|w| p.starts_with(w)),
        &|p| p.is_dir(),
    );
    if !caches.dirs.is_empty() && !allow_write.iter().any(|w| cache_root.starts_with(w)) {
        crate::caches::create(&caches).with_context(|| {
            format!(
                "creating the sandbox's package caches in {}; set XDG_CACHE_HOME to a writable \
                 directory",
                cache_root.display()
            )
        })?;
        resolver.forget(&cache_root);
        allow_write.push(resolver.real(&cache_root));
    }
    let input = PlanInput {
        deny_read,
        allow_read: paths(&policy.allow_read)
            .into_iter()
            .chain(tls.iter().map(|t| resolver.real(&t.bundle)))
            .collect(),
        allow_write,
        deny_write: paths(&policy.deny_write),
        protected: protected.clone(),
        tmp_size: policy.limits.tmp_size,
    };
    let mut plan =
        plan::build(&input, &|p| resolver.kind(p)).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(t) = &tls {
        plan.mask_files(&t.masked_files);
    }
    plan.skipped.extend(protected_skipped);

    check_cwd_visible(&cwd, &plan)?;

    // denyWrite paths that do not exist yet are kept from being created by the creation guard.
    let deny_not_yet: Vec<PathBuf> = input
        .deny_write
        .iter()
        .filter(|d| d.symlink_metadata().is_err())
        .cloned()
        .collect();
    let files: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::WritableFile { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let writable_roots: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::Writable { path } | Step::WritableFile { path } => Some(path.clone()),
            Step::Reopen {
                path,
                writable: true,
                ..
            } => Some(path.clone()),
            _ => None,
        })
        .collect();
    // The caches are used only if the plan really makes them writable (a denyRead above them
    // hides them).
    let caches_root = resolver.real(&cache_root);
    let caches_bound = writable_roots.iter().any(|r| caches_root.starts_with(r));
    let caches = if caches_bound {
        if let Some(c) = caches.dirs.iter().find(|d| d.ends_with("cargo")) {
            let host = std::env::var_os("CARGO_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| home.join(".cargo"));
            crate::caches::seed_cargo(&host, c)
                .with_context(|| format!("copying cargo's configuration into {}", c.display()))?;
        }
        crate::caches::CachePlan {
            root: caches_root.clone(),
            ..caches
        }
    } else {
        crate::caches::CachePlan::default()
    };
    let writable_roots: Vec<PathBuf> = writable_roots
        .into_iter()
        .filter(|r| !(caches_bound && r == &caches_root))
        .collect();
    // `filesystem.ask` needs the guard even with no writable root: it is what sees the writes
    // the read-only view refuses.
    // `filesystem.askRead`: the hidden files that may be asked about, never a credential file.
    let hidden: Vec<PathBuf> = if policy.fs_ask_read {
        plan.steps
            .iter()
            .filter_map(|s| match s {
                Step::HideDir { path } | Step::HideFile { path } => Some(path.clone()),
                _ => None,
            })
            .filter(|p| {
                !policy.credential_files.iter().any(|c| {
                    p.starts_with(c) || c.starts_with(p) || resolver.real(c).starts_with(p)
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let guard =
        (!writable_roots.is_empty() || policy.fs_ask || policy.fs_ask_read).then(|| GuardRules {
            protected: protected_names,
            parents: vec![".git".into(), ".claude".into()],
            paths: not_yet.clone(),
            roots: writable_roots,
            deny_paths: deny_not_yet.clone(),
            files,
            ask: policy.fs_ask.then(|| {
                policy
                    .ask_timeout_seconds
                    .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS)
            }),
            ask_read: policy.fs_ask_read.then(|| {
                policy
                    .ask_timeout_seconds
                    .unwrap_or(ringfence_policy::ASK_TIMEOUT_SECONDS)
            }),
            hidden,
        });

    ringfence_linux::timing::mark("mount plan");
    let unix_sockets = unix_socket_rules(&policy, &plan, &resolver);
    let seccomp = seccomp::build(&seccomp::FilterOptions {
        allow_unix_sockets: policy.allow_all_unix_sockets || unix_sockets.is_some(),
        guard_pid1: true,
        allow_user_namespaces: policy.allow_nested_user_namespaces,
    });

    let l = &policy.limits;
    let mechanism = cgroup::detect();
    // Memory is limited for the sandbox as a whole (a memory cgroup, else the supervisor's
    // sum, see `memwatch`), never per process: V8, Go, the JVM and sanitizers reserve far
    // more address space than they use, so RLIMIT_AS breaks them, and RLIMIT_DATA breaks
    // sanitizers (their shadow memory is writable private memory).
    let mut limits = vec![
        (Resource::Processes, l.pids),
        (Resource::OpenFiles, l.open_files),
        (Resource::CoreSize, 0),
    ];
    let cgroup_limits = CgroupLimits {
        pids: l.pids,
        memory: l.memory,
    };
    if let Some(c) = l.cpu_seconds {
        limits.push((Resource::CpuSeconds, c));
    }
    if let Some(f) = l.file_size {
        limits.push((Resource::FileSize, f));
    }

    let host_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let (kept, env_removed) = policy.env.filter(host_env);
    let mut env = Vec::with_capacity(kept.len() + 4);
    // New repositories get no template hooks: in a repository the sandbox creates, the guard
    // lets only samples into `hooks/`, and samples are of no use inside. `git.safeDirectories` are
    // `safe.directory` entries. Both are passed as more `GIT_CONFIG_*` entries after the
    // caller's own, so that those keep working.
    let git_count: usize = kept
        .iter()
        .find(|(k, _)| k == "GIT_CONFIG_COUNT")
        .and_then(|(_, v)| v.to_str()?.parse().ok())
        .unwrap_or(0);
    let mut git_entries: Vec<(String, String)> = Vec::new();
    if guard.is_some() {
        git_entries.push(("init.templateDir".into(), String::new()));
    }
    git_entries.extend(policy.git_safe_directory_config());
    let git_config = !git_entries.is_empty();
    if git_config {
        env.push(
            CString::new(format!(
                "GIT_CONFIG_COUNT={}",
                git_count + git_entries.len()
            ))
            .context("environment")?,
        );
        for (i, (k, v)) in git_entries.iter().enumerate() {
            let n = git_count + i;
            env.push(CString::new(format!("GIT_CONFIG_KEY_{n}={k}")).context("environment")?);
            env.push(
                CString::new(format!("GIT_CONFIG_VALUE_{n}={v}"))
                    .context("git.safeDirectories: a path contains a NUL byte")?,
            );
        }
    }
    // Every client is pointed at the egress proxy; the host's own proxy settings stay outside.
    let host_var = |name: &str| {
        kept.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str())
            .map(str::to_string)
    };
    let exe = std::env::current_exe().context("finding ringfence's own binary")?;
    let mut proxy_vars = crate::netenv::proxy_env(
        &exe,
        host_var("JAVA_TOOL_OPTIONS").as_deref(),
        host_var("GIT_SSH_COMMAND").as_deref(),
    );
    proxy_vars.extend(tls.iter().flat_map(|t| t.env.iter().cloned()));
    for (k, v) in &proxy_vars {
        env.push(CString::new(format!("{k}={v}")).context("environment")?);
    }
    for (k, v) in &caches.env {
        env.push(CString::new(format!("{k}={v}")).context("environment")?);
    }
    for (k, v) in kept {
        if k == "RINGFENCE_SANDBOX" || (git_config && k == "GIT_CONFIG_COUNT") {
            continue;
        }
        if let Some(name) = k.to_str() {
            if crate::netenv::replaced(name)
                || proxy_vars.iter().any(|(p, _)| p == name)
                || caches.env.iter().any(|(c, _)| c == name)
            {
                continue;
            }
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        if let Ok(c) = CString::new(kv) {
            env.push(c);
        }
    }
    env.push(CString::new("RINGFENCE_SANDBOX=1").context("environment")?);

    Ok(Prepared {
        policy,
        plan,
        cwd,
        protected,
        scan,
        seccomp,
        limits,
        env_removed,
        env,
        guard,
        unix_sockets,
        not_yet,
        deny_not_yet,
        mechanism,
        cgroup_limits,
        caches,
        tls,
    })
}

/// Creates the writable directories the plan expects that do not exist yet
/// ([`MountPlan::create`]); returns those it created. Only the final name is created, in a
/// parent that exists and belongs to the caller, never through a symlink at that name
/// (`mkdirat` does not follow one), with mode 0700 under the home directory. The mount plan
/// refuses to bind a path that would then not be a directory, so a failure here stops the run.
pub fn create_dirs(plan: &MountPlan) -> Result<Vec<PathBuf>> {
    use ringfence_linux::process;
    let home = home()?;
    let mut created = Vec::new();
    for path in &plan.create {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("allowWrite {}: cannot be created", path.display());
        };
        let fail = |what: &str, e: std::io::Error| {
            anyhow::anyhow!(
                "allowWrite {}: cannot create it ({what}: {e}); create it yourself or remove the rule",
                path.display()
            )
        };
        let (dir, owner) =
            process::open_dir_nofollow(parent).map_err(|e| fail("opening its parent", e))?;
        if owner != ringfence_linux::sys::getuid() {
            bail!(
                "allowWrite {}: does not exist, and its parent {} belongs to another user; \
                 create it yourself or remove the rule",
                path.display(),
                parent.display()
            );
        }
        let mode = if path.starts_with(&home) {
            0o700
        } else {
            0o777
        };
        if let Err(e) = process::mkdir_in(&dir, name, mode) {
            // Made meanwhile: fine if it is a directory (not a symlink to one).
            let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
            if e.raw_os_error() == Some(libc::EEXIST) && is_dir {
                continue;
            }
            return Err(fail("mkdir", e));
        }
        created.push(path.clone());
    }
    Ok(created)
}

/// The command starts in the caller's working directory, so it must exist inside.
fn check_cwd_visible(cwd: &Path, plan: &MountPlan) -> Result<()> {
    let bound = |p: &Path| {
        plan.steps.iter().any(|s| match s {
            Step::Writable { path } | Step::Reopen { path, .. } => {
                cwd.starts_with(path) && path.starts_with(p)
            }
            _ => false,
        })
    };
    for s in &plan.steps {
        match s {
            Step::Tmp { .. } if cwd.starts_with("/tmp") && !bound(Path::new("/tmp")) => bail!(
                "the working directory {} is under /tmp, which is private inside the sandbox; \
                 run from another directory, or pass --allow-write {} to share it",
                cwd.display(),
                cwd.display()
            ),
            Step::HideDir { path } if cwd.starts_with(path) && !bound(path) => bail!(
                "the working directory {} is inside {}, which denyRead hides; \
                 run from another directory or re-open it with allowRead",
                cwd.display(),
                path.display()
            ),
            _ => {}
        }
    }
    Ok(())
}

/// FNV-1a over the root and the protected names: the scan cache's file name.
fn cache_key(root: &Path, names: &[&str], nested: &[(&str, &str)], git: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |b: &[u8]| {
        for &x in b.iter().chain(&[0u8]) {
            h ^= u64::from(x);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(root.as_os_str().as_bytes());
    for n in names {
        feed(n.as_bytes());
    }
    for (p, n) in nested {
        feed(p.as_bytes());
        feed(n.as_bytes());
    }
    feed(b"git");
    for n in git {
        feed(n.as_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_resolver_follows_symlinked_parents_and_forgets_what_was_created() {
        let base = std::env::temp_dir().join(format!("rf-resolver-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real")).unwrap();
        std::fs::write(base.join("real/file"), b"x").unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let base = std::fs::canonicalize(&base).unwrap();
        let r = Resolver::default();
        // An existing file through a symlinked directory, and an absent one beside it.
        assert_eq!(r.real(&base.join("link/file")), base.join("real/file"));
        assert_eq!(r.real(&base.join("link/absent")), base.join("real/absent"));
        assert_eq!(r.kind(&base.join("real/absent")), None);
        assert_eq!(r.kind(&base.join("real/file")), Some(Kind::File));
        // Beneath a directory that does not exist: the path as given.
        assert_eq!(r.real(&base.join("no/such")), base.join("no/such"));
        // Created since: found once forgotten.
        std::fs::create_dir_all(base.join("real/absent")).unwrap();
        std::fs::create_dir_all(base.join("no")).unwrap();
        r.forget(&base.join("real/absent"));
        r.forget(&base.join("no"));
        assert_eq!(r.kind(&base.join("real/absent")), Some(Kind::Dir));
        assert_eq!(r.real(&base.join("no/such")), base.join("no/such"));
        assert_eq!(r.dir(&base.join("no")), Some(base.join("no")));
        // As `canonicalize` has it: a symlinked directory deeper down, a relative symlink,
        // `..` after a symlink, a dangling symlink (the path as given) and what is beneath it.
        std::fs::create_dir_all(base.join("real/sub/deep")).unwrap();
        std::os::unix::fs::symlink("real/sub", base.join("rel")).unwrap();
        std::os::unix::fs::symlink(base.join("gone"), base.join("dangling")).unwrap();
        let r = Resolver::default();
        for p in [
            "link/sub/deep",
            "rel/deep",
            "rel/../file",
            "link/sub/deep/../../file",
            "real/file",
        ] {
            let p = base.join(p);
            assert_eq!(Some(r.real(&p)), std::fs::canonicalize(&p).ok(), "{p:?}");
        }
        assert_eq!(r.real(&base.join("dangling")), base.join("dangling"));
        assert_eq!(r.real(&base.join("dangling/x")), base.join("dangling/x"));
        assert_eq!(r.real(&base.join("real/file/x")), base.join("real/file/x"));
        assert_eq!(r.real(&base.join("rel/new")), base.join("real/sub/new"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
