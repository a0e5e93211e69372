//! The template parser: tokens to a node tree per named template, with Go's
//! checks at parse time (functions must exist, variables must be declared,
//! `break`/`continue` only inside `range`, `define` only at the top level).

use super::lex::{lex, Tok, Token};
use super::TemplateError;
use std::fmt;
use std::sync::Arc;

/// One named template: its nodes and where they came from.
#[derive(Debug)]
pub struct Tree {
    /// The name it was parsed under (the file or top template), for positions.
    pub parse_name: String,
    /// The text it was parsed from, for line and column of errors.
    pub text: Arc<str>,
    pub root: Vec<Node>,
}

impl Tree {
    /// Whether the body is only whitespace (so it does not replace a template).
    pub fn is_empty_body(&self) -> bool {
        self.root.iter().all(|n| match n {
            Node::Text(t) => t.trim().is_empty(),
            _ => false,
        })
    }
}

/// A node of a template body.
#[derive(Debug, Clone)]
pub enum Node {
    Text(String),
    /// `{{pipeline}}`: printed unless it declares variables.
    Action(Pipe),
    If(Control),
    Range(Control),
    With(Control),
    /// `{{template "name" pipeline}}`.
    Template {
        pos: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// The parts of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub struct Control {
    pub pos: usize,
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// A pipeline: optional variable declarations, then commands joined by `|`.
#[derive(Debug, Clone)]
pub struct Pipe {
    pub pos: usize,
    /// `=` rather than `:=`.
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Command>,
}

/// One stage of a pipeline: an operand and its arguments.
#[derive(Debug, Clone)]
pub struct Command {
    pub pos: usize,
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone)]
pub enum Arg {
    /// `.A.B`.
    Field(usize, Vec<String>),
    /// `$x.A.B` (name with `$`).
    Variable(usize, String, Vec<String>),
    Dot(usize),
    Nil(usize),
    Bool(usize, bool),
    /// A number or character constant: its text and value.
    Number(usize, String, Num),
    /// A string: its text as written and its value.
    Str(usize, String, String),
    /// A function name.
    Ident(usize, String),
    /// `(pipeline)`.
    Pipe(usize, Box<Pipe>),
    /// `(pipeline).A.B` or another term followed by fields.
    Chain(usize, Box<Arg>, Vec<String>),
}

/// A numeric constant: Go's ideal constant, an int when written as one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    Float(f64),
}

