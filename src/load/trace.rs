//! Replayed prompts of a trace window: token ids built so that prefix sharing is exact by construction.
//! Each block's tokens after the first are seeded by its id (and the point, so repeats do not reuse each
//! other's cache); its first token is its rank among the distinct blocks that follow the same prefix in the
//! window (see `record::tracefile`), so blocks after a common prefix differ from their first token on. A shorter
//! last block is the start of the same seeded block: two requests with equal ids share min(length) of it.

use super::lengths::splitmix;
use crate::record::tracefile::{TRACE_BLOCK, Window};

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
