//! The cluster's fan-out queryable against the generic storage conformance suite,
//! with the data split over three in-process nodes: this node's own store and two
//! peers served by real `Query` servers (`grpc_server`) on loopback. Also: series that several
//! nodes hold are merged in time with identical timestamps kept once, and a peer
//! that is gone or hangs gives a warning, or an error without partial responses.

use hearth::cluster::grpc_server;
use hearth::cluster::query_service::QueryService;
use hearth::cluster::{FanoutOptions, FanoutQueryable, Peer};
use hearth::labels::{Labels, Matcher};
use hearth::storage::conformance::{run_all, select_all};
use hearth::storage::memory::MemStorage;
use hearth::storage::{
    AppendError, Appendable, Appender, Querier, Queryable, Sample, SelectHints, SeriesRef,
    StorageError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Starts a `Query` server over `store` on a free loopback port; returns its address.
fn serve(rt: &tokio::runtime::Runtime, store: MemStorage) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    spawn_query_server(rt, listener, store);
    addr
}

/// Serves `Query` over `store` on `listener`, on `rt`.
fn spawn_query_server(
    rt: &tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    store: MemStorage,
) {
    let local: Arc<dyn Queryable> = Arc::new(store);
    let routes = tonic::service::Routes::new(QueryService::server(local));
    rt.spawn(grpc_server::serve(
        listener,
        routes,
        CancellationToken::new(),
    ));
}

fn peer(id: u64, grpc: &str) -> Peer {
    Peer {
        node_id: id,
        grpc_address: grpc.to_string(),
        http_address: String::new(),
        down: false,
        groups: None,
        standby: vec![],
        own_storage_empty: false,
    }
}

/// Three nodes: writes go to one of them by the series' labels, reads fan out from
/// node 1.
struct Split {
    nodes: Vec<MemStorage>,
    fanout: FanoutQueryable,
}

/// Which node holds a series.
fn node_of(l: &Labels, n: usize) -> usize {
    (l.stable_hash() % n as u64) as usize
}

const NODE_BITS: u32 = 2;

impl Appendable for Split {
    fn appender(&self) -> Box<dyn Appender> {
        Box::new(SplitAppender {
            apps: self.nodes.iter().map(|n| n.appender()).collect(),
        })
    }
}

impl Queryable for Split {
    fn querier(&self, mint: i64, maxt: i64) -> Result<Box<dyn Querier>, StorageError> {
        self.fanout.querier(mint, maxt)
    }
}

struct SplitAppender {
    apps: Vec<Box<dyn Appender>>,
}

impl Appender for SplitAppender {
    fn append(
        &mut self,
        series_ref: SeriesRef,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        let i = node_of(labels, self.apps.len());
        // A ref names its node in the low bits and the node's own ref above them.
        let hint = if series_ref != 0 && (series_ref & 3) as usize == i {
            series_ref >> NODE_BITS
        } else {
            0
        };
        let r = self.apps[i].append(hint, labels, t, v)?;
        Ok((r << NODE_BITS) | i as u64)
    }

    fn commit(self: Box<Self>) -> Result<(), AppendError> {
        for a in self.apps {
            a.commit()?;
        }
        Ok(())
    }

