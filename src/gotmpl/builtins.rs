//! Go's builtin template functions (`and` and `or` are in `exec.rs`, since they
//! evaluate their arguments lazily) and the parts of Go's `fmt` they need:
//! `%v` of every value, `print`/`println`'s spacing, and `printf`'s verbs.

use super::Value;
use crate::gofloat;
use std::fmt::Write as _;

const BUILTINS: [&str; 19] = [
    "and", "call", "eq", "ge", "gt", "html", "index", "js", "le", "len", "lt", "ne", "not", "or",
    "print", "printf", "println", "slice", "urlquery",
];

/// Whether `name` is one of Go's builtin functions.
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(&name)
}

/// Calls builtin `name`; `None` when there is no such builtin.
pub fn call_builtin(name: &str, args: &[Value]) -> Option<Result<Value, String>> {
    Some(match name {
        "not" => want_args(name, args, 1).map(|_| Value::Bool(!args[0].is_true())),
        "len" => want_args(name, args, 1).and_then(|_| len(&args[0])),
        "index" => want_at_least(name, args, 1).and_then(|_| index(&args[0], &args[1..])),
        "slice" => want_at_least(name, args, 1).and_then(|_| slice(&args[0], &args[1..])),
        "print" => Ok(Value::String(sprint(args))),
        "println" => Ok(Value::String(sprintln(args))),
        "printf" => want_at_least(name, args, 1).and_then(|_| {
            let f = arg_str(&args[0])?;
            Ok(Value::String(sprintf(f, &args[1..])))
        }),
        "eq" => {
            want_at_least(name, args, 1).and_then(|_| eq(&args[0], &args[1..]).map(Value::Bool))
        }
        "ne" => want_args(name, args, 2)
            .and_then(|_| eq(&args[0], &args[1..2]).map(|b| Value::Bool(!b))),
        "lt" => want_args(name, args, 2).and_then(|_| lt(&args[0], &args[1]).map(Value::Bool)),
        "le" => want_args(name, args, 2).and_then(|_| le(&args[0], &args[1]).map(Value::Bool)),
        "gt" => {
            want_args(name, args, 2).and_then(|_| le(&args[0], &args[1]).map(|b| Value::Bool(!b)))
        }
        "ge" => {
            want_args(name, args, 2).and_then(|_| lt(&args[0], &args[1]).map(|b| Value::Bool(!b)))
        }
        "html" => Ok(Value::String(html_escape(&eval_args(args)))),
        "js" => Ok(Value::String(js_escape(&eval_args(args)))),
        "urlquery" => Ok(Value::String(query_escape(&eval_args(args)))),
        "call" => want_at_least(name, args, 1).and_then(|_| match &args[0] {
            Value::Func(f) => f(&args[1..]),
            Value::Nil | Value::NoValue => Err("call of nil".into()),
            other => Err(format!("non-function of type {}", other.type_name())),
        }),
        _ => return None,
    })
}

