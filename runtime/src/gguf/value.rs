//! GGUF metadata values.

use std::fmt;

/// The `gguf_metadata_value_type` ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Encoded size of a scalar of this type; `None` for strings and arrays.
    pub fn scalar_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }
}

/// A metadata value. Arrays are stored compactly by element type (see [`Array`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, held as one typed vector so that it costs about what it takes in the
/// file (a `u8` array one byte per element, strings their text plus one offset each) rather
/// than a full [`Value`] per element. Empty arrays keep their element type so they round-trip.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(StringArray),
    /// Arrays of arrays; each inner array has its own element type.
    Array(Vec<Array>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Strings stored back to back in one buffer; `ends[i]` is where string `i` stops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StringArray {
    text: String,
    ends: Vec<usize>,
}

impl StringArray {
    pub fn new() -> StringArray {
        StringArray::default()
    }

    /// Room for `count` strings of `text_bytes` bytes in all.
    pub fn with_capacity(count: usize, text_bytes: usize) -> StringArray {
        StringArray {
            text: String::with_capacity(text_bytes),
            ends: Vec::with_capacity(count),
        }
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
        self.ends.push(self.text.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * std::mem::size_of::<usize>()
    }
}

impl<S: AsRef<str>> FromIterator<S> for StringArray {
    fn from_iter<I: IntoIterator<Item = S>>(items: I) -> StringArray {
        let mut out = StringArray::new();
        for s in items {
            out.push(s.as_ref());
        }
        out
    }
}

/// The elements of an [`Array`] in order, borrowed ([`Array::iter`]).
pub struct ArrayIter<'a> {
    array: &'a Array,
    next: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        let item = self.array.get(self.next)?;
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.array.len().saturating_sub(self.next);
        (left, Some(left))
    }
}

impl ExactSizeIterator for ArrayIter<'_> {}

