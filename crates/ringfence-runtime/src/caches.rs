//! The sandbox's own package caches. Package managers keep their caches in the home directory,
//! which is read-only inside; opening them for writing would let a sandbox plant a cache entry
//! that a tool later runs on the host, unsandboxed. So every run points the package managers at
//! caches of the sandbox's own under `$XDG_CACHE_HOME/ringfence/sandbox` (kept between runs, per
//! user, never read by the host's tools), through the variables each tool reads. A tool whose
//! own cache the policy already makes writable is left alone. Go's module cache on the host
//! seeds the sandbox's read-only, as a `file://` proxy.

use std::path::{Path, PathBuf};

/// One package manager's cache: the variable that moves it, and where it is on the host.
struct Cache {
    var: &'static str,
    /// The directory under the sandbox's cache root.
    dir: &'static str,
    /// The host's default location, relative to the home directory (a variable of the host
    /// environment that names it takes precedence).
    host_default: &'static str,
}

const CACHES: &[Cache] = &[
    // npm, npx (`_npx` lives in the cache) and node-gyp's downloads.
    Cache {
        var: "npm_config_cache",
        dir: "npm",
        host_default: ".npm",
    },
    Cache {
        var: "YARN_CACHE_FOLDER",
        dir: "yarn",
        host_default: ".cache/yarn",
    },
    Cache {
        var: "YARN_GLOBAL_FOLDER",
        dir: "yarn-berry",
        host_default: ".yarn/berry",
    },
    Cache {
        var: "npm_config_store_dir",
        dir: "pnpm/store",
        host_default: ".local/share/pnpm/store",
    },
    Cache {
        var: "npm_config_cache_dir",
        dir: "pnpm/cache",
        host_default: ".cache/pnpm",
    },
    Cache {
        var: "npm_config_state_dir",
        dir: "pnpm/state",
        host_default: ".local/state/pnpm",
    },
    Cache {
        var: "PIP_CACHE_DIR",
        dir: "pip",
        host_default: ".cache/pip",
    },
    Cache {
        var: "GOMODCACHE",
        dir: "go/mod",
        host_default: "go/pkg/mod",
    },
    Cache {
        var: "GOCACHE",
        dir: "go/build",
        host_default: ".cache/go-build",
    },
    // Cargo keeps its registry and git caches in CARGO_HOME, beside its configuration, which
    // is copied in (see `seed_cargo`); credentials are not.
    Cache {
        var: "CARGO_HOME",
        dir: "cargo",
        host_default: ".cargo",
    },
    Cache {
        var: "GRADLE_USER_HOME",
        dir: "gradle",
        host_default: ".gradle",
    },
    // Everything else that follows the XDG convention (ccache, uv, node-gyp, ...).
    Cache {
        var: "XDG_CACHE_HOME",
        dir: "xdg",
        host_default: ".cache",
    },
];

/// What the sandbox's caches need: the directories to create and make writable, and the
/// variables to set inside.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CachePlan {
    pub root: PathBuf,
    pub dirs: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl CachePlan {
    /// The writable root the caches are mounted as, if any (it stays direct in overlay mode).
    pub fn dirs_root(&self) -> Vec<PathBuf> {
        if self.dirs.is_empty() {
            Vec::new()
        } else {
            vec![self.root.clone()]
        }
    }
}

/// The sandbox cache root for a user: `$XDG_CACHE_HOME/ringfence/sandbox`.
pub fn root(home: &Path, host_env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    let base = host_env("XDG_CACHE_HOME")
        .filter(|v| Path::new(v).is_absolute())
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"));
    base.join("ringfence/sandbox")
}

