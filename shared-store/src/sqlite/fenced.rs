//! The fenced updates of a batch as fixed SQL fragments with static query ids.
//!
//! diesel never caches the statements of its `UPDATE` builder (a changeset's SQL may vary
//! with its values), so every transition would be parsed and planned again; with these types
//! SQLite prepares each update once per connection and the statement cache serves it after.
//! The SQL uses only bind parameters and `TRUE`/`FALSE`, so it reads the same on Postgres.

use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{QueryResult, RunQueryDsl};

use crate::change::{FiredDelay, Move, TakenRetry, TaskEdit};
use crate::types::RunKey;

/// The task row an edit may move: one task of one run recovery, at the status and attempt
/// the edit expects.
#[derive(Clone, Copy)]
pub(super) struct TaskFence<'a> {
    pub run: &'a RunKey,
    pub edit: &'a TaskEdit<'a>,
}

impl TaskFence<'_> {
    /// ` WHERE` for this task row at the edit's status and attempt.
    fn push_filter<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql(" WHERE run_id = ");
        out.push_bind_param::<Text, str>(&*self.run.run_id)?;
        out.push_sql(" AND recovery = ");
        out.push_bind_param::<Integer, i32>(&self.run.recovery)?;
        out.push_sql(" AND step = ");
        out.push_bind_param::<Text, str>(self.edit.step)?;
        out.push_sql(" AND sequence = ");
        out.push_bind_param::<Text, str>(self.edit.sequence)?;
        out.push_sql(" AND status = ");
        out.push_bind_param::<Text, str>(self.edit.from.as_str())?;
        out.push_sql(" AND attempt = ");
        out.push_bind_param::<Integer, i32>(&self.edit.attempt)
    }
}

/// Gives a fragment a static query id (so it is cached by type) and makes it executable.
macro_rules! cached_statement {
    ($name:ident) => {
        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }

        impl<Conn> RunQueryDsl<Conn> for $name<'_> {}
    };
}

/// `UPDATE tasks SET status, result, error, failure_class, updated_at` as the move says, where the row is
/// still at the status and attempt the edit expects.
pub(super) struct Transition<'a> {
    pub fence: TaskFence<'a>,
    pub moved: Move<'a>,
}

impl QueryFragment<Sqlite> for Transition<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE tasks SET status = ");
        out.push_bind_param::<Text, str>(self.moved.to.as_str())?;
        out.push_sql(", result = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.moved.result)?;
        out.push_sql(", error = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.moved.error)?;
        out.push_sql(", failure_class = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.moved.failure_class)?;
        out.push_sql(", updated_at = ");
        out.push_bind_param::<BigInt, i64>(&self.moved.at)?;
        self.fence.push_filter(&mut out)
    }
}

cached_statement!(Transition);

/// `UPDATE tasks SET pid` where the row is `active` at the same attempt.
pub(super) struct SetPid<'a> {
    pub fence: TaskFence<'a>,
    pub pid: i64,
}

impl QueryFragment<Sqlite> for SetPid<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE tasks SET pid = ");
        out.push_bind_param::<BigInt, i64>(&self.pid)?;
        self.fence.push_filter(&mut out)
    }
}

cached_statement!(SetPid);

/// `UPDATE tasks SET host` where the row is `active` at the same attempt.
pub(super) struct SetHost<'a> {
    pub fence: TaskFence<'a>,
    pub host: &'a str,
}

impl QueryFragment<Sqlite> for SetHost<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE tasks SET host = ");
        out.push_bind_param::<Text, str>(self.host)?;
        self.fence.push_filter(&mut out)
    }
}

cached_statement!(SetHost);

/// `UPDATE delays SET fired = TRUE` where the delay has not fired yet.
pub(super) struct FireDelay<'a> {
    pub run: &'a RunKey,
    pub delay: &'a FiredDelay<'a>,
}

impl QueryFragment<Sqlite> for FireDelay<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE delays SET fired = TRUE WHERE run_id = ");
        out.push_bind_param::<Text, str>(&*self.run.run_id)?;
        out.push_sql(" AND recovery = ");
        out.push_bind_param::<Integer, i32>(&self.run.recovery)?;
        out.push_sql(" AND assoc = ");
        out.push_bind_param::<Integer, i32>(&self.delay.assoc)?;
        out.push_sql(" AND sequence = ");
        out.push_bind_param::<Text, str>(self.delay.sequence)?;
        out.push_sql(" AND fired = FALSE");
        Ok(())
    }
}

cached_statement!(FireDelay);

/// `UPDATE retries SET taken = TRUE` where the retry has not been taken yet.
pub(super) struct TakeRetry<'a> {
    pub run: &'a RunKey,
    pub retry: &'a TakenRetry<'a>,
}

impl QueryFragment<Sqlite> for TakeRetry<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE retries SET taken = TRUE WHERE run_id = ");
        out.push_bind_param::<Text, str>(&*self.run.run_id)?;
        out.push_sql(" AND recovery = ");
        out.push_bind_param::<Integer, i32>(&self.run.recovery)?;
        out.push_sql(" AND step = ");
        out.push_bind_param::<Integer, i32>(&self.retry.step)?;
        out.push_sql(" AND sequence = ");
        out.push_bind_param::<Text, str>(self.retry.sequence)?;
        out.push_sql(" AND number = ");
        out.push_bind_param::<Integer, i32>(&self.retry.number)?;
        out.push_sql(" AND taken = FALSE");
        Ok(())
    }
}

cached_statement!(TakeRetry);
