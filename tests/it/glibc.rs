//! The glibc ceiling of the release binaries: the highest `GLIBC_x.y` symbol
//! version an ELF file needs, read from its `.gnu.version_r` section (what the
//! dynamic loader checks before `main`, and what makes a binary built on a new
//! system fail with "version `GLIBC_2.34' not found" on an old one).
//!
//! `make release` runs the ignored test below on the binaries cargo-zigbuild
//! produced (`RELEASE_BINARIES`, `GLIBC_CEILING`); `make test` runs the reader
//! on synthetic files and on the binary it built (a release build is too slow
//! for it), and lists the release check as ignored.

use thiserror::Error;

/// `SHT_GNU_verneed`: the section listing the symbol versions needed per library.
const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;

/// Why an ELF file could not be read.
#[derive(Debug, Error, PartialEq)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file (class {class}, data {data})")]
    Unsupported { class: u8, data: u8 },
    #[error("truncated or inconsistent ELF: {0} out of bounds")]
    OutOfBounds(&'static str),
    #[error("no section headers (cannot find .gnu.version_r)")]
    NoSections,
}

/// One versioned need: `file` (e.g. `libc.so.6`) must provide `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub file: String,
    pub version: String,
}

fn bytes<'a>(data: &'a [u8], at: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(at).map_err(|_| ElfError::OutOfBounds(what))?;
    let len = usize::try_from(len).map_err(|_| ElfError::OutOfBounds(what))?;
    start
        .checked_add(len)
        .and_then(|end| data.get(start..end))
        .ok_or(ElfError::OutOfBounds(what))
}