/// The caches for one run. `writable` says whether the policy makes a host path writable;
/// `exists` whether a host path exists (for the Go seed).
pub fn plan(
    home: &Path,
    root: &Path,
    host_env: &dyn Fn(&str) -> Option<String>,
    writable: &dyn Fn(&Path) -> bool,
    exists: &dyn Fn(&Path) -> bool,
) -> CachePlan {
    let mut out = CachePlan {
        root: root.to_path_buf(),
        ..CachePlan::default()
    };
    let host_path = |c: &Cache| -> PathBuf {
        match host_env(c.var) {
            Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
            _ if c.var == "GOMODCACHE" => match host_env("GOPATH") {
                // GOPATH may list several; the module cache is in the first.
                Some(g) if !g.is_empty() => {
                    PathBuf::from(g.split(':').next().unwrap_or_default()).join("pkg/mod")
                }
                _ => home.join(c.host_default),
            },
            _ => home.join(c.host_default),
        }
    };
    for c in CACHES {
        let host = host_path(c);
        if writable(&host) {
            // The user opened this cache for writing; it is theirs to decide.
            continue;
        }
        let dir = root.join(c.dir);
        out.env
            .push((c.var.to_string(), dir.to_string_lossy().into_owned()));
        out.dirs.push(dir);
        if c.var == "GOMODCACHE" {
            let download = host.join("cache/download");
            if exists(&download) {
                let rest = host_env("GOPROXY")
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "https://proxy.golang.org,direct".to_string());
                out.env.push((
                    "GOPROXY".to_string(),
                    format!("file://{},{rest}", download.display()),
                ));
            }
        }
    }
    // Maven has no variable for its local repository, only a property.
    let m2 = home.join(".m2/repository");
    if !writable(&m2) {
        let dir = root.join("maven");
        let mut opts = host_env("MAVEN_OPTS").unwrap_or_default();
        if !opts.is_empty() {
            opts.push(' ');
        }
        opts.push_str(&format!("-Dmaven.repo.local={}", dir.display()));
        out.env.push(("MAVEN_OPTS".to_string(), opts));
        out.dirs.push(dir);
    }
    out
}

// Everything below the cache root was written by sandboxes: a directory there may have been
// replaced by a symlink to anywhere on the host. So the host side never follows one: each
// directory is opened with O_NOFOLLOW and everything else is done beneath that descriptor
// (through /proc/self/fd, whose link names the directory itself), and a file is created with
// O_EXCL, which does not follow a symlink either.

/// `dir` opened without following a symlink at its last component.
fn open_dir(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{}: not a directory of ringfence's own ({e})",
                    path.display()
                ),
            )
        })
}

