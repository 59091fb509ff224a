//! `--isolation vm`: the command runs in a virtual machine with a kernel of its own, under the
//! same policy, proxy and log as a namespace run.
//!
//! The layers, outside in (see ARCHITECTURE.md):
//! 1. the supervisor runs its usual namespace sandbox (`run.rs`), whose command is
//!    `ringfence __vm-host` (`host::main`): QEMU's `microvm` started from there sees only what
//!    the mount plan shows, and the sandbox's network namespace holds the supervisor's proxy;
//! 2. the guest kernel (Debian's) boots a small initramfs (`initramfs`) that loads the virtio
//!    and 9p modules, mounts the sandbox's root through 9p and switches to `ringfence
//!    __vm-guest` (`guest::main`) as PID 1;
//! 3. PID 1 runs `ringfence run` with the same arguments: the namespace sandbox again, inside
//!    the guest, whose proxy relays to PID 1's endpoint on the guest's loopback.
//!
//! The guest has no network device. Its one way out is a virtio-serial port that carries TCP
//! streams, multiplexed (`mux`), to the host side, which connects each to the supervisor's
//! proxy: the same domain policy, questions and activity log. (vsock would do the same job;
//! it needs the host's vhost_vsock module, which many hosts, this project's CI among them, lack.)

pub mod guest;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod mux;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The hidden subcommands of the two inner layers.
pub const HOST_COMMAND: &str = "__vm-host";
pub const GUEST_COMMAND: &str = "__vm-guest";
/// On the guest kernel's command line; `ringfence run` inside the guest relays its proxy
/// to PID 1 only when it is there (never on a host).
pub const GUEST_MARK: &str = "ringfence.guest=1";
/// The memory the VMM keeps for itself out of `limits.memory`.
pub const VMM_RESERVE_MIB: u64 = 96;

/// How the VM is accelerated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm (the default).
    Kvm,
    /// QEMU's binary translation: no /dev/kvm needed, many times slower. Only when asked.
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// What a VM run needs from the host, found before anything starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub kernel_version: String,
    pub modules: PathBuf,
    pub busybox: PathBuf,
}

/// The job of `__vm-host`, passed as one JSON argument.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostJob {
    pub machine: Machine,
    /// What QEMU boots: the cached uncompressed kernel, or the bzImage (`kernel::cached`).
    pub boot_kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    pub memory_mib: u64,
    pub cpus: u32,
    /// `ringfence run`'s arguments for the guest (without the isolation options and without
    /// `-s`, whose file the guest may not see: its content is `settings`).
    pub run_args: Vec<String>,
    /// The content of the `-s` policy file, read by the supervisor.
    pub settings: Option<String>,
    pub exe: PathBuf,
    /// Print the boot's timings on stderr (RINGFENCE_TIMING on the supervisor).
    pub timing: bool,
    /// The host's time-stamp counter rate (kHz), given to a TCG guest, whose kernel cannot
    /// calibrate it reliably on a loaded host.
    pub tsc_khz: Option<u64>,
}

/// The job of `__vm-guest`, written by `__vm-host` where the guest reads it through 9p.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestJob {
    pub run_args: Vec<String>,
    /// The `-s` policy file's content, which PID 1 writes where the inner run reads it.
    pub settings: Option<String>,
    pub exe: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    /// Where the guest keeps the inner run's state and log (the host side's scratch directory).
    pub scratch: PathBuf,
    pub timing: bool,
    /// The host-side command's ids, which the VMM's 9p share reports as the owner of what it
    /// may use: the inner run starts with them (as an unprivileged user of the guest), so
    /// that the owner's permission bits apply to it in the guest as they do to the VMM.
    pub uid: u32,
    pub gid: u32,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether an ELF file asks for a program interpreter (is dynamically linked).
