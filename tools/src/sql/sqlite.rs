//! The embedded SQL executor: one private in-memory SQLite database per task.
//!
//! Containment (the model writes the SQL, so it is untrusted):
//! - the database lives only in memory and is dropped with the task;
//! - `SQLITE_LIMIT_ATTACHED = 0`, and an authorizer denies `ATTACH`/`DETACH`, every pragma not
//!   on a read-only allowlist, and the `load_extension` function (extension loading is also
//!   never enabled on the connection), so no statement can open, create or write a file:
//!   `ATTACH 'x.db'`, `VACUUM INTO 'x.db'` and file-writing pragmas all fail;
//! - a progress handler interrupts a statement after the wall-clock timeout;
//! - `max_page_count` caps the database size and `SQLITE_LIMIT_LENGTH` caps any single value,
//!   so a runaway `INSERT … SELECT` cannot exhaust memory.
//!
//! Rendering differs from MySQL where SQLite's types do: `SUM`/`AVG` of integer-looking text
//! give `int`/`float` per SQLite's rules (MySQL gives `float`/`Decimal`), there is no `Decimal`,
//! and error messages are SQLite's (`near "x": syntax error`), not MySQL's numbered ones.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::hash::{row_hash, table_hash_from_rowhashes, GROUP_CONCAT_MAX_LEN};
use super::render::{truncate_db_output, PyValue, RowsRenderer};
use super::{cell_text, Result, SqlBackend, SqlError, SqlLimits, TaskTable};

/// Pragmas that only read schema information; every other pragma is denied.
const READ_ONLY_PRAGMAS: &[&str] = &[
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "collation_list",
    "function_list",
    "pragma_list",
];

/// Largest database: 65536 pages of 4 KiB = 256 MiB.
const MAX_PAGE_COUNT: u32 = 65536;
/// Largest single string or blob value.
const MAX_VALUE_BYTES: i32 = 16 << 20;
/// VM instructions between two timeout checks.
const PROGRESS_OPS: i32 = 10_000;

/// Quotes an SQLite identifier with double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn authorize(ctx: AuthContext<'_>) -> Authorization {
    match ctx.action {
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Pragma { pragma_name, .. } => {
            if READ_ONLY_PRAGMAS.iter().any(|p| p.eq_ignore_ascii_case(pragma_name)) {
                Authorization::Allow
            } else {
                Authorization::Deny
            }
        }
        AuthAction::Function { function_name } if function_name.eq_ignore_ascii_case("load_extension") => {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// The embedded SQLite backend.
pub struct SqliteBackend {
    conn: Option<Connection>,
    limits: SqlLimits,
    /// Deadline of the running statement, read by the progress handler.
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("has_table", &self.conn.is_some())
            .finish()
    }
}

impl Default for SqliteBackend {
    fn default() -> Self {
        Self::new(SqlLimits::default())
    }
}

impl SqliteBackend {
    /// A backend with the given limits; no database exists until [`SqlBackend::setup_table`].
    pub fn new(limits: SqlLimits) -> Self {
        Self {
            conn: None,
            limits,
            deadline: Arc::new(Mutex::new(None)),
        }
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn.as_ref().ok_or(SqlError::NoTable)
    }

    /// Opens the in-memory database, creates and fills the table, then locks the connection
    /// down (setup itself needs no pragma or attach, but the limits are set before the
    /// authorizer so our own `max_page_count` pragma passes).
    fn open(&self, table: &TaskTable) -> Result<Connection> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(&format!(
            "PRAGMA max_page_count = {MAX_PAGE_COUNT}; PRAGMA temp_store = MEMORY;"
        ))?;
        // As in AgentBench on MySQL: a table MySQL refuses is not created (statements on it
        // then fail), and rows go in all together or not at all.
        if table.create_error().is_none() {
            let names: Vec<String> = table.column_names().iter().map(|c| quote_ident(c)).collect();
            let tname = quote_ident(&table.table_name);
            let cols: Vec<String> = names.iter().map(|c| format!("{c} TEXT")).collect();
            conn.execute_batch(&format!("CREATE TABLE {tname} ({})", cols.join(", ")))?;
            let tx = conn.unchecked_transaction()?;
            let marks = vec!["?"; names.len()].join(", ");
            let sql = format!("INSERT INTO {tname} ({}) VALUES ({marks})", names.join(", "));
            for row in table.inserted_rows() {
                let values: Vec<String> = row.iter().map(cell_text).collect();
                tx.prepare_cached(&sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))?;
            }
            tx.commit()?;
        }
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)?;
        conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)?;
        conn.authorizer(Some(authorize));
        let deadline = Arc::clone(&self.deadline);
        conn.progress_handler(
            PROGRESS_OPS,
            Some(move || {
                // Returning true interrupts the statement.
                let d = deadline.lock().map(|g| *g).unwrap_or(None);
                d.is_some_and(|d| Instant::now() >= d)
            }),
        );
        Ok(conn)
    }

    /// Runs one statement, rendering its rows; `Err` carries the observation's error text.
    fn run_statement(conn: &Connection, sql: &str) -> std::result::Result<String, rusqlite::Error> {
        let mut stmt = conn.prepare(sql)?;
        let ncol = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut out = RowsRenderer::new(1000);
        let mut row_vals = Vec::with_capacity(ncol);
        while let Some(row) = rows.next()? {
            if ncol == 0 {
                continue;
            }
            row_vals.clear();
            for i in 0..ncol {
                row_vals.push(match row.get_ref(i)? {
                    ValueRef::Null => PyValue::None,
                    ValueRef::Integer(v) => PyValue::Int(v as i128),
                    ValueRef::Real(v) => PyValue::Float(v),
                    ValueRef::Text(t) => PyValue::Str(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => PyValue::Bytes(b.to_vec()),
                });
            }
            if !out.push_row(&row_vals) {
                break;
            }
        }
        Ok(out.finish())
    }

    fn error_text(&self, e: &rusqlite::Error) -> String {
        match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted => {
                format!(
                    "interrupted: statement exceeded the {} s time limit",
                    self.limits.statement_timeout.as_secs_f64()
                )
            }
            other => other.to_string(),
        }
    }

    fn set_deadline(&self, d: Option<Duration>) {
        if let Ok(mut g) = self.deadline.lock() {
            *g = d.map(|d| Instant::now() + d);
        }
    }
}

