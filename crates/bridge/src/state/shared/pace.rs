//! The outbound sends' pace (`OUTBOUND_PER_SECOND`), bridge-wide: one counter per
//! second in the store, by the store's clock, counted with one script a send.

use super::SharedState;
use crate::state::StoreError;
use std::num::NonZeroU32;
use std::time::Duration;

impl SharedState {
    /// Counts one send against `per_second`: `None` when it may go now, else how long
    /// to wait before asking again (the rest of the store's second).
    pub(in crate::state) async fn pace(
        &self,
        per_second: NonZeroU32,
    ) -> Result<Option<Duration>, StoreError> {
        let key = self.layout.pace();
        let wait = self
            .call("pace", |mut connection| {
                let mut invocation = self.scripts.pace.prepare_invoke();
                invocation.key(&key).arg(per_second.get());
                async move { invocation.invoke_async::<u64>(&mut connection).await }
            })
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}