    fn rollback(self: Box<Self>) {
        for a in self.apps {
            a.rollback();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn fanout_passes_the_storage_conformance_suite() {
    let rt = runtime();
    let make = || {
        let nodes: Vec<MemStorage> = (0..3).map(|_| MemStorage::new()).collect();
        let peers = vec![
            peer(2, &serve(&rt, nodes[1].clone())),
            peer(3, &serve(&rt, nodes[2].clone())),
        ];
        let _guard = rt.enter();
        let fanout = FanoutQueryable::new(
            Arc::new(nodes[0].clone()),
            Arc::new(move || peers.clone()),
            FanoutOptions::default(),
        );
        Split { nodes, fanout }
    };
    run_all(&make);
    // The suite must really have spread series over the nodes.
    let s = make();
    let mut app = s.appender();
    for i in 0..30 {
        let l = Labels::from_pairs(&[("__name__", "spread"), ("i", &i.to_string())]);
        app.append(0, &l, 1000, i as f64).expect("append");
    }
    app.commit().expect("commit");
    for (i, n) in s.nodes.iter().enumerate() {
        assert!(n.num_series() > 0, "node {i} got no series");
    }
    let all = select_all(&s, &[Matcher::equal("__name__", "spread")]);
    assert_eq!(all.len(), 30);
}

fn write(store: &MemStorage, l: &Labels, ts: &[i64]) {
    let mut app = store.appender();
    for &t in ts {
        app.append(0, l, t, t as f64).expect("append");
    }
    app.commit().expect("commit");
}

#[test]
fn the_same_series_on_several_nodes_is_merged_in_time_without_duplicates() {
    let rt = runtime();
    let nodes: Vec<MemStorage> = (0..3).map(|_| MemStorage::new()).collect();
    let l = Labels::from_pairs(&[("__name__", "moved"), ("job", "j")]);
    // A target that moved from node 1 to node 2 and then to node 3, with overlaps.
    write(&nodes[0], &l, &[1000, 2000, 3000]);
    write(&nodes[1], &l, &[3000, 4000, 5000]);
    write(&nodes[2], &l, &[5000, 6000]);
    let other = Labels::from_pairs(&[("__name__", "moved"), ("job", "k")]);
    write(&nodes[2], &other, &[1000]);
    let peers = vec![
        peer(2, &serve(&rt, nodes[1].clone())),
        peer(3, &serve(&rt, nodes[2].clone())),
    ];
    let _guard = rt.enter();
    let fanout = FanoutQueryable::new(
        Arc::new(nodes[0].clone()),
        Arc::new(move || peers.clone()),
        FanoutOptions::default(),
    );
    let got = select_all(&fanout, &[Matcher::equal("__name__", "moved")]);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].labels, l);
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.t).collect();
    assert_eq!(ts, [1000, 2000, 3000, 4000, 5000, 6000]);
    assert_eq!(got[1].labels, other);
    assert_eq!(got[1].samples, vec![Sample { t: 1000, v: 1000.0 }]);
    let q = fanout.querier(0, 10_000).expect("querier");
    assert_eq!(q.label_values("job", &[]).expect("values"), ["j", "k"]);
    assert_eq!(q.label_names(&[]).expect("names"), ["__name__", "job"]);
    assert!(q.warnings().is_empty(), "{:?}", q.warnings());
}

/// An answer far bigger than HTTP/2's windows (about 16 MB of samples from one
/// peer) streams whole: the server waits for the client's window updates instead
/// of dropping or truncating the rest.
#[test]
fn a_big_answer_streams_whole_under_flow_control() {
    let rt = runtime();
    let (mine, theirs) = (MemStorage::new(), MemStorage::new());
    let ts: Vec<i64> = (0..500).map(|i| i * 15_000).collect();
    for i in 0..2000 {
        let l = Labels::from_pairs(&[("__name__", "big"), ("i", &format!("{i:04}"))]);
        write(&theirs, &l, &ts);
    }
    let peers = vec![peer(2, &serve(&rt, theirs))];
    let _guard = rt.enter();
    let fanout = FanoutQueryable::new(
        Arc::new(mine),
        Arc::new(move || peers.clone()),
        FanoutOptions::default(),
    );
    let got = select_all(&fanout, &[Matcher::equal("__name__", "big")]);
    assert_eq!(got.len(), 2000);
    for (i, s) in got.iter().enumerate() {
        assert_eq!(s.labels.get("i"), format!("{i:04}"));
        let got_ts: Vec<i64> = s.samples.iter().map(|s| s.t).collect();
        assert_eq!(got_ts, ts, "series {i}");
    }
}

/// A listener that accepts connections and never answers.
fn black_hole(rt: &tokio::runtime::Runtime) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    addr
}

