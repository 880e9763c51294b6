//! The control-flow check of kernels before 6.7, replayed on the embedded XDP object, so that a
//! loop they refuse fails `cargo test` on any host instead of only in the 6.1 VM.
//!
//! Before 6.7 (kernel commit 10e14e9652bf, also in 6.6.3) `check_cfg()` accepted a back-edge
//! only on a jump: a conditional jump or `ja`. LLVM may close a loop by laying its latch just
//! before the loop's head, so that the latch falls through into it; the verifier of 6.1 (Debian
//! 12) then refuses the program before verifying it: "back-edge from insn 309 to 310". Its
//! depth-first walk is replayed here on each function of the object.
//!
//! [`precision`] checks what kernels before 6.4 need around the RRL call.

mod precision;

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, SymbolKind};

/// A back-edge along the fall-through of a non-jump instruction (or a call), which kernels
/// before 6.7 refuse.
#[derive(Debug, PartialEq, Eq)]
pub struct FallThroughBackEdge {
    pub function: String,
    /// Instruction indices within the function.
    pub from: usize,
    pub to: usize,
}

/// Every such back-edge in the functions of the BPF object `elf`.
pub fn fall_through_back_edges(elf: &[u8]) -> Result<Vec<FallThroughBackEdge>> {
    let file = object::File::parse(elf).context("parsing the BPF object")?;
    let mut found = Vec::new();
    for symbol in file.symbols() {
        if symbol.kind() != SymbolKind::Text || symbol.size() == 0 {
            continue;
        }
        let name = symbol.name().unwrap_or("?").to_string();
        let index = symbol
            .section_index()
            .with_context(|| format!("{name}: no section"))?;
        let data = file.section_by_index(index)?.data()?;
        let start = usize::try_from(symbol.address())?;
        let code = data
            .get(start..start + usize::try_from(symbol.size())?)
            .with_context(|| format!("{name}: outside its section"))?;
        found.extend(
            back_edges(code)
                .into_iter()
                .map(|(from, to)| FallThroughBackEdge {
                    function: name.clone(),
                    from,
                    to,
                }),
        );
    }
    Ok(found)
}

/// The successors of instruction `at` of `code` (8-byte instructions), each with whether a
/// back-edge along it is allowed (a jump edge).
fn successors(code: &[u8], at: usize) -> Vec<(usize, bool)> {
    let insn = &code[at * 8..at * 8 + 8];
    let opcode = insn[0];
    let offset = i16::from_le_bytes([insn[2], insn[3]]) as isize;
    let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]) as isize;
    let class = opcode & 0x07;
    let target = |delta: isize| (at as isize + delta + 1) as usize;
    // The 16-byte load of a 64-bit immediate.
    if opcode == 0x18 {
        return vec![(at + 2, false)];
    }
    // BPF_JMP and BPF_JMP32.
    if class != 0x05 && class != 0x06 {
        return vec![(at + 1, false)];
    }
    match opcode & 0xf0 {
        // exit
        0x90 => vec![],
        // A call returns to the next instruction; the callee is checked as its own function.
        0x80 => vec![(at + 1, false)],
        // ja (offset), or gotol (JMP32, immediate).
        0x00 => vec![(target(if class == 0x06 { imm } else { offset }), true)],
        _ => vec![(at + 1, true), (target(offset), true)],
    }
}

/// The depth-first walk of `check_cfg()` from the function's first instruction: an edge to an
/// instruction still on the walk's stack is a back-edge, refused unless it is a jump edge.
fn back_edges(code: &[u8]) -> Vec<(usize, usize)> {
    const UNSEEN: u8 = 0;
    const ON_STACK: u8 = 1;
    const DONE: u8 = 2;
    let len = code.len() / 8;
    let mut state = vec![UNSEEN; len];
    let mut found = Vec::new();
    if len == 0 {
        return found;
    }
    state[0] = ON_STACK;
    let mut stack = vec![(0, successors(code, 0).into_iter())];
    while let Some((at, next)) = stack.last_mut() {
        let at = *at;
        let Some((to, jump)) = next.next() else {
            state[at] = DONE;
            stack.pop();
            continue;
        };
        if to >= len {
            continue;
        }
        match state[to] {
            UNSEEN => {
                state[to] = ON_STACK;
                stack.push((to, successors(code, to).into_iter()));
            }
            ON_STACK if !jump => found.push((at, to)),
            _ => {}
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(opcode: u8, offset: i16, imm: i32) -> [u8; 8] {
        let mut out = [0; 8];
        out[0] = opcode;
        out[2..4].copy_from_slice(&offset.to_le_bytes());
        out[4..].copy_from_slice(&imm.to_le_bytes());
        out
    }

    const JA: u8 = 0x05;
    const ADD_R0_IMM: u8 = 0x07;
    const JGT_R0_IMM: u8 = 0x25;
    const JLT_R0_IMM: u8 = 0xa5;
    const EXIT: u8 = 0x95;

    /// A loop whose latch falls through into its head: what 6.1 refused in edge_dns.
    #[test]
    fn a_loop_closed_by_falling_through_is_found() {
        let code = [
            insn(JA, 1, 0),         // 0: into the loop's head
            insn(ADD_R0_IMM, 0, 1), // 1: the latch, falling through into 2
            insn(JGT_R0_IMM, 1, 5), // 2: the head: out to 4 when done
            insn(JA, -3, 0),        // 3: back to the latch
            insn(EXIT, 0, 0),       // 4
        ]
        .concat();
        assert_eq!(back_edges(&code), [(1, 2)]);
    }

    #[test]
    fn a_loop_closed_by_a_jump_passes() {
        let code = [
            insn(ADD_R0_IMM, 0, 1),  // 0: the body
            insn(JLT_R0_IMM, -2, 5), // 1: back to 0 while r0 < 5
            insn(EXIT, 0, 0),        // 2
        ]
        .concat();
        assert!(back_edges(&code).is_empty());
    }

    /// The program loads on Debian 12's 6.1 (`cargo xtask vm-test`): every loop of every
    /// function closes with a jump.
    #[test]
    fn every_loop_of_the_xdp_program_closes_with_a_jump() {
        let found = fall_through_back_edges(crate::EBPF_OBJECT).unwrap();
        assert!(
            found.is_empty(),
            "kernels before 6.7 refuse these loops (reshape them, e.g. as `while i < n` with \
             the bound checked at the top): {found:?}"
        );
    }
}
