//! `ringfence __vm-host`: the command of the host-side namespace sandbox. Starts QEMU
//! (`microvm`, dying with this process), relays the command's stdio over three
//! virtio-serial ports, connects each stream the guest opens to the supervisor's proxy in
//! this sandbox's network namespace, and exits with the status the guest's PID 1 reports.
//! Its sockets, the guest's job and the console log live in one scratch directory, removed
//! on every path (and on the private /tmp of the sandbox, which ends with the run anyway).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::mux::{self, Event, Sender, Streams};
use super::{Accel, GuestJob, HostJob, GUEST_MARK};
use crate::netenv::{HTTP_PORT, SOCKS_PORT};

/// The directory of one VM's files; removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// stdin travels on the channel (an end of a virtio-serial port that the host closes before
// the guest opened it is lost, with what it held).
const PORTS: [&str; 3] = ["rf.mux", "rf.stdout", "rf.stderr"];

/// The QEMU command line (a pure function of the job, tested as such).
pub fn qemu_args(job: &HostJob, scratch: &Path, guest_job: &Path, fds: &[i32]) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
    push(&["-M", "microvm,x-option-roms=off,rtc=off"]);
    match job.accel {
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host"]),
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
    }
    push(&["-m", &format!("{}M", job.memory_mib)]);
    push(&["-smp", &job.cpus.to_string()]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-no-reboot",
        "-display",
        "none",
    ]);
    push(&[
        "-serial",
        &format!("file:{}", scratch.join("console.log").display()),
    ]);
    push(&["-kernel", &job.boot_kernel.display().to_string()]);
    push(&["-initrd", &job.initramfs.display().to_string()]);
    let mut append = format!(
        "console=ttyS0 quiet panic=-1 reboot=t {GUEST_MARK} rfexe={} rfjob={}",
        job.exe.display(),
        guest_job.display()
    );
    if let Some(khz) = job.tsc_khz {
        append.push_str(&format!(" tsc_early_khz={khz} tsc=reliable"));
    }
    push(&["-append", &append]);
    // The root of this sandbox, as its mount plan shows it (denied paths absent, the host tree
    // read-only): the VMM can share no more than it sees.
    push(&[
        "-fsdev",
        "local,id=root,path=/,security_model=none,multidevs=remap",
        "-device",
        "virtio-9p-device,fsdev=root,mount_tag=root",
        "-device",
        "virtio-serial-device,max_ports=5",
    ]);
    // Connected socket pairs, not paths: the sandbox's seccomp filter refuses `socket(AF_UNIX)`
    // (and nothing else can reach a pair).
    for (i, (name, fd)) in PORTS.iter().zip(fds).enumerate() {
        push(&[
            "-chardev",
            &format!("socket,id=c{i},fd={fd}"),
            "-device",
            &format!("virtserialport,chardev=c{i},name={name}"),
        ]);
    }
    a
}

fn copy_thread(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() || to.flush().is_err() {
                        break;
                    }
                }
            }
        }
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

pub fn main(job: &str) -> Result<i32> {
    let started = Instant::now();
    let job: HostJob = serde_json::from_str(job).context("reading the VM job")?;
    let dir = std::env::temp_dir().join(format!("ringfence-vm-{}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = Scratch(dir);
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for name in PORTS {
        let (a, b) = UnixStream::pair().with_context(|| format!("a socket pair for {name}"))?;
        ringfence_linux::sys::set_cloexec(b.as_raw_fd(), false)
            .with_context(|| format!("passing {name} to the VMM"))?;
        ours.push(a);
        theirs.push(b);
    }
    let fds: Vec<i32> = theirs.iter().map(|s| s.as_raw_fd()).collect();
    let guest_job_path = scratch.0.join("job.json");
    let guest = GuestJob {
        run_args: job.run_args.clone(),
        settings: job.settings.clone(),
        exe: job.exe.clone(),
        cwd: std::env::current_dir().context("the working directory")?,
        env: std::env::vars().collect(),
        scratch: scratch.0.clone(),
        timing: job.timing,
        uid: ringfence_linux::sys::getuid(),
        gid: ringfence_linux::sys::getgid(),
    };
    std::fs::write(&guest_job_path, serde_json::to_vec(&guest)?)
        .with_context(|| format!("writing {}", guest_job_path.display()))?;
    let qemu_log = scratch.0.join("qemu.log");
    let mut cmd = Command::new(&job.machine.qemu);
    cmd.args(qemu_args(&job, &scratch.0, &guest_job_path, &fds))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&qemu_log)?);
    let mut child = ringfence_linux::vmm::spawn_dying_with_parent(&mut cmd)
        .with_context(|| format!("starting {}", job.machine.qemu.display()))?;
    // The VMM has its copies: its ends close with it.
    drop(theirs);
    let result = serve(&job, &scratch, ours, &mut child, started);
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(Some(code)) => Ok(code),
        Ok(None) => {
            eprintln!(
                "ringfence: the VM ended without the command's status; its console:\n{}\n{}",
                tail(&scratch.0.join("console.log"), 20),
                tail(&qemu_log, 5)
            );
            Ok(125)
        }
        Err(e) => {
            eprintln!(
                "ringfence: {e:#}\n{}\n{}",
                tail(&scratch.0.join("console.log"), 20),
                tail(&qemu_log, 5)
            );
            Ok(125)
        }
    }
}

