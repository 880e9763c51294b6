//! The precision tracking of kernels before 6.4, as far as it concerns the RRL call: a check on
//! the embedded XDP object that no number is kept in a register or on the stack across a call
//! to `edge_rrl_check`, so that a change which brings one back fails `cargo test` on any host
//! instead of only in the 6.1 VM.
//!
//! To prune, the verifier must know which values a later bound, copy length or branch depends
//! on ("precise" scalars); it traces each back instruction by instruction. Before 6.4 ("bpf:
//! support precision propagation in the presence of subprogs") the trace cannot cross a call to
//! a BPF function: reaching one, the verifier marks every number in every earlier state
//! precise, and pruning mostly stops. With the query kept across `edge_rrl_check`, between the
//! parse and the reply, 6.1 gave up at its 1 M instruction budget; the program now passes what
//! it needs after the call through map memory (`Scratch::held` in edge-ebpf), whose loads end
//! the trace. Pointers (the context, the frame, map values) may cross: they are never precise.
//!
//! The check: which registers and stack slots are live across each such call (read later before
//! being written), and which of them may hold a number (a forward pass over the function that
//! tells numbers from pointers).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};

use super::successors;

/// Where a value is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    Register(u8),
    /// A stack slot by its offset from the frame pointer.
    Stack(i64),
}

/// A number kept across a call.
#[derive(Debug, PartialEq, Eq)]
pub struct Kept {
    pub function: String,
    /// The call's instruction index within the function.
    pub call: usize,
    pub place: Place,
}

/// Every number kept across a call to `callee` in the functions of the BPF object `elf`, and the
/// number of such calls found.
pub fn numbers_kept_across(elf: &[u8], callee: &str) -> Result<(Vec<Kept>, usize)> {
    let file = object::File::parse(elf).context("parsing the BPF object")?;
    let mut kept = Vec::new();
    let mut calls_found = 0;
    for section in file.sections() {
        let mut calls = Vec::new();
        for (offset, relocation) in section.relocations() {
            let RelocationTarget::Symbol(index) = relocation.target() else {
                continue;
            };
            if file.symbol_by_index(index)?.name()? == callee {
                calls.push(usize::try_from(offset)? / 8);
            }
        }
        if calls.is_empty() {
            continue;
        }
        let data = section.data()?;
        for symbol in file.symbols() {
            if symbol.kind() != SymbolKind::Text || symbol.section_index() != Some(section.index())
            {
                continue;
            }
            let start = usize::try_from(symbol.address())? / 8;
            let len = usize::try_from(symbol.size())? / 8;
            let here: Vec<usize> = calls
                .iter()
                .filter(|&&call| call >= start && call < start + len)
                .map(|call| call - start)
                .collect();
            if here.is_empty() {
                continue;
            }
            calls_found += here.len();
            let code = data
                .get(start * 8..(start + len) * 8)
                .context("a function outside its section")?;
            let name = symbol.name().unwrap_or("?");
            kept.extend(
                kept_across(code, &here)
                    .into_iter()
                    .map(|(call, place)| Kept {
                        function: name.to_string(),
                        call,
                        place,
                    }),
            );
        }
    }
    Ok((kept, calls_found))
}

/// What a register or stack slot holds, as far as it matters here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Number,
    /// The program's context (`xdp_md`): its first three words load as packet pointers.
    Context,
    Pointer,
    /// A number on one path, a pointer on another.
    Either,
}

fn join(a: Kind, b: Kind) -> Kind {
    if a == b { a } else { Kind::Either }
}

/// The forward pass's knowledge before an instruction.
#[derive(Clone, PartialEq, Eq, Default)]
struct State {
    registers: [Option<Kind>; 11],
    /// Registers pointing into the stack at a known offset from the frame pointer.
    frame: [Option<i64>; 11],
    slots: BTreeMap<i64, Kind>,
}

impl State {
    fn entry() -> Self {
        let mut state = Self::default();
        state.registers[1] = Some(Kind::Context);
        state.registers[10] = Some(Kind::Pointer);
        state.frame[10] = Some(0);
        state
    }

