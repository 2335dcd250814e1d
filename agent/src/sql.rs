//! The SQL executors of `edgeact_tools` as the agent's [`Tool`], plus the table-hash answer
//! used to judge INSERT/DELETE/UPDATE tasks.

use crate::Tool;
use anyhow::Context;
use edgeact_tools::sql::{format_hash_answer, MysqlBackend, SqlBackend, SqlLimits, SqliteBackend, TaskTable};

/// Which SQL engine runs the task's table.
#[derive(Clone, Debug)]
pub enum SqlEngine {
    /// Embedded, isolated in-memory SQLite (default).
    Sqlite,
    /// A MySQL/MariaDB server (`mysql://user:pass@host:port`), for evaluation parity.
    Mysql(String),
}

impl SqlEngine {
    pub fn from_flag(mysql: Option<&str>) -> SqlEngine {
        match mysql {
            Some(url) => SqlEngine::Mysql(url.to_string()),
            None => SqlEngine::Sqlite,
        }
    }

    fn backend(&self) -> anyhow::Result<Box<dyn SqlBackend>> {
        Ok(match self {
            SqlEngine::Sqlite => Box::new(SqliteBackend::new(SqlLimits::default())),
            SqlEngine::Mysql(url) => Box::new(
                MysqlBackend::connect(url, SqlLimits::default()).with_context(|| "connecting to the MySQL server")?,
            ),
        })
    }
}

/// One task's table behind a SQL backend.
pub struct SqlTool {
    backend: Box<dyn SqlBackend>,
    table: TaskTable,
}

impl SqlTool {
    /// Creates the task's table (every column `TEXT`) from its JSON description.
    pub fn new(engine: &SqlEngine, table: &serde_json::Value) -> anyhow::Result<SqlTool> {
        let table: TaskTable =
            serde_json::from_value(table.clone()).context("the task's `table` is not a valid table description")?;
        let mut backend = engine.backend()?;
        backend
            .setup_table(&table)
            .with_context(|| format!("creating table `{}`", table.table_name))?;
        Ok(SqlTool { backend, table })
    }

    /// Why AgentBench's MySQL would not have created the task's table (or its rows); the task
    /// then runs without them, as it did there.
    pub fn table_problem(&self) -> Option<String> {
        self.table.create_error().or_else(|| self.table.insert_error())
    }

    /// `str()` of the hash query's result, comparable with `answer_md5`.
    pub fn hash_answer(&mut self) -> anyhow::Result<String> {
        let h = self
            .backend
            .table_hash(&self.table)
            .context("computing the table hash")?;
        Ok(format_hash_answer(h.as_deref()))
    }
}

impl Tool for SqlTool {
    fn execute(&mut self, sql: &str) -> anyhow::Result<String> {
        Ok(self.backend.execute(sql)?)
    }
}

impl Drop for SqlTool {
    fn drop(&mut self) {
        // Dropping the database is best effort: the backend also cleans up on drop.
        let _ = self.backend.teardown();
    }
}

/// AgentBench's `add_description` for a table: its name and comma-joined headers.
pub fn default_add_description(table: &serde_json::Value) -> String {
    let name = table.get("table_name").and_then(|v| v.as_str()).unwrap_or_default();
    let headers: Vec<&str> = table
        .pointer("/table_info/columns")
        .and_then(|c| c.as_array())
        .map(|cols| {
            cols.iter()
                .filter_map(|c| c.get("name").and_then(|n| n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "The name of this table is {name}, and the headers of this table are {}.",
        headers.join(",")
    )
}
