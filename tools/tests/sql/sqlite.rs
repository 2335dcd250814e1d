//! The embedded SQLite executor: AgentBench rendering, the table hash against the dev set's gold
//! `answer_md5`, statement timeout, and containment (no file, no attach, no extension).
//!
//! Dev data: `$EDGEACT_AGENTBENCH_DATA` (default: `../shared/agentbench/data` beside the checkout); tests that
//! need it print why they skip when it is absent.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeact_tools::sql::{format_hash_answer, SqlBackend, SqlLimits, SqliteBackend, TaskTable};

fn table(json: &str) -> TaskTable {
    serde_json::from_str(json).expect("valid table JSON")
}

fn demo_table() -> TaskTable {
    table(
        r#"{"table_name": "US Ambassadors", "table_info": {"columns": [
            {"name": "Representative", "type": "TEXT"}, {"name": "Presentation of Credentials", "type": "TEXT"},
            {"name": "Termination of Mission", "type": "TEXT"}, {"name": "Floors", "type": "INT"}],
          "rows": [["Dabney H. Maury", "January 20, 1887", "June 22, 1889", "12"],
                   ["Checco D'Angelo", "March 19, 1998", "August 15, 2000", "26"],
                   ["Nobody", null, "x", 7]]}}"#,
    )
}

fn backend() -> SqliteBackend {
    let mut b = SqliteBackend::new(SqlLimits {
        statement_timeout: Duration::from_secs(2),
    });
    b.setup_table(&demo_table()).unwrap();
    b
}

#[test]
fn sql_sqlite_renders_like_agentbench() {
    let mut b = backend();
    let q = |b: &mut SqliteBackend, s: &str| b.execute(s).unwrap();
    assert_eq!(
        q(&mut b, "SELECT `Presentation of Credentials` FROM `US Ambassadors` WHERE `Termination of Mission` = 'August 15, 2000'"),
        "[('March 19, 1998',)]"
    );
    assert_eq!(q(&mut b, "SELECT COUNT(*) FROM `US Ambassadors`"), "[(3,)]");
    assert_eq!(
        q(
            &mut b,
            "SELECT Representative FROM `US Ambassadors` WHERE Floors = '26'"
        ),
        "[(\"Checco D'Angelo\",)]"
    );
    assert_eq!(q(&mut b, "SELECT AVG(Floors) FROM `US Ambassadors`"), "[(15.0,)]");
    assert_eq!(
        q(&mut b, "SELECT 59.555, NULL, x'00ff', 1e16"),
        "[(59.555, None, b'\\x00\\xff', 1e+16)]"
    );
    assert_eq!(
        q(
            &mut b,
            "SELECT `Presentation of Credentials` FROM `US Ambassadors` WHERE Floors = '7'"
        ),
        // AgentBench stored `str()` of every cell: a JSON null is the text 'None'.
        "[('None',)]"
    );
    // Numbers inserted from JSON are stored as text (TEXT affinity).
    assert_eq!(
        q(&mut b, "SELECT typeof(Floors) FROM `US Ambassadors` WHERE Floors = '7'"),
        "[('text',)]"
    );
    assert_eq!(q(&mut b, "SELECT * FROM `US Ambassadors` WHERE 0"), "[]");
    assert_eq!(
        q(&mut b, "UPDATE `US Ambassadors` SET Floors = '8' WHERE Floors = '7'"),
        "[]"
    );
    assert_eq!(
        q(&mut b, "INSERT INTO `US Ambassadors` (Representative) VALUES ('New')"),
        "[]"
    );
    assert_eq!(q(&mut b, "SELECT COUNT(*) FROM `US Ambassadors`;"), "[(4,)]");
    let err = q(&mut b, "SELEC nothing");
    assert!(err.contains("syntax error"), "{err}");
    let err = q(&mut b, "SELECT x FROM `US Ambassadors`");
    assert!(err.contains("no such column: x"), "{err}");
    // 800-character cut with the harness's marker.
    let long = q(
        &mut b,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5000) SELECT x FROM c",
    );
    assert!(long.ends_with("[TRUNCATED]"), "{long}");
    assert_eq!(long.chars().count(), 800 + "[TRUNCATED]".len());
    assert!(long.starts_with("[(1,), (2,), (3,)"));
}