    /// Joins `other` into `self`; whether anything changed.
    fn join(&mut self, other: &Self) -> bool {
        let before = self.clone();
        for r in 0..11 {
            self.registers[r] = match (self.registers[r], other.registers[r]) {
                (Some(a), Some(b)) => Some(join(a, b)),
                (a, b) => a.or(b),
            };
            if self.frame[r] != other.frame[r] {
                self.frame[r] = None;
            }
        }
        for (&offset, &kind) in &other.slots {
            self.slots
                .entry(offset)
                .and_modify(|k| *k = join(*k, kind))
                .or_insert(kind);
        }
        *self != before
    }

    fn set(&mut self, register: u8, kind: Kind) {
        self.registers[usize::from(register)] = Some(kind);
        self.frame[usize::from(register)] = None;
    }
}

/// One decoded instruction.
struct Insn {
    opcode: u8,
    dst: u8,
    src: u8,
    offset: i64,
    imm: i64,
}

fn decode(code: &[u8], at: usize) -> Insn {
    let b = &code[at * 8..at * 8 + 8];
    Insn {
        opcode: b[0],
        dst: b[1] & 0x0f,
        src: b[1] >> 4,
        offset: i64::from(i16::from_le_bytes([b[2], b[3]])),
        imm: i64::from(i32::from_le_bytes([b[4], b[5], b[6], b[7]])),
    }
}

const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const MEM: u8 = 0x60;
const DW: u8 = 0x18;
const W: u8 = 0x00;
/// The source is a register (ALU, jumps).
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const NEG: u8 = 0x80;
const MOV: u8 = 0xb0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const JA: u8 = 0x00;
const MAP_LOOKUP_ELEM: i64 = 1;

/// The state after instruction `insn`.
fn step(insn: &Insn, state: &State) -> State {
    let mut next = state.clone();
    let (dst, src) = (usize::from(insn.dst), usize::from(insn.src));
    let class = insn.opcode & 0x07;
    let operation = insn.opcode & 0xf0;
    match class {
        LD if insn.opcode == LD | DW => {
            // A map's address (1, 2) or a function's (4), else a 64-bit number.
            let kind = if matches!(insn.src, 1 | 2 | 4) {
                Kind::Pointer
            } else {
                Kind::Number
            };
            next.set(insn.dst, kind);
        }
        ALU64 if operation == MOV && insn.opcode & X != 0 => {
            next.registers[dst] = state.registers[src];
            next.frame[dst] = state.frame[src];
        }
        ALU64
            if matches!(operation, ADD | SUB)
                && matches!(state.registers[dst], Some(Kind::Pointer | Kind::Context)) =>
        {
            if insn.opcode & X == 0 {
                let delta = if operation == ADD {
                    insn.imm
                } else {
                    -insn.imm
                };
                next.frame[dst] = state.frame[dst].map(|offset| offset + delta);
            } else if state.registers[src] == Some(Kind::Pointer) {
                // The distance between two pointers.
                next.set(insn.dst, Kind::Number);
            } else {
                next.frame[dst] = None;
            }
        }
        ALU | ALU64 => next.set(insn.dst, Kind::Number),
        LDX => {
            let size = insn.opcode & 0x18;
            let kind = match (state.frame[src], state.registers[src]) {
                (Some(base), _) if size == DW => state
                    .slots
                    .get(&(base + insn.offset))
                    .copied()
                    .unwrap_or(Kind::Number),
                (_, Some(Kind::Context)) if size == W && matches!(insn.offset, 0 | 4 | 8) => {
                    Kind::Pointer
                }
                _ => Kind::Number,
            };
            next.set(insn.dst, kind);
        }
        ST | STX => {
            if let Some(base) = state.frame[dst] {
                let at = base + insn.offset;
                let kind = if class == STX && insn.opcode & 0xe0 == MEM && insn.opcode & 0x18 == DW
                {
                    state.registers[src].unwrap_or(Kind::Number)
                } else {
                    Kind::Number
                };
                next.slots.insert(at.div_euclid(8) * 8, kind);
            }
        }
        JMP | JMP32 if operation == CALL => {
            let result = if insn.src == 0 && insn.imm == MAP_LOOKUP_ELEM {
                Kind::Pointer
            } else {
                Kind::Number
            };
            next.set(0, result);
            for r in 1..=5 {
                next.registers[r] = None;
                next.frame[r] = None;
            }
        }
        _ => {}
    }
    next
}

