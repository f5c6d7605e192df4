//! The candidate index's embedding store: one row of `f32` per item number, in contiguous
//! blocks of [`SLAB_BLOCK_ROWS`] rows, so ranking reads each vector from one cache-friendly
//! run of memory instead of chasing one heap allocation per item.
//!
//! Owns [`VectorSlab`]. Invariants: every row has the slab's one dimension count (fixed by
//! the first vector stored; a vector of another length is refused, so the item counts as
//! not embedded); a row is set at most once (the first vector wins, as in the index); rows
//! never move once written (blocks are fixed-size and appended, so growing the slab copies
//! nothing, which matters at a million items: the whole slab is 1.5 GB at 384 dims).

/// Rows per block: 4,096 rows of 384 `f32` are 6 MiB.
pub const SLAB_BLOCK_ROWS: usize = 4096;

/// Contiguous embedding rows by item number (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct VectorSlab {
    dims: usize,
    blocks: Vec<Box<[f32]>>,
    /// Which rows hold a vector, one bit per item number.
    set: Vec<u64>,
    rows_set: usize,
}

impl VectorSlab {
    /// The dimension count of the rows (0 before the first vector).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Rows that hold a vector.
    pub fn rows_set(&self) -> usize {
        self.rows_set
    }

    /// Stores `vector` as row `n` unless the row is set already; false when it was set or
    /// the vector has another dimension count than the slab.
    pub fn set(&mut self, n: u32, vector: &[f32]) -> bool {
        if vector.is_empty() || (self.dims != 0 && vector.len() != self.dims) || self.is_set(n) {
            return false;
        }
        self.dims = vector.len();
        let n = n as usize;
        let block = n / SLAB_BLOCK_ROWS;
        while self.blocks.len() <= block {
            self.blocks.push(vec![0.0; SLAB_BLOCK_ROWS * self.dims].into_boxed_slice());
        }
        let at = (n % SLAB_BLOCK_ROWS) * self.dims;
        self.blocks[block][at..at + self.dims].copy_from_slice(vector);
        if self.set.len() <= n / 64 {
            self.set.resize(n / 64 + 1, 0);
        }
        self.set[n / 64] |= 1 << (n % 64);
        self.rows_set += 1;
        true
    }

    pub fn is_set(&self, n: u32) -> bool {
        let n = n as usize;
        self.set.get(n / 64).is_some_and(|w| w & (1 << (n % 64)) != 0)
    }

    /// Row `n`, `None` when it holds no vector.
    #[inline]
    pub fn row(&self, n: u32) -> Option<&[f32]> {
        if !self.is_set(n) {
            return None;
        }
        let n = n as usize;
        let at = (n % SLAB_BLOCK_ROWS) * self.dims;
        // `is_set` implies the block exists: `set` allocates it before marking the row.
        self.blocks.get(n / SLAB_BLOCK_ROWS).map(|b| &b[at..at + self.dims])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_set_once_with_one_dimension_count_across_blocks() {
        let mut slab = VectorSlab::default();
        assert!(slab.row(0).is_none());
        let far = (SLAB_BLOCK_ROWS + 3) as u32;
        assert!(slab.set(far, &[1.0, 2.0, 3.0]));
        assert!(slab.set(1, &[4.0, 5.0, 6.0]));
        assert!(!slab.set(1, &[7.0, 8.0, 9.0]), "a row is set once");
        assert!(!slab.set(2, &[1.0, 2.0]), "another dimension count is refused");
        assert!(!slab.set(3, &[]));
        assert_eq!(slab.row(far), Some(&[1.0, 2.0, 3.0][..]));
        assert_eq!(slab.row(1), Some(&[4.0, 5.0, 6.0][..]));
        assert!(slab.row(0).is_none() && slab.row(2).is_none() && slab.row(u32::MAX).is_none());
        assert_eq!((slab.dims(), slab.rows_set(), slab.blocks.len()), (3, 2, 2));
    }
}
