//! libFuzzer target: the DB judge's Python evaluator (`edgeact_runtime::py::eval`, run on the
//! model's `Final Answer:` text, so on what a hostile model writes) and the judge's steps after
//! it (`list()`, `set()` of the items, `==`, `float()`) on arbitrary text must give a value or
//! an error within the evaluator's limits: no panic, no stack overflow, no hang, no unbounded
//! memory. Seed corpus in `corpus/py_eval` (answers as models write them and operator edges).
#![no_main]

use edgeact_runtime::py::{self, PyValue};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(answer) = std::str::from_utf8(data) else {
        return;
    };
    let items = match py::eval(answer) {
        Ok(value) => value.to_list().unwrap_or_else(|| vec![value]),
        Err(_) => vec![PyValue::Str(answer.to_string())],
    };
    for item in &items {
        std::hint::black_box(item.to_float());
        std::hint::black_box(item == item);
    }
    if let Ok(distinct) = py::distinct_items(items) {
        let set = PyValue::Set(distinct);
        std::hint::black_box(set == set);
    }
});
