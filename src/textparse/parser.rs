//! The driver both text parsers share. A [`Parser`] owns the cursor over the body
//! and the label scratch of the sample being read, and turns one format's scanning
//! of a single entry into `next_raw`, `labels` and the `Iterator` of entries. A
//! format (`prom::Prom`, `openmetrics::OpenMetrics`) only says how one entry is
//! scanned.

use super::lexer::{LabelScratch, LabelSyntax, Lexer, Piece, Scan};
use super::{Entry, MetricType, ParseError, RawEntry};
use crate::labels::Labels;

/// What a format's scanner works on: the body and the sample being read.
pub struct Cursor<'a> {
    pub(super) lex: Lexer<'a>,
    /// Label pairs of the sample being parsed, reused across samples.
    pub(super) labels: LabelScratch,
    /// The type from the most recent `# TYPE` line, which decides whether `le` or
    /// `quantile` values are normalised (as Prometheus does, whatever the family).
    pub(super) kind: MetricType,
    /// Where the last sample's line starts, for errors found building its labels.
    pub(super) sample_start: usize,
    /// The last sample's label set when it was skipped rather than parsed (see
    /// `Cursor::defer_label_set`).
    pub(super) deferred: Option<DeferredLabels>,
}

/// A sample's label set that was only skipped over: a scrape loop that knows the
/// series by its text never needs it parsed. `Parser::labels` parses it (finding
/// any error in it), and so does a sample whose value turns out to be invalid, so
/// that the first error on the line is the one reported.
#[derive(Clone, Copy)]
pub(super) struct DeferredLabels {
    /// The metric name written before the set.
    name: Piece,
    /// Where the sample's line starts.
    start: usize,
    /// The set's `{` and the position just after its `}`.
    brace: usize,
    end: usize,
    syntax: LabelSyntax,
}

impl Cursor<'_> {
    /// Skips the label set at the cursor (its `{`) of a sample whose metric name
    /// `name` came before it, leaving it to `complete_labels`. Returns false,
    /// without moving, when the set must be parsed now (see
    /// `Lexer::skip_label_set`).
    pub(super) fn defer_label_set(
        &mut self,
        name: Piece,
        syntax: LabelSyntax,
        raw_newline: bool,
    ) -> bool {
        let brace = self.lex.pos;
        if !self.lex.skip_label_set(raw_newline) {
            return false;
        }
        self.deferred = Some(DeferredLabels {
            name,
            start: self.sample_start,
            brace,
            end: self.lex.pos,
            syntax,
        });
        true
    }

    /// Parses the label set `defer_label_set` skipped, if any, into `labels`,
    /// with the checks and errors an immediate parse has.
    pub(super) fn complete_labels(&mut self) -> Scan<()> {
        let Some(d) = self.deferred.take() else {
            return Ok(());
        };
        let mut lex = self.lex.clone();
        lex.pos = d.brace;
        if self
            .labels
            .parse_label_set(&mut lex, d.syntax, self.kind)?
            .is_some()
        {
            return Err(lex.fail_plain(d.start, "metric name given twice".to_string()));
        }
        // Both end at the first `}` outside quoted strings; a difference would be
        // a bug in `skip_label_set`, reported rather than believed.
        if lex.pos != d.end {
            return Err(lex.fail_plain(
                d.brace,
                "label set does not end at its first unquoted '}'".to_string(),
            ));
        }
        self.labels.push_metric_name(&lex, d.name, d.start)
    }

    /// Records the sample's metric name, found before or inside its label set
    /// (`None`: neither had one, an error at `start`), unless its label set was
    /// deferred (`complete_labels` records it then).
    pub(super) fn metric_name(&mut self, name: Option<Piece>, start: usize) -> Scan<()> {
        let Some(name) = name else {
            return Err(self
                .lex
                .fail_plain(start, "metric name missing from label set".to_string()));
        };
        if self.deferred.is_none() {
            self.labels.push_metric_name(&self.lex, name, start)?;
        }
        Ok(())
    }

    /// `result` of scanning the rest of a sample line, except that an error in a
    /// deferred label set, which comes earlier on the line, wins over `result`'s.
    pub(super) fn first_error<T>(&mut self, result: Scan<T>) -> Scan<T> {
        match result {
            Err(fail) if self.deferred.is_some() => self.complete_labels().and(Err(fail)),
            other => other,
        }
    }
}

/// One text format's grammar: how the next entry is scanned. Not nameable outside
/// `textparse`, so the formats are the two in this module.
pub trait Format<'a>: Default {
    /// Scans the entry at the cursor: `Ok(None)` at a valid end of the body. A
    /// sample's label pairs are left in `cur.labels`, unbuilt, and its line start
    /// in `cur.sample_start`.
    fn next_entry(&mut self, cur: &mut Cursor<'a>) -> Scan<Option<RawEntry<'a>>>;
}

/// Parses an exposition in the format `F`. Yields entries in order and stops after
/// the first error (or, in OpenMetrics, at `# EOF`).
pub struct Parser<'a, F> {
    cur: Cursor<'a>,
    format: F,
    done: bool,
}

impl<'a, F: Format<'a>> Parser<'a, F> {
    pub fn new(body: &'a [u8]) -> Parser<'a, F> {
        Parser {
            cur: Cursor {
                lex: Lexer::new(body),
                labels: LabelScratch::default(),
                kind: MetricType::Unknown,
                sample_start: 0,
                deferred: None,
            },
            format: F::default(),
            done: false,
        }
    }

    /// The next entry without building the sample's label set: a sample comes as
    /// its series text (see [`RawSample`](super::RawSample)); [`Parser::labels`]
    /// builds the labels when the caller needs them.
    pub fn next_raw(&mut self) -> Option<Result<RawEntry<'a>, ParseError>> {
        if self.done {
            return None;
        }
        match self.format.next_entry(&mut self.cur) {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(fail) => {
                self.done = true;
                Some(Err(self.cur.lex.error(fail)))
            }
        }
    }

    /// The labels of the sample [`Parser::next_raw`] returned last (an error for a
    /// repeated label name, which also ends the parse).
    pub fn labels(&mut self) -> Result<Labels, ParseError> {
        let cur = &mut self.cur;
        cur.complete_labels()
            .and_then(|()| cur.labels.build(&cur.lex, cur.sample_start))
            .map_err(|fail| {
                self.done = true;
                cur.lex.error(fail)
            })
    }

    /// Rejects quoted metric and label names outside the legacy charset, as
    /// Prometheus does with `metric_name_validation_scheme: legacy`.
    pub fn with_legacy_names(mut self) -> Self {
        self.cur.lex.legacy_names = true;
        self
    }

    /// Byte offset of the next unparsed input, for progress and line counting.
    pub fn offset(&self) -> usize {
        self.cur.lex.pos
    }
}

impl<'a, F: Format<'a>> Iterator for Parser<'a, F> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(match self.next_raw()? {
            Ok(RawEntry::Sample(s)) => self.labels().map(|labels| s.into_entry(labels)),
            Ok(RawEntry::Other(e)) => Ok(e),
            Err(e) => Err(e),
        })
    }
}
