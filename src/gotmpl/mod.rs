//! A Go `text/template` engine: the template language Prometheus uses for alert
//! labels and annotations and Alertmanager uses for notifications.
//!
//! `lex.rs` turns text into tokens (with `{{-`/`-}}` trimming and comments),
//! `parse.rs` builds the node tree and the set of named templates (`define`,
//! `block`), `exec.rs` walks it over a dynamic [`Value`], and `builtins.rs` holds
//! Go's builtin functions and its `fmt` formatting (`printf`, `print`, `%v`).
//! Callers add their own functions through [`Funcs`] and their own typed data
//! (Alertmanager's `KV`, a `time.Time`) through the [`Object`] trait.
//!
//! Behaviour follows Go's `text/template` where users can see it: output,
//! truthiness, variable scoping, comparison rules, and error messages of the form
//! `template: NAME:LINE:COL: executing "NAME" at <NODE>: MESSAGE`. Differences are
//! listed in `docs/templates.md`. The engine knows nothing of rules or
//! Alertmanager: those modules hold their data and functions.

mod builtins;
mod exec;
pub mod gotime;
mod lex;
mod parse;
#[cfg(test)]
mod tests;

pub use builtins::{arg_str, fmt_value, go_quote, html_escape, query_escape, sprintf, want_args};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

/// Most bytes one execution may produce, by default, so a template cannot blow
/// up memory.
pub const OUTPUT_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// Deepest nesting of `{{template}}` calls, as Go limits recursion.
pub const TEMPLATE_CALL_DEPTH_MAX: usize = 1000;

/// A template failed to parse or to execute. The message reads like Go's.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The text is not a valid template (`template: NAME:LINE: MESSAGE`).
    #[error("template: {name}:{line}: {msg}")]
    Parse {
        name: String,
        line: usize,
        msg: String,
    },
    /// Executing failed at a node (`template: NAME:LINE:COL: executing ...`).
    #[error("template: {location}: executing {template:?} at <{context}>: {msg}")]
    Exec {
        /// `PARSENAME:LINE:COL` of the node.
        location: String,
        /// The named template that was executing.
        template: String,
        /// The node, as text (at most 20 characters, then `...`).
        context: String,
        msg: String,
    },
    /// Execution failed outside any node.
    #[error("template: {0}")]
    Other(String),
}

/// A function callable from a template.
pub type FuncFn<'a> = dyn Fn(&[Value]) -> Result<Value, String> + 'a;

/// A function value (what `call` calls), which data may carry.
pub type FuncValue = Arc<dyn Fn(&[Value]) -> Result<Value, String> + Send + Sync>;

/// Typed data with fields or methods, like a Go struct or a named map type.
pub trait Object: Send + Sync {
    /// Go's name of the type, for error messages (`template.KV`).
    fn type_name(&self) -> &str;
    /// The field or method `name` called with `args`; `None` when it has none.
    fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>>;
    /// The plain value behind it (a map, list or string), used by `range`, `len`,
    /// `index`, comparisons and printing, as Go uses a named type's kind.
    fn underlying(&self) -> Value;
    /// Its text when printed, for types with a `String` method in Go.
    fn display(&self) -> Option<String> {
        None
    }
    /// The object as `Any`, for functions that take one concrete type.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A value a template works on.
#[derive(Clone, Default)]
pub enum Value {
    /// Go's invalid `reflect.Value`: a missing map key or field of nil. Prints as
    /// `<no value>`.
    #[default]
    NoValue,
    /// `nil`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Arc<Vec<Value>>),
    /// A map with string keys; iterated in key order, as Go does.
    Map(Arc<BTreeMap<String, Value>>),
    Object(Arc<dyn Object>),
    Func(FuncValue),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Object(o) => write!(f, "{}({})", o.type_name(), fmt_value(self)),
            Value::Func(_) => write!(f, "func"),
            Value::String(s) => write!(f, "{s:?}"),
            _ => write!(f, "{}", fmt_value(self)),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::NoValue, Value::NoValue) | (Value::Nil, Value::Nil) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::String(a), Value::String(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => a.underlying() == b.underlying(),
            _ => false,
        }
    }
}

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }

    /// A list value.
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Arc::new(v))
    }

    /// A map value.
    pub fn map(m: BTreeMap<String, Value>) -> Value {
        Value::Map(Arc::new(m))
    }

    /// A map of strings (Go's `map[string]string`).
    pub fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
        Value::map(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), Value::str(v)))
                .collect(),
        )
    }

    /// A typed object.
    pub fn object(o: impl Object + 'static) -> Value {
        Value::Object(Arc::new(o))
    }

    /// The value an `Object` stands for; other values as they are.
    pub fn resolved(&self) -> Value {
        match self {
            Value::Object(o) => o.underlying(),
            v => v.clone(),
        }
    }

    /// Go's name of the value's type, for error messages.
    pub fn type_name(&self) -> String {
        match self {
            Value::NoValue => "invalid value".into(),
            Value::Nil => "<nil>".into(),
            Value::Bool(_) => "bool".into(),
            Value::Int(_) => "int".into(),
            Value::Float(_) => "float64".into(),
            Value::String(_) => "string".into(),
            Value::List(_) => "[]interface {}".into(),
            Value::Map(m) => {
                if m.values().all(|v| matches!(v, Value::String(_))) {
                    "map[string]string".into()
                } else {
                    "map[string]interface {}".into()
                }
            }
            Value::Object(o) => o.type_name().to_string(),
            Value::Func(_) => "func".into(),
        }
    }

    /// Go's truth: false, 0, nil, the empty string, list or map are false.
    pub fn is_true(&self) -> bool {
        match self {
            Value::NoValue | Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Object(o) => match o.underlying() {
                // A struct-like object with no plain value behind it is true.
                Value::NoValue | Value::Nil => true,
                v => v.is_true(),
            },
            Value::Func(_) => true,
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::String(s)
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Value {
        Value::Float(f)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// A function a template may call: a plain function, or `tmpl`, which executes
/// another template of the set (Prometheus's `tmpl NAME DATA`).
pub enum Func<'a> {
    Plain(Box<FuncFn<'a>>),
    ExecTemplate,
}

/// The functions a template may call besides Go's builtins. Names are checked
/// when parsing, so parse with a `Funcs` holding at least the same names.
#[derive(Default)]
pub struct Funcs<'a> {
    map: HashMap<String, Func<'a>>,
}

impl<'a> Funcs<'a> {
    pub fn new() -> Funcs<'a> {
        Funcs::default()
    }

    /// Adds (or replaces) a function.
    pub fn add(
        &mut self,
        name: &str,
        f: impl Fn(&[Value]) -> Result<Value, String> + 'a,
    ) -> &mut Self {
        self.map.insert(name.to_string(), Func::Plain(Box::new(f)));
        self
    }

    /// Adds `name` as Prometheus's `tmpl`: it executes a named template of the
    /// same set with the given data and returns its output.
    pub fn add_exec_template(&mut self, name: &str) -> &mut Self {
        self.map.insert(name.to_string(), Func::ExecTemplate);
        self
    }

    /// Whether `name` is a function here or a builtin.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name) || builtins::is_builtin(name)
    }

    fn get(&self, name: &str) -> Option<&Func<'a>> {
        self.map.get(name)
    }
}

