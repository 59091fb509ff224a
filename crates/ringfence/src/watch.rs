//! `ringfence watch`: a full-screen view of the live sandboxes (left) and the selected run's
//! events as they are written (right), with filters, and keys to pause, resume or stop a run.
//! It reads the run records and activity logs like `ps` and `log follow`, and acts through
//! `ringfence pause|resume|stop`, so it needs no access the command line does not have.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use ratatui::Frame;
use serde_json::{Map, Value};

use crate::timeline::{self, Filter, Severity};

/// Events kept per run in memory; older ones scroll away (`log show` has them all).
const KEEP: usize = 10_000;

pub fn main() -> Result<()> {
    if !ringfence_linux::supervise::is_tty(1) || !ringfence_linux::supervise::is_tty(0) {
        bail!("watch needs a terminal (stdin and stdout are not both one); in scripts use `ringfence ps` and `ringfence log follow RUN`");
    }
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    // Restores the terminal however this function returns; `try_init` also restores it from
    // the panic hook.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = ratatui::try_restore();
            let _ =
                ratatui::crossterm::execute!(std::io::stdout(), ratatui::crossterm::cursor::Show);
        }
    }
    let _restore = Restore;
    let mut app = App::new();
    let (tx, rx) = mpsc::channel::<String>();
    let mut listed = Instant::now() - Duration::from_secs(10);
    loop {
        if listed.elapsed() >= Duration::from_millis(700) {
            let rows = list_runs(&mut app.seen);
            app.set_runs(rows);
            listed = Instant::now();
        }
        app.read_feed();
        while let Ok(m) = rx.try_recv() {
            app.message = Some(m);
        }
        terminal
            .draw(|f| draw(f, &app))
            .context("drawing the screen")?;
        if !event::poll(Duration::from_millis(150)).context("reading the terminal")? {
            continue;
        }
        let Event::Key(key) = event::read().context("reading the terminal")? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        let code = match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => KeyCode::Esc,
            c => c,
        };
        match app.on_key(code) {
            Action::None => {}
            Action::Quit => return Ok(()),
            Action::Control(verb, run) => {
                if verb == "pause" {
                    app.paused.insert(run.clone());
                } else if verb == "resume" {
                    app.paused.remove(&run);
                }
                app.message = Some(format!("{verb} {run}..."));
                control(verb, run, tx.clone());
            }
        }
    }
}

/// Runs `ringfence VERB RUN` in the background and sends back what it printed, so that a stop
/// that takes seconds does not freeze the screen and its output does not land on it.
fn control(verb: &'static str, run: String, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ringfence"));
        let msg = match std::process::Command::new(exe)
            .args([verb, run.as_str()])
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) => {
                let text = String::from_utf8_lossy(if o.status.success() {
                    &o.stdout
                } else {
                    &o.stderr
                })
                .trim()
                .replace('\n', "; ");
                timeline::escape(&text)
            }
            Err(e) => format!("ringfence {verb} {run}: {e}"),
        };
        let _ = tx.send(msg);
    });
}

/// One run in the left pane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub name: String,
    pub status: String,
    pub started: u64,
    pub command: String,
    pub log: PathBuf,
}

/// The live runs, and those seen live earlier in this session that have ended since (so their
/// last events stay readable), newest first.
fn list_runs(seen: &mut HashSet<String>) -> Vec<RunRow> {
    let mut rows = Vec::new();
    for r in crate::runs::all().unwrap_or_default() {
        let name = r["name"].as_str().unwrap_or("").to_string();
        let live = r["status"].is_null() && crate::runs::is_live(&name);
        if !live && !seen.contains(&name) {
            continue;
        }
        seen.insert(name.clone());
        rows.push(RunRow {
            status: crate::activity::status_of(&r),
            started: r["started"].as_u64().unwrap_or(0),
            command: crate::activity::command_of(&r, 200),
            log: PathBuf::from(r["log"].as_str().unwrap_or("")),
            name,
        });
    }
    rows
}

/// The selected run's log, read as it grows.
struct Feed {
    name: String,
    tail: crate::activity::Tail,
    events: VecDeque<Map<String, Value>>,
    start: Option<i64>,
}

impl Feed {
    fn new(name: &str, path: PathBuf) -> Feed {
        Feed {
            name: name.to_string(),
            tail: crate::activity::Tail::new(path),
            events: VecDeque::new(),
            start: None,
        }
    }

