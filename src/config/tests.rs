//! Tests for loading `prometheus.yml`: defaults, inheritance, validation messages and
//! error positions.

use super::*;

fn parse(text: &str) -> Config {
    match Config::parse(text, "test.yml") {
        Ok(c) => c,
        Err(e) => panic!("config did not parse: {e}\n{text}"),
    }
}

fn parse_err(text: &str) -> String {
    match Config::parse(text, "test.yml") {
        Ok(c) => panic!("config parsed but should not: {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn empty_file_gets_prometheus_defaults() {
    let c = parse("");
    assert_eq!(c.global.scrape_interval_ms(), 60_000);
    assert_eq!(c.global.scrape_timeout_ms(), 10_000);
    assert_eq!(c.global.evaluation_interval_ms(), 60_000);
    assert!(c.scrape_configs.is_empty());
}

#[test]
fn prometheus_example_config() {
    // Prometheus's documentation/examples/prometheus.yml, in substance.
    let c = parse(
        r#"
# my global config
global:
  scrape_interval: 15s # Set the scrape interval to every 15 seconds.
  evaluation_interval: 15s
alerting:
  alertmanagers:
    - static_configs:
        - targets:
          # - alertmanager:9093
rule_files:
  # - "first_rules.yml"
scrape_configs:
  - job_name: "prometheus"
    static_configs:
      - targets: ["localhost:9090"]
"#,
    );
    assert_eq!(c.global.scrape_interval_ms(), 15_000);
    assert_eq!(c.global.scrape_timeout_ms(), 10_000);
    let sc = &c.scrape_configs[0];
    assert_eq!(sc.job_name, "prometheus");
    assert_eq!(sc.scrape_interval_ms(), 15_000);
    assert_eq!(sc.scrape_timeout_ms(), 10_000);
    assert_eq!(sc.metrics_path(), "/metrics");
    assert_eq!(sc.scheme(), "http");
    assert!(sc.honor_timestamps());
    assert!(!sc.honor_labels);
    assert_eq!(sc.static_configs[0].targets, ["localhost:9090"]);
    assert_eq!(c.alerting.alertmanagers.len(), 1);
    assert!(c.alerting.alertmanagers[0].static_configs[0]
        .targets
        .is_empty());
}

#[test]
fn job_settings_override_and_inherit() {
    let c = parse(
        r#"
global:
  scrape_interval: 30s
  scrape_timeout: 20s
  external_labels: {region: eu}
  sample_limit: 500
scrape_configs:
  - job_name: fast
    scrape_interval: 5s
    metrics_path: /probe
    scheme: https
    params: {module: [http_2xx]}
    honor_labels: true
    honor_timestamps: false
    body_size_limit: 10MB
    label_limit: 30
    static_configs:
      - targets: ['a:1', 'b:2']
        labels: {env: prod}
    file_sd_configs:
      - files: ['targets/*.json']
        refresh_interval: 1m
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
    metric_relabel_configs:
      - regex: go_.*
        source_labels: [__name__]
        action: drop
    basic_auth: {username: u, password: p}
    tls_config: {insecure_skip_verify: true}
  - job_name: slow
"#,
    );
    assert_eq!(c.global.external_labels["region"], "eu");
    let fast = c
        .scrape_config("fast")
        .unwrap_or_else(|| panic!("no job fast"));
    // The global timeout is longer than the job's interval: it is cut to the interval.
    assert_eq!(fast.scrape_timeout_ms(), 5_000);
    assert_eq!(fast.metrics_path(), "/probe");
    assert_eq!(fast.body_size_limit_bytes(), 10 << 20);
    assert_eq!(fast.sample_limit, Some(500));
    assert_eq!(fast.label_limit, Some(30));
    assert!(!fast.honor_timestamps());
    assert_eq!(fast.params["module"], ["http_2xx"]);
    assert_eq!(fast.file_sd_configs[0].refresh_interval_ms(), 60_000);
    assert_eq!(fast.relabel_configs.len(), 1);
    assert_eq!(fast.metric_relabel_configs.len(), 1);
    let slow = c
        .scrape_config("slow")
        .unwrap_or_else(|| panic!("no job slow"));
    assert_eq!(slow.scrape_interval_ms(), 30_000);
    assert_eq!(slow.scrape_timeout_ms(), 20_000);
}

#[test]
fn yaml_merge_keys_work() {
    let c = parse(
        r#"
scrape_configs:
  - &common
    job_name: a
    scrape_interval: 7s
    metrics_path: /m
  - <<: *common
    job_name: b
"#,
    );
    let b = c.scrape_config("b").unwrap_or_else(|| panic!("no job b"));
    assert_eq!(b.scrape_interval_ms(), 7_000);
    assert_eq!(b.metrics_path(), "/m");
}

#[test]
fn validation_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5s\n    scrape_timeout: 6s\n",
            "scrape timeout greater than scrape interval for scrape config with job name \"a\"",
        ),
        (
            "global:\n  scrape_interval: 5s\n  scrape_timeout: 6s\n",
            "global scrape timeout greater than scrape interval",
        ),
        (
            "scrape_configs:\n  - job_name: a\n  - job_name: a\n",
            "found multiple scrape configs with job name \"a\"",
        ),
        ("scrape_configs:\n  - scrape_interval: 5s\n", "job_name is empty"),
        (
            "scrape_configs:\n  - job_name: a\n    static_configs:\n      - targets: ['http://x:1/metrics']\n",
            "\"http://x:1/metrics\" is not a valid hostname",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: ['x.txt']\n",
            "path \"x.txt\" is not valid for file discovery",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    kubernetes_sd_configs:\n      - role: pod\n",
            "kubernetes_sd_configs in scrape config with job name \"a\": this discovery mechanism is not supported yet",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scheme: ftp\n",
            "scheme \"ftp\"",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    scrape_interval: 5x\n",
            "not a valid duration string",
        ),
        (
            "scrape_configs:\n  - job_name: a\n    basic_auth: {username: u}\n    authorization: {credentials: c}\n",
            "at most one of basic_auth, oauth2, bearer_token & bearer_token_file, authorization must be configured",
        ),
        (
            "global:\n  external_labels: {'1x': a}\n",
            "\"1x\" is not a valid label name",
        ),
    ];
    for (text, want) in cases {
        let e = parse_err(text);
        assert!(e.contains(want), "error {e:?} does not contain {want:?}");
        assert!(e.contains("test.yml"), "error {e:?} does not name the file");
    }
}