/// Each statement runs as in a session of its own, as AgentBench ran each on a fresh MySQL
/// connection and committed it: a transaction does not span statements (BEGIN, UPDATE,
/// ROLLBACK keeps the update, which changes the table hash and so the verdict of mutation
/// tasks), and a TEMP table is gone at the next statement.
#[test]
fn sql_sqlite_statements_share_no_session_state() {
    let mut b = backend();
    let before = b.table_hash(&demo_table()).unwrap();
    assert_eq!(b.execute("BEGIN").unwrap(), "[]");
    b.execute("UPDATE \"US Ambassadors\" SET Floors = 1").unwrap();
    b.execute("ROLLBACK").unwrap();
    assert_eq!(
        b.execute("SELECT DISTINCT Floors FROM \"US Ambassadors\"").unwrap(),
        "[('1',)]"
    );
    assert_ne!(b.table_hash(&demo_table()).unwrap(), before);
    b.execute("CREATE TEMP TABLE scratch (a)").unwrap();
    b.execute("CREATE TEMP VIEW v AS SELECT 1").unwrap();
    assert!(b.execute("SELECT * FROM scratch").unwrap().contains("no such table"));
    assert!(b.execute("SELECT * FROM v").unwrap().contains("no such table"));
}

#[test]
fn sql_sqlite_each_task_is_isolated() {
    let mut b = backend();
    b.execute("CREATE TABLE scratch (a)").unwrap();
    b.setup_table(&demo_table()).unwrap();
    let r = b.execute("SELECT * FROM scratch").unwrap();
    assert!(r.contains("no such table"), "{r}");
    b.teardown().unwrap();
    assert!(b.execute("SELECT 1").is_err(), "no table after teardown");
    // Tables MySQL refuses are not created, as in AgentBench; the task still runs.
    let bad = table(r#"{"table_name": "t", "table_info": {"columns": [], "rows": []}}"#);
    b.setup_table(&bad).unwrap();
    assert!(b.execute("SELECT * FROM t").unwrap().starts_with("no such table: t"));
    let bad = table(r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}], "rows": [["1", "2"]]}}"#);
    b.setup_table(&bad).unwrap();
    assert_eq!(b.execute("SELECT COUNT(*) FROM t").unwrap(), "[(0,)]");
}

#[test]
fn sql_sqlite_statement_timeout() {
    let mut b = backend();
    let t = Instant::now();
    let r = b
        .execute("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c")
        .unwrap();
    assert!(r.contains("interrupted"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    // The session still works.
    assert_eq!(b.execute("SELECT 1").unwrap(), "[(1,)]");
}

#[test]
fn sql_sqlite_cannot_touch_files_or_other_databases() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("out.db");
    let fs = f.display().to_string();
    let mut b = backend();
    for sql in [
        format!("ATTACH DATABASE '{fs}' AS other"),
        format!("ATTACH '{fs}' AS other"),
        format!("VACUUM INTO '{fs}'"),
        "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libsqlite3.so.0')".to_string(),
        "PRAGMA journal_mode = WAL".to_string(),
        "PRAGMA temp_store_directory = '/tmp'".to_string(),
        "PRAGMA writable_schema = ON".to_string(),
        "PRAGMA max_page_count = 100000000".to_string(),
        "PRAGMA temp.max_page_count = 100000000".to_string(),
        "PRAGMA temp_store = FILE".to_string(),
        "DETACH main".to_string(),
        format!("ATTACH 'file:{fs}?mode=rwc' AS other"),
        "ATTACH ':memory:' AS other".to_string(),
        format!("VACUUM INTO 'file:{fs}?mode=rwc'"),
    ] {
        let r = b.execute(&sql).unwrap();
        assert!(
            r.contains("not authorized")
                || r.contains("authorization denied")
                || r.contains("too many attached")
                || r.contains("no such function"),
            "{sql} → {r}"
        );
        assert!(!f.exists(), "{sql} created a file");
    }
    // VACUUM of the TEMP schema is a no-op in SQLite, so it "succeeds" but writes nothing.
    let r = b.execute(&format!("VACUUM temp INTO '{fs}'")).unwrap();
    assert!(!f.exists(), "VACUUM temp INTO created a file ({r})");
    // Read-only schema pragmas stay available to the model.
    let r = b.execute("PRAGMA table_info(`US Ambassadors`)").unwrap();
    assert!(r.contains("'Representative'"), "{r}");
    // A runaway INSERT … SELECT hits the size caps, not the host's memory.
    let r = b.execute("SELECT length(zeroblob(100000000))").unwrap();
    assert!(r.contains("too big"), "{r}");
}

fn dev_jsonl() -> Option<PathBuf> {
    let base = std::env::var("EDGEACT_AGENTBENCH_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/agentbench/data").into());
    let p = PathBuf::from(base).join("dbbench/dev.jsonl");
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} not found (set EDGEACT_AGENTBENCH_DATA)", p.display());
        None
    }
}