/// Go's arity error unless there are exactly `n` arguments.
pub fn want_args(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() != n {
        return Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

/// Go's arity error unless there are at least `n` arguments.
pub fn want_at_least(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() < n {
        return Err(format!(
            "wrong number of args for {name}: want at least {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

/// A string argument, with Go's message for another type.
pub fn arg_str(v: &Value) -> Result<&str, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::NoValue => Err("invalid value; expected string".into()),
        other => Err(format!(
            "wrong type for value; expected string; got {}",
            other.type_name()
        )),
    }
}

/// Go's `evalArgs` for `html`, `js`, `urlquery`: one string as it is, anything
/// else through `fmt.Sprint`.
fn eval_args(args: &[Value]) -> String {
    if let [Value::String(s)] = args {
        return s.clone();
    }
    sprint(args)
}

fn len(v: &Value) -> Result<Value, String> {
    match v.resolved() {
        Value::String(s) => Ok(Value::Int(s.len() as i64)),
        Value::List(l) => Ok(Value::Int(l.len() as i64)),
        Value::Map(m) => Ok(Value::Int(m.len() as i64)),
        Value::Nil | Value::NoValue => Err("len of nil pointer".into()),
        other => Err(format!("len of type {}", other.type_name())),
    }
}

fn int_index(v: &Value, what: &str) -> Result<i64, String> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Nil | Value::NoValue => Err(format!("cannot index {what} with nil")),
        other => Err(format!(
            "cannot index {what} with type {}",
            other.type_name()
        )),
    }
}

fn index(item: &Value, indexes: &[Value]) -> Result<Value, String> {
    let mut item = item.clone();
    if matches!(item, Value::Nil | Value::NoValue) {
        return Err("index of untyped nil".into());
    }
    for idx in indexes {
        item = match item.resolved() {
            Value::List(l) => {
                let x = int_index(idx, "slice/array")?;
                if x < 0 || x as usize >= l.len() {
                    return Err(format!("index out of range: {x}"));
                }
                l[x as usize].clone()
            }
            Value::String(s) => {
                let x = int_index(idx, "slice/array")?;
                if x < 0 || x as usize >= s.len() {
                    return Err(format!("index out of range: {x}"));
                }
                Value::Int(s.as_bytes()[x as usize] as i64)
            }
            Value::Map(m) => {
                let key = match idx {
                    Value::String(k) => k,
                    other => {
                        return Err(format!(
                            "value has type {}; should be string",
                            other.type_name()
                        ))
                    }
                };
                match m.get(key.as_str()) {
                    Some(v) => v.clone(),
                    // Go returns the zero value of the element type.
                    None => zero_of_elem(&m),
                }
            }
            Value::Nil | Value::NoValue => return Err("index of nil pointer".into()),
            other => return Err(format!("can't index item of type {}", other.type_name())),
        };
    }
    Ok(item)
}

/// The zero value of a map's element type: `""` for a map of strings (the
/// element type is not recorded, so a map whose values are all strings counts as
/// one), otherwise nil.
pub fn zero_of_elem(m: &std::collections::BTreeMap<String, Value>) -> Value {
    if m.values().all(|v| matches!(v, Value::String(_))) {
        Value::String(String::new())
    } else {
        Value::Nil
    }
}

fn slice(item: &Value, idx: &[Value]) -> Result<Value, String> {
    let item = item.resolved();
    let len = match &item {
        Value::String(s) => {
            if idx.len() > 2 {
                return Err("cannot 3-index slice a string".into());
            }
            s.len()
        }
        Value::List(l) => l.len(),
        Value::Nil | Value::NoValue => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if idx.len() > 3 {
        return Err(format!("too many slice indexes: {}", idx.len()));
    }
    let mut ix = [0usize, len, len];
    for (i, v) in idx.iter().enumerate() {
        let x = int_index(v, "slice/array")?;
        if x < 0 || x as usize > len {
            return Err(format!("index out of range: {x}"));
        }
        ix[i] = x as usize;
    }
    if ix[0] > ix[1] {
        return Err(format!("invalid slice index: {} > {}", ix[0], ix[1]));
    }
    if idx.len() == 3 && ix[1] > ix[2] {
        return Err(format!("invalid slice index: {} > {}", ix[1], ix[2]));
    }
    Ok(match item {
        Value::String(s) => match s.get(ix[0]..ix[1]) {
            Some(sub) => Value::String(sub.to_string()),
            None => Value::String(String::from_utf8_lossy(&s.as_bytes()[ix[0]..ix[1]]).into()),
        },
        Value::List(l) => Value::list(l[ix[0]..ix[1]].to_vec()),
        _ => Value::NoValue,
    })
}

/// Go's basic kinds for comparisons.
#[derive(PartialEq, Clone, Copy)]
enum Kind {
    Invalid,
    Bool,
    Int,
    Float,
    String,
    Other,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::NoValue | Value::Nil => Kind::Invalid,
        Value::Bool(_) => Kind::Bool,
        Value::Int(_) => Kind::Int,
        Value::Float(_) => Kind::Float,
        Value::String(_) => Kind::String,
        Value::Object(o) => match o.underlying() {
            Value::Object(_) => Kind::Other,
            u => kind(&u),
        },
        _ => Kind::Other,
    }
}

const ERR_BAD_COMPARISON: &str = "incompatible types for comparison";
const ERR_BAD_COMPARISON_TYPE: &str = "invalid type for comparison";

fn eq(a: &Value, others: &[Value]) -> Result<bool, String> {
    if others.is_empty() {
        return Err("missing argument for comparison".into());
    }
    let a = a.resolved();
    let ka = kind(&a);
    for b in others {
        let b = b.resolved();
        let kb = kind(&b);
        let truth = if ka != kb {
            if ka != Kind::Invalid && kb != Kind::Invalid {
                return Err(ERR_BAD_COMPARISON.into());
            }
            false
        } else {
            match (&a, &b) {
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Int(x), Value::Int(y)) => x == y,
                (Value::Float(x), Value::Float(y)) => x == y,
                (Value::String(x), Value::String(y)) => x == y,
                _ if ka == Kind::Invalid => true,
                (Value::List(_), _) | (Value::Map(_), _) => {
                    return Err(format!(
                        "non-comparable type {}: {}",
                        fmt_value(&a),
                        a.type_name()
                    ))
                }
                _ => return Err(ERR_BAD_COMPARISON_TYPE.into()),
            }
        };
        if truth {
            return Ok(true);
        }
    }
    Ok(false)
}

fn lt(a: &Value, b: &Value) -> Result<bool, String> {
    let (a, b) = (a.resolved(), b.resolved());
    let (ka, kb) = (kind(&a), kind(&b));
    if matches!(ka, Kind::Bool | Kind::Other | Kind::Invalid)
        || matches!(kb, Kind::Bool | Kind::Other | Kind::Invalid)
    {
        return Err(ERR_BAD_COMPARISON_TYPE.into());
    }
    if ka != kb {
        return Err(ERR_BAD_COMPARISON.into());
    }
    Ok(match (&a, &b) {
        (Value::Int(x), Value::Int(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (Value::String(x), Value::String(y)) => x < y,
        _ => return Err(ERR_BAD_COMPARISON_TYPE.into()),
    })
}

fn le(a: &Value, b: &Value) -> Result<bool, String> {
    if lt(a, b)? {
        return Ok(true);
    }
    eq(a, std::slice::from_ref(b))
}

/// Go's `template.HTMLEscapeString`.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
pub fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                } else {
                    let _ = write!(out, "\\U{:08x}", c as u32);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How a value prints with `{{ }}`: Go's `%v`, with `<no value>` for a missing
/// value.
pub fn fmt_value_top(v: &Value) -> String {
    match v {
        Value::NoValue => "<no value>".into(),
        v => fmt_value(v),
    }
}

/// Go's `%v` of a value.
pub fn fmt_value(v: &Value) -> String {
    let mut out = String::new();
    write_v(&mut out, v);
    out
}

fn write_v(out: &mut String, v: &Value) {
    match v {
        Value::NoValue | Value::Nil => out.push_str("<nil>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => gofloat::push(out, *f, 'g', None),
        Value::String(s) => out.push_str(s),
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_v(out, e);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                write_v(out, e);
            }
            out.push(']');
        }
        Value::Object(o) => match o.display() {
            Some(s) => out.push_str(&s),
            None => write_v(out, &o.underlying()),
        },
        Value::Func(f) => {
            let _ = write!(out, "{:p}", std::sync::Arc::as_ptr(f) as *const u8);
        }
    }
}

fn is_string_like(v: &Value) -> bool {
    match v {
        Value::String(_) => true,
        Value::Object(o) => matches!(o.underlying(), Value::String(_)),
        _ => false,
    }
}

/// Go's `fmt.Sprint`: a space between operands when neither is a string.
pub fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    let mut prev_string = false;
    for (i, a) in args.iter().enumerate() {
        let is_string = is_string_like(a);
        if i > 0 && !is_string && !prev_string {
            out.push(' ');
        }
        write_v(&mut out, a);
        prev_string = is_string;
    }
    out
}

/// Go's `fmt.Sprintln`: spaces between all operands and a newline.
pub fn sprintln(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_v(&mut out, a);
    }
    out.push('\n');
    out
}