/// A loopback address nothing listens on.
fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    addr
}

#[test]
fn a_dead_or_hung_peer_gives_a_warning_or_an_error_without_partial_responses() {
    let rt = runtime();
    let nodes: Vec<MemStorage> = (0..2).map(|_| MemStorage::new()).collect();
    let a = Labels::from_pairs(&[("__name__", "m"), ("node", "1")]);
    let b = Labels::from_pairs(&[("__name__", "m"), ("node", "2")]);
    write(&nodes[0], &a, &[1000]);
    write(&nodes[1], &b, &[1000]);
    let live = serve(&rt, nodes[1].clone());
    let dead = closed_port();
    let hung = black_hole(&rt);
    let timeout = Duration::from_millis(700);
    let make = |partial_response: bool| {
        let peers = vec![
            peer(2, &live),
            peer(3, &dead),
            peer(4, &hung),
            Peer {
                down: true,
                ..peer(5, "127.0.0.1:1")
            },
        ];
        let _guard = rt.enter();
        FanoutQueryable::new(
            Arc::new(nodes[0].clone()),
            Arc::new(move || peers.clone()),
            FanoutOptions {
                timeout,
                partial_response,
            },
        )
    };
    let hints = SelectHints {
        start_ms: 0,
        end_ms: 2000,
        series_only: false,
        newest_only: false,
    };
    let sel = [Matcher::equal("__name__", "m")];

    let partial = make(true);
    let q = partial.querier(0, 2000).expect("querier");
    let started = Instant::now();
    let got: Vec<Labels> = q
        .select(&hints, &sel)
        .expect("partial select")
        .map(|s| s.expect("series").labels)
        .collect();
    let took = started.elapsed();
    assert_eq!(got, vec![a.clone(), b.clone()], "live nodes' data is there");
    assert!(
        took >= timeout && took < timeout * 4,
        "waited {took:?} for the hung peer with timeout {timeout:?}"
    );
    println!("FIGURE hung_peer_select_ms={}", took.as_millis());
    let w = q.warnings();
    println!("warnings: {w:#?}");
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().any(|m| m.contains("node 3")), "{w:?}");
    assert!(
        w.iter()
            .any(|m| m.contains("node 4") && m.contains("did not answer within")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|m| m.contains("node 5") && m.contains("down")),
        "{w:?}"
    );
    assert_eq!(q.label_values("node", &[]).expect("values"), ["1", "2"]);

    let strict = make(false);
    let q = strict.querier(0, 2000).expect("querier");
    let err = q
        .select(&hints, &sel)
        .err()
        .expect("strict select must fail");
    assert!(err.to_string().contains("partial-response=false"), "{err}");
    assert!(q.label_names(&[]).is_err());
}

/// Starts a `Query` server over `store` on `addr` in a runtime of its own, so that
/// shutting the runtime down stops the server with all its connections, as a
/// restart of the peer would.
fn serve_alone_on(addr: &str, store: MemStorage) -> tokio::runtime::Runtime {
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .expect("bind");
    spawn_query_server(&rt, listener, store);
    rt
}

