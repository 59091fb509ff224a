//! A tiny agent loop: each line on stdin is a shell command, run in a sandbox of its own with
//! the policy from `-s FILE` (else the layered settings files); its output is shown, then what
//! the sandbox refused.
//!
//! ```text
//! cargo run -p ringfence-runtime --example agent_loop -- -s agent.json
//! > ls ~/.ssh
//! > curl https://example.com
//! ```

use std::io::{BufRead, Write};

use ringfence_runtime::{read_all, Sandbox, Sources, Stdio};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sources = match args.as_slice() {
        [flag, file] if flag == "-s" => Sources::settings_file(file),
        [] => Sources::layered(),
        _ => return Err("usage: agent_loop [-s SETTINGS.json]".into()),
    };
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        print!("> ");
        std::io::stdout().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // The command gets pipes: the loop's stdin stays the loop's.
        let outcome = Sandbox::builder(sources.clone())
            .shell(&line)
            .stdio(Stdio::Piped)
            .spawn()
            .and_then(|mut run| {
                let out = run.stdout.take();
                let err = run.stderr.take();
                let err = std::thread::spawn(move || read_all(err));
                let out = read_all(out);
                let outcome = run.wait();
                print!("{}", String::from_utf8_lossy(&out.unwrap_or_default()));
                eprint!(
                    "{}",
                    String::from_utf8_lossy(
                        &err.join().ok().and_then(Result::ok).unwrap_or_default()
                    )
                );
                outcome
            });
        match outcome {
            Ok(o) => {
                println!("[exit {}; run {}]", o.code(), o.name);
                for v in &o.violations {
                    println!("[violation] {v}");
                }
            }
            Err(e) => println!("[not run: {e}]"),
        }
    }
    Ok(())
}