/// `name` beneath the open directory `dir`.
fn beneath(dir: &std::fs::File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Cargo's configuration follows it into the sandbox's CARGO_HOME (copied at every run, so
/// the host's stays the one in force); its credentials stay outside.
pub fn seed_cargo(host_cargo_home: &Path, sandbox_cargo_home: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let dir = open_dir(sandbox_cargo_home)?;
    for name in ["config.toml", "config"] {
        let content = match std::fs::read(host_cargo_home.join(name)) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let tmp = beneath(&dir, &format!(".{name}.ringfence-tmp"));
        match std::fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&content)?;
        // The rename replaces whatever is at the name, a symlink included, without following it.
        std::fs::rename(&tmp, beneath(&dir, name))?;
    }
    Ok(())
}

/// Creates the cache directories (0700; the root too). The root must be a directory itself;
/// below it, no symlink is followed (see above).
pub fn create(plan: &CachePlan) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if all_there(plan) {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.mode(0o700);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&plan.root)?;
    let root = open_dir(&plan.root)?;
    for d in &plan.dirs {
        let rel = d.strip_prefix(&plan.root).map_err(|_| {
            std::io::Error::other(format!(
                "{} is outside {}",
                d.display(),
                plan.root.display()
            ))
        })?;
        let mut cur = open_dir(&beneath(&root, "."))?;
        for part in rel.iter() {
            let part = part.to_string_lossy();
            let next = beneath(&cur, &part);
            match b.create(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            cur = open_dir(&next).map_err(|e| {
                std::io::Error::new(e.kind(), format!("{}: {e}", plan.root.join(rel).display()))
            })?;
        }
    }
    Ok(())
}

/// Whether every planned directory, and each directory on the way to it from the root,
/// already is a directory (not a symlink): then nothing is created, and the careful walk of
/// [`create`] is not needed. Anything else (a missing one, a symlink planted in the cache by
/// an earlier sandbox) takes the walk.
fn all_there(plan: &CachePlan) -> bool {
    let is_dir = |p: &Path| p.symlink_metadata().is_ok_and(|m| m.file_type().is_dir());
    if !is_dir(&plan.root) {
        return false;
    }
    let mut seen: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    plan.dirs.iter().all(|d| {
        d.strip_prefix(&plan.root).is_ok()
            && d.ancestors()
                .take_while(|a| *a != plan.root.as_path())
                .all(|a| !seen.insert(a) || is_dir(a))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_symlink_planted_below_the_root_is_never_followed() {
        let base = std::env::temp_dir().join(format!("rf-caches-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        // A sandbox replaced its cargo and pnpm directories with symlinks to a host directory.
        std::os::unix::fs::symlink(&outside, root.join("cargo")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("pnpm")).unwrap();
        let plan = CachePlan {
            root: root.clone(),
            dirs: vec![root.join("pnpm/store"), root.join("npm")],
            env: Vec::new(),
        };
        assert!(create(&plan).is_err());
        assert!(
            !outside.join("store").exists(),
            "created through the symlink"
        );
        let host = base.join("host-cargo");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("config.toml"), "[net]\n").unwrap();
        assert!(seed_cargo(&host, &root.join("cargo")).is_err());
        assert!(
            !outside.join("config.toml").exists(),
            "written through the symlink"
        );
        // A symlink at the file's own name is replaced, not followed.
        std::fs::remove_file(root.join("cargo")).unwrap();
        std::fs::create_dir(root.join("cargo")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("cargo/config.toml")).unwrap();
        std::os::unix::fs::symlink(
            outside.join("victim2"),
            root.join("cargo/.config.toml.ringfence-tmp"),
        )
        .unwrap();
        seed_cargo(&host, &root.join("cargo")).unwrap();
        assert!(!outside.join("victim").exists() && !outside.join("victim2").exists());
        assert_eq!(
            std::fs::read_to_string(root.join("cargo/config.toml")).unwrap(),
            "[net]\n"
        );
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn every_package_manager_gets_a_cache_of_the_sandbox() {
        let home = Path::new("/home/u");
        let root = Path::new("/home/u/.cache/ringfence/sandbox");
        let p = plan(home, root, &env_of(&[]), &|_| false, &|_| false);
        let get = |k: &str| p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(
            get("npm_config_cache"),
            Some("/home/u/.cache/ringfence/sandbox/npm")
        );
        assert_eq!(
            get("PIP_CACHE_DIR"),
            Some("/home/u/.cache/ringfence/sandbox/pip")
        );
        assert_eq!(
            get("CARGO_HOME"),
            Some("/home/u/.cache/ringfence/sandbox/cargo")
        );
        assert_eq!(
            get("GOMODCACHE"),
            Some("/home/u/.cache/ringfence/sandbox/go/mod")
        );
        assert_eq!(
            get("GOCACHE"),
            Some("/home/u/.cache/ringfence/sandbox/go/build")
        );
        assert_eq!(
            get("GRADLE_USER_HOME"),
            Some("/home/u/.cache/ringfence/sandbox/gradle")
        );
        assert_eq!(
            get("YARN_CACHE_FOLDER"),
            Some("/home/u/.cache/ringfence/sandbox/yarn")
        );
        assert_eq!(
            get("npm_config_store_dir"),
            Some("/home/u/.cache/ringfence/sandbox/pnpm/store")
        );
        assert_eq!(
            get("MAVEN_OPTS"),
            Some("-Dmaven.repo.local=/home/u/.cache/ringfence/sandbox/maven")
        );
        assert_eq!(get("GOPROXY"), None, "no host module cache to seed from");
        assert!(p.dirs.iter().all(|d| d.starts_with(root)));
        assert_eq!(p.dirs.len(), p.env.len());
    }

    #[test]
    fn a_cache_the_policy_makes_writable_is_left_alone_and_go_is_seeded() {
        let home = Path::new("/home/u");
        let r = Path::new("/c");
        let vars = [
            ("GOPATH", "/opt/go:/x"),
            ("MAVEN_OPTS", "-Xmx1g"),
            ("GOPROXY", "off"),
        ];
        let p = plan(
            home,
            r,
            &env_of(&vars),
            &|p| p.starts_with("/home/u/.npm"),
            &|p| p == Path::new("/opt/go/pkg/mod/cache/download"),
        );
        let get = |k: &str| p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("npm_config_cache"), None);
        assert_eq!(
            get("GOPROXY"),
            Some("file:///opt/go/pkg/mod/cache/download,off")
        );
        assert_eq!(
            get("MAVEN_OPTS"),
            Some("-Xmx1g -Dmaven.repo.local=/c/maven")
        );
        assert_eq!(
            root(home, &env_of(&[("XDG_CACHE_HOME", "rel")])),
            Path::new("/home/u/.cache/ringfence/sandbox")
        );
    }
}
