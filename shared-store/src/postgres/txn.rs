//! Ending a transaction on the Postgres connection: commit what was done, roll back what
//! was not, and treat a connection whose rollback failed as lost.

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use super::retry::Failure;

/// Ends the transaction `outcome` was worked in: COMMIT after `Some`, ROLLBACK after `None`
/// (nothing to do) or a failure (including one of BEGIN or of the lock after it).
pub(super) async fn finish<R>(
    conn: &mut AsyncPgConnection,
    outcome: Result<Option<R>, Failure>,
) -> Result<Option<R>, Failure> {
    match outcome {
        Ok(Some(done)) => {
            conn.batch_execute("COMMIT").await?;
            Ok(Some(done))
        }
        Ok(None) => rollback(conn).await.map(|()| None),
        Err(failure) => {
            rollback(conn).await?;
            Err(failure)
        }
    }
}

/// A rollback that fails leaves nothing to trust on this connection but the server's own
/// rollback of a dead session: treat it as lost.
async fn rollback(conn: &mut AsyncPgConnection) -> Result<(), Failure> {
    conn.batch_execute("ROLLBACK")
        .await
        .map_err(|e| Failure::Lost(Box::new(e)))
}
