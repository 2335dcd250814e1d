//! A small, safe pickle virtual machine: just the opcodes `torch.save` emits (protocols 2-4)
//! and just enough object semantics to rebuild a state dict.
//!
//! Nothing is ever imported or executed: `GLOBAL` yields a name, `REDUCE` of the few known
//! callables (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`,
//! `collections.OrderedDict`) builds a description, and every other call becomes an opaque
//! value that is an error only if a tensor needs it. Persistent ids (`BINPERSID`) describe
//! storages kept as separate zip entries.

use std::collections::HashMap;

/// A value on the pickle stack.
#[derive(Clone, Debug, PartialEq)]
pub enum PVal {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<PVal>),
    List(Vec<PVal>),
    Dict(Vec<(PVal, PVal)>),
    /// `module.name` from GLOBAL / STACK_GLOBAL.
    Global(String, String),
    /// A storage from a persistent id `('storage', torch.XStorage, key, location, numel)`.
    Storage {
        key: String,
        dtype: String,
    },
    /// `_rebuild_tensor_v2(storage, offset, size, stride, ...)`.
    Tensor {
        storage_key: String,
        dtype: String,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    /// A call this VM does not model.
    Opaque(String),
}

/// Why a pickle could not be evaluated.
#[derive(Debug, thiserror::Error)]
#[error("pickle: {msg} (at byte {pos})")]
pub struct PickleError {
    pub msg: String,
    pub pos: usize,
}

/// Limits a hostile pickle cannot exceed. A real state dict is a few levels deep, holds a few
/// thousand tensors and memoizes each object once, so these are far above any checkpoint.
const MAX_STACK: usize = 1 << 20;
/// Memo entries, and the largest memo index (`torch.save` numbers them 0, 1, 2, ...).
pub const MAX_MEMO: usize = 1 << 22;
/// Containers nested deeper than this are refused (`torch.save` nests about 5 deep); it also
/// keeps the recursive `Drop`, `Clone` and `Debug` of a value far from the thread's stack limit.
pub const MAX_DEPTH: usize = 256;
/// Approximate bytes of objects one program may materialize, copies included: `DUP`, memo
/// gets and memo puts copy a value, so a few hundred opcodes could otherwise build an
/// exponentially large object (a "pickle bomb").
pub const MAX_MATERIALIZED: u64 = 256 << 20;
/// The largest pickle program [`load`] is given by the PyTorch reader.
pub const MAX_PROGRAM: u64 = 256 << 20;

/// A stack or memo value with what it cost: nesting depth and approximate bytes.
#[derive(Clone)]
struct Sized_ {
    val: PVal,
    depth: usize,
    bytes: u64,
}

enum Item {
    Mark,
    Val(Sized_),
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u64, Sized_>,
    /// Approximate bytes materialized so far (never decreases, so copies count too).
    materialized: u64,
    max_materialized: u64,
}

/// Runs the pickle program in `data` and returns the value `STOP` leaves. The program runs
/// under the budgets above: a clear error, never an abort, when one is exceeded.
pub fn load(data: &[u8]) -> Result<PVal, PickleError> {
    load_with_budget(data, MAX_MATERIALIZED)
}

/// [`load`] with another materialization budget in approximate bytes (the fuzz target uses a
/// small one so each run is quick).
pub fn load_with_budget(data: &[u8], max_materialized: u64) -> Result<PVal, PickleError> {
    let mut vm = Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        materialized: 0,
        max_materialized,
    };
    vm.run()
}

/// The in-memory footprint of one value node, not counting what it owns.
const NODE_BYTES: u64 = std::mem::size_of::<PVal>() as u64;

/// Approximate bytes a value's own payload (strings, byte strings) adds to a node.
fn payload_bytes(v: &PVal) -> u64 {
    match v {
        PVal::Str(s) | PVal::Opaque(s) => s.len() as u64,
        PVal::Bytes(b) => b.len() as u64,
        PVal::Global(m, n) => (m.len() + n.len()) as u64,
        PVal::Storage { key, dtype } => (key.len() + dtype.len()) as u64,
        PVal::Tensor {
            storage_key,
            dtype,
            shape,
            stride,
            ..
        } => (storage_key.len() + dtype.len() + 8 * (shape.len() + stride.len())) as u64,
        _ => 0,
    }
}

