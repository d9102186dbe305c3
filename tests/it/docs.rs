//! The documentation's links: every relative link in `README.md`,
//! `CHANGELOG.md`, `docs/*.md` and `vagrant/README.md` names a file (or
//! folder) of the repository, and a `#anchor` names a heading of its target
//! (GitHub's heading ids). External links (`https:`, `mailto:`) are not
//! fetched.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![
        root().join("README.md"),
        root().join("CHANGELOG.md"),
        root().join("vagrant/README.md"),
    ];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("docs entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Inline link targets `[text](target)` outside code fences and code spans,
/// with their line numbers.
fn links(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut fenced = false;
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans so `a](b)` inside backticks is not a link.
        let mut text = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                text.push_str(part);
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            let target = after[..end].split_whitespace().next().unwrap_or("");
            found.push((n + 1, target.to_owned()));
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's id for a heading: lower case, punctuation other than `-` and `_`
/// dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The heading ids of a Markdown document (outside code fences).
fn anchors(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut ids = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            ids.push(slug(line.trim_start_matches('#')));
        }
    }
    ids
}

/// Whether `target` (relative to `from`'s folder) names a file of the
/// repository, and its anchor a heading there; `Err` says why not.
fn check(from: &Path, target: &str) -> Result<(), String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Ok(());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else {
        from.parent().expect("a folder").join(path)
    };
    let resolved = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let repo = root().canonicalize().expect("repository root");
    let inside = resolved
        .strip_prefix(&repo)
        .map_err(|_| "outside the repository".to_owned())?;
    if inside.starts_with("target") || inside.starts_with("dist") {
        return Err("build output, not a file of the repository".into());
    }
    if let Some(anchor) = anchor {
        let text = std::fs::read_to_string(&resolved).map_err(|e| e.to_string())?;
        if !anchors(&text).iter().any(|id| id == anchor) {
            return Err(format!("no heading #{anchor} in {}", inside.display()));
        }
    }
    Ok(())
}

#[test]
fn every_relative_link_resolves_to_a_file_of_the_repository() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("readable");
        for (line, target) in links(&text) {
            checked += 1;
            if let Err(why) = check(&doc, &target) {
                broken.push(format!("{}:{line}: ({target}) {why}", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 20, "only {checked} links found");
}

#[test]
fn the_link_reader_finds_links_and_anchors_and_skips_code() {
    let md = "See [a](docs/a.md#b-c) and `[x](nope)`.\n```\n[y](nope)\n```\n## B, c!\n";
    assert_eq!(links(md), [(1, "docs/a.md#b-c".to_owned())]);
    assert_eq!(anchors(md), ["b-c"]);
    assert_eq!(slug(" `exec`: scripts"), "exec-scripts");
    assert_eq!(slug("2.1 The app definition"), "21-the-app-definition");
    let readme = root().join("README.md");
    assert!(check(&readme, "docs/no-such-file.md").is_err());
    assert!(check(&readme, "docs/operations.md#no-such-heading").is_err());
    assert!(check(&readme, "../outside.md").is_err());
    assert!(check(&readme, "https://mesos.apache.org").is_ok());
}