impl SqlBackend for SqliteBackend {
    fn setup_table(&mut self, table: &TaskTable) -> Result<()> {
        self.conn = None;
        self.conn = Some(self.open(table)?);
        Ok(())
    }

    fn execute(&mut self, sql: &str) -> Result<String> {
        let conn = self.conn()?;
        self.set_deadline(Some(self.limits.statement_timeout));
        let text = match Self::run_statement(conn, sql) {
            Ok(t) => t,
            Err(e) => self.error_text(&e),
        };
        self.set_deadline(None);
        Ok(truncate_db_output(&text))
    }

    fn table_hash(&mut self, table: &TaskTable) -> Result<Option<String>> {
        let conn = self.conn()?;
        // CAST gives SQLite's own text of numbers the model may have stored; TEXT affinity
        // makes that rare.
        let cols: Vec<String> = table
            .column_names()
            .iter()
            .map(|c| format!("CAST({} AS TEXT)", quote_ident(c)))
            .collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), quote_ident(&table.table_name));
        self.set_deadline(Some(self.limits.statement_timeout));
        let result = (|| {
            let mut stmt = conn.prepare(&sql)?;
            let n = stmt.column_count();
            let mut rows = stmt.query([])?;
            let mut hashes = Vec::new();
            while let Some(row) = rows.next()? {
                let mut cells: Vec<Option<Vec<u8>>> = Vec::with_capacity(n);
                for i in 0..n {
                    cells.push(match row.get_ref(i)? {
                        ValueRef::Null => None,
                        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
                        ValueRef::Integer(v) => Some(v.to_string().into_bytes()),
                        ValueRef::Real(v) => Some(v.to_string().into_bytes()),
                    });
                }
                hashes.push(row_hash(cells.iter().map(|c| c.as_deref())));
            }
            Ok::<_, rusqlite::Error>(hashes)
        })();
        self.set_deadline(None);
        Ok(table_hash_from_rowhashes(result?, GROUP_CONCAT_MAX_LEN))
    }

    fn teardown(&mut self) -> Result<()> {
        if let Some(c) = self.conn.take() {
            c.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}
