//! Words moved between the frame and map memory with plain loads and stores, which on this path
//! cost much less than a helper call. Frame offsets are known only at run time, hence
//! [`ptr_at_var`]; neither side need be aligned.

use aya_ebpf::programs::XdpContext;
use edge_common::Counter;

use crate::headers::ptr_at_var;

pub const WORD: usize = 8;

/// Calls `copy(at)` for byte offsets that together cover a run of `len` bytes, at least one
/// word and at most `WORDS` words long: every whole word but the last, then the run's last whole
/// word, which covers a tail shorter than a word by overlapping bytes already copied with the
/// same values. The caller checks `len`; the compiler merges that check into a form from which
/// the verifier learns no bound, so the mask (a no-op after the check) gives it one, and the
/// barriers keep the compiler from dropping the mask and the bounds checks inside `copy`. The
/// last offset passes a barrier of its own, so that `copy` checks and uses one register:
/// otherwise the compiler folds `len - WORD + WORD` back into `len` after the check, and
/// verifiers before 6.11, which do not carry a bound across such a difference, refuse the access.
#[inline(always)]
pub fn each_word<const WORDS: usize>(
    len: usize,
    mut copy: impl FnMut(usize) -> Result<(), Counter>,
) -> Result<(), Counter> {
    let before_last = ((core::hint::black_box(len) - 1) / WORD) & (WORDS.next_power_of_two() - 1);
    for i in 0..WORDS - 1 {
        if i >= before_last {
            break;
        }
        copy(i * WORD)?;
    }
    copy(core::hint::black_box(core::hint::black_box(len) - WORD))
}

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