/// One element of an [`Array`], borrowed: the same accessors as [`Value`] without copying
/// strings or nested arrays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Item<'a> {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(&'a str),
    Array(&'a Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl<'a> Item<'a> {
    pub fn value_type(&self) -> ValueType {
        match self {
            Item::U8(_) => ValueType::U8,
            Item::I8(_) => ValueType::I8,
            Item::U16(_) => ValueType::U16,
            Item::I16(_) => ValueType::I16,
            Item::U32(_) => ValueType::U32,
            Item::I32(_) => ValueType::I32,
            Item::F32(_) => ValueType::F32,
            Item::Bool(_) => ValueType::Bool,
            Item::String(_) => ValueType::String,
            Item::Array(_) => ValueType::Array,
            Item::U64(_) => ValueType::U64,
            Item::I64(_) => ValueType::I64,
            Item::F64(_) => ValueType::F64,
        }
    }

    /// Any integer value that fits in a u64 (GGUF writers differ in which width they use).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Item::U8(v) => Some(v as u64),
            Item::U16(v) => Some(v as u64),
            Item::U32(v) => Some(v as u64),
            Item::U64(v) => Some(v),
            Item::I8(v) => u64::try_from(v).ok(),
            Item::I16(v) => u64::try_from(v).ok(),
            Item::I32(v) => u64::try_from(v).ok(),
            Item::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer value that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Item::I8(v) => Some(v as i64),
            Item::I16(v) => Some(v as i64),
            Item::I32(v) => Some(v as i64),
            Item::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// Any float (or integer) value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Item::F32(v) => Some(v as f64),
            Item::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Item::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&'a str> {
        match *self {
            Item::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&'a Array> {
        match *self {
            Item::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An owned copy (clones strings and nested arrays).
    pub fn to_value(&self) -> Value {
        match *self {
            Item::U8(v) => Value::U8(v),
            Item::I8(v) => Value::I8(v),
            Item::U16(v) => Value::U16(v),
            Item::I16(v) => Value::I16(v),
            Item::U32(v) => Value::U32(v),
            Item::I32(v) => Value::I32(v),
            Item::F32(v) => Value::F32(v),
            Item::Bool(v) => Value::Bool(v),
            Item::String(s) => Value::String(s.to_string()),
            Item::Array(a) => Value::Array(a.clone()),
            Item::U64(v) => Value::U64(v),
            Item::I64(v) => Value::I64(v),
            Item::F64(v) => Value::F64(v),
        }
    }
}

impl Array {
    /// An empty array of `elem`.
    pub fn empty(elem: ValueType) -> Array {
        match elem {
            ValueType::U8 => Array::U8(Vec::new()),
            ValueType::I8 => Array::I8(Vec::new()),
            ValueType::U16 => Array::U16(Vec::new()),
            ValueType::I16 => Array::I16(Vec::new()),
            ValueType::U32 => Array::U32(Vec::new()),
            ValueType::I32 => Array::I32(Vec::new()),
            ValueType::F32 => Array::F32(Vec::new()),
            ValueType::Bool => Array::Bool(Vec::new()),
            ValueType::String => Array::String(StringArray::new()),
            ValueType::Array => Array::Array(Vec::new()),
            ValueType::U64 => Array::U64(Vec::new()),
            ValueType::I64 => Array::I64(Vec::new()),
            ValueType::F64 => Array::F64(Vec::new()),
        }
    }

    /// An array of strings.
    pub fn strings<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Array {
        Array::String(items.into_iter().collect())
    }

    /// Builds an array of `elem` from values, each of which must be an `elem`.
    pub fn from_values(elem: ValueType, items: impl IntoIterator<Item = Value>) -> Result<Array, String> {
        let mut out = Array::empty(elem);
        for (i, item) in items.into_iter().enumerate() {
            let found = item.value_type();
            let mismatch = || format!("array of {elem:?} given a {found:?} at index {i}");
            match (&mut out, item) {
                (Array::U8(v), Value::U8(x)) => v.push(x),
                (Array::I8(v), Value::I8(x)) => v.push(x),
                (Array::U16(v), Value::U16(x)) => v.push(x),
                (Array::I16(v), Value::I16(x)) => v.push(x),
                (Array::U32(v), Value::U32(x)) => v.push(x),
                (Array::I32(v), Value::I32(x)) => v.push(x),
                (Array::F32(v), Value::F32(x)) => v.push(x),
                (Array::Bool(v), Value::Bool(x)) => v.push(x),
                (Array::String(v), Value::String(x)) => v.push(&x),
                (Array::Array(v), Value::Array(x)) => v.push(x),
                (Array::U64(v), Value::U64(x)) => v.push(x),
                (Array::I64(v), Value::I64(x)) => v.push(x),
                (Array::F64(v), Value::F64(x)) => v.push(x),
                _ => return Err(mismatch()),
            }
        }
        Ok(out)
    }

    pub fn elem_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::Array(_) => ValueType::Array,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::Array(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i`, borrowed.
    pub fn get(&self, i: usize) -> Option<Item<'_>> {
        Some(match self {
            Array::U8(v) => Item::U8(*v.get(i)?),
            Array::I8(v) => Item::I8(*v.get(i)?),
            Array::U16(v) => Item::U16(*v.get(i)?),
            Array::I16(v) => Item::I16(*v.get(i)?),
            Array::U32(v) => Item::U32(*v.get(i)?),
            Array::I32(v) => Item::I32(*v.get(i)?),
            Array::F32(v) => Item::F32(*v.get(i)?),
            Array::Bool(v) => Item::Bool(*v.get(i)?),
            Array::String(v) => Item::String(v.get(i)?),
            Array::Array(v) => Item::Array(v.get(i)?),
            Array::U64(v) => Item::U64(*v.get(i)?),
            Array::I64(v) => Item::I64(*v.get(i)?),
            Array::F64(v) => Item::F64(*v.get(i)?),
        })
    }

    /// The elements in order, borrowed.
    pub fn iter(&self) -> ArrayIter<'_> {
        ArrayIter { array: self, next: 0 }
    }

    /// The strings of a string array; `None` for other element types.
    pub fn as_strings(&self) -> Option<&StringArray> {
        match self {
            Array::String(v) => Some(v),
            _ => None,
        }
    }

    /// Heap memory this array holds (capacity, not just length), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        fn vec_bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        match self {
            Array::U8(v) => vec_bytes(v),
            Array::I8(v) => vec_bytes(v),
            Array::U16(v) => vec_bytes(v),
            Array::I16(v) => vec_bytes(v),
            Array::U32(v) => vec_bytes(v),
            Array::I32(v) => vec_bytes(v),
            Array::F32(v) => vec_bytes(v),
            Array::Bool(v) => vec_bytes(v),
            Array::String(v) => v.heap_bytes(),
            Array::Array(v) => vec_bytes(v) + v.iter().map(Array::heap_bytes).sum::<usize>(),
            Array::U64(v) => vec_bytes(v),
            Array::I64(v) => vec_bytes(v),
            Array::F64(v) => vec_bytes(v),
        }
    }
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        self.as_item().value_type()
    }

    /// This value as a borrowed [`Item`], which carries the accessors.
    pub fn as_item(&self) -> Item<'_> {
        match self {
            Value::U8(v) => Item::U8(*v),
            Value::I8(v) => Item::I8(*v),
            Value::U16(v) => Item::U16(*v),
            Value::I16(v) => Item::I16(*v),
            Value::U32(v) => Item::U32(*v),
            Value::I32(v) => Item::I32(*v),
            Value::F32(v) => Item::F32(*v),
            Value::Bool(v) => Item::Bool(*v),
            Value::String(s) => Item::String(s),
            Value::Array(a) => Item::Array(a),
            Value::U64(v) => Item::U64(*v),
            Value::I64(v) => Item::I64(*v),
            Value::F64(v) => Item::F64(*v),
        }
    }

    /// Any integer value that fits in a u64 (GGUF writers differ in which width they use).
    pub fn as_u64(&self) -> Option<u64> {
        self.as_item().as_u64()
    }

    /// Any integer value that fits in an i64.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_item().as_i64()
    }

    /// Any float (or integer) value as f64.
    pub fn as_f64(&self) -> Option<f64> {
        self.as_item().as_f64()
    }

    pub fn as_bool(&self) -> Option<bool> {
        self.as_item().as_bool()
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_item().as_str()
    }

    pub fn as_array(&self) -> Option<&Array> {
        self.as_item().as_array()
    }

    /// Heap memory behind this value (strings and arrays), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Value::String(s) => s.capacity(),
            Value::Array(a) => a.heap_bytes(),
            _ => 0,
        }
    }
}

impl fmt::Display for Item<'_> {
    /// Short human form: long arrays are summarised, long strings cut.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Item::U8(v) => write!(f, "{v}"),
            Item::I8(v) => write!(f, "{v}"),
            Item::U16(v) => write!(f, "{v}"),
            Item::I16(v) => write!(f, "{v}"),
            Item::U32(v) => write!(f, "{v}"),
            Item::I32(v) => write!(f, "{v}"),
            Item::F32(v) => write!(f, "{v}"),
            Item::Bool(v) => write!(f, "{v}"),
            Item::U64(v) => write!(f, "{v}"),
            Item::I64(v) => write!(f, "{v}"),
            Item::F64(v) => write!(f, "{v}"),
            Item::String(s) => {
                let cut: String = s.chars().take(80).collect();
                if cut.len() < s.len() {
                    write!(f, "{cut:?}… ({} bytes)", s.len())
                } else {
                    write!(f, "{s:?}")
                }
            }
            Item::Array(items) => {
                write!(f, "[{:?}; {}]", items.elem_type(), items.len())?;
                if !items.is_empty() {
                    f.write_str(" ")?;
                    for i in 0..items.len().min(4) {
                        if i > 0 {
                            f.write_str(", ")?;
                        }
                        if let Some(item) = items.get(i) {
                            write!(f, "{item}")?;
                        }
                    }
                    if items.len() > 4 {
                        f.write_str(", …")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Value {
    /// Short human form: long arrays are summarised, long strings cut.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_item().fmt(f)
    }
}
