//! Analyses every line of a file of shell commands and prints how many were analysed
//! completely, the decisions, and the time per command (p50, p99, max): wall-clock time, and
//! the thread's CPU time, which a busy machine does not inflate.
//!
//! cargo run --release -p ringfence-shell --example corpus -- ../shared/corpus/nl2bash-commands.txt

use std::time::{Duration, Instant};

use ringfence_shell::{analyse, Context, Decision};

/// CPU time consumed by this thread so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

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
    let mut cpu = Vec::with_capacity(lines.len());
    let (mut complete, mut counts) = (0usize, [0usize; 3]);
    let mut commands = 0usize;
    for l in &lines {
        let c = thread_cpu();
        let t = Instant::now();
        let a = analyse(l, &ctx);
        times.push(t.elapsed());
        let spent = thread_cpu().saturating_sub(c);
        cpu.push(spent);
        if std::env::var_os("CORPUS_SLOW").is_some() && spent > Duration::from_micros(300) {
            println!("slow\t{}\t{l}", spent.as_micros());
        }
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
    cpu.sort();
    let pct = |v: &[Duration], p: f64| {
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64() * 1e6
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
        "wall time per command string: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        pct(&times, 0.50),
        pct(&times, 0.99),
        pct(&times, 1.0)
    );
    println!(
        "CPU time per command string:  p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        pct(&cpu, 0.50),
        pct(&cpu, 0.99),
        pct(&cpu, 1.0)
    );
}
