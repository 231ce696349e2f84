//! Classic BPF programs in the text forms `tcpdump -ddd` and `tcpdump -dd` print.
use std::path::Path;

use crate::CaptureError;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

/// Linux's ancillary load of a random 32-bit number (`SKF_AD_OFF + SKF_AD_RANDOM`).
const SKF_AD_RANDOM: u32 = 0xffff_f000 + 56;

/// A program that keeps one packet in `n` at random, in the kernel, then runs `program`
/// (or keeps the whole packet): `ld rand; mod #n; jeq #0, keep, drop`. Classic BPF jumps
/// are relative, so prefixing a program leaves its own jumps intact. `n` of 0 or 1 keeps
/// every packet (the program alone).
pub fn sample_one_in(n: u32, program: Option<Vec<BpfInstruction>>) -> Vec<BpfInstruction> {
    let accept = || {
        vec![BpfInstruction {
            code: 0x06, // ret #k
            jt: 0,
            jf: 0,
            k: 0x0004_0000,
        }]
    };
    let rest = program.unwrap_or_else(accept);
    if n <= 1 {
        return rest;
    }
    let mut p = vec![
        BpfInstruction {
            code: 0x20, // ld [k] (ancillary: random)
            jt: 0,
            jf: 0,
            k: SKF_AD_RANDOM,
        },
        BpfInstruction {
            code: 0x94, // mod #k
            jt: 0,
            jf: 0,
            k: n,
        },
        BpfInstruction {
            code: 0x15, // jeq #k: true skips the drop
            jt: 1,
            jf: 0,
            k: 0,
        },
        BpfInstruction {
            code: 0x06, // ret #0: drop
            jt: 0,
            jf: 0,
            k: 0,
        },
    ];
    p.extend(rest);
    p
}

/// Parses a program as printed by `tcpdump -ddd EXPR` (a count line, then `code jt jf k`
/// per line, decimal) or `tcpdump -dd EXPR` (`{ 0x28, 0, 0, 0x0000000c },` per line).
pub fn parse_bpf_program(path: &Path, text: &str) -> Result<Vec<BpfInstruction>, CaptureError> {
    let err = |line: usize, reason: String| CaptureError::Bpf {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut program = Vec::new();
    let mut declared: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw
            .trim()
            .trim_start_matches('{')
            .trim_end_matches(',')
            .trim_end_matches('}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|f| !f.is_empty())
            .collect();
        let num = |f: &str| -> Option<u64> {
            match f.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => f.parse().ok(),
            }
        };
        match fields.as_slice() {
            [count] if declared.is_none() && program.is_empty() => {
                declared = Some(num(count).ok_or_else(|| {
                    err(
                        i + 1,
                        format!("expected the instruction count, found {count:?}"),
                    )
                })? as usize);
            }
            [code, jt, jf, k] => {
                let parsed = (num(code), num(jt), num(jf), num(k));
                let (Some(code), Some(jt), Some(jf), Some(k)) = parsed else {
                    return Err(err(
                        i + 1,
                        format!("expected four numbers `code jt jf k`, found {raw:?}"),
                    ));
                };
                if code > 0xffff || jt > 0xff || jf > 0xff || k > 0xffff_ffff {
                    return Err(err(i + 1, format!("value out of range in {raw:?}")));
                }
                program.push(BpfInstruction {
                    code: code as u16,
                    jt: jt as u8,
                    jf: jf as u8,
                    k: k as u32,
                });
            }
            _ => {
                return Err(err(
                    i + 1,
                    format!("expected `code jt jf k` (tcpdump -ddd output), found {raw:?}"),
                ))
            }
        }
    }
    if program.is_empty() || program.len() > 4096 {
        return Err(err(
            0,
            format!("expected 1 to 4096 instructions, found {}", program.len()),
        ));
    }
    if let Some(n) = declared {
        if n != program.len() {
            return Err(err(
                1,
                format!(
                    "the count line says {n} instructions, the file has {}",
                    program.len()
                ),
            ));
        }
    }
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_prefixes_the_program_and_keeps_its_jumps() {
        let user = vec![
            BpfInstruction {
                code: 0x28,
                jt: 0,
                jf: 0,
                k: 12,
            },
            BpfInstruction {
                code: 0x15,
                jt: 0,
                jf: 1,
                k: 0x0800,
            },
            BpfInstruction {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 262_144,
            },
            BpfInstruction {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let p = sample_one_in(10, Some(user.clone()));
        assert_eq!(p.len(), 8);
        assert_eq!((p[0].code, p[0].k), (0x20, 0xffff_f038), "ld rand");
        assert_eq!((p[1].code, p[1].k), (0x94, 10), "mod #10");
        assert_eq!(
            (p[2].jt, p[2].jf, p[3].k),
            (1, 0, 0),
            "keep on 0, else drop"
        );
        assert_eq!(&p[4..], &user[..], "the user's program unchanged after it");
        assert_eq!(sample_one_in(1, Some(user.clone())), user);
        let alone = sample_one_in(4, None);
        assert_eq!(
            (alone.len(), alone[4].code, alone[4].k),
            (5, 0x06, 0x0004_0000)
        );
    }

    #[test]
    fn reads_ddd_and_dd_forms() {
        let ddd = "4\n40 0 0 12\n21 0 1 2048\n6 0 0 262144\n6 0 0 0\n";
        let p = parse_bpf_program(Path::new("f"), ddd).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(
            p[1],
            BpfInstruction {
                code: 21,
                jt: 0,
                jf: 1,
                k: 2048
            }
        );
        let dd = "{ 0x28, 0, 0, 0x0000000c },\n{ 0x15, 0, 1, 0x00000800 },\n{ 0x6, 0, 0, 0x00040000 },\n{ 0x6, 0, 0, 0x00000000 },\n";
        assert_eq!(parse_bpf_program(Path::new("f"), dd).unwrap(), p);
    }

    #[test]
    fn names_the_bad_line() {
        let e = parse_bpf_program(Path::new("f.bpf"), "2\n40 0 0 12\nudp port 53\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("f.bpf") && msg.contains("line 3"), "{msg}");
        let e = parse_bpf_program(Path::new("f.bpf"), "3\n40 0 0 12\n6 0 0 0\n").unwrap_err();
        assert!(e.to_string().contains("says 3"), "{e}");
    }
}
