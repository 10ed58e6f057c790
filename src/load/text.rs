//! Text prompts of an exact token length, built with the model's own tokenizer (`tokenizer.json` of the model
//! folder, read by the `tokenizers` crate: the same ids as Python's). A prompt is a sequence of "words": vocab
//! entries that are one token on their own and stay one token after a space, so n words are n tokens. Each
//! prompt is then counted again with the tokenizer and trimmed or padded until the count is exact; the count
//! sent is recorded with the request, to be checked against the server's `usage.prompt_tokens`.

use super::error::{WordsError, WorkloadError};
use super::lengths::splitmix;
use std::io::Read;
use std::path::Path;
use tokenizers::Tokenizer;

/// `tokenizer.json` files larger than this are refused unread (the largest common ones are ~20 MB).
const MAX_TOKENIZER_BYTES: u64 = 128 << 20;
/// Words kept from the vocabulary: plenty for random text, and a bound on the start-up work.
const MAX_WORDS: usize = 20_000;

pub struct TextMaker {
    tokenizer: Tokenizer,
    words: Vec<String>,
    /// Tokens the tokenizer adds around any text (BOS for Llama): the completions endpoint adds them too.
    specials: u32,
}

impl std::fmt::Debug for TextMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextMaker({} words, {} special)", self.words.len(), self.specials)
    }
}