    fn read(&mut self) {
        // A log that cannot be read (yet) shows no events.
        for e in self.tail.read().unwrap_or_default() {
            if self.start.is_none() && e.get("kind").and_then(Value::as_str) == Some("run.start") {
                self.start = e
                    .get("ts")
                    .and_then(Value::as_str)
                    .and_then(timeline::parse_ts);
            }
            self.events.push_back(e);
            if self.events.len() > KEEP {
                self.events.pop_front();
            }
        }
    }
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// `ringfence pause|resume|stop RUN`.
    Control(&'static str, String),
}

struct App {
    runs: Vec<RunRow>,
    selected: usize,
    filter: Filter,
    feed: Option<Feed>,
    /// The run a stop waits for y/n on.
    confirm_stop: Option<String>,
    /// Runs paused from this screen (`p` resumes them).
    paused: HashSet<String>,
    seen: HashSet<String>,
    message: Option<String>,
}

impl App {
    fn new() -> App {
        App {
            runs: Vec::new(),
            selected: 0,
            filter: Filter::All,
            feed: None,
            confirm_stop: None,
            paused: HashSet::new(),
            seen: HashSet::new(),
            message: None,
        }
    }

    fn selected_run(&self) -> Option<&RunRow> {
        self.runs.get(self.selected)
    }

    /// New rows, keeping the selection on the same run when it is still listed.
    fn set_runs(&mut self, rows: Vec<RunRow>) {
        let current = self.selected_run().map(|r| r.name.clone());
        self.runs = rows;
        self.selected = current
            .and_then(|c| self.runs.iter().position(|r| r.name == c))
            .unwrap_or(0)
            .min(self.runs.len().saturating_sub(1));
        self.follow_selected();
    }

    fn follow_selected(&mut self) {
        let Some(row) = self.selected_run() else {
            self.feed = None;
            return;
        };
        if self.feed.as_ref().map(|f| f.name.as_str()) != Some(row.name.as_str()) {
            self.feed = Some(Feed::new(&row.name, row.log.clone()));
        }
    }

    fn read_feed(&mut self) {
        if let Some(f) = &mut self.feed {
            f.read();
        }
    }

    fn on_key(&mut self, key: KeyCode) -> Action {
        if let Some(run) = self.confirm_stop.take() {
            return match key {
                KeyCode::Char('y') | KeyCode::Char('Y') => Action::Control("stop", run),
                _ => {
                    self.message = Some(format!("{run} not stopped"));
                    Action::None
                }
            };
        }
        match key {
            KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                self.follow_selected();
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.selected + 1 < self.runs.len() {
                    self.selected += 1;
                }
                self.follow_selected();
                Action::None
            }
            KeyCode::Char('f') => {
                self.filter = self.filter.next();
                Action::None
            }
            KeyCode::Char('p') => match self.selected_run() {
                Some(r) if r.status == "running" => {
                    let verb = if self.paused.contains(&r.name) {
                        "resume"
                    } else {
                        "pause"
                    };
                    Action::Control(verb, r.name.clone())
                }
                Some(r) => {
                    self.message = Some(format!("{} is not running", r.name));
                    Action::None
                }
                None => Action::None,
            },
            KeyCode::Char('s') => match self.selected_run() {
                Some(r) if r.status == "running" => {
                    self.confirm_stop = Some(r.name.clone());
                    Action::None
                }
                Some(r) => {
                    self.message = Some(format!("{} is not running", r.name));
                    Action::None
                }
                None => Action::None,
            },
            _ => Action::None,
        }
    }
}

/// The colour of a severity on screen (the same scheme as `log show`).
pub fn style_of(s: Severity) -> Style {
    match s {
        Severity::Denied => Style::default().fg(Color::Red),
        Severity::Error => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        Severity::Ask => Style::default().fg(Color::Yellow),
        Severity::Allowed => Style::default().fg(Color::Green),
        Severity::Exec => Style::default().add_modifier(Modifier::DIM),
        Severity::Info => Style::default().add_modifier(Modifier::BOLD),
    }
}

/// The last `rows` events of `events` that `filter` keeps, as lines.
pub fn visible<'a>(
    events: impl DoubleEndedIterator<Item = &'a Map<String, Value>>,
    filter: &Filter,
    start: Option<i64>,
    rows: usize,
) -> Vec<timeline::Line> {
    let mut lines: Vec<timeline::Line> = events
        .rev()
        .filter(|e| filter.keeps(e))
        .take(rows)
        .map(|e| timeline::render(e, start))
        .collect();
    lines.reverse();
    lines
}

