//! The sandbox's own package caches, from inside real sandboxes: the host's caches stay
//! read-only, the package managers are pointed at caches of the sandbox's own that persist
//! between runs, and a cache the policy opens for writing is left alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ringfence, run, TestDir};

/// A home directory of the test's own, with warm host caches and a cargo configuration.
fn fake_home(dir: &TestDir) -> String {
    for d in [
        "home/.npm/_cacache",
        "home/.cache/pip",
        "home/.cargo/registry",
        "home/go/pkg/mod/cache/download",
        "home/.m2/repository",
        "home/work",
    ] {
        dir.mkdir(d);
    }
    dir.write("home/.cargo/config.toml", "[net]\nretry = 7\n");
    dir.write(
        "home/.cargo/credentials.toml",
        "[registry]\ntoken = \"secret\"\n",
    );
    dir.s("home")
}

fn sh_in(home: &str, args: &[&str], script: &str) -> common::Outcome {
    let mut cmd = ringfence(args);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .args(["--", "/bin/sh", "-c", script]);
    run(&mut cmd)
}

#[test]
fn host_caches_stay_read_only_and_the_sandbox_gets_its_own() {
    let dir = TestDir::new("caches-own");
    let home = fake_home(&dir);
    let w = format!("{home}/work");
    let script = "for p in ~/.npm/_cacache/poison ~/.cache/pip/poison ~/.cargo/registry/poison \
                  ~/go/pkg/mod/cache/download/poison ~/.m2/repository/poison; do \
                    echo x > $p 2>/dev/null && echo \"wrote $p\"; done; \
                  for d in \"$npm_config_cache\" \"$PIP_CACHE_DIR\" \"$CARGO_HOME\" \"$GOMODCACHE\" \
                    \"$GOCACHE\" \"$GRADLE_USER_HOME\" \"$XDG_CACHE_HOME\" \"$YARN_CACHE_FOLDER\"; do \
                    echo ok > \"$d/entry\" || echo \"cannot write $d\"; done; \
                  echo \"$MAVEN_OPTS\"; echo \"$GOPROXY\"; cat \"$CARGO_HOME/config.toml\"; \
                  test -e \"$CARGO_HOME/credentials.toml\" && echo credentials copied; echo end";
    let out = sh_in(&home, &["--allow-write", &w], script);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert!(!out.stdout.contains("wrote "), "{out:#?}");
    assert!(!out.stdout.contains("cannot write"), "{out:#?}");
    assert!(!out.stdout.contains("credentials copied"), "{out:#?}");
    let root = format!("{home}/.cache/ringfence/sandbox");
    assert!(
        out.stdout
            .contains(&format!("-Dmaven.repo.local={root}/maven")),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "file://{home}/go/pkg/mod/cache/download,https://proxy.golang.org,direct"
        )),
        "Go is seeded from the host's module cache: {out:#?}"
    );
    assert!(out.stdout.contains("retry = 7"), "{out:#?}");
    for p in [
        ".npm/_cacache/poison",
        ".cache/pip/poison",
        ".cargo/registry/poison",
        "go/pkg/mod/cache/download/poison",
        ".m2/repository/poison",
    ] {
        assert!(
            !dir.join(format!("home/{p}")).exists(),
            "the host cache {p} was written"
        );
    }
    // The sandbox's caches are kept for the next run.
    for d in ["npm", "pip", "cargo", "go/mod", "go/build", "xdg", "yarn"] {
        assert_eq!(
            dir.read(&format!("home/.cache/ringfence/sandbox/{d}/entry")),
            "ok\n",
            "{d}"
        );
    }
    let out = sh_in(
        &home,
        &["--allow-write", &w],
        "cat \"$npm_config_cache/entry\"",
    );
    assert_eq!(out.ok(), "ok\n");
}

#[test]
fn a_cache_the_policy_makes_writable_is_used_as_it_is() {
    let dir = TestDir::new("caches-writable");
    let home = fake_home(&dir);
    let npm = format!("{home}/.npm");
    let out = sh_in(
        &home,
        &[
            "--allow-write",
            &format!("{home}/work"),
            "--allow-write",
            &npm,
        ],
        "echo \"cache=${npm_config_cache:-default}\"; echo \"pip=$PIP_CACHE_DIR\"",
    );
    let stdout = out.ok();
    assert!(stdout.contains("cache=default"), "{out:#?}");
    assert!(
        stdout.contains(&format!("pip={home}/.cache/ringfence/sandbox/pip")),
        "{out:#?}"
    );
}
