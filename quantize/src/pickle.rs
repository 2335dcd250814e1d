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

/// Limits a hostile pickle cannot exceed.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 22;

enum Item {
    Mark,
    Val(PVal),
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u64, PVal>,
}

/// Runs the pickle program in `data` and returns the value `STOP` leaves.
pub fn load(data: &[u8]) -> Result<PVal, PickleError> {
    let mut vm = Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    vm.run()
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

    fn push(&mut self, v: PVal) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return self.err("stack too deep");
        }
        self.stack.push(Item::Val(v));
        Ok(())
    }

    fn pop(&mut self) -> Result<PVal, PickleError> {
        match self.stack.pop() {
            Some(Item::Val(v)) => Ok(v),
            Some(Item::Mark) => self.err("unexpected mark"),
            None => self.err("stack underflow"),
        }
    }

    fn top(&mut self) -> Result<&mut PVal, PickleError> {
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
    fn pop_mark(&mut self) -> Result<Vec<PVal>, PickleError> {
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

    fn memo_put(&mut self, key: u64) -> Result<(), PickleError> {
        if self.memo.len() >= MAX_MEMO {
            return self.err("memo too large");
        }
        let v = self.top()?.clone();
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<(), PickleError> {
        match self.memo.get(&key) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo key {key} not set")),
        }
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
                b'(' => self.stack.push(Item::Mark),
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
                    self.push(PVal::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(PVal::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(PVal::List(items))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items).or_else(|m| self.err(m))?;
                    self.push(PVal::Dict(dict))?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        PVal::List(l) => l.push(v),
                        _ => return self.err("APPEND to a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        PVal::List(l) => l.extend(items),
                        _ => return self.err("APPENDS to a non-list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        PVal::Dict(d) => d.push((k, v)),
                        _ => return self.err("SETITEM on a non-dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items).or_else(|m| self.err(m))?;
                    match self.top()? {
                        PVal::Dict(d) => d.extend(new),
                        _ => return self.err("SETITEMS on a non-dict"),
                    }
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(pid).or_else(|m| self.err(m))?;
                    self.push(v)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = reduce(callable, args).or_else(|m| self.err(m))?;
                    self.push(v)?
                }
                0x81 => {
                    // NEWOBJ cls args: an instance we do not model.
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    self.push(PVal::Opaque(format!("{cls:?} instance")))?
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

fn pairs(items: Vec<PVal>) -> Result<Vec<(PVal, PVal)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of items for a dict".into());
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn persistent_load(pid: PVal) -> Result<PVal, String> {
    let PVal::Tuple(items) = pid else {
        return Err(format!("persistent id {pid:?} is not a tuple"));
    };
    match items.as_slice() {
        [PVal::Str(tag), ty, PVal::Str(key), _location, _numel] if tag == "storage" => {
            let dtype = match ty {
                PVal::Global(_, name) => name.clone(),
                other => return Err(format!("storage type {other:?} is not a global")),
            };
            Ok(PVal::Storage {
                key: key.clone(),
                dtype,
            })
        }
        _ => Err(format!("unsupported persistent id {items:?}")),
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
        return Ok(PVal::Opaque(format!("call of {callable:?}")));
    };
    let PVal::Tuple(args) = args else {
        return Err(format!("{module}.{name} called with non-tuple arguments"));
    };
    match (module.as_str(), name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let (Some(PVal::Storage { key, dtype }), Some(PVal::Int(offset)), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2), args.get(3))
            else {
                return Err(format!("{name}: unexpected arguments {args:?}"));
            };
            let shape = as_usizes(size).ok_or_else(|| format!("{name}: bad size {size:?}"))?;
            let stride = as_usizes(stride).ok_or_else(|| format!("{name}: bad stride {stride:?}"))?;
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
}
