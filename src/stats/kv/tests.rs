use super::*;
use proptest::prelude::*;

fn row(len: u64, mem: f64, tokens: Option<u64>, util: Option<&str>) -> KvRow {
    KvRow {
        max_model_len: Some(len),
        mem_used_mb: Some(mem),
        delta_mb: None,
        bytes_per_token_est: None,
        notes: Vec::new(),
        memory_source: Source::Nvml,
        server_mem_mb: None,
        kv_cache_tokens: tokens,
        kv_cache_bytes: tokens.map(|t| t as f64 * 12288.0),
        max_concurrency: None,
        engine_bytes_per_token: tokens.map(|_| 12288.0),
        theory_bytes_per_token: Some(12288),
        weights_gib: None,
        ready_s: None,
        status: Status::Ok,
        predicted_kv_tokens: None,
        util: None,
        vars: util.map(|u| vec![("util".to_owned(), u.to_owned())]).unwrap_or_default(),
        error: None,
    }
}

/// The findings as the built-in templates word them.
fn words(f: &KvFindings) -> String {
    const TEXT: &str = "{% import \"cache_findings.md\" as k %}{{ k.regime(f.regime) }}\n{{ k.granularity(f.granularity) }}\n\
        {% if f.slope_reading %}{{ k.slope_reading(f.slope_reading) }}\n{% endif %}{{ k.concurrent_4k(f) }}\n\
        {{ k.latency_pick(f) }}\n{{ k.throughput_pick(f) }}\n";
    crate::report::markdown::environment(None).render_str(TEXT, minijinja::context! { f }).unwrap()
}

#[test]
fn the_throughput_pick_is_the_length_whose_pool_holds_the_most_requests_of_the_workload() {
    // A longer max-model-len bought a bigger pool, so it holds more 1K requests.
    let rows = [row(1024, 4000.0, Some(4096), None), row(4096, 4200.0, Some(16384), None)];
    let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(1024));
    assert!(f.holds(&rows, Some(1024)).is_empty(), "{:?}", f.holds(&rows, Some(1024)));
    let text = words(&f);
    assert!(text.contains("max-model-len 4096: of the lengths measured") && text.contains("(14,"), "{text}");
    // The same pool at every length: the length does not change capacity.
    let rows = [row(1024, 4000.0, Some(16384), None), row(4096, 4001.0, Some(16384), None)];
    let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(1024));
    assert!(words(&f).contains("max-model-len does not change capacity here (14"), "{}", words(&f));
    let f = findings_of(&rows, Some(16), (256, SeqsSource::Default), Some(8192));
    assert!(words(&f).contains("no successful max-model-len holds a request of 8192"), "{}", words(&f));
    assert!(f.holds(&rows, Some(8192)).is_empty());
}

#[test]
fn a_tampered_kv_finding_does_not_hold() {
    let rows = [
        row(1024, 3680.0, Some(16384), None),
        row(4096, 4240.0, Some(65536), None),
        row(16384, 6480.0, Some(262144), None),
    ];
    let honest = findings_of(&rows, Some(16), (1024, SeqsSource::LargeGpuDefault), None);
    assert!(honest.holds(&rows, None).is_empty(), "{:?}", honest.holds(&rows, None));
    assert!(matches!(honest.regime, Regime::Linear { .. }), "{:?}", honest.regime);
    let mut f = honest.clone();
    f.regime =
        Regime::Flat { spread_mb: 1.0, spread_pct: 0.1, max_spread_pct: 2.0, from: 1024, to: 16384, kv_tokens: None };
    assert!(!f.holds(&rows, None).is_empty(), "flat claimed for memory that rose");
    let mut f = honest.clone();
    f.safe_max_model_len = Some(4096);
    assert!(!f.holds(&rows, None).is_empty(), "a safe length that is not the largest");
    let mut f = honest.clone();
    if let ThroughputPick::Length { best, .. } = &mut f.throughput_pick {
        best.max_model_len = 4096;
        best.requests = 14;
    }
    assert!(!f.holds(&rows, None).is_empty(), "a pick that does not hold the most");
    let mut f = honest.clone();
    f.granularity.off_line = Some(vec![f.steps[0].clone()]);
    assert!(!f.holds(&rows, None).is_empty(), "a step on the line said to be off it");
    let mut f = honest.clone();
    if let Some(o) = &mut f.outside {
        o.moved_mb += 10.0;
    }
    assert!(!f.holds(&rows, None).is_empty(), "memory outside the pool that did not move so");
    let mut f = honest;
    f.concurrent_4k[0].requests += 1;
    assert!(!f.holds(&rows, None).is_empty(), "a count the pool does not hold");
}

