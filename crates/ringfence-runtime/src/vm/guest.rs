//! `ringfence __vm-guest`: PID 1 of the guest. Mounts the kernel's file systems, finds its
//! virtio-serial ports, listens on the guest's loopback at the proxy ports, where the inner
//! run's proxy relays (the only way out of the guest: each connection becomes a stream to the
//! supervisor's proxy), runs `ringfence run` with the same arguments, reports the exit status
//! and powers the machine off.

use std::fs::{File, OpenOptions};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};

use super::mux::{self, Sender, Streams};
use super::GuestJob;
use crate::netenv::{HTTP_PORT, SOCKS_PORT};

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

fn mount(fstype: &str, dst: &str, data: Option<&str>) -> Result<()> {
    let _ = std::fs::create_dir_all(dst);
    ringfence_linux::sys::mount(
        Some(Path::new(fstype)),
        Path::new(dst),
        Some(fstype),
        libc::MS_NOSUID,
        data,
    )
    .with_context(|| format!("mounting {fstype} on {dst}"))
}

/// The device of the virtio-serial port named `name`.
fn port(name: &str) -> Result<PathBuf> {
    for e in std::fs::read_dir("/sys/class/virtio-ports")
        .context("reading /sys/class/virtio-ports")?
        .flatten()
    {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Ok(Path::new("/dev").join(e.file_name()));
        }
    }
    anyhow::bail!("no virtio-serial port named {name}")
}

pub fn main() -> ! {
    let code = match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringfence guest: {e:#}");
            125
        }
    };
    let _ = code;
    let e = ringfence_linux::vmm::power_off();
    eprintln!("ringfence guest: powering off: {e}");
    std::process::exit(125)
}

fn run() -> Result<i32> {
    mount("proc", "/proc", None)?;
    let at_main = uptime_ms();
    mount("sysfs", "/sys", None)?;
    mount("devtmpfs", "/dev", None)?;
    let _ = mount("cgroup2", "/sys/fs/cgroup", None);
    let _ = mount("devpts", "/dev/pts", Some("ptmxmode=0666,newinstance"));
    let _ = mount("tmpfs", "/dev/shm", None);
    ringfence_linux::mounts::loopback_up().map_err(|e| anyhow::anyhow!("loopback: {e}"))?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let job_path = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rfjob="))
        .context("no rfjob= on the kernel's command line")?;
    let job: GuestJob = serde_json::from_slice(
        &std::fs::read(job_path).with_context(|| format!("reading {job_path}"))?,
    )
    .context("reading the guest's job")?;
    let open = |name: &str, write: bool| -> Result<File> {
        let p = port(name)?;
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&p)
            .with_context(|| format!("opening {}", p.display()))
    };
    let mux_path = port("rf.mux")?;
    let mux_file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&mux_path)
        .with_context(|| format!("opening {}", mux_path.display()))?;
    let tx = Sender::new(mux_file.try_clone()?);
    let streams = Streams::default();
    // Streams the host opens never exist: numbers are the guest's.
    let next = Arc::new(AtomicU32::new(1));
    for p in [HTTP_PORT, SOCKS_PORT] {
        let l = TcpListener::bind(("127.0.0.1", p))
            .with_context(|| format!("listening on the guest's 127.0.0.1:{p}"))?;
        let (tx, streams, next) = (tx.clone(), streams.clone(), next.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if tx.send(mux::OPEN, id, &p.to_be_bytes()).is_err() {
                    break;
                }
                streams.attach(id, s, tx.clone());
            }
        });
    }
    // The command's stdin: a pipe that a thread fills with what the host side sends (a
    // command that does not read its stdin stalls only that thread, up to 64 chunks).
    let (stdin_r, mut stdin_w) = std::io::pipe().context("a pipe for the command's stdin")?;
    let (stdin_tx, stdin_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(64);
    std::thread::spawn(move || {
        while let Ok(chunk) = stdin_rx.recv() {
            if std::io::Write::write_all(&mut stdin_w, &chunk).is_err() {
                break;
            }
        }
    });
    {
        let streams = streams.clone();
        std::thread::spawn(move || {
            let mut stdin_tx = Some(stdin_tx);
            let _ = mux::receive(mux_file, &streams, |e| {
                if let mux::Event::Stdin(chunk) = e {
                    if chunk.is_empty() {
                        stdin_tx = None;
                    } else if let Some(t) = &stdin_tx {
                        if t.send(chunk).is_err() {
                            stdin_tx = None;
                        }
                    }
                }
            });
        });
    }
    let init_ms = std::env::var("rft_init")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    let root_ms = std::env::var("rft_root")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    let before_run = uptime_ms();
    if job.timing {
        let _ = tx.send(
            mux::TIMING,
            0,
            format!(
                "guest kernel boot to /init: {} ms, initramfs modules and 9p root: {} ms, PID 1 mounts and ports: {} ms",
                init_ms.map_or(0, |s| (s * 1000.0) as u64),
                match (init_ms, root_ms) {
                    (Some(a), Some(b)) => ((b - a) * 1000.0) as u64,
                    _ => 0,
                },
                before_run.saturating_sub(root_ms.map_or(at_main, |s| (s * 1000.0) as u64)),
            )
            .as_bytes(),
        );
    }
    // The inner run's state and caches on the guest's own memory (the 9p tree is the host
    // side's), owned by the user the inner run starts as.
    mount(
        "tmpfs",
        &job.scratch.display().to_string(),
        Some(&format!("mode=0700,uid={},gid={}", job.uid, job.gid)),
    )?;
    let state = job.scratch.join("state");
    let mut settings_args = Vec::new();
    if let Some(content) = &job.settings {
        let path = job.scratch.join("settings.json");
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        settings_args = vec!["-s".to_string(), path.display().to_string()];
    }
    let mut cmd = Command::new(&job.exe);
    // Not as the guest's root: the files of the 9p share belong to the host-side command's
    // ids, and a root of the guest would lose its power over them in the inner sandbox's user
    // namespace (where they are unmapped) while the owner's bits would not apply to it.
    // `uid` also clears the supplementary groups.
    cmd.uid(job.uid).gid(job.gid);
    cmd.arg("run")
        .args(&settings_args)
        .args(&job.run_args)
        .env_clear()
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .env("XDG_STATE_HOME", &state)
        // The sandbox caches of the host side are read-only here: the inner run keeps its own.
        .env("XDG_CACHE_HOME", job.scratch.join("cache"))
        .current_dir(&job.cwd)
        .stdin(stdin_r)
        .stdout(open("rf.stdout", true)?)
        .stderr(open("rf.stderr", true)?);
    tx.send(mux::STARTED, 0, b"")
        .context("telling the host side the guest started")?;
    let status = cmd
        .status()
        .with_context(|| format!("starting {} run in the guest", job.exe.display()))?;
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    if job.timing {
        let _ = tx.send(
            mux::TIMING,
            0,
            format!(
                "inner run (namespace sandbox and command): {} ms",
                uptime_ms() - before_run
            )
            .as_bytes(),
        );
    }
    tx.send(mux::EXIT, 0, &code.to_be_bytes())
        .context("reporting the exit status")?;
    Ok(code)
}
