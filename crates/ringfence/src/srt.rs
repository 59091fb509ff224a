//! The srt-compatible entry point: invoked as `srt` (a symlink to ringfence), the command line
//! is srt's: `srt [-d] [-s FILE] [-c STRING] [COMMAND...]`, settings from `~/.srt-settings.json`
//! unless `-s` names a file (which must then exist).

use anyhow::{bail, Result};

use crate::prepare::Sources;
use crate::{run, shell_argv, RunRequest};

pub fn main() -> Result<i32> {
    let mut args = std::env::args_os().skip(1);
    let mut sources = Sources {
        srt: true,
        ..Sources::default()
    };
    let mut debug = false;
    let mut control_fd = None;
    let mut script = None;
    let mut command: Vec<Vec<u8>> = Vec::new();
    while let Some(a) = args.next() {
        let s = a.to_string_lossy().into_owned();
        if !command.is_empty() {
            command.push(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec());
            continue;
        }
        match s.as_str() {
            "-d" | "--debug" => debug = true,
            "-s" | "--settings" => match args.next() {
                Some(f) => sources.settings = Some(f.into()),
                None => bail!("{s}: a settings file is required"),
            },
            "-c" => match args.next() {
                Some(c) => script = Some(c.to_string_lossy().into_owned()),
                None => bail!("-c: a command string is required"),
            },
            "--control-fd" => match args.next().map(|f| f.to_string_lossy().parse::<i32>()) {
                Some(Ok(fd)) => control_fd = Some(fd),
                _ => bail!("--control-fd: a file descriptor number is required"),
            },
            "-h" | "--help" => {
                println!("Usage: srt [-d] [-s FILE] [-c 'COMMAND STRING'] [COMMAND...]\n(ringfence in srt-compatible mode; see `ringfence --help`)");
                return Ok(0);
            }
            "-V" | "--version" => {
                println!("{} (ringfence)", env!("CARGO_PKG_VERSION"));
                return Ok(0);
            }
            "--" => {
                command.extend(
                    args.by_ref()
                        .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec()),
                );
            }
            _ if s.starts_with("--control-fd=") => match s["--control-fd=".len()..].parse() {
                Ok(fd) => control_fd = Some(fd),
                Err(_) => bail!("{s}: a file descriptor number is required"),
            },
            _ if s.starts_with("--settings=") => {
                sources.settings = Some(s["--settings=".len()..].into());
            }
            _ if s.starts_with('-') && command.is_empty() => {
                bail!("{s}: unknown option (srt-compatible mode)")
            }
            _ => command.push(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec()),
        }
    }
    let argv = match (script, command.is_empty()) {
        (Some(s), _) => shell_argv(&s),
        (None, false) => command,
        (None, true) => {
            bail!("no command specified; use -c <command> or provide command arguments")
        }
    };
    run(RunRequest {
        vm: None,
        sources,
        debug,
        name: None,
        log: None,
        violations_to_stderr: false,
        control_fd,
        overlay: false,
        transparent: false,
        argv,
    })
}
