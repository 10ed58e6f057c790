//! Prompts sampled from a dataset file while streaming it: a seeded reservoir sample (Algorithm R) of
//! `samples` entries, so a file of hundreds of MB is read once, in bounded memory (one entry at a time plus the
//! reservoir), and the same seed keeps the same entries.

use super::error::WorkloadError;
use super::lengths::splitmix;
use super::text::TextMaker;
use crate::record::plan::DatasetFormat;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Dataset files larger than this are refused (ShareGPT's common file is ~670 MB); far above the spec's cap.
pub const MAX_DATASET_BYTES: u64 = 4 << 30;
/// A JSONL line longer than this is an error naming the line.
const MAX_LINE: usize = 16 << 20;

/// One prompt of a dataset and the output length it asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub prompt: String,
    pub output_tokens: u32,
}

/// What sampling a dataset kept and saw.
#[derive(Debug)]
pub struct Sampled {
    pub entries: Vec<Entry>,
    /// Usable entries in the file.
    pub seen: u64,
    /// Entries left out: no prompt or reply (ShareGPT), or an empty prompt.
    pub skipped: u64,
}

/// A seeded reservoir of raw items.
struct Reservoir<T> {
    items: Vec<T>,
    cap: usize,
    seen: u64,
    state: u64,
}

impl<T> Reservoir<T> {
    fn new(cap: usize, seed: u64) -> Self {
        Reservoir { items: Vec::new(), cap, seen: 0, state: seed ^ 0x0DA7_A5E7 }
    }
    fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(item);
        } else {
            let j = splitmix(&mut self.state) % self.seen;
            if (j as usize) < self.cap {
                self.items[j as usize] = item;
            }
        }
    }
}

/// Samples `samples` entries of a dataset file. ShareGPT replies are measured with `tokens` (the model's
/// tokenizer), which they therefore need.
pub fn sample(
    path: &Path,
    format: DatasetFormat,
    samples: u32,
    seed: u64,
    tokens: Option<&TextMaker>,
) -> Result<Sampled, WorkloadError> {
    let name = || path.display().to_string();
    let read = |source| WorkloadError::DatasetRead { path: name(), source };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size == 0 {
        return Err(WorkloadError::DatasetEmpty { path: name() });
    }
    if size > MAX_DATASET_BYTES {
        return Err(WorkloadError::DatasetTooLarge {
            path: name(),
            mib: size >> 20,
            limit_mib: MAX_DATASET_BYTES >> 20,
        });
    }
    let file = std::fs::File::open(path).map_err(read)?;
    let reader = BufReader::with_capacity(1 << 20, file.take(MAX_DATASET_BYTES));
    let (entries, seen, skipped) = match format {
        DatasetFormat::Jsonl => {
            let mut r = Reservoir::new(samples as usize, seed);
            let skipped = jsonl(reader, &mut r).map_err(|e| e.at(name()))?;
            (r.items, r.seen, skipped)
        }
        DatasetFormat::Sharegpt => {
            let Some(tokens) = tokens else {
                return Err(WorkloadError::ShareGptNeedsTokenizer { path: name() });
            };
            // Conversations are sampled first; only the sampled replies are tokenized.
            let mut r = Reservoir::new(samples as usize, seed);
            let skipped =
                sharegpt(reader, &mut r).map_err(|source| WorkloadError::ShareGpt { path: name(), source })?;
            let entries = r
                .items
                .into_iter()
                .map(|(prompt, reply)| Entry { output_tokens: tokens.count(&reply, false).unwrap_or(1).max(1), prompt })
                .collect();
            (entries, r.seen, skipped)
        }
    };
    if entries.is_empty() {
        return Err(WorkloadError::NoUsableEntry { path: name(), skipped });
    }
    Ok(Sampled { entries, seen, skipped })
}

/// A JSONL problem before the file's name is put to it.
#[derive(Debug)]
enum LineError {
    Io(std::io::Error),
    TooLong { line: u64 },
    Json { line: u64, source: serde_json::Error },
}

impl LineError {
    fn at(self, path: String) -> WorkloadError {
        match self {
            LineError::Io(source) => WorkloadError::DatasetRead { path, source },
            LineError::TooLong { line } => WorkloadError::LineTooLong { path, line, limit_mib: MAX_LINE >> 20 },
            LineError::Json { line, source } => {
                WorkloadError::JsonlLine { path, line, column: source.column(), source }
            }
        }
    }
}

#[derive(Deserialize)]
struct JsonlEntry {
    prompt: String,
    output_tokens: u32,
}

/// `{"prompt": ..., "output_tokens": N}` per line; blank lines are skipped.
fn jsonl(mut reader: impl BufRead, out: &mut Reservoir<Entry>) -> Result<u64, LineError> {
    let (mut line, mut n, mut skipped) = (Vec::new(), 0u64, 0u64);
    loop {
        line.clear();
        n += 1;
        let read = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line).map_err(LineError::Io)?;
        if read == 0 {
            return Ok(skipped);
        }
        if line.len() > MAX_LINE {
            return Err(LineError::TooLong { line: n });
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let e: JsonlEntry = serde_json::from_slice(&line).map_err(|source| LineError::Json { line: n, source })?;
        if e.prompt.trim().is_empty() || e.output_tokens == 0 {
            skipped += 1;
            continue;
        }
        out.offer(Entry { prompt: e.prompt, output_tokens: e.output_tokens });
    }
}