/// A short description of a value for error messages: never the whole (possibly huge) value.
fn brief(v: &impl std::fmt::Debug) -> String {
    /// Collects up to `room` bytes, then fails so `Debug` stops walking the value.
    struct Bounded {
        text: String,
        room: usize,
    }
    impl std::fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.text.len() + c.len_utf8() > self.room {
                    return Err(std::fmt::Error);
                }
                self.text.push(c);
            }
            Ok(())
        }
    }
    let mut out = Bounded {
        text: String::new(),
        room: 200,
    };
    if std::fmt::Write::write_fmt(&mut out, format_args!("{v:?}")).is_err() {
        out.text.push_str("...");
    }
    out.text
}

impl<'a> Vm<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, PickleError> {
        Err(PickleError {
            msg: msg.into(),
            pos: self.pos,
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        if n > self.data.len() - self.pos {
            return self.err(format!("truncated: {n} more bytes needed"));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated text line");
        };
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(s)
    }

    fn utf8(&mut self, n: usize) -> Result<String, PickleError> {
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    /// Adds `bytes` to the materialized total, failing past [`MAX_MATERIALIZED`].
    fn charge(&mut self, bytes: u64) -> Result<(), PickleError> {
        self.materialized = self.materialized.saturating_add(bytes);
        if self.materialized > self.max_materialized {
            return self.err(format!(
                "the program builds more than {} MiB of objects (a pickle bomb?)",
                self.max_materialized >> 20
            ));
        }
        Ok(())
    }

    fn push_item(&mut self, item: Item) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("stack deeper than {MAX_STACK} entries"));
        }
        self.stack.push(item);
        Ok(())
    }

    /// Pushes a new leaf value (or one whose parts were not on the stack), charging its size.
    fn push(&mut self, v: PVal) -> Result<(), PickleError> {
        let bytes = NODE_BYTES + payload_bytes(&v);
        self.charge(bytes)?;
        self.push_item(Item::Val(Sized_ {
            val: v,
            depth: 0,
            bytes,
        }))
    }

    /// Pushes a container built from `parts` (already charged when they were made): one more
    /// level of nesting and one more node.
    fn push_container(&mut self, make: impl FnOnce(Vec<PVal>) -> PVal, parts: Vec<Sized_>) -> Result<(), PickleError> {
        let depth = parts.iter().map(|p| p.depth + 1).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return self.err(format!("objects nested more than {MAX_DEPTH} deep"));
        }
        let bytes = parts.iter().fold(NODE_BYTES, |a, p| a.saturating_add(p.bytes));
        self.charge(NODE_BYTES)?;
        let val = make(parts.into_iter().map(|p| p.val).collect());
        self.push_item(Item::Val(Sized_ { val, depth, bytes }))
    }

    fn pop_sized(&mut self) -> Result<Sized_, PickleError> {
        match self.stack.pop() {
            Some(Item::Val(v)) => Ok(v),
            Some(Item::Mark) => self.err("unexpected mark"),
            None => self.err("stack underflow"),
        }
    }

    fn pop(&mut self) -> Result<PVal, PickleError> {
        Ok(self.pop_sized()?.val)
    }

    fn top(&mut self) -> Result<&mut Sized_, PickleError> {
        let pos = self.pos;
        match self.stack.last_mut() {
            Some(Item::Val(v)) => Ok(v),
            _ => Err(PickleError {
                msg: "no object on the stack".into(),
                pos,
            }),
        }
    }

    /// Pops everything down to the last MARK.
    fn pop_mark(&mut self) -> Result<Vec<Sized_>, PickleError> {
        let mut items = Vec::new();
        loop {
            match self.stack.pop() {
                Some(Item::Val(v)) => items.push(v),
                Some(Item::Mark) => break,
                None => return self.err("MARK missing"),
            }
        }
        items.reverse();
        Ok(items)
    }

    /// Adds `parts` to the container on top of the stack with `add`, keeping its depth and
    /// size current (`parts` were charged when they were made).
    fn extend_top(
        &mut self,
        parts: Vec<Sized_>,
        what: &str,
        add: impl FnOnce(&mut PVal, Vec<PVal>) -> bool,
    ) -> Result<(), PickleError> {
        let depth = parts.iter().map(|p| p.depth + 1).max().unwrap_or(0);
        let bytes = parts.iter().fold(0u64, |a, p| a.saturating_add(p.bytes));
        let top = self.top()?;
        let new_depth = top.depth.max(depth);
        if !add(&mut top.val, parts.into_iter().map(|p| p.val).collect()) {
            let target = kind(&self.top()?.val);
            return self.err(format!("{what} on a {target}"));
        }
        let top = self.top()?;
        top.depth = new_depth;
        top.bytes = top.bytes.saturating_add(bytes);
        if new_depth > MAX_DEPTH {
            return self.err(format!("objects nested more than {MAX_DEPTH} deep"));
        }
        Ok(())
    }

    fn memo_index(&self, key: u64) -> Result<u64, PickleError> {
        if key >= MAX_MEMO as u64 {
            return self.err(format!("memo index {key} beyond the limit of {MAX_MEMO}"));
        }
        Ok(key)
    }

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        let key = self.memo_index(key)?;
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&key) {
            return self.err(format!("more than {MAX_MEMO} memo entries"));
        }
        let bytes = self.top()?.bytes;
        self.charge(bytes)?;
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        let key = self.memo_index(key)?;
        let Some(bytes) = self.memo.get(&key).map(|v| v.bytes) else {
            return self.err(format!("memo key {key} not set"));
        };
        self.charge(bytes)?;
        let v = self.memo[&key].clone();
        self.push_item(Item::Val(v))
    }

    fn run(&mut self) -> Result<PVal, PickleError> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let v = self.u8()?;
                    if v > 5 {
                        return self.err(format!("pickle protocol {v}"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only.
                    self.u64()?;
                }
                b'.' => return self.pop(),
                b'(' => self.push_item(Item::Mark)?,
                b'}' => self.push(PVal::Dict(Vec::new()))?,
                b']' => self.push(PVal::List(Vec::new()))?,
                b')' => self.push(PVal::Tuple(Vec::new()))?,
                b'N' => self.push(PVal::None)?,
                0x88 => self.push(PVal::Bool(true))?,
                0x89 => self.push(PVal::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(PVal::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(PVal::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(PVal::Int(v as i64))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return self.err("integer wider than 64 bits");
                    }
                    let mut buf = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.push(PVal::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    self.push(PVal::Float(f64::from_be_bytes(b.try_into().expect("8"))))?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.utf8(n)?;
                    self.push(PVal::Str(s))?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.utf8(n)?;
                    self.push(PVal::Str(s))?
                }
                0x8d => {
                    let n = self.u64()?;
                    let n = usize::try_from(n).or_else(|_| self.err("string too long"))?;
                    let s = self.utf8(n)?;
                    self.push(PVal::Str(s))?
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(if op == b'T' {
                        PVal::Str(String::from_utf8_lossy(&b).into_owned())
                    } else {
                        PVal::Bytes(b)
                    })?
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(if op == b'U' {
                        PVal::Str(String::from_utf8_lossy(&b).into_owned())
                    } else {
                        PVal::Bytes(b)
                    })?
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    self.memo_put(k)?
                }
                0x94 => {
                    // MEMOIZE: the next free index.
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()? as u64;
                    self.memo_get(k)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(PVal::Global(module, name))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (PVal::Str(m), PVal::Str(n)) => self.push(PVal::Global(m, n))?,
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_container(PVal::Tuple, items)?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop_sized()?);
                    }
                    items.reverse();
                    self.push_container(PVal::Tuple, items)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_container(PVal::List, items)?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return self.err("odd number of items for a dict");
                    }
                    self.push_container(|v| PVal::Dict(pairs(v)), items)?
                }
                b'a' => {
                    let v = self.pop_sized()?;
                    self.extend_top(vec![v], "APPEND", append_to_list)?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_top(items, "APPENDS", append_to_list)?
                }
                b's' => {
                    let v = self.pop_sized()?;
                    let k = self.pop_sized()?;
                    self.extend_top(vec![k, v], "SETITEM", add_to_dict)?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return self.err("odd number of items for a dict");
                    }
                    self.extend_top(items, "SETITEMS", add_to_dict)?
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let bytes = self.top()?.bytes;
                    self.charge(bytes)?;
                    let v = self.top()?.clone();
                    self.push_item(Item::Val(v))?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid).or_else(|m| self.err(m))?;
                    self.push(v)?
                }
                b'R' => {
                    let args = self.pop_sized()?;
                    let callable = self.pop()?;
                    // The result may be one of the arguments (`_rebuild_parameter` returns its
                    // first), so it keeps their depth: resetting it would let a program nest
                    // without limit by wrapping and unwrapping.
                    let (depth, bytes) = (args.depth, args.bytes.saturating_add(NODE_BYTES));
                    let val = reduce(callable, args.val).or_else(|m| self.err(m))?;
                    self.charge(NODE_BYTES + payload_bytes(&val))?;
                    self.push_item(Item::Val(Sized_ { val, depth, bytes }))?
                }
                0x81 => {
                    // NEWOBJ cls args: an instance we do not model.
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(PVal::Opaque(format!("{} instance", brief(&cls))))?
                }
                b'b' => {
                    // BUILD: `__setstate__`; the state of an OrderedDict or a tensor does not
                    // matter for the weights, so it is dropped.
                    self.pop()?;
                    self.top()?;
                }
                _ => return self.err(format!("unsupported opcode 0x{op:02x}")),
            }
        }
    }
}

