//! Tests for static and file-based discovery with real files.

use super::*;

#[test]
fn glob_matching() {
    let cases: &[(&str, &str, bool)] = &[
        ("*.json", "a.json", true),
        ("*.json", "a.yml", false),
        ("t?.yml", "t1.yml", true),
        ("t?.yml", "t12.yml", false),
        ("[ab]*.json", "b1.json", true),
        ("[!ab]*.json", "b1.json", false),
        ("[a-c].json", "c.json", true),
        ("node.json", "node.json", true),
        ("*", "", true),
    ];
    for (p, s, want) in cases {
        assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), *want, "{p} vs {s}");
    }
}

#[test]
fn file_sd_json_and_yaml() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let json = dir.path().join("a.json");
    std::fs::write(
        &json,
        r#"[{"targets": ["h1:9100", "h2:9100"], "labels": {"env": "prod"}}, {"targets": ["h3:1"]}]"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let yaml = dir.path().join("b.yml");
    std::fs::write(&yaml, "- targets: ['h4:1']\n  labels:\n    team: x\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let g = read_file_groups(&json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].targets.len(), 2);
    assert_eq!(g[0].targets[1].get(ADDRESS_LABEL), "h2:9100");
    assert_eq!(g[0].labels.get("env"), "prod");
    assert_eq!(
        g[0].labels.get("__meta_filepath"),
        json.display().to_string()
    );
    assert_eq!(g[1].source, format!("{}:1", json.display()));
    let g = read_file_groups(&yaml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g[0].labels.get("team"), "x");

    let files = matching_files(&[dir.path().join("*.json").display().to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files, std::slice::from_ref(&json));

    std::fs::write(&json, "[{\"targets\": [\"http://bad/x\"]}]").unwrap_or_else(|e| panic!("{e}"));
    let e = read_file_groups(&json)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("is not a valid hostname"), "{e}");
    std::fs::write(&json, "[{\"targetz\": []}]").unwrap_or_else(|e| panic!("{e}"));
    assert!(read_file_groups(&json).is_err());
}

#[tokio::test]
async fn file_sd_sends_changes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let f = dir.path().join("t.json");
    std::fs::write(&f, r#"[{"targets": ["a:1"]}]"#).unwrap_or_else(|e| panic!("{e}"));
    let cfg = FileSdConfig {
        files: vec![dir.path().join("*.json").display().to_string()],
        refresh_interval: Some(crate::config::DurationMs(50)),
    };
    let (tx, mut rx) = mpsc::channel(UPDATES_CHANNEL_CAPACITY);
    let shutdown = CancellationToken::new();
    tokio::spawn(run_file_sd(3, cfg, tx, shutdown.clone()));
    let first = rx.recv().await.unwrap_or_else(|| panic!("no update"));
    assert_eq!(first.provider, 3);
    assert_eq!(first.groups[0].targets[0].get(ADDRESS_LABEL), "a:1");
    std::fs::write(&f, r#"[{"targets": ["b:2"]}]"#).unwrap_or_else(|e| panic!("{e}"));
    let second = rx.recv().await.unwrap_or_else(|| panic!("no update"));
    assert_eq!(second.groups[0].targets[0].get(ADDRESS_LABEL), "b:2");
    // A broken file keeps the last good targets: no update is sent.
    std::fs::write(&f, "[{").unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_file(&f).unwrap_or_else(|e| panic!("{e}"));
    let third = rx.recv().await.unwrap_or_else(|| panic!("no update"));
    assert!(third.groups.is_empty(), "a removed file drops its targets");
    shutdown.cancel();
}
