//! The saved list ("save for later", kept in the catalog) and the history view (what a user
//! was shown, liked, opened, skipped or disliked, from the remembered state of
//! `app::users`, newest first).
//!
//! The feed never shows an item twice; saving is how a user keeps one to come back to.

use serde::Serialize;

use super::views::{ItemView, ItemViews};
use super::{AppError, Forage};
use crate::taste::Marks;

/// Most entries on one history or saved-list page.
pub const HISTORY_LIMIT_MAX: usize = 200;

/// A saved item.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SavedItem {
    #[serde(flatten)]
    pub item: ItemView,
    pub saved_ms: i64,
}

/// One item of the history view.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub item: ItemView,
    #[serde(flatten)]
    pub marks: Marks,
    pub saved: bool,
}

/// A page of the history view.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct HistoryPage {
    /// Items in the user's history (shown or given feedback).
    pub total: usize,
    /// Items shown to the user.
    pub shown: usize,
    pub entries: Vec<HistoryEntry>,
}

fn check_limit(limit: usize) -> Result<(), AppError> {
    if !(1..=HISTORY_LIMIT_MAX).contains(&limit) {
        return Err(AppError::invalid("limit", format!("{limit} is not in 1..={HISTORY_LIMIT_MAX}")));
    }
    Ok(())
}

impl Forage {
    /// Saves an item for later; returns it.
    pub fn save(&self, user: Option<&str>, item: &str) -> Result<SavedItem, AppError> {
        let user = self.user_or_default(user)?;
        let catalog = self.catalog();
        let found = catalog.get_item(item)?.ok_or_else(|| AppError::NotFound(format!("no item `{item}`")))?;
        catalog.save_item(user, item, super::now_ms())?;
        let saved_ms = catalog.saved_items(user, 0, crate::catalog::SAVED_PER_USER_MAX)?;
        let saved_ms = saved_ms.into_iter().find(|(id, _)| id == item).map_or(0, |(_, ms)| ms);
        Ok(SavedItem { item: ItemViews::new(&catalog).view(found)?, saved_ms })
    }

    /// Takes an item off the saved list (404 when it was not on it).
    pub fn unsave(&self, user: Option<&str>, item: &str) -> Result<(), AppError> {
        let user = self.user_or_default(user)?;
        if !self.catalog().unsave_item(user, item)? {
            return Err(AppError::NotFound(format!("`{item}` is not saved")));
        }
        Ok(())
    }

    /// The saved list, newest first.
    pub fn saved(&self, user: Option<&str>, offset: usize, limit: usize) -> Result<Vec<SavedItem>, AppError> {
        let user = self.user_or_default(user)?;
        check_limit(limit)?;
        let catalog = self.catalog();
        let rows = catalog.saved_items(user, offset, limit)?;
        let mut views = ItemViews::new(&catalog);
        let mut out = Vec::with_capacity(rows.len());
        for (id, saved_ms) in rows {
            if let Some(item) = catalog.get_item(&id)? {
                out.push(SavedItem { item: views.view(item)?, saved_ms });
            }
        }
        Ok(out)
    }

    /// The history view, newest first (items that left the catalog are left out).
    pub fn history(&self, user: Option<&str>, offset: usize, limit: usize) -> Result<HistoryPage, AppError> {
        let user = self.user_or_default(user)?.to_owned();
        check_limit(limit)?;
        let (rows, total, shown) = {
            let entry = self.users.get(&user, self.store.as_ref())?;
            let entry = super::users::lock(&entry);
            (entry.state.history(offset, limit), entry.state.history_len(), entry.state.shown_count())
        };
        let catalog = self.catalog();
        let mut views = ItemViews::new(&catalog);
        let mut entries = Vec::with_capacity(rows.len());
        for (id, marks) in rows {
            if let Some(item) = catalog.get_item(&id)? {
                let saved = catalog.is_saved(&user, &id)?;
                entries.push(HistoryEntry { item: views.view(item)?, marks, saved });
            }
        }
        Ok(HistoryPage { total, shown, entries })
    }
}