#[test]
fn unknown_field_names_file_line_and_column() {
    let e = parse_err("global:\n  scrape_interval: 15s\nscrape_configs:\n  - job_name: a\n    scrape_intervall: 5s\n");
    assert!(e.contains("test.yml"), "{e}");
    assert!(e.contains("scrape_intervall"), "{e}");
    assert!(e.contains("line 5"), "{e}");
    assert!(e.contains("column 5"), "{e}");
}

#[test]
fn embedded_default_scrapes_itself() {
    let c = Config::default_for_self(9091);
    assert_eq!(c.scrape_configs[0].job_name, "prometheus");
    assert_eq!(c.scrape_configs[0].scrape_interval_ms(), 15_000);
    assert_eq!(
        c.scrape_configs[0].static_configs[0].targets,
        ["localhost:9091"]
    );
}

#[test]
fn load_file_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("prometheus.yml");
    std::fs::write(
        &path,
        "rule_files: [rules/*.yml]\nscrape_configs:\n  - job_name: a\n    file_sd_configs:\n      - files: [sd/*.json]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = Config::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.rule_files[0],
        dir.path().join("rules/*.yml").display().to_string()
    );
    assert_eq!(
        c.scrape_configs[0].file_sd_configs[0].files[0],
        dir.path().join("sd/*.json").display().to_string()
    );
    let missing = Config::load_file(&dir.path().join("nope.yml"));
    assert!(matches!(missing, Err(ConfigError::Read { .. })));
}
