//! The rule manager's notifier against hearth's own Alertmanager on loopback: a
//! firing alert arrives through `POST /api/v2/alerts` with external labels and
//! annotations, and its resolution follows when the condition ends.

use hearth::alertmanager::{api, config, types::Clock, Alertmanager, Options};
use hearth::labels::Labels;
use hearth::promql::Engine;
use hearth::rules::RuleManager;
use hearth::storage::memory::MemStorage;
use hearth::storage::{Appendable, Queryable};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const AM_CONFIG: &str = "route:\n  receiver: none\nreceivers:\n  - name: none\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_alertmanager_and_resolve() {
    let am = Alertmanager::start(
        config::parse(AM_CONFIG).expect("am config"),
        Options::default(),
        Clock::system(),
    )
    .expect("start am");
    let cancel = CancellationToken::new();
    tokio::spawn(am.clone().run(cancel.clone()));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let am_addr = l.local_addr().expect("addr");
    let app = api::router(am.clone());
    tokio::spawn(async move { axum::serve(l, app).await });

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yml"),
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: temp > 50\n        annotations:\n          summary: 'temp is {{ $value }}'\n",
    )
    .expect("write rules");
    let cfg_path = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg_path,
        format!("global:\n  external_labels:\n    dc: eu\nrule_files: ['r.yml']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am_addr}']\n"),
    )
    .expect("write config");
    let cfg = hearth::config::Config::load_file(&cfg_path).expect("config");

    let store = MemStorage::new();
    let write = |v: f64| {
        let mut a = store.appender();
        a.append(
            0,
            &Labels::from_pairs(&[("__name__", "temp"), ("room", "r1")]),
            now_ms(),
            v,
        )
        .expect("append");
        a.commit().expect("commit");
    };
    write(70.0);
    let mgr = RuleManager::new(
        Arc::new(store.clone()) as Arc<dyn Queryable>,
        Arc::new(store.clone()) as Arc<dyn Appendable>,
        Engine::default(),
    );
    mgr.apply_config(&cfg).expect("apply");

    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Some(a) = am.alerts.list().into_iter().next() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert reached the Alertmanager"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got.labels.get("alertname"), "Hot");
    assert_eq!(got.labels.get("dc"), "eu");
    assert_eq!(got.labels.get("room"), "r1");
    assert_eq!(got.annotations["summary"], "temp is 70");
    assert!(
        got.generator_url.contains("g0.expr=temp%20%3E%2050"),
        "{}",
        got.generator_url
    );

    // The condition ends: the resolved alert is sent at once, with endsAt in the past.
    write(10.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = am.alerts.list().into_iter().next().expect("alert kept");
        if a.ends_at.as_millisecond() <= now_ms() && a.ends_at.as_millisecond() > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "resolution did not reach the Alertmanager: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    mgr.stop();
    cancel.cancel();
}