/// One `%` directive's flags, width and precision.
#[derive(Default, Clone, Copy)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// Go's `fmt.Sprintf` for the common verbs: `%v %s %q %d %f %e %g %x %X %o %b
/// %c %t %%`, with flags `-+# 0`, width and precision (`*` too).
pub fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut argi = 0;
    let mut chars = format.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&(_, f)) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        let read_num = |chars: &mut std::iter::Peekable<std::str::CharIndices>,
                        argi: &mut usize,
                        out: &mut String|
         -> Option<usize> {
            if chars.peek().map(|p| p.1) == Some('*') {
                chars.next();
                let v = args.get(*argi).cloned();
                *argi += 1;
                return match v {
                    Some(Value::Int(i)) if i >= 0 => Some(i as usize),
                    _ => {
                        out.push_str("%!(BADWIDTH)");
                        None
                    }
                };
            }
            let mut n: Option<usize> = None;
            while let Some(&(_, d)) = chars.peek() {
                let Some(dv) = d.to_digit(10) else { break };
                n = Some(
                    n.unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(dv as usize),
                );
                chars.next();
            }
            n
        };
        spec.width = read_num(&mut chars, &mut argi, &mut out);
        if chars.peek().map(|p| p.1) == Some('.') {
            chars.next();
            spec.prec = Some(read_num(&mut chars, &mut argi, &mut out).unwrap_or(0));
        }
        let Some((_, verb)) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        argi += 1;
        format_arg(&mut out, arg, verb, &spec);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[argi..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            match a {
                Value::Nil | Value::NoValue => out.push_str("<nil>"),
                a => {
                    let _ = write!(out, "{}={}", a.type_name(), fmt_value(a));
                }
            }
        }
        out.push(')');
    }
    out
}

