//! The whole-sandbox memory limit, tried from inside real sandboxes: programs that reserve
//! large address space (Node's WebAssembly) run, a memory bomb and a group of processes that
//! together pass the limit are stopped and the run says why, a run started inside a
//! memory-limited cgroup stays bounded by it, and the groups of a supervisor that was killed
//! are removed by a later run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{run, TestDir};
use std::path::PathBuf;

const MIB: u64 = 1 << 20;

/// `python3` on the host, or `None` after a visible skip notice.
fn python() -> Option<()> {
    let Some(python) = common::find_in_path("python3") else {
        common::skip("no python3");
        return None;
    };
    if python.canonicalize().unwrap().starts_with("/tmp") {
        common::skip("python3 lives under /tmp, which is private inside the sandbox");
        return None;
    }
    Some(())
}

/// The `run.end` event of an activity log.
fn run_end(log: &str) -> serde_json::Value {
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["kind"] == "run.end")
        .unwrap_or_else(|| panic!("no run.end in {log}"))
}

/// The run ended because of the memory limit, and the record says so.
fn assert_memory_limit(out: &common::Outcome, dir: &TestDir, limit: u64) {
    assert_eq!(out.code(), 137, "{out:#?}");
    assert!(
        out.stderr
            .contains("ringfence: memory limit of 256M reached"),
        "{out:#?}"
    );
    let end = run_end(&dir.read("run.jsonl"));
    assert_eq!(end["limit"], "memory", "{end}");
    assert_eq!(end["signal"], 9, "{end}");
    assert_eq!(end["memoryLimit"], limit, "{end}");
    // Stopped near the limit: it had reached it, and had not gone on to take much more.
    let used = end["memoryUsed"].as_u64().unwrap();
    assert!(
        (limit / 2..=2 * limit).contains(&used),
        "used {used} of {limit}: {end}"
    );
}

#[test]
fn node_webassembly_and_fetch_work_under_the_default_limits() {
    if !common::have("node") {
        common::skip("no node");
        return;
    }
    // WebAssembly reserves guard regions of many GiB (and fetch's HTTP parser is
    // WebAssembly): a limit on address space breaks both.
    let script = "new WebAssembly.Memory({initial: 1});\n\
        const bytes = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]);\n\
        const http = require('http');\n\
        const s = http.createServer((q, r) => r.end('hello')).listen(0, '127.0.0.1', async () => {\n\
          await WebAssembly.compile(bytes);\n\
          const r = await fetch('http://127.0.0.1:' + s.address().port + '/');\n\
          console.log('fetched ' + (await r.text()));\n\
          s.close();\n\
        });";
    let out = run(common::ringfence(&[]).args(["--", "node", "-e", script]));
    assert_eq!(out.ok(), "fetched hello\n", "{out:#?}");
}

#[test]
fn address_sanitizer_programs_run() {
    if !common::have("cc") {
        common::skip("no C compiler (cc) for an AddressSanitizer program");
        return;
    }
    let dir = TestDir::new("limit-asan");
    dir.write(
        "a.c",
        "#include <stdio.h>\nint main(void) { puts(\"asan ok\"); return 0; }\n",
    );
    let built = run(std::process::Command::new("cc")
        .args(["-fsanitize=address", "-o"])
        .arg(dir.join("a"))
        .arg(dir.join("a.c")));
    if !built.success() {
        common::skip("cc cannot build with -fsanitize=address here");
        return;
    }
    // Its shadow memory is terabytes of writable reservations: no per-process memory limit
    // (address space or data) may stand in its way. (LeakSanitizer's exit check ptraces the
    // program's threads, which the sandbox refuses; it is not what this test is about.)
    let out = run(common::ringfence(&[])
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .arg("--")
        .arg(dir.join("a")));
    assert_eq!(out.ok(), "asan ok\n", "{out:#?}");
}

