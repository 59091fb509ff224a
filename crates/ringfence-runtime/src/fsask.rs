//! `filesystem.ask`: a write or a directory creation outside the writable roots is asked about
//! instead of refused. The sandbox's PID 1 (the creation guard) stops the call when the
//! read-only view refuses it and sends the path it resolved; here the path is checked (never a
//! protected name, a hidden or denyWrite path, ringfence's own settings, or anything the sandbox
//! does not see as the host's own file), the user is asked through the run's asker, and an
//! approved call is performed on the host, from `/` without following any symlink, and its
//! result (the opened file) handed back to PID 1, which injects it into the caller. The mounts
//! stay as they are; nothing the sandbox does after the question changes what was approved.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringfence_linux::guard::{self, FsQuestion, GuardRules};
use ringfence_linux::plan::Step;
use serde_json::json;

use crate::audit::Activity;
use crate::netrun::{WriteAnswer, WriteAsker};

#[derive(Default)]
struct Approved {
    files: HashSet<PathBuf>,
    dirs: Vec<PathBuf>,
}

pub(crate) struct FsAsk {
    /// A duplicate of the sandbox's channel: answers go to PID 1 on it.
    channel: OwnedFd,
    asker: WriteAsker,
    timeout: Duration,
    /// Paths the sandbox does not see as the host's own (mounts of their own, hidden,
    /// writable already): never written on the host for it.
    mounted: Vec<PathBuf>,
    deny_write: Vec<PathBuf>,
    /// ringfence's own settings and state: a sandbox may not be the one to change them.
    own: Vec<PathBuf>,
    rules: GuardRules,
    approved: Mutex<Approved>,
    log: Arc<Mutex<Activity>>,
    user_settings: Option<PathBuf>,
}

impl FsAsk {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        channel: OwnedFd,
        asker: WriteAsker,
        timeout: Duration,
        steps: &[Step],
        deny_write: Vec<PathBuf>,
        rules: GuardRules,
        log: Arc<Mutex<Activity>>,
        user_settings: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> FsAsk {
        let mut mounted = vec![PathBuf::from("/dev"), PathBuf::from("/proc")];
        for s in steps {
            let p = match s {
                Step::RootReadOnly | Step::Dev | Step::Proc | Step::Pin { .. } => continue,
                Step::Tmp { .. } => PathBuf::from("/tmp"),
                Step::Writable { path }
                | Step::WritableFile { path }
                | Step::Overlay { path, .. }
                | Step::HideDir { path }
                | Step::HideFile { path }
                | Step::MaskFile { path, .. }
                | Step::Reopen { path, .. }
                | Step::ReadOnly { path, .. } => path.clone(),
            };
            mounted.push(p);
        }
        let mut own = vec![PathBuf::from("/etc/ringfence")];
        if let Some(h) = home {
            own.push(h.join(".config/ringfence"));
            own.push(h.join(".local/state/ringfence"));
            own.push(h.join(".srt-settings.json"));
        }
        if let Ok(d) = crate::runs::state_dir() {
            own.push(d);
        }
        own.extend(user_settings.clone());
        FsAsk {
            channel,
            asker,
            timeout,
            mounted,
            deny_write,
            own,
            rules,
            approved: Mutex::new(Approved::default()),
            log,
            user_settings,
        }
    }

