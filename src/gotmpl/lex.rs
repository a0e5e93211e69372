//! The template lexer: text outside `{{ }}`, and inside actions identifiers,
//! fields, variables, literals and punctuation. Trim markers (`{{- `, ` -}}`)
//! are applied here, to the text next to them, and comments are dropped, as Go's
//! lexer does.

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Text outside actions (already trimmed).
    Text(String),
    LeftDelim,
    RightDelim,
    /// A keyword or function name.
    Ident(String),
    /// `.Name` (without the dot).
    Field(String),
    /// `.` alone.
    Dot,
    /// `$` or `$name` (with the `$`).
    Variable(String),
    /// A string literal's value, with its text as written.
    Str(String, String),
    /// A character constant's value, with its text as written.
    Char(char, String),
    /// A number as written.
    Number(String),
    Bool(bool),
    Nil,
    Pipe,
    LeftParen,
    RightParen,
    Declare,
    Assign,
    Comma,
    Space,
    Eof,
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

/// A lexing error: message and byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct LexError {
    pub msg: String,
    pub pos: usize,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Whether `s` at `i` starts a left trim marker `{{- ` (the dash then a space).
fn left_trim_at(b: &[u8], i: usize) -> bool {
    b.get(i) == Some(&b'-') && b.get(i + 1).is_some_and(|c| is_space(*c))
}

/// Whether `s` at `i` is a space then `-}}`.
fn right_trim_at(b: &[u8], i: usize) -> bool {
    b.get(i).is_some_and(|c| is_space(*c)) && b[i + 1..].starts_with(b"-}}")
}

/// Splits template text into tokens.
pub fn lex(text: &str) -> Result<Vec<Token>, LexError> {
    let b = text.as_bytes();
    let mut out: Vec<Token> = Vec::new();
    let mut pos = 0;
    let mut trim_next_text = false;
    loop {
        let open = text[pos..].find("{{").map(|o| pos + o);
        let text_end = open.unwrap_or(text.len());
        let mut seg = &text[pos..text_end];
        if trim_next_text {
            seg = seg.trim_start_matches(|c: char| c.is_ascii() && is_space(c as u8));
        }
        let Some(open) = open else {
            if !seg.is_empty() {
                out.push(Token {
                    tok: Tok::Text(seg.to_string()),
                    pos: text_end - seg.len(),
                });
            }
            out.push(Token {
                tok: Tok::Eof,
                pos: text.len(),
            });
            return Ok(out);
        };
        let mut inner = open + 2;
        let trim_left = left_trim_at(b, inner);
        if trim_left {
            seg = seg.trim_end_matches(|c: char| c.is_ascii() && is_space(c as u8));
            inner += 2;
        }
        if !seg.is_empty() {
            let start = if trim_next_text {
                text_end - seg.len()
            } else {
                pos
            };
            out.push(Token {
                tok: Tok::Text(seg.to_string()),
                pos: start,
            });
        }
        // A comment: `/*` right after the delimiter (and trim marker).
        if b[inner..].starts_with(b"/*") {
            let Some(end) = text[inner + 2..].find("*/").map(|e| inner + 2 + e + 2) else {
                return Err(LexError {
                    msg: "unclosed comment".into(),
                    pos: open,
                });
            };
            let (close, trim) = if right_trim_at(b, end) {
                (end + 2, true)
            } else {
                (end, false)
            };
            if !b[close..].starts_with(b"}}") {
                return Err(LexError {
                    msg: "comment ends before closing delimiter".into(),
                    pos: open,
                });
            }
            pos = close + 2;
            trim_next_text = trim;
            continue;
        }
        out.push(Token {
            tok: Tok::LeftDelim,
            pos: open,
        });
        let (next, trim) = lex_action(text, inner, open, &mut out)?;
        pos = next;
        trim_next_text = trim;
    }
}