/// Options of one execution.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Most bytes of output; more is an error.
    pub output_bytes_max: usize,
    /// Variables defined before the template starts (besides `$`), like the
    /// `$labels`/`$value` Prometheus defines for alert templates.
    pub vars: Vec<(String, Value)>,
    /// Added to the column of errors on the first line, for callers that (like
    /// Prometheus) place a prefix before the user's text and want the same
    /// columns in error messages.
    pub first_line_col_offset: usize,
    /// Go's `Option("missingkey=zero")`: a missing map key gives the zero value
    /// of the map's element type (`""` for a map of strings) instead of
    /// `<no value>`. Prometheus sets it.
    pub missing_key_zero: bool,
}

impl Default for ExecOptions {
    fn default() -> ExecOptions {
        ExecOptions {
            output_bytes_max: OUTPUT_BYTES_MAX_DEFAULT,
            vars: Vec::new(),
            first_line_col_offset: 0,
            missing_key_zero: false,
        }
    }
}

/// A set of named templates, like Go's `*template.Template` with its associated
/// templates. Parsing text adds its `define`d templates to the set and makes
/// its body the template of the name parsed under.
#[derive(Clone, Default)]
pub struct Template {
    /// The name `execute` runs.
    name: String,
    trees: HashMap<String, Arc<parse::Tree>>,
    /// Variables the text may use without declaring them (their values come
    /// from `ExecOptions::vars`).
    vars: Vec<String>,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.trees.keys().collect();
        names.sort();
        write!(f, "Template({:?}, {names:?})", self.name)
    }
}

impl Template {
    /// An empty set whose main template is `name`.
    pub fn new(name: &str) -> Template {
        Template {
            name: name.to_string(),
            trees: HashMap::new(),
            vars: Vec::new(),
        }
    }

    /// Lets templates parsed from now on use these variables (with `$`) without
    /// declaring them; their values are given in `ExecOptions::vars`.
    pub fn declare_vars(&mut self, names: &[&str]) -> &mut Self {
        self.vars.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// The main template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses `text` as the main template (and the templates it defines).
    /// `funcs` names the functions the text may call besides the builtins.
    pub fn parse(&mut self, text: &str, funcs: &Funcs) -> Result<&mut Self, TemplateError> {
        let name = self.name.clone();
        self.parse_named(&name, text, funcs)?;
        Ok(self)
    }

    /// Parses `text` as the template `name` of this set (as Go's `New(name).Parse`
    /// on an associated template, or `ParseFiles` with the file's base name).
    /// A body of only whitespace and comments does not replace an existing
    /// template of that name, so files of only `define`s leave others alone.
    pub fn parse_named(
        &mut self,
        name: &str,
        text: &str,
        funcs: &Funcs,
    ) -> Result<(), TemplateError> {
        let is_func = |f: &str| funcs.has(f);
        let parsed = parse::parse(name, text, &self.vars, &is_func)?;
        for (n, tree) in parsed {
            if n != name || !tree.is_empty_body() || !self.trees.contains_key(&n) {
                self.trees.insert(n, Arc::new(tree));
            }
        }
        Ok(())
    }

    /// Whether the set has a template called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.trees.contains_key(name)
    }

    /// The names of the templates of the set, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.trees.keys().cloned().collect();
        v.sort();
        v
    }

    /// Executes the main template on `data`.
    pub fn execute(&self, data: &Value, funcs: &Funcs) -> Result<String, TemplateError> {
        self.execute_with(&self.name, data, funcs, &ExecOptions::default())
    }

    /// Executes the template `name` of the set on `data` with `opts`.
    pub fn execute_with(
        &self,
        name: &str,
        data: &Value,
        funcs: &Funcs,
        opts: &ExecOptions,
    ) -> Result<String, TemplateError> {
        exec::execute(self, name, data, funcs, opts)
    }
}