fn u16_at(data: &[u8], at: u64, what: &'static str) -> Result<u16, ElfError> {
    let b = bytes(data, at, 2, what)?;
    Ok(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(data: &[u8], at: u64, what: &'static str) -> Result<u32, ElfError> {
    let b = bytes(data, at, 4, what)?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(data: &[u8], at: u64, what: &'static str) -> Result<u64, ElfError> {
    let b = bytes(data, at, 8, what)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}

/// The NUL-terminated string at `at` in a string table.
fn c_str(table: &[u8], at: u32) -> Result<String, ElfError> {
    let rest = table
        .get(at as usize..)
        .ok_or(ElfError::OutOfBounds("string table offset"))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(ElfError::OutOfBounds("unterminated string"))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// A section header's fields we use.
struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
}

fn sections(data: &[u8]) -> Result<Vec<Section>, ElfError> {
    if data.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(ElfError::NotElf);
    }
    let (class, order) = (data.get(4).copied(), data.get(5).copied());
    if class != Some(2) || order != Some(1) {
        return Err(ElfError::Unsupported {
            class: class.unwrap_or(0),
            data: order.unwrap_or(0),
        });
    }
    let shoff = u64_at(data, 0x28, "e_shoff")?;
    let shentsize = u64::from(u16_at(data, 0x3a, "e_shentsize")?);
    let shnum = u64::from(u16_at(data, 0x3c, "e_shnum")?);
    if shoff == 0 || shnum == 0 {
        return Err(ElfError::NoSections);
    }
    if shentsize < 64 {
        return Err(ElfError::OutOfBounds("e_shentsize"));
    }
    (0..shnum)
        .map(|i| {
            let at = shoff + i * shentsize;
            bytes(data, at, 64, "section header")?;
            Ok(Section {
                kind: u32_at(data, at + 4, "sh_type")?,
                offset: u64_at(data, at + 24, "sh_offset")?,
                size: u64_at(data, at + 32, "sh_size")?,
                link: u32_at(data, at + 40, "sh_link")?,
                info: u32_at(data, at + 44, "sh_info")?,
            })
        })
        .collect()
}

/// Every versioned need of an ELF64 little-endian file (none for a static
/// binary).
pub fn version_needs(data: &[u8]) -> Result<Vec<Need>, ElfError> {
    let sections = sections(data)?;
    let mut needs = Vec::new();
    for verneed in sections.iter().filter(|s| s.kind == SHT_GNU_VERNEED) {
        let strtab = sections
            .get(verneed.link as usize)
            .ok_or(ElfError::OutOfBounds("verneed sh_link"))?;
        let strings = bytes(data, strtab.offset, strtab.size, "string table")?;
        let area = bytes(data, verneed.offset, verneed.size, ".gnu.version_r")?;
        let mut at = 0u64;
        // sh_info is the number of Verneed entries; each is bounded by the area.
        for _ in 0..verneed.info {
            let count = u16_at(area, at + 2, "vn_cnt")?;
            let file = c_str(strings, u32_at(area, at + 4, "vn_file")?)?;
            let mut aux = at + u64::from(u32_at(area, at + 8, "vn_aux")?);
            for _ in 0..count {
                let name = c_str(strings, u32_at(area, aux + 8, "vna_name")?)?;
                needs.push(Need {
                    file: file.clone(),
                    version: name,
                });
                let next = u32_at(area, aux + 12, "vna_next")?;
                if next == 0 {
                    break;
                }
                aux += u64::from(next);
            }
            let next = u32_at(area, at + 12, "vn_next")?;
            if next == 0 {
                break;
            }
            at += u64::from(next);
        }
    }
    Ok(needs)
}

/// `GLIBC_2.2.5` → `[2, 2, 5]`; `None` for other names (`GLIBC_PRIVATE`,
/// `GCC_3.0`).
pub fn glibc_version(name: &str) -> Option<Vec<u32>> {
    let numbers = name.strip_prefix("GLIBC_")?;
    numbers.split('.').map(|n| n.parse().ok()).collect()
}

/// The highest glibc version among `needs`, and the needs no glibc release
/// can be trusted to provide (`GLIBC_PRIVATE`).
pub fn glibc_ceiling(needs: &[Need]) -> (Option<Vec<u32>>, Vec<String>) {
    let mut ceiling: Option<Vec<u32>> = None;
    let mut private = Vec::new();
    for need in needs.iter().filter(|n| n.version.starts_with("GLIBC_")) {
        match glibc_version(&need.version) {
            Some(v) => {
                if ceiling.as_ref().is_none_or(|c| v > *c) {
                    ceiling = Some(v);
                }
            }
            None => private.push(format!("{} {}", need.file, need.version)),
        }
    }
    (ceiling, private)
}

fn dotted(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(".")
}

/// A minimal ELF64 file with one `.gnu.version_r` section listing `needs`
/// (file, versions) — the layout the GNU linker writes.
fn synthetic_elf(needs: &[(&str, &[&str])]) -> Vec<u8> {
    let mut strings = vec![0u8];
    let mut intern = |s: &str| {
        let at = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        at
    };
    let mut area = Vec::new();
    for (i, (file, versions)) in needs.iter().enumerate() {
        let file_at = intern(file);
        let last = i + 1 == needs.len();
        let size = 16 + 16 * versions.len() as u32;
        area.extend_from_slice(&1u16.to_le_bytes());
        area.extend_from_slice(&(versions.len() as u16).to_le_bytes());
        area.extend_from_slice(&file_at.to_le_bytes());
        area.extend_from_slice(&16u32.to_le_bytes());
        area.extend_from_slice(&(if last { 0 } else { size }).to_le_bytes());
        for (j, v) in versions.iter().enumerate() {
            let name_at = intern(v);
            area.extend_from_slice(&0u32.to_le_bytes());
            area.extend_from_slice(&0u16.to_le_bytes());
            area.extend_from_slice(&(j as u16 + 2).to_le_bytes());
            area.extend_from_slice(&name_at.to_le_bytes());
            let next: u32 = if j + 1 == versions.len() { 0 } else { 16 };
            area.extend_from_slice(&next.to_le_bytes());
        }
    }
    let strings_at = 64u64;
    let area_at = strings_at + strings.len() as u64;
    let shoff = area_at + area.len() as u64;
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
    elf.extend_from_slice(&strings);
    elf.extend_from_slice(&area);
    let mut header = |kind: u32, offset: u64, size: u64, link: u32, info: u32| {
        let mut h = vec![0u8; 64];
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&offset.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h[40..44].copy_from_slice(&link.to_le_bytes());
        h[44..48].copy_from_slice(&info.to_le_bytes());
        elf.extend_from_slice(&h);
    };
    header(0, 0, 0, 0, 0);
    header(3, strings_at, strings.len() as u64, 0, 0);
    header(
        SHT_GNU_VERNEED,
        area_at,
        area.len() as u64,
        1,
        needs.len() as u32,
    );
    elf
}

#[test]
fn glibc_versions_compare_numerically() {
    assert_eq!(glibc_version("GLIBC_2.2.5"), Some(vec![2, 2, 5]));
    assert_eq!(glibc_version("GLIBC_PRIVATE"), None);
    assert_eq!(glibc_version("GCC_3.0"), None);
    assert!(glibc_version("GLIBC_2.17") > glibc_version("GLIBC_2.2.5"));
    assert!(glibc_version("GLIBC_2.34") > glibc_version("GLIBC_2.17"));
}

#[test]
fn reads_every_versioned_need_of_a_synthetic_elf() {
    let elf = synthetic_elf(&[
        ("libc.so.6", &["GLIBC_2.2.5", "GLIBC_2.34", "GLIBC_2.17"]),
        ("libgcc_s.so.1", &["GCC_3.0"]),
    ]);
    let needs = version_needs(&elf).expect("readable");
    let names: Vec<String> = needs
        .iter()
        .map(|n| format!("{} {}", n.file, n.version))
        .collect();
    assert_eq!(
        names,
        [
            "libc.so.6 GLIBC_2.2.5",
            "libc.so.6 GLIBC_2.34",
            "libc.so.6 GLIBC_2.17",
            "libgcc_s.so.1 GCC_3.0"
        ]
    );
    let (ceiling, private) = glibc_ceiling(&needs);
    assert_eq!(ceiling, Some(vec![2, 34]));
    assert!(private.is_empty());
    let (_, private) = glibc_ceiling(
        &version_needs(&synthetic_elf(&[("libc.so.6", &["GLIBC_PRIVATE"])])).expect("readable"),
    );
    assert_eq!(private, ["libc.so.6 GLIBC_PRIVATE"]);
}

#[test]
fn bad_elf_input_is_an_error_not_a_panic() {
    assert_eq!(version_needs(b"#!/bin/sh\n"), Err(ElfError::NotElf));
    assert_eq!(version_needs(b""), Err(ElfError::NotElf));
    let mut elf32 = synthetic_elf(&[("libc.so.6", &["GLIBC_2.17"])]);
    elf32[4] = 1;
    assert!(matches!(
        version_needs(&elf32),
        Err(ElfError::Unsupported { .. })
    ));
    let elf = synthetic_elf(&[("libc.so.6", &["GLIBC_2.17"])]);
    // Every truncation is an error, never a panic or a wrong answer.
    for len in 0..elf.len() {
        assert!(version_needs(&elf[..len]).is_err(), "truncated at {len}");
    }
}

/// The reader on a real binary: the executor `make test` built on this
/// machine links against glibc, so it needs at least `GLIBC_2.2.5` (x86_64's
/// first symbol version).
#[test]
fn reads_the_glibc_needs_of_the_executor_built_here() {
    let path = env!("CARGO_BIN_EXE_mesos-hook-executor");
    let data = std::fs::read(path).expect("the executor binary");
    let needs = version_needs(&data).expect("the executor's ELF is readable");
    assert!(
        needs.iter().any(|n| n.file.starts_with("libc.so")),
        "{needs:?}"
    );
    let (ceiling, _) = glibc_ceiling(&needs);
    assert!(ceiling >= Some(vec![2, 2, 5]), "{ceiling:?}");
}

/// The release check (`make release`): every binary in `RELEASE_BINARIES`
/// needs no glibc symbol version above `GLIBC_CEILING` (default 2.17) and no
/// `GLIBC_PRIVATE` symbol.
#[test]
#[ignore = "run by `make release` on the cargo-zigbuild binaries (RELEASE_BINARIES)"]
fn release_binaries_need_at_most_the_glibc_ceiling() {
    let binaries = std::env::var("RELEASE_BINARIES")
        .expect("RELEASE_BINARIES: the release binaries to check (make release sets it)");
    let limit = std::env::var("GLIBC_CEILING").unwrap_or_else(|_| "2.17".into());
    let limit = glibc_version(&format!("GLIBC_{limit}")).expect("GLIBC_CEILING like 2.17");
    let mut checked = 0;
    for path in binaries.split_whitespace() {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let needs = version_needs(&data).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (ceiling, private) = glibc_ceiling(&needs);
        let ceiling = ceiling.unwrap_or_else(|| panic!("{path}: no GLIBC_ symbol versions"));
        let above: Vec<&Need> = needs
            .iter()
            .filter(|n| glibc_version(&n.version).is_some_and(|v| v > limit))
            .collect();
        assert!(
            above.is_empty() && private.is_empty(),
            "{path} needs glibc {} (limit {}): {above:?} {private:?}",
            dotted(&ceiling),
            dotted(&limit)
        );
        println!(
            "{path}: glibc ceiling {} (limit {})",
            dotted(&ceiling),
            dotted(&limit)
        );
        checked += 1;
    }
    assert!(checked > 0, "RELEASE_BINARIES names no file");
}
