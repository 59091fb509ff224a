//! `ringfence diff RUN [PATH...]`: what an apply would change in the real folders, as a unified
//! diff for text, sizes for binary files, and deletions, renames (a deleted and an added file
//! with the same content), mode changes and kind changes named as such.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::{changes, display, same_content, Change, Kind, State};

pub struct DiffOptions {
    pub paths: Vec<PathBuf>,
    pub stat: bool,
    pub json: bool,
}

/// Text is valid UTF-8 without NUL bytes.
fn text(p: &Path) -> Option<String> {
    let b = fs::read(p).ok()?;
    if b.contains(&0) {
        return None;
    }
    String::from_utf8(b).ok()
}

struct Item {
    change: Change,
    abs: PathBuf,
    upper: PathBuf,
    /// For an added file that is a deleted one moved: where it came from.
    renamed_from: Option<PathBuf>,
}

fn kind_name(k: Option<Kind>) -> &'static str {
    match k {
        Some(Kind::File) => "file",
        Some(Kind::Symlink) => "symlink",
        Some(Kind::Dir) => "directory",
        Some(Kind::Special) => "special file",
        None => "nothing",
    }
}

pub fn diff(name: &str, opts: &DiffOptions) -> Result<i32> {
    let state = State::load(name)?;
    if state.state == "discarded" {
        bail!("run {name} was discarded; its layer is gone");
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    let paths: Vec<PathBuf> = opts
        .paths
        .iter()
        .map(|p| {
            let a = cwd.join(p);
            fs::canonicalize(&a).unwrap_or(a)
        })
        .collect();
    let mut items: Vec<Item> = Vec::new();
    for (i, r) in state.roots.iter().enumerate() {
        for c in changes(i, &r.path, &r.upper)? {
            let abs = r.path.join(&c.rel);
            if !paths.is_empty() && !paths.iter().any(|p| abs.starts_with(p)) {
                continue;
            }
            items.push(Item {
                upper: r.upper.join(&c.rel),
                abs,
                change: c,
                renamed_from: None,
            });
        }
    }
    // Renames: an added file with the content of a deleted one.
    let mut gone: Vec<usize> = Vec::new();
    for a in 0..items.len() {
        let ca = &items[a].change;
        if !(ca.old.is_none() && ca.new == Some(Kind::File)) {
            continue;
        }
        let found = (0..items.len()).find(|&d| {
            let cd = &items[d].change;
            cd.old == Some(Kind::File)
                && cd.new.is_none()
                && cd.old_size == ca.size
                && !gone.contains(&d)
                && same_content(&items[d].abs, &items[a].upper).unwrap_or(false)
        });
        if let Some(d) = found {
            gone.push(d);
            items[a].renamed_from = Some(items[d].abs.clone());
        }
    }
    // Renamed directories: an added directory whose whole tree is a deleted one's.
    let mut hidden: Vec<PathBuf> = Vec::new();
    for a in 0..items.len() {
        let ca = &items[a].change;
        if !(ca.old.is_none() && ca.new == Some(Kind::Dir)) || items[a].renamed_from.is_some() {
            continue;
        }
        let found = (0..items.len()).find(|&d| {
            let cd = &items[d].change;
            cd.old == Some(Kind::Dir)
                && cd.new.is_none()
                && !gone.contains(&d)
                && same_tree(&items[d].abs, &items[a].upper)
        });
        if let Some(d) = found {
            gone.push(d);
            hidden.push(items[a].abs.clone());
            items[a].renamed_from = Some(items[d].abs.clone());
        }
    }
    let items: Vec<Item> = items
        .into_iter()
        .enumerate()
        .filter(|(i, it)| {
            !gone.contains(i) && !hidden.iter().any(|h| it.abs.starts_with(h) && it.abs != *h)
        })
        .map(|(_, it)| it)
        .collect();

    if opts.json {
        let out: Vec<Value> = items.iter().map(json_item).collect();
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    for it in &items {
        let c = &it.change;
        let p = display(&it.abs).escape_debug().to_string();
        if opts.stat {
            let detail = match (&it.renamed_from, c.label()) {
                (Some(from), _) => format!("renamed from {}", display(from).escape_debug()),
                (None, "deleted") => format!(
                    "deleted ({} file{})",
                    c.deleted_files,
                    if c.deleted_files == 1 { "" } else { "s" }
                ),
                (None, "mode") => format!("mode {:o}", c.mode.unwrap_or(0)),
                (None, "replaced") => format!("{} -> {}", kind_name(c.old), kind_name(c.new)),
                (None, label) if c.new == Some(Kind::File) => {
                    match (text(&it.abs), text(&it.upper)) {
                        (old, Some(new)) if c.old.is_none() || old.is_some() => {
                            let old = old.unwrap_or_default();
                            let d = similar::TextDiff::from_lines(&old, &new);
                            let (mut ins, mut del) = (0, 0);
                            for ch in d.iter_all_changes() {
                                match ch.tag() {
                                    similar::ChangeTag::Insert => ins += 1,
                                    similar::ChangeTag::Delete => del += 1,
                                    similar::ChangeTag::Equal => {}
                                }
                            }
                            format!("{label} +{ins} -{del}")
                        }
                        _ => format!("{label} binary {} -> {} bytes", c.old_size, c.size),
                    }
                }
                (None, label) => format!("{label} {}", kind_name(c.new)),
            };
            println!(" {p} | {detail}");
            continue;
        }
        if let Some(from) = &it.renamed_from {
            let slash = if c.new == Some(Kind::Dir) { "/" } else { "" };
            println!(
                "renamed {}{slash} -> {p}{slash}",
                display(from).escape_debug()
            );
            continue;
        }
        match (c.old, c.new) {
            (Some(old), None) => {
                if old == Kind::Dir {
                    println!("deleted directory {p}/ ({} files)", c.deleted_files);
                } else {
                    println!(
                        "deleted {} {p} ({} bytes)",
                        kind_name(Some(old)),
                        c.old_size
                    );
                }
            }
            (_, Some(Kind::Dir)) => match c.old {
                None => println!("new directory {p}/"),
                Some(Kind::Dir) => println!("mode {p}/: {:o}", c.mode.unwrap_or(0)),
                Some(old) => println!("replaced {p}: {} -> directory", kind_name(Some(old))),
            },
            (old, Some(Kind::Symlink)) => {
                let target = fs::read_link(&it.upper).unwrap_or_default();
                let prefix = match old {
                    None => "new symlink".to_string(),
                    Some(Kind::Symlink) => "changed symlink".to_string(),
                    Some(o) => format!("replaced {} with symlink", kind_name(Some(o))),
                };
                println!(
                    "{prefix} {p} -> {}",
                    target.display().to_string().escape_debug()
                );
            }
            (old, Some(_)) => {
                if old == Some(Kind::Dir) {
                    println!(
                        "replaced {p}: directory ({} files) -> file",
                        c.deleted_files
                    );
                }
                if !c.content && old == Some(Kind::File) {
                    println!("mode {p}: {:o}", c.mode.unwrap_or(0));
                    continue;
                }
                if let Some(m) = c.mode.filter(|_| old == Some(Kind::File)) {
                    println!("mode {p}: {m:o}");
                }
                let old_text = match old {
                    Some(Kind::File) => text(&it.abs),
                    _ => Some(String::new()),
                };
                match (old_text, text(&it.upper)) {
                    (Some(a), Some(b)) => {
                        let d = similar::TextDiff::from_lines(&a, &b);
                        let from = if old == Some(Kind::File) {
                            format!("a{}", it.abs.display())
                        } else {
                            "/dev/null".into()
                        };
                        print!(
                            "{}",
                            d.unified_diff()
                                .context_radius(3)
                                .header(&from, &format!("b{}", it.abs.display()))
                        );
                        if !b.is_empty() && !b.ends_with('\n') {
                            println!("\n\\ No newline at end of file");
                        }
                    }
                    _ => println!(
                        "binary {p}: {} -> {} bytes",
                        if old.is_some() {
                            c.old_size.to_string()
                        } else {
                            "none".into()
                        },
                        c.size
                    ),
                }
            }
            (None, None) => {}
        }
    }
    Ok(0)
}

/// Whether the real tree `a` and the layer's tree `b` hold the same names, kinds, contents and
/// link targets.
fn same_tree(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (fs::symlink_metadata(a), fs::symlink_metadata(b)) else {
        return false;
    };
    match (super::kind_of(&ma), super::kind_of(&mb)) {
        (Kind::Dir, Kind::Dir) => {
            let names = |p: &Path| -> Option<Vec<std::ffi::OsString>> {
                let mut v: Vec<_> = fs::read_dir(p)
                    .ok()?
                    .flatten()
                    .map(|e| e.file_name())
                    .collect();
                v.sort();
                Some(v)
            };
            match (names(a), names(b)) {
                (Some(na), Some(nb)) if na == nb => {
                    na.iter().all(|n| same_tree(&a.join(n), &b.join(n)))
                }
                _ => false,
            }
        }
        (Kind::File, Kind::File) => same_content(a, b).unwrap_or(false),
        (Kind::Symlink, Kind::Symlink) => fs::read_link(a).ok() == fs::read_link(b).ok(),
        _ => false,
    }
}

fn json_item(it: &Item) -> Value {
    let c = &it.change;
    let mut v = json!({
        "path": it.abs,
        "change": if it.renamed_from.is_some() { "renamed" } else { c.label() },
        "old": c.old,
        "new": c.new,
    });
    if let Some(from) = &it.renamed_from {
        v["from"] = json!(from);
    }
    if c.new == Some(Kind::File) {
        v["size"] = c.size.into();
        v["binary"] = text(&it.upper).is_none().into();
    }
    if c.old.is_some() && c.old != Some(Kind::Dir) {
        v["oldSize"] = c.old_size.into();
    }
    if c.deleted_files > 0 {
        v["deletedFiles"] = c.deleted_files.into();
    }
    if let Some(m) = c.mode {
        v["mode"] = format!("{m:o}").into();
    }
    if c.new == Some(Kind::Symlink) {
        v["target"] = json!(fs::read_link(&it.upper).unwrap_or_default());
    }
    v
}