/// Every dev task of type INSERT/UPDATE/DELETE carries its gold SQL in `label`: applying it
/// must reproduce `answer_md5` exactly, and the untouched table must not.
#[test]
fn sql_sqlite_table_hash_matches_dev_gold() {
    let Some(path) = dev_jsonl() else { return };
    let text = std::fs::read_to_string(path).unwrap();
    let (mut checked, mut matched) = (0, 0);
    let mut failures = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let task: serde_json::Value = serde_json::from_str(line).unwrap();
        let ty = task["type"][0].as_str().unwrap_or("");
        if !matches!(ty, "INSERT" | "UPDATE" | "DELETE") {
            continue;
        }
        let t: TaskTable = serde_json::from_value(task["table"].clone()).unwrap();
        let gold = task["answer_md5"].as_str().unwrap();
        let mut b = SqliteBackend::default();
        b.setup_table(&t).unwrap();
        let before = b.table_hash(&t).unwrap();
        assert_eq!(before, b.table_hash(&t).unwrap(), "hash is deterministic");
        assert_ne!(
            format_hash_answer(before.as_deref()),
            gold,
            "untouched table already matches"
        );
        for sql in task["label"].as_array().unwrap() {
            let r = b.execute(sql.as_str().unwrap()).unwrap();
            assert_eq!(r, "[]", "gold SQL failed: {r}");
        }
        let after = format_hash_answer(b.table_hash(&t).unwrap().as_deref());
        checked += 1;
        if after == gold {
            matched += 1;
        } else {
            failures.push(format!("{}: {after} != {gold}", t.table_name));
        }
    }
    eprintln!("table hash: {matched}/{checked} dev mutation tasks match answer_md5");
    assert!(checked >= 40, "expected the 40 INSERT/UPDATE dev tasks, saw {checked}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Dev tasks whose tables AgentBench's MySQL set up unusually: task 5's empty column name made
/// `CREATE TABLE` fail (the harness ignored it and ran the task with no table), and task 3's
/// `Height\nft / m` header (a literal backslash) went through `escape_string` into a
/// backtick-quoted name, so the database column has two backslashes.
#[test]
fn sql_sqlite_dev_tables_set_up_as_agentbench_did() {
    let Some(path) = dev_jsonl() else { return };
    let text = std::fs::read_to_string(path).unwrap();
    let tasks: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let t5: TaskTable = serde_json::from_value(tasks[5]["table"].clone()).unwrap();
    assert_eq!(
        t5.create_error().as_deref(),
        Some("1166 (42000): Incorrect column name ''")
    );
    let mut b = SqliteBackend::default();
    b.setup_table(&t5).unwrap();
    assert_eq!(
        b.execute("SELECT COUNT(*) FROM historic_sites").unwrap(),
        "no such table: historic_sites"
    );
    // The table hash of a missing table is an error, as the harness's hash query was.
    assert!(b.table_hash(&t5).is_err());

    let t3: TaskTable = serde_json::from_value(tasks[3]["table"].clone()).unwrap();
    assert_eq!(t3.create_error(), None);
    b.setup_table(&t3).unwrap();
    let n = t3.table_info.rows.len();
    let q = |b: &mut SqliteBackend, col: &str| {
        b.execute(&format!("SELECT COUNT(`{col}`) FROM skyscrapers_in_Columbus"))
            .unwrap()
    };
    assert_eq!(q(&mut b, r"Height\\nft / m"), format!("[({n},)]"));
    let r = q(&mut b, r"Height\nft / m");
    assert!(r.starts_with(r"no such column: Height\nft / m"), "{r}");
}

/// Rows that do not match the column count: AgentBench's single INSERT failed, so the task's
/// table exists but is empty.
#[test]
fn sql_sqlite_ragged_rows_leave_the_table_empty() {
    let t = table(
        r#"{"table_name": "t", "table_info": {"columns": [{"name": "a"}, {"name": "b"}],
            "rows": [["1", "2"], ["3"], ["4", "5", "6"]]}}"#,
    );
    let mut b = SqliteBackend::default();
    b.setup_table(&t).unwrap();
    assert_eq!(b.execute("SELECT COUNT(*) FROM t").unwrap(), "[(0,)]");
    assert_eq!(b.table_hash(&t).unwrap(), None);
}

fn backend_with_timeout(secs: u64) -> SqliteBackend {
    let mut b = SqliteBackend::new(SqlLimits {
        statement_timeout: Duration::from_secs(secs),
    });
    b.setup_table(&demo_table()).unwrap();
    b
}

