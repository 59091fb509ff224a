//! Resource limits: their defaults, byte-size parsing ("512M", "4G") and how layers combine
//! (managed values are maxima, a project file may only lower a value).

use crate::settings::LimitSettings;
use crate::{Error, Layer};

const KIB: u64 = 1024;
const MIB: u64 = KIB * 1024;
const GIB: u64 = MIB * 1024;

/// Resource limits of one sandbox. `None` means no limit of that kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of processes and threads.
    pub pids: u64,
    /// Maximum memory of the whole sandbox (all of its processes together), in bytes.
    pub memory: u64,
    /// CPU time in seconds.
    pub cpu_seconds: Option<u64>,
    /// Wall-clock time in seconds.
    pub wall_seconds: Option<u64>,
    /// Maximum number of open file descriptors per process.
    pub open_files: u64,
    /// Largest file a process may write, in bytes.
    pub file_size: Option<u64>,
    /// Size of the sandbox's scratch space (`/tmp`) in bytes.
    pub tmp_size: u64,
}

/// The memory limit when the machine's memory is not known (an embedder that does not pass it).
pub const UNKNOWN_MACHINE_MEMORY_LIMIT: u64 = 8 * GIB;

/// The default `limits.memory` on a machine with `machine_memory` bytes of RAM (MemTotal):
/// half of it, rounded down to a whole MiB. The sandbox runs beside the user's own programs
/// (desktop, browser, the agent's host side) and cannot know what they need; half leaves the
/// host responsive even while a runaway build sits at its limit, and scales with the machine
/// (a fixed 8G bounded nothing on an 8 GiB laptop). Builds that need more set `limits.memory`.
pub fn default_memory(machine_memory: u64) -> u64 {
    (machine_memory / 2 / MIB).max(1) * MIB
}

impl Limits {
    /// The defaults for a machine with this much memory (`None`: not known, see
    /// [`UNKNOWN_MACHINE_MEMORY_LIMIT`]).
    pub fn for_machine(machine_memory: Option<u64>) -> Limits {
        Limits {
            memory: machine_memory.map_or(UNKNOWN_MACHINE_MEMORY_LIMIT, default_memory),
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pids: 1024,
            memory: UNKNOWN_MACHINE_MEMORY_LIMIT,
            cpu_seconds: None,
            wall_seconds: None,
            open_files: 4096,
            file_size: None,
            tmp_size: GIB,
        }
    }
}

/// Key names in the settings file, in the order of [`Limits::values`].
pub(crate) const LIMIT_KEYS: [&str; 7] = [
    "pids",
    "memory",
    "cpuSeconds",
    "wallSeconds",
    "openFiles",
    "fileSize",
    "tmpSize",
];

fn is_size_key(key: &str) -> bool {
    matches!(key, "memory" | "fileSize" | "tmpSize")
}

impl Limits {
    fn values(&self) -> [Option<u64>; 7] {
        [
            Some(self.pids),
            Some(self.memory),
            self.cpu_seconds,
            self.wall_seconds,
            Some(self.open_files),
            self.file_size,
            Some(self.tmp_size),
        ]
    }

    fn set_values(&mut self, v: [Option<u64>; 7]) {
        // The always-present limits only ever receive `Some` (merge never clears a value),
        // so the fallbacks to the current value are never taken.
        self.pids = v[0].unwrap_or(self.pids);
        self.memory = v[1].unwrap_or(self.memory);
        self.cpu_seconds = v[2];
        self.wall_seconds = v[3];
        self.open_files = v[4].unwrap_or(self.open_files);
        self.file_size = v[5];
        self.tmp_size = v[6].unwrap_or(self.tmp_size);
    }
}

impl LimitSettings {
    pub(crate) fn values(&self) -> [Option<u64>; 7] {
        [
            self.pids,
            self.memory.map(|s| s.0),
            self.cpu_seconds,
            self.wall_seconds,
            self.open_files,
            self.file_size.map(|s| s.0),
            self.tmp_size.map(|s| s.0),
        ]
    }
}

fn show(key: &str, v: Option<u64>) -> String {
    match v {
        None => "unlimited".to_string(),
        Some(n) if is_size_key(key) => format_size(n),
        Some(n) => n.to_string(),
    }
}