/// Registers and stack slots `insn` reads and writes. A call reads
/// r1-r5 and, through any of them that points into the stack, every slot from there up.
fn uses_and_defs(insn: &Insn, state: &State) -> (Vec<Place>, Vec<Place>) {
    let (mut uses, mut defs) = (Vec::new(), Vec::new());
    let class = insn.opcode & 0x07;
    let operation = insn.opcode & 0xf0;
    let reg = Place::Register;
    let slot = |base: i64| Place::Stack((base + insn.offset).div_euclid(8) * 8);
    match class {
        LD => defs.push(reg(insn.dst)),
        ALU | ALU64 => {
            if operation != MOV {
                uses.push(reg(insn.dst));
            }
            if insn.opcode & X != 0 && operation != NEG {
                uses.push(reg(insn.src));
            }
            defs.push(reg(insn.dst));
        }
        LDX => {
            uses.push(reg(insn.src));
            if let Some(base) = state.frame[usize::from(insn.src)] {
                uses.push(slot(base));
            }
            defs.push(reg(insn.dst));
        }
        ST | STX => {
            uses.push(reg(insn.dst));
            if class == STX {
                uses.push(reg(insn.src));
            }
            // A store of part of a slot counts as writing it: the compiler fills a slot it
            // then reads, and bytes it leaves unwritten hold nothing that matters here.
            if let Some(base) = state.frame[usize::from(insn.dst)] {
                defs.push(slot(base));
            }
        }
        JMP | JMP32 => match operation {
            CALL => {
                for r in 1..=5 {
                    uses.push(reg(r));
                    if let Some(base) = state.frame[usize::from(r)] {
                        let first = base.div_euclid(8) * 8;
                        let slots = state.slots.keys().filter(|&&at| at >= first);
                        uses.extend(slots.map(|&at| Place::Stack(at)));
                    }
                }
                defs.extend((0..=5).map(reg));
            }
            EXIT => uses.push(reg(0)),
            JA => {}
            _ => {
                uses.push(reg(insn.dst));
                if insn.opcode & X != 0 {
                    uses.push(reg(insn.src));
                }
            }
        },
        _ => {}
    }
    (uses, defs)
}