/// Pairs up keys and values (the caller checked the count is even).
fn pairs(items: Vec<PVal>) -> Vec<(PVal, PVal)> {
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

fn append_to_list(target: &mut PVal, items: Vec<PVal>) -> bool {
    match target {
        PVal::List(l) => {
            l.extend(items);
            true
        }
        _ => false,
    }
}

fn add_to_dict(target: &mut PVal, items: Vec<PVal>) -> bool {
    match target {
        PVal::Dict(d) => {
            d.extend(pairs(items));
            true
        }
        _ => false,
    }
}

/// The kind of a value, for error messages.
fn kind(v: &PVal) -> &'static str {
    match v {
        PVal::None => "None",
        PVal::Bool(_) => "bool",
        PVal::Int(_) => "int",
        PVal::Float(_) => "float",
        PVal::Str(_) => "str",
        PVal::Bytes(_) => "bytes",
        PVal::Tuple(_) => "tuple",
        PVal::List(_) => "list",
        PVal::Dict(_) => "dict",
        PVal::Global(..) => "global",
        PVal::Storage { .. } => "storage",
        PVal::Tensor { .. } => "tensor",
        PVal::Opaque(_) => "opaque object",
    }
}

fn persistent_load(pid: PVal) -> Result<PVal, String> {
    let PVal::Tuple(items) = pid else {
        return Err(format!("persistent id {} is not a tuple", brief(&pid)));
    };
    match items.as_slice() {
        [PVal::Str(tag), ty, PVal::Str(key), _location, _numel] if tag == "storage" => {
            let dtype = match ty {
                PVal::Global(_, name) => name.clone(),
                other => return Err(format!("storage type {} is not a global", brief(other))),
            };
            Ok(PVal::Storage {
                key: key.clone(),
                dtype,
            })
        }
        _ => Err(format!("unsupported persistent id {}", brief(&items))),
    }
}