/// One `LIKE` is one SQLite VM step: the old progress-handler timeout never fired inside it, and
/// a hostile `LIKE` over a 16 MB value ran for tens of seconds past a 2 s limit (several per row:
/// minutes). The watchdog stops it at the deadline with an "interrupted" error, and the session
/// goes on.
#[test]
fn sql_sqlite_long_like_is_interrupted_at_the_deadline() {
    let mut b = backend_with_timeout(2);
    for op in ["LIKE", "GLOB"] {
        let (any, tail) = if op == "LIKE" { ('%', "b") } else { ('*', "b") };
        let sql = format!(
            "WITH s(x) AS (SELECT printf('%.*c', 16000000, 'a')) \
             SELECT x {op} '{any}' || printf('%.*c', 900, 'a') || '{tail}', \
                    x {op} '{any}' || printf('%.*c', 900, 'a') || '{tail}' FROM s"
        );
        let t = Instant::now();
        let r = b.execute(&sql).unwrap();
        let took = t.elapsed();
        assert!(r.starts_with("interrupted"), "{op}: {r}");
        assert!(
            took < Duration::from_secs(6),
            "{op}: took {took:?} against a 2 s deadline"
        );
    }
    assert_eq!(
        b.execute("SELECT 'abc' LIKE 'A%', 'abc' GLOB 'a*'").unwrap(),
        "[(1, 1)]"
    );
    // A statement right after an interrupted one runs normally.
    assert_eq!(b.execute("SELECT 1").unwrap(), "[(1,)]");
}

/// LIKE/GLOB patterns longer than 1000 bytes are refused with SQLite's own message (the old
/// limit was SQLite's default of 50 000 bytes).
#[test]
fn sql_sqlite_like_pattern_length_is_limited() {
    let mut b = backend();
    for op in ["LIKE", "GLOB"] {
        let r = b
            .execute(&format!("SELECT 'a' {op} printf('%.*c', 1001, 'a')"))
            .unwrap();
        assert_eq!(r, "LIKE or GLOB pattern too complex", "{op}");
        let r = b
            .execute(&format!("SELECT 'a' {op} printf('%.*c', 1000, 'a')"))
            .unwrap();
        assert_eq!(r, "[(0,)]", "{op}");
    }
    // The usual operator semantics are SQLite's: ASCII case folding, ESCAPE, NULL.
    let r = b
        .execute(
            "SELECT 'ABC' LIKE 'a_c', '10%' LIKE '10!%' ESCAPE '!', '100' LIKE '10!%' ESCAPE '!', \
             NULL LIKE 'a', 'a' LIKE 'a' ESCAPE 'xy', 1.0 LIKE '1.0', 12 LIKE '1_'",
        )
        .unwrap();
    assert_eq!(r, "ESCAPE expression must be a single character");
    let r = b
        .execute(
            "SELECT 'ABC' LIKE 'a_c', '10%' LIKE '10!%' ESCAPE '!', '100' LIKE '10!%' ESCAPE '!', \
             NULL LIKE 'a', 1.0 LIKE '1.0', 12 LIKE '1_', 'abc' NOT LIKE '%b%'",
        )
        .unwrap();
    assert_eq!(r, "[(1, 1, 0, None, 1, 1, 0)]");
    let r = b
        .execute("SELECT COUNT(*) FROM `US Ambassadors` WHERE Representative LIKE '%maury%'")
        .unwrap();
    assert_eq!(r, "[(1,)]");
}

/// Peak resident memory of this process, from /proc (Linux); `None` elsewhere.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// TEMP tables lived outside the 256 MiB cap (a review stored 1.14 GiB, 3.1 GB RSS): now the
/// TEMP database has the same page cap as the main one, so a 2 GB `CREATE TEMP TABLE … WITH
/// RECURSIVE` fails with SQLite's "full" error and memory stays near the cap.
#[test]
fn sql_sqlite_temp_tables_are_capped_like_the_database() {
    let mut b = backend_with_timeout(120);
    let r = b
        .execute(
            "CREATE TEMP TABLE big AS WITH RECURSIVE c(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) \
             SELECT x, randomblob(1000) AS pad FROM c",
        )
        .unwrap();
    assert!(r.contains("database or disk is full"), "{r}");
    let r = b.execute("SELECT COUNT(*) FROM temp.big").unwrap();
    assert!(r.starts_with("no such table"), "{r}");
    match peak_rss_bytes() {
        Some(peak) => assert!(peak < 1_200_000_000, "peak RSS {peak} bytes"),
        None => eprintln!("skipping the RSS check: /proc/self/status is not readable"),
    }
    // A TEMP table lives for one statement (as a MySQL temporary table did for one of
    // AgentBench's sessions), so it cannot be filled by a later one.
    b.execute("CREATE TEMP TABLE t2 (pad)").unwrap();
    let r = b.execute("INSERT INTO t2 SELECT randomblob(1000)").unwrap();
    assert!(r.starts_with("no such table"), "{r}");
}