/// The numbers live across each call of `calls` in `code` (one function, 8-byte instructions),
/// by call: callee-saved registers (r6-r9) and stack slots.
fn kept_across(code: &[u8], calls: &[usize]) -> Vec<(usize, Place)> {
    let len = code.len() / 8;
    let inside = |to: &usize| *to < len;
    // Forward: what each register and slot holds before each instruction.
    let mut states: Vec<Option<State>> = vec![None; len];
    if len == 0 {
        return Vec::new();
    }
    states[0] = Some(State::entry());
    let mut work = vec![0];
    while let Some(at) = work.pop() {
        let after = step(
            &decode(code, at),
            states[at].as_ref().expect("queued with a state"),
        );
        for (to, _) in successors(code, at)
            .into_iter()
            .filter(|(to, _)| inside(to))
        {
            let changed = match &mut states[to] {
                Some(state) => state.join(&after),
                empty => {
                    *empty = Some(after.clone());
                    true
                }
            };
            if changed {
                work.push(to);
            }
        }
    }
    // Backward: what is read later before being written, to a fixed point.
    let mut live: Vec<Vec<Place>> = vec![Vec::new(); len];
    let mut changed = true;
    while changed {
        changed = false;
        for at in (0..len).rev() {
            let Some(state) = &states[at] else {
                continue;
            };
            let mut set: Vec<Place> = successors(code, at)
                .into_iter()
                .filter(|(to, _)| inside(to))
                .flat_map(|(to, _)| live[to].iter().copied())
                .collect();
            let (uses, defs) = uses_and_defs(&decode(code, at), state);
            set.retain(|place| !defs.contains(place));
            set.extend(uses);
            set.sort();
            set.dedup();
            if set != live[at] {
                live[at] = set;
                changed = true;
            }
        }
    }
    let mut kept = Vec::new();
    for &call in calls {
        let Some(state) = &states[call] else {
            continue;
        };
        for &place in live.get(call + 1).into_iter().flatten() {
            let kind = match place {
                Place::Register(r @ 6..=9) => state.registers[usize::from(r)],
                Place::Stack(at) => state.slots.get(&at).copied(),
                Place::Register(_) => continue,
            };
            if matches!(kind, Some(Kind::Number | Kind::Either) | None) {
                kept.push((call, place));
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(opcode: u8, regs: u8, offset: i16, imm: i32) -> [u8; 8] {
        let mut out = [0; 8];
        out[0] = opcode;
        out[1] = regs;
        out[2..4].copy_from_slice(&offset.to_le_bytes());
        out[4..].copy_from_slice(&imm.to_le_bytes());
        out
    }

    const MOV_IMM: u8 = ALU64 | MOV;
    const MOV_REG: u8 = ALU64 | MOV | X;
    const STX_DW: u8 = STX | MEM | DW;
    const LDX_DW: u8 = LDX | MEM | DW;
    const CALL_FN: u8 = JMP | CALL;
    const EXIT_FN: u8 = JMP | EXIT;
    /// `regs` of dst and src.
    const fn r(dst: u8, src: u8) -> u8 {
        src << 4 | dst
    }

    /// A number in r6 across the call, read after it: what 6.1 cannot trace back.
    #[test]
    fn a_number_in_a_register_across_the_call_is_found() {
        let code = [
            insn(MOV_IMM, r(6, 0), 0, 42), // 0: r6 = 42
            insn(CALL_FN, r(0, 1), 0, -1), // 1: call
            insn(MOV_REG, r(0, 6), 0, 0),  // 2: r0 = r6
            insn(EXIT_FN, 0, 0, 0),        // 3
        ]
        .concat();
        assert_eq!(kept_across(&code, &[1]), [(1, Place::Register(6))]);
    }

    #[test]
    fn a_number_on_the_stack_across_the_call_is_found() {
        let code = [
            insn(MOV_IMM, r(2, 0), 0, 42), // 0: r2 = 42
            insn(STX_DW, r(10, 2), -8, 0), // 1: *(u64 *)(r10 - 8) = r2
            insn(CALL_FN, r(0, 1), 0, -1), // 2: call
            insn(LDX_DW, r(0, 10), -8, 0), // 3: r0 = *(u64 *)(r10 - 8)
            insn(EXIT_FN, 0, 0, 0),        // 4
        ]
        .concat();
        assert_eq!(kept_across(&code, &[2]), [(2, Place::Stack(-8))]);
    }

    /// The context and a stack pointer may cross; a number set again after the call, or not
    /// read after it, is not kept.
    #[test]
    fn pointers_and_dead_numbers_pass() {
        let code = [
            insn(MOV_REG, r(6, 1), 0, 0),  // 0: r6 = r1 (the context)
            insn(MOV_REG, r(7, 10), 0, 0), // 1: r7 = r10
            insn(MOV_IMM, r(8, 0), 0, 1),  // 2: r8 = 1, never read
            insn(MOV_IMM, r(9, 0), 0, 2),  // 3: r9 = 2, set again after the call
            insn(CALL_FN, r(0, 1), 0, -1), // 4: call
            insn(MOV_IMM, r(9, 0), 0, 3),  // 5: r9 = 3
            insn(MOV_REG, r(1, 6), 0, 0),  // 6: r1 = r6
            insn(MOV_REG, r(2, 7), 0, 0),  // 7: r2 = r7
            insn(MOV_REG, r(0, 9), 0, 0),  // 8: r0 = r9
            insn(EXIT_FN, 0, 0, 0),        // 9
        ]
        .concat();
        assert!(kept_across(&code, &[4]).is_empty());
    }

    /// The RRL call of `edge_dns` loads on 6.1 (`cargo xtask vm-test`): nothing but pointers
    /// crosses it.
    #[test]
    fn no_number_crosses_the_rrl_call() {
        let (kept, calls) = numbers_kept_across(crate::EBPF_OBJECT, "edge_rrl_check").unwrap();
        assert!(calls > 0, "no call to edge_rrl_check found");
        assert!(
            kept.is_empty(),
            "these numbers are kept across the call to edge_rrl_check; kernels before 6.4 \
             cannot trace one back across it and stop pruning (6.1 then gives up at 1 M \
             instructions): pass them through map memory, as `Scratch::held`: {kept:?}"
        );
    }
}
