//! Replayed prompts of a trace window: token ids built so that prefix sharing is exact by construction.
//! Each block's tokens after the first are seeded by its id (and the point, so repeats do not reuse each
//! other's cache); its first token is its rank among the distinct blocks that follow the same prefix in the
//! window (see `record::tracefile`), so blocks after a common prefix differ from their first token on. A shorter
//! last block is the start of the same seeded block: two requests with equal ids share min(length) of it.

use super::error::ChatTemplateError;
use super::lengths::splitmix;
use super::text::TextMaker;
use crate::record::trace::PrefixBound;
use crate::record::tracefile::{BLOCK_SIZES, TRACE_BLOCK, Window};
use std::hash::{Hash, Hasher};

/// Ids below this are left out: the special tokens of most vocabularies (as for random prompts).
const FIRST_ID: u64 = 16;

/// The token ids of request `index`'s prompt: each block's rank, then ids seeded by (seed, salt, block id)
/// below `vocab`. The salt (the point and attempt) keeps repeats from reusing each other's cache.
pub fn prompt(w: &Window, index: usize, seed: u64, salt: u64, vocab: u64, out: &mut Vec<u32>) {
    out.clear();
    let Some(r) = w.requests.get(index % w.requests.len().max(1)) else { return };
    let span = vocab.saturating_sub(FIRST_ID).max(1);
    let base = seed ^ salt.rotate_left(17) ^ 0x7AC3_0000;
    for (i, b) in r.blocks.iter().enumerate() {
        let len = r.input.saturating_sub(i as u32 * TRACE_BLOCK).min(TRACE_BLOCK);
        out.push((FIRST_ID + u64::from(b.rank) % span) as u32);
        let mut state = base ^ b.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for _ in 1..len {
            out.push((FIRST_ID + splitmix(&mut state) % span) as u32);
        }
    }
}

/// The chat endpoint's text of request `index`: one word of the model's tokenizer per token of the trace,
/// each word one token on its own and after a space. As for ids, a block's first word is its rank and the
/// rest are seeded by (seed, salt, block id), so equal leading ids share exactly those words.
pub fn text(w: &Window, index: usize, seed: u64, salt: u64, maker: &TextMaker, out: &mut String) {
    out.clear();
    let Some(r) = w.requests.get(index % w.requests.len().max(1)) else { return };
    let base = seed ^ salt.rotate_left(17) ^ 0x7AC3_7E47;
    for (i, b) in r.blocks.iter().enumerate() {
        let len = r.input.saturating_sub(i as u32 * TRACE_BLOCK).min(TRACE_BLOCK);
        let mut state = base ^ b.id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for k in 0..len {
            let pick = if k == 0 { u64::from(b.rank) } else { splitmix(&mut state) };
            out.push(' ');
            out.push_str(maker.word(pick));
        }
    }
}

/// A chat template (Hugging Face's Jinja dialect), rendered for one user message as the server does.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: String, bos: String, eos: String) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = minijinja::Environment::new();
        env.set_unknown_method_callback(minijinja_pycompat);
        env.add_function("raise_exception", |m: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, m))
        });
        env.add_template_owned("chat", source).map_err(ChatTemplateError::Parse)?;
        Ok(ChatTemplate { env, bos, eos })
    }

    /// The server's chat template: the file of `--chat-template` in its command line, else the model folder's
    /// `tokenizer_config.json` `chat_template`; None when neither is there (an external server's own).
    pub fn find(argv: &[String], model_dir: &std::path::Path) -> Result<Option<ChatTemplate>, ChatTemplateError> {
        // A model folder without the file (or with one that does not parse) has no template of its own.
        let path = model_dir.join("tokenizer_config.json");
        let config = path.is_file().then(|| read_capped(&path, 64, "tokenizer config")).transpose()?;
        let config: serde_json::Value =
            config.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null);
        let token = |k: &str| {
            let v = &config[k];
            v.as_str().or_else(|| v["content"].as_str()).unwrap_or_default().to_owned()
        };
        let flag = argv.iter().position(|a| a == "--chat-template").and_then(|i| argv.get(i + 1)).cloned();
        let flag = flag.or_else(|| argv.iter().find_map(|a| a.strip_prefix("--chat-template=").map(str::to_owned)));
        let source = match flag {
            Some(path) => {
                let bytes = read_capped(std::path::Path::new(&path), 1, "chat template")?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => match config["chat_template"].as_str() {
                Some(t) => t.to_owned(),
                None => return Ok(None),
            },
        };
        ChatTemplate::new(source, token("bos_token"), token("eos_token")).map(Some)
    }

    /// The prompt the server builds from one user message (with the generation prompt).
    pub fn render(&self, content: &str) -> Result<String, ChatTemplateError> {
        let t = self.env.get_template("chat").map_err(ChatTemplateError::Render)?;
        t.render(minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => content }],
            add_generation_prompt => true,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(ChatTemplateError::Render)
    }
}

/// A file the chat template comes from, read whole but never past `cap_mib` MiB.
fn read_capped(path: &std::path::Path, cap_mib: u64, what: &'static str) -> Result<Vec<u8>, ChatTemplateError> {
    use crate::record::io::CappedError;
    crate::record::io::read_capped(path, cap_mib << 20).map_err(|e| ChatTemplateError::Read {
        what,
        path: path.display().to_string(),
        why: match e {
            CappedError::Io(e) => e.to_string(),
            CappedError::NotAFile => "not a regular file".into(),
            CappedError::TooLong => format!("longer than {cap_mib} MiB"),
        },
        cap_mib,
    })
}

