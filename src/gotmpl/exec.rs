//! Executing a parsed template: walks the nodes over a [`Value`], evaluating
//! pipelines, fields, variables and function calls with Go's rules, and writes
//! the output. Errors name the template, line, column and node like Go's.

use super::builtins;
use super::parse::{Arg, Command, Control, Node, Num, Pipe, Tree};
use super::{ExecOptions, Func, Funcs, Template, TemplateError, Value, TEMPLATE_CALL_DEPTH_MAX};
use std::sync::Arc;

/// How a list of nodes ended: normally, or by `{{break}}`/`{{continue}}`.
enum Flow {
    Normal,
    Break,
    Continue,
}

struct State<'t, 'f> {
    set: &'t Template,
    funcs: &'t Funcs<'f>,
    opts: &'t ExecOptions,
    out: String,
    /// Variables in scope, innermost last; `$` first.
    vars: Vec<(String, Value)>,
    /// The tree being executed, for error positions.
    tree: &'t Tree,
    /// The named template being executed.
    name: &'t str,
    depth: usize,
}

type R<T> = Result<T, TemplateError>;

/// Executes template `name` of `set` on `data`.
pub fn execute(
    set: &Template,
    name: &str,
    data: &Value,
    funcs: &Funcs,
    opts: &ExecOptions,
) -> Result<String, TemplateError> {
    let Some(tree) = set.trees.get(name) else {
        return Err(TemplateError::Other(format!(
            "no template {name:?} associated with template {:?}",
            set.name
        )));
    };
    run(set, tree, name, data, funcs, opts, 0)
}

fn run(
    set: &Template,
    tree: &Arc<Tree>,
    name: &str,
    data: &Value,
    funcs: &Funcs,
    opts: &ExecOptions,
    depth: usize,
) -> Result<String, TemplateError> {
    let mut vars = vec![("$".to_string(), data.clone())];
    vars.extend(opts.vars.iter().cloned());
    let mut st = State {
        set,
        funcs,
        opts,
        out: String::new(),
        vars,
        tree,
        name,
        depth,
    };
    st.walk(data, &tree.root)?;
    Ok(st.out)
}

/// Go's `%.20s...` shortening of the node in error messages.
fn shorten(context: String) -> String {
    if context.chars().count() > 20 {
        let s: String = context.chars().take(20).collect();
        format!("{s}...")
    } else {
        context
    }
}

/// Messages that Go does not prefix with `error calling NAME:`.
fn is_arg_error(msg: &str) -> bool {
    msg.starts_with("wrong number of args for ")
        || msg.starts_with("wrong type for value")
        || msg.starts_with("invalid value;")
}

impl<'t, 'f> State<'t, 'f> {
    fn error(
        &self,
        pos: usize,
        context: impl std::fmt::Display,
        msg: impl Into<String>,
    ) -> TemplateError {
        let text = &self.tree.text;
        let pos = pos.min(text.len());
        let before = &text[..pos];
        let line = before.matches('\n').count() + 1;
        let col = match before.rfind('\n') {
            Some(nl) => pos - nl - 1,
            None => pos + self.opts.first_line_col_offset,
        };
        TemplateError::Exec {
            location: format!("{}:{line}:{col}", self.tree.parse_name),
            template: self.name.to_string(),
            context: shorten(context.to_string()),
            msg: msg.into(),
        }
    }

    fn write(&mut self, s: &str, pos: usize) -> R<()> {
        self.out.push_str(s);
        if self.out.len() > self.opts.output_bytes_max {
            return Err(self.error(
                pos,
                "output",
                format!("output longer than {} bytes", self.opts.output_bytes_max),
            ));
        }
        Ok(())
    }