#[test]
fn a_peer_restarted_between_reads_is_read_again_without_a_warning() {
    let nodes: Vec<MemStorage> = (0..2).map(|_| MemStorage::new()).collect();
    let a = Labels::from_pairs(&[("__name__", "m"), ("node", "1")]);
    let b = Labels::from_pairs(&[("__name__", "m"), ("node", "2")]);
    write(&nodes[0], &a, &[1000]);
    write(&nodes[1], &b, &[1000]);
    let addr = closed_port();
    let server = serve_alone_on(&addr, nodes[1].clone());
    let peers = vec![peer(2, &addr)];
    let fanout = FanoutQueryable::new(
        Arc::new(nodes[0].clone()),
        Arc::new(move || peers.clone()),
        FanoutOptions::default(),
    );
    let hints = SelectHints {
        start_ms: 0,
        end_ms: 2000,
        series_only: false,
        newest_only: false,
    };
    let read = || {
        let q = fanout.querier(0, 2000).expect("querier");
        let got: Vec<Labels> = q
            .select(&hints, &[Matcher::equal("__name__", "m")])
            .expect("select")
            .map(|s| s.expect("series").labels)
            .collect();
        let values = q.label_values("node", &[]).expect("values");
        (got, values, q.warnings())
    };
    let want = (
        vec![a.clone(), b.clone()],
        vec!["1".to_string(), "2".to_string()],
    );
    let (got, values, warnings) = read();
    assert_eq!((got, values), want);
    assert!(warnings.is_empty(), "{warnings:?}");
    // The peer restarts while the fan-out's connection to it is idle: the next
    // read finds that connection closed and must still get the peer's data.
    server.shutdown_timeout(Duration::from_secs(5));
    let _server = serve_alone_on(&addr, nodes[1].clone());
    for _ in 0..3 {
        let (got, values, warnings) = read();
        assert_eq!((got, values), want);
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}

/// What a misbehaving gRPC peer does with every request it gets.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// A message prefix that promises more bytes than the body then has.
    Truncated,
    /// A message prefix claiming a message over the size limit.
    Oversized,
    /// A whole, empty message but trailers without `grpc-status`.
    NoStatus,
    /// A trailers-only answer with an error status.
    ErrorStatus,
    /// Reads the request and never answers.
    Silent,
}