/// Lexes inside an action from `i` until `}}`; returns the offset after the
/// delimiter and whether it had a right trim marker.
fn lex_action(
    text: &str,
    mut i: usize,
    open: usize,
    out: &mut Vec<Token>,
) -> Result<(usize, bool), LexError> {
    let b = text.as_bytes();
    let mut paren_depth = 0usize;
    loop {
        if right_trim_at(b, i) {
            out.push(Token {
                tok: Tok::RightDelim,
                pos: i + 2,
            });
            return Ok((i + 4, true));
        }
        if b[i..].starts_with(b"}}") {
            if paren_depth > 0 {
                return Err(LexError {
                    msg: "unclosed left paren".into(),
                    pos: i,
                });
            }
            out.push(Token {
                tok: Tok::RightDelim,
                pos: i,
            });
            return Ok((i + 2, false));
        }
        let Some(c) = text[i..].chars().next() else {
            return Err(LexError {
                msg: "unclosed action".into(),
                pos: open,
            });
        };
        let start = i;
        let push = |out: &mut Vec<Token>, tok: Tok| out.push(Token { tok, pos: start });
        match c {
            c if c.is_ascii() && is_space(c as u8) => {
                while i < b.len() && is_space(b[i]) && !right_trim_at(b, i) {
                    i += 1;
                }
                push(out, Tok::Space);
            }
            '|' => {
                i += 1;
                push(out, Tok::Pipe);
            }
            '(' => {
                i += 1;
                paren_depth += 1;
                push(out, Tok::LeftParen);
            }
            ')' => {
                if paren_depth == 0 {
                    return Err(LexError {
                        msg: "unexpected right paren".into(),
                        pos: i,
                    });
                }
                paren_depth -= 1;
                i += 1;
                push(out, Tok::RightParen);
            }
            ',' => {
                i += 1;
                push(out, Tok::Comma);
            }
            ':' => {
                if b.get(i + 1) != Some(&b'=') {
                    return Err(LexError {
                        msg: "expected :=".into(),
                        pos: i,
                    });
                }
                i += 2;
                push(out, Tok::Declare);
            }
            '=' => {
                i += 1;
                push(out, Tok::Assign);
            }
            '"' => {
                let (val, end) = lex_quote(text, i)?;
                push(out, Tok::Str(val, text[start..end].to_string()));
                i = end;
            }
            '`' => {
                let Some(end) = text[i + 1..].find('`').map(|e| i + 1 + e) else {
                    return Err(LexError {
                        msg: "unterminated raw quoted string".into(),
                        pos: i,
                    });
                };
                push(
                    out,
                    Tok::Str(text[i + 1..end].to_string(), text[i..=end].to_string()),
                );
                i = end + 1;
            }
            '\'' => {
                let (ch, end) = lex_char(text, i)?;
                push(out, Tok::Char(ch, text[start..end].to_string()));
                i = end;
            }
            '$' => {
                i += 1;
                while let Some(c) = text[i..].chars().next().filter(|c| is_alnum(*c)) {
                    i += c.len_utf8();
                }
                push(out, Tok::Variable(text[start..i].to_string()));
            }
            '.' => {
                // A number like .5, a field, or dot.
                if b.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    i = lex_number(text, i)?;
                    push(out, Tok::Number(text[start..i].to_string()));
                } else {
                    i += 1;
                    while let Some(c) = text[i..].chars().next().filter(|c| is_alnum(*c)) {
                        i += c.len_utf8();
                    }
                    if i == start + 1 {
                        push(out, Tok::Dot);
                    } else {
                        push(out, Tok::Field(text[start + 1..i].to_string()));
                    }
                }
            }
            '+' | '-' | '0'..='9' => {
                i = lex_number(text, i)?;
                push(out, Tok::Number(text[start..i].to_string()));
            }
            c if is_alnum(c) => {
                while let Some(c) = text[i..].chars().next().filter(|c| is_alnum(*c)) {
                    i += c.len_utf8();
                }
                let word = &text[start..i];
                let tok = match word {
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    "nil" => Tok::Nil,
                    w => Tok::Ident(w.to_string()),
                };
                push(out, tok);
            }
            c => {
                return Err(LexError {
                    msg: format!("unrecognized character in action: {c:?}"),
                    pos: i,
                })
            }
        }
        // A field right after a closing paren or variable chains onto it; the
        // lexer emits it as a Field token and the parser chains it.
    }
}

