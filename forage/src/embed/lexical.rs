//! The lexical fallback embedder: a hashed bag of lower-cased words and character trigrams
//! projected into [`EMBEDDING_DIMS`] dimensions with signed feature hashing, then
//! L2-normalised.
//!
//! It captures word overlap only (no meaning), and exists so the app runs, clearly announced,
//! when the sentence model is not installed. Invariants: the output is a pure function of the
//! text (FNV-1a hashing, no process-random seed, so vectors are stable across runs and
//! builds); every vector is unit length except the zero vector for a text without letters or
//! digits.

use super::{EMBEDDING_DIMS, EmbedError, Embedder, clip_text, l2_normalize};

/// Name reported by [`LexicalEmbedder`].
pub const LEXICAL_NAME: &str = "lexical";

/// Length of the character n-grams hashed besides whole words.
const CHAR_NGRAM_CHARS: usize = 3;

/// Weight of a whole-word feature relative to one character n-gram.
const WORD_WEIGHT: f32 = 2.0;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The hashed bag-of-words fallback embedder.
#[derive(Debug, Clone, Default)]
pub struct LexicalEmbedder;

impl LexicalEmbedder {
    /// Creates the embedder (it has no state).
    pub fn new() -> Self {
        Self
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0.0f32; EMBEDDING_DIMS];
        let lower = clip_text(text).to_lowercase();
        for word in lower.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
            add_feature(&mut v, b'w', word.as_bytes(), WORD_WEIGHT);
            // Pad so that prefixes and suffixes make their own n-grams.
            let padded: Vec<char> = std::iter::once(' ').chain(word.chars()).chain([' ']).collect();
            for gram in padded.windows(CHAR_NGRAM_CHARS) {
                let gram: String = gram.iter().collect();
                add_feature(&mut v, b'c', gram.as_bytes(), 1.0);
            }
        }
        l2_normalize(&mut v);
        v
    }
}

impl Embedder for LexicalEmbedder {
    fn dims(&self) -> usize {
        EMBEDDING_DIMS
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }

    fn name(&self) -> &str {
        LEXICAL_NAME
    }
}

/// Adds one hashed feature: the hash picks the slot and, with its top bit, the sign (signed
/// hashing keeps collisions from biasing similarities upwards).
fn add_feature(v: &mut [f32], kind: u8, bytes: &[u8], weight: f32) {
    let hash = fnv1a(kind, bytes);
    // The modulus is below EMBEDDING_DIMS, so the cast back to usize cannot truncate.
    let slot = (hash % EMBEDDING_DIMS as u64) as usize;
    let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
    v[slot] += sign * weight;
}

fn fnv1a(kind: u8, bytes: &[u8]) -> u64 {
    let mut hash = FNV_OFFSET;
    for &b in std::iter::once(&kind).chain(bytes) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_and_unit_length() {
        let e = LexicalEmbedder::new();
        let texts = ["Rust ownership explained", "A recipe for sourdough bread", "ünïcödé wörds"];
        let first = e.embed(&texts).unwrap();
        let second = e.embed(&texts).unwrap();
        assert_eq!(first, second);
        for v in &first {
            assert_eq!(v.len(), EMBEDDING_DIMS);
            let norm = dot(v, v).sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
    }

    #[test]
    fn hashing_is_pinned() {
        // Stored vectors must stay comparable across builds: pin the hash function.
        assert_eq!(fnv1a(b'w', b""), 0xaf63_ea4c_8602_0456);
        let v = LexicalEmbedder::new().embed_one("rust");
        let nonzero = v.iter().filter(|x| **x != 0.0).count();
        assert!((3..=5).contains(&nonzero), "one word and up to four trigrams: {nonzero}");
    }

    #[test]
    fn overlap_scores_higher_than_no_overlap() {
        let e = LexicalEmbedder::new();
        let a = e.embed_one("rust async runtime internals");
        let b = e.embed_one("the async runtime of rust");
        let c = e.embed_one("baking sourdough bread at home");
        assert!(dot(&a, &b) > dot(&a, &c) + 0.2, "{} vs {}", dot(&a, &b), dot(&a, &c));
    }

    #[test]
    fn empty_text_gives_zero_vector() {
        let v = LexicalEmbedder::new().embed_one("  ... !!");
        assert_eq!(v.len(), EMBEDDING_DIMS);
        assert!(v.iter().all(|x| *x == 0.0));
    }
}
