//! The embedded SQL executor: one private in-memory SQLite database per task.
//!
//! Containment (the model writes the SQL, so it is untrusted):
//! - the database lives only in memory and is dropped with the task;
//! - `SQLITE_LIMIT_ATTACHED = 0`, and an authorizer denies `ATTACH`/`DETACH`, every pragma not
//!   on a read-only allowlist, and the `load_extension` function (extension loading is also
//!   never enabled on the connection), so no statement can open, create or write a file:
//!   `ATTACH 'x.db'`, `VACUUM INTO 'x.db'` and file-writing pragmas all fail;
//! - a watchdog thread calls `sqlite3_interrupt` when a statement passes its deadline; the
//!   built-ins that run as one VM step SQLite never interrupts and can take minutes to hours on
//!   16 MB values (`LIKE`, `GLOB`, `instr`, `replace`, two-argument `trim`/`ltrim`/`rtrim`) are
//!   replaced by linear or O(n×pattern) versions with SQLite's results that stop on the same
//!   signal (see [`super::pattern`], [`super::text_functions`]); `LIKE`/`GLOB` patterns are
//!   capped at [`MAX_PATTERN_BYTES`](super::pattern::MAX_PATTERN_BYTES);
//! - `max_page_count` caps the main database and the TEMP database alike, `SQLITE_LIMIT_LENGTH`
//!   caps any single value, and a process-wide hard heap limit bounds what neither covers
//!   (sorters and `DISTINCT`/`GROUP BY` scratch tables), so a runaway `INSERT … SELECT` or
//!   `CREATE TEMP TABLE … WITH RECURSIVE` ends with an error, not with the host's memory.
//!
//! Rendering differs from MySQL where SQLite's types do: `SUM`/`AVG` of integer-looking text
//! give `int`/`float` per SQLite's rules (MySQL gives `float`/`Decimal`), there is no `Decimal`,
//! and error messages are SQLite's (`near "x": syntax error`), not MySQL's numbered ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, InterruptHandle};

use super::hash::{row_hash, table_hash_from_rowhashes, GROUP_CONCAT_MAX_LEN};
use super::pattern::{pattern_match, Dialect, PatternError, MAX_PATTERN_BYTES};
use super::render::{truncate_db_output, PyValue, RowsRenderer};
use super::text_functions::{self, TextError, TrimEnds};
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
/// Process-wide ceiling on SQLite's heap (all tasks together): the page caps bound each
/// database, this bounds the scratch structures (sorters, ephemeral tables) they do not. Far
/// above what AgentBench tables need (kilobytes), far below a host's memory.
const HARD_HEAP_LIMIT_BYTES: i64 = 2 << 30;

/// Quotes an SQLite identifier with double quotes.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Functions the model may not call: `load_extension` (native code), and `json_patch` /
/// `jsonb_patch`, quadratic in SQLite (every key of the patch against every key of the target)
/// inside one VM step that `sqlite3_interrupt` cannot stop (two 16 MB objects: hours).
const DENIED_FUNCTIONS: &[&str] = &["load_extension", "json_patch", "jsonb_patch"];

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
        AuthAction::Function { function_name }
            if DENIED_FUNCTIONS.iter().any(|f| f.eq_ignore_ascii_case(function_name)) =>
        {
            Authorization::Deny
        }
        _ => Authorization::Allow,
    }
}

/// What the watchdog thread is told.
#[derive(Debug, Default)]
struct WatchState {
    /// When the running statement must stop; `None` between statements.
    deadline: Option<Instant>,
    /// The connection is closing: the thread ends.
    shutdown: bool,
}

/// A thread that interrupts the connection's running statement at its deadline.
///
/// `sqlite3_interrupt` stops SQLite at its next check (each VM jump, sorter and b-tree loops);
/// `fired` tells our own long-running functions (`LIKE`, `GLOB`, `instr`, `replace`, `trim`) to stop as well. The deadline
/// is cleared under the same lock the thread fires under, so a statement that finished in time
/// is never interrupted, and one that starts later never sees a stale interrupt.
struct StatementWatchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StatementWatchdog {
    fn spawn(interrupt: InterruptHandle, fired: Arc<AtomicBool>) -> Result<Self> {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let thread_state = Arc::clone(&state);
        let thread_fired = Arc::clone(&fired);
        let thread = std::thread::Builder::new()
            .name("sqlite-watchdog".into())
            .spawn(move || Self::watch(&thread_state, &interrupt, &thread_fired))
            .map_err(SqlError::Watchdog)?;
        Ok(Self {
            state,
            fired,
            thread: Some(thread),
        })
    }

