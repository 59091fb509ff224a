//! Analyses every line of a file of shell commands and prints how many were analysed
//! completely, the decisions, and the time per command (p50, p99, max).
//!
//! cargo run --release -p ringfence-shell --example corpus -- ../shared/corpus/nl2bash-commands.txt

use std::time::Instant;

use ringfence_shell::{analyse, Context, Decision};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: corpus FILE");
        std::process::exit(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    let ctx = Context {
        cwd: "/home/dev/project".into(),
        home: "/home/dev".into(),
        writable_roots: vec!["/home/dev/project".into()],
        ..Context::default()
    };
    let mut ctx = ctx;
    ctx.permissions.default_mode = ringfence_policy::DefaultMode::Sandboxed;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    // One warm-up pass so that the timings are of the steady state.
    for l in lines.iter().take(200) {
        analyse(l, &ctx);
    }
    let mut times = Vec::with_capacity(lines.len());
    let (mut complete, mut counts) = (0usize, [0usize; 3]);
    let mut commands = 0usize;
    for l in &lines {
        let t = Instant::now();
        let a = analyse(l, &ctx);
        times.push(t.elapsed());
        complete += usize::from(a.complete);
        if std::env::var_os("CORPUS_SHOW").is_some() && (a.decision != Decision::Allow) {
            let why: Vec<String> = a.reasons();
            println!("{}\t{}\t{}", a.decision.as_str(), l, why.join(" | "));
        }
        commands += a.commands.len();
        counts[match a.decision {
            Decision::Allow => 0,
            Decision::Ask => 1,
            Decision::Deny => 2,
        }] += 1;
    }
    times.sort();
    let pct = |p: f64| {
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1e6
    };
    let n = lines.len();
    println!("commands strings:        {n}");
    println!(
        "analysed completely:     {complete} ({:.1} %)",
        100.0 * complete as f64 / n.max(1) as f64
    );
    println!("simple commands found:   {commands}");
    println!(
        "decisions (defaultMode sandboxed): allow {}, ask {}, deny {}",
        counts[0], counts[1], counts[2]
    );
    println!(
        "time per command string: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
}