#[test]
fn memory_bomb_is_stopped_at_the_limit() {
    let Some(()) = python() else { return };
    let dir = TestDir::new("limit-bomb");
    let settings = dir.settings(r#"{"limits":{"memory":"256M","wallSeconds":60}}"#);
    // Grows without end, a MiB at a time, each page touched.
    let bomb = "import time\na = []\nwhile True:\n    a.append(bytearray(1 << 20))\n    time.sleep(0.001)\n";
    let log = dir.s("run.jsonl");
    let name = common::unique("limit-bomb");
    let out = run(
        common::ringfence(&["-s", &settings, "--log", &log, "--name", &name])
            .args(["--", "python3", "-c", bomb]),
    );
    assert_memory_limit(&out, &dir, 256 * MIB);
    // The run record says so too.
    let list = run(std::process::Command::new(common::bin()).arg("log"));
    let line = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} not listed: {list:#?}"));
    assert!(line.contains("memory limit"), "{line}");
}

#[test]
fn processes_that_together_pass_the_limit_are_stopped() {
    let Some(()) = python() else { return };
    let dir = TestDir::new("limit-four");
    let settings = dir.settings(r#"{"limits":{"memory":"256M","wallSeconds":60}}"#);
    // Four processes of 100 MiB each: every one under any per-process limit, together above
    // the sandbox's. Unstopped, they would all sleep and the run end with status 0.
    let script = "for i in 1 2 3 4; do \
        python3 -c 'import time; a = bytearray(100 << 20); time.sleep(30)' & \
        done; wait; echo all-finished";
    let log = dir.s("run.jsonl");
    let out =
        run(common::ringfence(&["-s", &settings, "--log", &log])
            .args(["--", "/bin/sh", "-c", script]));
    assert!(!out.stdout.contains("all-finished"), "{out:#?}");
    assert_memory_limit(&out, &dir, 256 * MIB);
}

#[test]
fn memory_held_in_memfds_counts() {
    let Some(()) = python() else { return };
    let dir = TestDir::new("limit-memfd");
    let settings = dir.settings(r#"{"limits":{"memory":"256M","wallSeconds":60}}"#);
    // Pages written to a memfd are in no process's resident set while nobody maps them.
    let script = "import os, time\n\
        fds = []\n\
        for i in range(6):\n    \
            fd = os.memfd_create('held')\n    \
            os.write(fd, b'x' * (64 << 20))\n    \
            fds.append(fd)\n    \
            time.sleep(0.2)\n\
        print('held 384 MiB')\n";
    let log = dir.s("run.jsonl");
    let out =
        run(common::ringfence(&["-s", &settings, "--log", &log])
            .args(["--", "python3", "-c", script]));
    assert!(!out.stdout.contains("held 384 MiB"), "{out:#?}");
    assert_memory_limit(&out, &dir, 256 * MIB);
}

#[test]
fn memory_in_unattached_sysv_segments_counts() {
    let Some(()) = python() else { return };
    let dir = TestDir::new("limit-sysv");
    let settings = dir.settings(r#"{"limits":{"memory":"256M","wallSeconds":60}}"#);
    // A segment that nobody has attached is in no process's resident set.
    let script = "import ctypes, time\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        libc.shmat.restype = ctypes.c_void_p\n\
        for i in range(6):\n    \
            id = libc.shmget(0, 64 << 20, 0o1600)\n    \
            assert id >= 0, ctypes.get_errno()\n    \
            p = libc.shmat(id, None, 0)\n    \
            ctypes.memset(p, 1, 64 << 20)\n    \
            libc.shmdt(ctypes.c_void_p(p))\n    \
            time.sleep(0.3)\n\
        print('held 384 MiB')\n";
    let log = dir.s("run.jsonl");
    let out =
        run(common::ringfence(&["-s", &settings, "--log", &log])
            .args(["--", "python3", "-c", script]));
    assert!(!out.stdout.contains("held 384 MiB"), "{out:#?}");
    assert_memory_limit(&out, &dir, 256 * MIB);
}

/// Removes a test cgroup (and the `ringfence` group runs made beneath it) when dropped.
struct TestGroup(PathBuf);

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.0.join("ringfence"));
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn run_stays_bounded_by_the_callers_memory_cgroup() {
    if !common::is_root() {
        common::not_here("creating a memory cgroup to start ringfence in needs root");
        return;
    }
    let Some(own) = common::own_cgroup_dir(Some("memory")) else {
        common::not_here("no cgroup v1 memory controller on this machine");
        return;
    };
    let Some(()) = python() else { return };
    let parent = TestGroup(own.join(common::unique("rftest-parent")));
    std::fs::create_dir(&parent.0).unwrap();
    std::fs::write(parent.0.join("memory.limit_in_bytes"), "200M").unwrap();
    let dir = TestDir::new("limit-parent");
    // The run's own limit is far above the parent's.
    let settings = dir.settings(r#"{"limits":{"memory":"2G","wallSeconds":60}}"#);
    let bomb = "import time\na = []\nwhile True:\n    a.append(bytearray(1 << 20))\n    time.sleep(0.001)\n";
    let log = dir.s("run.jsonl");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec \"$0\" run -s {settings} --log {log} -- \
         /bin/sh -c 'cat /proc/self/cgroup; exec python3 -c \"$1\"' sh \"$1\"",
        parent.0.display()
    );
    let out = run(std::process::Command::new("/bin/sh")
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .args(["-c", &script])
        .arg(common::bin())
        .arg(bomb));
    // Seen from inside, through the sandbox's cgroup namespace (rooted where the supervisor
    // runs): the run's memory group is beneath it, not beside it ("/../ringfence/...").
    let memory_line = out
        .stdout
        .lines()
        .find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|c| c == "memory"))
        })
        .unwrap_or_else(|| panic!("no memory line: {out:#?}"))
        .to_string();
    assert!(
        memory_line.contains(":/ringfence/") && !memory_line.contains(".."),
        "{memory_line}: {out:#?}"
    );
    assert_eq!(out.code(), 137, "{out:#?}");
    assert!(
        out.stderr
            .contains("below limits.memory (2G), so the limit of a cgroup ringfence runs in"),
        "{out:#?}"
    );
    let end = run_end(&dir.read("run.jsonl"));
    assert_eq!(end["limit"], "memory", "{end}");
    // The parent's 200M stopped it, long before the run's own 2G.
    let used = end["memoryUsed"].as_u64().unwrap();
    assert!(used <= 200 * MIB, "used {used}: {end}");
    let failcnt = std::fs::read_to_string(parent.0.join("memory.failcnt")).unwrap();
    assert!(
        failcnt.trim() != "0",
        "the parent's limit was never reached"
    );
    // The default limit inside is derived from the parent's limit, not the host's memory.
    let no_memory_key = dir.settings(r#"{"limits":{"wallSeconds":60}}"#);
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec \"$0\" explain -s {no_memory_key}",
        parent.0.display()
    );
    let out = run(std::process::Command::new("/bin/sh")
        .current_dir("/")
        .args(["-c", &script])
        .arg(common::bin()));
    assert!(out.ok().contains(", memory 100M,"), "{out:#?}");
}

