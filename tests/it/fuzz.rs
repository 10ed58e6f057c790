//! Whatever the bytes, parsing and planning return a value or an error, never a panic.

use proptest::prelude::*;
use servelab::{plan, spec};

fn never_panics(text: &str, overrides: &[String]) {
    if let Ok(loaded) = spec::load_str("fuzz.yaml", text, overrides) {
        // A plan or an error are both fine: what is tested is that it returns.
        plan::build_located(&loaded).ok();
    }
}

const VALID: &str = include_str!("../../experiments/cpu/concurrency_sweep.yaml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(text in any::<String>()) {
        never_panics(&text, &[]);
    }

    #[test]
    fn arbitrary_bytes_as_lossy_text(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        never_panics(&String::from_utf8_lossy(&bytes), &[]);
    }

    #[test]
    fn yaml_shaped_text(text in "[a-z_{}\\[\\]:, \\n\"'0-9.#-]{0,300}") {
        never_panics(&text, &[]);
    }

    /// Mutations of a real spec reach deep into validation and planning.
    #[test]
    fn mutated_valid_spec(at in 0usize..4000, cut in 0usize..40, insert in "[ -~\\n\\t]{0,20}") {
        let mut chars: Vec<char> = VALID.chars().collect();
        let at = at.min(chars.len());
        let end = (at + cut).min(chars.len());
        chars.splice(at..end, insert.chars());
        never_panics(&chars.into_iter().collect::<String>(), &[]);
    }

    #[test]
    fn arbitrary_overrides(path in "[a-z_.\\[\\]0-9-]{0,30}", value in "[ -~]{0,30}") {
        never_panics(VALID, &[format!("{path}={value}")]);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for text in [
        format!("name: x\nengine: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000)),
        format!("name: x\nengine: {}1{}\n", "{a: ".repeat(50_000), "}".repeat(50_000)),
        (0..5000).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect::<String>(),
    ] {
        assert!(spec::load_str("deep.yaml", &text, &[]).is_err());
    }
}

#[test]
fn unicode_and_huge_inputs_are_handled() {
    let unicode = VALID.replace("concurrency-sweep-cpu", "σερβε-λαβ-🚀");
    let err = spec::load_str("u.yaml", &unicode, &[]).and_then(|l| plan::build_located(&l)).unwrap_err();
    assert!(err.to_string().contains("cannot be used as a folder name"), "{err}");
    let huge = "a".repeat(2 << 20);
    assert!(spec::load_str("huge.yaml", &huge, &[]).unwrap_err().to_string().contains("surely a mistake"));
    // Alias bombs are bounded by the parser's budget.
    let bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    // A value or an error are both fine: what is tested is that it returns.
    spec::load_str("bomb.yaml", bomb, &[]).ok();
}
