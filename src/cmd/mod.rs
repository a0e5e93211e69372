//! Command-line tools in the `hearth` binary, like promtool's: `hearth tsdb …`,
//! `hearth check config`, `hearth test rules`, `hearth cluster …`.

pub mod check;
pub mod cluster;
pub mod test_rules;
pub mod tsdb;
