//! Prints the decision for every line of a file of shell commands under a typical policy
//! (`defaultMode: sandboxed`, the project writable, github.com allowed, `sudo` denied), one
//! `decision<TAB>command<TAB>reasons` line each, to compare the analyser's decisions between
//! versions (docs/permission-analysis.md). No file on disk is counted.
//!
//! cargo run --release -p ringfence-shell --example corpus_decisions -- FILE > decisions.tsv

use ringfence_policy::{CommandRule, DefaultMode, Layer};
use ringfence_shell::{analyse, Context};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: corpus_decisions FILE");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let mut ctx = Context {
        cwd: "/home/dev/project".into(),
        home: "/home/dev".into(),
        writable_roots: vec!["/home/dev/project".into()],
        deny_read: vec!["/home/dev/.ssh".into(), "/home/dev/.aws".into()],
        allowed_domains: vec!["github.com".into(), "*.github.com".into()],
        ..Context::default()
    };
    ctx.permissions.default_mode = DefaultMode::Sandboxed;
    if let Ok(r) = CommandRule::parse("Bash(sudo:*)", Layer::User, "corpus") {
        ctx.permissions.deny.push(r);
    }
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let a = analyse(l, &ctx);
        println!(
            "{}\t{}\t{}",
            a.decision.as_str(),
            l.replace('\t', " "),
            a.reasons().join(" | ")
        );
    }
}
