//! The labelled set (`labelled.tsv`): realistic commands an agent runs in a repository, each with
//! the decision a careful reviewer wants under the policy stated at the top of the file.
//! Prints precision and recall of "needs a person" (ask or deny) and the prompts saved against a
//! harness that auto-approves only read-only commands; fails if any command labelled ask or
//! deny is allowed, or if a command labelled deny is not denied.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ringfence_policy::{CommandRule, DefaultMode, Layer, Permissions};
use ringfence_shell::{analyse, Context, Decision};

fn policy() -> Context {
    let rules = |l: &[&str]| -> Vec<CommandRule> {
        l.iter()
            .map(|r| CommandRule::parse(r, Layer::User, "labelled.tsv").unwrap())
            .collect()
    };
    Context {
        cwd: "/home/u/proj".into(),
        home: "/home/u".into(),
        writable_roots: vec!["/home/u/proj".into()],
        deny_read: vec!["/home/u/.ssh".into(), "/home/u/.aws".into()],
        allowed_domains: [
            "github.com",
            "*.github.com",
            "registry.npmjs.org",
            "pypi.org",
            "files.pythonhosted.org",
            "crates.io",
            "*.crates.io",
            "proxy.golang.org",
        ]
        .map(String::from)
        .to_vec(),
        permissions: Permissions {
            allow: vec![],
            ask: rules(&[
                "Bash(git push:*)",
                "Bash(npm publish:*)",
                "Bash(cargo publish:*)",
            ]),
            deny: vec![],
            default_mode: DefaultMode::Sandboxed,
            ..Permissions::default()
        },
        ..Context::default()
    }
}

/// Commands a harness that auto-approves read-only commands lets through without a prompt.
fn read_only(cmd: &str, ctx: &Context) -> bool {
    const READ: &[&str] = &[
        "ls",
        "pwd",
        "cat",
        "head",
        "tail",
        "wc",
        "grep",
        "rg",
        "tree",
        "file",
        "stat",
        "du",
        "df",
        "sort",
        "uniq",
        "cut",
        "awk",
        "jq",
        "diff",
        "which",
        "echo",
        "env",
        "less",
        "man",
        "ps",
        "top",
        "free",
        "uname",
        "date",
        "whoami",
        "id",
        "hostname",
        "history",
        "true",
        "sha256sum",
        "md5sum",
        "lsof",
        "printf",
        "seq",
        "test",
        "[",
    ];
    const GIT_READ: &[&str] = &[
        "status",
        "diff",
        "log",
        "show",
        "blame",
        "branch",
        "remote",
        "rev-parse",
        "ls-files",
        "grep",
    ];
    let plain = cmd.replace("2>&1", "").replace("> /dev/null", "");
    if plain.contains('>') || plain.contains("$(") || plain.contains('`') {
        return false;
    }
    let a = analyse(cmd, ctx);
    !a.commands.is_empty()
        && a.commands.iter().all(|c| {
            let name = c.argv[0].rsplit('/').next().unwrap_or("");
            let args = &c.argv[1..];
            match name {
                "git" => {
                    args.first().is_some_and(|s| GIT_READ.contains(&s.as_str()))
                        && !(args[0] == "branch" && args.len() > 1 && !args[1].starts_with('-'))
                        && !args.iter().any(|a| a == "-D" || a == "-d" || a == "add")
                }
                "find" => !args
                    .iter()
                    .any(|a| a.starts_with("-exec") || a.starts_with("-ok") || a == "-delete"),
                "sed" => !args.iter().any(|a| a.starts_with("-i")),
                "xargs" => false,
                n => READ.contains(&n),
            }
        })
}

#[test]
fn labelled_set() {
    let text = include_str!("labelled.tsv");
    let ctx = policy();
    let (mut tp, mut fp, mut fn_, mut tn) = (0, 0, 0, 0);
    let (mut ours, mut baseline, mut total) = (0, 0, 0);
    let (mut routine, mut routine_ours, mut routine_baseline) = (0, 0, 0);
    let mut failures = Vec::new();
    let mut extra_prompts = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "bad line: {line}");
        let (set, want, cmd, why) = (cols[0], cols[1], cols[2].replace('\u{23ce}', "\n"), cols[3]);
        let want = match want {
            "allow" => Decision::Allow,
            "ask" => Decision::Ask,
            "deny" => Decision::Deny,
            other => panic!("bad decision {other} in: {line}"),
        };
        let a = analyse(&cmd, &ctx);
        let got = a.decision;
        let person = |d: Decision| d != Decision::Allow;
        match (person(want), person(got)) {
            (true, true) => tp += 1,
            (false, true) => {
                fp += 1;
                extra_prompts.push(format!("{cmd}: {}", a.reasons().join("; ")));
            }
            (true, false) => fn_ += 1,
            (false, false) => tn += 1,
        }
        if (person(want) && !person(got)) || (want == Decision::Deny && got != Decision::Deny) {
            failures.push(format!(
                "{cmd} ({why}): want {want:?}, got {got:?}: {:?}",
                a.reasons()
            ));
        }
        total += 1;
        let prompt = usize::from(person(got));
        let base = usize::from(!read_only(&cmd, &ctx));
        ours += prompt;
        baseline += base;
        if set == "routine" {
            routine += 1;
            routine_ours += prompt;
            routine_baseline += base;
        }
    }
    let precision = tp as f64 / (tp + fp).max(1) as f64;
    let recall = tp as f64 / (tp + fn_).max(1) as f64;
    let reduction = |o: usize, b: usize| 100.0 * (1.0 - o as f64 / b.max(1) as f64);
    println!("labelled commands: {total} ({routine} routine)");
    println!("ask+deny: precision {precision:.3}, recall {recall:.3} (tp {tp}, fp {fp}, fn {fn_}, tn {tn})");
    println!(
        "needing a person: ringfence (sandboxed) {ours}, read-only auto-approval {baseline}: {:.1} % fewer",
        reduction(ours, baseline)
    );
    println!(
        "routine commands only: ringfence {routine_ours}, read-only auto-approval {routine_baseline}: {:.1} % fewer",
        reduction(routine_ours, routine_baseline)
    );
    for p in &extra_prompts {
        println!("prompt a reviewer would not want: {p}");
    }
    assert!(
        failures.is_empty(),
        "dangerous commands not stopped:\n{}",
        failures.join("\n")
    );
    // The set is mostly routine work: a baseline that prompts for fewer than half of it would
    // mean the labels no longer describe what agents run.
    assert!(
        baseline * 2 > total,
        "baseline prompts {baseline} of {total}"
    );
}
