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
pub mod pattern;
pub mod render;
pub mod sqlite;
pub mod text_functions;

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
    /// The thread that enforces SQLite's statement deadline could not start.
    #[error("cannot start the SQLite statement watchdog: {0}")]
    Watchdog(std::io::Error),
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

/// MySQL's longest identifier.
const MAX_IDENT_CHARS: usize = 64;

/// `escape_string` of the MySQL client library, which AgentBench applied to every column name
/// and cell: `\0`, `\n`, `\r`, `\`, `'`, `"` and Ctrl-Z get a backslash.
fn mysql_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{1a}' => out.push_str("\\Z"),
            '\\' | '\'' | '"' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

impl TaskTable {
    /// The column names as AgentBench's `CREATE TABLE` made them: it put the escaped names
    /// (`mysql_escape`) in backticks, where a backslash is an ordinary character, so the
    /// escapes became part of the names (`Height\nft` with one backslash in the data is
    /// `Height\\nft` in the database).
    pub fn column_names(&self) -> Vec<String> {
        self.table_info.columns.iter().map(|c| mysql_escape(&c.name)).collect()
    }

    /// Why MySQL refused AgentBench's `CREATE TABLE` for this table, as the server words it;
    /// `None` when the table was created. AgentBench ignored the error: the task ran with no
    /// table, and every statement on it failed (dbbench dev task 5 has an empty column name).
    pub fn create_error(&self) -> Option<String> {
        let too_long = |n: &str| format!("1059 (42000): Identifier name '{n}' is too long");
        let name = &self.table_name;
        if name.is_empty() || name.ends_with(' ') {
            return Some(format!("1103 (42000): Incorrect table name '{name}'"));
        }
        if name.chars().count() > MAX_IDENT_CHARS {
            return Some(too_long(name));
        }
        let cols = self.column_names();
        if cols.is_empty() || name.contains('`') || cols.iter().any(|c| c.contains('`')) {
            // `()` or a backtick that ends an identifier early.
            return Some("1064 (42000): You have an error in your SQL syntax".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &cols {
            if c.is_empty() || c.ends_with(' ') {
                return Some(format!("1166 (42000): Incorrect column name '{c}'"));
            }
            if c.chars().count() > MAX_IDENT_CHARS {
                return Some(too_long(c));
            }
            // Column names are case-insensitive in MySQL.
            if !seen.insert(c.to_lowercase()) {
                return Some(format!("1060 (42S21): Duplicate column name '{c}'"));
            }
        }
        None
    }

    /// Why AgentBench's one multi-row `INSERT` of every row failed (a row whose length is not
    /// the column count), or `None` when the rows went in. A failed `INSERT` left the table
    /// empty.
    pub fn insert_error(&self) -> Option<String> {
        let n = self.table_info.columns.len();
        let bad = self.table_info.rows.iter().position(|r| r.len() != n)?;
        Some(format!(
            "1136 (21S01): Column count doesn't match value count at row {}",
            bad + 1
        ))
    }

    /// The rows AgentBench inserted: all of them, or none when the `INSERT` failed.
    pub(crate) fn inserted_rows(&self) -> &[Vec<serde_json::Value>] {
        if self.create_error().is_some() || self.insert_error().is_some() {
            &[]
        } else {
            &self.table_info.rows
        }
    }
}

/// The text of a JSON cell as AgentBench stored it: Python's `str()` of the value, so `null`
/// is the text `None` and `true` is `True` (the data holds strings and a few integers).
pub(crate) fn cell_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "None".into(),
        serde_json::Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_f64() => render::repr_float(n.as_f64().unwrap_or(f64::NAN)),
        other => other.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(name: &str, cols: &[&str], rows: serde_json::Value) -> TaskTable {
        let columns: Vec<_> = cols.iter().map(|c| json!({"name": c, "type": "TEXT"})).collect();
        serde_json::from_value(json!({"table_name": name, "table_info": {"columns": columns, "rows": rows}})).unwrap()
    }

    #[test]
    fn escape_like_the_mysql_client() {
        assert_eq!(mysql_escape("Height\\nft / m"), "Height\\\\nft / m");
        assert_eq!(mysql_escape("it's \"x\"\n\r\0\u{1a}"), "it\\'s \\\"x\\\"\\n\\r\\0\\Z");
        assert_eq!(mysql_escape("plain ünïcode"), "plain ünïcode");
    }

    #[test]
    fn mysql_create_and_insert_errors() {
        let ok = table("t", &["a", "B"], json!([["1", "2"]]));
        assert_eq!((ok.create_error(), ok.insert_error()), (None, None));
        assert_eq!(ok.inserted_rows().len(), 1);
        let cases = [
            (
                table("t", &["", "x"], json!([])),
                "1166 (42000): Incorrect column name ''",
            ),
            (
                table("t", &["x "], json!([])),
                "1166 (42000): Incorrect column name 'x '",
            ),
            (
                table("t", &["a", "A"], json!([])),
                "1060 (42S21): Duplicate column name 'A'",
            ),
            (table("", &["a"], json!([])), "1103 (42000): Incorrect table name ''"),
            (
                table("t", &["a`b"], json!([])),
                "1064 (42000): You have an error in your SQL syntax",
            ),
            (
                table("t", &[], json!([])),
                "1064 (42000): You have an error in your SQL syntax",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(t.create_error().as_deref(), Some(want));
            assert!(t.inserted_rows().is_empty());
        }
        let long = "x".repeat(65);
        let t = table("t", &[&long], json!([]));
        assert!(t.create_error().unwrap().starts_with("1059 (42000): Identifier name"));
        assert_eq!(table("t", &[&long[..64]], json!([])).create_error(), None);
        // One ragged row: the single INSERT failed and the table stayed empty.
        let ragged = table("t", &["a", "b"], json!([["1", "2"], ["3"]]));
        assert_eq!(ragged.create_error(), None);
        assert_eq!(
            ragged.insert_error().as_deref(),
            Some("1136 (21S01): Column count doesn't match value count at row 2")
        );
        assert!(ragged.inserted_rows().is_empty());
    }

    #[test]
    fn cells_are_python_str() {
        let cells = [json!(null), json!(true), json!(7), json!(1.5), json!(1e16), json!("s")];
        let texts: Vec<String> = cells.iter().map(cell_text).collect();
        assert_eq!(texts, ["None", "True", "7", "1.5", "1e+16", "s"]);
    }
}