#[derive(Deserialize)]
struct Conversation {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

/// The first human turn and the reply after it.
fn prompt_and_reply(c: Conversation) -> Option<(String, String)> {
    let i = c.conversations.iter().position(|t| matches!(t.from.as_str(), "human" | "user"))?;
    let mut turns = c.conversations.into_iter().skip(i);
    let prompt = turns.next()?.value;
    let reply = turns.next().filter(|t| matches!(t.from.as_str(), "gpt" | "assistant" | "model" | "chatgpt"))?;
    (!prompt.trim().is_empty() && !reply.value.trim().is_empty()).then_some((prompt, reply.value))
}

/// A JSON array of conversations, read element by element (never the whole array at once).
fn sharegpt(reader: impl Read, out: &mut Reservoir<(String, String)>) -> Result<u64, serde_json::Error> {
    struct Each<'a> {
        out: &'a mut Reservoir<(String, String)>,
        skipped: u64,
    }
    impl<'de> Visitor<'de> for &mut Each<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array of {\"conversations\": [{\"from\": ..., \"value\": ...}]} objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            // Each element is parsed on its own: one of another shape (a number, a turn without a value) is
            // left out and counted rather than rejecting a file of hundreds of MB for one odd record.
            while let Some(v) = seq.next_element::<serde_json::Value>()? {
                match Conversation::deserialize(v).ok().and_then(prompt_and_reply) {
                    Some(pair) => self.out.offer(pair),
                    None => self.skipped += 1,
                }
            }
            Ok(())
        }
    }
    let mut each = Each { out, skipped: 0 };
    let mut de = serde_json::Deserializer::from_reader(reader);
    de.deserialize_seq(&mut each)?;
    // Nothing but whitespace may follow the array.
    de.end()?;
    Ok(each.skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn jsonl_is_sampled_with_the_seed() {
        let text: String =
            (0..1000).map(|i| format!("{{\"prompt\": \"p{i}\", \"output_tokens\": {}}}\n", i + 1)).collect();
        let f = file(&text);
        let a = sample(f.path(), DatasetFormat::Jsonl, 50, 1, None).unwrap();
        assert_eq!((a.entries.len(), a.seen, a.skipped), (50, 1000, 0));
        assert_eq!(a.entries, sample(f.path(), DatasetFormat::Jsonl, 50, 1, None).unwrap().entries);
        assert_ne!(a.entries, sample(f.path(), DatasetFormat::Jsonl, 50, 2, None).unwrap().entries);
        // A reservoir sample, not the file's head: later lines are as likely as early ones.
        let late = a.entries.iter().filter(|e| e.output_tokens > 500).count();
        assert!((10..=40).contains(&late), "{late} of 50 from the second half");
        let all = sample(f.path(), DatasetFormat::Jsonl, 5000, 1, None).unwrap();
        assert_eq!(all.entries.len(), 1000);
    }

    #[test]
    fn jsonl_errors_name_the_line_and_the_shape() {
        let f = file("{\"prompt\": \"a\", \"output_tokens\": 3}\n\n{\"prompt\": \"b\"}\n");
        let e = sample(f.path(), DatasetFormat::Jsonl, 5, 1, None).unwrap_err();
        assert!(matches!(e, WorkloadError::JsonlLine { line: 3, .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("line 3") && e.contains("output_tokens"), "{e}");
    }

    #[test]
    fn sharegpt_takes_the_first_human_turn_and_the_reply_length() {
        use tokenizers::Tokenizer;
        use tokenizers::models::wordlevel::WordLevel;
        use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
        let vocab = (0..100).map(|i| (format!("w{i}"), i)).collect();
        let mut tok = Tokenizer::new(WordLevel::builder().vocab(vocab).unk_token("w0".into()).build().unwrap());
        tok.with_pre_tokenizer(Some(WhitespaceSplit));
        let maker = TextMaker::new(tok).unwrap();
        let f = file(
            r#"[{"id": "a", "conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "w5 w6"},
                {"from": "gpt", "value": "w1 w2 w3"}]},
               {"id": "b", "conversations": [{"from": "human", "value": "only a question"}]},
               {"id": "c", "conversations": []}, null, 7, {"conversations": "no list"},
               {"conversations": [{"from": "human"}, {"from": "gpt", "value": "w1"}]},
               {"id": "d", "conversations": [{"from": "user", "value": "w7"}, {"from": "assistant", "value": "w9"}]}]"#,
        );
        let s = sample(f.path(), DatasetFormat::Sharegpt, 10, 1, Some(&maker)).unwrap();
        assert_eq!((s.seen, s.skipped), (2, 6));
        let mut got: Vec<(String, u32)> = s.entries.into_iter().map(|e| (e.prompt, e.output_tokens)).collect();
        got.sort();
        assert_eq!(got, [("w5 w6".to_owned(), 3), ("w7".to_owned(), 1)]);
        let e = sample(f.path(), DatasetFormat::Sharegpt, 10, 1, None).unwrap_err().to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        let bad = file(r#"[{"conversations": [{"from": "human", "value": "x"}]} {"#);
        let e = sample(bad.path(), DatasetFormat::Sharegpt, 10, 1, Some(&maker)).unwrap_err().to_string();
        assert!(e.contains("line 1 column"), "{e}");
    }
}
