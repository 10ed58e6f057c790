//! Prompts of an exact token length as seeded random token-id lists. Each request's ids depend on the seed,
//! a salt (the point id) and its index, so prompts differ across requests, points and repeats and prefix
//! caching cannot inflate results — unless `shared_prefix_tokens` asks for a common start on purpose.

/// Ids below this are left out: they are the special tokens of most vocabularies (BOS, EOS, padding).
const FIRST_ID: u64 = 16;

#[derive(Clone, Debug)]
pub enum Prompts {
    Tokens { seed: u64, len: u32, shared_prefix: u32, vocab: u64 },
    Texts(Vec<String>),
}

/// splitmix64: a fast, well-mixed generator; deterministic across platforms.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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

impl Prompts {
    /// Writes the prompt of request `index` into `ids` (reused between requests) and returns it.
    pub fn get<'a>(&'a self, salt: u64, index: u64, ids: &'a mut Vec<u32>) -> Prompt<'a> {
        match self {
            Prompts::Texts(texts) => Prompt::Text(&texts[(index as usize) % texts.len().max(1)]),
            Prompts::Tokens { seed, len, shared_prefix, vocab } => {
                ids.clear();
                let span = vocab.saturating_sub(FIRST_ID).max(1);
                let mut shared = *seed ^ 0x5EED;
                let mut own = seed ^ salt.rotate_left(17) ^ index.wrapping_mul(0xA24B_AED4_963E_E407);
                for i in 0..*len {
                    let state = if i < *shared_prefix { &mut shared } else { &mut own };
                    ids.push((FIRST_ID + splitmix(state) % span) as u32);
                }
                Prompt::Ids(ids)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_length_distinct_and_deterministic() {
        let p = Prompts::Tokens { seed: 7, len: 128, shared_prefix: 0, vocab: 4096 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (Prompt::Ids(x), Prompt::Ids(y)) = (p.get(1, 0, &mut a), p.get(1, 1, &mut b)) else { panic!() };
        assert_eq!(x.len(), 128);
        assert_ne!(x[0], y[0], "distinct from the first token");
        assert!(x.iter().all(|&t| (16..4096).contains(&t)));
        let mut c = Vec::new();
        let Prompt::Ids(z) = p.get(1, 0, &mut c) else { panic!() };
        assert_eq!(x, z);
        let mut d = Vec::new();
        let Prompt::Ids(w) = p.get(2, 0, &mut d) else { panic!() };
        assert_ne!(x, w, "another point, other prompts");
    }

    #[test]
    fn shared_prefix_is_shared() {
        let p = Prompts::Tokens { seed: 7, len: 64, shared_prefix: 32, vocab: 1000 };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (Prompt::Ids(x), Prompt::Ids(y)) = (p.get(1, 0, &mut a), p.get(9, 5, &mut b)) else { panic!() };
        assert_eq!(x[..32], y[..32]);
        assert_ne!(x[32..], y[32..]);
    }
}