fn bad_verb(out: &mut String, v: &Value, verb: char) {
    match v {
        Value::Nil | Value::NoValue => {
            let _ = write!(out, "%!{verb}(<nil>)");
        }
        v => {
            let _ = write!(out, "%!{verb}({}={})", v.type_name(), fmt_value(v));
        }
    }
}

fn pad(out: &mut String, s: &str, spec: &Spec, numeric: bool) {
    let n = s.chars().count();
    let width = spec.width.unwrap_or(0);
    if n >= width {
        out.push_str(s);
        return;
    }
    let fill = width - n;
    if spec.minus {
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && numeric {
        // Zeros go after the sign.
        let (sign, rest) = match s.chars().next() {
            Some(c @ ('+' | '-' | ' ')) => (Some(c), &s[1..]),
            _ => (None, s),
        };
        if let Some(c) = sign {
            out.push(c);
        }
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(rest);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(s);
    }
}

fn sign_prefix(neg: bool, spec: &Spec) -> &'static str {
    if neg {
        "-"
    } else if spec.plus {
        "+"
    } else if spec.space {
        " "
    } else {
        ""
    }
}

fn format_arg(out: &mut String, v: &Value, verb: char, spec: &Spec) {
    match v {
        Value::Object(o) => {
            if let (Some(s), 'v' | 's' | 'q') = (o.display(), verb) {
                return format_arg(out, &Value::String(s), verb, spec);
            }
            format_arg(out, &o.underlying(), verb, spec)
        }
        Value::List(l) => {
            out.push('[');
            for (i, e) in l.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                format_arg(out, e, verb, spec);
            }
            out.push(']');
        }
        Value::Map(m) => {
            out.push_str("map[");
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                format_arg(out, &Value::String(k.clone()), verb, spec);
                out.push(':');
                format_arg(out, e, verb, spec);
            }
            out.push(']');
        }
        Value::String(s) => match verb {
            'v' | 's' => {
                let s = match spec.prec {
                    Some(p) => s.chars().take(p).collect(),
                    None => s.clone(),
                };
                pad(out, &s, spec, false)
            }
            'q' => pad(out, &go_quote(s), spec, false),
            'x' | 'X' => {
                let mut h = String::new();
                for (i, b) in s.bytes().enumerate() {
                    if spec.space && i > 0 {
                        h.push(' ');
                    }
                    if verb == 'x' {
                        let _ = write!(h, "{b:02x}");
                    } else {
                        let _ = write!(h, "{b:02X}");
                    }
                }
                pad(out, &h, spec, false)
            }
            _ => bad_verb(out, v, verb),
        },
        Value::Bool(b) => match verb {
            'v' | 't' => pad(out, if *b { "true" } else { "false" }, spec, false),
            _ => bad_verb(out, v, verb),
        },
        Value::Int(i) => {
            let neg = *i < 0;
            let a = i.unsigned_abs();
            let body = match verb {
                'v' | 'd' => format!("{a}"),
                'x' => format!("{}{a:x}", if spec.sharp { "0x" } else { "" }),
                'X' => format!("{}{a:X}", if spec.sharp { "0X" } else { "" }),
                'o' => format!("{}{a:o}", if spec.sharp { "0" } else { "" }),
                'O' => format!("0o{a:o}"),
                'b' => format!("{a:b}"),
                'c' => {
                    let c = char::from_u32(*i as u32).unwrap_or('\u{FFFD}');
                    return pad(out, &c.to_string(), spec, false);
                }
                'q' => {
                    let c = char::from_u32(*i as u32).unwrap_or('\u{FFFD}');
                    let q = go_quote(&c.to_string());
                    let inner = &q[1..q.len() - 1];
                    let inner = if c == '"' {
                        "\""
                    } else if c == '\'' {
                        "\\'"
                    } else {
                        inner
                    };
                    return pad(out, &format!("'{inner}'"), spec, false);
                }
                'U' => {
                    return pad(out, &format!("U+{:04X}", *i), spec, false);
                }
                _ => return bad_verb(out, v, verb),
            };
            let body = match spec.prec {
                Some(p) if body.len() < p => format!("{}{body}", "0".repeat(p - body.len())),
                _ => body,
            };
            pad(
                out,
                &format!("{}{body}", sign_prefix(neg, spec)),
                spec,
                true,
            )
        }
        Value::Float(f) => {
            let s = match verb {
                'v' => gofloat::g(*f),
                'e' | 'E' | 'f' | 'F' => gofloat::format(*f, verb, Some(spec.prec.unwrap_or(6))),
                'g' | 'G' => gofloat::format(*f, verb, spec.prec),
                _ => return bad_verb(out, v, verb),
            };
            let s = if f.is_nan() {
                if spec.plus {
                    "+NaN".to_string()
                } else if spec.space {
                    " NaN".to_string()
                } else {
                    s
                }
            } else if !s.starts_with(['-', '+']) {
                format!("{}{s}", sign_prefix(false, spec))
            } else {
                s
            };
            let numeric = f.is_finite();
            pad(out, &s, spec, numeric)
        }
        Value::Nil | Value::NoValue => match verb {
            'v' => pad(out, "<nil>", spec, false),
            _ => bad_verb(out, v, verb),
        },
        Value::Func(_) => match verb {
            'v' | 'p' => pad(out, &fmt_value(v), spec, false),
            _ => bad_verb(out, v, verb),
        },
    }
}
