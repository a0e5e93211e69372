//! Scraping end to end in-process: a real HTTP exporter on loopback, the scrape
//! manager, and a real TSDB in a temporary directory, read back through
//! `storage::Queryable`.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use hearth::config::Config;
use hearth::labels::Matcher;
use hearth::scrape::ScrapeManager;
use hearth::storage::{is_stale_nan, Appendable, Queryable, Sample, SelectHints};
use hearth::tsdb::db::{Db, DbOptions};
use parking_lot::Mutex;

/// An exporter whose body and content type the test changes at will.
struct Exporter {
    addr: std::net::SocketAddr,
    body: Arc<Mutex<(String, String)>>,
}

async fn exporter(body: &str) -> Exporter {
    let state = Arc::new(Mutex::new((
        "text/plain; version=0.0.4".to_string(),
        body.to_string(),
    )));
    let s = state.clone();
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let s = s.clone();
            async move {
                let (ct, b) = s.lock().clone();
                ([("content-type", ct)], b)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Exporter { addr, body: state }
}

fn open_db(dir: &std::path::Path) -> Arc<Db> {
    Arc::new(Db::open(dir, DbOptions::default()).unwrap_or_else(|e| panic!("open db: {e}")))
}

fn samples(db: &Db, selector: &str) -> Vec<(String, Vec<Sample>)> {
    let matchers: Vec<Matcher> =
        hearth::cmd::tsdb::parse_selector(selector).unwrap_or_else(|e| panic!("{selector}: {e}"));
    let q = db
        .querier(i64::MIN, i64::MAX)
        .unwrap_or_else(|e| panic!("querier: {e}"));
    let hints = SelectHints {
        start_ms: i64::MIN,
        end_ms: i64::MAX,
        series_only: false,
        newest_only: false,
    };
    q.select(&hints, &matchers)
        .unwrap_or_else(|e| panic!("select: {e}"))
        .map(|s| s.unwrap_or_else(|e| panic!("series: {e}")))
        .map(|s| (s.labels.to_string(), s.samples))
        .collect()
}

/// Polls `cond` until it holds, failing after a generous deadline.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn config(text: &str) -> Config {
    Config::parse(text, "test.yml").unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_labels_and_marks_stale() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = open_db(dir.path());
    let exp = exporter(
        "# TYPE a counter\na_total{path=\"/x\"} 1\nb{job=\"inner\"} 2\ngone 3\ndropped_metric 4\n",
    )
    .await;
    let cfg = config(&format!(
        r#"
scrape_configs:
  - job_name: node
    scrape_interval: 1s
    static_configs:
      - targets: ['{}']
        labels: {{env: test}}
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: dropped_.*
        action: drop
"#,
        exp.addr
    ));
    let manager = ScrapeManager::new(db.clone() as Arc<dyn Appendable>, 42);
    manager.apply_config(&cfg);
    let instance = exp.addr.to_string();

    eventually("two scrapes of up", || {
        samples(&db, "up")
            .first()
            .is_some_and(|(_, s)| s.len() >= 2)
    })
    .await;
    let up = samples(&db, "up");
    assert_eq!(
        up[0].0,
        format!("{{__name__=\"up\", env=\"test\", instance=\"{instance}\", job=\"node\"}}")
    );
    assert!(up[0].1.iter().all(|s| s.v == 1.0));
    let a = samples(&db, "a_total");
    assert_eq!(
        a[0].0,
        format!("{{__name__=\"a_total\", env=\"test\", instance=\"{instance}\", job=\"node\", path=\"/x\"}}")
    );
    // honor_labels is false: the exposed job label is renamed.
    let b = samples(&db, "b");
    assert!(b[0].0.contains("exported_job=\"inner\""), "{}", b[0].0);
    assert!(b[0].0.contains("job=\"node\""), "{}", b[0].0);
    assert!(samples(&db, "dropped_metric").is_empty());
    let scraped = samples(&db, "scrape_samples_scraped");
    assert_eq!(scraped[0].1[0].v, 4.0);
    let post = samples(&db, "scrape_samples_post_metric_relabeling");
    assert_eq!(post[0].1[0].v, 3.0);
    let added = samples(&db, "scrape_series_added");
    assert_eq!(added[0].1[0].v, 3.0, "first scrape adds three series");
    assert_eq!(added[0].1[1].v, 0.0, "second scrape adds none");
    assert_eq!(
        manager.active_targets()[0].status.health,
        hearth::scrape::Health::Up
    );

    // A series that disappears gets one stale marker, and then no more samples.
    exp.body.lock().1 = "# TYPE a counter\na_total{path=\"/x\"} 2\nb{job=\"inner\"} 2\n".into();
    eventually("stale marker for gone", || {
        samples(&db, "gone")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| is_stale_nan(x.v)))
    })
    .await;
    let gone = &samples(&db, "gone")[0].1;
    assert_eq!(gone.iter().filter(|s| is_stale_nan(s.v)).count(), 1);

    // A failing target: up is 0 and every series is marked stale.
    exp.body.lock().1 = "a_total{ 1\n".into();
    eventually("up 0 after a parse error", || {
        samples(&db, "up")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| x.v == 0.0))
    })
    .await;
    eventually("stale a_total after failure", || {
        samples(&db, "a_total")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| is_stale_nan(x.v)))
    })
    .await;
    let t = &manager.active_targets()[0];
    assert_eq!(t.status.health, hearth::scrape::Health::Down);
    assert!(
        t.status.last_error.contains("line 1"),
        "{}",
        t.status.last_error
    );

    // The target recovers, then its job is removed: all its series go stale,
    // report series included.
    exp.body.lock().1 = "a_total{path=\"/x\"} 5\n".into();
    eventually("a_total back", || {
        samples(&db, "a_total")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| x.v == 5.0))
    })
    .await;
    manager.apply_config(&config("scrape_configs: []\n"));
    eventually("stale up after the target went away", || {
        samples(&db, "up")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| is_stale_nan(x.v)))
    })
    .await;
    eventually("stale a_total after the target went away", || {
        samples(&db, "a_total")
            .first()
            .is_some_and(|(_, s)| s.last().is_some_and(|x| is_stale_nan(x.v)))
    })
    .await;
    assert!(manager.active_targets().is_empty());
    manager.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_fail_the_scrape_and_reload_keeps_other_jobs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = open_db(dir.path());
    let keep = exporter("kept 1\n").await;
    let limited = exporter("x 1\ny 2\nz 3\n").await;
    let text = |limit: u32| {
        format!(
            r#"
scrape_configs:
  - job_name: keep
    scrape_interval: 1s
    static_configs: [{{targets: ['{}']}}]
  - job_name: limited
    scrape_interval: 1s
    sample_limit: {limit}
    static_configs: [{{targets: ['{}']}}]
"#,
            keep.addr, limited.addr
        )
    };
    let manager = ScrapeManager::new(db.clone() as Arc<dyn Appendable>, 7);
    manager.apply_config(&config(&text(2)));
    eventually("limited target down with sample limit error", || {
        manager
            .active_targets()
            .iter()
            .any(|t| t.job == "limited" && t.status.last_error == "sample limit exceeded")
    })
    .await;
    assert!(
        samples(&db, "x").is_empty(),
        "a failed scrape appends nothing"
    );
    eventually("kept scraped twice", || {
        samples(&db, "kept")
            .first()
            .is_some_and(|(_, s)| s.len() >= 2)
    })
    .await;

    // Reload with a changed limit for one job: the other keeps its loop. A
    // restarted loop would start with an empty series cache and report its
    // series as added again; the kept one reports 1 only for its first scrape.
    manager.apply_config(&config(&text(10)));
    eventually("limited target up after reload", || {
        samples(&db, "x")
            .first()
            .is_some_and(|(_, s)| !s.is_empty())
    })
    .await;
    let before = samples(&db, "kept")[0].1.len();
    eventually("kept keeps scraping", || {
        samples(&db, "kept")[0].1.len() >= before + 2
    })
    .await;
    let added: Vec<f64> = samples(&db, "scrape_series_added{job=\"keep\"}")[0]
        .1
        .iter()
        .map(|s| s.v)
        .collect();
    assert_eq!(added[0], 1.0);
    assert!(
        added[1..].iter().all(|v| *v == 0.0),
        "the unchanged job's loop was restarted by the reload: {added:?}"
    );
    let limited_added = samples(&db, "scrape_series_added{job=\"limited\"}");
    assert!(
        limited_added[0].1.iter().filter(|s| s.v > 0.0).count() >= 1,
        "the changed job did start a new loop"
    );
    manager.stop();
}
