//! The guest's initramfs, built from the host's own files at run time and cached per kernel
//! version: busybox-static, the modules the guest needs to reach its disk (virtio-mmio,
//! virtio-serial, 9p; overlay for the inner sandbox's overlay mode) and an /init that mounts
//! the sandbox's root through 9p and hands PID 1 to `ringfence __vm-guest`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Machine;

/// In load order (each after its dependencies).
pub const MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/char/virtio_console.ko",
    "net/9p/9pnet.ko",
    "net/9p/9pnet_virtio.ko",
    "fs/netfs/netfs.ko",
    "fs/fscache/fscache.ko",
    "fs/9p/9p.ko",
    "fs/overlayfs/overlay.ko",
];

/// `rfexe` and `rfjob` come from the kernel's command line (as environment variables).
const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
fail() { echo "ringfence guest init: $*" >&2; $B poweroff -f; }
$B mount -t proc proc /proc
export rft_init=$($B cut -d' ' -f1 /proc/uptime)
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules); do $B insmod "/lib/m/$m" || fail "loading $m"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 root /newroot || fail "mounting the root through 9p"
export rft_root=$($B cut -d' ' -f1 /proc/uptime)
$B umount /proc
$B umount /dev
exec $B switch_root /newroot "$rfexe" __vm-guest
"#;

/// One file of a `newc` cpio archive.
fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let header = format!(
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    );
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The archive's bytes.
pub fn archive(m: &Machine) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut add = |out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]| {
        entry(out, ino, name, mode, data);
        ino += 1;
    };
    for d in ["bin", "dev", "proc", "newroot", "lib", "lib/m"] {
        add(&mut out, d, 0o040755, b"");
    }
    let busybox =
        std::fs::read(&m.busybox).with_context(|| format!("reading {}", m.busybox.display()))?;
    add(&mut out, "bin/busybox", 0o100755, &busybox);
    let mut list = String::new();
    for rel in MODULES {
        let path = m.modules.join("kernel").join(rel);
        let data = std::fs::read(&path).with_context(|| {
            format!(
                "reading the guest module {} (from linux-image-{})",
                path.display(),
                m.kernel_version
            )
        })?;
        let name = rel.rsplit('/').next().unwrap_or(rel);
        add(&mut out, &format!("lib/m/{name}"), 0o100644, &data);
        list.push_str(name);
        list.push('\n');
    }
    add(&mut out, "modules", 0o100644, list.as_bytes());
    add(&mut out, "init", 0o100755, INIT.as_bytes());
    entry(&mut out, 0, "TRAILER!!!", 0, b"");
    Ok(out)
}

fn fingerprint(s: &str) -> u64 {
    // FNV-1a: the cache name changes with the init script and the module list.
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The cached initramfs for this kernel, built when missing.
pub fn cached(m: &Machine, cache_root: &Path) -> Result<PathBuf> {
    let dir = cache_root.join("vm");
    let key = fingerprint(&format!("{INIT}{}", MODULES.join(",")));
    let path = dir.join(format!("initramfs-{}-{key:016x}.cpio", m.kernel_version));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let data = archive(m)?;
    let tmp = dir.join(format!(".initramfs-{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn newc_entries_are_aligned() {
        let mut out = Vec::new();
        super::entry(&mut out, 1, "init", 0o100755, b"abc");
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[110..115], b"init\0");
    }
}
