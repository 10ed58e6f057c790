//! What each request sends: its prompt, its output length and the prompt's length as the client counted it.
//! Prompts are seeded random token ids of an exact length (the default), text of an exact length built with
//! the model's tokenizer, or texts from a file or dataset. Each request's prompt and lengths depend only on the
//! seed, a salt (the point id) and its index, so prompts differ across requests, points and repeats and prefix
//! caching cannot inflate results — unless `shared_prefix_tokens` asks for a common start on purpose.

use super::lengths::{self, splitmix};
use super::text::TextMaker;
use crate::record::plan::LengthDist;
use std::sync::Arc;

/// Ids below this are left out: they are the special tokens of most vocabularies (BOS, EOS, padding).
const FIRST_ID: u64 = 16;

/// A text prompt of a file or dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct TextItem {
    pub text: String,
    /// Its tokens without special tokens, when the model's tokenizer was at hand.
    pub tokens: Option<u32>,
    /// The output length it asks for (datasets); None: the load's `max_tokens`.
    pub output: Option<u32>,
}

#[derive(Clone, Debug)]
pub enum Source {
    /// Random token ids below `vocab`.
    Ids { shared_prefix: u32, vocab: u64 },
    /// Text of an exact token length; `specials`: count the tokenizer's special tokens, as the completions
    /// endpoint adds them (the chat endpoint's template adds its own, reported as its overhead).
    Text { maker: Arc<TextMaker>, shared_prefix: u32, specials: u32 },
    /// Texts used in turn (`prompts_file`) or drawn at random (`dataset`); `specials` as for `Text`.
    Items { items: Arc<Vec<TextItem>>, random: bool, specials: u32 },
    /// A trace window's requests in order (request `i` is the window's `i`th), token ids below `vocab`; text of
    /// the model's one-token words when `maker` is set (the chat endpoint). `speedup`: its timestamps over it
    /// are the arrivals; None when the open loop's rate paces them instead (`TraceSchedule::Rate`).
    Trace {
        window: Arc<crate::record::tracefile::Window>,
        vocab: u64,
        speedup: Option<f64>,
        maker: Option<Arc<TextMaker>>,
    },
    /// Multi-turn sessions (`super::session`): the phase runs them, not one request per index.
    Sessions(Arc<super::session::Sessions>),
}

/// The prompts and lengths of one point.
#[derive(Clone, Debug)]
pub struct Workload {
    pub source: Source,
    /// (prompt, output) lengths when not drawn.
    pub fixed: (u32, u32),
    pub prompt_dist: Option<LengthDist>,
    pub output_dist: Option<LengthDist>,
    pub context: Option<u32>,
    pub seed: u64,
}