fn is_dynamic(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let u16at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64at = |o: usize| {
        data.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if data.get(..5) != Some(b"\x7fELF\x02") {
        bail!("{} is not a 64-bit ELF file", path.display());
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64at(0x20), u16at(0x36), u16at(0x38))
    else {
        bail!("{}: truncated ELF header", path.display());
    };
    for i in 0..phnum as usize {
        // PT_INTERP
        if u32at(phoff as usize + i * phentsize as usize) == Some(3) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The newest Debian kernel in /boot with its modules.
fn find_kernel() -> Result<(PathBuf, String, PathBuf)> {
    let mut found: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    for e in std::fs::read_dir("/boot")
        .context("reading /boot")?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(version) = name.strip_prefix("vmlinuz-") else {
            continue;
        };
        let modules = PathBuf::from("/lib/modules").join(version);
        if modules.join("kernel/fs/9p/9p.ko").is_file() {
            found.push((version.to_string(), e.path(), modules));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    match found.pop() {
        Some((v, k, m)) => Ok((k, v, m)),
        None => bail!(
            "no guest kernel: /boot/vmlinuz-VERSION with 9p modules in /lib/modules/VERSION; \
             install the Debian package linux-image-amd64"
        ),
    }
}

/// The VMM, kernel and busybox, or why this host cannot run a VM.
pub fn machine() -> Result<Machine> {
    let qemu = find_in_path("qemu-system-x86_64").context(
        "qemu-system-x86_64 not found in PATH; install the Debian package qemu-system-x86",
    )?;
    let (kernel, kernel_version, modules) = find_kernel()?;
    std::fs::File::open(&kernel)
        .with_context(|| format!("the guest kernel {} is not readable", kernel.display()))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("busybox not found; install the Debian package busybox-static")?;
    if is_dynamic(&busybox)? {
        bail!(
            "{} is linked dynamically; the initramfs needs busybox-static",
            busybox.display()
        );
    }
    Ok(Machine {
        qemu,
        kernel,
        kernel_version,
        modules,
        busybox,
    })
}

/// Whether `accel` can run a VM here; the error says why not, by name.
pub fn check_accel(accel: Accel) -> Result<()> {
    match accel {
        Accel::Tcg => Ok(()),
        Accel::Kvm => {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/kvm")
                .context("KVM: /dev/kvm cannot be opened for reading and writing (absent, or not this user's); use --vm-accel tcg to run without hardware virtualization (slow)")?;
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            let hardware = cpuinfo.lines().any(|l| {
                l.starts_with("flags") && l.split_whitespace().any(|f| f == "vmx" || f == "svm")
            });
            if Path::new("/sys/module/kvm_pvm").exists() && !hardware {
                bail!(
                    "KVM: this host's /dev/kvm is PVM (kernel module kvm_pvm, no vmx/svm in the \
                     CPU flags), which runs only kernels built for PVM: the Debian kernel crawls \
                     through its first instructions and does not boot; use --vm-accel tcg to run \
                     without hardware virtualization (slow)"
                );
            }
            // The VMM runs in the host-side sandbox, whose minimal /dev has no kvm node yet:
            // QEMU would fail there with a less clear message.
            bail!(
                "KVM: /dev/kvm is not yet passed into the host-side sandbox that runs the VMM; \
                 use --vm-accel tcg to run without hardware virtualization (slow)"
            )
        }
    }
}

/// The guest's memory in MiB for `limits.memory` (the VMM's own share kept out of it).
pub fn guest_memory_mib(limit: u64) -> Result<u64> {
    let mib = limit >> 20;
    if mib < VMM_RESERVE_MIB + 128 {
        bail!(
            "limits.memory: {mib} MiB is too small for --isolation vm (at least {} MiB: 128 for \
             the guest, {VMM_RESERVE_MIB} for the VMM)",
            VMM_RESERVE_MIB + 128
        );
    }
    Ok(mib - VMM_RESERVE_MIB)
}

/// `run_args` without its `-s FILE` (in any of its spellings, before `--`), and that FILE.
pub fn split_settings(run_args: &[String]) -> (Vec<String>, Option<PathBuf>) {
    let mut out = Vec::new();
    let mut file = None;
    let mut it = run_args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            out.push(a.clone());
            out.extend(it.cloned());
            break;
        }
        if a == "-s" || a == "--settings" {
            file = it.next().map(PathBuf::from);
        } else if let Some(v) = a.strip_prefix("--settings=") {
            file = Some(PathBuf::from(v));
        } else if let Some(v) = a.strip_prefix("-s").filter(|v| !v.is_empty()) {
            file = Some(PathBuf::from(v.strip_prefix('=').unwrap_or(v)));
        } else {
            out.push(a.clone());
        }
    }
    (out, file)
}

/// The guest's vCPUs: the CPUs this process may run on.
pub fn cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// `ringfence doctor`'s line for each accelerator.
pub fn availability() -> Vec<(Accel, Result<()>)> {
    let m = machine().map(drop);
    [Accel::Kvm, Accel::Tcg]
        .into_iter()
        .map(|a| {
            let r = match &m {
                Err(e) => Err(anyhow::anyhow!("{e:#}")),
                Ok(()) => check_accel(a),
            };
            (a, r)
        })
        .collect()
}

/// Whether this process runs inside a ringfence guest (its kernel was booted with the mark).
pub fn in_guest() -> bool {
    std::fs::read_to_string("/proc/cmdline")
        .map(|c| c.split_whitespace().any(|w| w == GUEST_MARK))
        .unwrap_or(false)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_settings_file_is_taken_out_of_the_guests_arguments() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for args in [
            v(&["-s", "/tmp/p.json", "--", "-s", "x"]),
            v(&["--settings", "/tmp/p.json", "--", "-s", "x"]),
            v(&["--settings=/tmp/p.json", "--", "-s", "x"]),
            v(&["-s/tmp/p.json", "--", "-s", "x"]),
        ] {
            let (rest, file) = super::split_settings(&args);
            assert_eq!(rest, v(&["--", "-s", "x"]), "{args:?}");
            assert_eq!(file.unwrap().to_str().unwrap(), "/tmp/p.json");
        }
        let (rest, file) = super::split_settings(&v(&["-c", "true"]));
        assert_eq!(rest, v(&["-c", "true"]));
        assert!(file.is_none());
    }
}
