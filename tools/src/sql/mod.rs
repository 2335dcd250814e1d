//! SQL executors for AgentBench DB tasks ("dbbench").
//!
//! A task carries one table (`table.table_name`, columns, rows). A backend creates it with every
//! column `TEXT`, runs the model's statements and renders each result exactly as the harness
//! did: Python's `str()` of the cursor's `fetchall()` (`[('March 19, 1998',)]`, `[(28,)]`), `[]`
//! for statements without a result set, or the error text, cut to 800 characters +
//! `[TRUNCATED]`. Mutating tasks are judged by a table hash (see [`hash`]).
//!
//! Backends: [`SqliteBackend`] (embedded, isolated in-memory database per task, no file or
//! network access) and [`MysqlBackend`] (a real MySQL/MariaDB server, for evaluation parity).

pub mod hash;
pub mod mysql;
pub mod render;
pub mod sqlite;

use std::time::Duration;

pub use self::mysql::MysqlBackend;
pub use hash::format_hash_answer;
pub use render::truncate_db_output;
pub use sqlite::SqliteBackend;

/// Errors of the SQL backends. Statement errors are NOT errors here: they become the
/// observation text, as the model must see them. These are failures of the tool itself.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The task's table description is unusable.
    #[error("invalid task table: {0}")]
    InvalidTable(String),
    /// The embedded SQLite engine failed outside of a model statement.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The MySQL server failed outside of a model statement (connection, setup, teardown).
    #[error("mysql: {0}")]
    Mysql(#[from] ::mysql::Error),
    /// A `mysql://` URL that cannot be used.
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// No table was set up before a statement or hash.
    #[error("no task table is set up")]
    NoTable,
}

/// Result alias for the SQL module.
pub type Result<T> = std::result::Result<T, SqlError>;

/// A task's table: `table` in the dbbench JSON (`{"table_name", "table_info": {"columns":
/// [{"name", "type"}], "rows": [[…]]}}`). Column types are ignored: the harness made every
/// column `TEXT`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TaskTable {
    /// The table's name (may contain spaces and punctuation).
    pub table_name: String,
    /// Columns and rows.
    pub table_info: TableInfo,
}

/// Columns and rows of a [`TaskTable`].
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TableInfo {
    /// Column descriptions, in order.
    pub columns: Vec<Column>,
    /// Row values; strings in practice, numbers and `null` are accepted.
    #[serde(default)]
    pub rows: Vec<Vec<serde_json::Value>>,
}

/// One column description.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Declared type in the data (not used: all columns are `TEXT`).
    #[serde(rename = "type", default)]
    pub ty: String,
}

impl TaskTable {
    /// Checks that the table can be created: a name, at least one column, unique column names,
    /// and rows no wider than the column list.
    pub fn validate(&self) -> Result<()> {
        if self.table_name.is_empty() {
            return Err(SqlError::InvalidTable("empty table name".into()));
        }
        let cols = &self.table_info.columns;
        if cols.is_empty() {
            return Err(SqlError::InvalidTable(format!(
                "table `{}` has no columns",
                self.table_name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for c in cols {
            if c.name.is_empty() {
                return Err(SqlError::InvalidTable("empty column name".into()));
            }
            if !seen.insert(c.name.to_lowercase()) {
                return Err(SqlError::InvalidTable(format!("duplicate column `{}`", c.name)));
            }
        }
        for (i, r) in self.table_info.rows.iter().enumerate() {
            if r.len() > cols.len() {
                return Err(SqlError::InvalidTable(format!(
                    "row {i} has {} values for {} columns",
                    r.len(),
                    cols.len()
                )));
            }
        }
        Ok(())
    }
}

/// The text of a JSON cell as it is stored in a `TEXT` column (`null` → SQL NULL).
pub(crate) fn cell_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Limits applied to each statement.
#[derive(Debug, Clone, Copy)]
pub struct SqlLimits {
    /// Wall-clock limit per statement.
    pub statement_timeout: Duration,
}

impl Default for SqlLimits {
    fn default() -> Self {
        Self {
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// A SQL executor for one task at a time.
pub trait SqlBackend {
    /// Creates the task's table (all columns `TEXT`) in a fresh, isolated database and inserts
    /// its rows. Replaces any previous task's database.
    fn setup_table(&mut self, table: &TaskTable) -> Result<()>;
    /// Runs one statement and returns the observation exactly as AgentBench shows it (result
    /// list, `[]` or error text), already cut by [`truncate_db_output`].
    fn execute(&mut self, sql: &str) -> Result<String>;
    /// The AgentBench table hash of the current table: `md5(group_concat(rowhash order by
    /// rowhash))`, `None` for an empty table (MySQL's `md5(NULL)`). Compare
    /// [`format_hash_answer`] of it with the task's `answer_md5`.
    fn table_hash(&mut self, table: &TaskTable) -> Result<Option<String>>;
    /// Drops the task's database. Also done on drop and by the next `setup_table`.
    fn teardown(&mut self) -> Result<()>;
}