/// Python string methods templates call (`strip`, `lower`, ...); none: minijinja's own error.
fn minijinja_pycompat(
    _: &minijinja::State,
    value: &minijinja::Value,
    method: &str,
    _: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    let unknown = || minijinja::Error::from(minijinja::ErrorKind::UnknownMethod);
    let s = value.as_str().ok_or_else(unknown)?;
    Ok(minijinja::Value::from(match method {
        "strip" => s.trim().to_owned(),
        "lstrip" => s.trim_start().to_owned(),
        "rstrip" => s.trim_end().to_owned(),
        "lower" => s.to_lowercase(),
        "upper" => s.to_uppercase(),
        _ => return Err(unknown()),
    }))
}

/// Counts the prefix-cache bound on prompts' token ids, added in order: an unbounded cache, empty at the
/// start, holding every whole block of every earlier prompt; a prompt reuses its leading blocks found there,
/// never its last token (vLLM always computes it).
#[derive(Default)]
pub struct SentBound {
    seen: [std::collections::HashSet<u64>; BLOCK_SIZES.len()],
    hit: [u64; BLOCK_SIZES.len()],
    total: u64,
}

impl SentBound {
    pub fn add(&mut self, ids: &[u32]) {
        for ((seen, hit), b) in self.seen.iter_mut().zip(&mut self.hit).zip(BLOCK_SIZES) {
            let usable = ids.len().saturating_sub(1) / b as usize;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            let mut matching = true;
            for (k, block) in ids.chunks_exact(b as usize).enumerate() {
                block.hash(&mut h);
                // Each block's key is the hash of its whole prefix, as vLLM chains its block hashes.
                let key = h.finish();
                if matching && k < usable && seen.contains(&key) {
                    *hit += u64::from(b);
                } else {
                    matching = false;
                }
                seen.insert(key);
            }
        }
        self.total += ids.len() as u64;
    }

    pub fn bounds(&self) -> Vec<PrefixBound> {
        let at = |(b, hit): (u32, &u64)| PrefixBound { block_size: b, hit_tokens: *hit, prompt_tokens: self.total };
        BLOCK_SIZES.into_iter().zip(&self.hit).map(at).collect()
    }
}

/// The bound on the prompts a phase of salt `salt` sends on the chat endpoint: each request's text, rendered
/// by `template` when the server's is known (else the message alone), then tokenized.
pub fn sent_bounds(
    w: &Window,
    seed: u64,
    salt: u64,
    maker: &TextMaker,
    template: Option<&ChatTemplate>,
) -> Result<Vec<PrefixBound>, ChatTemplateError> {
    let (mut bound, mut content) = (SentBound::default(), String::new());
    for i in 0..w.requests.len() {
        text(w, i, seed, salt, maker, &mut content);
        let rendered = match template {
            Some(t) => t.render(&content)?,
            None => content.clone(),
        };
        let ids = maker.ids(&rendered).ok_or(ChatTemplateError::Encode)?;
        bound.add(&ids);
    }
    Ok(bound.bounds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::trace::TraceFormat;
    use crate::record::tracefile::tests::{file, line};
    use crate::record::tracefile::{Select, VLLM_BLOCK, read};

    fn lcp(a: &[u32], b: &[u32]) -> u32 {
        a.iter().zip(b).take_while(|(x, y)| x == y).count() as u32
    }

    #[test]
    fn shared_prefixes_are_exactly_what_the_ids_say() {
        let text = [
            line(0, 1200, 10, &[1, 2, 3]),
            line(5, 1100, 10, &[1, 2, 4]),
            line(9, 700, 10, &[1, 2]),
            line(9, 600, 10, &[1, 2]),
            line(12, 300, 10, &[5]),
            line(20, 2000, 10, &[1]),
        ]
        .concat();
        let f = file(&text);
        let w = read(f.path(), TraceFormat::Mooncake, &Select::default()).unwrap();
        assert_eq!(w.requests.len(), 6);
        assert_eq!(w.requests[5].blocks.len(), 4, "tokens beyond the ids get the request's own blocks");
        let prompts: Vec<Vec<u32>> = (0..6)
            .map(|i| {
                let mut v = Vec::new();
                prompt(&w, i, 7, 3, 1000, &mut v);
                v
            })
            .collect();
        for (i, p) in prompts.iter().enumerate() {
            assert_eq!(p.len() as u32, w.requests[i].input);
            for (j, q) in prompts.iter().enumerate().filter(|(j, _)| *j != i) {
                assert_eq!(lcp(p, q), w.shared_by_ids(i, j), "requests {i} and {j}");
            }
        }
        assert_eq!(w.shared_by_ids(0, 1), 1024);
        assert_eq!(w.shared_by_ids(2, 3), 600, "a shorter last block: min(length)");
        assert_eq!(w.shared_by_ids(0, 5), 512);
        // Another salt: the same first tokens, other blocks after them.
        let mut other = Vec::new();
        prompt(&w, 0, 7, 4, 1000, &mut other);
        assert!(lcp(&other, &prompts[0]) < VLLM_BLOCK);
    }
}
