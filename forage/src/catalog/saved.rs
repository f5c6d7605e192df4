//! The users' saved lists ("save for later"): which items each user saved, and when.
//!
//! Owns the SQL of the `saved` table. Invariants: one row per (user, item); an item that
//! leaves the catalog leaves every saved list (`ON DELETE CASCADE`); a user saves at most
//! [`SAVED_PER_USER_MAX`] items (checked on every save).

use rusqlite::{OptionalExtension, params};

use super::{Catalog, CatalogError};

/// Most items one user may have saved.
pub const SAVED_PER_USER_MAX: usize = 10_000;

impl Catalog {
    /// Saves `item_id` for `user` (saving again keeps the first time). Returns whether it
    /// was newly saved.
    pub fn save_item(&self, user: &str, item_id: &str, now_ms: i64) -> Result<bool, CatalogError> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT saved_ms FROM saved WHERE user = ?1 AND item_id = ?2",
                params![user, item_id],
                |r| r.get(0),
            )
            .optional()?;
        if exists.is_some() {
            return Ok(false);
        }
        if self.count_saved(user)? >= SAVED_PER_USER_MAX {
            let reason = format!("at most {SAVED_PER_USER_MAX} saved items; unsave some first");
            return Err(CatalogError::InvalidInput { field: "item", reason });
        }
        self.conn.execute(
            "INSERT INTO saved (user, item_id, saved_ms) VALUES (?1, ?2, ?3)",
            params![user, item_id, now_ms],
        )?;
        Ok(true)
    }

    /// Takes `item_id` off `user`'s saved list; whether it was on it.
    pub fn unsave_item(&self, user: &str, item_id: &str) -> Result<bool, CatalogError> {
        let n = self
            .conn
            .execute("DELETE FROM saved WHERE user = ?1 AND item_id = ?2", params![user, item_id])?;
        Ok(n > 0)
    }

    /// `user`'s saved items, newest first: `(item id, saved at ms)`.
    pub fn saved_items(
        &self,
        user: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT item_id, saved_ms FROM saved WHERE user = ?1 ORDER BY saved_ms DESC, item_id
             LIMIT ?2 OFFSET ?3",
        )?;
        let rows =
            stmt.query_map(params![user, limit as i64, offset as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Is `item_id` on `user`'s saved list?
    pub fn is_saved(&self, user: &str, item_id: &str) -> Result<bool, CatalogError> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT 1 FROM saved WHERE user = ?1 AND item_id = ?2", params![user, item_id], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(found.is_some())
    }

    /// How many items `user` saved.
    pub fn count_saved(&self, user: &str) -> Result<usize, CatalogError> {
        let n: i64 =
            self.conn.query_row("SELECT COUNT(*) FROM saved WHERE user = ?1", [user], |r| r.get(0))?;
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::{Catalog, NewItem};

    #[test]
    fn saved_lists_are_per_user_and_follow_their_items() {
        let mut cat = Catalog::open_in_memory().expect("catalog");
        let src = cat.add_source("file:///a", "file", 60, 0).expect("source");
        let items: Vec<NewItem> = (0..3)
            .map(|i| NewItem { guid: Some(format!("g{i}")), title: format!("t{i}"), ..NewItem::default() })
            .collect();
        cat.upsert_items(src, &items, 1).expect("upsert");
        let ids: Vec<String> = cat.item_stamps().expect("stamps").into_iter().map(|s| s.id).collect();
        assert!(cat.save_item("me", &ids[0], 10).expect("save"));
        assert!(!cat.save_item("me", &ids[0], 20).expect("again"));
        assert!(cat.save_item("me", &ids[1], 30).expect("save"));
        assert!(cat.save_item("you", &ids[2], 40).expect("save"));
        let mine: Vec<(String, i64)> = cat.saved_items("me", 0, 10).expect("list");
        assert_eq!(mine, vec![(ids[1].clone(), 30), (ids[0].clone(), 10)]);
        assert!(cat.is_saved("you", &ids[2]).expect("is") && !cat.is_saved("me", &ids[2]).expect("is"));
        assert!(cat.unsave_item("me", &ids[1]).expect("unsave"));
        assert!(!cat.unsave_item("me", &ids[1]).expect("unsave again"));
        assert!(cat.remove_source(src).expect("remove"));
        assert_eq!(cat.count_saved("you").expect("count"), 0, "removed items leave saved lists");
    }
}
