//! `filesystem.ask`: a write, a directory creation, a rename, a link, a symlink or a removal
//! outside the writable roots is asked about instead of refused. The sandbox's PID 1 (the
//! creation guard) stops the call when the read-only view refuses it and sends the paths it
//! resolved; here they are checked (never a protected name, a hidden or denyWrite path,
//! ringfence's own settings, a directory holding any of those or a mount, or anything the
//! sandbox does not see as the host's own file), the user is asked through the run's asker, and
//! an approved call is performed on the host: each name in its parent directory, opened from
//! `/` without following any symlink, the final name never followed either. Its result (the
//! opened file for an open) is handed back to PID 1, which gives it to the caller. The mounts
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
    /// Hidden files approved for reading: apart from writes, so that a folder approved for
    /// writing never opens a hidden file in it for reading.
    reads: HashSet<PathBuf>,
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
        // Removing or renaming a directory that holds one of those would move or remove them
        // on the host.
        let holds = |list: &[PathBuf]| list.iter().any(|m| m.starts_with(path));
        if holds(&self.own) || holds(&self.deny_write) || holds(&self.mounted) {
            return Some("a directory that holds a mount, denyWrite or ringfence's own files");
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
            let a = self.asker.ask("connect", path, None, None, self.timeout);
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

    /// The folder a "directory" or "always" answer about `path` allows: a new directory
    /// itself, else the directory the name is in.
    fn folder_of(op: &str, path: &Path) -> PathBuf {
        if op == "mkdir" {
            path.to_path_buf()
        } else {
            path.parent().unwrap_or(path).to_path_buf()
        }
    }

    /// `filesystem.askRead`: a hidden file, asked about by its path; an approved one is
    /// opened on the host for reading (only a regular file, reached without a symlink) and
    /// handed to PID 1, which gives it to the caller.
    fn answer_read(&self, q: &FsQuestion) {
        let path = q.path.as_path();
        let shown = path.display().to_string();
        let plain = path.is_absolute() && !path.components().any(|c| c == Component::ParentDir);
        let why = if !plain {
            Some("not a plain absolute path")
        } else if !self.rules.hidden.iter().any(|h| path.starts_with(h)) {
            Some("not a hidden file that may be asked about")
        } else if self.own.iter().any(|o| path.starts_with(o)) {
            Some("ringfence's own settings")
        } else {
            None
        };
        if let Some(why) = why {
            self.event(
                "fs.ask.refused",
                json!({"op": "read", "path": shown, "reason": why}),
            );
            let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
            return;
        }
        let known = {
            let ap = self.approved.lock().unwrap_or_else(|p| p.into_inner());
            ap.reads.contains(path)
        };
        if !known {
            self.event(
                "ask",
                json!({"kind": "read", "op": "read", "path": shown, "via": self.asker.via()}),
            );
            let a = self.asker.ask("read", path, None, None, self.timeout);
            self.event(
                "answer",
                json!({"kind": "read", "op": "read", "path": shown, "answer": a.as_str()}),
            );
            if a == WriteAnswer::Deny {
                let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
                return;
            }
            {
                let mut ap = self.approved.lock().unwrap_or_else(|p| p.into_inner());
                ap.reads.insert(path.to_path_buf());
            }
            if a == WriteAnswer::Always {
                if let Some(file) = &self.user_settings {
                    match crate::netrun::remember_in(file, "filesystem", "allowRead", &shown) {
                        Ok(()) => self.event(
                            "policy.update",
                            json!({"source": "answer", "allowRead": shown, "file": file}),
                        ),
                        Err(e) => eprintln!(
                            "ringfence: could not add {shown} to {}: {e:#}\r",
                            file.display()
                        ),
                    }
                }
            }
        }
        // Only reading, whatever else the caller asked for.
        let keep = libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_NOFOLLOW;
        let flags = (q.flags & keep) | libc::O_RDONLY;
        match ringfence_linux::process::open_on_host(path, flags, 0) {
            Ok(file) => {
                self.event("fs.read", json!({"path": shown}));
                let _ = guard::answer_fs(&self.channel, 0, Some(&file));
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.event("fs.read.failed", json!({"path": shown, "errno": errno}));
                let _ = guard::answer_fs(&self.channel, -errno, None);
            }
        }
    }

    fn answer(&self, q: &FsQuestion) {
        if q.op == "connect" {
            return self.answer_socket(q);
        }
        if q.op == "read" {
            return self.answer_read(q);
        }
        let path = q.path.as_path();
        let shown = path.display().to_string();
        // The paths the operation changes: a rename both names, a link the new one and the
        // file it gives another name (writing through that name would change the file); a
        // symlink's target is only text, and a write through the link is asked about where
        // it leads.
        let mut paths = vec![path];
        if matches!(q.op, "rename" | "link") {
            match &q.other {
                Some(o) => paths.push(o.as_path()),
                None => {
                    let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
                    return;
                }
            }
        }
        let to = q.other.as_ref().map(|o| o.display().to_string());
        let refusal = if q.op == "rename" && q.flags & !(libc::RENAME_NOREPLACE as i32) != 0 {
            Some((path, "a rename flag other than RENAME_NOREPLACE"))
        } else if q.op == "link" && q.flags != 0 {
            Some((path, "a link flag"))
        } else {
            paths
                .iter()
                .find_map(|p| self.never(p).map(|why| (*p, why)))
        };
        if let Some((p, why)) = refusal {
            self.event(
                "fs.ask.refused",
                json!({"op": q.op, "path": shown, "to": to, "refused": p, "reason": why}),
            );
            let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
            return;
        }
        if !paths.iter().all(|p| self.approved(p)) {
            self.event(
                "ask",
                json!({"kind": "write", "op": q.op, "path": shown, "to": to,
                       "via": self.asker.via()}),
            );
            let a = self
                .asker
                .ask(q.op, path, q.other.as_deref(), None, self.timeout);
            self.event(
                "answer",
                json!({"kind": "write", "op": q.op, "path": shown, "to": to,
                       "answer": a.as_str()}),
            );
            let mut dirs: Vec<PathBuf> = Vec::new();
            for p in &paths {
                let d = Self::folder_of(q.op, p);
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
            }
            {
                let mut ap = self.approved.lock().unwrap_or_else(|p| p.into_inner());
                match a {
                    WriteAnswer::Deny => {}
                    WriteAnswer::File => ap.files.extend(paths.iter().map(|p| p.to_path_buf())),
                    WriteAnswer::Directory | WriteAnswer::Always => ap.dirs.extend(dirs.clone()),
                }
            }
            if a == WriteAnswer::Always {
                if let Some(file) = &self.user_settings {
                    for dir in &dirs {
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
            }
            if a == WriteAnswer::Deny {
                let _ = guard::answer_fs(&self.channel, -libc::EROFS, None);
                return;
            }
        }
        use ringfence_linux::process as host;
        let other = q.other.as_deref().unwrap_or(path);
        let done = match q.op {
            "mkdir" => host::mkdir_on_host(path, q.mode).map(|()| None),
            "rename" => host::rename_on_host(path, other, q.flags).map(|()| None),
            "link" => host::link_on_host(path, other).map(|()| None),
            "symlink" => host::symlink_on_host(other, path).map(|()| None),
            "unlink" => host::unlink_on_host(path, false).map(|()| None),
            "rmdir" => host::unlink_on_host(path, true).map(|()| None),
            _ => host::open_on_host(path, q.flags, q.mode).map(Some),
        };
        match done {
            Ok(file) => {
                self.event("fs.written", json!({"op": q.op, "path": shown, "to": to}));
                let _ = guard::answer_fs(&self.channel, 0, file.as_ref());
            }
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.event(
                    "fs.write.failed",
                    json!({"op": q.op, "path": shown, "to": to, "errno": errno}),
                );
                let _ = guard::answer_fs(&self.channel, -errno, None);
            }
        }
    }
}