#[test]
fn groups_a_killed_supervisor_left_are_removed_by_a_later_run() {
    if !common::is_root() {
        common::not_here("the runs of an unprivileged user here make no cgroups");
        return;
    }
    // Runs make cgroup v1 groups where pids and memory both are.
    let (Some(own), Some(_)) = (
        common::own_cgroup_dir(Some("pids")),
        common::own_cgroup_dir(Some("memory")),
    ) else {
        common::not_here("no cgroup v1 pids and memory controllers on this machine");
        return;
    };
    let name = common::unique("rf-swept");
    let mut supervisor = std::process::Command::new(common::bin())
        .current_dir("/")
        .args(["run", "--name", &name, "--", "sleep", "30"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let group = own
        .join("ringfence")
        .join(format!("{}-{name}", supervisor.id()));
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !done() {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(20),
                "{what}: {}",
                group.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait_for("the run's group never appeared", &|| {
        std::fs::read_to_string(group.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    });
    // Killed, the supervisor cannot remove its groups; its sandbox dies with it.
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    // Empty, or already swept by a run of another test.
    wait_for("the killed run's processes never left its group", &|| {
        std::fs::read_to_string(group.join("cgroup.procs"))
            .map_or(!group.exists(), |p| p.trim().is_empty())
    });
    let out = run(std::process::Command::new(common::bin())
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .args(["run", "--", "true"]));
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(!group.exists(), "left behind: {}", group.display());
}