/// Applies one layer's limits. `managed` holds the values the managed layer set (maxima for
/// every later layer).
pub(crate) fn merge_limits(
    limits: &mut Limits,
    managed: &mut [Option<u64>; 7],
    layer: Layer,
    origin: &str,
    settings: &LimitSettings,
) -> Result<(), Error> {
    let mut current = limits.values();
    for (i, new) in settings.values().into_iter().enumerate() {
        let Some(new) = new else { continue };
        let key = format!("limits.{}", LIMIT_KEYS[i]);
        match layer {
            Layer::Managed => managed[i] = Some(new),
            _ => {
                if let Some(max) = managed[i] {
                    if new > max {
                        return Err(Error::ManagedConflict {
                            origin: origin.to_string(),
                            key,
                            message: format!(
                                "{} is above the managed maximum {}",
                                show(LIMIT_KEYS[i], Some(new)),
                                show(LIMIT_KEYS[i], Some(max))
                            ),
                        });
                    }
                }
                if layer == Layer::Project && current[i].is_some_and(|cur| new > cur) {
                    return Err(Error::ProjectWidens {
                        origin: origin.to_string(),
                        key,
                        hint: format!(
                            "{} would raise the limit of {}; move this to \
                             ~/.config/ringfence/settings.json",
                            show(LIMIT_KEYS[i], Some(new)),
                            show(LIMIT_KEYS[i], current[i])
                        ),
                    });
                }
            }
        }
        current[i] = Some(new);
    }
    limits.set_values(current);
    Ok(())
}

/// Parses a byte size: a plain number of bytes, or an integer with a `K`, `M`, `G` or `T`
/// suffix (powers of 1024, case-insensitive, optionally followed by `B` or `iB`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(digits_end);
    let bad = || format!("expected a size like \"512M\" or \"4G\", found \"{text}\"");
    if digits.is_empty() {
        return Err(bad());
    }
    let suffix = suffix.to_ascii_uppercase();
    let unit = match suffix.trim_end_matches("IB").trim_end_matches('B') {
        "" if suffix.is_empty() || suffix == "B" => 1,
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => GIB * 1024,
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(unit)
        .ok_or_else(|| format!("size \"{text}\" is too large"))?;
    if bytes == 0 {
        return Err(format!("size \"{text}\" must be larger than zero"));
    }
    Ok(bytes)
}

/// Formats a byte count the way [`parse_size`] reads it back ("8G", "1536M", "100").
pub fn format_size(bytes: u64) -> String {
    for (unit, suffix) in [(GIB * 1024, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
        if bytes >= unit && bytes.checked_rem(unit) == Some(0) {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults() {
        let l = Limits::for_machine(Some(24 << 30));
        assert_eq!(l.pids, 1024);
        assert_eq!(l.memory, 12 << 30);
        assert_eq!(l.open_files, 4096);
        assert_eq!(l.tmp_size, 1 << 30);
        assert_eq!(
            (l.cpu_seconds, l.wall_seconds, l.file_size),
            (None, None, None)
        );
    }

    #[test]
    fn memory_default_is_half_the_machine() {
        assert_eq!(default_memory(8 << 30), 4 << 30);
        // MemTotal is rarely a round number: rounded down to a whole MiB.
        assert_eq!(default_memory(16_318_000 * 1024), 7967 << 20);
        assert_eq!(default_memory(1024), 1 << 20);
        assert_eq!(
            Limits::for_machine(None).memory,
            UNKNOWN_MACHINE_MEMORY_LIMIT
        );
        assert_eq!(Limits::for_machine(None), Limits::default());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("4GB").unwrap(), 4 << 30);
        assert_eq!(parse_size("2T").unwrap(), 2 << 40);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("10B").unwrap(), 10);
        for bad in [
            "",
            "G",
            "1.5G",
            "-1",
            "4X",
            "4 G G",
            "0",
            "0M",
            "99999999999T",
            "iB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in ["8G", "1536M", "100", "3K", "2T"] {
            assert_eq!(format_size(parse_size(s).unwrap()), s);
        }
    }
}
