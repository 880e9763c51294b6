//! Words moved between the frame and map memory with plain loads and stores, which on this path
//! cost much less than a helper call. Frame offsets are known only at run time, hence
//! [`ptr_at_var`]; neither side need be aligned.

use aya_ebpf::programs::XdpContext;
use edge_common::Counter;

use crate::headers::ptr_at_var;

pub const WORD: usize = 8;

/// The word at frame `offset`.
#[inline(always)]
pub fn read_frame(ctx: &XdpContext, offset: usize) -> Result<u64, Counter> {
    let word: *const u64 = ptr_at_var(ctx, offset)?;
    // SAFETY: `ptr_at_var` checked that the word lies inside the frame.
    Ok(unsafe { word.read_unaligned() })
}

/// Stores `word` at frame `offset`.
#[inline(always)]
pub fn write_frame(ctx: &XdpContext, offset: usize, word: u64) -> Result<(), Counter> {
    let target: *mut u64 = ptr_at_var(ctx, offset)?;
    // SAFETY: `ptr_at_var` checked that the word lies inside the frame.
    unsafe { target.write_unaligned(word) };
    Ok(())
}

/// The word at byte `at` of `bytes`, which need not be aligned.
#[inline(always)]
pub fn load<const N: usize>(bytes: &[u8; N], at: usize) -> Result<u64, Counter> {
    let word = bytes.get(at..at + WORD).ok_or(Counter::ReplyFailed)?;
    // SAFETY: `get` checked that the eight bytes exist.
    Ok(unsafe { core::ptr::read_unaligned(word.as_ptr().cast()) })
}

/// Stores `word` at byte `at` of `words`, which need not be word-aligned.
#[inline(always)]
pub fn store<const N: usize>(words: &mut [u64; N], at: usize, word: u64) -> Result<(), Counter> {
    if at > (N - 1) * WORD {
        return Err(Counter::Malformed);
    }
    // SAFETY: checked above that the eight bytes lie inside `words`; unaligned access to map
    // memory is allowed.
    unsafe {
        words
            .as_mut_ptr()
            .cast::<u8>()
            .add(at)
            .cast::<u64>()
            .write_unaligned(word)
    };
    Ok(())
}