/// `instr`, `replace` and `trim(x, set)` were quadratic single VM steps in SQLite (a review-style
/// `instr` of an 8 MB needle in a 16 MB haystack runs for hours, past any deadline). They are
/// linear now and stop at the deadline; results are SQLite's.
#[test]
fn sql_sqlite_quadratic_text_functions_are_contained() {
    let mut b = backend_with_timeout(2);
    let cases = [
        "SELECT instr(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'a') || 'b')",
        "SELECT length(replace(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'a') || 'b', 'x'))",
        "SELECT length(trim(printf('%.*c', 16000000, 'a'), printf('%.*c', 8000000, 'b') || 'c'))",
    ];
    for sql in cases {
        let t = Instant::now();
        let r = b.execute(sql).unwrap();
        let took = t.elapsed();
        assert!(
            r == "[(0,)]" || r == "[(16000000,)]" || r.starts_with("interrupted"),
            "{sql} → {r}"
        );
        assert!(
            took < Duration::from_secs(6),
            "{sql}: took {took:?} against a 2 s deadline"
        );
    }
    let r = b
        .execute("SELECT length(replace(printf('%.*c', 1000000, 'a'), 'a', printf('%.*c', 100, 'b')))")
        .unwrap();
    assert_eq!(r, "string or blob too big");
    // json_patch is quadratic in one step SQLite cannot interrupt (100k keys each: minutes):
    // refused.
    for f in ["json_patch", "jsonb_patch"] {
        let r = b
            .execute(&format!("SELECT {f}('{{\"a\": 1}}', '{{\"b\": 2}}')"))
            .unwrap();
        assert!(r.contains("not authorized"), "{f}: {r}");
    }
    // SQLite's results for ordinary inputs, as gold UPDATEs use them.
    let r = b
        .execute(
            "SELECT instr('héllo', 'l'), instr(x'00ff01', x'01'), instr('abc', ''), instr(NULL, 'a'), \
             instr(12345, 34), replace('aaaa', 'aa', 'b'), replace('abc', '', 'x'), replace('a', 'a', NULL), \
             trim('xxhixx', 'x'), ltrim('xyhi', 'yx'), rtrim('hi!!', '!'), trim('  a  '), trim('éaé', 'é')",
        )
        .unwrap();
    assert_eq!(r, "[(3, 3, 1, None, 3, 'bb', 'abc', None, 'hi', 'hi', 'hi', 'a', 'a')]");
    let r = b
        .execute(
            "UPDATE `US Ambassadors` SET Representative = replace(Representative, 'Maury', 'M.') WHERE Floors = '12'",
        )
        .unwrap();
    assert_eq!(r, "[]");
    assert_eq!(
        b.execute("SELECT Representative FROM `US Ambassadors` WHERE Floors = '12'")
            .unwrap(),
        "[('Dabney H. M.',)]"
    );
}

/// A row of many 16 MB values: only what the observation shows is read and rendered. Each
/// value used to be copied and rendered whole (`\x00` is four characters, one `format!` each),
/// outside the statement deadline: 16 of them made 256 MB of copies and a 1 GB string, over
/// ten seconds. (SQLite itself expands the constant `zeroblob`s when it steps, within its
/// 2 GiB heap limit.)
#[test]
fn sql_sqlite_a_row_of_huge_values_renders_only_what_is_shown() {
    let mut b = backend_with_timeout(2);
    let columns = vec!["zeroblob(16000000)"; 16].join(", ");
    let t = Instant::now();
    let r = b.execute(&format!("SELECT {columns}")).unwrap();
    let took = t.elapsed();
    assert!(
        r.starts_with("[(b'\\x00\\x00") && r.ends_with("[TRUNCATED]") && r.chars().count() == 811,
        "{r}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?} against a 2 s deadline");
    // Exactly as before where the cut falls inside a value: the text of the quote chosen from
    // the whole value ('"' only because of the quote at its end).
    let r = b.execute("SELECT printf('%.*c', 5000, 'a') || '''', 1").unwrap();
    assert!(r.starts_with("[(\"aaaa") && r.ends_with("aaa[TRUNCATED]"), "{r}");
}