    fn watch(state: &(Mutex<WatchState>, Condvar), interrupt: &InterruptHandle, fired: &AtomicBool) {
        let (lock, wake) = state;
        let Ok(mut s) = lock.lock() else { return };
        loop {
            if s.shutdown {
                return;
            }
            let wait = match s.deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        fired.store(true, Ordering::SeqCst);
                        interrupt.interrupt();
                        s.deadline = None;
                        continue;
                    }
                    Some(d - now)
                }
            };
            s = match wait {
                None => match wake.wait(s) {
                    Ok(g) => g,
                    Err(_) => return,
                },
                Some(w) => match wake.wait_timeout(s, w) {
                    Ok((g, _)) => g,
                    Err(_) => return,
                },
            };
        }
    }

    /// Arms the deadline for the statement about to run (`Some`) or disarms it (`None`).
    fn arm(&self, limit: Option<Duration>) {
        let (lock, wake) = &*self.state;
        if let Ok(mut s) = lock.lock() {
            if limit.is_some() {
                self.fired.store(false, Ordering::SeqCst);
            }
            // A limit too large to add to the clock means no deadline.
            s.deadline = limit.and_then(|l| Instant::now().checked_add(l));
            wake.notify_one();
        }
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for StatementWatchdog {
    fn drop(&mut self) {
        let (lock, wake) = &*self.state;
        if let Ok(mut s) = lock.lock() {
            s.shutdown = true;
            wake.notify_one();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One task's database and the watchdog that guards its statements.
struct Session {
    /// Declared first so it stops (and stops interrupting) before the connection closes.
    watchdog: StatementWatchdog,
    conn: Connection,
}

/// Sets SQLite's process-wide hard heap limit once.
fn limit_sqlite_heap() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_hard_heap_limit64` only stores a number in SQLite's global memory
        // accounting (under its own mutex); it is safe to call at any time from any thread.
        unsafe {
            rusqlite::ffi::sqlite3_hard_heap_limit64(HARD_HEAP_LIMIT_BYTES);
        }
    });
}

/// SQLite's own text of a REAL (`printf("%!.15g")`, as `CAST(x AS TEXT)` gives it), from
/// SQLite's formatter: its rounding differs from Rust's in the last digit for some values.
fn sqlite_real_text(v: f64) -> String {
    let mut buf = [0u8; 64];
    let len = std::os::raw::c_int::try_from(buf.len()).unwrap_or(0);
    // SAFETY: `sqlite3_snprintf` writes at most `len` bytes, NUL included, into `buf`, which
    // outlives the call; the format string is NUL-terminated and consumes exactly one double,
    // which is the one variadic argument passed.
    unsafe {
        rusqlite::ffi::sqlite3_snprintf(len, buf.as_mut_ptr().cast(), c"%!.15g".as_ptr(), v);
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// An SQL value as `sqlite3_value_text` would give it, `None` for NULL.
fn value_text(v: ValueRef<'_>) -> Option<std::borrow::Cow<'_, [u8]>> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into_bytes().into()),
        ValueRef::Real(r) => Some(sqlite_real_text(r).into_bytes().into()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.into()),
    }
}

/// `like(pattern, text[, escape])` / `glob(pattern, text)`, as SQLite calls them for the
/// operators; errors carry SQLite's own messages, and an interrupt its `SQLITE_INTERRUPT` code.
fn pattern_function(ctx: &Context<'_>, dialect: Dialect, fired: &AtomicBool) -> rusqlite::Result<Option<bool>> {
    let (Some(pattern), Some(text)) = (value_text(ctx.get_raw(0)), value_text(ctx.get_raw(1))) else {
        return Ok(None);
    };
    let escape = if ctx.len() == 3 {
        match value_text(ctx.get_raw(2)) {
            Some(e) => Some(e),
            None => return Ok(None),
        }
    } else {
        None
    };
    match pattern_match(dialect, &pattern, &text, escape.as_deref(), fired) {
        Ok(m) => Ok(Some(m)),
        // No message: SQLite then reports the code's own text ("interrupted") and keeps the code.
        Err(PatternError::Interrupted) => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
            None,
        )),
        Err(e) => Err(rusqlite::Error::UserFunctionError(e.to_string().into())),
    }
}

/// Replaces SQLite's `like` (2 and 3 arguments) and `glob` on `conn` with the interruptible
/// matcher.
fn register_pattern_functions(conn: &Connection, fired: &Arc<AtomicBool>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, args, dialect) in [
        ("like", 2, Dialect::Like),
        ("like", 3, Dialect::Like),
        ("glob", 2, Dialect::Glob),
    ] {
        let fired = Arc::clone(fired);
        conn.create_scalar_function(name, args, flags, move |ctx| pattern_function(ctx, dialect, &fired))?;
    }
    Ok(())
}

fn text_error(e: TextError) -> rusqlite::Error {
    let code = match e {
        TextError::Interrupted => rusqlite::ffi::SQLITE_INTERRUPT,
        TextError::TooBig => rusqlite::ffi::SQLITE_TOOBIG,
    };
    // No message: SQLite reports the code's own text ("interrupted", "string or blob too big").
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
}

/// Text to hand back to SQLite; invalid UTF-8 (only from blobs cast to text) is replaced.
fn into_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Replaces `instr`, `replace` and two-argument `trim`/`ltrim`/`rtrim` on `conn` with linear,
/// interruptible versions (see [`text_functions`]).
fn register_text_functions(conn: &Connection, fired: &Arc<AtomicBool>) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    let f = Arc::clone(fired);
    conn.create_scalar_function("instr", 2, flags, move |ctx| {
        let (hay, needle) = (ctx.get_raw(0), ctx.get_raw(1));
        let as_text = !matches!((hay, needle), (ValueRef::Blob(_), ValueRef::Blob(_)));
        let (Some(hay), Some(needle)) = (value_text(hay), value_text(needle)) else {
            return Ok(None);
        };
        text_functions::instr(&hay, &needle, as_text, &f)
            .map(Some)
            .map_err(text_error)
    })?;
    let f = Arc::clone(fired);
    conn.create_scalar_function("replace", 3, flags, move |ctx| {
        let Some(text) = value_text(ctx.get_raw(0)) else {
            return Ok(None);
        };
        let Some(pattern) = value_text(ctx.get_raw(1)) else {
            return Ok(None);
        };
        if pattern.first().is_none_or(|&b| b == 0) {
            return Ok(Some(into_text(text.into_owned())));
        }
        let Some(replacement) = value_text(ctx.get_raw(2)) else {
            return Ok(None);
        };
        let max = usize::try_from(MAX_VALUE_BYTES).unwrap_or(usize::MAX);
        text_functions::replace(&text, &pattern, &replacement, max, &f)
            .map(|out| Some(into_text(out)))
            .map_err(text_error)
    })?;
    for (name, ends) in [
        ("trim", TrimEnds::Both),
        ("ltrim", TrimEnds::Left),
        ("rtrim", TrimEnds::Right),
    ] {
        let f = Arc::clone(fired);
        conn.create_scalar_function(name, 2, flags, move |ctx| {
            let Some(text) = value_text(ctx.get_raw(0)) else {
                return Ok(None);
            };
            let Some(set) = value_text(ctx.get_raw(1)) else {
                return Ok(None);
            };
            text_functions::trim(&text, &set, ends, &f)
                .map(|out| Some(into_text(out.to_vec())))
                .map_err(text_error)
        })?;
    }
    Ok(())
}

/// The embedded SQLite backend.
pub struct SqliteBackend {
    session: Option<Session>,
    limits: SqlLimits,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("has_table", &self.session.is_some())
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
        Self { session: None, limits }
    }

    fn session(&self) -> Result<&Session> {
        self.session.as_ref().ok_or(SqlError::NoTable)
    }

    /// Opens the in-memory database, creates and fills the table, then locks the connection
    /// down (setup itself needs no pragma or attach, but the limits are set before the
    /// authorizer so our own `max_page_count` pragmas pass).
    fn open(&self, table: &TaskTable) -> Result<Session> {
        limit_sqlite_heap();
        let conn = Connection::open_in_memory()?;
        // `temp.max_page_count` opens the TEMP database now, so its cap is in place before the
        // model can create a TEMP table there.
        conn.execute_batch(&format!(
            "PRAGMA temp_store = MEMORY; PRAGMA main.max_page_count = {MAX_PAGE_COUNT}; \
             PRAGMA temp.max_page_count = {MAX_PAGE_COUNT};"
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
        let pattern_limit = i32::try_from(MAX_PATTERN_BYTES).unwrap_or(i32::MAX);
        conn.set_limit(Limit::SQLITE_LIMIT_LIKE_PATTERN_LENGTH, pattern_limit)?;
        conn.authorizer(Some(authorize));
        let fired = Arc::new(AtomicBool::new(false));
        register_pattern_functions(&conn, &fired)?;
        register_text_functions(&conn, &fired)?;
        let watchdog = StatementWatchdog::spawn(conn.get_interrupt_handle(), fired)?;
        Ok(Session { conn, watchdog })
    }
    /// Runs one statement, rendering its rows; `Err` carries the observation's error text.
    fn run_statement(conn: &Connection, sql: &str) -> std::result::Result<String, rusqlite::Error> {
        let mut stmt = conn.prepare(sql)?;
        let ncol = stmt.column_count();
        let mut rows = stmt.query([])?;
        let mut out = RowsRenderer::new(1000);
        while let Some(row) = rows.next()? {
            if ncol == 0 {
                continue;
            }
            // Value by value, and none once the text is past the cut: values past it are
            // neither copied out of SQLite nor rendered.
            let more = out.push_row_with(ncol, |i| {
                row.get_ref(i).map(|v| match v {
                    ValueRef::Null => PyValue::None,
                    ValueRef::Integer(v) => PyValue::Int(v as i128),
                    ValueRef::Real(v) => PyValue::Float(v),
                    ValueRef::Text(t) => PyValue::Str(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => PyValue::Bytes(b.to_vec()),
                })
            })?;
            if !more {
                break;
            }
        }
        Ok(out.finish())
    }

    /// What AgentBench's reconnect before every statement does to a MySQL session, after each
    /// statement: an open transaction is committed (it committed after each statement) and
    /// TEMP tables, views and triggers are dropped (a new session has none), so `BEGIN`, an
    /// `UPDATE` and a `ROLLBACK` keep the update, and a TEMP table is gone at the next statement.
    fn end_session(conn: &Connection) -> Result<()> {
        // A commit SQLite refuses (a deferred foreign key, say) is rolled back: MySQL's
        // session ended there too.
        if !conn.is_autocommit() && conn.execute_batch("COMMIT").is_err() {
            conn.execute_batch("ROLLBACK")?;
        }
        let temp: Vec<(String, String)> = conn
            .prepare("SELECT type, name FROM temp.sqlite_master WHERE type IN ('view', 'trigger', 'table')")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (kind, name) in temp {
            // A table's triggers go with it; the kinds are SQLite's own words.
            let _ = conn.execute_batch(&format!(
                "DROP {} IF EXISTS temp.{}",
                kind.to_uppercase(),
                quote_ident(&name)
            ));
        }
        Ok(())
    }

    fn error_text(&self, session: &Session, e: &rusqlite::Error) -> String {
        let interrupted = matches!(e, rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted);
        if interrupted || session.watchdog.fired() {
            format!(
                "interrupted: statement exceeded the {} s time limit",
                self.limits.statement_timeout.as_secs_f64()
            )
        } else {
            e.to_string()
        }
    }
}

impl SqlBackend for SqliteBackend {
    fn setup_table(&mut self, table: &TaskTable) -> Result<()> {
        self.session = None;
        self.session = Some(self.open(table)?);
        Ok(())
    }

    fn execute(&mut self, sql: &str) -> Result<String> {
        let session = self.session()?;
        session.watchdog.arm(Some(self.limits.statement_timeout));
        let result = Self::run_statement(&session.conn, sql);
        session.watchdog.arm(None);
        let text = match result {
            Ok(t) => t,
            Err(e) => self.error_text(session, &e),
        };
        Self::end_session(&session.conn)?;
        Ok(truncate_db_output(&text))
    }

    fn table_hash(&mut self, table: &TaskTable) -> Result<Option<String>> {
        let session = self.session()?;
        let conn = &session.conn;
        // CAST gives SQLite's own text of numbers the model may have stored; TEXT affinity
        // makes that rare.
        let cols: Vec<String> = table
            .column_names()
            .iter()
            .map(|c| format!("CAST({} AS TEXT)", quote_ident(c)))
            .collect();
        let sql = format!("SELECT {} FROM {}", cols.join(", "), quote_ident(&table.table_name));
        session.watchdog.arm(Some(self.limits.statement_timeout));
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
        session.watchdog.arm(None);
        Ok(table_hash_from_rowhashes(result?, GROUP_CONCAT_MAX_LEN))
    }

    fn teardown(&mut self) -> Result<()> {
        if let Some(Session { conn, watchdog }) = self.session.take() {
            drop(watchdog);
            conn.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator, so a failing case can be replayed.
    struct Xorshift(u64);

    impl Xorshift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn text(&mut self, alphabet: &[&str], max_len: u64) -> String {
            let len = self.next() % (max_len + 1);
            (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
                .collect()
        }
    }

    fn sql_literal(s: &str) -> String {
        format!("'{}'", s.replace('\'', "''"))
    }

    #[test]
    fn reals_print_like_sqlite() {
        let cases = [
            (1.0, "1.0"),
            (-2.25, "-2.25"),
            (1e16, "1.0e+16"),
            (0.1 + 0.2, "0.3"),
            (123_456_789.123_456_79, "123456789.123457"),
        ];
        for (v, want) in cases {
            assert_eq!(sqlite_real_text(v), want, "{v}");
        }
    }

    /// A limit too large for the clock means "no deadline", not a panic.
    #[test]
    fn an_unbounded_timeout_is_accepted() {
        let mut b = SqliteBackend::new(SqlLimits {
            statement_timeout: Duration::MAX,
        });
        let table: TaskTable =
            serde_json::from_str(r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}], "rows": [["x"]]}}"#)
                .unwrap();
        b.setup_table(&table).unwrap();
        assert_eq!(b.execute("SELECT a FROM t").unwrap(), "[('x',)]");
        b.teardown().unwrap();
    }

    /// Our `like`, `glob`, `instr`, `replace` and `trim` give exactly what SQLite's built-ins
    /// give (a plain connection has them) on random short inputs full of wildcards, escapes,
    /// class brackets and multi-byte characters.
    #[test]
    fn replaced_functions_agree_with_sqlite_builtins() {
        let plain = Connection::open_in_memory().unwrap();
        let mut ours = SqliteBackend::default();
        let table: TaskTable =
            serde_json::from_str(r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}], "rows": []}}"#)
                .unwrap();
        ours.setup_table(&table).unwrap();
        let alphabet = [
            "a", "A", "b", "_", "%", "*", "?", "[", "]", "^", "-", "!", "é", "É", "z",
        ];
        let mut rng = Xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let x = sql_literal(&rng.text(&alphabet, 8));
            let p = sql_literal(&rng.text(&alphabet, 5));
            let r = sql_literal(&rng.text(&alphabet, 3));
            // A REAL operand is matched as SQLite's own text of it (`%!.15g`).
            let real = match rng.next() % 3 {
                0 => f64::from_bits(rng.next()),
                1 => (rng.next() % 100_000) as f64 / 64.0,
                _ => (rng.next() % 1000) as f64 * 10f64.powi((rng.next() % 40) as i32 - 20),
            };
            let real = if real.is_finite() { real } else { 0.5 };
            let real = format!("({real:e})");
            let exprs = [
                format!("{real} LIKE CAST({real} AS TEXT)"),
                format!("instr({real}, '.')"),
                format!("{x} LIKE {p}"),
                format!("{x} LIKE {p} ESCAPE '!'"),
                format!("{x} LIKE {p} ESCAPE '%'"),
                format!("{x} LIKE {p} ESCAPE '_'"),
                format!("{x} GLOB {p}"),
                format!("instr({x}, {p})"),
                format!("replace({x}, {p}, {r})"),
                format!("trim({x}, {p})"),
                format!("ltrim({x}, {p})"),
                format!("rtrim({x}, {p})"),
            ];
            let list: Vec<String> = exprs.iter().map(|e| format!("coalesce(quote({e}), 'NULL')")).collect();
            let sql = format!("SELECT hex({})", list.join(" || '|' || "));
            let want: String = plain.query_row(&sql, [], |row| row.get(0)).unwrap();
            let got = ours.execute(&sql).unwrap();
            assert_eq!(got, format!("[('{want}',)]"), "{exprs:?}");
        }
    }
}
