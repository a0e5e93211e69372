//! hearth: a clustered, Prometheus-compatible monitoring database.
//!
//! The crate is a library with one binary (`src/main.rs`). `docs/ARCHITECTURE.md`
//! has the map; in short: `labels` and `storage` define the data model and the two
//! seams, `tsdb` and `wal` implement local storage, `web` serves HTTP, and
//! `server` wires everything together.

pub mod alertmanager;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod config_units;
pub mod discovery;
pub mod encoding;
pub mod fxhash;
pub mod gofloat;
pub mod gotmpl;
pub mod labels;
pub mod promql;
pub mod relabel;
pub mod remote;
pub mod rules;
pub mod scrape;
pub mod server;
pub mod storage;
pub mod textparse;
pub mod tsdb;
pub mod wal;
pub mod web;