fn as_usizes(v: &PVal) -> Option<Vec<usize>> {
    match v {
        PVal::Tuple(items) | PVal::List(items) => items
            .iter()
            .map(|x| match x {
                PVal::Int(i) => usize::try_from(*i).ok(),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn reduce(callable: PVal, args: PVal) -> Result<PVal, String> {
    let PVal::Global(module, name) = &callable else {
        return Ok(PVal::Opaque(format!("call of {}", brief(&callable))));
    };
    let PVal::Tuple(args) = args else {
        return Err(format!("{module}.{name} called with non-tuple arguments"));
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let (Some(PVal::Storage { key, dtype }), Some(PVal::Int(offset)), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err(format!("{name}: unexpected arguments {}", brief(&args)));
            };
            let shape = as_usizes(size).ok_or_else(|| format!("{name}: bad size {}", brief(size)))?;
            let stride = as_usizes(stride).ok_or_else(|| format!("{name}: bad stride {}", brief(stride)))?;
            let offset = usize::try_from(*offset).map_err(|_| format!("{name}: negative storage offset"))?;
            if shape.len() != stride.len() {
                return Err(format!("{name}: size and stride differ in length"));
            }
            Ok(PVal::Tensor {
                storage_key: key.clone(),
                dtype: dtype.clone(),
                offset,
                shape,
                stride,
            })
        }
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            args.into_iter().next().ok_or_else(|| format!("{name}: no arguments"))
        }
        ("collections", "OrderedDict") | ("builtins", "dict") | ("__builtin__", "dict") => Ok(PVal::Dict(Vec::new())),
        _ => Ok(PVal::Opaque(format!("{module}.{name}(...)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_programs_are_errors() {
        for bad in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02.",
            b"\x80\x02h\x05.",
            b"\x80\x02X\xff\xff\xff\xff",
            b"\x80\x02(u.",
            b"\x80\x02}K\x01u.",
            b"\x80\x02K\x01K\x02s.",
            b"\x80\x02\xff",
            b"\x80\x02cfoo",
            b"\x80\x02NQ.",
        ] {
            assert!(load(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn small_program() {
        // {'a': (1, -2, 'x'), 'b': [True, None]} at protocol 2, by hand.
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01J\xfe\xff\xff\xffX\x01\x00\x00\x00x\x87X\x01\x00\x00\x00b]q\x01(\x88Neu.";
        let v = load(p).unwrap();
        assert_eq!(
            v,
            PVal::Dict(vec![
                (
                    PVal::Str("a".into()),
                    PVal::Tuple(vec![PVal::Int(1), PVal::Int(-2), PVal::Str("x".into())])
                ),
                (PVal::Str("b".into()), PVal::List(vec![PVal::Bool(true), PVal::None]))
            ])
        );
    }

    /// `]` then `DUP APPEND` n times: each round appends a copy of the list to itself, so the
    /// value doubles; 64 rounds would be 2^64 nodes.
    #[test]
    fn dup_append_bomb_is_refused() {
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"2a");
        }
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.msg.contains("pickle bomb"), "{e}");
    }

    /// The same doubling through the memo: get a copy, append it, memoize the result again.
    #[test]
    fn memo_append_bomb_is_refused() {
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..64 {
            p.extend_from_slice(b"h\x00aq\x00");
        }
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.msg.contains("pickle bomb"), "{e}");
    }

    /// One million nested 1-tuples overflowed the stack when the value was dropped.
    #[test]
    fn million_nested_tuples_are_refused() {
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, 1_000_000));
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.msg.contains("nested more than"), "{e}");
        // The same depth through MARK ... TUPLE and through lists appended into lists.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', 100_000));
        p.extend(std::iter::repeat_n(b't', 100_000));
        p.push(b'.');
        assert!(load(&p).unwrap_err().msg.contains("nested more than"));
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 100_000));
        p.extend(std::iter::repeat_n(b'a', 99_999));
        p.push(b'.');
        assert!(load(&p).unwrap_err().msg.contains("nested more than"));
    }

    /// `_rebuild_parameter((x,))` returns `x`: calling it must not reset the depth count, or
    /// a program could nest without limit by wrapping values in calls.
    #[test]
    fn nesting_through_calls_is_counted() {
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_parameter\nq\x000".to_vec();
        let rounds = 400;
        p.extend(std::iter::repeat_n(*b"h\x00", rounds).flatten());
        p.push(b')');
        for _ in 0..rounds {
            p.extend(std::iter::repeat_n(0x85u8, 200)); // 200 levels deeper
            p.extend_from_slice(b"\x85R"); // (x,) -> x through the call
        }
        p.push(b'.');
        let e = load(&p).unwrap_err();
        assert!(e.msg.contains("nested more than"), "{e}");
    }

    #[test]
    fn nesting_up_to_the_limit_is_fine() {
        let mut p = b"\x80\x02)".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, MAX_DEPTH));
        p.push(b'.');
        assert!(load(&p).is_ok());
    }

    #[test]
    fn huge_memo_index_is_refused() {
        for p in [&b"\x80\x02Nr\xff\xff\xff\xff."[..], b"\x80\x02j\xff\xff\xff\xff."] {
            let e = load(p).unwrap_err();
            assert!(e.msg.contains("memo index 4294967295"), "{e}");
        }
    }

    /// A huge stack of MARKs (which were not counted against the stack limit).
    #[test]
    fn mark_flood_is_refused() {
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', MAX_STACK + 10));
        let e = load(&p).unwrap_err();
        assert!(e.msg.contains("stack deeper"), "{e}");
    }

    /// Error messages describe a huge value briefly instead of printing all of it.
    #[test]
    fn errors_stay_short() {
        let mut p = b"\x80\x02](".to_vec();
        for _ in 0..100_000 {
            p.extend_from_slice(b"K\x07");
        }
        p.extend_from_slice(b"eQ.");
        let e = load(&p).unwrap_err();
        assert!(e.msg.len() < 400, "{} bytes", e.msg.len());
    }
}
