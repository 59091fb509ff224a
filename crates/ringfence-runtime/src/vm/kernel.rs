//! The guest kernel as QEMU boots it: the uncompressed `vmlinux` taken out of Debian's
//! bzImage once per kernel version and cached beside the initramfs. QEMU enters it at its
//! PVH entry point (already in protected mode), which skips the bzImage's real-mode setup
//! code and its decompression: seconds under TCG. A kernel without a PVH entry, or a payload
//! this host cannot decompress, is booted as the bzImage itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::Machine;

fn u16at(d: &[u8], o: usize) -> Option<u16> {
    d.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32at(d: &[u8], o: usize) -> Option<u32> {
    d.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64at(d: &[u8], o: usize) -> Option<u64> {
    d.get(o..o + 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
}

/// The compressed payload of a bzImage (boot protocol 2.08 and later) and the program that
/// decompresses it. The payload's last four bytes are the uncompressed size, except for gzip,
/// whose own trailer holds it.
pub fn payload(bz: &[u8]) -> Result<(&'static str, &[u8], Option<u32>)> {
    if bz.get(0x202..0x206) != Some(b"HdrS") || u16at(bz, 0x206).unwrap_or(0) < 0x208 {
        bail!("not a bzImage of boot protocol 2.08 or later");
    }
    let setup_sects = match bz.get(0x1f1) {
        Some(0) => 4,
        Some(n) => *n as usize,
        None => bail!("truncated bzImage"),
    };
    let (Some(off), Some(len)) = (u32at(bz, 0x248), u32at(bz, 0x24c)) else {
        bail!("truncated bzImage");
    };
    let start = (setup_sects + 1) * 512 + off as usize;
    let Some(p) = bz.get(start..start + len as usize) else {
        bail!("the bzImage's payload is outside the file");
    };
    let (tool, trailer) = if p.starts_with(b"\xfd7zXZ\x00") {
        ("xz", true)
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        ("zstd", true)
    } else if p.starts_with(&[0x1f, 0x8b]) {
        ("gzip", false)
    } else {
        bail!("the bzImage's payload is compressed in a way not handled here");
    };
    if trailer {
        let Some(size) = u32at(p, p.len().saturating_sub(4)) else {
            bail!("truncated payload");
        };
        Ok((tool, &p[..p.len() - 4], Some(size)))
    } else {
        Ok((tool, p, None))
    }
}

/// Whether an ELF kernel has a PVH entry point (the Xen note PHYS32_ENTRY, type 18).
pub fn has_pvh_note(elf: &[u8]) -> bool {
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64at(elf, 0x20), u16at(elf, 0x36), u16at(elf, 0x38))
    else {
        return false;
    };
    for i in 0..phnum as usize {
        let ph = phoff as usize + i * phentsize as usize;
        // PT_NOTE
        if u32at(elf, ph) != Some(4) {
            continue;
        }
        let (Some(off), Some(size)) = (u64at(elf, ph + 8), u64at(elf, ph + 32)) else {
            continue;
        };
        let (mut at, end) = (off as usize, (off + size) as usize);
        let align4 = |n: usize| (n + 3) & !3;
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32at(elf, at), u32at(elf, at + 4), u32at(elf, at + 8))
            else {
                break;
            };
            let name = elf.get(at + 12..at + 12 + namesz as usize);
            if name == Some(b"Xen\0") && kind == 18 {
                return true;
            }
            at += 12 + align4(namesz as usize) + align4(descsz as usize);
        }
    }
    false
}

fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {tool}"))?;
    let mut stdin = child.stdin.take().context("the decompressor's stdin")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .with_context(|| format!("running {tool}"))?;
    let _ = writer.join();
    if !out.status.success() {
        bail!("{tool} -dc failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// The uncompressed kernel of `bz`, if it has a PVH entry point.
pub fn extract(bz: &[u8]) -> Result<Vec<u8>> {
    let (tool, data, size) = payload(bz)?;
    let elf = decompress(tool, data)?;
    if let Some(size) = size {
        if elf.len() != size as usize {
            bail!("{tool} gave {} bytes, the bzImage says {size}", elf.len());
        }
    }
    if !has_pvh_note(&elf) {
        bail!("the kernel has no PVH entry point");
    }
    Ok(elf)
}

/// The file QEMU boots for this machine's kernel: the cached `vmlinux` (made when missing),
/// or the bzImage where no `vmlinux` with a PVH entry can be had.
pub fn cached(m: &Machine, cache_root: &Path) -> PathBuf {
    let dir = cache_root.join("vm");
    let path = dir.join(format!("vmlinux-{}", m.kernel_version));
    if path.is_file() {
        return path;
    }
    let make = || -> Result<()> {
        let bz = std::fs::read(&m.kernel)?;
        let elf = extract(&bz)?;
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".vmlinux-{}.tmp", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&elf)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(())
    };
    match make() {
        Ok(()) => path,
        Err(_) => m.kernel.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// A 64-bit ELF header, one PT_NOTE program header and one note.
    fn elf_with_note(name: &[u8], kind: u32) -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 56];
        e[..5].copy_from_slice(b"\x7fELF\x02");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        let mut note = Vec::new();
        note.extend_from_slice(&(name.len() as u32).to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&kind.to_le_bytes());
        note.extend_from_slice(name);
        while note.len() % 4 != 0 {
            note.push(0);
        }
        note.extend_from_slice(&0x0100_0000u32.to_le_bytes());
        let ph = 0x40;
        e[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes());
        let at = e.len() as u64;
        e[ph + 8..ph + 16].copy_from_slice(&at.to_le_bytes());
        e[ph + 32..ph + 40].copy_from_slice(&(note.len() as u64).to_le_bytes());
        e.extend_from_slice(&note);
        e
    }

    #[test]
    fn the_pvh_entry_note_is_found() {
        assert!(super::has_pvh_note(&elf_with_note(b"Xen\0", 18)));
        assert!(!super::has_pvh_note(&elf_with_note(b"Xen\0", 17)));
        assert!(!super::has_pvh_note(&elf_with_note(b"GNU\0", 18)));
    }

    #[test]
    fn a_file_that_is_not_a_bzimage_is_refused() {
        assert!(super::payload(&[0u8; 4096]).is_err());
        assert!(!super::has_pvh_note(b"\x7fELF\x02"));
    }
}
