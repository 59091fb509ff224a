//! Fuzzes the analyser's entry point: any input must give an analysis (no panic, no hang), whose
//! spans lie inside the input and whose decision is at least that of its findings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringfence_policy::{CommandRule, DefaultMode, Layer, Permissions};
use ringfence_shell::{analyse, Context, Decision, Level};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rule = |r: &str| CommandRule::parse(r, Layer::User, "fuzz").ok();
    let ctx = Context {
        cwd: "/home/u/proj".into(),
        home: "/home/u".into(),
        writable_roots: vec!["/home/u/proj".into()],
        deny_read: vec!["/home/u/.ssh".into()],
        allowed_domains: vec!["github.com".into(), "*.npmjs.org".into()],
        permissions: Permissions {
            allow: rule("Bash(ls:*)").into_iter().collect(),
            ask: rule("Bash(git push:*)").into_iter().collect(),
            deny: rule("Bash(sudo:*)").into_iter().collect(),
            default_mode: DefaultMode::Sandboxed,
            ..Permissions::default()
        },
        ..Context::default()
    };
    let a = analyse(&text, &ctx);
    let _ = a.reasons();
    for f in &a.findings {
        assert!(f.span.start <= f.span.end && f.span.end <= text.len(), "{f:?}");
        let floor = match f.level {
            Level::Info => Decision::Allow,
            Level::Ask => Decision::Ask,
            Level::Deny => Decision::Deny,
        };
        assert!(a.decision >= floor);
    }
    if !a.complete {
        assert!(a.decision >= Decision::Ask);
    }
});
