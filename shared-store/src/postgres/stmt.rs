//! Statements with fixed SQL and a static query id, so that diesel-async prepares each one
//! once per connection and serves it from its statement cache afterwards (diesel never caches
//! `sql_query`, which would cost every commit a parse and a round trip per statement).
//!
//! A statement is a type implementing [`Sql`]; its text marks each bind with `?`, and the
//! binds are given in the order the marks appear.

use std::marker::PhantomData;

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error as DieselError;
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::QueryResult;

/// One statement's SQL; the implementing type is its identity in the statement cache.
pub(super) trait Sql: 'static {
    /// The text, with `?` where each bind goes (so no `?` operators in it).
    const SQL: &'static str;
}

/// A statement of type `S` with its binds, ready to run with diesel-async's `RunQueryDsl`.
pub(super) struct Stmt<'a, S> {
    binds: Vec<Box<dyn PushBind + Send + Sync + 'a>>,
    sql: PhantomData<fn() -> S>,
}

impl<'a, S: Sql> Stmt<'a, S> {
    pub fn new() -> Self {
        Stmt {
            binds: Vec::new(),
            sql: PhantomData,
        }
    }

    /// Adds the next bind, of SQL type `ST`.
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        Pg: HasSqlType<ST>,
        T: ToSql<ST, Pg> + Send + Sync + 'a,
        ST: 'static,
    {
        self.binds.push(Box::new(Bound::<ST, T> {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

impl<S: Sql> QueryFragment<Pg> for Stmt<'_, S> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let mut parts = S::SQL.split('?');
        out.push_sql(parts.next().unwrap_or_default());
        let mut binds = self.binds.iter();
        for part in parts {
            let bind = binds.next().ok_or_else(|| mismatch(S::SQL))?;
            bind.push(&mut out)?;
            out.push_sql(part);
        }
        match binds.next() {
            Some(_) => Err(mismatch(S::SQL)),
            None => Ok(()),
        }
    }
}

fn mismatch(sql: &str) -> DieselError {
    DieselError::QueryBuilderError(
        format!("bind count does not match the ? marks of: {sql}").into(),
    )
}

impl<S: Sql> QueryId for Stmt<'_, S> {
    type QueryId = S;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<S: Sql> Query for Stmt<'_, S> {
    type SqlType = Untyped;
}

/// A bind that knows its SQL type.
trait PushBind {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Bound<ST, T> {
    value: T,
    sql_type: PhantomData<fn() -> ST>,
}

impl<ST, T> PushBind for Bound<ST, T>
where
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg>,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.value)
    }
}
