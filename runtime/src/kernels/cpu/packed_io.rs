//! A repacked matrix as stored bytes and back, for the model's repack cache: the panel lines
//! and the f16 scales ([`PackedMatrix::stored_bytes`]), and the same matrix mapped back from a
//! file ([`PackedMatrix::map_file`]) instead of repacked into fresh memory.

use super::repack::per_block;
use super::table::repackable;
use super::types::{Line, PanelBuf, PANEL_ROWS};
use super::{KernelError, PackedMatrix};
use crate::quant::GgmlType;

impl PackedMatrix {
    /// The panel lines and the scales (empty for the k-quants) as bytes: what
    /// [`PackedMatrix::map_file`] maps back.
    pub fn stored_bytes(&self) -> (&[u8], &[u8]) {
        (self.lines.as_bytes(), self.scales.as_bytes())
    }

    /// Byte lengths of the lines and the scales of a `rows` x `cols` matrix of `ty` in panel
    /// form; an error for a type without one or a shape that is not whole blocks.
    pub fn stored_sizes(ty: GgmlType, rows: usize, cols: usize) -> Result<(usize, usize), KernelError> {
        if !repackable(ty) {
            return Err(KernelError::UnsupportedType(ty));
        }
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(KernelError::Columns {
                ty,
                cols,
                block: ty.block_size(),
            });
        }
        let blocks = rows.div_ceil(PANEL_ROWS).checked_mul(cols / ty.block_size());
        let (lines, scales) = per_block(ty);
        let size = |per: usize, unit: usize| blocks.and_then(|b| b.checked_mul(per)?.checked_mul(unit));
        match (size(lines, size_of::<Line>()), size(scales, 2)) {
            (Some(l), Some(s)) => Ok((l, s)),
            _ => Err(KernelError::Stored(format!("{rows} x {cols} is too large"))),
        }
    }

    /// A `rows` x `cols` matrix of `ty` whose panel lines start at byte `lines_at` of `file`
    /// (a multiple of 64) and its scales at `scales_at` (even), as
    /// [`PackedMatrix::stored_bytes`] wrote them; mapped copy-on-write, so the pages are the
    /// page cache's. The file must hold both ranges.
    pub fn map_file(
        file: &std::fs::File,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        lines_at: u64,
        scales_at: u64,
    ) -> Result<PackedMatrix, KernelError> {
        let (line_bytes, scale_bytes) = Self::stored_sizes(ty, rows, cols)?;
        let file_len = file
            .metadata()
            .map_err(|e| KernelError::Stored(format!("cannot stat the file: {e}")))?
            .len();
        for (at, len) in [(lines_at, line_bytes), (scales_at, scale_bytes)] {
            if at.checked_add(len as u64).is_none_or(|end| end > file_len) {
                return Err(KernelError::Stored(format!(
                    "bytes {at}..+{len} lie beyond the file's {file_len} bytes"
                )));
            }
        }
        Ok(PackedMatrix {
            ty,
            rows,
            cols,
            scales: PanelBuf::map_file(file, scales_at, scale_bytes / 2)?,
            lines: PanelBuf::map_file(file, lines_at, line_bytes / size_of::<Line>())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cpu::{QMatrix, ThreadPool};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::io::Write;

    /// Every panel type and a ragged row count: the mapped matrix reads back every row as the
    /// repacked one does, and bad offsets or a short file are errors.
    #[test]
    fn mapped_form_equals_the_repacked_one() {
        let pool = ThreadPool::new(2);
        let mut rng = StdRng::seed_from_u64(11);
        let (rows, cols) = (37, 512);
        for ty in crate::kernels::cpu::SUPPORTED.into_iter().filter(|&t| repackable(t)) {
            let row_bytes = cols / ty.block_size() * ty.type_size();
            // Any bytes: repacking moves bits, it does not interpret them.
            let data: Vec<u8> = (0..rows * row_bytes).map(|_| rng.random()).collect();
            let w = QMatrix::new(ty, rows, cols, &data).expect("matrix");
            let packed = PackedMatrix::new(&pool, &w).expect("repack");
            let (lines, scales) = packed.stored_bytes();
            assert_eq!(
                PackedMatrix::stored_sizes(ty, rows, cols).unwrap(),
                (lines.len(), scales.len())
            );
            let mut f = tempfile::tempfile().expect("temp file");
            f.write_all(&[0u8; 64]).unwrap();
            f.write_all(lines).unwrap();
            f.write_all(scales).unwrap();
            let scales_at = 64 + lines.len() as u64;
            let mapped = PackedMatrix::map_file(&f, ty, rows, cols, 64, scales_at).expect("map");
            for r in 0..rows {
                assert_eq!(mapped.row_bytes(r), packed.row_bytes(r), "{ty} row {r}");
            }
            assert!(
                PackedMatrix::map_file(&f, ty, rows, cols, 32, scales_at).is_err(),
                "{ty}: misaligned lines"
            );
            assert!(
                PackedMatrix::map_file(&f, ty, rows + 16, cols, 64, scales_at).is_err(),
                "{ty}: short file"
            );
            assert!(
                PackedMatrix::map_file(&f, ty, rows, cols, u64::MAX - 8, 0).is_err(),
                "{ty}: overflow"
            );
        }
        assert!(PackedMatrix::stored_sizes(GgmlType::F16, 1, 32).is_err());
        assert!(PackedMatrix::stored_sizes(GgmlType::Q4_0, 1, 33).is_err());
        assert!(PackedMatrix::stored_sizes(GgmlType::Q4_0, usize::MAX, 1 << 20).is_err());
    }
}
