//! Prometheus text from vLLM's /metrics: samples with labels, and the `vllm:cache_config_info` info gauge.

pub use crate::record::point::Snapshot;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the text exposition format; comment lines and malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (&line[..open], parse_labels(&line[open + 1..close]), &line[close + 1..])
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample { name: name.trim().to_owned(), labels, value })
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = rest.len() - eq - 2;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name, value);
        rest = &rest[eq + 2 + end..];
    }
    labels
}

/// The labels of `vllm:cache_config_info` (block size, blocks, KV bytes and tokens in new versions).
pub fn cache_config_info(samples: &[Sample]) -> Option<BTreeMap<String, String>> {
    samples.iter().find(|s| s.name == "vllm:cache_config_info").map(|s| s.labels.clone())
}

/// Sum of a metric's samples over all label sets (e.g. a counter across engines).
pub fn sum(samples: &[Sample], name: &str) -> Option<f64> {
    let mut found = false;
    let total = samples.iter().filter(|s| s.name == name).inspect(|_| found = true).map(|s| s.value).sum();
    found.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_cpu_metrics() {
        let text = "# HELP x y\n# TYPE vllm:cache_config_info gauge\nvllm:cache_config_info{block_size=\"128\",kv_cache_memory_bytes=\"268435456\",kv_cache_size_tokens=\"131072\",engine=\"0\"} 1.0\nvllm:num_requests_running{engine=\"0\",model_name=\"m\"} 3.0\nvllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 7.0\nprocess_cpu_seconds_total 12.5\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4);
        let info = cache_config_info(&samples).unwrap();
        assert_eq!(info["kv_cache_memory_bytes"], "268435456");
        assert_eq!(info["kv_cache_size_tokens"], "131072");
        assert_eq!(sum(&samples, "vllm:num_requests_running"), Some(3.0));
        assert_eq!(samples[2].labels["le"], "+Inf");
        assert_eq!(sum(&samples, "process_cpu_seconds_total"), Some(12.5));
        assert_eq!(sum(&samples, "absent"), None);
    }

    #[test]
    fn label_values_may_hold_commas_quotes_and_braces() {
        let s = parse("m{a=\"x,y\",b=\"say \\\"hi\\\"\",c=\"{}\"} 2\n");
        assert_eq!(s[0].labels["a"], "x,y");
        assert_eq!(s[0].labels["b"], "say \"hi\"");
        assert_eq!(s[0].labels["c"], "{}");
        assert_eq!(s[0].value, 2.0);
    }
}

pub fn snapshot(samples: &[Sample], t_s: f64) -> Snapshot {
    let s = |name: &str| sum(samples, name);
    Snapshot {
        t_s,
        running: s("vllm:num_requests_running"),
        waiting: s("vllm:num_requests_waiting"),
        kv_usage: s("vllm:kv_cache_usage_perc").or_else(|| s("vllm:gpu_cache_usage_perc")),
        preemptions: s("vllm:num_preemptions_total"),
        generation_tokens: s("vllm:generation_tokens_total"),
        prompt_tokens: s("vllm:prompt_tokens_total"),
        prefix_hits: s("vllm:prefix_cache_hits_total"),
        prefix_queries: s("vllm:prefix_cache_queries_total"),
        e2e_sum: s("vllm:e2e_request_latency_seconds_sum"),
        e2e_count: s("vllm:e2e_request_latency_seconds_count"),
        ttft_sum: s("vllm:time_to_first_token_seconds_sum"),
        ttft_count: s("vllm:time_to_first_token_seconds_count"),
        queue_sum: s("vllm:request_queue_time_seconds_sum"),
        queue_count: s("vllm:request_queue_time_seconds_count"),
    }
}

/// What changed between two snapshots: the server's own view of a measured window.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    pub generation_tokens: Option<f64>,
    pub prompt_tokens: Option<f64>,
    pub requests: Option<f64>,
    pub mean_e2e_s: Option<f64>,
    pub mean_ttft_s: Option<f64>,
    pub mean_queue_s: Option<f64>,
    pub prefix_hits: Option<f64>,
    pub prefix_queries: Option<f64>,
    pub preemptions: Option<f64>,
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn ratio(sum: Option<f64>, count: Option<f64>) -> Option<f64> {
    let (s, c) = (sum?, count?);
    (c > 0.0).then(|| s / c)
}

pub fn delta(before: &Snapshot, after: &Snapshot) -> Delta {
    Delta {
        generation_tokens: diff(before.generation_tokens, after.generation_tokens),
        prompt_tokens: diff(before.prompt_tokens, after.prompt_tokens),
        requests: diff(before.e2e_count, after.e2e_count),
        mean_e2e_s: ratio(diff(before.e2e_sum, after.e2e_sum), diff(before.e2e_count, after.e2e_count)),
        mean_ttft_s: ratio(diff(before.ttft_sum, after.ttft_sum), diff(before.ttft_count, after.ttft_count)),
        mean_queue_s: ratio(diff(before.queue_sum, after.queue_sum), diff(before.queue_count, after.queue_count)),
        prefix_hits: diff(before.prefix_hits, after.prefix_hits),
        prefix_queries: diff(before.prefix_queries, after.prefix_queries),
        preemptions: diff(before.preemptions, after.preemptions),
    }
}
