//! aarch64 NEON kernels.

use super::scalar;
use crate::quant::GgmlType;

/// # Safety
/// NEON must be available; rows as for the scalar kernels.
pub(super) unsafe fn tile(ty: GgmlType, n: usize, w: &[u8], acts: &[&[u8]], out: &mut [f32]) {
    scalar::tile(ty, n, w, acts, out)
}
