//! Tests of the template engine against Go's `text/template` behaviour (the
//! expected strings are what Go produces for the same template and data).

use super::*;
use std::collections::BTreeMap;

fn data() -> Value {
    let mut m = BTreeMap::new();
    m.insert("Name".to_string(), Value::str("web"));
    m.insert("Count".to_string(), Value::Int(3));
    m.insert("Value".to_string(), Value::Float(12.5));
    m.insert("Empty".to_string(), Value::str(""));
    m.insert(
        "Labels".to_string(),
        Value::string_map([("job", "api"), ("instance", "a:9090")]),
    );
    m.insert(
        "List".to_string(),
        Value::list(vec![Value::str("x"), Value::str("y"), Value::str("z")]),
    );
    Value::map(m)
}

fn run_with(text: &str, d: &Value, funcs: &Funcs) -> Result<String, TemplateError> {
    let mut t = Template::new("t");
    t.parse(text, funcs)?;
    t.execute(d, funcs)
}

fn run(text: &str) -> String {
    match run_with(text, &data(), &Funcs::new()) {
        Ok(s) => s,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

fn err(text: &str) -> String {
    match run_with(text, &data(), &Funcs::new()) {
        Ok(s) => panic!("{text:?} should fail, gave {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn text_fields_and_missing_keys() {
    assert_eq!(run("hello {{.Name}}!"), "hello web!");
    assert_eq!(run("{{.Labels.job}} {{ .Labels.instance }}"), "api a:9090");
    assert_eq!(run("{{.Labels.nope}}"), "<no value>");
    assert_eq!(run("{{.Nope.deeper}}"), "<no value>");
    assert_eq!(run("{{.Labels}}"), "map[instance:a:9090 job:api]");
    assert_eq!(run("{{.List}}"), "[x y z]");
    assert_eq!(run("{{.Value}} {{.Count}}"), "12.5 3");
    assert_eq!(
        run("{{ 1e6 }} {{ 123456.0 }} {{ 0.0001 }} {{ 0.00001 }}"),
        "1e+06 123456 0.0001 1e-05"
    );
    assert_eq!(
        run("{{ 'a' }} {{ 0x1F }} {{ 1_000 }} {{ 010 }}"),
        "97 31 1000 8"
    );
    assert_eq!(run(r#"{{ "a\tb" }}{{ `raw\n` }}"#), "a\tbraw\\n");
}

#[test]
fn trim_markers_and_comments() {
    assert_eq!(run("a  {{- .Name -}}  \n b"), "awebb");
    assert_eq!(run("a {{- /* note */ -}} b"), "ab");
    assert_eq!(run("a {{/* note */}} b"), "a  b");
    assert_eq!(run("{{- 3 -}}"), "3");
    assert_eq!(run("{{-3}}"), "-3");
    assert_eq!(run("x\n{{- if true }}\n  y\n{{- end }}\n"), "x\n  y\n");
}

#[test]
fn if_else_if_else_and_truthiness() {
    let t = "{{if .Empty}}a{{else if .Count}}b{{else}}c{{end}}";
    assert_eq!(run(t), "b");
    assert_eq!(run("{{if .Nope}}a{{else}}b{{end}}"), "b");
    assert_eq!(
        run("{{if 0}}a{{end}}{{if 0.0}}b{{end}}{{if \"\"}}c{{end}}"),
        ""
    );
    assert!(err("{{if nil}}d{{end}}").contains("nil is not a command"));
    assert_eq!(
        run("{{if .List}}yes{{end}}{{if .Labels}}yes{{end}}"),
        "yesyes"
    );
    assert_eq!(
        run("{{if and .Name .Count}}{{and .Name .Count}}{{end}}"),
        "3"
    );
    assert_eq!(
        run("{{or .Empty .Name}} {{or 0 \"\"}}|{{not .Empty}}"),
        "web |true"
    );
    // and/or stop at the first deciding argument: the erroring call is never made.
    assert_eq!(run("{{or .Name (index .List 10)}}"), "web");
}

#[test]
fn with_and_else_with() {
    assert_eq!(run("{{with .Labels.job}}job={{.}}{{end}}"), "job=api");
    assert_eq!(run("{{with .Empty}}x{{else}}none{{end}}"), "none");
    assert_eq!(
        run("{{with .Empty}}x{{else with .Name}}{{.}}{{end}}"),
        "web"
    );
}

#[test]
fn range_lists_maps_ints_break_continue_else() {
    assert_eq!(run("{{range .List}}<{{.}}>{{end}}"), "<x><y><z>");
    assert_eq!(
        run("{{range $i, $v := .List}}{{$i}}={{$v}} {{end}}"),
        "0=x 1=y 2=z "
    );
    assert_eq!(
        run("{{range $k, $v := .Labels}}{{$k}}:{{$v}};{{end}}"),
        "instance:a:9090;job:api;"
    );
    assert_eq!(run("{{range $v := .Labels}}{{$v}};{{end}}"), "a:9090;api;");
    assert_eq!(run("{{range .Nope}}x{{else}}empty{{end}}"), "empty");
    assert_eq!(run("{{range 3}}{{.}}{{end}}"), "012");
    assert_eq!(
        run("{{range .List}}{{if eq . \"y\"}}{{continue}}{{end}}{{.}}{{end}}"),
        "xz"
    );
    assert_eq!(
        run("{{range .List}}{{if eq . \"y\"}}{{break}}{{end}}{{.}}{{end}}"),
        "x"
    );
    assert!(err("{{range .Name}}{{end}}").contains("range can't iterate over web"));
}

#[test]
fn variables_scope_and_assignment() {
    assert_eq!(run("{{$x := .Name}}{{$x}}"), "web");
    assert_eq!(run("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}"), "2");
    assert_eq!(
        run("{{$x := 1}}{{range .List}}{{$x = .}}{{end}}{{$x}}"),
        "z"
    );
    assert_eq!(run("{{with $y := .Count}}{{$y}}{{end}}"), "3");
    assert_eq!(run("{{range .List}}{{$.Name}}{{end}}"), "webwebweb");
    // A variable declared in a block is gone after its end.
    assert!(err("{{if true}}{{$z := 1}}{{end}}{{$z}}").contains("undefined variable \"$z\""));
}

#[test]
fn define_template_block() {
    let t = r#"{{define "item"}}[{{.}}]{{end}}{{range .List}}{{template "item" .}}{{end}}"#;
    assert_eq!(run(t), "[x][y][z]");
    assert_eq!(run(r#"{{block "b" .Name}}<{{.}}>{{end}}"#), "<web>");
    assert_eq!(
        run(r#"{{define "n"}}{{.}}{{end}}{{template "n"}}"#),
        "<no value>"
    );
    // Templates do not see the caller's variables.
    let e = err(r#"{{define "v"}}{{$x}}{{end}}{{$x := 1}}{{template "v"}}"#);
    assert!(e.contains("undefined variable \"$x\""), "{e}");
    let e = err(r#"{{template "missing" .}}"#);
    assert_eq!(
        e,
        r#"template: t:1:2: executing "t" at <{{template "missing"...>: template "missing" not defined"#
    );
}

#[test]
fn define_in_set_and_redefinition() {
    let funcs = Funcs::new();
    let mut t = Template::new("main");
    t.parse_named("defs.tmpl", r#"{{define "a"}}A1{{end}}"#, &funcs)
        .unwrap();
    t.parse_named("more.tmpl", "{{define \"a\"}}A2{{end}}\n", &funcs)
        .unwrap();
    t.parse(r#"x{{template "a"}}"#, &funcs).unwrap();
    assert_eq!(t.execute(&Value::Nil, &funcs).unwrap(), "xA2");
    assert!(t.has("defs.tmpl") && t.has("a"));
}

#[test]
fn builtins() {
    assert_eq!(run("{{len .List}} {{len .Labels}} {{len .Name}}"), "3 2 3");
    assert_eq!(
        run("{{index .List 1}} {{index .Labels \"job\"}}|{{index .Labels \"no\"}}|"),
        "y api||"
    );
    assert_eq!(run("{{slice .List 1}} {{slice .Name 0 2}}"), "[y z] we");
    assert_eq!(run("{{print 1 2 \"a\" 3 \"b\" \"c\"}}"), "1 2a3bc");
    assert_eq!(run("{{println 1 \"a\"}}"), "1 a\n");
    assert_eq!(
        run("{{html \"<a href='x'>&\\\"\"}}"),
        "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"
    );
    assert_eq!(run("{{js \"it's <b>\"}}"), "it\\'s \\u003Cb\\u003E");
    assert_eq!(run("{{urlquery \"a b&c=d/é\"}}"), "a+b%26c%3Dd%2F%C3%A9");
    assert_eq!(
        run("{{.Name | printf \"%s!\" | printf \"%q\"}}"),
        "\"web!\""
    );
    assert!(err("{{index .List 5}}").contains("error calling index: index out of range: 5"));
}

#[test]
fn comparisons() {
    assert_eq!(run("{{eq .Name \"a\" \"web\"}} {{ne 1 2}} {{lt 1 2}} {{le 2 2}} {{gt 2.5 1.0}} {{ge \"b\" \"a\"}}"), "true true true true true true");
    assert_eq!(run("{{eq .Labels.nope \"x\"}}"), "false");
    // An int literal against a float is an error in Go.
    let e = err("{{ gt .Value 10 }}");
    assert_eq!(
        e,
        r#"template: t:1:3: executing "t" at <gt .Value 10>: error calling gt: incompatible types for comparison"#
    );
    assert!(err("{{lt true false}}").contains("invalid type for comparison"));
}

#[test]
fn printf_verbs() {
    let p = |f: &str, a: Vec<Value>| sprintf(f, &a);
    assert_eq!(
        p("%s %d %v", vec!["a".into(), 5i64.into(), 1.5.into()]),
        "a 5 1.5"
    );
    assert_eq!(
        p(
            "%.2f|%f|%5.1f|%-6.2f|",
            vec![2.73456.into(), 2.0.into(), 2.73456.into(), 1.0.into()]
        ),
        "2.73|2.000000|  2.7|1.00  |"
    );
    assert_eq!(
        p(
            "%q %x %X %05d %+d",
            vec![
                "hi\"".into(),
                255i64.into(),
                "hi".into(),
                42i64.into(),
                3i64.into()
            ]
        ),
        "\"hi\\\"\" ff 6869 00042 +3"
    );
    assert_eq!(
        p(
            "%e %g %.3g %g",
            vec![
                1234.5678.into(),
                0.000012.into(),
                1234.5678.into(),
                1e21.into()
            ]
        ),
        "1.234568e+03 1.2e-05 1.23e+03 1e+21"
    );
    assert_eq!(
        p("%d %s", vec![1.5.into(), 3i64.into()]),
        "%!d(float64=1.5) %!s(int=3)"
    );
    assert_eq!(p("%d %d", vec![1i64.into()]), "1 %!d(MISSING)");
    assert_eq!(
        p("%d", vec![1i64.into(), "x".into()]),
        "1%!(EXTRA string=x)"
    );
    assert_eq!(
        p(
            "%t %v %s %%",
            vec![true.into(), Value::Nil, Value::list(vec!["a".into()])]
        ),
        "true <nil> [a] %"
    );
    assert_eq!(
        p(
            "%8s|%-4s|%.2s",
            vec!["abc".into(), "ab".into(), "abcdef".into()]
        ),
        "     abc|ab  |ab"
    );
}

#[test]
fn functions_and_method_objects() {
    #[derive(Debug)]
    struct Pair(String, String);
    impl Object for Pair {
        fn type_name(&self) -> &str {
            "test.Pair"
        }
        fn get(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>> {
            match name {
                "First" => Some(Ok(Value::str(self.0.clone()))),
                "Join" => Some(
                    builtins::arg_str(args.first().unwrap_or(&Value::NoValue))
                        .map(|sep| Value::String(format!("{}{sep}{}", self.0, self.1))),
                ),
                _ => None,
            }
        }
        fn underlying(&self) -> Value {
            Value::string_map([("a", self.0.as_str()), ("b", self.1.as_str())])
        }
    }
    let mut funcs = Funcs::new();
    funcs.add("double", |a: &[Value]| match a {
        [Value::Int(i)] => Ok(Value::Int(i * 2)),
        _ => Err("want one int".into()),
    });
    let mut m = BTreeMap::new();
    m.insert("P".to_string(), Value::object(Pair("x".into(), "y".into())));
    let fv: FuncValue = std::sync::Arc::new(|a: &[Value]| Ok(Value::Int(a.len() as i64)));
    m.insert("F".to_string(), Value::Func(fv));
    let d = Value::map(m);
    let r = |t: &str| run_with(t, &d, &funcs).unwrap();
    assert_eq!(r("{{double 4 | double}}"), "16");
    assert_eq!(
        r("{{.P.First}} {{.P.Join \"-\"}} {{.P.a}} {{len .P}}"),
        "x x-y x 2"
    );
    assert_eq!(r("{{\"+\" | .P.Join}}"), "x+y");
    assert_eq!(r("{{call .F 1 2}}"), "2");
    let e = run_with("{{double \"x\"}}", &d, &funcs)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        r#"template: t:1:2: executing "t" at <double "x">: error calling double: want one int"#
    );
    // A name that is no method falls back to the map behind the object.
    assert_eq!(r("{{.P.Nope}}"), "<no value>");
    let e = run_with("{{.Count.X}}", &data(), &funcs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("can't evaluate field X in type int"), "{e}");
}

#[test]
fn exec_template_function() {
    let mut funcs = Funcs::new();
    funcs.add_exec_template("tmpl");
    let mut t = Template::new("t");
    t.parse(
        r#"{{define "x"}}<{{.}}>{{end}}{{tmpl "x" .Name | printf "%s!"}}"#,
        &funcs,
    )
    .unwrap();
    assert_eq!(t.execute(&data(), &funcs).unwrap(), "<web>!");
}

#[test]
fn parse_errors_name_template_and_line() {
    let e = |t: &str| match run_with(t, &data(), &Funcs::new()) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("{t:?} parsed and gave {s:?}"),
    };
    assert_eq!(
        e("a\n{{ nope 1 }}"),
        "template: t:2: function \"nope\" not defined"
    );
    assert_eq!(e("{{ .Name "), "template: t:1: unclosed action");
    assert_eq!(e("{{ if .Name }}x"), "template: t:1: unexpected EOF");
    assert_eq!(e("{{ end }}"), "template: t:1: unexpected {{end}}");
    assert_eq!(e("{{ $x }}"), "template: t:1: undefined variable \"$x\"");
    assert_eq!(
        e("{{ break }}"),
        "template: t:1: {{break}} outside {{range}}"
    );
    assert_eq!(e("{{ }}"), "template: t:1: missing value for command");
    assert_eq!(e("{{ \"x }}"), "template: t:1: unterminated quoted string");
    assert_eq!(
        e("{{/* x */ .Name}}"),
        "template: t:1: comment ends before closing delimiter"
    );
}

#[test]
fn exec_errors_have_line_column_and_node() {
    let e = err("line1\n  {{ .Name.Field }}");
    assert_eq!(
        e,
        r#"template: t:2:5: executing "t" at <.Name.Field>: can't evaluate field Field in type string"#
    );
    let e = err("{{ printf \"%d\" (len 3) }}");
    assert!(
        e.starts_with(
            "template: t:1:16: executing \"t\" at <len 3>: error calling len: len of type int"
        ),
        "{e}"
    );
    let e = err("{{ index .List 1 2 3 4 5 6 7 8 9 10 }}");
    assert!(e.contains("at <index .List 1 2 3 4 ...>"), "{e}");
}

#[test]
fn output_limit_is_an_error_not_a_crash() {
    let funcs = Funcs::new();
    let mut t = Template::new("t");
    t.parse(
        r#"{{define "r"}}xxxxxxxxxx{{template "r"}}{{end}}{{template "r"}}"#,
        &funcs,
    )
    .unwrap();
    let opts = ExecOptions {
        output_bytes_max: 1000,
        ..Default::default()
    };
    let e = t.execute_with("t", &Value::Nil, &funcs, &opts).unwrap_err();
    assert!(
        e.to_string().contains("output longer than 1000 bytes"),
        "{e}"
    );
    // Deep recursion without output stops at the depth limit.
    let mut t = Template::new("t");
    t.parse(
        r#"{{define "r"}}{{template "r"}}{{end}}{{template "r"}}"#,
        &funcs,
    )
    .unwrap();
    let e = t.execute(&Value::Nil, &funcs).unwrap_err();
    assert!(
        e.to_string().contains("exceeded maximum template depth"),
        "{e}"
    );
}

#[test]
fn missing_key_zero_option() {
    let funcs = Funcs::new();
    let mut t = Template::new("t");
    t.parse("[{{ .Labels.nope }}]", &funcs).unwrap();
    let opts = ExecOptions {
        missing_key_zero: true,
        ..Default::default()
    };
    assert_eq!(t.execute_with("t", &data(), &funcs, &opts).unwrap(), "[]");
    assert_eq!(t.execute(&data(), &funcs).unwrap(), "[<no value>]");
}

#[test]
fn predeclared_variables() {
    let funcs = Funcs::new();
    let mut t = Template::new("t");
    t.declare_vars(&["$value"]);
    t.parse("{{ $value }}", &funcs).unwrap();
    let opts = ExecOptions {
        vars: vec![("$value".into(), Value::Float(2.5))],
        ..Default::default()
    };
    assert_eq!(
        t.execute_with("t", &Value::Nil, &funcs, &opts).unwrap(),
        "2.5"
    );
}
