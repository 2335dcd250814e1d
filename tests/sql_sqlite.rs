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
        "DETACH main".to_string(),
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
    // Read-only schema pragmas stay available to the model.
    let r = b.execute("PRAGMA table_info(`US Ambassadors`)").unwrap();
    assert!(r.contains("'Representative'"), "{r}");
    // A runaway INSERT … SELECT hits the size caps, not the host's memory.
    let r = b.execute("SELECT length(zeroblob(100000000))").unwrap();
    assert!(r.contains("too big"), "{r}");
}

fn dev_jsonl() -> Option<PathBuf> {
    let base = std::env::var("EDGEACT_AGENTBENCH_DATA")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/agentbench/data").into());
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