/// Reads a model folder's `tokenizer.json` of at most `MAX_TOKENIZER_BYTES`, naming it in any error.
fn read_tokenizer(path: &Path) -> Result<Vec<u8>, WorkloadError> {
    let name = || path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| WorkloadError::TokenizerRead { path: name(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKENIZER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| WorkloadError::TokenizerRead { path: name(), source })?;
    if bytes.len() as u64 > MAX_TOKENIZER_BYTES {
        return Err(WorkloadError::TokenizerTooLarge { path: name(), limit_mib: MAX_TOKENIZER_BYTES >> 20 });
    }
    Ok(bytes)
}

/// Parses a model folder's `tokenizer.json`.
fn parse_tokenizer(path: &Path) -> Result<Tokenizer, WorkloadError> {
    let bytes = read_tokenizer(path)?;
    Tokenizer::from_bytes(&bytes)
        .map_err(|source| WorkloadError::TokenizerParse { path: path.display().to_string(), source })
}

/// Parses a model folder's `tokenizer.json`, so a corrupt one is found before its server starts.
pub fn check_tokenizer(model_dir: &Path) -> Result<(), WorkloadError> {
    parse_tokenizer(&model_dir.join("tokenizer.json")).map(drop)
}

impl TextMaker {
    /// The tokenizer of a model folder, and its words.
    pub fn load(model_dir: &Path) -> Result<TextMaker, WorkloadError> {
        let path = model_dir.join("tokenizer.json");
        TextMaker::new(parse_tokenizer(&path)?)
            .map_err(|source| WorkloadError::TokenizerWords { path: path.display().to_string(), source })
    }

    pub fn new(tokenizer: Tokenizer) -> Result<TextMaker, WordsError> {
        let count = |specials| tokenizer.encode("a", specials).map(|e| e.len() as u32).map_err(WordsError::Encode);
        let specials = count(true)?.saturating_sub(count(false)?);
        let mut vocab: Vec<(String, u32)> = tokenizer.get_vocab(false).into_iter().collect();
        vocab.sort_unstable_by_key(|(_, id)| *id);
        let mut words = Vec::new();
        for (_, id) in vocab {
            let Ok(text) = tokenizer.decode(&[id], true) else { continue };
            let word = text.trim();
            let plain = (2..=12).contains(&word.len()) && word.bytes().all(|b| b.is_ascii_alphanumeric());
            if plain
                && let Ok(enc) = tokenizer.encode(format!(" {word}"), false)
                && enc.get_ids() == [id]
            {
                words.push(word.to_owned());
                if words.len() == MAX_WORDS {
                    break;
                }
            }
        }
        if words.len() < 16 {
            return Err(WordsError::TooFewWords(words.len()));
        }
        Ok(TextMaker { tokenizer, words, specials })
    }

    /// Tokens the tokenizer adds to any text (BOS for Llama).
    pub fn specials(&self) -> u32 {
        self.specials
    }

    /// The `i`th word (modulo the word count): one token on its own and after a space.
    pub fn word(&self, i: u64) -> &str {
        &self.words[(i % self.words.len() as u64) as usize]
    }

    /// The token ids of `text` without special tokens (a rendered chat prompt carries its own).
    pub fn ids(&self, text: &str) -> Option<Vec<u32>> {
        self.tokenizer.encode(text, false).ok().map(|e| e.get_ids().to_vec())
    }

    /// Tokens of `text` as the server counts them: with the tokenizer's special tokens when `specials`.
    pub fn count(&self, text: &str, specials: bool) -> Option<u32> {
        self.tokenizer.encode(text, specials).ok().map(|e| e.len() as u32)
    }

    /// Text of `len` tokens (counting special tokens when `specials`); the first `shared` words come from
    /// `shared_state` (the same for every request), the rest from `own`. Returns the text and its count,
    /// which is `len` unless the tokenizer merges across words in a way no trim can fix.
    pub fn text(&self, len: u32, shared: u32, shared_state: u64, own: u64, specials: bool) -> (String, u32) {
        let extra = if specials { self.specials } else { 0 };
        let target = len.saturating_sub(extra).max(1);
        // The special tokens (BOS) open every prompt: they are part of the shared prefix.
        let shared = shared.saturating_sub(extra);
        let (mut shared_state, mut own) = (shared_state, own);
        let mut next = |i: u32| {
            let s = if i < shared { &mut shared_state } else { &mut own };
            &self.words[(splitmix(s) % self.words.len() as u64) as usize]
        };
        let mut words: Vec<&String> = (0..target).map(&mut next).collect();
        let mut text = join(&words);
        let mut counted = self.count(&text, specials).unwrap_or(0);
        for _ in 0..8 {
            if counted == len {
                break;
            }
            if counted > len {
                let keep = words.len().saturating_sub((counted - len) as usize).max(1);
                words.truncate(keep);
            } else {
                let n = words.len() as u32;
                words.extend((n..n + (len - counted)).map(&mut next));
            }
            text = join(&words);
            counted = self.count(&text, specials).unwrap_or(0);
        }
        (text, counted)
    }
}

fn join(words: &[&String]) -> String {
    let mut s = String::with_capacity(words.iter().map(|w| w.len() + 1).sum());
    for w in words {
        s.push(' ');
        s.push_str(w);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Option<TextMaker> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-llama");
        dir.join("tokenizer.json").exists().then(|| TextMaker::load(&dir).unwrap())
    }

    #[test]
    fn word_level_text_is_exact() {
        use tokenizers::models::wordlevel::WordLevel;
        use tokenizers::pre_tokenizers::whitespace::WhitespaceSplit;
        let vocab = (0..100).map(|i| (format!("w{i}"), i)).collect();
        let model = WordLevel::builder().vocab(vocab).unk_token("w0".into()).build().unwrap();
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(WhitespaceSplit));
        let maker = TextMaker::new(tok).unwrap();
        for len in [1, 7, 300] {
            let (text, n) = maker.text(len, 0, 1, 2, true);
            assert_eq!((n, maker.count(&text, true)), (len, Some(len)), "{text}");
        }
    }

    #[test]
    fn tiny_llama_text_has_the_asked_length_and_shares_its_prefix() {
        let Some(maker) = tiny() else { return };
        // Its tokenizer adds no BOS (as Python's `AutoTokenizer` on the same folder).
        assert_eq!(maker.specials, 0);
        assert!(maker.words.len() > 500, "{}", maker.words.len());
        for (i, len) in [2u32, 16, 128, 1000].into_iter().enumerate() {
            let (text, n) = maker.text(len, 0, 9, i as u64, true);
            assert_eq!(n, len, "{text}");
            assert_eq!(maker.count(&text, true), Some(len));
        }
        let (a, _) = maker.text(64, 32, 5, 1, true);
        let (b, _) = maker.text(64, 32, 5, 2, true);
        let (wa, wb): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
        assert_eq!(wa[..32], wb[..32]);
        assert_ne!(wa[32..], wb[32..]);
    }
}