    /// Why `path` is never asked about, if it is not.
    fn never(&self, path: &Path) -> Option<&'static str> {
        if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
            return Some("not a plain absolute path");
        }
        if self.own.iter().any(|o| path.starts_with(o)) {
            return Some("ringfence's own settings");
        }
        if self.deny_write.iter().any(|d| path.starts_with(d)) {
            return Some("denyWrite");
        }
        if self.mounted.iter().any(|m| path.starts_with(m)) {
            return Some("not the host's own file in the sandbox's view");
        }
        let r = &self.rules;
        if r.protected.protects_path(path).is_some() {
            return Some("a protected name");
        }
        let names: Vec<&str> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => n.to_str(),
                _ => None,
            })
            .collect();
        if names.len() != path.components().count() - 1 {
            return Some("a name that is not UTF-8");
        }
        // A repository's insides decide what git runs; `.claude` what an agent does.
        let special = |n: &str| {
            ringfence_policy::is_git_dir(n)
                || r.parents.iter().any(|p| ringfence_policy::same_name(n, p))
                || n == ".ringfence.json"
        };
        if names.iter().any(|n| special(n)) {
            return Some("a protected name");
        }
        None
    }

    fn approved(&self, path: &Path) -> bool {
        let a = self.approved.lock().unwrap_or_else(|p| p.into_inner());
        a.files.contains(path) || a.dirs.iter().any(|d| path.starts_with(d))
    }

    fn event(&self, kind: &str, fields: serde_json::Value) {
        if let Ok(mut l) = self.log.lock() {
            l.event(kind, fields);
        }
    }

    /// Answers `q` on a thread of its own (the supervisor's loop must not wait for a person).
    pub(crate) fn handle(self: &Arc<Self>, q: FsQuestion) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("ringfence-fs-ask".into())
            .spawn(move || this.answer(&q));
        if spawned.is_err() {
            let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
        }
    }

    /// A unix socket not in `network.allowUnixSockets`: asked about by its real path; PID 1
    /// connects on the socket file it holds when the answer is yes.
    fn answer_socket(&self, q: &FsQuestion) {
        let path = q.path.as_path();
        let shown = path.display().to_string();
        if !self.approved(path) {
            self.event(
                "ask",
                json!({"kind": "socket", "op": "connect", "path": shown, "via": self.asker.via()}),
            );
            let a = self.asker.ask("connect", path, None, self.timeout);
            self.event(
                "answer",
                json!({"kind": "socket", "op": "connect", "path": shown, "answer": a.as_str()}),
            );
            match a {
                WriteAnswer::Deny => {
                    let _ = guard::answer_fs(&self.channel, -libc::EACCES, None);
                    return;
                }
                WriteAnswer::File => {}
                WriteAnswer::Directory | WriteAnswer::Always => {
                    let mut ap = self.approved.lock().unwrap_or_else(|p| p.into_inner());
                    ap.files.insert(path.to_path_buf());
                }
            }
            if a == WriteAnswer::Always {
                if let Some(file) = &self.user_settings {
                    match crate::netrun::remember_in(file, "network", "allowUnixSockets", &shown) {
                        Ok(()) => self.event(
                            "policy.update",
                            json!({"source": "answer", "allowUnixSockets": shown, "file": file}),
                        ),
                        Err(e) => eprintln!(
                            "ringfence: could not add {shown} to {}: {e:#}\r",
                            file.display()
                        ),
                    }
                }
            }
        }
        let _ = guard::answer_fs(&self.channel, 0, None);
    }

    fn answer(&self, q: &FsQuestion) {
        if q.op == "connect" {
            return self.answer_socket(q);
        }
        let path = q.path.as_path();
        let shown = path.display().to_string();
        if let Some(why) = self.never(path) {
            self.event(
                "fs.ask.refused",
                json!({"op": q.op, "path": shown, "reason": why}),
            );
            let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
            return;
        }
        if !self.approved(path) {
            self.event(
                "ask",
                json!({"kind": "write", "op": q.op, "path": shown, "via": self.asker.via()}),
            );
            let a = self.asker.ask(q.op, path, None, self.timeout);
            self.event(
                "answer",
                json!({"kind": "write", "op": q.op, "path": shown, "answer": a.as_str()}),
            );
            let dir = if q.op == "mkdir" {
                path.to_path_buf()
            } else {
                path.parent().unwrap_or(path).to_path_buf()
            };
            {
                let mut ap = self.approved.lock().unwrap_or_else(|p| p.into_inner());
                match a {
                    WriteAnswer::Deny => {}
                    WriteAnswer::File => {
                        ap.files.insert(path.to_path_buf());
                    }
                    WriteAnswer::Directory | WriteAnswer::Always => ap.dirs.push(dir.clone()),
                }
            }
            if a == WriteAnswer::Always {
                if let Some(file) = &self.user_settings {
                    let entry = dir.display().to_string();
                    match crate::netrun::remember_in(file, "filesystem", "allowWrite", &entry) {
                        Ok(()) => self.event(
                            "policy.update",
                            json!({"source": "answer", "allowWrite": entry, "file": file}),
                        ),
                        Err(e) => eprintln!(
                            "ringfence: could not add {entry} to {}: {e:#}\r",
                            file.display()
                        ),
                    }
                }
            }
            if a == WriteAnswer::Deny {
                let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
                return;
            }
        }
        let done = match q.op {
            "mkdir" => ringfence_linux::process::mkdir_on_host(path, q.mode).map(|()| None),
            _ => ringfence_linux::process::open_on_host(path, q.flags, q.mode).map(Some),
        };
        match done {
            Ok(file) => {
                self.event("fs.written", json!({"op": q.op, "path": shown}));
                let _ = guard::answer_fs(&self.channel, 0, file.as_ref());
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                let _ = guard::answer_fs(&self.channel, -errno, None);
            }
        }
    }
}