/// Reads a number's text (Go's syntax: sign, hex/octal/binary, `_`, fraction,
/// exponent) starting at `i`; returns where it ends.
fn lex_number(text: &str, mut i: usize) -> Result<usize, LexError> {
    let b = text.as_bytes();
    let start = i;
    if matches!(b.get(i), Some(b'+') | Some(b'-')) {
        i += 1;
    }
    let mut digits: &[u8] = b"0123456789_";
    if b.get(i) == Some(&b'0') {
        match b.get(i + 1) {
            Some(b'x') | Some(b'X') => {
                i += 2;
                digits = b"0123456789abcdefABCDEF_";
            }
            Some(b'o') | Some(b'O') => {
                i += 2;
                digits = b"01234567_";
            }
            Some(b'b') | Some(b'B') => {
                i += 2;
                digits = b"01_";
            }
            _ => {}
        }
    }
    while b.get(i).is_some_and(|c| digits.contains(c)) {
        i += 1;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(|c| digits.contains(c)) {
            i += 1;
        }
    }
    let exp: &[u8] = if digits.len() > 11 { b"pP" } else { b"eEpP" };
    if b.get(i).is_some_and(|c| exp.contains(c)) {
        i += 1;
        if matches!(b.get(i), Some(b'+') | Some(b'-')) {
            i += 1;
        }
        while b.get(i).is_some_and(|c| c.is_ascii_digit() || *c == b'_') {
            i += 1;
        }
    }
    // Go rejects a number running into letters (`12abc`).
    if let Some(c) = text[i..].chars().next() {
        if is_alnum(c) {
            return Err(LexError {
                msg: format!("bad number syntax: {:?}", &text[start..=i]),
                pos: start,
            });
        }
    }
    if i == start || (i == start + 1 && matches!(b[start], b'+' | b'-')) {
        return Err(LexError {
            msg: format!("bad number syntax: {:?}", &text[start..i.max(start + 1)]),
            pos: start,
        });
    }
    Ok(i)
}

/// Reads one escape after a backslash at `i` (pointing at the backslash);
/// returns the character and where the escape ends.
fn lex_escape(text: &str, i: usize, quote: char) -> Result<(char, usize), LexError> {
    let b = text.as_bytes();
    let bad = |pos| LexError {
        msg: "invalid syntax".into(),
        pos,
    };
    let c = *b.get(i + 1).ok_or_else(|| bad(i))?;
    let simple = match c {
        b'a' => Some('\x07'),
        b'b' => Some('\x08'),
        b'f' => Some('\x0c'),
        b'n' => Some('\n'),
        b'r' => Some('\r'),
        b't' => Some('\t'),
        b'v' => Some('\x0b'),
        b'\\' => Some('\\'),
        b'"' if quote == '"' => Some('"'),
        b'\'' if quote == '\'' => Some('\''),
        _ => None,
    };
    if let Some(s) = simple {
        return Ok((s, i + 2));
    }
    let hex = |from: usize, n: usize| -> Result<(char, usize), LexError> {
        let h = text.get(from..from + n).ok_or_else(|| bad(i))?;
        let v = u32::from_str_radix(h, 16).map_err(|_| bad(i))?;
        char::from_u32(v)
            .map(|ch| (ch, from + n))
            .ok_or_else(|| bad(i))
    };
    match c {
        b'x' => hex(i + 2, 2),
        b'u' => hex(i + 2, 4),
        b'U' => hex(i + 2, 8),
        b'0'..=b'7' => {
            let o = text.get(i + 1..i + 4).ok_or_else(|| bad(i))?;
            let v = u32::from_str_radix(o, 8).map_err(|_| bad(i))?;
            char::from_u32(v)
                .map(|ch| (ch, i + 4))
                .ok_or_else(|| bad(i))
        }
        _ => Err(bad(i)),
    }
}

fn lex_quote(text: &str, start: usize) -> Result<(String, usize), LexError> {
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(c) = text[i..].chars().next() else {
            return Err(LexError {
                msg: "unterminated quoted string".into(),
                pos: start,
            });
        };
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => {
                return Err(LexError {
                    msg: "unterminated quoted string".into(),
                    pos: start,
                })
            }
            '\\' => {
                let (ch, next) = lex_escape(text, i, '"')?;
                out.push(ch);
                i = next;
            }
            c => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
}

fn lex_char(text: &str, start: usize) -> Result<(char, usize), LexError> {
    let bad = LexError {
        msg: "unterminated character constant".into(),
        pos: start,
    };
    let i = start + 1;
    let c = text[i..].chars().next().ok_or_else(|| bad.clone())?;
    let (ch, next) = if c == '\\' {
        lex_escape(text, i, '\'')?
    } else {
        (c, i + c.len_utf8())
    };
    if text.as_bytes().get(next) != Some(&b'\'') {
        return Err(bad);
    }
    Ok((ch, next + 1))
}