fn draw(f: &mut Frame, app: &App) {
    let [main, bar] = Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(32), Constraint::Min(20)]).areas(main);

    let items: Vec<ListItem> = app
        .runs
        .iter()
        .map(|r| {
            let status = if app.paused.contains(&r.name) && r.status == "running" {
                "paused".to_string()
            } else {
                r.status.clone()
            };
            let st = match status.as_str() {
                "running" => Style::default().fg(Color::Green),
                "paused" => Style::default().fg(Color::Yellow),
                _ => Style::default().add_modifier(Modifier::DIM),
            };
            ListItem::new(vec![
                TextLine::from(vec![
                    Span::styled(
                        r.name.clone(),
                        Style::default().add_modifier(Modifier::BOLD),
                    ),
                    Span::raw("  "),
                    Span::styled(status, st),
                ]),
                TextLine::from(Span::styled(
                    format!("  {}", r.command),
                    Style::default().add_modifier(Modifier::DIM),
                )),
            ])
        })
        .collect();
    let mut state = ListState::default();
    if !app.runs.is_empty() {
        state.select(Some(app.selected));
    }
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(" sandboxes "))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(list, left, &mut state);

    let title = match &app.feed {
        Some(feed) => format!(" {}  [filter: {}] ", feed.name, app.filter.label()),
        None => format!(" events  [filter: {}] ", app.filter.label()),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let rows = right.height.saturating_sub(2) as usize;
    let body: Vec<TextLine> = match &app.feed {
        None => vec![TextLine::from(
            "No live sandboxes. Start one with `ringfence run -- COMMAND`.",
        )],
        Some(feed) => visible(feed.events.iter(), &app.filter, feed.start, rows)
            .into_iter()
            .map(|l| {
                let st = style_of(l.severity);
                TextLine::from(vec![
                    Span::styled(
                        format!("{:<11} ", l.when),
                        Style::default().add_modifier(Modifier::DIM),
                    ),
                    Span::styled(format!("{:<14} ", l.kind), st.add_modifier(Modifier::BOLD)),
                    Span::styled(l.detail, st),
                ])
            })
            .collect(),
    };
    f.render_widget(Paragraph::new(body).block(block), right);

    let bar_text = match (&app.confirm_stop, &app.message) {
        (Some(run), _) => Span::styled(
            format!(" stop {run}? y/n "),
            Style::default().fg(Color::Black).bg(Color::Yellow),
        ),
        (None, Some(m)) => Span::raw(format!(
            " {m}   |  q quit  ↑/↓ select  f filter  p pause/resume  s stop"
        )),
        (None, None) => Span::raw(
            " q quit  ↑/↓ select  f filter (all, fs, net, exec, denied)  p pause/resume  s stop",
        ),
    };
    f.render_widget(Paragraph::new(TextLine::from(bar_text)), bar);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn row(name: &str, status: &str) -> RunRow {
        RunRow {
            name: name.into(),
            status: status.into(),
            started: 0,
            command: "sh".into(),
            log: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn stop_asks_first_and_pause_toggles() {
        let mut app = App::new();
        app.runs = vec![row("a", "running"), row("b", "exit 0")];
        assert_eq!(app.on_key(KeyCode::Char('s')), Action::None);
        assert_eq!(app.confirm_stop.as_deref(), Some("a"));
        // Anything but y cancels.
        assert_eq!(app.on_key(KeyCode::Char('q')), Action::None);
        assert_eq!(app.confirm_stop, None);
        app.on_key(KeyCode::Char('s'));
        assert_eq!(
            app.on_key(KeyCode::Char('y')),
            Action::Control("stop", "a".into())
        );
        assert_eq!(
            app.on_key(KeyCode::Char('p')),
            Action::Control("pause", "a".into())
        );
        app.paused.insert("a".into());
        assert_eq!(
            app.on_key(KeyCode::Char('p')),
            Action::Control("resume", "a".into())
        );
        // An ended run cannot be paused or stopped.
        app.on_key(KeyCode::Down);
        assert_eq!(app.selected, 1);
        assert_eq!(app.on_key(KeyCode::Char('s')), Action::None);
        assert_eq!(app.confirm_stop, None);
        assert_eq!(app.on_key(KeyCode::Char('p')), Action::None);
        app.on_key(KeyCode::Down);
        assert_eq!(app.selected, 1);
        assert_eq!(app.on_key(KeyCode::Char('f')), Action::None);
        assert_eq!(app.filter, Filter::Kind("fs".into()));
        assert_eq!(app.on_key(KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn selection_follows_its_run_when_the_list_changes() {
        let mut app = App::new();
        app.set_runs(vec![row("a", "running"), row("b", "running")]);
        app.on_key(KeyCode::Down);
        assert_eq!(app.feed.as_ref().unwrap().name, "b");
        app.set_runs(vec![
            row("c", "running"),
            row("a", "running"),
            row("b", "running"),
        ]);
        assert_eq!(app.selected, 2);
        app.set_runs(vec![row("c", "running")]);
        assert_eq!(app.selected, 0);
        assert_eq!(app.feed.as_ref().unwrap().name, "c");
        app.set_runs(vec![]);
        assert!(app.feed.is_none());
    }

    #[test]
    fn the_feed_reads_whole_lines_as_the_log_grows() {
        let dir = std::env::temp_dir().join(format!("rf-watch-feed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.jsonl");
        let start = json!({"kind": "run.start", "ts": "2026-11-22T03:29:46.000Z", "argv": ["sh"]});
        let denied = json!({"kind": "fs.denied", "ts": "2026-11-22T03:29:47.500Z", "op": "open",
            "path": "/w/.bashrc", "pid": 2, "program": "touch", "reason": "r"});
        let exec = json!({"kind": "exec", "ts": "2026-11-22T03:29:48.000Z", "pid": 3,
            "path": "/bin/ls", "argv": ["ls"]});
        let half = exec.to_string();
        let (a, b) = half.split_at(10);
        std::fs::write(&path, format!("{start}\n{denied}\n{a}")).unwrap();
        let mut feed = Feed::new("r", path.clone());
        feed.read();
        assert_eq!(feed.events.len(), 2);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, format!("{b}\n").as_bytes()).unwrap();
        feed.read();
        assert_eq!(feed.events.len(), 3);
        let lines = visible(feed.events.iter(), &Filter::All, feed.start, 2);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].when, "+00:01.500");
        assert_eq!(lines[0].severity, Severity::Denied);
        assert_eq!(lines[1].kind, "exec");
        let denied_only = visible(feed.events.iter(), &Filter::Denied, feed.start, 10);
        assert_eq!(denied_only.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_screen_shows_runs_events_and_keys() {
        use ratatui::backend::TestBackend;
        let mut app = App::new();
        app.runs = vec![row("build-1", "running"), row("old", "exit 0")];
        let mut feed = Feed::new("build-1", PathBuf::from("/nonexistent"));
        feed.start = timeline::parse_ts("2026-11-22T03:29:46.000Z");
        feed.events.push_back(
            serde_json::from_value(
                json!({"kind": "fs.denied", "ts": "2026-11-22T03:29:47.000Z",
                "op": "open", "path": "/w/.bashrc", "pid": 2, "program": "touch", "reason": "r"}),
            )
            .unwrap(),
        );
        feed.events.push_back(
            serde_json::from_value(json!({"kind": "exec", "ts": "2026-11-22T03:29:48.000Z",
                "pid": 3, "path": "/bin/ls", "argv": ["ls"]}))
            .unwrap(),
        );
        app.feed = Some(feed);
        app.filter = Filter::Denied;
        app.paused.insert("build-1".into());
        let mut term = ratatui::Terminal::new(TestBackend::new(120, 12)).unwrap();
        term.draw(|f| draw(f, &app)).unwrap();
        let screen: String = term
            .backend()
            .buffer()
            .content()
            .chunks(120)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(screen.contains("build-1  paused"), "{screen}");
        assert!(screen.contains("old  exit 0"), "{screen}");
        assert!(screen.contains("[filter: denied]"), "{screen}");
        assert!(
            screen.contains("+00:01.000  fs.denied      open /w/.bashrc by touch"),
            "{screen}"
        );
        // The exec is filtered out.
        assert!(!screen.contains("/bin/ls"), "{screen}");
        assert!(screen.contains("s stop"), "{screen}");
        app.confirm_stop = Some("build-1".into());
        term.draw(|f| draw(f, &app)).unwrap();
        let bar: String = term.backend().buffer().content()[11 * 120..]
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(bar.contains("stop build-1? y/n"), "{bar}");
    }
}