/// An HTTP/2 server on loopback that reads each request whole and answers it as
/// `how` says; returns its address.
fn misbehaving_peer(rt: &tokio::runtime::Runtime, how: Misbehaviour) -> String {
    use tonic::codegen::http;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(sock).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let mut body = req.into_body();
                    while let Some(Ok(_)) = body.data().await {}
                    let grpc = || {
                        http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc")
                    };
                    let trailers = |status: Option<&str>| {
                        let mut t = http::HeaderMap::new();
                        if let Some(s) = status {
                            t.insert("grpc-status", s.parse().expect("header"));
                        }
                        t
                    };
                    match how {
                        Misbehaviour::Truncated
                        | Misbehaviour::Oversized
                        | Misbehaviour::NoStatus => {
                            let Ok(mut send) =
                                respond.send_response(grpc().body(()).expect("response"), false)
                            else {
                                continue;
                            };
                            let data: &'static [u8] = match how {
                                Misbehaviour::Truncated => b"\0\0\0\0\x64abcdefghij",
                                Misbehaviour::Oversized => b"\0\xff\xff\xff\xffabcdefghij",
                                _ => b"\0\0\0\0\0",
                            };
                            let _ = send.send_data(bytes::Bytes::from_static(data), false);
                            let status = match how {
                                Misbehaviour::NoStatus => None,
                                _ => Some("0"),
                            };
                            let _ = send.send_trailers(trailers(status));
                        }
                        Misbehaviour::ErrorStatus => {
                            let r = grpc()
                                .header("grpc-status", "9")
                                .header("grpc-message", "not%20today")
                                .body(())
                                .expect("response");
                            let _ = respond.send_response(r, true);
                        }
                        Misbehaviour::Silent => held.push(respond),
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_peer_with_a_broken_answer_gives_a_warning_naming_what_is_wrong() {
    let rt = runtime();
    let local = MemStorage::new();
    let a = Labels::from_pairs(&[("__name__", "m"), ("node", "1")]);
    write(&local, &a, &[1000]);
    let timeout = Duration::from_millis(700);
    let cases = [
        (Misbehaviour::Truncated, "ended inside a message"),
        (Misbehaviour::Oversized, "more than the limit"),
        (Misbehaviour::NoStatus, "without a grpc-status"),
        (Misbehaviour::ErrorStatus, "not today"),
        (Misbehaviour::Silent, "did not answer within"),
    ];
    let hints = SelectHints {
        start_ms: 0,
        end_ms: 2000,
        series_only: false,
        newest_only: false,
    };
    for (how, want) in cases {
        let peers = vec![peer(2, &misbehaving_peer(&rt, how))];
        for partial_response in [true, false] {
            let peers = peers.clone();
            let fanout = FanoutQueryable::new(
                Arc::new(local.clone()),
                Arc::new(move || peers.clone()),
                FanoutOptions {
                    timeout,
                    partial_response,
                },
            );
            let q = fanout.querier(0, 2000).expect("querier");
            let got = q.select(&hints, &[Matcher::equal("__name__", "m")]);
            let values = q.label_values("node", &[]);
            if partial_response {
                let got: Vec<Labels> = got
                    .expect("partial select")
                    .map(|s| s.expect("series").labels)
                    .collect();
                assert_eq!(got, vec![a.clone()], "{how:?}: the local data is there");
                assert_eq!(values.expect("values"), ["1"], "{how:?}");
                let w = q.warnings();
                assert!(
                    !w.is_empty() && w.iter().all(|m| m.contains("node 2") && m.contains(want)),
                    "{how:?}: {w:?}"
                );
            } else {
                let err = got.err().expect("strict select must fail").to_string();
                assert!(
                    err.contains(want) && err.contains("partial-response=false"),
                    "{how:?}: {err}"
                );
                assert!(values.is_err(), "{how:?}");
            }
        }
    }
}

/// A node's storage by WAL group, as a node in cluster mode serves it: its own
/// (pre-cluster) storage plus one store per group it holds a voting replica of.
#[derive(Clone)]
struct Grouped {
    own: MemStorage,
    held: std::collections::BTreeMap<u64, MemStorage>,
}

impl Grouped {
    /// Its own storage and `groups`, copied into one store; an error like a node's
    /// for a group it does not hold.
    fn union(&self, groups: &[u64]) -> Result<MemStorage, StorageError> {
        let all =
            [Matcher::new(hearth::labels::MatchType::Regexp, "__name__", ".+").expect("matcher")];
        let out = MemStorage::new();
        let mut app = out.appender();
        let mut parts = vec![&self.own];
        for g in groups {
            parts.push(self.held.get(g).ok_or_else(|| {
                StorageError::Other(format!(
                    "WAL group {g}: this node holds no voting replica of it"
                ))
            })?);
        }
        for part in parts {
            for s in select_all(part, &all) {
                for x in &s.samples {
                    app.append(0, &s.labels, x.t, x.v).expect("append");
                }
            }
        }
        app.commit().expect("commit");
        Ok(out)
    }
}

#[tonic::async_trait]
impl hearth::cluster::query_service::GroupedStorage for Grouped {
    async fn querier_for_groups(
        &self,
        mint: i64,
        maxt: i64,
        groups: &[u64],
    ) -> Result<Box<dyn Querier>, StorageError> {
        self.union(groups)?.querier(mint, maxt)
    }
}

/// Starts a `Query` server over `node` on a free loopback port; returns its address.
fn serve_grouped(rt: &tokio::runtime::Runtime, node: Grouped) -> String {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let every: Vec<u64> = node.held.keys().copied().collect();
    let local: Arc<dyn Queryable> = Arc::new(node.union(&every).expect("union"));
    let service = QueryService::new(local, Some(Arc::new(node)));
    let routes = tonic::service::Routes::new(service.into_server());
    rt.spawn(grpc_server::serve(
        listener,
        routes,
        CancellationToken::new(),
    ));
    addr
}

#[test]
fn a_failed_peers_groups_are_read_from_another_replica() {
    let rt = runtime();
    let mine = MemStorage::new();
    let l1 = Labels::from_pairs(&[("__name__", "m"), ("group", "1")]);
    write(&mine, &l1, &[1000]);
    // Node 3 holds groups 7 and 8; node 2 (gone) was asked for group 7.
    let (g7, g8) = (MemStorage::new(), MemStorage::new());
    let l7 = Labels::from_pairs(&[("__name__", "m"), ("group", "7")]);
    let l8 = Labels::from_pairs(&[("__name__", "m"), ("group", "8")]);
    write(&g7, &l7, &[1000, 2000]);
    write(&g8, &l8, &[1000]);
    let node3 = serve_grouped(
        &rt,
        Grouped {
            own: MemStorage::new(),
            held: [(7, g7), (8, g8.clone())].into(),
        },
    );
    // Node 4 holds group 8 only, whatever a stale plan says.
    let node4 = serve_grouped(
        &rt,
        Grouped {
            own: MemStorage::new(),
            held: [(8, g8)].into(),
        },
    );
    let dead = closed_port();
    let timeout = Duration::from_millis(700);
    let read = |peers: Vec<Peer>, partial_response: bool| {
        let _guard = rt.enter();
        let fanout = FanoutQueryable::new(
            Arc::new(mine.clone()),
            Arc::new(move || peers.clone()),
            FanoutOptions {
                timeout,
                partial_response,
            },
        );
        let q = fanout.querier(0, 10_000).expect("querier");
        let hints = SelectHints {
            start_ms: 0,
            end_ms: 10_000,
            series_only: false,
            newest_only: false,
        };
        let got: Result<Vec<(Labels, usize)>, StorageError> = q
            .select(&hints, &[Matcher::equal("__name__", "m")])
            .and_then(|set| {
                set.map(|s| s.map(|s| (s.labels, s.samples.len())))
                    .collect()
            });
        (got, q.warnings())
    };
    let gone = |own_storage_empty: bool| Peer {
        groups: Some(vec![7]),
        own_storage_empty,
        ..peer(2, &dead)
    };
    let standing_by = |addr: &str, standby: Vec<u64>| Peer {
        groups: Some(vec![8]),
        standby,
        own_storage_empty: true,
        ..peer(3, addr)
    };
    let everything = vec![(l1.clone(), 1), (l7.clone(), 2), (l8.clone(), 1)];

    // Node 2's group comes from node 3; node 2 had nothing else: no warning, even
    // without partial responses. Node 5 has nothing to give and is not asked (it
    // would never answer, a warning).
    let idle = Peer {
        groups: Some(vec![]),
        own_storage_empty: true,
        ..peer(5, &black_hole(&rt))
    };
    for partial in [true, false] {
        let peers = vec![gone(true), standing_by(&node3, vec![7]), idle.clone()];
        let (got, w) = read(peers, partial);
        assert_eq!(got.expect("select"), everything);
        assert!(w.is_empty(), "{w:?}");
    }

    // Node 2 also had data of its own, which no other node has: said so.
    let (got, w) = read(vec![gone(false), standing_by(&node3, vec![7])], true);
    assert_eq!(got.expect("select"), everything);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("node 2") && w[0].contains("own storage"),
        "{w:?}"
    );

    // No replica stands by: group 7 is missing and node 2 is named.
    let (got, w) = read(vec![gone(true), standing_by(&node3, vec![])], true);
    assert_eq!(got.expect("select"), vec![(l1.clone(), 1), (l8.clone(), 1)]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("node 2") && w[0].contains("missing"), "{w:?}");

    // The replica standing by no longer holds the group: the retry's failure
    // names the groups it was asked for.
    let (got, w) = read(vec![gone(true), standing_by(&node4, vec![7])], true);
    assert_eq!(got.expect("select"), vec![(l1.clone(), 1), (l8.clone(), 1)]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("node 3") && w[0].contains("[7]") && w[0].contains("no voting replica"),
        "{w:?}"
    );

    // Both replicas gone: both named; without partial responses, an error.
    let (got, w) = read(vec![gone(true), standing_by(&dead, vec![7])], true);
    assert_eq!(got.expect("select"), vec![(l1.clone(), 1)]);
    assert_eq!(w.len(), 2, "{w:?}");
    let (got, _) = read(vec![gone(true), standing_by(&dead, vec![7])], false);
    assert!(got.is_err());
}