/// A u64 salt from a string (the point id), FNV-1a.
pub fn salt(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// One prompt, ready to be put in a request body.
pub enum Prompt<'a> {
    Ids(&'a [u32]),
    Text(&'a str),
}

/// One request's prompt and lengths.
pub struct Request<'a> {
    pub prompt: Prompt<'a>,
    pub max_tokens: u32,
    /// The prompt's tokens as the client counted them, when it could.
    pub sent_tokens: Option<u32>,
}

/// Buffers reused between requests.
#[derive(Default)]
pub struct Scratch {
    ids: Vec<u32>,
    text: String,
}

impl Workload {
    /// A workload of fixed-length random token-id prompts.
    pub fn ids(seed: u64, prompt_tokens: u32, max_tokens: u32, vocab: u64) -> Workload {
        Workload {
            source: Source::Ids { shared_prefix: 0, vocab },
            fixed: (prompt_tokens, max_tokens),
            prompt_dist: None,
            output_dist: None,
            context: None,
            seed,
        }
    }

    /// Whether output lengths differ between requests (they are then recorded with each request).
    pub fn varies_output(&self) -> bool {
        self.output_dist.is_some()
            || matches!(&self.source, Source::Trace { .. } | Source::Sessions(_))
            || matches!(&self.source, Source::Items { items, .. } if items.iter().any(|i| i.output.is_some()))
    }

    /// A trace's arrivals, seconds from the phase start (its timestamps over `speedup`); None otherwise, and
    /// None for a trace paced by a rate (the open loop then draws the schedule, and request `i` of it is the
    /// window's `i`th).
    pub fn trace_arrivals(&self) -> Option<Vec<f64>> {
        match &self.source {
            Source::Trace { window, speedup: Some(speedup), .. } => {
                Some(window.requests.iter().map(|r| r.at_s / speedup).collect())
            }
            _ => None,
        }
    }

    /// The prompt and lengths of request `index`.
    pub fn get<'a>(&'a self, salt: u64, index: u64, scratch: &'a mut Scratch) -> Request<'a> {
        let (len, max_tokens) = lengths::lengths(
            self.fixed,
            (self.prompt_dist.as_ref(), self.output_dist.as_ref()),
            self.context,
            (self.seed, salt, index),
        );
        let own = self.seed ^ salt.rotate_left(17) ^ index.wrapping_mul(0xA24B_AED4_963E_E407);
        let shared = self.seed ^ 0x5EED;
        match &self.source {
            Source::Ids { shared_prefix, vocab } => {
                scratch.ids.clear();
                let span = vocab.saturating_sub(FIRST_ID).max(1);
                let (mut shared, mut own) = (shared, own);
                for i in 0..len {
                    let state = if i < *shared_prefix { &mut shared } else { &mut own };
                    scratch.ids.push((FIRST_ID + splitmix(state) % span) as u32);
                }
                Request { prompt: Prompt::Ids(&scratch.ids), max_tokens, sent_tokens: Some(len) }
            }
            Source::Text { maker, shared_prefix, specials } => {
                let (text, n) = maker.text(len, *shared_prefix, shared, own, *specials > 0);
                scratch.text = text;
                Request { prompt: Prompt::Text(&scratch.text), max_tokens, sent_tokens: Some(n) }
            }
            Source::Trace { window, vocab, maker, .. } => {
                // A window is never empty (reading refuses one); an empty one sends empty prompts.
                let r = window.requests.get(index as usize % window.requests.len().max(1));
                let (input, output) = r.map_or((0, 1), |r| (r.input, r.output));
                if let Some(m) = maker {
                    super::trace::text(window, index as usize, self.seed, salt, m, &mut scratch.text);
                    // The message's words, one token each; the template's own tokens are its overhead.
                    return Request {
                        prompt: Prompt::Text(&scratch.text),
                        max_tokens: output,
                        sent_tokens: Some(input),
                    };
                }
                super::trace::prompt(window, index as usize, self.seed, salt, *vocab, &mut scratch.ids);
                Request { prompt: Prompt::Ids(&scratch.ids), max_tokens: output, sent_tokens: Some(input) }
            }
            // A session's first user message: its turns are sent by `super::session`, never by index.
            Source::Sessions(s) => {
                let len = s.draw(salt, index as u32).first().map_or(1, |t| t.user_tokens);
                let (text, n) = s.user_text(salt, index as u32, 1, len);
                scratch.text = text;
                Request { prompt: Prompt::Text(&scratch.text), max_tokens, sent_tokens: Some(n) }
            }
            Source::Items { items, random, specials } => {
                let i = if *random { splitmix(&mut own.clone()) } else { index } % items.len().max(1) as u64;
                let item = &items[i as usize];
                let max_tokens = match (item.output, self.context, item.tokens) {
                    (Some(out), Some(limit), Some(p)) => out.min(limit.saturating_sub(p + specials).max(1)),
                    (Some(out), ..) => out,
                    (None, ..) => max_tokens,
                };
                Request { prompt: Prompt::Text(&item.text), max_tokens, sent_tokens: item.tokens.map(|t| t + specials) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids_of(w: &Workload, salt: u64, index: u64) -> Vec<u32> {
        let mut s = Scratch::default();
        let r = w.get(salt, index, &mut s);
        assert_eq!(
            r.sent_tokens,
            Some(match r.prompt {
                Prompt::Ids(ids) => ids.len() as u32,
                Prompt::Text(_) => panic!(),
            })
        );
        let Prompt::Ids(ids) = r.prompt else { panic!() };
        ids.to_vec()
    }

    #[test]
    fn exact_length_distinct_and_deterministic() {
        let p = Workload::ids(7, 128, 64, 4096);
        let (x, y) = (ids_of(&p, 1, 0), ids_of(&p, 1, 1));
        assert_eq!(x.len(), 128);
        assert_ne!(x[0], y[0], "distinct from the first token");
        assert!(x.iter().all(|&t| (16..4096).contains(&t)));
        assert_eq!(x, ids_of(&p, 1, 0));
        assert_ne!(x, ids_of(&p, 2, 0), "another point, other prompts");
    }

    #[test]
    fn shared_prefix_is_shared() {
        let p = Workload { source: Source::Ids { shared_prefix: 32, vocab: 1000 }, ..Workload::ids(7, 64, 1, 1000) };
        let (x, y) = (ids_of(&p, 1, 0), ids_of(&p, 9, 5));
        assert_eq!(x[..32], y[..32]);
        assert_ne!(x[32..], y[32..]);
    }

    #[test]
    fn drawn_lengths_reach_the_request() {
        let d = LengthDist::Uniform { min: 10, max: 40 };
        let p = Workload { prompt_dist: Some(d), output_dist: Some(d), ..Workload::ids(7, 25, 25, 1000) };
        let mut s = Scratch::default();
        let got: Vec<(u32, u32)> = (0..200)
            .map(|i| {
                let r = p.get(3, i, &mut s);
                (r.sent_tokens.unwrap(), r.max_tokens)
            })
            .collect();
        assert!(got.iter().all(|&(a, b)| (10..=40).contains(&a) && (10..=40).contains(&b)));
        assert!(got.iter().any(|g| g.0 == 10) && got.iter().any(|g| g.1 == 40));
    }

    #[test]
    fn dataset_items_are_drawn_at_random_and_fit_the_context() {
        let items: Vec<TextItem> =
            (0..10).map(|i| TextItem { text: format!("t{i}"), tokens: Some(100), output: Some(50 + i) }).collect();
        let w = Workload {
            source: Source::Items { items: Arc::new(items), random: true, specials: 1 },
            context: Some(155),
            ..Workload::ids(7, 1, 1, 1)
        };
        let mut s = Scratch::default();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..200 {
            let r = w.get(1, i, &mut s);
            let Prompt::Text(t) = r.prompt else { panic!() };
            let k: u32 = t[1..].parse().unwrap();
            assert_eq!(r.sent_tokens, Some(101));
            assert_eq!(r.max_tokens, (50 + k).min(54), "{t}");
            seen.insert(k);
        }
        assert_eq!(seen.len(), 10);
    }
}