fn serve(
    job: &HostJob,
    _scratch: &Scratch,
    conns: Vec<UnixStream>,
    child: &mut std::process::Child,
    started: Instant,
) -> Result<Option<i32>> {
    let vmm_ms = started.elapsed().as_millis();
    let mut conns = conns.into_iter();
    let (Some(mux_conn), Some(stdout_conn), Some(stderr_conn)) =
        (conns.next(), conns.next(), conns.next())
    else {
        bail!("the VMM's ports");
    };
    let out = copy_thread(stdout_conn, std::io::stdout());
    let err = copy_thread(stderr_conn, std::io::stderr());
    let tx = Sender::new(mux_conn.try_clone()?);
    // stdin: to the guest until its end. Not joined: reading our stdin may block past the
    // command's end.
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(mux::STDIN, 0, &buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(mux::STDIN, 0, b"");
        });
    }
    let streams = Streams::default();
    let mut code = None;
    let timing = job.timing;
    if timing {
        eprintln!("ringfence: vm timing: VMM spawned: {vmm_ms} ms");
    }
    // A guest that does not come up (a kernel that hangs early) ends the run with 125 rather
    // than waiting forever.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let limit = boot_timeout(job.accel);
    let vmm = child.id() as libc::pid_t;
    let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = started_rx.recv_timeout(limit)
            {
                timed_out.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = ringfence_linux::sys::kill(vmm, libc::SIGKILL);
            }
        });
    }
    let r = mux::receive(mux_conn, &streams, |e| match e {
        // Only the proxy's ports: the guest reaches nothing else of this network namespace.
        Event::Open { id, port } if port == HTTP_PORT || port == SOCKS_PORT => {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => streams.attach(id, s, tx.clone()),
                Err(_) => {
                    let _ = tx.send(mux::CLOSE, id, b"");
                }
            }
        }
        Event::Open { id, .. } => {
            let _ = tx.send(mux::CLOSE, id, b"");
        }
        Event::Started => {
            let _ = started_tx.send(());
            if timing {
                eprintln!(
                    "ringfence: vm timing: inner run starting (host clock {} ms)",
                    started.elapsed().as_millis()
                );
            }
        }
        Event::Exit(c) => code = Some(c),
        Event::Stdin(_) => {}
        Event::Timing(t) => {
            if timing {
                eprintln!(
                    "ringfence: vm timing: {t} (host clock {} ms)",
                    started.elapsed().as_millis()
                );
            }
        }
    });
    let _ = child.wait();
    let _ = out.join();
    let _ = err.join();
    if code.is_none() && timed_out.load(std::sync::atomic::Ordering::SeqCst) {
        bail!(
            "the guest did not start within {} s (--vm-accel {}); the VM was stopped",
            limit.as_secs(),
            job.accel.name()
        );
    }
    if code.is_none() {
        r.context("the channel to the guest")?;
    }
    Ok(code)
}

/// How long the guest may take to reach its PID 1's run: TCG is slow, and slower on a
/// loaded host.
fn boot_timeout(accel: Accel) -> std::time::Duration {
    std::time::Duration::from_secs(match accel {
        Accel::Kvm => 30,
        Accel::Tcg => 300,
    })
}