    fn walk(&mut self, dot: &Value, nodes: &'t [Node]) -> R<Flow> {
        for n in nodes {
            match n {
                Node::Text(t) => self.write(t, 0)?,
                Node::Action(pipe) => {
                    let v = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        if let Value::Func(_) = v {
                            return Err(self.error(
                                pipe.pos,
                                format!("{{{{{pipe}}}}}"),
                                format!("can't print {{{{{pipe}}}}} of type func"),
                            ));
                        }
                        let s = builtins::fmt_value_top(&v);
                        self.write(&s, pipe.pos)?;
                    }
                }
                Node::If(c) | Node::With(c) => {
                    let is_with = matches!(n, Node::With(_));
                    let mark = self.vars.len();
                    let flow = self.walk_if_with(dot, c, is_with);
                    self.vars.truncate(mark);
                    match flow? {
                        Flow::Normal => {}
                        f => return Ok(f),
                    }
                }
                Node::Range(c) => {
                    let mark = self.vars.len();
                    let r = self.walk_range(dot, c);
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Template { pos, name, pipe } => self.walk_template(dot, *pos, name, pipe)?,
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn walk_if_with(&mut self, dot: &Value, c: &'t Control, is_with: bool) -> R<Flow> {
        let v = self.eval_pipeline(dot, &c.pipe)?;
        if v.is_true() {
            if is_with {
                self.walk(&v, &c.list)
            } else {
                self.walk(dot, &c.list)
            }
        } else if let Some(e) = &c.else_list {
            self.walk(dot, e)
        } else {
            Ok(Flow::Normal)
        }
    }

    fn walk_range(&mut self, dot: &Value, c: &'t Control) -> R<()> {
        let v = self.eval_pipeline(dot, &c.pipe)?.resolved();
        let items: Vec<(Value, Value)> = match &v {
            Value::List(l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(m) => m
                .iter()
                .map(|(k, e)| (Value::String(k.clone()), e.clone()))
                .collect(),
            Value::Int(n) => {
                if c.pipe.decl.len() > 1 {
                    return Err(self.error(
                        c.pos,
                        format!("{n}"),
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect()
            }
            Value::NoValue | Value::Nil => Vec::new(),
            other => {
                return Err(self.error(
                    c.pipe.pos,
                    &c.pipe,
                    format!("range can't iterate over {}", builtins::fmt_value(other)),
                ))
            }
        };
        if items.is_empty() {
            if let Some(e) = &c.else_list {
                self.walk(dot, e)?;
            }
            return Ok(());
        }
        let ndecl = c.pipe.decl.len();
        for (index, elem) in items {
            // The declared variables were pushed by the pipeline, last on top.
            if ndecl > 0 {
                if c.pipe.is_assign {
                    let (first, second) = if ndecl > 1 {
                        (index.clone(), Some(elem.clone()))
                    } else {
                        (elem.clone(), None)
                    };
                    self.set_var(c.pos, &c.pipe.decl[0], first)?;
                    if let Some(s) = second {
                        self.set_var(c.pos, &c.pipe.decl[1], s)?;
                    }
                } else {
                    let top = self.vars.len() - 1;
                    self.vars[top].1 = elem.clone();
                    if ndecl > 1 {
                        self.vars[top - 1].1 = index.clone();
                    }
                }
            }
            let mark = self.vars.len();
            let flow = self.walk(&elem, &c.list);
            self.vars.truncate(mark);
            if let Flow::Break = flow? {
                break;
            }
        }
        Ok(())
    }

    fn walk_template(
        &mut self,
        dot: &Value,
        pos: usize,
        name: &str,
        pipe: &'t Option<Pipe>,
    ) -> R<()> {
        let context = || match pipe {
            Some(p) => format!("{{{{template {name:?} {p}}}}}"),
            None => format!("{{{{template {name:?}}}}}"),
        };
        let Some(tree) = self.set.trees.get(name) else {
            return Err(self.error(pos, context(), format!("template {name:?} not defined")));
        };
        if self.depth >= TEMPLATE_CALL_DEPTH_MAX {
            return Err(self.error(
                pos,
                context(),
                format!("exceeded maximum template depth ({TEMPLATE_CALL_DEPTH_MAX})"),
            ));
        }
        let new_dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Value::NoValue,
        };
        let mut sub = State {
            set: self.set,
            funcs: self.funcs,
            opts: self.opts,
            out: std::mem::take(&mut self.out),
            vars: vec![("$".to_string(), new_dot.clone())],
            tree,
            name: self
                .set
                .trees
                .get_key_value(name)
                .map(|(k, _)| k.as_str())
                .unwrap_or(name),
            depth: self.depth + 1,
        };
        let r = sub.walk(&new_dot, &tree.root);
        self.out = sub.out;
        r.map(|_| ())
    }

    fn set_var(&mut self, pos: usize, name: &str, v: Value) -> R<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(self.error(pos, name, format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Value, pipe: &'t Pipe) -> R<Value> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value)?);
        }
        let value = value.unwrap_or_default();
        for d in &pipe.decl {
            if pipe.is_assign {
                self.set_var(pipe.pos, d, value.clone())?;
            } else {
                self.vars.push((d.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Command, final_: &Option<Value>) -> R<()> {
        if cmd.args.len() > 1 || final_.is_some() {
            return Err(self.error(
                cmd.pos,
                cmd,
                format!("can't give argument to non-function {}", cmd.args[0]),
            ));
        }
        Ok(())
    }

    fn eval_command(&mut self, dot: &Value, cmd: &'t Command, final_: Option<Value>) -> R<Value> {
        let first = &cmd.args[0];
        match first {
            Arg::Field(_, names) => {
                self.eval_field_chain(dot, dot.clone(), first, names, &cmd.args[1..], final_)
            }
            Arg::Chain(_, node, fields) => {
                let recv = self.eval_chain_base(dot, node)?;
                self.eval_field_chain(dot, recv, first, fields, &cmd.args[1..], final_)
            }
            Arg::Ident(_, name) => self.eval_function(dot, name, cmd, &cmd.args[1..], final_),
            Arg::Pipe(_, p) => {
                self.not_a_function(cmd, &final_)?;
                self.eval_pipeline(dot, p)
            }
            Arg::Variable(pos, name, fields) => {
                let v = self.lookup_var(*pos, name)?;
                if fields.is_empty() {
                    self.not_a_function(cmd, &final_)?;
                    return Ok(v);
                }
                self.eval_field_chain(dot, v, first, fields, &cmd.args[1..], final_)
            }
            other => {
                self.not_a_function(cmd, &final_)?;
                match other {
                    Arg::Nil(p) => Err(self.error(*p, "nil", "nil is not a command")),
                    _ => self.eval_arg(dot, other),
                }
            }
        }
    }

    fn lookup_var(&self, pos: usize, name: &str) -> R<Value> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.error(pos, name, format!("undefined variable: {name}")))
    }

    fn eval_chain_base(&mut self, dot: &Value, node: &'t Arg) -> R<Value> {
        if let Arg::Nil(p) = node {
            return Err(self.error(*p, node, "indirection through explicit nil"));
        }
        self.eval_arg(dot, node)
    }

    fn eval_args(&mut self, dot: &Value, args: &'t [Arg], final_: Option<Value>) -> R<Vec<Value>> {
        let mut out = Vec::with_capacity(args.len() + 1);
        for a in args {
            out.push(self.eval_arg(dot, a)?);
        }
        if let Some(f) = final_ {
            out.push(f);
        }
        Ok(out)
    }

    /// Evaluates `.A.B.C`-style access on `recv`; the last name gets the
    /// arguments (a method call).
    fn eval_field_chain(
        &mut self,
        dot: &Value,
        mut recv: Value,
        node: &'t Arg,
        names: &'t [String],
        args: &'t [Arg],
        final_: Option<Value>,
    ) -> R<Value> {
        let n = names.len();
        for name in &names[..n - 1] {
            recv = self.eval_field(node, name, recv, Vec::new(), false)?;
        }
        let has_args = !args.is_empty() || final_.is_some();
        let argv = self.eval_args(dot, args, final_)?;
        self.eval_field(node, &names[n - 1], recv, argv, has_args)
    }

    fn eval_field(
        &self,
        node: &Arg,
        name: &str,
        recv: Value,
        args: Vec<Value>,
        has_args: bool,
    ) -> R<Value> {
        match recv {
            Value::NoValue | Value::Nil => Ok(Value::NoValue),
            Value::Object(o) => match o.get(name, &args) {
                Some(Ok(v)) => Ok(v),
                Some(Err(msg)) if is_arg_error(&msg) => Err(self.error(node.pos(), node, msg)),
                Some(Err(msg)) => {
                    Err(self.error(node.pos(), node, format!("error calling {name}: {msg}")))
                }
                None => match o.underlying() {
                    Value::Map(m) => self.map_field(node, name, &m, has_args),
                    _ => Err(self.error(
                        node.pos(),
                        node,
                        format!("can't evaluate field {name} in type {}", o.type_name()),
                    )),
                },
            },
            Value::Map(m) => self.map_field(node, name, &m, has_args),
            other => Err(self.error(
                node.pos(),
                node,
                format!("can't evaluate field {name} in type {}", other.type_name()),
            )),
        }
    }

    fn map_field(
        &self,
        node: &Arg,
        name: &str,
        m: &std::collections::BTreeMap<String, Value>,
        has_args: bool,
    ) -> R<Value> {
        if has_args {
            return Err(self.error(
                node.pos(),
                node,
                format!("{name} is not a method but has arguments"),
            ));
        }
        Ok(match m.get(name) {
            Some(v) => v.clone(),
            None if self.opts.missing_key_zero => builtins::zero_of_elem(m),
            None => Value::NoValue,
        })
    }

    fn eval_arg(&mut self, dot: &Value, arg: &'t Arg) -> R<Value> {
        match arg {
            Arg::Dot(_) => Ok(dot.clone()),
            Arg::Nil(_) => Ok(Value::Nil),
            Arg::Bool(_, b) => Ok(Value::Bool(*b)),
            Arg::Number(_, _, Num::Int(i)) => Ok(Value::Int(*i)),
            Arg::Number(_, _, Num::Float(f)) => Ok(Value::Float(*f)),
            Arg::Str(_, _, s) => Ok(Value::String(s.clone())),
            Arg::Field(_, names) => self.eval_field_chain(dot, dot.clone(), arg, names, &[], None),
            Arg::Variable(pos, name, fields) => {
                let v = self.lookup_var(*pos, name)?;
                if fields.is_empty() {
                    Ok(v)
                } else {
                    self.eval_field_chain(dot, v, arg, fields, &[], None)
                }
            }
            Arg::Pipe(_, p) => self.eval_pipeline(dot, p),
            Arg::Ident(pos, name) => {
                // A function used as an argument is called with no arguments.
                let cmd = Command {
                    pos: *pos,
                    args: vec![arg.clone()],
                };
                self.call_function(dot, name, &cmd, Vec::new(), &[], None)
            }
            Arg::Chain(_, node, fields) => {
                let recv = self.eval_chain_base(dot, node)?;
                self.eval_field_chain(dot, recv, arg, fields, &[], None)
            }
        }
    }

    fn eval_function(
        &mut self,
        dot: &Value,
        name: &str,
        cmd: &'t Command,
        args: &'t [Arg],
        final_: Option<Value>,
    ) -> R<Value> {
        let user = self.funcs.get(name).is_some();
        if !user && (name == "and" || name == "or") {
            if args.is_empty() && final_.is_none() {
                return Err(self.error(
                    cmd.pos,
                    &cmd.args[0],
                    format!("wrong number of args for {name}: want at least 1 got 0"),
                ));
            }
            let want = name == "or";
            let mut v = Value::NoValue;
            for a in args {
                v = self.eval_arg(dot, a)?;
                if v.is_true() == want {
                    return Ok(v);
                }
            }
            if let Some(f) = final_ {
                v = f;
            }
            return Ok(v);
        }
        self.call_function(dot, name, cmd, Vec::new(), args, final_)
    }

    fn call_function(
        &mut self,
        dot: &Value,
        name: &str,
        cmd: &Command,
        mut argv: Vec<Value>,
        args: &'t [Arg],
        final_: Option<Value>,
    ) -> R<Value> {
        argv.extend(self.eval_args(dot, args, final_)?);
        let result = match self.funcs.get(name) {
            Some(Func::Plain(f)) => f(&argv),
            Some(Func::ExecTemplate) => self.exec_template_fn(name, &argv),
            None => match builtins::call_builtin(name, &argv) {
                Some(r) => r,
                None => Err(format!("function {name:?} not defined")),
            },
        };
        result.map_err(|msg| {
            if is_arg_error(&msg) {
                self.error(cmd.pos, &cmd.args[0], msg)
            } else {
                self.error(cmd.pos, cmd, format!("error calling {name}: {msg}"))
            }
        })
    }

    /// Prometheus's `tmpl NAME DATA`: the output of another template of the set.
    fn exec_template_fn(&self, fname: &str, argv: &[Value]) -> Result<Value, String> {
        builtins::want_args(fname, argv, 2)?;
        let name = builtins::arg_str(&argv[0])?;
        let Some(tree) = self.set.trees.get(name) else {
            return Err(format!("template {name:?} not defined"));
        };
        if self.depth >= TEMPLATE_CALL_DEPTH_MAX {
            return Err(format!(
                "exceeded maximum template depth ({TEMPLATE_CALL_DEPTH_MAX})"
            ));
        }
        let opts = ExecOptions {
            output_bytes_max: self.opts.output_bytes_max,
            vars: Vec::new(),
            first_line_col_offset: 0,
            missing_key_zero: self.opts.missing_key_zero,
        };
        run(
            self.set,
            tree,
            name,
            &argv[1],
            self.funcs,
            &opts,
            self.depth + 1,
        )
        .map(Value::String)
        .map_err(|e| e.to_string())
    }
}