impl Arg {
    pub fn pos(&self) -> usize {
        match self {
            Arg::Field(p, _)
            | Arg::Variable(p, _, _)
            | Arg::Dot(p)
            | Arg::Nil(p)
            | Arg::Bool(p, _)
            | Arg::Number(p, _, _)
            | Arg::Str(p, _, _)
            | Arg::Ident(p, _)
            | Arg::Pipe(p, _)
            | Arg::Chain(p, _, _) => *p,
        }
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::Field(_, names) => {
                for n in names {
                    write!(f, ".{n}")?;
                }
                Ok(())
            }
            Arg::Variable(_, name, fields) => {
                write!(f, "{name}")?;
                for n in fields {
                    write!(f, ".{n}")?;
                }
                Ok(())
            }
            Arg::Dot(_) => write!(f, "."),
            Arg::Nil(_) => write!(f, "nil"),
            Arg::Bool(_, b) => write!(f, "{b}"),
            Arg::Number(_, text, _) | Arg::Str(_, text, _) | Arg::Ident(_, text) => {
                write!(f, "{text}")
            }
            Arg::Pipe(_, p) => write!(f, "({p})"),
            Arg::Chain(_, node, fields) => {
                write!(f, "{node}")?;
                for n in fields {
                    write!(f, ".{n}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                write!(f, " ")?;
            }
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.decl.is_empty() {
            write!(
                f,
                "{} {} ",
                self.decl.join(", "),
                if self.is_assign { "=" } else { ":=" }
            )?;
        }
        for (i, c) in self.cmds.iter().enumerate() {
            if i > 0 {
                write!(f, " | ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

struct Parser<'a> {
    name: String,
    text: &'a str,
    toks: Vec<Token>,
    i: usize,
    /// Position of the last token taken, for error lines.
    last_pos: usize,
    vars: Vec<String>,
    range_depth: usize,
    is_func: &'a dyn Fn(&str) -> bool,
    /// Templates defined so far (`define`, `block`).
    defs: Vec<(String, Vec<Node>)>,
}

/// Parses `text` under `name`; returns the body as `name` followed by every
/// template it defines, in order. `vars` are variables declared before the text
/// (besides `$`).
pub fn parse(
    name: &str,
    text: &str,
    vars: &[String],
    is_func: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Tree)>, TemplateError> {
    let toks = lex(text).map_err(|e| TemplateError::Parse {
        name: name.to_string(),
        line: line_of(text, e.pos),
        msg: e.msg,
    })?;
    let mut p = Parser {
        name: name.to_string(),
        text,
        toks,
        i: 0,
        last_pos: 0,
        vars: std::iter::once("$".to_string())
            .chain(vars.iter().cloned())
            .collect(),
        range_depth: 0,
        is_func,
        defs: Vec::new(),
    };
    let root = p.parse_top()?;
    let shared: Arc<str> = Arc::from(text);
    let mk = |root| Tree {
        parse_name: name.to_string(),
        text: shared.clone(),
        root,
    };
    let mut out = vec![(name.to_string(), mk(root))];
    for (n, body) in std::mem::take(&mut p.defs) {
        out.push((n, mk(body)));
    }
    Ok(out)
}

/// 1-based line of byte offset `pos`.
pub fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// What ended an item list.
enum ListEnd {
    End,
    Else(usize),
}

fn tok_desc(t: &Tok) -> String {
    match t {
        Tok::Text(s) => format!("{s:?}"),
        Tok::LeftDelim => "\"{{\"".into(),
        Tok::RightDelim => "\"}}\"".into(),
        Tok::Ident(s) if is_keyword(s) => format!("<{s}>"),
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Field(s) => format!("<.{s}>"),
        Tok::Dot => "<.>".into(),
        Tok::Variable(s) => format!("{s:?}"),
        Tok::Str(_, raw) | Tok::Number(raw) | Tok::Char(_, raw) => raw.clone(),
        Tok::Bool(b) => format!("{b:?}"),
        Tok::Nil => "nil".into(),
        Tok::Pipe => "\"|\"".into(),
        Tok::LeftParen => "\"(\"".into(),
        Tok::RightParen => "\")\"".into(),
        Tok::Declare => "\":=\"".into(),
        Tok::Assign => "\"=\"".into(),
        Tok::Comma => "\",\"".into(),
        Tok::Space => "space".into(),
        Tok::Eof => "EOF".into(),
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "block"
            | "break"
            | "continue"
            | "define"
            | "else"
            | "end"
            | "if"
            | "range"
            | "template"
            | "with"
    )
}

impl Parser<'_> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, TemplateError> {
        Err(TemplateError::Parse {
            name: self.name.clone(),
            line: line_of(self.text, self.last_pos),
            msg: msg.into(),
        })
    }

    fn peek(&self) -> &Token {
        // The lexer always ends with Eof, so the last token is a safe default.
        let last = self.toks.len() - 1;
        &self.toks[self.i.min(last)]
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        self.last_pos = t.pos;
        t
    }

    fn skip_space(&mut self) {
        while self.peek().tok == Tok::Space {
            self.i += 1;
        }
    }

    fn next_non_space(&mut self) -> Token {
        self.skip_space();
        self.next()
    }

    fn peek_non_space(&mut self) -> Token {
        self.skip_space();
        self.peek().clone()
    }

    fn expect_right_delim(&mut self, context: &str) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        if t.tok != Tok::RightDelim {
            return self.err(format!("unexpected {} in {context}", tok_desc(&t.tok)));
        }
        Ok(())
    }

    fn parse_top(&mut self) -> Result<Vec<Node>, TemplateError> {
        let mut list = Vec::new();
        loop {
            match &self.peek().tok {
                Tok::Eof => return Ok(list),
                Tok::LeftDelim => {
                    let save = self.i;
                    self.next();
                    let t = self.peek_non_space();
                    if t.tok == Tok::Ident("define".into()) {
                        self.next();
                        self.parse_define()?;
                        continue;
                    }
                    self.i = save;
                }
                _ => {}
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                Item::End => return self.err("unexpected {{end}}"),
                Item::Else(_) => return self.err("unexpected {{else}}"),
            }
        }
    }

    fn parse_define(&mut self) -> Result<(), TemplateError> {
        let t = self.next_non_space();
        let name = match t.tok {
            Tok::Str(v, _) => v,
            other => return self.err(format!("unexpected {} in define clause", tok_desc(&other))),
        };
        self.expect_right_delim("define clause")?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let (body, end) = self.item_list()?;
        self.vars = saved;
        if let ListEnd::Else(_) = end {
            return self.err("unexpected {{else}}");
        }
        self.defs.push((name, body));
        Ok(())
    }

    /// Nodes until `{{end}}` or `{{else}}`.
    fn item_list(&mut self) -> Result<(Vec<Node>, ListEnd), TemplateError> {
        let mut list = Vec::new();
        loop {
            if self.peek().tok == Tok::Eof {
                return self.err("unexpected EOF");
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                Item::End => return Ok((list, ListEnd::End)),
                Item::Else(p) => return Ok((list, ListEnd::Else(p))),
            }
        }
    }

    fn text_or_action(&mut self) -> Result<Item, TemplateError> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Text(s) => Ok(Item::Node(Node::Text(s))),
            Tok::LeftDelim => self.action(),
            other => self.err(format!("unexpected {} in input", tok_desc(&other))),
        }
    }

    fn action(&mut self) -> Result<Item, TemplateError> {
        let t = self.peek_non_space();
        if let Tok::Ident(kw) = &t.tok {
            match kw.as_str() {
                "block" => {
                    self.next();
                    return self.block(t.pos).map(Item::Node);
                }
                "break" | "continue" => {
                    self.next();
                    if self.range_depth == 0 {
                        return self.err(format!("{{{{{kw}}}}} outside {{{{range}}}}"));
                    }
                    self.expect_right_delim(kw)?;
                    return Ok(Item::Node(if kw == "break" {
                        Node::Break
                    } else {
                        Node::Continue
                    }));
                }
                "else" => {
                    self.next();
                    // `else if` / `else with` leave the keyword for the caller.
                    let p = self.peek_non_space();
                    if p.tok != Tok::Ident("if".into()) && p.tok != Tok::Ident("with".into()) {
                        self.expect_right_delim("else")?;
                    }
                    return Ok(Item::Else(t.pos));
                }
                "end" => {
                    self.next();
                    self.expect_right_delim("end")?;
                    return Ok(Item::End);
                }
                "if" | "range" | "with" => {
                    self.next();
                    return self.control(kw.clone(), t.pos).map(Item::Node);
                }
                "template" => {
                    self.next();
                    return self.template_call(t.pos).map(Item::Node);
                }
                _ => {}
            }
        }
        let pipe = self.pipeline("command", Tok::RightDelim)?;
        Ok(Item::Node(Node::Action(pipe)))
    }

    fn control(&mut self, context: String, pos: usize) -> Result<Node, TemplateError> {
        let mark = self.vars.len();
        let result = self.control_inner(&context, pos);
        self.vars.truncate(mark);
        let c = result?;
        Ok(match context.as_str() {
            "if" => Node::If(c),
            "range" => Node::Range(c),
            _ => Node::With(c),
        })
    }

    fn control_inner(&mut self, context: &str, pos: usize) -> Result<Control, TemplateError> {
        let pipe = self.pipeline(context, Tok::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let listed = self.item_list();
        if context == "range" {
            self.range_depth -= 1;
        }
        let (list, end) = listed?;
        let else_list = match end {
            ListEnd::End => None,
            ListEnd::Else(else_pos) => {
                let p = self.peek_non_space();
                let chained = match &p.tok {
                    Tok::Ident(k) if (k == "if" || k == "with") && k == context => Some(k.clone()),
                    _ => None,
                };
                if let Some(k) = chained {
                    // `{{else if x}}` is `{{else}}{{if x}}…{{end}}{{end}}` sharing one end.
                    self.next();
                    Some(vec![self.control(k, else_pos)?])
                } else {
                    if matches!(&p.tok, Tok::Ident(k) if k == "if" || k == "with") {
                        return self.err(format!("unexpected {} in else", tok_desc(&p.tok)));
                    }
                    let (l, end) = self.item_list()?;
                    if let ListEnd::Else(_) = end {
                        return self.err("expected end; found {{else}}");
                    }
                    Some(l)
                }
            }
        };
        Ok(Control {
            pos,
            pipe,
            list,
            else_list,
        })
    }

    fn template_name(&mut self, context: &str) -> Result<String, TemplateError> {
        let t = self.next_non_space();
        match t.tok {
            Tok::Str(v, _) => Ok(v),
            other => self.err(format!("unexpected {} in {context}", tok_desc(&other))),
        }
    }

    fn template_call(&mut self, pos: usize) -> Result<Node, TemplateError> {
        let name = self.template_name("template clause")?;
        let pipe = if self.peek_non_space().tok == Tok::RightDelim {
            self.next();
            None
        } else {
            Some(self.pipeline("template clause", Tok::RightDelim)?)
        };
        Ok(Node::Template { pos, name, pipe })
    }

    fn block(&mut self, pos: usize) -> Result<Node, TemplateError> {
        let name = self.template_name("block clause")?;
        let pipe = self.pipeline("block clause", Tok::RightDelim)?;
        let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_depth = std::mem::replace(&mut self.range_depth, 0);
        let listed = self.item_list();
        self.vars = saved;
        self.range_depth = saved_depth;
        let (body, end) = listed?;
        if let ListEnd::Else(_) = end {
            return self.err("unexpected {{else}}");
        }
        self.defs.push((name.clone(), body));
        Ok(Node::Template {
            pos,
            name,
            pipe: Some(pipe),
        })
    }

    fn pipeline(&mut self, context: &str, end: Tok) -> Result<Pipe, TemplateError> {
        let start = self.peek_non_space();
        let mut pipe = Pipe {
            pos: start.pos,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        // Declarations: `$x :=`, `$x =`, `$i, $v :=` (range only).
        loop {
            let save = self.i;
            let t = self.peek_non_space();
            let Tok::Variable(name) = t.tok.clone() else {
                break;
            };
            self.next();
            let after = self.peek_non_space();
            match after.tok {
                Tok::Declare | Tok::Assign => {
                    self.next();
                    pipe.is_assign = after.tok == Tok::Assign;
                    if pipe.is_assign && !self.vars.contains(&name) {
                        return self.err(format!("undefined variable {name:?}"));
                    }
                    pipe.decl.push(name);
                    break;
                }
                Tok::Comma => {
                    self.next();
                    pipe.decl.push(name);
                    if context == "range" && pipe.decl.len() < 2 {
                        if matches!(self.peek_non_space().tok, Tok::Variable(_)) {
                            continue;
                        }
                        return self.err("missing variable in range declaration");
                    }
                    return self.err(format!("too many declarations in {context}"));
                }
                _ => {
                    self.i = save;
                    if !pipe.decl.is_empty() {
                        return self.err(format!("missing := in {context}"));
                    }
                    break;
                }
            }
        }
        loop {
            let t = self.peek_non_space();
            if t.tok == end {
                self.next();
                if pipe.cmds.is_empty() {
                    return self.err(format!("missing value for {context}"));
                }
                for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
                    if let Some(
                        Arg::Bool(..) | Arg::Dot(_) | Arg::Nil(_) | Arg::Number(..) | Arg::Str(..),
                    ) = c.args.first()
                    {
                        return self.err(format!(
                            "non executable command in pipeline stage {}",
                            i + 1
                        ));
                    }
                }
                break;
            }
            match t.tok {
                Tok::Bool(_)
                | Tok::Char(..)
                | Tok::Dot
                | Tok::Field(_)
                | Tok::Ident(_)
                | Tok::Number(_)
                | Tok::Nil
                | Tok::Str(..)
                | Tok::Variable(_)
                | Tok::LeftParen => {
                    let c = self.command()?;
                    pipe.cmds.push(c);
                }
                other => {
                    self.next();
                    return self.err(format!("unexpected {} in {context}", tok_desc(&other)));
                }
            }
        }
        // Declared variables are visible after the pipeline.
        if !pipe.is_assign {
            for d in &pipe.decl {
                self.vars.push(d.clone());
            }
        }
        Ok(pipe)
    }

    fn command(&mut self) -> Result<Command, TemplateError> {
        let pos = self.peek_non_space().pos;
        let mut args = Vec::new();
        loop {
            self.skip_space();
            if let Some(a) = self.operand()? {
                args.push(a);
            }
            let t = self.peek().clone();
            match t.tok {
                Tok::Space => {
                    self.next();
                    continue;
                }
                Tok::RightDelim | Tok::RightParen => {}
                Tok::Pipe => {
                    self.next();
                }
                other => {
                    self.next();
                    return self.err(format!("unexpected {} in operand", tok_desc(&other)));
                }
            }
            break;
        }
        if args.is_empty() {
            return self.err("empty command");
        }
        Ok(Command { pos, args })
    }

    fn operand(&mut self) -> Result<Option<Arg>, TemplateError> {
        let Some(term) = self.term()? else {
            return Ok(None);
        };
        let mut fields = Vec::new();
        while let Tok::Field(f) = &self.peek().tok {
            fields.push(f.clone());
            self.next();
        }
        if fields.is_empty() {
            return Ok(Some(term));
        }
        Ok(Some(match term {
            Arg::Field(p, mut names) => {
                names.extend(fields);
                Arg::Field(p, names)
            }
            Arg::Variable(p, n, mut names) => {
                names.extend(fields);
                Arg::Variable(p, n, names)
            }
            Arg::Bool(..) | Arg::Str(..) | Arg::Number(..) | Arg::Nil(_) | Arg::Dot(_) => {
                return self.err(format!("unexpected . after term {:?}", term.to_string()))
            }
            other => Arg::Chain(other.pos(), Box::new(other), fields),
        }))
    }

    fn term(&mut self) -> Result<Option<Arg>, TemplateError> {
        let t = self.peek().clone();
        let arg = match t.tok {
            Tok::Ident(name) => {
                if is_keyword(&name) {
                    self.next();
                    return self.err(format!("unexpected <{name}> in command"));
                }
                if !(self.is_func)(&name) {
                    self.next();
                    return self.err(format!("function {name:?} not defined"));
                }
                Arg::Ident(t.pos, name)
            }
            Tok::Dot => Arg::Dot(t.pos),
            Tok::Nil => Arg::Nil(t.pos),
            Tok::Variable(name) => {
                if !self.vars.contains(&name) {
                    self.next();
                    return self.err(format!("undefined variable {name:?}"));
                }
                Arg::Variable(t.pos, name, Vec::new())
            }
            Tok::Field(f) => Arg::Field(t.pos, vec![f]),
            Tok::Bool(b) => Arg::Bool(t.pos, b),
            Tok::Char(c, raw) => Arg::Number(t.pos, raw, Num::Int(c as i64)),
            Tok::Number(text) => match parse_number(&text) {
                Some(n) => Arg::Number(t.pos, text, n),
                None => {
                    self.next();
                    return self.err(format!("illegal number syntax: {text:?}"));
                }
            },
            Tok::Str(v, raw) => Arg::Str(t.pos, raw, v),
            Tok::LeftParen => {
                self.next();
                let p = self.pipeline("parenthesized pipeline", Tok::RightParen)?;
                return Ok(Some(Arg::Pipe(t.pos, Box::new(p))));
            }
            _ => return Ok(None),
        };
        self.next();
        Ok(Some(arg))
    }
}

enum Item {
    Node(Node),
    End,
    Else(usize),
}

/// Go's reading of a number constant: an int when it is written as an integer
/// (decimal, `0x`, `0o`, `0b`, a leading-zero octal), otherwise a float.
pub fn parse_number(text: &str) -> Option<Num> {
    let clean: String = text.chars().filter(|c| *c != '_').collect();
    let (neg, body) = match clean.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean).to_string()),
    };
    let lower = body.to_ascii_lowercase();
    let int = if let Some(h) = lower.strip_prefix("0x") {
        if h.contains(['.', 'p']) {
            None
        } else {
            i64::from_str_radix(h, 16).ok()
        }
    } else if let Some(o) = lower.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = lower.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if body.contains(['.', 'e', 'E']) {
        None
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).ok()
    } else {
        body.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Some(Num::Int(if neg { -i } else { i }));
    }
    if lower.starts_with("0x") {
        return None;
    }
    body.parse::<f64>()
        .ok()
        .map(|f| Num::Float(if neg { -f } else { f }))
}