const LENGTHS: [u64; 7] = [512, 1024, 2048, 4096, 8192, 16384, 32768];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    /// Whatever the rows, every KV finding holds against them, and its words carry its figures: the regime
    /// named by the spread and the line, the safe length, the counts of 4K requests and the picks.
    #[test]
    fn every_kv_sentence_matches_the_rows(
        shape in 0u8..4,
        lengths in proptest::sample::subsequence(LENGTHS.to_vec(), 1..6),
        noise in proptest::collection::vec(0.0f64..1.0, 7),
        slope in 0.005f64..0.3,
        per_len in 1u64..24,
        pool in 1u64..40_000,
        failed in proptest::option::of(0usize..7),
        seqs in prop_oneof![Just(256u64), Just(1024u64)],
        request_len in prop_oneof![Just(None), Just(Some(1024u64)), Just(Some(3000u64))],
    ) {
        let mut rows: Vec<KvRow> = lengths
            .iter()
            .zip(&noise)
            .enumerate()
            .map(|(i, (&len, &n))| match shape {
                // Flat: a fixed pool, memory within a few MiB.
                0 => row(len, 40_000.0 + 20.0 * n, Some(pool * 16), None),
                // Linear: pool and memory follow the length.
                1 => row(len, 3_000.0 + slope * len as f64 + 5.0 * n, Some(per_len * len), None),
                // Anything.
                2 => row(len, 1_000.0 + 9_000.0 * n, Some(((n * 1e6) as u64 / 16) * 16), None),
                // One length, the pool set by another setting.
                _ => row(4096, 2_000.0 + 70_000.0 * n, Some(((n * 2e6) as u64 / 16) * 16), Some(&format!("0.{}", i + 1))),
            })
            .collect();
        if let Some(i) = failed.filter(|i| *i < rows.len()) {
            rows[i].status = Status::Failed;
            rows[i].error = Some("out of memory".to_owned());
        }
        let f = findings_of(&rows, Some(16), (seqs, SeqsSource::Default), request_len);
        let wrong = f.holds(&rows, request_len);
        prop_assert!(wrong.is_empty(), "{:?}\n{:?}", wrong, f);
        let text = words(&f);
        let ok: Vec<&KvRow> = rows.iter().filter(|r| r.status == Status::Ok).collect();
        let mem: Vec<f64> = ok.iter().filter_map(|r| r.mem_used_mb).collect();
        let distinct = ok.iter().map(|r| r.max_model_len).collect::<std::collections::BTreeSet<_>>().len();
        if distinct < 2 {
            prop_assert!(text.starts_with("**Not enough successful lengths"), "{}", text);
        } else {
            let (lo, hi) = (mem.iter().copied().fold(f64::MAX, f64::min), mem.iter().copied().fold(f64::MIN, f64::max));
            let spread = 100.0 * (hi - lo) / (mem.iter().sum::<f64>() / mem.len() as f64);
            if spread < 2.0 {
                let expected = format!("**Flat: the KV pool is sized by memory utilisation (or a fixed KV size), not by max-model-len.** Memory varied by {:.1} MiB ({spread:.2}%)", hi - lo);
                prop_assert!(text.starts_with(&expected), "{} lacks {}", text, expected);
            } else {
                prop_assert!(!text.starts_with("**Flat"), "{}", text);
            }
        }
        // The largest length whose pool, less 10%, holds four full-length requests; its words.
        let usable = |r: &KvRow| (r.kv_cache_tokens.unwrap_or(0) as f64 * 0.9) as u64;
        let whole = |l: u64| l.div_ceil(16) * 16;
        let safe = ok.iter().filter(|r| usable(r) >= 4 * whole(r.max_model_len.unwrap())).filter_map(|r| r.max_model_len).max();
        prop_assert_eq!(f.safe_max_model_len, safe);
        match (safe, shape) {
            (None, _) => prop_assert!(text.contains("no length in this run is safe"), "{}", text),
            (Some(s), 3) if ok.len() > 1 => {
                let expected = format!("every start has max-model-len {s}, the largest safe one here; util sets the pool");
                prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
            }
            (Some(s), _) => {
                let expected = format!("max-model-len {s} (the largest safe one)");
                prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
            }
        }
        for r in ok.iter().filter(|r| r.max_model_len.unwrap() >= 4096) {
            let n = (usable(r) / 4096).min(seqs);
            let at = match shape == 3 && ok.len() > 1 {
                true => format!("util {}", r.vars[0].1),
                false => format!("max-model-len {}", r.max_model_len.unwrap()),
            };
            let expected = format!("{at}: {n}");
            prop_assert!(text.contains(&expected), "{} lacks {}", text, expected);
        }
        // The throughput pick names the most requests of the workload's length any pool holds.
        let len = request_len.unwrap_or(4096);
        let most = ok.iter().filter(|r| r.max_model_len.unwrap() >= len).map(|r| (usable(r) / whole(len)).min(seqs)).max();
        match most {
            None => prop_assert!(text.contains("no successful max-model-len holds a request"), "{}", text),
            Some(n) => {
                let said = format!("({n},");
                let same = format!("({n} concurrent requests of {len} tokens fit at every length");
                prop_assert!(text.contains(&said) || text.contains(&same), "{} lacks {}", text, n);
            }
        }
    }
}
