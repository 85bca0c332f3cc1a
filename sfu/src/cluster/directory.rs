//! The node's side of the live-call directory in Redis: each snapshot of this node's calls
//! writes only the entries that changed since the last one, and drops the calls that ended.

use std::collections::HashMap;

use super::{Store, StoreError};
use crate::directory::LiveCall;

/// What this node's directory in Redis holds, as last written.
#[derive(Debug, Default)]
pub struct CallDirectoryWriter {
    published: HashMap<String, String>,
}

impl CallDirectoryWriter {
    /// Publishes `calls` (all of node `me`'s live calls now). After an error, or when Redis lost
    /// the directory (a restart without persistence), everything is written again.
    pub async fn write(
        &mut self,
        store: &Store,
        me: &str,
        calls: &[LiveCall],
    ) -> Result<(), StoreError> {
        let now: HashMap<String, String> = calls
            .iter()
            .map(|c| {
                (
                    c.call_id.clone(),
                    serde_json::to_string(c).unwrap_or_default(),
                )
            })
            .collect();
        let changed = |published: &HashMap<String, String>| -> Vec<(String, String)> {
            now.iter()
                .filter(|(id, v)| published.get(*id) != Some(*v))
                .map(|(id, v)| (id.clone(), v.clone()))
                .collect()
        };
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        let written = store
            .publish_calls(me, &changed(&self.published), &gone)
            .await;
        let existed = match written {
            Ok(existed) => existed,
            Err(e) => {
                self.published.clear();
                return Err(e);
            }
        };
        // Entries believed written and unchanged were not written now: if the directory was
        // gone, write them.
        if !existed
            && self.published.keys().any(|id| now.contains_key(id))
            && let Err(e) = store
                .publish_calls(me, &changed(&HashMap::new()), &[])
                .await
        {
            self.published.clear();
            return Err(e);
        }
        self.published = now;
        Ok(())
    }
}
